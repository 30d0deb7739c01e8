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


def configure_threads(requested: int = 0, limit: int | None = None) -> int:
    """Set torch's compute threads: ``requested``, or when 0 the CPUs this process may use
    (``usable_cpus``, or ``limit``) that other processes leave free right now (a short sample
    of ``/proc/stat``; see ``ThreadGovernor``). Returns the number set."""
    import torch

    if requested > 0:
        threads = requested
    else:
        limit = limit or usable_cpus()
        threads = ThreadGovernor(limit).initial()
    torch.set_num_threads(threads)
    return threads


def _cpu_seconds(stat: str | os.PathLike = "/proc/stat") -> float | None:
    """CPU seconds every core of the machine has been busy (not idle, not waiting on I/O)."""
    try:
        fields = Path(stat).read_text().split("\n", 1)[0].split()
        jiffies = [int(v) for v in fields[1:9]]   # user nice system idle iowait irq softirq steal
    except (OSError, ValueError, IndexError):
        return None
    busy = sum(jiffies) - jiffies[3] - jiffies[4]
    return busy / os.sysconf("SC_CLK_TCK")


class ThreadGovernor:
    """Keeps torch's compute threads at the CPUs other processes leave free.

    OpenMP threads spin while they wait for each other, which is what makes them fast on CPUs
    of their own (waiting passively halves the demo's training speed on this 2-core machine)
    and what makes them crawl when another job holds a core: a spinning thread waits for a
    sibling the scheduler has put aside (bench/RESULTS.md, "threads"). So rather than change
    how threads wait, use only as many as there are free CPUs: every ``interval_s`` the busy
    CPU time of the whole machine (``/proc/stat``) minus this process's own
    (``time.process_time``, spinning included) says how many CPUs others used; the threads
    become ``limit`` minus that, rounded, at least 1. A job beside us moves us to fewer threads
    within one interval; when it ends we take the CPUs back.
    """

    def __init__(self, limit: int, interval_s: float = 10.0, stat: str | os.PathLike = "/proc/stat",
                 clock=None, own_cpu=None):
        import time

        self.limit, self.interval_s, self.stat = max(1, limit), interval_s, stat
        self.clock, self.own_cpu = clock or time.monotonic, own_cpu or time.process_time
        self.threads = self.limit
        self._mark = None

    def _sample(self) -> tuple[float, float, float] | None:
        busy = _cpu_seconds(self.stat)
        return None if busy is None else (self.clock(), busy, self.own_cpu())

    def _threads_for(self, start, end) -> int:
        elapsed = end[0] - start[0]
        others = max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / elapsed
        return min(self.limit, max(1, int(self.limit - others + 0.5)))

    def initial(self, window_s: float = 0.2) -> int:
        """The threads to start with, from a short sample (this process is idle meanwhile)."""
        import time

        start = self._sample()
        if start is None or self.limit == 1:
            return self.limit
        time.sleep(window_s)
        self.threads = self._threads_for(start, self._sample())
        self._mark = self._sample()
        return self.threads

    def poll(self) -> int | None:
        """Call often (it only reads the clock until an interval has passed); sets and returns a
        new thread count when it changed, else None."""
        if self._mark is None:
            self._mark = self._sample()
            return None
        if self.clock() - self._mark[0] < self.interval_s:
            return None
        now = self._sample()
        if now is None:
            return None
        threads, self._mark = self._threads_for(self._mark, now), now
        if threads == self.threads:
            return None
        import torch

        torch.set_num_threads(threads)
        self.threads = threads
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
