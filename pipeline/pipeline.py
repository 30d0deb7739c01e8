"""The Kubeflow pipeline: fingerprint -> prepare -> train -> select -> evaluate -> export -> register
(export records the evaluation's out-of-domain thresholds, so it follows evaluate).

Run-time parameters (what a person sets per run) are one params document plus a few named
overrides; everything else comes from the document:

  params             the whole params document, YAML or JSON text (default: the repo's params.yaml at
                     compile time, stored as one line of JSON)
  image              the project image every task runs in (``task.set_container_image``)
  source             overrides prepare.source ("" keeps the document's)
  n_epochs, n_epochs_decay   override train.* (-1 keeps the document's)
  gpus               GPUs for the train task
  checkpoint_prefix  s3://bucket/prefix: the train task mirrors its checkpoint under
                     PREFIX/<train key>, so a retried train task (or a later run that trains the
                     same thing) resumes instead of starting over ("" turns it off)
  tracking_uri       the MLflow server ("" keeps register.tracking_uri / MLFLOW_TRACKING_URI)
  promote            move 'champion' when the gate passes

Cluster placement is fixed at compile time (``PipelineOptions``): the train task requests
``nvidia.com/gpu`` with CPU and memory, a node selector and a toleration for the GPU node pool
(via kfp-kubernetes); the other tasks request CPU and memory only. An optional Kubernetes
Secret provides S3 and MLflow credentials as environment variables to every task.

Retries: fingerprint and prepare (downloads) and train (preemptible GPU nodes; it resumes)
retry with backoff; select, evaluate and export retry once; register is idempotent and retries once.

Caching, so that a scheduled run retrains only when something changed: the fingerprint task
reads the outside world (a dataset server, an S3 prefix), prepares the data into a scratch
folder and outputs its content keys; it is never cached. Every later task is keyed on content,
never on the run: prepare on the data key (a cache hit hands on the earlier run's very Dataset
artifact, and a KFP cache key names input artifacts by identity), train on the train key
(data, data/model/train params, training code, image, processes: ``steps.content_key``) and
on its own inputs, evaluate and export on theirs. So with unchanged data, params and code,
prepare, train, select, evaluate and export are cache hits and only register runs again (it finds the
version by its ONNX digest: nothing new is registered). register moves registry aliases and is
never cached. The train task's inputs include the whole params document, so a change in any
section (even evaluate's) trains again: conservative, and the document's sections are logged
with the run, which a trimmed document would get wrong.
"""
# No `from __future__ import annotations` here: KFP reads the pipeline's parameter types.
from dataclasses import dataclass, field
from pathlib import Path

from kfp import dsl

from components import DEFAULT_IMAGE
from components.evaluate import evaluate as evaluate_op
from components.export import export as export_op
from components.fingerprint import fingerprint as fingerprint_op
from components.prepare import prepare as prepare_op
from components.register import register as register_op
from components.select import select as select_op
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


