"""``cyclegan translate --model``: translate files with an exported ONNX generator, no torch.

Images keep their size (the padding rule of ``training/translate.py``) and their file
names. Images of the same size are batched; images above ``serve.tile_above_pixels`` are
translated alone, in tiles (``tiling.py``). A progress bar counts images. With ``quality``
the return generator brings each translation back and ``quality.csv`` in the output folder
gets one row per image: file, cycle_psnr_db, out_of_domain (``quality.py``). Paths are
local: the ``cyclegan translate`` command fetches and uploads ``s3://`` ones around this.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .config import ServeConfig
from .errors import ServingError
from .images import image_to_uint8, list_images, uint8_to_image


def _inputs(root: Path) -> tuple[list[Path], Path]:
    if root.is_file():
        return [root], root.parent
    images = list_images(root)
    if not images:
        raise ServingError(f"{root}: no images found")
    return images, root


def _read(path: Path, channels: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return image_to_uint8(img, channels)
    except Exception as e:
        raise ServingError(f"{path}: cannot read image ({e})") from None


def _write(array: np.ndarray, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
    uint8_to_image(array).save(tmp)
    os.replace(tmp, target)


class Runner:
    """One generator on model-layout arrays: whole, or in tiles above ``tile_above_pixels``."""

    def __init__(self, session, tiler=None, tile_above_pixels: int = 0):
        self.session, self.tiler, self.tile_above_pixels = session, tiler, tile_above_pixels

    def tiled(self, h: int, w: int) -> bool:
        return self.tiler is not None and h * w > self.tile_above_pixels

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h, w = (x.shape[a] for a in self.session.spatial_axes)
        return self.tiler.translate(x) if self.tiled(h, w) else self.session.run_any_size(x)


def translate_folder(session, images: list[Path], root: Path, output: Path, batch_size: int,
                     progress: bool = True, direction: str = "", runner: Runner | None = None,
                     back: Runner | None = None) -> list[Path]:
    """Translate ``images`` (relative to ``root``) into ``output``, batching same-size images
    (a tiled image runs alone). With ``back`` (the return generator), also write quality.csv."""
    from tqdm import tqdm

    from .quality import QUALITY_CSV, assess, threshold_of, write_csv

    runner = runner or Runner(session)
    threshold = threshold_of(session.metadata)
    written: list[Path] = []
    rows: list[list[str]] = []
    groups: dict[tuple, list[tuple[Path, np.ndarray]]] = {}
    buffered = 0
    bar = tqdm(total=len(images), desc=f"translate {direction}".strip(), unit="img", disable=not progress)

    def flush(key):
        nonlocal buffered
        items = groups.pop(key)
        buffered -= len(items)
        x = session.to_model_input(np.stack([a for _, a in items]))
        y = runner(x)
        found = assess(x, back(y), session.layout, threshold) if back is not None else [None] * len(items)
        for (path, _), array, q in zip(items, session.to_images(y), found):
            target = output / path.relative_to(root)
            _write(array, target)
            written.append(target)
            if q is not None:
                rows.append(q.row(path.relative_to(root).as_posix()))
        bar.update(len(items))

    with bar:
        for path in images:
            array = _read(path, session.channels_in)
            if (problem := session.size_error(*array.shape[:2])) is not None:
                raise ServingError(f"{path}: {problem}")
            groups.setdefault(array.shape, []).append((path, array))
            buffered += 1
            if len(groups[array.shape]) >= batch_size or runner.tiled(*array.shape[:2]):
                flush(array.shape)
            elif buffered >= 4 * batch_size:  # many sizes: bound memory by running the largest group
                flush(max(groups, key=lambda k: len(groups[k])))
        for key in list(groups):
            flush(key)
    if back is not None:
        write_csv(output / QUALITY_CSV, rows)
    return written


def translate_model(model_uri: str, direction: str, input: str | Path, output: str | Path, progress: bool = True,
                    cfg: ServeConfig | None = None, tracking_uri: str | None = None,
                    quality: bool = False) -> list[Path]:
    """Translate a local file or folder with the exported ``direction`` generator of
    ``model_uri`` (an .onnx file, an export folder, or models:/NAME@ALIAS) into the folder
    ``output``. Returns the written files. ``quality`` needs the other direction's generator
    too (an export folder or a registered version has both)."""
    from .model_store import resolve_model
    from .session import load_session

    cfg = cfg or ServeConfig()
    if direction not in ("AtoB", "BtoA"):
        raise ServingError(f"--direction: {direction!r} is not AtoB or BtoA")
    info = resolve_model(model_uri, cfg.variant, tracking_uri)
    try:
        session = load_session(info.path(direction), cfg.provider, cfg.threads, warm_up=False, settings=cfg)
        if session.direction and session.direction != direction:
            raise ServingError(f"{info.path(direction)}: is the {session.direction} generator, not {direction}")
        images, root = _inputs(Path(input))
        runner = _runner(session, cfg)
        back = None
        if quality:
            other = "BtoA" if direction == "AtoB" else "AtoB"
            if other not in info.files:
                raise ServingError(f"--quality: needs the {other} generator too; {model_uri} has only {direction} "
                                   "(give the export folder or a registered version)")
            back = _runner(load_session(info.path(other), cfg.provider, cfg.threads, warm_up=False, settings=cfg), cfg)
        return translate_folder(session, images, root, Path(output), cfg.max_batch_size, progress, direction,
                                runner, back)
    finally:
        info.cleanup()


def _runner(session, cfg: ServeConfig) -> Runner:
    from .tiling import load_tiler

    tiler, _ = load_tiler(session, cfg.tile_size, cfg.tile_overlap, cfg.tile_above_pixels, cfg.tile_exact_norms)
    return Runner(session, tiler, cfg.tile_above_pixels)
