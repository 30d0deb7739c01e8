"""``cyclegan translate --model``: translate files with an exported ONNX generator, no torch.

Images keep their size (the padding rule of ``training/translate.py``) and their file
names. Images of the same size are batched; a progress bar counts images. Paths are local:
the ``cyclegan translate`` command fetches and uploads ``s3://`` ones around this.
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


def translate_folder(session, images: list[Path], root: Path, output: Path, batch_size: int,
                     progress: bool = True, direction: str = "") -> list[Path]:
    """Translate ``images`` (relative to ``root``) into ``output``, batching same-size images."""
    from tqdm import tqdm

    written: list[Path] = []
    groups: dict[tuple, list[tuple[Path, np.ndarray]]] = {}
    buffered = 0
    bar = tqdm(total=len(images), desc=f"translate {direction}".strip(), unit="img", disable=not progress)

    def flush(key):
        nonlocal buffered
        items = groups.pop(key)
        buffered -= len(items)
        result = session.translate(np.stack([a for _, a in items]))
        for (path, _), array in zip(items, result):
            target = output / path.relative_to(root)
            _write(array, target)
            written.append(target)
        bar.update(len(items))

    with bar:
        for path in images:
            array = _read(path, session.channels_in)
            if (problem := session.size_error(*array.shape[:2])) is not None:
                raise ServingError(f"{path}: {problem}")
            groups.setdefault(array.shape, []).append((path, array))
            buffered += 1
            if len(groups[array.shape]) >= batch_size:
                flush(array.shape)
            elif buffered >= 4 * batch_size:  # many sizes: bound memory by running the largest group
                flush(max(groups, key=lambda k: len(groups[k])))
        for key in list(groups):
            flush(key)
    return written


def translate_model(model_uri: str, direction: str, input: str | Path, output: str | Path, progress: bool = True,
                    cfg: ServeConfig | None = None, tracking_uri: str | None = None) -> list[Path]:
    """Translate a local file or folder with the exported ``direction`` generator of
    ``model_uri`` (an .onnx file, an export folder, or models:/NAME@ALIAS) into the folder
    ``output``. Returns the written files."""
    from .model_store import resolve_model
    from .session import load_session

    cfg = cfg or ServeConfig()
    if direction not in ("AtoB", "BtoA"):
        raise ServingError(f"--direction: {direction!r} is not AtoB or BtoA")
    info = resolve_model(model_uri, cfg.variant, tracking_uri)
    session = load_session(info.path(direction), cfg.provider, cfg.threads, warm_up=False, settings=cfg)
    if session.direction and session.direction != direction:
        raise ServingError(f"{info.path(direction)}: is the {session.direction} generator, not {direction}")
    images, root = _inputs(Path(input))
    return translate_folder(session, images, root, Path(output), cfg.max_batch_size, progress, direction)
