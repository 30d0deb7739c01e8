"""``cyclegan prepare``: any source -> ``trainA/ trainB/ testA/ testB/`` + ``manifest.json``.

Steps:
1. Open the source (``sources.open_source``: synthetic, dataset name, zip, folder, s3://) and
   decide which file belongs where (``sources.assign``: detected layout or the
   ``prepare.domain_*`` / ``test_*`` folders or globs).
2. Validate and convert every candidate file in a pool of ``prepare.workers`` processes
   (``process_bytes``): read the header first and skip decompression bombs without
   decoding them; decode fully (corrupt and truncated files are skipped with the reason);
   convert grayscale, RGBA, palette, CMYK and 16-bit images to 8-bit RGB; apply the EXIF
   orientation; upscale or reject images below ``prepare.min_size``; resize to
   ``prepare.resize_to`` (shorter side). A file that needs none of that is copied byte for
   byte; a JPEG that shrinks is decoded at reduced size (``draft``).
3. Drop exact duplicates (same bytes) within a domain, keeping the first in test-then-train
   path order; sources without a test part get a deterministic split by content hash
   (``prepare.test_fraction``), stable when files are added.
4. Write everything into a temporary folder with ``storage.local_output`` (next to the
   target, or uploaded to s3://) and move it into place only at the end, so an interrupted
   or failed run leaves the previous output intact.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

from .. import storage
from ..config import PrepareConfig
from ..errors import UserError
from . import sources
from ..utils import sha256_bytes
from .manifest import FORMAT, MANIFEST, SPLITS, dumps, hash_entries

# Parameters that change how the work runs but not what it writes: kept out of the manifest.
RUN_ONLY_PARAMS = ("workers", "cache_dir")
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png"}
STAGING = ".staging"


def check_config(cfg: PrepareConfig) -> None:
    """Value checks for the prepare section; each error names its key."""
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise UserError(f"prepare.test_fraction: {cfg.test_fraction} must be in [0, 1)")
    for key in ("resize_to", "min_size", "workers"):
        if getattr(cfg, key) < 0:
            raise UserError(f"prepare.{key}: must not be negative")
    for key in ("max_pixels", "synthetic_size"):
        if getattr(cfg, key) <= 0:
            raise UserError(f"prepare.{key}: must be positive")
    if cfg.synthetic_size < 16:
        raise UserError(f"prepare.synthetic_size: {cfg.synthetic_size} is too small (at least 16)")
    if cfg.synthetic_train <= 0 or cfg.synthetic_test < 0:
        raise UserError("prepare.synthetic_train must be positive and prepare.synthetic_test not negative")
    if cfg.resize_to and cfg.min_size and cfg.resize_to < cfg.min_size:
        raise UserError(f"prepare.resize_to ({cfg.resize_to}) must not be below prepare.min_size ({cfg.min_size})")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise UserError(f"prepare.jpeg_quality: {cfg.jpeg_quality} must be in 1..100")
    if cfg.small_images not in ("upscale", "reject"):
        raise UserError(f"prepare.small_images: {cfg.small_images!r} is not one of upscale, reject")


# -- one image ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ImageOptions:
    resize_to: int = 0
    min_size: int = 0
    small_images: str = "upscale"
    max_pixels: int = 89_478_485
    jpeg_quality: int = 95

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "ImageOptions":
        return cls(cfg.resize_to, cfg.min_size, cfg.small_images, cfg.max_pixels, cfg.jpeg_quality)


def _skip(reason: str) -> dict:
    return {"status": "skip", "reason": reason}


def _png_bit_depth(data: bytes) -> int:
    return data[24] if len(data) > 24 and data[12:16] == b"IHDR" else 0


def _to_rgb(img):
    """Any Pillow mode -> 8-bit RGB (16-bit and float greyscale are scaled, not clipped)."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        import numpy as np

        array = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or array.max(initial=0) > 255:
            array = array / 257.0
        elif img.mode == "F" and array.max(initial=0) <= 1.0:
            array = array * 255.0
        grey = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def process_bytes(data: bytes, opts: ImageOptions) -> dict:
    """Validate and convert one file's bytes.

    Returns ``{"status": "skip", "reason": ...}`` or ``{"status": "ok", "data": bytes,
    "ext": ".jpg"|".png", "raw_sha256", "sha256", "size", "width", "height", "action"}``
    where action is copied | converted | resized. Never raises for a bad file.
    """
    from PIL import Image, UnidentifiedImageError

    raw_sha = sha256_bytes(data)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked on the header alone
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _process(data, raw_sha, opts)
    except UnidentifiedImageError:
        return _skip("not an image: unrecognised file format")
    except Exception as e:  # a bad file must never stop the run
        return _skip(f"corrupt: {type(e).__name__}: {e}")
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _process(data: bytes, raw_sha: str, opts: ImageOptions) -> dict:
    from PIL import ExifTags, Image, ImageOps

    img = Image.open(io.BytesIO(data))
    fmt = img.format
    w, h = img.size
    if w <= 0 or h <= 0:
        return _skip(f"corrupt: the header claims {w}x{h} pixels")
    if w * h > opts.max_pixels:
        return _skip(f"too large: the header claims {w}x{h} = {w * h} pixels > prepare.max_pixels "
                     f"{opts.max_pixels} (not decoded)")
    short = min(w, h)
    target = opts.resize_to
    if opts.min_size and short < opts.min_size:
        if opts.small_images == "reject":
            return _skip(f"too small: {w}x{h}, shorter side below prepare.min_size {opts.min_size}")
        target = max(target, opts.min_size)
    scale = target / short if target else 1.0
    drafted = False
    if fmt == "JPEG" and scale <= 0.5 and img.mode in ("RGB", "L"):
        img.draft(img.mode, (math.ceil(w * scale), math.ceil(h * scale)))
        drafted = img.size != (w, h)
    try:
        img.load()
    except Exception as e:
        return _skip(f"corrupt: {e}")
    turned = img.getexif().get(ExifTags.Base.Orientation, 1) != 1
    if turned:
        img = ImageOps.exif_transpose(img)   # Pillow's mapping of the eight EXIF orientations
    rgb = _to_rgb(img)
    converted = turned or rgb is not img
    resized = False
    if target:
        cw, ch = rgb.size
        size = (max(1, round(cw * target / min(cw, ch))), max(1, round(ch * target / min(cw, ch))))
        if size != (cw, ch):
            rgb = rgb.resize(size, Image.BICUBIC)
            resized = True
    resized = resized or drafted
    if fmt in EXTENSIONS and not (converted or resized) and (fmt != "PNG" or _png_bit_depth(data) == 8):
        out, ext, action = data, EXTENSIONS[fmt], "copied"
    else:
        buffer = io.BytesIO()
        if fmt == "JPEG":
            rgb.save(buffer, "JPEG", quality=opts.jpeg_quality)
            ext = ".jpg"
        else:
            rgb.save(buffer, "PNG", compress_level=1)
            ext = ".png"
        out, action = buffer.getvalue(), "resized" if resized else "converted"
    return {"status": "ok", "data": out, "ext": ext, "raw_sha256": raw_sha, "sha256": sha256_bytes(out),
            "size": len(out), "width": rgb.size[0], "height": rgb.size[1], "action": action}


