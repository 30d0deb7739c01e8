"""The export step as a KFP component: Model (checkpoint) -> Model (G_AtoB.onnx, G_BtoA.onnx, verify.json)."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def export(params: str, data: Input[Dataset], model: Input[Model], onnx: Output[Model], image: str = "",
           tracking_uri: str = ""):
    """cyclegan export, then the model (both graphs, one pyfunc) into the MLflow run."""
    from components.runtime import export_step

    export_step(params, data.path, model.path, onnx.path, image=image, tracking_uri=tracking_uri)
    onnx.metadata["framework"] = "onnx"
