"""Run the pipeline: locally with the SDK's subprocess runner, or on a Kubeflow Pipelines
server through ``kfp.Client`` (one run, or a recurring run on a cron schedule)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from training.errors import UserError

from .pipeline import PIPELINE_NAME, PipelineOptions, compile_pipeline


def params_document(params_path: str | Path | None, overrides: list[str] | None = None) -> str:
    """The params file with ``--set`` overrides applied, validated, as one line of JSON
    (a YAML document, and safe in the compiled pipeline's header)."""
    import json

    from training.config import config_from_dict, load_document

    raw, source = load_document(params_path, overrides, required=params_path is not None)
    config_from_dict(raw, source)  # fail here, not in a pod
    return json.dumps(raw)


def normalise_cron(expression: str) -> str:
    """KFP's scheduler takes six fields (seconds first); a five-field crontab gets ``0`` seconds."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise UserError(f"--cron {expression!r}: expected 5 crontab fields (or 6 with seconds first)")
    return " ".join(fields)


def run_local(arguments: dict[str, Any], pipeline_root: str | Path, params: str, cache: bool = True,
              pipeline=None) -> dict[str, Any]:
    """The very same pipeline (``pipeline``, a built pipeline function; default: the main one
    with ``params``), run here by ``kfp.local`` with the subprocess runner in this Python
    environment (placement settings such as the GPU request are ignored locally).

    ``cache``: kfp.local's task cache (under ``<pipeline_root>/.kfp_cache``), keyed like the
    cluster's on each task's component, image, command and inputs (artifacts by URI): a run
    whose data, params and code are unchanged reuses the earlier run's train, evaluate and
    export outputs, while those still exist under the root. Returns the run's folder and the
    top-level tasks it reused."""
    import kfp.local

    from .pipeline import build_pipeline

    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache)
    pipeline = pipeline or build_pipeline(params=params)
    # Tasks run in this environment, not in an image: unless --image names one, lineage takes
    # CYCLEGAN_IMAGE from the environment (if set) instead of the pipeline's default image.
    arguments = {"gpus": 0, "image": "", **arguments}
    before = {p for p in root.iterdir() if p.is_dir()}
    task = pipeline(**arguments)
    # kfp.local gives each run a new folder, and each task that ran a folder in it; a cache hit has none
    runs = sorted((p for p in root.iterdir() if p.is_dir() and p not in before), key=lambda p: p.stat().st_mtime)
    run_dir = runs[-1] if runs else None
    ran = {p.name for p in run_dir.iterdir()} if run_dir else set()
    reused = sorted(name for name in pipeline.pipeline_spec.root.dag.tasks if name not in ran and run_dir)
    return {"pipeline_root": str(root), "run_dir": str(run_dir) if run_dir else None, "reused": reused,
            "outputs": {k: getattr(v, "uri", v) for k, v in task.outputs.items()}}


def _client(host: str, namespace: str | None, token: str | None):
    import kfp

    kwargs: dict[str, Any] = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    if token:
        kwargs["existing_token"] = token
    with _server_errors(host):
        return kfp.Client(**kwargs)


class _server_errors:
    """Connection and API failures become one-line errors that name the server."""

    def __init__(self, host: str):
        self.host = host

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, (UserError, KeyboardInterrupt)):
            return False
        module = type(error).__module__
        if module.startswith(("urllib3", "kfp_server_api", "requests", "http", "socket")) or isinstance(error, OSError):
            reason = str(getattr(error, "reason", "") or error).splitlines()[0][:300]
            raise UserError(f"{self.host}: Kubeflow Pipelines API call failed ({type(error).__name__}: {reason})") \
                from None
        return False


def submit(host: str, arguments: dict[str, Any], *, params: str, options: PipelineOptions | None = None,
           experiment: str = PIPELINE_NAME, run_name: str | None = None, namespace: str | None = None,
           token: str | None = None, compile_to: Callable[[Path], Path] | None = None) -> dict[str, Any]:
    """Compile and start one run on the server at ``host``; ``compile_to(path)`` writes the
    pipeline package (default: the main pipeline with ``options`` and ``params``)."""
    client = _client(host, namespace, token)
    compile_to = compile_to or (lambda path: compile_pipeline(path, options, params))
    with tempfile.TemporaryDirectory(prefix="cyclegan-kfp-") as tmp, _server_errors(host):
        package = compile_to(Path(tmp) / "cyclegan.yaml")
        result = client.create_run_from_pipeline_package(
            str(package), arguments={"params": params, **arguments}, run_name=run_name,
            experiment_name=experiment, namespace=namespace)
    run_id = getattr(result, "run_id", None)
    return {"run_id": run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run_id}" if run_id else host}


def schedule(host: str, cron: str, arguments: dict[str, Any], *, params: str,
             options: PipelineOptions | None = None, experiment: str = PIPELINE_NAME, job_name: str | None = None,
             namespace: str | None = None, token: str | None = None, max_concurrency: int = 1) -> dict[str, Any]:
    """Compile and create a recurring run: one run per cron tick, never two at once, no catch-up."""
    cron = normalise_cron(cron)
    client = _client(host, namespace, token)
    with tempfile.TemporaryDirectory(prefix="cyclegan-kfp-") as tmp, _server_errors(host):
        exp = client.create_experiment(experiment, namespace=namespace)  # returns the existing one if any
        package = compile_pipeline(Path(tmp) / "cyclegan.yaml", options, params)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=job_name or f"{PIPELINE_NAME}-scheduled",
            cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True, enabled=True,
            params={"params": params, **arguments}, pipeline_package_path=str(package))
    return {"recurring_run_id": getattr(job, "recurring_run_id", None), "cron": cron,
            "experiment_id": exp.experiment_id}