# -- the worker pool ---------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(opts: ImageOptions, staging: str) -> None:
    _WORKER.update(opts=opts, staging=staging)


def _work(task: tuple[int, tuple]) -> dict:
    index, spec = task
    try:
        data = sources.read_spec(spec)
    except Exception as e:
        return _skip(f"unreadable: {type(e).__name__}: {e}")
    result = process_bytes(data, _WORKER["opts"])
    if result["status"] == "ok":
        name = f"{index}{result['ext']}"
        with open(os.path.join(_WORKER["staging"], name), "wb") as f:
            f.write(result.pop("data"))
        result["staged"] = name
    return result


def _run(tasks: list[tuple[int, tuple]], opts: ImageOptions, staging: Path, workers: int, progress: bool):
    from tqdm import tqdm

    bar = dict(total=len(tasks), unit="img", desc="prepare", disable=not progress, leave=False, file=sys.stderr)
    if workers <= 1 or len(tasks) < 64:
        _init_worker(opts, str(staging))
        return [_work(t) for t in tqdm(tasks, **bar)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may hold threads (servers, loaders) that fork would copy mid-lock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(opts, str(staging))) as pool:
        chunksize = max(1, min(32, len(tasks) // (workers * 8)))
        return list(tqdm(pool.map(_work, tasks, chunksize=chunksize), **bar))


# -- the whole dataset ---------------------------------------------------------------------------

def _unit_interval(sha: str) -> float:
    return int(sha[:16], 16) / float(1 << 64)


def _category(reason: str) -> str:
    return reason.split(":", 1)[0]


def prepare(cfg: PrepareConfig, source: str | None, out: str, progress: bool = True) -> dict:
    """Prepare ``source`` (default ``cfg.source``) into ``out`` (a folder or s3:// prefix).

    Returns the summary: counts per split, skipped files by reason, what was copied,
    converted and resized, the test set's hash and the time taken.
    """
    check_config(cfg)
    source = source or cfg.source
    if not source:
        raise UserError("prepare: no source given (--source or prepare.source)")
    start = time.perf_counter()
    _check_replaceable(out)
    with sources.open_source(source, cfg, progress) as src:
        layout, items = sources.assign(src, cfg)
        order = {"test": 0, "train": 1, "all": 1}
        items.sort(key=lambda it: (it.domain, order[it.part], it.source))
        skipped = list(src.skipped)
        candidates = []
        for item in items:
            if sources.is_candidate(item.source):
                candidates.append(item)
            else:
                skipped.append((item.source, f"not an image: extension {Path(item.source).suffix}"))
        with storage.local_output(out) as tmp:
            staging = tmp / STAGING
            staging.mkdir()
            tasks = [(i, src.spec(item.source)) for i, item in enumerate(candidates)]
            results = _run(tasks, ImageOptions.from_config(cfg), staging, cfg.workers, progress)
            entries, actions = _place(candidates, results, skipped, tmp, staging, cfg)
            _check_domains(entries, skipped, candidates, src)
            staging.rmdir()
            params = cfg.model_dump(exclude=set(RUN_ONLY_PARAMS))
            params["source"] = source
            manifest = {
                "format": FORMAT,
                "source": {"kind": src.kind, "source": source, "layout": layout,
                           **({"archive_sha256": src.archive_sha256} if src.archive_sha256 else {})},
                "params": params,
                "counts": {split: len(entries[split]) for split in SPLITS},
                "splits": {split: sorted(entries[split], key=lambda e: e["path"]) for split in SPLITS},
                "skipped": [{"path": p, "reason": r} for p, r in sorted(skipped)],
            }
            (tmp / MANIFEST).write_bytes(dumps(manifest))
    counts = manifest["counts"]
    warnings_ = [f"{split} is empty: evaluation needs a test split" for split in ("testA", "testB") if not counts[split]]
    return {
        "source": source, "kind": src.kind, "layout": layout, "out": str(out),
        "counts": counts,
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(_category(r) for _, r in skipped).items())),
        "skipped_files": manifest["skipped"][:20],
        **{a: actions.get(a, 0) for a in ("copied", "converted", "resized")},
        "test_set_hash": hash_entries([(e["path"], e["sha256"]) for s in ("testA", "testB") for e in entries[s]]),
        "warnings": warnings_,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _check_replaceable(out: str) -> None:
    """Refuse to replace a non-empty folder or prefix that is not a prepared dataset."""
    uri = str(out)
    if storage.is_remote(uri):
        occupied = storage.exists(uri)
    else:
        path = Path(uri).expanduser()
        occupied = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if occupied and not storage.exists(storage.join(uri, MANIFEST)):
        raise UserError(f"{uri}: exists and is not a prepared dataset (no {MANIFEST}); "
                        "refusing to replace it, choose another --out or remove it")


def _place(candidates, results, skipped, tmp: Path, staging: Path, cfg: PrepareConfig):
    """Deduplicate, split and move the staged files to ``SPLIT/rel``; returns manifest entries."""
    seen: dict[tuple[str, str], str] = {}
    kept = []
    for item, result in zip(candidates, results):
        if result["status"] != "ok":
            skipped.append((item.source, result["reason"]))
            continue
        first = seen.setdefault((item.domain, result["raw_sha256"]), item.source)
        if first != item.source:
            skipped.append((item.source, f"duplicate: same bytes as {first}"))
            (staging / result["staged"]).unlink()
            continue
        kept.append((item, result))

    splits = {}
    for domain in "AB":
        hashed = [(item, r) for item, r in kept if item.domain == domain and item.part == "all"]
        test = {item.source for item, r in hashed if _unit_interval(r["raw_sha256"]) < cfg.test_fraction}
        if hashed and not test and cfg.test_fraction > 0 and len(hashed) >= 2:
            # A small domain can draw no test image at all: hold out the one with the smallest hash
            # (the first to fall into the test side at any fraction), so evaluation has something.
            test.add(min(hashed, key=lambda ir: ir[1]["raw_sha256"])[0].source)
        for item, _ in hashed:
            splits[item.source] = ("test" if item.source in test else "train") + domain
    entries: dict[str, list[dict]] = {split: [] for split in SPLITS}
    used: set[str] = set()
    actions: Counter = Counter()
    for item, result in kept:
        split = splits.get(item.source) or f"{item.part}{item.domain}"
        stem = posix_stem(item.rel)
        path = f"{split}/{stem}{result['ext']}"
        if path.casefold() in used:
            path = f"{split}/{stem}-{result['raw_sha256'][:8]}{result['ext']}"
        used.add(path.casefold())
        target = tmp / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / result["staged"], target)
        entries[split].append({"path": path, "size": result["size"], "sha256": result["sha256"], "source": item.source})
        actions[result["action"]] += 1
    return entries, actions


