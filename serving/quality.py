"""The quality signal that can come with a translation: the cycle PSNR of the image (the
return generator brings the translation back; PSNR of that against the input) and whether it
is below the threshold the evaluation measured on the test split (``out_of_domain``).

CycleGAN fails silently on inputs unlike its training data: the translation still looks
like an image. Its cycle, though, stops closing: in-domain test images come back with a
cycle PSNR in a known range, and ``cyclegan export --metrics`` records the low end of it
(the ``evaluate.ood_percentile``-th percentile of per-image cycle PSNR on the test split of
the generator's input domain) in each model's metadata as ``quality_threshold_db``. A model
exported without it still reports the cycle PSNR; ``out_of_domain`` is then unknown (None).

PSNR is computed as the evaluation computes ``cycle_psnr_A``/``_B``: images on [0, 1]
(clamped), the mean squared error in float64 over all pixels and channels, capped at 100 dB.
The cost is one more generator pass, only when asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

THRESHOLD_KEY = "quality_threshold_db"      # written by cyclegan export (training/export/quality.py)
PSNR_CAP_DB = 100.0                          # as training/evaluation/metrics.py
# what `cyclegan translate --quality` writes into its output folder (training.layout.Translation.quality
# names the same file for the --checkpoint path; a test checks the two agree)
QUALITY_CSV = "quality.csv"
CSV_COLUMNS = ("file", "cycle_psnr_db", "out_of_domain")


@dataclass(frozen=True)
class Quality:
    cycle_psnr_db: float
    threshold_db: float | None

    @property
    def out_of_domain(self) -> bool | None:
        return None if self.threshold_db is None else self.cycle_psnr_db < self.threshold_db

    def headers(self) -> dict[str, str]:
        """The /v1/translate response headers."""
        out = {"X-Cycle-PSNR": f"{self.cycle_psnr_db:.2f}", "X-Out-Of-Domain": flag_text(self.out_of_domain)}
        if self.threshold_db is not None:
            out["X-Quality-Threshold"] = f"{self.threshold_db:.2f}"
        return out

    def row(self, file: str) -> list[str]:
        """The quality.csv row."""
        return [file, f"{self.cycle_psnr_db:.3f}", flag_text(self.out_of_domain)]


def flag_text(flag: bool | None) -> str:
    return "unknown" if flag is None else ("true" if flag else "false")


def threshold_of(metadata: dict[str, str]) -> float | None:
    """The model's recorded threshold, or None when it has none (or an unreadable one)."""
    value = metadata.get(THRESHOLD_KEY)
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def to_unit(x: np.ndarray, layout: str) -> np.ndarray:
    """Model-layout images -> float64 on [0, 1]: [-1, 1] floats (NCHW) or uint8 (NHWC)."""
    if layout == "NCHW":
        return (np.clip(x.astype(np.float64), -1.0, 1.0) + 1.0) * 0.5
    return x.astype(np.float64) / 255.0


def cycle_psnr(x: np.ndarray, reconstruction: np.ndarray, layout: str) -> np.ndarray:
    """Per-image PSNR in dB (capped) of ``reconstruction`` against ``x``, both N x ... in the
    model's layout."""
    a, b = to_unit(x, layout), to_unit(reconstruction, layout)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    floor = 10 ** (-PSNR_CAP_DB / 10)
    return 10 * np.log10(1.0 / np.maximum(mse, floor))


def assess(x: np.ndarray, reconstruction: np.ndarray, layout: str, threshold_db: float | None) -> list[Quality]:
    return [Quality(float(v), threshold_db) for v in cycle_psnr(x, reconstruction, layout)]


def write_csv(path, rows: list[list[str]]) -> None:
    """quality.csv, atomically (a temporary file renamed over it)."""
    import csv
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)
