"""MLflow tracking: one run per pipeline run, and each step adds its own part to it.

How the run travels
  The train step (``cyclegan train --track``) opens the run and writes its id into the train
  folder (``TrainRun.run_id``). That file is part of the train output (a DVC out, the KFP Model
  artifact), so every later step finds the run through the train folder (``--train``).
  Nothing else is shared between steps.

What each step logs (``cyclegan track train|evaluate|export``; folder names in ``layout``)
  train     every parameter (the run's config, flattened to ``section.key``); per-epoch mean
            losses and the learning rate from the training log (step = epoch); each log row
            as ``train/<column>`` (step = iteration); the sample grids as images (step =
            iteration); lineage tags. ``cyclegan train --track`` already sends the rows and
            grids while it trains (``live.py``); this part adds only the steps the store lacks,
            so no metric ever holds two points at one step
  select    each scored epoch's validation figures as ``select_<figure>`` (step = epoch); which
            checkpoint went on (tags ``selected_epoch``, ``selection_mode``, ``selection_metric``);
            the scores file and its CSV as artifacts
  evaluate  the metrics as metrics (text values such as the test manifest hash as tags);
            the metrics file, report, grids and plots as artifacts
  export    the model: one pyfunc carrying both ONNX graphs (``pyfunc_model.py``), with a
            signature and an input example, every exported variant (fp16, uint8, int8) and
            the Triton model repository (artifact ``triton/``) so that a registered version
            deploys on ``cyclegan serve`` or on Triton; the verification report as an artifact
  register  the promotion gate's decision file (``registry.py``)

Lineage tags on the run (and, by ``registry.py``, on the model version)
  ``git_commit``            ``CYCLEGAN_GIT_COMMIT`` or ``git rev-parse HEAD`` (+ ``git_dirty``)
  ``data_manifest_sha256``  sha256 of the prepared data's ``manifest.json``
  ``container_image``       ``CYCLEGAN_IMAGE``, set by the pipeline on each task (where known)
  ``dataset_license``       ``register.dataset_license``
  ``selected_epoch``, ``selection_mode``, ``selection_metric``   the checkpoint the select step
                            chose (run: ``track select``; version: the registered checkpoint's record)

Logging a part again is a no-op: each part leaves a tag ``cyclegan.logged.<part>`` holding
the hash of what it logged. If the recorded run is missing from the tracking store (a new
``mlflow.db``, another server), the first step that needs it opens a replacement run tagged
``cyclegan.replaces=<old id>`` and re-logs the train part; later steps find the same one.

The tracking URI is ``register.tracking_uri`` (default ``sqlite:///mlflow.db``, local
artifacts under ``mlruns/``) unless ``MLFLOW_TRACKING_URI`` is set. MLflow is imported here,
lazily, and nowhere else in ``training/``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import UserError
from ..layout import Evaluation, Export, Selection, TrainRun
from ..utils import atomic_write_text, sha256_file

MODEL_NAME_IN_RUN = "model"        # the logged model's name inside the run
LOSS_PREFIX = "loss_"
# The registered model's code, logged by path ("model from code"): each version keeps its own
# copy, so versions logged before a change of this file still load as they were.
PYFUNC_MODEL = str(Path(__file__).parents[1] / "export" / "pyfunc_model.py")
MAX_SAMPLE_IMAGES = 50             # sample grids logged as images (evenly spaced over the run)
EVALUATION_ARTIFACTS = "evaluation"  # the run's artifact folder of the evaluate part
SELECTION_ARTIFACTS = "selection"    # ... and of the select part
SELECT_PREFIX = "select_"          # the select part's per-epoch metrics
# Each training-log row as per-iteration metrics (step = iteration). Their own names: the
# per-epoch means keep the bare column names (step = epoch), and one name never mixes the two.
ITERATION_PREFIX = "train/"
ITERATION_COLUMNS = ("lr", "it_per_s")   # besides the loss_* columns
SAMPLES_KEY = "samples"            # the image key of the sample grids
# MLflow's file name of an image logged with a key and step ("+" now, "%" in older versions)
_IMAGE_FILE = re.compile(r"(?P<key>.+)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%]\d+[+%][0-9a-f-]+\.png")

log = logging.getLogger(__name__)


# -- connection -------------------------------------------------------------------------------

def tracking_uri(cfg: Config) -> str:
    """``MLFLOW_TRACKING_URI`` wins over ``register.tracking_uri``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.register.tracking_uri


