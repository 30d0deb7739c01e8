"""What the Kubeflow components run: thin calls of the project's CLI and library.

A lightweight KFP component is shipped as the source of its one function, so each body in
``components/<step>.py`` only imports this module (installed in the project image, and in the
venv for ``cyclegan pipeline run --local``) and calls one function here. Every step runs the
same ``cyclegan`` commands as ``dvc.yaml`` does.

The pipeline passes one params document (YAML text) plus a few named overrides; ``cli_args``
turns them into ``--params FILE --set section.key=value`` arguments.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from training import storage

# Named pipeline overrides -> the params key each one sets (unset: empty string or negative).
OVERRIDES = {"source": "prepare.source", "n_epochs": "train.n_epochs",
             "n_epochs_decay": "train.n_epochs_decay", "device": "train.device"}


def overrides_from(named: dict[str, Any]) -> list[str]:
    """``{"n_epochs": 5, "source": ""}`` -> ``["train.n_epochs=5"]`` (unset values are skipped)."""
    out = []
    for name, value in named.items():
        if name not in OVERRIDES:
            raise ValueError(f"unknown pipeline override {name!r} (known: {', '.join(OVERRIDES)})")
        if value is None or value == "" or (isinstance(value, int) and not isinstance(value, bool) and value < 0):
            continue
        out.append(f"{OVERRIDES[name]}={value}")
    return out


def write_params(params: str, folder: Path) -> Path:
    """The params document as a file; an empty document means the typed defaults."""
    import yaml

    path = folder / "params.yaml"
    data = yaml.safe_load(params) if params.strip() else {}
    path.write_text(yaml.safe_dump(data or {}, sort_keys=False))
    return path


def set_environment(image: str = "", tracking_uri: str = "") -> None:
    """Lineage (the image this task runs in) and the MLflow server, when the pipeline names them."""
    if image:
        os.environ["CYCLEGAN_IMAGE"] = image
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri


def cyclegan(*argv: str) -> None:
    """Run one ``cyclegan`` command in this process; a non-zero exit fails the task."""
    from training.cli import main

    print("+ cyclegan " + " ".join(argv), flush=True)
    code = main(list(argv))
    if code:
        raise RuntimeError(f"cyclegan {argv[0]} exited with status {code}")


class Params:
    """``--params FILE --set ...`` for one task, in a temporary folder removed on exit."""

    def __init__(self, params: str, **named: Any):
        self._tmp = tempfile.TemporaryDirectory(prefix="cyclegan-params-")
        self.path = write_params(params, Path(self._tmp.name))
        self.overrides = overrides_from(named)

    def args(self) -> list[str]:
        out = ["--params", str(self.path)]
        for item in self.overrides:
            out += ["--set", item]
        return out

    def __enter__(self) -> "Params":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


# -- steps --------------------------------------------------------------------------------------

def prepare_step(params: str, source: str, data: str) -> None:
    with Params(params, source=source) as p:
        cyclegan("prepare", "--out", data, "--no-progress", *p.args())


def train_step(params: str, data: str, model: str, *, n_epochs: int = -1, n_epochs_decay: int = -1,
               device: str = "", checkpoint_prefix: str = "", run_key: str = "", image: str = "",
               tracking_uri: str = "", mirror_interval_s: float = 30.0) -> None:
    """Train into ``model`` (a folder); with ``checkpoint_prefix``, resumable across retries.

    The checkpoint, the log and the MLflow run id are mirrored to
    ``<checkpoint_prefix>/<run_key>/`` while training. A retried task (same pipeline run, so
    the same ``run_key``) restores them first and ``--resume`` continues from the last saved
    iteration, logging into the same MLflow run.
    """
    from training import tracking
    from training.config import load_config

    set_environment(image, tracking_uri)
    out = Path(model)
    out.mkdir(parents=True, exist_ok=True)
    mirror = None
    if checkpoint_prefix:
        mirror = CheckpointMirror(out, storage.join(checkpoint_prefix, run_key or "default"), mirror_interval_s)
        restored = mirror.restore()
        print(f"checkpoint mirror {mirror.prefix}: restored {restored or 'nothing'}", flush=True)
    with Params(params, n_epochs=n_epochs, n_epochs_decay=n_epochs_decay, device=device) as p:
        cfg = load_config(p.path, p.overrides, required=True)
        run_id = tracking.open_run(cfg, out, data)     # before training: a retry reuses the same run
        if mirror is not None:
            mirror.sync()
            mirror.start()
        try:
            cyclegan("train", "--data", data, "--out", str(out), "--resume", "--no-progress", *p.args())
        finally:
            if mirror is not None:
                mirror.stop()
        tracking.log_train_part(cfg, run_id, out, data)


def evaluate_step(params: str, data: str, model: str, evaluation: str, report_html: str, image: str = "",
                  tracking_uri: str = "") -> dict[str, float]:
    """Evaluate; returns the numeric metrics (for the KFP Metrics artifact)."""
    from training import tracking

    set_environment(image, tracking_uri)
    with Params(params) as p:
        cyclegan("evaluate", "--data", data, "--checkpoint", str(Path(model) / "checkpoints" / "latest.pt"),
                 "--train-log", str(Path(model) / "train_log.csv"), "--out", evaluation, "--no-progress", *p.args())
        cyclegan("register", "--log-evaluate", evaluation, "--run-id-file", run_id_file(model), *p.args())
    Path(report_html).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(evaluation) / "report" / "index.html", report_html)  # self-contained page
    return tracking.numeric_metrics(json.loads((Path(evaluation) / "metrics.json").read_text()))


def export_step(params: str, data: str, model: str, onnx: str, image: str = "", tracking_uri: str = "") -> None:
    set_environment(image, tracking_uri)
    checkpoint = str(Path(model) / "checkpoints" / "latest.pt")
    with Params(params) as p:
        cyclegan("export", "--checkpoint", checkpoint, "--data", data, "--out", onnx, "--no-progress", *p.args())
        cyclegan("register", "--log-export", onnx, "--checkpoint", checkpoint, "--run-id-file", run_id_file(model),
                 *p.args())


def register_step(params: str, data: str, model: str, onnx: str, evaluation: str, decision: str,
                  promote: bool, image: str = "", tracking_uri: str = "") -> dict[str, Any]:
    set_environment(image, tracking_uri)
    with Params(params) as p:
        cyclegan("register", "--model", onnx, "--metrics", str(Path(evaluation) / "metrics.json"),
                 "--checkpoint", str(Path(model) / "checkpoints" / "latest.pt"), "--data", data,
                 "--run-id-file", run_id_file(model), "--out", decision, *(["--promote"] if promote else []),
                 *p.args())
    return json.loads((Path(decision) / "decision.json").read_text())


def run_id_file(model: str) -> str:
    from training.tracking import RUN_ID_FILE

    return str(Path(model) / RUN_ID_FILE)


# -- resumable checkpoints on S3 -----------------------------------------------------------------

class CheckpointMirror:
    """Keeps ``<prefix>/{checkpoints/latest.pt, train_log.csv, mlflow_run_id}`` up to date with a
    local train folder, from a background thread, so a retried task can resume.

    ``latest.pt`` is written by the trainer with a rename, so any version seen is complete; the
    log is appended to, so only its complete lines are uploaded. Objects are written whole
    (single or multipart upload), so the prefix never holds a half-written checkpoint.
    """

    FILES = ("checkpoints/latest.pt", "train_log.csv", "mlflow_run_id")

    def __init__(self, local: str | Path, prefix: str, interval_s: float = 30.0):
        self.local, self.prefix, self.interval_s = Path(local), prefix.rstrip("/"), interval_s
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def restore(self) -> list[str]:
        """Download what an earlier attempt left; returns the names restored."""
        restored = []
        for name in self.FILES:
            uri = storage.join(self.prefix, name)
            if storage.exists(uri):
                storage.download_file(uri, self.local / name)
                restored.append(name)
                self._seen[name] = self._stamp(self.local / name)
        return restored

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_mtime_ns, st.st_size

    def sync(self) -> list[str]:
        """Upload the files that changed since the last upload; returns their names."""
        uploaded = []
        with self._lock:
            for name in self.FILES:
                path = self.local / name
                if not path.is_file():
                    continue
                try:
                    stamp = self._stamp(path)
                except FileNotFoundError:  # replaced between the check and the stat
                    continue
                if self._seen.get(name) == stamp:
                    continue
                uri = storage.join(self.prefix, name)
                if name.endswith(".csv"):
                    data = path.read_bytes()
                    storage.write_bytes(uri, data[:data.rfind(b"\n") + 1])
                else:
                    storage.upload_file(path, uri)
                self._seen[name] = stamp
                uploaded.append(name)
        return uploaded

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as e:  # keep training; the next round or the final sync retries
                print(f"checkpoint mirror: upload failed, will retry: {e}", flush=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="checkpoint-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sync()
