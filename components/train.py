"""The train step as a KFP component: Dataset -> Model (the run folder: checkpoints, log,
samples, config.json, mlflow_run_id). Resumable from an s3:// checkpoint prefix."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from . import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(params: str, data: Input[Dataset], model: Output[Model], n_epochs: int = -1, n_epochs_decay: int = -1,
          checkpoint_prefix: str = "", run_key: str = "", image: str = "", tracking_uri: str = ""):
    """cyclegan train --resume, then the train part of the MLflow run; a retry resumes from
    ``checkpoint_prefix``/``run_key`` (see components.runtime.CheckpointMirror)."""
    from components.runtime import train_step

    train_step(params, data.path, model.path, n_epochs=n_epochs, n_epochs_decay=n_epochs_decay,
               checkpoint_prefix=checkpoint_prefix, run_key=run_key, image=image, tracking_uri=tracking_uri)
    model.metadata["framework"] = "pytorch"
    model.metadata["checkpoint"] = "checkpoints/latest.pt"
