"""What a pipeline run would compute, as keys: params (+ overrides) -> data key, train key.

The task is never cached: it runs the prepare step's commands into a scratch folder (a data
source, such as an S3 prefix or a folder that gains images every day, is only known by what it
yields) and hashes the prepared manifest. The cached tasks after it take the keys as inputs,
so equal keys make them cache hits: ``prepare`` (keyed on the data key) hands the earlier run's
very Dataset artifact to ``train``, whose own inputs then hold nothing run-specific.
"""
from typing import NamedTuple

from kfp import dsl

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def fingerprint(params: str, source: str, n_epochs: int = -1, n_epochs_decay: int = -1, gpus: int = 0,
                image: str = "", tracking_uri: str = "") -> NamedTuple("Keys", [("data_key", str), ("train_key", str)]):
    """data_key: sha256 of the prepared data's files (manifest); train_key: steps.content_key
    of the train step (data key, data/model/train params, training code, image, processes)."""
    from collections import namedtuple

    from components.runtime import fingerprint as keys_of

    data_key, train_key = keys_of(params, source, overrides={"n_epochs": n_epochs, "n_epochs_decay": n_epochs_decay},
                                  gpus=gpus, image=image, tracking_uri=tracking_uri)
    print(f"data key {data_key}\ntrain key {train_key}", flush=True)
    return namedtuple("Keys", ["data_key", "train_key"])(data_key, train_key)
