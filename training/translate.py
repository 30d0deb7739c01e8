"""Translate images of any size with a trained generator.

Each image is padded by reflection to the generator's size multiple and minimum side (from
``models.registry``: 4 and 8 for a ResNet, 128 or 256 for a U-Net), translated, and cropped
back to its own size, keeping its file name.
"""
from __future__ import annotations

import os
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
                         device: str = "cpu", progress: bool = True) -> list[Path]:
    """Translate a file or folder with the checkpoint's G_A (AtoB) or G_B (BtoA)."""
    from PIL import Image, ImageOps
    from tqdm import tqdm

    from .engine.checkpoint import load_generators
    from .data.transforms import save_image, to_tensor

    if direction not in ("AtoB", "BtoA"):
        raise UserError(f"--direction: {direction!r} is not AtoB or BtoA")
    G_A, G_B, cfg = load_generators(checkpoint, device)
    generator = G_A if direction == "AtoB" else G_B
    channels = next(generator.parameters()).shape[1]
    images, root = resolve_inputs(input_path)
    output = Path(output)
    written = []
    for path in tqdm(images, desc=f"translate {direction}", unit="img", disable=not progress):
        try:
            with Image.open(path) as img:  # upright, as prepare and the ONNX path read it (EXIF orientation)
                x = to_tensor(ImageOps.exif_transpose(img), channels).unsqueeze(0).to(device)
        except Exception as e:
            raise UserError(f"{path}: cannot read image ({e})") from None
        y = translate_tensor(generator, x)[0]
        target = output / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
        save_image(y, tmp)
        os.replace(tmp, target)
        written.append(target)
    return written
