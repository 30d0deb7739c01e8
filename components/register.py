"""The register step as a KFP component: ONNX Model + evaluation -> the gate's decision."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register(params: str, data: Input[Dataset], model: Input[Model], selected: Input[Model], onnx: Input[Model],
             evaluation: Input[Artifact], decision: Output[Artifact], promote: bool = True, image: str = "",
             tracking_uri: str = ""):
    """The register step of training/steps.py: alias challenger, the gate, champion."""
    from components.runtime import decision_of, run_step

    run_step("register", params, {"data": data.path, "train": model.path, "select": selected.path,
                                  "export": onnx.path, "eval": evaluation.path, "register": decision.path},
             options={"promote": promote}, image=image, tracking_uri=tracking_uri)
    result = decision_of(decision.path)
    decision.metadata.update({"verdict": result["verdict"], "action": result["action"],
                              "challenger_version": result["challenger_version"],
                              "champion_after": result["champion_after"]})
