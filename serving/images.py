"""Images <-> model arrays in NumPy, and the any-size padding rule of ``training/translate.py``.

The generators halve the image twice and double it back, so each side must be a multiple
of 4. An image is padded on the bottom and right by reflection (replication when the
image is smaller than the pad), translated, and cropped back to its own size. This file
mirrors ``training.translate.pad_to_multiple`` without torch: serving must not need it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    """Images under ``folder`` in any nesting, sorted (as ``training.data.dataset.list_images``)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def pad_to_multiple(x: np.ndarray, multiple: int = 4, axes: tuple[int, int] = (-2, -1),
                    min_size: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the two spatial ``axes`` of ``x`` at the end to multiples of ``multiple``.

    Returns (padded, (h, w)). Same rule as the torch path: reflect, unless a pad is not
    smaller than its side, where torch's reflect is undefined and we replicate instead.
    Sides below ``min_size`` (the smallest input the network's own reflection pads accept:
    8 for the ResNet generator) are padded up to it, so tiny images work too.
    """
    h_axis, w_axis = (a % x.ndim for a in axes)
    h, w = x.shape[h_axis], x.shape[w_axis]
    pad_h = max(h + (-h) % multiple, min_size) - h
    pad_w = max(w + (-w) % multiple, min_size) - w
    if pad_h or pad_w:
        widths = [(0, 0)] * x.ndim
        widths[h_axis], widths[w_axis] = (0, pad_h), (0, pad_w)
        mode = "reflect" if pad_h < h and pad_w < w else "edge"
        x = np.pad(x, widths, mode=mode)
    return x, (h, w)


def crop(x: np.ndarray, size: tuple[int, int], axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    h_axis, w_axis = (a % x.ndim for a in axes)
    index = [slice(None)] * x.ndim
    index[h_axis], index[w_axis] = slice(0, size[0]), slice(0, size[1])
    return x[tuple(index)]


def peek_size(data: bytes) -> tuple[int, int]:
    """(height, width) an encoded image's header claims, without decoding it; (0, 0) when
    it cannot be read (decoding then reports why)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.height, img.width
    except Exception:  # not an image, a decompression bomb, ...: decode_image names the problem
        return 0, 0


def image_to_uint8(img, channels: int = 3) -> np.ndarray:
    """PIL image -> uint8 array H x W x C (RGB, or L for one channel), upright: the EXIF
    orientation (a phone photo stored sideways, tag 6 or 8) is applied, as ``prepare`` does."""
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img).convert("L" if channels == 1 else "RGB")
    array = np.asarray(img, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def uint8_to_float(array: np.ndarray) -> np.ndarray:
    """uint8 ... x H x W x C -> float32 ... x C x H x W in [-1, 1] (mean 0.5, std 0.5), as ``to_tensor``."""
    x = np.moveaxis(array, -1, -3).astype(np.float32)
    return x / np.float32(127.5) - np.float32(1.0)


def float_to_uint8(x: np.ndarray) -> np.ndarray:
    """float ... x C x H x W in [-1, 1] -> uint8 ... x H x W x C, as ``training.data.transforms.to_uint8``."""
    y = np.rint((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(y, -3, -1))


def uint8_to_image(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
