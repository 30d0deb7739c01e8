"""The register step as a KFP component: ONNX Model + evaluation -> decision.json (the gate)."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register(params: str, data: Input[Dataset], model: Input[Model], onnx: Input[Model], evaluation: Input[Artifact],
             decision: Output[Artifact], promote: bool = True, image: str = "", tracking_uri: str = ""):
    """cyclegan register --model --metrics [--promote]: alias challenger, gate, champion."""
    from components.runtime import register_step

    result = register_step(params, data.path, model.path, onnx.path, evaluation.path, decision.path, promote,
                           image=image, tracking_uri=tracking_uri)
    decision.metadata.update({"verdict": result["verdict"], "action": result["action"],
                              "challenger_version": result["challenger_version"],
                              "champion_after": result["champion_after"]})
