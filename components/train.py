"""The train step as a KFP component: Dataset -> Model (the run folder: checkpoints, log,
samples, config, MLflow run id). Keyed on its content (``train_key``, from the fingerprint
task): a nightly run with unchanged data, params and code is a cache hit, and the object-store
checkpoint prefix a retry resumes from is the key's own. With ``gpus > 1``, one training
process per GPU (torchrun, launched by ``cyclegan train --nproc-per-node``)."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(params: str, data: Input[Dataset], model: Output[Model], n_epochs: int = -1, n_epochs_decay: int = -1,
          checkpoint_prefix: str = "", train_key: str = "", gpus: int = 0, image: str = "", tracking_uri: str = ""):
    """The train step of training/steps.py; with ``checkpoint_prefix`` the checkpoint is mirrored
    to ``checkpoint_prefix/train_key`` so a retry (or a later run of the same content) resumes
    (training/engine/mirror.py); with ``gpus > 1``, ``gpus`` processes train together
    (DistributedDataParallel)."""
    from components.runtime import run_step
    from training.layout import TrainRun

    mirror = f"{checkpoint_prefix.rstrip('/')}/{train_key or 'default'}" if checkpoint_prefix else ""
    run_step("train", params, {"data": data.path, "train": model.path},
             options={"mirror": mirror, "nproc": gpus if gpus > 1 else None},
             overrides={"n_epochs": n_epochs, "n_epochs_decay": n_epochs_decay}, image=image,
             tracking_uri=tracking_uri)
    model.metadata["framework"] = "pytorch"
    model.metadata["checkpoint"] = str(TrainRun("").latest)
    model.metadata["processes"] = max(gpus, 1)
    model.metadata["train_key"] = train_key
