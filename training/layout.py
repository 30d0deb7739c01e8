"""Every file and folder name of a training run, an evaluation, an export and a registration,
defined once. The trainer, evaluation, export, tracking, the step table (DVC and Kubeflow)
and the CLI's help texts ask this module; nothing else spells these names.

    run = TrainRun("runs/train")
    run.latest          runs/train/checkpoints/latest.pt
    run.epoch(5)        runs/train/checkpoints/epoch_5.pt
    Selection("runs/select").checkpoint        runs/select/selected.pt
    Export("runs/export").onnx("AtoB", "uint8")   runs/export/G_AtoB_uint8.onnx
    TritonRepository(Export("runs/export").triton).model_file("cyclegan-AtoB")
                        runs/export/triton/cyclegan-AtoB/1/model.onnx

Roots may be placeholders (``TrainRun("{train}")``): the step table builds its command
templates that way. Serving does not import this module: it finds exported models by the
``direction`` and ``variant`` each ONNX file records in its metadata.
"""
from __future__ import annotations

import re
from pathlib import Path

# Where `dvc repro` keeps each step's output; Kubeflow passes its artifact paths instead.
FOLDERS = {"data": "data/prepared", "train": "runs/train", "select": "runs/select", "eval": "runs/eval",
           "export": "runs/export", "register": "runs/register"}

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
    PREVIOUS = "previous.pt"
    LOG = "train_log.csv"
    RUN_ID = "mlflow_run_id"
    _EPOCH = re.compile(r"epoch_(\d+)\.pt")
    _SAMPLE = re.compile(r"iter_(\d+)\.png")

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path:
        """Full training state, rewritten as training goes: what resume reads."""
        return self.checkpoints / self.LATEST

    @property
    def previous(self) -> Path:
        """The latest checkpoint before the last save, kept until the run ends: what resume
        falls back to when the latest is unreadable (the mirror keeps its own remote one under
        the same name)."""
        return self.checkpoints / self.PREVIOUS

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

    def temporaries(self) -> list[Path]:
        """Leftovers of writers killed mid-write (``utils.temporary_name``) of this run's files."""
        from .utils import is_temporary

        found = []
        for folder in (self.root, self.checkpoints, self.samples):
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                name = path.name[1:].rsplit(".", 2)[0]   # .NAME.<hex>.tmp
                ours = name in (self.LATEST, self.PREVIOUS, self.LOG, self.RUN_ID, self.config.name) \
                    or self._EPOCH.fullmatch(name) or self._SAMPLE.fullmatch(name)
                if ours and is_temporary(path, name):
                    found.append(path)
        return sorted(found)

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


class Selection(_Folder):
    """What ``cyclegan select --out ROOT`` writes: the checkpoint the later steps evaluate, export
    and register, and how every kept epoch scored."""

    @property
    def checkpoint(self) -> Path:
        """The chosen epoch's generators and config (what ``load_generators`` reads), with a
        record of the choice."""
        return self.root / "selected.pt"

    @property
    def scores(self) -> Path:
        """The choice, the validation subset and every epoch's figures (JSON)."""
        return self.root / "selection.json"

    @property
    def scores_plot(self) -> Path:
        """One row per scored epoch, for ``dvc plots``."""
        return self.root / "scores.csv"


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
    VARIANTS = ("fp32", "uint8", "int8", "fp16")

    def onnx(self, direction: str, variant: str = "fp32") -> Path:
        """``G_AtoB.onnx`` (fp32), ``G_AtoB_uint8.onnx``, ``G_AtoB_int8.onnx``, ``G_AtoB_fp16.onnx``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        return self.root / (f"G_{direction}.onnx" if variant == "fp32" else f"G_{direction}_{variant}.onnx")

    def onnx_pair(self, variant: str = "fp32") -> list[Path]:
        return [self.onnx(d, variant) for d in DIRECTIONS]

    def variant_files(self) -> list[Path]:
        """Every exported model present, fp32 first: what the registered model carries."""
        return [p for v in self.VARIANTS for p in self.onnx_pair(v) if p.is_file()]

    @property
    def verify(self) -> Path:
        return self.root / "verify.json"

    @property
    def triton(self) -> Path:
        """A Triton model repository of the served generators (``TritonRepository``)."""
        return self.root / "triton"

    # inside the registered model: the generators' weights, for re-evaluating a version later
    GENERATORS = "generators.pt"


def served_model_name(base: str, direction: str) -> str:
    """``cyclegan-AtoB``: the name ``cyclegan serve`` gives a direction (``serving/app.py``
    spells the same rule; a test checks that the two agree) and the Triton model's name."""
    return f"{base}-{direction}"


class TritonRepository(_Folder):
    """A Triton Inference Server model repository (``tritonserver --model-repository ROOT``):
    one folder per model with its ``config.pbtxt`` and one numbered version folder."""
    CONFIG = "config.pbtxt"
    MODEL_FILE = "model.onnx"      # the ONNX Runtime backend's default model file name
    VERSION = 1

    def model(self, name: str) -> Path:
        return self.root / name

    def config(self, name: str) -> Path:
        return self.model(name) / self.CONFIG

    def model_file(self, name: str, version: int = VERSION) -> Path:
        return self.model(name) / str(version) / self.MODEL_FILE

    def models(self) -> list[str]:
        """Names of the models present (folders holding a config)."""
        return sorted(p.parent.name for p in self.root.glob(f"*/{self.CONFIG}"))
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