def client(cfg: Config):
    """An ``MlflowClient`` on the configured store (also set as the fluent API's store)."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    # The registry follows the tracking store unless MLFLOW_REGISTRY_URI names another one (which
    # MLflow reads itself). Never set it here: MLflow would export it to the environment.
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def experiment_id(mlc, cfg: Config) -> str:
    exp = mlc.get_experiment_by_name(cfg.register.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlc.create_experiment(cfg.register.experiment, artifact_location=cfg.register.artifact_location or None)
    except Exception:  # created concurrently by another step
        exp = mlc.get_experiment_by_name(cfg.register.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def _run_exists(mlc, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlc.get_run(run_id)
        return True
    except MlflowException:
        return False


# -- lineage ----------------------------------------------------------------------------------

def git_commit(cwd: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout, or ``CYCLEGAN_GIT_COMMIT`` inside an image."""
    baked = os.environ.get("CYCLEGAN_GIT_COMMIT")
    if baked:
        return baked, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def manifest_sha256(data_dir: str | Path | None) -> str | None:
    if data_dir is None:
        return None
    path = Path(data_dir) / "manifest.json"
    return sha256_file(path) if path.is_file() else None


def lineage_tags(cfg: Config, data_dir: str | Path | None = None) -> dict[str, str]:
    """The lineage every run and model version carries; unknown items are left out."""
    commit, dirty = git_commit()
    tags = {"dataset_license": cfg.register.dataset_license}
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit  # shown by the MLflow UI
    if dirty is not None:
        tags["git_dirty"] = str(dirty).lower()
    if (image := os.environ.get("CYCLEGAN_IMAGE")):
        tags["container_image"] = image
    if (digest := manifest_sha256(data_dir)):
        tags["data_manifest_sha256"] = digest
    return tags


# -- small helpers ----------------------------------------------------------------------------

def files_sha256(paths: list[Path]) -> str:
    """One hash over several files' names and contents (order-independent)."""
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        h.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return h.hexdigest()


def flatten_config(config: dict[str, Any]) -> dict[str, str]:
    """``{"train": {"lr": 2e-4}}`` -> ``{"train.lr": "0.0002"}`` (lists as JSON)."""
    flat = {}
    for section, values in config.items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        else:
            flat[section] = str(values)
    return flat


