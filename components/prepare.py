"""The prepare step as a KFP component: a params document (+ source override) -> Dataset."""
from kfp import dsl
from kfp.dsl import Dataset, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare(params: str, source: str, data: Output[Dataset]):
    """cyclegan prepare --out DATA (source: prepare.source unless ``source`` is set)."""
    from components.runtime import prepare_step

    prepare_step(params, source, data.path)
