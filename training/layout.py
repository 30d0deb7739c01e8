"""Every file and folder name of a training run, an evaluation, an export and a registration,
defined once. The trainer, evaluation, export, tracking, the step table (DVC and Kubeflow)
and the CLI's help texts ask this module; nothing else spells these names.

    run = TrainRun("runs/train")
    run.latest          runs/train/checkpoints/latest.pt
    run.epoch(5)        runs/train/checkpoints/epoch_5.pt
    Export("runs/export").onnx("AtoB", "uint8")   runs/export/G_AtoB_uint8.onnx

Roots may be placeholders (``TrainRun("{train}")``): the step table builds its command
templates that way. Serving does not import this module: it finds exported models by the
``direction`` and ``variant`` each ONNX file records in its metadata.
"""
from __future__ import annotations

import re
from pathlib import Path

# Where `dvc repro` keeps each step's output; Kubeflow passes its artifact paths instead.
FOLDERS = {"data": "data/prepared", "train": "runs/train", "eval": "runs/eval", "export": "runs/export",
           "register": "runs/register"}

DIRECTIONS = ("AtoB", "BtoA")


class _Folder:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.root == self.root


class TrainRun(_Folder):
    """What ``cyclegan train --out ROOT`` writes."""
    LATEST = "latest.pt"
    LOG = "train_log.csv"
    RUN_ID = "mlflow_run_id"
    _EPOCH = re.compile(r"epoch_(\d+)\.pt")

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path:
        """Full training state, rewritten as training goes: what resume reads."""
        return self.checkpoints / self.LATEST

    def epoch(self, n: int) -> Path:
        """A kept checkpoint at the end of epoch ``n``."""
        return self.checkpoints / f"epoch_{n}.pt"

    def epochs(self) -> list[Path]:
        """The kept epoch checkpoints, in epoch order."""
        found = [p for p in self.checkpoints.glob("epoch_*.pt") if self._EPOCH.fullmatch(p.name)]
        return sorted(found, key=self.epoch_number)

    @classmethod
    def epoch_number(cls, path: Path) -> int:
        match = cls._EPOCH.fullmatch(Path(path).name)
        if match is None:
            raise ValueError(f"{path}: not an epoch checkpoint")
        return int(match.group(1))

    @property
    def log(self) -> Path:
        """One row per logging window: losses, learning rate, it/s."""
        return self.root / self.LOG

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def sample(self, iteration: int) -> Path:
        return self.samples / f"iter_{iteration:07d}.png"

    def sample_files(self) -> list[Path]:
        return sorted(self.samples.glob("iter_*.png"))

    @property
    def config(self) -> Path:
        """The effective configuration of the run."""
        return self.root / "config.json"

    @property
    def run_id(self) -> Path:
        """The pipeline's MLflow run id: later steps log into the same run through it."""
        return self.root / self.RUN_ID


class Evaluation(_Folder):
    """What ``cyclegan evaluate --out ROOT`` writes."""

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def grids(self) -> Path:
        return self.root / "grids"

    def grid(self, direction: str) -> Path:
        return self.grids / f"{direction}.png"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def plots(self) -> Path:
        """The files ``dvc plots`` draws."""
        return self.root / "plots"

    @property
    def losses_plot(self) -> Path:
        return self.plots / "losses.csv"

    @property
    def metrics_plot(self) -> Path:
        return self.plots / "metrics.csv"

    @property
    def metrics_plot_json(self) -> Path:
        return self.plots / "metrics.json"

    @property
    def info(self) -> Path:
        return self.root / "eval_info.json"


class Export(_Folder):
    """What ``cyclegan export --out ROOT`` writes."""
    VARIANTS = ("fp32", "uint8", "int8")

    def onnx(self, direction: str, variant: str = "fp32") -> Path:
        """``G_AtoB.onnx`` (fp32), ``G_AtoB_uint8.onnx``, ``G_AtoB_int8.onnx``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        return self.root / (f"G_{direction}.onnx" if variant == "fp32" else f"G_{direction}_{variant}.onnx")

    def onnx_pair(self, variant: str = "fp32") -> list[Path]:
        return [self.onnx(d, variant) for d in DIRECTIONS]

    @property
    def verify(self) -> Path:
        return self.root / "verify.json"

    # inside the registered model: the generators' weights, for re-evaluating a version later
    GENERATORS = "generators.pt"


class Translation(_Folder):
    """What ``cyclegan translate --output ROOT`` writes besides the translated images (which
    keep their input names). The ONNX path (``serving/translate.py``) spells the same name:
    serving does not import this module; a test checks the two agree."""

    @property
    def quality(self) -> Path:
        """With --quality: one row per image: file, cycle_psnr_db, out_of_domain."""
        return self.root / "quality.csv"


class Registration(_Folder):
    """What ``cyclegan register --out ROOT`` writes."""

    @property
    def decision(self) -> Path:
        return self.root / "decision.json"

    @property
    def rollback(self) -> Path:
        return self.root / "rollback.json"
