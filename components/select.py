"""The select step as a KFP component: Dataset + Model (run folder) -> Model (the chosen checkpoint
and every epoch's scores)."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def select(params: str, data: Input[Dataset], model: Input[Model], selected: Output[Model], image: str = "",
           tracking_uri: str = ""):
    """The select step of training/steps.py: the best kept epoch checkpoint (or the latest) for
    evaluate, export and register."""
    import json

    from components.runtime import run_step, selection_of

    run_step("select", params, {"data": data.path, "train": model.path, "select": selected.path}, image=image,
             tracking_uri=tracking_uri)
    choice = selection_of(selected.path)
    selected.metadata.update({"framework": "pytorch", "mode": choice["mode"], "epoch": choice["selected_epoch"],
                              "kept_epochs": json.dumps(choice["kept_epochs"])})
