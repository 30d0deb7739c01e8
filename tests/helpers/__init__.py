"""What many tests share: the repo's paths, the CLI as a subprocess command, image makers.

  helpers/__init__.py     ROOT, SHARED, TESTS_PROFILE, CYCLEGAN, make_images, make_data
  helpers/prepare.py      every kind of file a real photo collection contains
  helpers/mlops.py        small real ONNX models, metrics files, MLflow and DVC set-ups
  helpers/checkpoints.py  generators-only checkpoints without training, generators made a solid colour
  helpers/serving.py      a trained tests-profile export, a server process, the registry stand-up
  helpers/distributed.py  the worker of the DDP equivalence test
Fixtures live in tests/conftest.py.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
TESTS_PROFILE = ROOT / "profiles" / "tests.yaml"
CYCLEGAN = [sys.executable, "-m", "training.cli"]
REFERENCE = SHARED / "bench" / "reference_cyclegan.py"


def make_images(folder: Path, count: int, size=(40, 40), seed: int = 0, fmt: str = "png") -> list[Path]:
    """``count`` random RGB images of ``size`` (w, h) in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        array = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
        path = folder / f"img_{i:03d}.{fmt}"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def make_data(root: Path) -> Path:
    """trainA 6 / trainB 5 / testA 3 / testB 3 random 40x40 images (the ``tiny_data`` fixture)."""
    for i, (name, n) in enumerate((("trainA", 6), ("trainB", 5), ("testA", 3), ("testB", 3))):
        make_images(root / name, n, seed=i)
    return root


def cli_env() -> dict:
    """The environment for running ``python -m training.cli`` in a subprocess from the repo root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
