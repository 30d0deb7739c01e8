"""Translate images of any size with a trained generator.

Each image is padded by reflection to the generator's size multiple and minimum side (from
``models.registry``: 4 and 8 for a ResNet, 128 or 256 for a U-Net), translated, and cropped
back to its own size, keeping its file name. Images above ``Tiling.above_pixels`` are
translated in tiles at bounded memory (``tiling.py``). With ``quality``, the other generator
brings each translation back and ``layout.Translation.quality`` gets its cycle PSNR and, given
an evaluation's metrics, the out-of-domain flag (as serving reports them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from .data.dataset import list_images
from .errors import UserError

def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad N x C x H x W on the bottom/right to sides divisible by ``multiple`` and at least
    ``min_size``."""
    h, w = x.shape[-2:]
    target_h = max(h + (-h) % multiple, min_size)
    target_w = max(w + (-w) % multiple, min_size)
    pad_h, pad_w = target_h - h, target_w - w
    if pad_h or pad_w:
        # reflection needs the pad to be smaller than the side; tiny images replicate instead
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (h, w)


@torch.inference_mode()
def translate_tensor(generator: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W in [-1, 1] of any H, W -> the translation, same shape.

    The registry gave the generator its ``size_multiple`` and ``min_size``."""
    padded, (h, w) = pad_to_multiple(x, generator.size_multiple, generator.min_size)
    return generator(padded)[..., :h, :w]


@dataclass(frozen=True)
class Tiling:
    """When and how to tile (the ``serve.tile_*`` settings, which both translate paths share)."""
    above_pixels: int = 1_048_576
    size: int = 512
    overlap: int = 64
    exact_norms: int = 7


def translate_image(generator: torch.nn.Module, x: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
    """One image (1 x C x H x W in [-1, 1]) of any size: whole, or in tiles above ``tiling.above_pixels``."""
    h, w = x.shape[-2:]
    if tiling is None or h * w <= tiling.above_pixels:
        return translate_tensor(generator, x)
    from .tiling import translate_tiled

    padded, _ = pad_to_multiple(x, generator.size_multiple, generator.min_size)
    with torch.inference_mode():
        return translate_tiled(generator, padded, tiling.size, tiling.overlap, tiling.above_pixels,
                               tiling.exact_norms)[..., :h, :w]


def resolve_inputs(input_path: str | Path) -> tuple[list[Path], Path]:
    """(images, root) for a file or a folder; an empty or missing input is a UserError."""
    path = Path(input_path)
    if path.is_file():
        return [path], path.parent
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise UserError(f"{path}: no images found")
        return images, path
    raise UserError(f"{path}: input not found")


def translate_checkpoint(checkpoint: str | Path, direction: str, input_path: str | Path, output: str | Path,
                         device: str = "cpu", progress: bool = True, tiling: Tiling | None = None,
                         quality: bool = False, metrics: str | None = None) -> list[Path]:
    """Translate a file or folder with the checkpoint's G_A (AtoB) or G_B (BtoA). With
    ``quality``, also write each image's cycle PSNR (and, with an evaluation's ``metrics``,
    its out-of-domain flag) to ``layout.Translation(output).quality``."""
    from PIL import Image, ImageOps
    from tqdm import tqdm

    from .data.transforms import save_image, to_tensor
    from .engine.checkpoint import load_generators
    from .layout import Translation

    if direction not in ("AtoB", "BtoA"):
        raise UserError(f"--direction: {direction!r} is not AtoB or BtoA")
    if metrics and not quality:
        raise UserError("--metrics: only used with --quality (it holds the out-of-domain threshold)")
    G_A, G_B, cfg = load_generators(checkpoint, device)
    generator, back = (G_A, G_B) if direction == "AtoB" else (G_B, G_A)
    threshold = _threshold(checkpoint, cfg, direction, metrics) if quality else None
    channels = next(generator.parameters()).shape[1]
    images, root = resolve_inputs(input_path)
    output = Path(output)
    written, rows = [], []
    for path in tqdm(images, desc=f"translate {direction}", unit="img", disable=not progress):
        try:
            with Image.open(path) as img:  # upright, as prepare and the ONNX path read it (EXIF orientation)
                x = to_tensor(ImageOps.exif_transpose(img), channels).unsqueeze(0).to(device)
        except Exception as e:
            raise UserError(f"{path}: cannot read image ({e})") from None
        y = translate_image(generator, x, tiling)
        target = output / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
        save_image(y[0], tmp)
        os.replace(tmp, target)
        written.append(target)
        if quality:
            rows.append(_quality_row(path.relative_to(root).as_posix(), x, translate_image(back, y, tiling),
                                     threshold))
    if quality:
        _write_quality(Translation(output).quality, rows)
    return written


def _threshold(checkpoint, cfg, direction: str, metrics: str | None) -> float | None:
    """The out-of-domain threshold of ``direction``'s generator from an evaluation's metrics
    (as export records it), or None without metrics."""
    if not metrics:
        return None
    from .export.quality import THRESHOLD_KEY, thresholds
    from .utils import sha256_file

    return float(thresholds(metrics, cfg.data.direction, sha256_file(checkpoint))[direction][THRESHOLD_KEY])


def _quality_row(name: str, x: torch.Tensor, reconstruction: torch.Tensor, threshold: float | None) -> list[str]:
    """file, cycle_psnr_db, out_of_domain: serving's quality.csv row (serving/quality.py)."""
    from .evaluation.metrics import psnr, to_unit

    value = float(psnr(to_unit(reconstruction).cpu(), to_unit(x).cpu())[0])
    flag = "unknown" if threshold is None else ("true" if value < threshold else "false")
    return [name, f"{value:.3f}", flag]


def _write_quality(path: Path, rows: list[list[str]]) -> None:
    import csv

    from .utils import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "cycle_psnr_db", "out_of_domain"])
        writer.writerows(rows)
