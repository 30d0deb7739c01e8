"""One variant of a sweep as a KFP component: the params document with the variant's
overrides (data/model/train keys) -> that document and its train key.

Never cached, like the fingerprint: the key covers the training code this task sees.
"""
from typing import NamedTuple

from kfp import dsl

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def variant(params: str, overrides: dict, data_key: str, n_epochs: int = -1, n_epochs_decay: int = -1,
            gpus: int = 0, image: str = "") -> NamedTuple("Variant", [("params", str), ("train_key", str)]):
    """``overrides``: {"train.lr": 0.001, ...}; the train key as in the fingerprint task."""
    from collections import namedtuple

    from components.runtime import apply_variant, train_key

    document = apply_variant(params, overrides)
    key = train_key(document, data_key, overrides={"n_epochs": n_epochs, "n_epochs_decay": n_epochs_decay},
                    gpus=gpus, image=image)
    print(f"variant {overrides}: train key {key}", flush=True)
    return namedtuple("Variant", ["params", "train_key"])(document, key)