def posix_stem(rel: str) -> str:
    head, _, name = rel.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{head}/{stem}" if head else stem


def _check_domains(entries, skipped, candidates, src) -> None:
    for domain in "AB":
        if entries[f"train{domain}"]:
            continue
        files = {i.source for i in candidates if i.domain == domain}
        reasons = Counter(_category(r) for p, r in skipped if p in files)
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) or "no image files found"
        raise UserError(f"domain {domain} (train{domain}) is empty after validation in {src.name}: "
                        f"0 usable images of {len(files)} candidate files ({detail})")


def format_summary(summary: dict, limit: int = 10) -> str:
    """The human-readable report the CLI prints."""
    counts = summary["counts"]
    lines = [f"prepared {summary['source']} ({summary['kind']}, layout {summary['layout']}) -> {summary['out']} "
             f"in {summary['seconds']} s",
             "  " + "  ".join(f"{split} {counts[split]}" for split in SPLITS),
             f"  copied {summary['copied']}, converted {summary['converted']}, resized {summary['resized']}"]
    if summary["skipped"]:
        by_reason = ", ".join(f"{reason} {n}" for reason, n in summary["skipped_by_reason"].items())
        lines.append(f"  skipped {summary['skipped']}: {by_reason}")
        for entry in summary["skipped_files"][:limit]:
            lines.append(f"    {entry['path']}: {entry['reason']}")
        if summary["skipped"] > limit:
            lines.append(f"    ... and {summary['skipped'] - limit} more, all listed in {MANIFEST}")
    for warning in summary["warnings"]:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
