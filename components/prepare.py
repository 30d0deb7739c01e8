"""The prepare step as a KFP component: a params document (+ source override) -> Dataset."""
from kfp import dsl
from kfp.dsl import Dataset, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare(params: str, source: str, data: Output[Dataset], data_key: str = "", image: str = "",
            tracking_uri: str = ""):
    """The prepare step of training/steps.py (source: prepare.source unless ``source`` is set).
    With ``data_key`` (what the fingerprint task saw) the result must hash to it: the task is
    cached on that key, so its Dataset must be exactly what the key names."""
    from components.runtime import data_key as key_of, run_step

    run_step("prepare", params, {"data": data.path}, overrides={"source": source}, image=image,
             tracking_uri=tracking_uri)
    found = key_of(data.path)
    if data_key and found != data_key:
        raise RuntimeError(f"prepare: the source changed while the pipeline ran (the fingerprint task saw data "
                           f"{data_key[:12]}, this task prepared {found[:12]}); run the pipeline again")
    data.metadata["manifest_sha256"] = found
