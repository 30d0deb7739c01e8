"""Image makers for the prepare tests: every kind of file a real collection contains."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from training.config import PrepareConfig


def cfg(**overrides) -> PrepareConfig:
    """A prepare config for tests: in-process, small synthetic data, a private cache."""
    values = dict(workers=0, synthetic_size=32, synthetic_train=12, synthetic_test=6)
    values.update(overrides)
    return PrepareConfig(**values)


def rgb_array(w: int = 40, h: int = 30, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8")


def save(path: Path, image, fmt: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path


def write_rgb(path: Path, w: int = 40, h: int = 30, seed: int = 0, fmt: str | None = None) -> Path:
    from PIL import Image

    return save(path, Image.fromarray(rgb_array(w, h, seed)), fmt)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw_rows))
            + _chunk(b"IEND", b""))


def png16_rgb(path: Path, w: int = 20, h: int = 16, seed: int = 0) -> Path:
    array = (np.random.default_rng(seed).random((h, w, 3)) * 65535).astype(">u2")
    rows = b"".join(b"\x00" + array[y].tobytes() for y in range(h))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(w, h, 16, 2, rows))
    return path


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A tiny file whose header claims side x side pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(side, side, 8, 2, b"\x00" * 16))
    return path


def jpeg_with_orientation(path: Path, w: int = 40, h: int = 20, orientation: int = 6) -> Path:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(path, Image.fromarray(rgb_array(w, h, 5)), "JPEG", exif=exif.tobytes())


def every_kind(folder: Path) -> dict[str, str]:
    """One file of each awkward kind under ``folder``; returns {name: what the run must do}."""
    from PIL import Image

    grey16 = Image.fromarray((np.random.default_rng(2).random((16, 20)) * 65535).astype(np.uint16))
    rgba = Image.fromarray(np.dstack([rgb_array(20, 16, 3), np.full((16, 20), 128, np.uint8)]), "RGBA")
    made = {
        "plain.png": "copied",
        "photo.JPG": "copied",
        "sub dir/nested ü.jpeg": "copied",
        "cmyk.jpg": "converted",
        "grey16.png": "converted",
        "rgb16.png": "converted",
        "rgba.png": "converted",
        "palette.gif": "converted",
        "grey.png": "converted",
        "tiff.tif": "converted",
        "rotated.jpg": "converted",
        "truncated.jpg": "corrupt",
        "garbage.png": "not an image",
        "notes.txt": "not an image",
        "bomb.png": "too large",
        "plain_copy.png": "duplicate",
    }
    write_rgb(folder / "plain.png", seed=10)
    write_rgb(folder / "photo.JPG", seed=11, fmt="JPEG")
    write_rgb(folder / "sub dir" / "nested ü.jpeg", seed=12, fmt="JPEG")
    save(folder / "cmyk.jpg", Image.fromarray(rgb_array(20, 16, 13)).convert("CMYK"), "JPEG")
    save(folder / "grey16.png", grey16)
    png16_rgb(folder / "rgb16.png")
    save(folder / "rgba.png", rgba)
    save(folder / "palette.gif", Image.fromarray(rgb_array(20, 16, 14)).convert("P"))
    save(folder / "grey.png", Image.fromarray(rgb_array(20, 16, 15)[:, :, 0]))
    save(folder / "tiff.tif", Image.fromarray(rgb_array(20, 16, 16)))
    jpeg_with_orientation(folder / "rotated.jpg")
    good = io.BytesIO()
    Image.fromarray(rgb_array(64, 64, 17)).save(good, "JPEG")
    (folder / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    (folder / "notes.txt").write_text("hello")
    bomb_png(folder / "bomb.png")
    (folder / "plain_copy.png").write_bytes((folder / "plain.png").read_bytes())
    return made
