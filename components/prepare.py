"""The prepare step as a KFP component: a params document (+ source override) -> Dataset."""
from kfp import dsl
from kfp.dsl import Dataset, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare(params: str, source: str, data: Output[Dataset], image: str = "", tracking_uri: str = ""):
    """The prepare step of training/steps.py (source: prepare.source unless ``source`` is set)."""
    from components.runtime import run_step

    run_step("prepare", params, {"data": data.path}, overrides={"source": source}, image=image,
             tracking_uri=tracking_uri)