def epoch_metrics(log_path: Path) -> dict[int, dict[str, float]]:
    """Per-epoch means of the loss columns and the epoch's last learning rate and speed."""
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[int, int] = defaultdict(int)
    last: dict[int, dict[str, float]] = {}
    with open(log_path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = int(row["epoch"])
            counts[epoch] += 1
            for key, value in row.items():
                if key and key.startswith(LOSS_PREFIX) and value not in (None, ""):
                    sums[epoch][key] += float(value)
            last[epoch] = {k: float(row[k]) for k in ("lr", "it_per_s", "iteration") if row.get(k) not in (None, "")}
    out = {}
    for epoch in sorted(counts):
        values = {k: v / counts[epoch] for k, v in sums[epoch].items()}
        values.update(last.get(epoch, {}))
        out[epoch] = values
    return out


def iteration_metrics(row: dict) -> dict[str, float]:
    """A training-log row's losses, learning rate and speed as ``train/<column>`` values."""
    out = {}
    for key, value in row.items():
        if key and (key.startswith(LOSS_PREFIX) or key in ITERATION_COLUMNS) and value not in (None, ""):
            number = float(value)
            if math.isfinite(number):
                out[ITERATION_PREFIX + key] = number
    return out


def row_metrics(row: dict, skip: dict[str, set[int]] | None = None) -> list:
    """One log row as MLflow metrics (step = iteration, timestamp = the row's time), leaving
    out the (key, step) pairs in ``skip``."""
    from mlflow.entities import Metric

    step = int(row["iteration"])
    millis = int(float(row["time"]) * 1000) if row.get("time") not in (None, "") else 0
    return [Metric(key, value, millis, step) for key, value in iteration_metrics(row).items()
            if not skip or step not in skip.get(key, ())]


def logged_steps(mlc, run_id: str, keys) -> dict[str, set[int]]:
    """The steps each metric already holds in the run (one request for a run that has none of
    them, one more per metric it has)."""
    held = mlc.get_run(run_id).data.metrics
    return {key: {m.step for m in mlc.get_metric_history(run_id, key)} if key in held else set() for key in keys}


def logged_images(mlc, run_id: str, key: str = SAMPLES_KEY) -> list[int]:
    """The step of each image of ``key`` in the run (a step twice if logged twice)."""
    steps = []
    for artifact in mlc.list_artifacts(run_id, "images"):
        match = _IMAGE_FILE.fullmatch(artifact.path.rsplit("/", 1)[-1])
        if match and match["key"] == key:
            steps.append(int(match["step"]))
    return sorted(steps)


def logged_image_steps(mlc, run_id: str, key: str = SAMPLES_KEY) -> set[int]:
    """The steps at which images of ``key`` are already in the run."""
    return set(logged_images(mlc, run_id, key))


def sample_step(path: Path) -> int:
    """The iteration in a sample grid's file name."""
    digits = "".join(c for c in Path(path).stem if c.isdigit())
    return int(digits) if digits else 0


def log_sample(mlc, run_id: str, path: Path, step: int | None = None) -> None:
    """One sample grid as an image of ``SAMPLES_KEY`` (step = its iteration)."""
    from PIL import Image

    with Image.open(path) as image:
        mlc.log_image(run_id, image.convert("RGB"), key=SAMPLES_KEY,
                      step=sample_step(path) if step is None else step, synchronous=True)


def _logged_marker(mlc, run_id: str, part: str) -> str | None:
    return mlc.get_run(run_id).data.tags.get(f"cyclegan.logged.{part}")


def _log_params(mlc, run_id: str, params: dict[str, str]) -> None:
    """Log params not yet on the run; a differing existing value is kept (params are immutable)."""
    from mlflow.entities import Param

    existing = mlc.get_run(run_id).data.params
    new = []
    for key, value in params.items():
        value = value[:6000]
        if key not in existing:
            new.append(Param(key, value))
        elif existing[key] != value:
            log.warning("MLflow param %s is already %r on run %s; keeping it (new value %r)",
                        key, existing[key], run_id, value)
    for i in range(0, len(new), 100):  # the store's batch limit
        mlc.log_batch(run_id, params=new[i:i + 100])


# -- runs -------------------------------------------------------------------------------------

def read_run_id(run_id_file: str | Path) -> str:
    path = Path(run_id_file)
    try:
        run_id = path.read_text().strip()
    except FileNotFoundError:
        raise UserError(f"{path}: no MLflow run id here (log the train step first: "
                        "cyclegan track train TRAIN_DIR)") from None
    if not run_id:
        raise UserError(f"{path}: empty MLflow run id file")
    return run_id


def open_run(cfg: Config, train_dir: str | Path, data_dir: str | Path | None = None) -> str:
    """The run of this pipeline run: the one recorded in ``train_dir``'s run id file when it
    still exists in the store, else a new one whose id is written there."""
    mlc = client(cfg)
    id_file = TrainRun(train_dir).run_id
    if id_file.exists():
        run_id = id_file.read_text().strip()
        if run_id and _run_exists(mlc, run_id):
            return run_id
    Path(train_dir).mkdir(parents=True, exist_ok=True)
    run = mlc.create_run(experiment_id(mlc, cfg), tags=lineage_tags(cfg, data_dir))
    atomic_write_text(id_file, run.info.run_id + "\n")
    return run.info.run_id


def resolve_run(cfg: Config, run_id_file: str | Path | None, train_dir: str | Path | None = None) -> str:
    """The run named by ``run_id_file``; if the store lost it, a replacement run (found again by
    its ``cyclegan.replaces`` tag) into which the train part is re-logged from ``train_dir``.
    Without a file, a fresh run (a standalone ``cyclegan register``)."""
    mlc = client(cfg)
    exp_id = experiment_id(mlc, cfg)
    if run_id_file is None:
        return mlc.create_run(exp_id, tags=lineage_tags(cfg), run_name="register").info.run_id
    run_id = read_run_id(run_id_file)
    if _run_exists(mlc, run_id):
        return run_id
    found = mlc.search_runs([exp_id], filter_string=f"tags.`cyclegan.replaces` = '{run_id}'", max_results=1)
    if found:
        return found[0].info.run_id
    log.warning("MLflow run %s (from %s) is not in %s; opening a replacement run", run_id, run_id_file,
                tracking_uri(cfg))
    new = mlc.create_run(exp_id, tags={**lineage_tags(cfg), "cyclegan.replaces": run_id}).info.run_id
    train_dir = Path(train_dir) if train_dir else Path(run_id_file).parent
    if TrainRun(train_dir).log.exists():
        log_train_part(cfg, new, train_dir)
    return new


def end_run(cfg: Config, run_id: str, status: str = "FINISHED") -> None:
    client(cfg).set_terminated(run_id, status)


# -- the parts --------------------------------------------------------------------------------

def log_train(cfg: Config, train_dir: str | Path, data_dir: str | Path | None = None) -> str:
    """Open (or reuse) the pipeline's run and log the train part; returns the run id."""
    run_id = open_run(cfg, train_dir, data_dir)
    log_train_part(cfg, run_id, Path(train_dir), data_dir)
    return run_id


def log_train_part(cfg: Config, run_id: str, train_dir: Path, data_dir: str | Path | None = None) -> None:
    from mlflow.entities import Metric

    mlc = client(cfg)
    run = TrainRun(train_dir)
    config_path, log_path = run.config, run.log
    inputs = [p for p in (config_path, log_path) if p.exists()]
    if not inputs:
        raise UserError(f"{train_dir}: no {config_path.name} or {log_path.name} (not a train output folder)")
    marker = files_sha256(inputs)
    if _logged_marker(mlc, run_id, "train") == marker:
        return
    tags = lineage_tags(cfg, data_dir)
    for key, value in tags.items():
        mlc.set_tag(run_id, key, value)
    if config_path.exists():
        _log_params(mlc, run_id, flatten_config(json.loads(config_path.read_text())))
    if log_path.exists():
        per_epoch = epoch_metrics(log_path)
        with open(log_path, newline="") as f:
            rows = list(csv.DictReader(f))
        keys = {k for values in per_epoch.values() for k in values if k != "iteration"}
        keys |= {k for row in rows for k in iteration_metrics(row)}
        # what the live logger (or an earlier, interrupted call) already delivered stays single
        present = logged_steps(mlc, run_id, sorted(keys))
        metrics = []
        for epoch, values in per_epoch.items():
            for key, value in values.items():
                if key != "iteration" and math.isfinite(value) and epoch not in present[key]:
                    metrics.append(Metric(key, value, 0, epoch))
        for row in rows:
            metrics += row_metrics(row, present)
        for i in range(0, len(metrics), 1000):
            mlc.log_batch(run_id, metrics=metrics[i:i + 1000])
        mlc.log_artifact(run_id, str(log_path), "train")
    if config_path.exists():
        mlc.log_artifact(run_id, str(config_path), "train")
    logged = logged_image_steps(mlc, run_id)
    _log_samples(mlc, run_id, [p for p in run.sample_files() if sample_step(p) not in logged])
    mlc.set_tag(run_id, "cyclegan.logged.train", marker)


def _log_samples(mlc, run_id: str, paths: list[Path]) -> None:
    """Sample grids as MLflow images (step = the iteration in the file name)."""
    if len(paths) > MAX_SAMPLE_IMAGES:  # evenly spaced, always keeping the last one
        step = len(paths) / MAX_SAMPLE_IMAGES
        paths = [paths[int(i * step)] for i in range(MAX_SAMPLE_IMAGES - 1)] + [paths[-1]]
    for path in paths:
        log_sample(mlc, run_id, path)


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: metrics file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: expected a JSON object of metric names to values")
    return metrics


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def log_evaluate(cfg: Config, run_id: str, eval_dir: str | Path) -> None:
    """The metrics and the report, grids and plot files of an evaluation folder."""
    from mlflow.entities import Metric

    eval_dir = Path(eval_dir)
    files = Evaluation(eval_dir)
    metrics_path = files.metrics
    metrics = read_metrics(metrics_path)
    mlc = client(cfg)
    marker = files_sha256([metrics_path])
    if _logged_marker(mlc, run_id, "evaluate") == marker:
        return
    values = [Metric(k, v, 0, 0) for k, v in numeric_metrics(metrics).items()]
    for i in range(0, len(values), 1000):
        mlc.log_batch(run_id, metrics=values[i:i + 1000])
    for key, value in metrics.items():
        if isinstance(value, str):
            mlc.set_tag(run_id, f"eval.{key}", value[:5000])
    mlc.log_artifact(run_id, str(metrics_path), EVALUATION_ARTIFACTS)
    for folder in (files.report_dir, files.grids, files.plots):
        if folder.is_dir():
            mlc.log_artifacts(run_id, str(folder), f"{EVALUATION_ARTIFACTS}/{folder.name}")
    mlc.set_tag(run_id, "cyclegan.logged.evaluate", marker)


def report_artifact_path() -> str:
    """Where the evaluate part puts the HTML report inside the run's artifacts."""
    files = Evaluation("")
    return f"{EVALUATION_ARTIFACTS}/{files.report_dir.name}/{files.report.name}"


def selection_tags(record: dict | None) -> dict[str, str]:
    """The lineage tags of a selection record or scores file: which epoch, chosen how."""
    if not record:
        return {}
    epoch = record.get("selected_epoch", record.get("epoch"))
    tags = {"selected_epoch": str(epoch) if epoch is not None else None, "selection_mode": record.get("mode"),
            "selection_metric": record.get("metric")}
    return {k: str(v) for k, v in tags.items() if v is not None}


def log_select(cfg: Config, run_id: str, select_dir: str | Path) -> None:
    """The select part: every scored epoch's figures by epoch, the choice as tags, the files."""
    from mlflow.entities import Metric

    from ..evaluation.report import read_selection

    files = Selection(select_dir)
    scores = read_selection(files.scores)
    mlc = client(cfg)
    marker = files_sha256([files.scores])
    if _logged_marker(mlc, run_id, "select") == marker:
        return
    values = [Metric(f"{SELECT_PREFIX}{key}", float(value), 0, int(row["epoch"]))
              for row in scores["epochs"] for key, value in row.items()
              if key not in ("epoch", "checkpoint") and isinstance(value, (int, float)) and math.isfinite(value)]
    for i in range(0, len(values), 1000):
        mlc.log_batch(run_id, metrics=values[i:i + 1000])
    for key, value in selection_tags(scores).items():
        mlc.set_tag(run_id, key, value)
    for path in (files.scores, files.scores_plot):
        if path.is_file():
            mlc.log_artifact(run_id, str(path), SELECTION_ARTIFACTS)
    mlc.set_tag(run_id, "cyclegan.logged.select", marker)


def onnx_paths(export_dir: str | Path) -> list[Path]:
    paths = Export(export_dir).onnx_pair()
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{export_dir}: missing {', '.join(missing)} (run cyclegan export first)")
    return paths


def slim_checkpoint(checkpoint: str | Path, out: Path) -> Path:
    """The generators and config of a trainer checkpoint, without discriminators, optimizer
    and RNG state: what ``checkpoint.load_generators`` (and so ``cyclegan evaluate``) reads."""
    from ..engine.checkpoint import atomic_torch_save, load_checkpoint
    from ..evaluation.select import RECORD

    state = load_checkpoint(checkpoint)
    slim = {"format": state["format"], "config": state["config"],
            "models": {k: state["models"][k] for k in ("G_A", "G_B")},
            "epoch": state.get("epoch"), "global_iter": state.get("global_iter")}
    if RECORD in state:   # which epoch was chosen, and how: travels with the weights
        slim[RECORD] = state[RECORD]
    atomic_torch_save(slim, out)
    return out


def log_export(cfg: Config, run_id: str, export_dir: str | Path, checkpoint: str | Path | None = None) -> str:
    """Log both ONNX graphs as one pyfunc model in the run; returns its model URI.

    The model also carries the export's other variants (``G_AtoB_fp16`` ...) and its Triton
    model repository (the artifact folder ``triton``: ``<model>/artifacts/triton/`` of a
    downloaded version is what ``tritonserver --model-repository`` or KServe's Triton runtime
    takes). With ``checkpoint``, also ``Export.GENERATORS`` (the generators' weights and config)
    so that a later gate can re-evaluate this version on a new test set.
    Idempotent: a run whose model already holds these exact files returns that model's URI.
    """
    import tempfile

    import mlflow

    paths = onnx_paths(export_dir)
    digest = files_sha256(paths)
    export = Export(export_dir)
    extra = [p for p in export.variant_files() if p not in paths]
    triton = sorted(p for p in export.triton.rglob("*") if p.is_file()) if export.triton.is_dir() else []
    content = hashlib.sha256(f"{digest} {files_sha256(extra)} {_tree_sha256(export.triton, triton)}".encode())
    mlc = client(cfg)
    tags = mlc.get_run(run_id).data.tags
    if tags.get("cyclegan.logged.export") == content.hexdigest() and tags.get("cyclegan.model_uri"):
        return tags["cyclegan.model_uri"]
    artifacts = {p.stem: str(p) for p in paths}   # keys G_AtoB, G_BtoA: what pyfunc_model.py loads
    artifacts.update({p.stem: str(p) for p in extra})
    if triton:
        artifacts[export.triton.name] = str(export.triton)   # a folder artifact keeps its tree
    tmp = tempfile.TemporaryDirectory(prefix="cyclegan-export-")
    if checkpoint is not None:
        artifacts["generators"] = str(slim_checkpoint(checkpoint, Path(tmp.name) / Export.GENERATORS))
    import warnings

    signature, example = _signature_and_example(paths[0])
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # The signature is explicit, so MLflow's advice to add type hints does not apply.
        warnings.filterwarnings("ignore", message=".*type hints.*")
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=PYFUNC_MODEL,
            artifacts=artifacts,
            signature=signature, input_example=example,
            pip_requirements=_pip_requirements(),
            metadata={"onnx_sha256": digest, "directions": ["AtoB", "BtoA"],
                      "input": "float32 NCHW in [-1, 1]; params.direction = AtoB | BtoA"})
        for extra in sorted(Path(export_dir).glob("*.json")):
            mlflow.log_artifact(str(extra), "export")
    tmp.cleanup()
    mlc.set_tag(run_id, "cyclegan.onnx_sha256", digest)
    mlc.set_tag(run_id, "cyclegan.model_uri", info.model_uri)
    mlc.set_tag(run_id, "cyclegan.logged.export", content.hexdigest())
    return info.model_uri


