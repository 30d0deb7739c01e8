"""Small helpers that every package needs, each written once: content hashes, atomic writes,
and picking a torch device. Imports nothing heavy at module level (torch only inside
``resolve_device``), so torch-free code can use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable: after a power cut the folder's entry points at
    the new file, not at nothing. Best effort where the platform cannot open folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: str | os.PathLike) -> Path:
    """A private name beside ``path`` (same folder, so the final rename is atomic); it starts
    with ``.NAME.`` and ends in ``.tmp`` so leftovers of a killed writer are recognisable."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def is_temporary(path: Path, name: str) -> bool:
    """Whether ``path`` is a leftover temporary of ``temporary_name(<folder>/name)``."""
    return path.name.startswith(f".{name}.") and path.name.endswith(".tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the body succeeds it is flushed to disk and
    renamed over ``path``, otherwise removed. Readers see the old file or the new one, never a
    torn one, and a kill at any moment leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync and tmp.exists():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def usable_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """The CPUs this process may really use: its affinity mask (taskset, a cpuset), capped by its
    cgroup's CPU quota (a Kubernetes CPU limit), never below 1. torch's own default counts every
    core of the host, which oversubscribes a pod with a CPU limit."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, int(quota)))   # a limit of 1.5 CPUs runs 1 thread, not 2
    return max(1, count)


def cgroup_cpu_quota(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time the cgroup may use per period (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), or None when unlimited or unknown."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def configure_threads(requested: int = 0) -> int:
    """Set torch's compute threads: ``requested``, or the CPUs this process may really use
    (``usable_cpus``) when 0. Returns the number set."""
    import torch

    threads = requested if requested > 0 else usable_cpus()
    torch.set_num_threads(threads)
    return threads


def resolve_device(name: str, key: str = "device"):
    """``auto`` -> CUDA when present, else CPU; a CUDA device asked for but absent is a
    ``UserError`` naming the config ``key`` it came from."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{key}: {name!r} is not a device (auto | cpu | cuda | cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}: {name!r} requested but CUDA is not available")
    return device
