"""The export step as a KFP component: Model (the selected checkpoint) + evaluation -> Model (both ONNX
generators, verify report)."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def export(params: str, data: Input[Dataset], model: Input[Model], selected: Input[Model], evaluation: Input[Artifact],
           onnx: Output[Model], image: str = "", tracking_uri: str = ""):
    """The export step of training/steps.py: verified ONNX models (with the evaluation's
    out-of-domain thresholds), then the model into the MLflow run."""
    from components.runtime import run_step

    run_step("export", params, {"data": data.path, "train": model.path, "select": selected.path,
                                "eval": evaluation.path,
                                "export": onnx.path}, image=image, tracking_uri=tracking_uri)
    onnx.metadata["framework"] = "onnx"