def _tree_sha256(root: Path, paths: list[Path]) -> str:
    """One hash over files' paths relative to ``root`` and their contents (the Triton
    repository holds two files of each name, so names alone do not tell them apart)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root)).encode() + b"\0" + sha256_file(path).encode())
    return h.hexdigest()


def _signature_and_example(onnx_path: Path):
    """Image tensor in, image tensor out, with the direction as an inference parameter."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    channels = _onnx_channels(onnx_path)
    tensor = TensorSpec(np.dtype("float32"), (-1, channels, -1, -1), "image")
    signature = ModelSignature(inputs=Schema([tensor]), outputs=Schema([tensor]),
                               params=ParamSchema([ParamSpec("direction", "string", "AtoB")]))
    example = np.random.default_rng(0).uniform(-1, 1, (1, channels, 32, 32)).astype("float32")
    return signature, (example, {"direction": "AtoB"})


def _onnx_channels(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) > 1 and dims[1].dim_value else 3


def _pip_requirements() -> list[str]:
    """Pin what the pyfunc needs (inferring it would load the model in a subprocess)."""
    from importlib import metadata

    reqs = []
    for dist in ("mlflow", "numpy", "onnxruntime-gpu", "onnxruntime"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
        if dist.startswith("onnxruntime"):
            break
    return reqs


def run_url(cfg: Config, run_id: str) -> str:
    """Where a person finds the run: the UI address for a server, the store otherwise."""
    uri = tracking_uri(cfg)
    mlc = client(cfg)
    exp = mlc.get_run(run_id).info.experiment_id
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    return f"run {run_id} in experiment {exp} of {uri} (browse it with: mlflow ui --backend-store-uri {uri})"