class StepTasks:
    """Each step's task as every pipeline here places, retries and caches it; made inside a
    pipeline function, where ``image`` and ``tracking_uri`` are its parameters."""

    def __init__(self, options: PipelineOptions, image, tracking_uri):
        self.opts, self.image, self.tracking_uri = options, image, tracking_uri

    def place(self, task, cpu: str | None = None, memory: str | None = None):
        """The task's image, CPU and memory requests, and the credentials Secret."""
        task.set_container_image(self.image)
        task.set_cpu_request(cpu or self.opts.step_cpu).set_memory_request(memory or self.opts.step_memory)
        return _with_secret(task, self.opts.credentials_secret)

    def fingerprint(self, params, source, n_epochs, n_epochs_decay, gpus):
        task = self.place(fingerprint_op(params=params, source=source, n_epochs=n_epochs,
                                         n_epochs_decay=n_epochs_decay, gpus=gpus, image=self.image,
                                         tracking_uri=self.tracking_uri))
        task.set_caching_options(False).set_retry(2, backoff_duration="60s", backoff_factor=2)
        return task.set_display_name("fingerprint")

    def prepare(self, params, source, data_key):
        task = self.place(prepare_op(params=params, source=source, data_key=data_key, image=self.image,
                                     tracking_uri=self.tracking_uri))
        task.set_caching_options(True).set_retry(2, backoff_duration="60s", backoff_factor=2)
        return task.set_display_name("prepare")

    def train(self, params, data, n_epochs, n_epochs_decay, checkpoint_prefix, train_key, gpus):
        from kfp import kubernetes

        opts = self.opts
        task = self.place(train_op(params=params, data=data, n_epochs=n_epochs, n_epochs_decay=n_epochs_decay,
                                   checkpoint_prefix=checkpoint_prefix, train_key=train_key, gpus=gpus,
                                   image=self.image, tracking_uri=self.tracking_uri),
                          opts.train_cpu, opts.train_memory)
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
        task.set_retry(opts.train_retries, backoff_duration="120s", backoff_factor=2)
        task.set_caching_options(True).set_display_name("train")
        for key, value in opts.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        if opts.gpu_toleration_key:
            kubernetes.add_toleration(task, key=opts.gpu_toleration_key, operator="Exists", effect="NoSchedule")
        return task

    def select(self, params, data, model):
        task = self.place(select_op(params=params, data=data, model=model, image=self.image,
                                    tracking_uri=self.tracking_uri))
        return task.set_retry(1).set_caching_options(True).set_display_name("select")

    def evaluate(self, params, data, model, selected):
        task = self.place(evaluate_op(params=params, data=data, model=model, selected=selected, image=self.image,
                                      tracking_uri=self.tracking_uri))
        return task.set_retry(1).set_caching_options(True).set_display_name("evaluate")

    def export(self, params, data, model, selected, evaluation):
        task = self.place(export_op(params=params, data=data, model=model, selected=selected, evaluation=evaluation,
                                    image=self.image, tracking_uri=self.tracking_uri))
        return task.set_retry(1).set_caching_options(True).set_display_name("export")

    def register(self, params, data, model, selected, onnx, evaluation, promote):
        task = self.place(register_op(params=params, data=data, model=model, selected=selected, onnx=onnx,
                                      evaluation=evaluation, promote=promote, image=self.image,
                                      tracking_uri=self.tracking_uri))
        return task.set_retry(1).set_caching_options(False).set_display_name("register")


def build_pipeline(options: "PipelineOptions | None" = None, params: "str | None" = None):
    """The pipeline function, with ``options`` applied and ``params`` as the default document."""
    opts = options or PipelineOptions()
    document = default_params() if params is None else one_line(params)

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="CycleGAN: fingerprint -> prepare -> train -> select -> evaluate -> export -> register (MLflow gate)")
    def cyclegan_pipeline(params: str = document, image: str = DEFAULT_IMAGE, source: str = "",
                          n_epochs: int = -1, n_epochs_decay: int = -1, gpus: int = 1,
                          checkpoint_prefix: str = "", tracking_uri: str = "", promote: bool = True):
        tasks = StepTasks(opts, image, tracking_uri)
        keys = tasks.fingerprint(params, source, n_epochs, n_epochs_decay, gpus)
        prep = tasks.prepare(params, source, keys.outputs["data_key"])
        data = prep.outputs["data"]
        tr = tasks.train(params, data, n_epochs, n_epochs_decay, checkpoint_prefix, keys.outputs["train_key"], gpus)
        selected = tasks.select(params, data, tr.outputs["model"]).outputs["selected"]
        ev = tasks.evaluate(params, data, tr.outputs["model"], selected)
        ex = tasks.export(params, data, tr.outputs["model"], selected, ev.outputs["evaluation"])
        tasks.register(params, data, tr.outputs["model"], selected, ex.outputs["onnx"], ev.outputs["evaluation"],
                       promote)

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
