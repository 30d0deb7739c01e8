"""The Kubeflow pipeline: prepare -> train -> evaluate -> export -> register (export records
the evaluation's out-of-domain thresholds, so it follows evaluate).

Run-time parameters (what a person sets per run) are one params document plus a few named
overrides; everything else comes from the document:

  params             the whole params document, YAML or JSON text (default: the repo's params.yaml at
                     compile time, stored as one line of JSON)
  image              the project image every task runs in (``task.set_container_image``)
  source             overrides prepare.source ("" keeps the document's)
  n_epochs, n_epochs_decay   override train.* (-1 keeps the document's)
  gpus               GPUs for the train task
  checkpoint_prefix  s3://bucket/prefix: the train task mirrors its checkpoint there, per run,
                     so a retried train task resumes instead of starting over ("" turns it off)
  tracking_uri       the MLflow server ("" keeps register.tracking_uri / MLFLOW_TRACKING_URI)
  promote            move 'champion' when the gate passes

Cluster placement is fixed at compile time (``PipelineOptions``): the train task requests
``nvidia.com/gpu`` with CPU and memory, a node selector and a toleration for the GPU node pool
(via kfp-kubernetes); the other tasks request CPU and memory only. An optional Kubernetes
Secret provides S3 and MLflow credentials as environment variables to every task.

Retries: prepare (downloads) and train (preemptible GPU nodes; it resumes) retry with
backoff; evaluate and export retry once; register is idempotent and retries once.
Caching: train, evaluate and export are pure functions of their inputs and are cached;
prepare reads the outside world (a dataset server, an S3 prefix) and register moves registry
aliases, so neither is cached.
"""
# No `from __future__ import annotations` here: KFP reads the pipeline's parameter types.
from dataclasses import dataclass, field
from pathlib import Path

from kfp import dsl

from components import DEFAULT_IMAGE
from components.evaluate import evaluate as evaluate_op
from components.export import export as export_op
from components.prepare import prepare as prepare_op
from components.register import register as register_op
from components.train import train as train_op

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_NAME = "cyclegan"

# Environment variables a task may take from the credentials Secret (missing keys are skipped).
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
               "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
               "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass
class PipelineOptions:
    """Compile-time placement of the tasks on the cluster."""
    gpu_node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    gpu_toleration_key: str = "nvidia.com/gpu"        # the taint GPU node pools usually carry
    train_cpu: str = "4"
    train_memory: str = "16G"
    step_cpu: str = "2"
    step_memory: str = "8G"
    credentials_secret: str = ""                      # Kubernetes Secret with SECRET_KEYS, "" = none
    train_retries: int = 3


def one_line(document: str) -> str:
    """A params document (YAML or JSON text) as one line of JSON. Parameter defaults are
    echoed into the compiled file's header comment, which a multi-line default would break."""
    import json

    import yaml

    return json.dumps(yaml.safe_load(document) or {}) if document.strip() else ""


def default_params() -> str:
    path = ROOT / "params.yaml"
    return one_line(path.read_text()) if path.exists() else ""


def _with_secret(task, secret: str):
    if secret:
        from kfp import kubernetes

        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={k: k for k in SECRET_KEYS},
                                     optional=True)
    return task


def build_pipeline(options: "PipelineOptions | None" = None, params: "str | None" = None):
    """The pipeline function, with ``options`` applied and ``params`` as the default document."""
    from kfp import kubernetes

    opts = options or PipelineOptions()
    document = default_params() if params is None else one_line(params)

    def steps(task, cpu: str, memory: str, image):
        task.set_container_image(image)
        task.set_cpu_request(cpu).set_memory_request(memory)
        return _with_secret(task, opts.credentials_secret)

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="CycleGAN: prepare -> train -> evaluate -> export -> register (MLflow gate)")
    def cyclegan_pipeline(params: str = document, image: str = DEFAULT_IMAGE, source: str = "",
                          n_epochs: int = -1, n_epochs_decay: int = -1, gpus: int = 1,
                          checkpoint_prefix: str = "", tracking_uri: str = "", promote: bool = True):
        prep = steps(prepare_op(params=params, source=source), opts.step_cpu, opts.step_memory, image)
        prep.set_caching_options(False).set_retry(2, backoff_duration="60s", backoff_factor=2)
        prep.set_display_name("prepare")

        tr = steps(train_op(params=params, data=prep.outputs["data"], n_epochs=n_epochs,
                           n_epochs_decay=n_epochs_decay, checkpoint_prefix=checkpoint_prefix,
                           run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER, image=image, tracking_uri=tracking_uri),
                   opts.train_cpu, opts.train_memory, image)
        tr.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
        tr.set_retry(opts.train_retries, backoff_duration="120s", backoff_factor=2)
        tr.set_caching_options(True).set_display_name("train")
        for key, value in opts.gpu_node_selector.items():
            kubernetes.add_node_selector(tr, label_key=key, label_value=value)
        if opts.gpu_toleration_key:
            kubernetes.add_toleration(tr, key=opts.gpu_toleration_key, operator="Exists", effect="NoSchedule")

        ev = steps(evaluate_op(params=params, data=prep.outputs["data"], model=tr.outputs["model"], image=image,
                              tracking_uri=tracking_uri), opts.step_cpu, opts.step_memory, image)
        ev.set_retry(1).set_caching_options(True).set_display_name("evaluate")

        ex = steps(export_op(params=params, data=prep.outputs["data"], model=tr.outputs["model"],
                            evaluation=ev.outputs["evaluation"], image=image, tracking_uri=tracking_uri),
                   opts.step_cpu, opts.step_memory, image)
        ex.set_retry(1).set_caching_options(True).set_display_name("export")

        reg = steps(register_op(params=params, data=prep.outputs["data"], model=tr.outputs["model"],
                               onnx=ex.outputs["onnx"], evaluation=ev.outputs["evaluation"], promote=promote,
                               image=image, tracking_uri=tracking_uri), opts.step_cpu, opts.step_memory, image)
        reg.set_retry(1).set_caching_options(False).set_display_name("register")

    return cyclegan_pipeline


def compile_pipeline(out: str | Path, options: PipelineOptions | None = None, params: str | None = None) -> Path:
    """Write the pipeline YAML (IR) to ``out``, atomically."""
    import os

    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.yaml")
    compiler.Compiler().compile(build_pipeline(options, params), str(tmp))
    os.replace(tmp, out)
    return out
