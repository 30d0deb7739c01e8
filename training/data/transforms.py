"""Per-image preprocessing, as the authors' ``get_transform``, driven by an explicit RNG.

Each item draws its crop and flip from its own ``random.Random``, seeded from
(seed, epoch, position), so an item is a pure function of where it sits in the run. That
is what makes resume exact whatever the number of loader workers.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from ..config import DataConfig

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}


def _resize(img, size):
    from PIL import Image

    return img.resize(size, Image.BICUBIC)


def _scale_width(img, target_width: int, crop_size: int):
    w, h = img.size
    if w == target_width and h >= crop_size:
        return img
    new_h = int(max(target_width * h / w, crop_size))
    return _resize(img, (target_width, new_h))


def _multiple_of(img, base: int = 4):
    w, h = img.size
    new_w, new_h = max(base, int(round(w / base) * base)), max(base, int(round(h / base) * base))
    return img if (new_w, new_h) == (w, h) else _resize(img, (new_w, new_h))


def preprocess(img, cfg: DataConfig, rng: random.Random, train: bool = True):
    """PIL image -> PIL image, following ``cfg.preprocess`` and ``cfg.no_flip``."""
    mode = cfg.preprocess
    if mode == "resize_and_crop":
        img = _resize(img, (cfg.load_size, cfg.load_size))
    elif mode in ("scale_width", "scale_width_and_crop"):
        img = _scale_width(img, cfg.load_size, cfg.crop_size)
    if mode in ("resize_and_crop", "crop", "scale_width_and_crop"):
        w, h = img.size
        if w < cfg.crop_size or h < cfg.crop_size:
            img = _resize(img, (max(w, cfg.crop_size), max(h, cfg.crop_size)))
            w, h = img.size
        x, y = rng.randint(0, w - cfg.crop_size), rng.randint(0, h - cfg.crop_size)
        img = img.crop((x, y, x + cfg.crop_size, y + cfg.crop_size))
    # The generator halves the size twice and doubles it back; other sides change shape.
    img = _multiple_of(img, 4)
    if train and not cfg.no_flip and rng.random() < 0.5:
        from PIL import Image

        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def to_tensor(img, channels: int = 3) -> torch.Tensor:
    """PIL image -> float tensor C x H x W in [-1, 1] (normalised by mean 0.5, std 0.5)."""
    img = img.convert("L" if channels == 1 else "RGB")
    array = np.asarray(img, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().div_(127.5).sub_(1.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Tensor C x H x W in [-1, 1] -> uint8 array H x W x C."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return array.permute(1, 2, 0).cpu().numpy()


def save_image(tensor: torch.Tensor, path, format: str | None = None) -> None:
    """Save C x H x W in [-1, 1]; ``format`` for paths whose suffix does not say it."""
    from PIL import Image

    array = to_uint8(tensor)
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path, format=format)
