"""A run folder's checkpoint kept in object storage while training runs, so that a retried
or preempted task (a Kubeflow retry on a new node) restores it and ``--resume auto`` continues:
``cyclegan train --mirror s3://bucket/prefix`` restores what an earlier attempt left, uploads
from a background thread every ``interval_s`` seconds, and once more at the end.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Iterator

from .. import storage
from ..layout import TrainRun


@contextlib.contextmanager
def mirrored(run_folder: str | Path, prefix: str, interval_s: float = 30.0) -> Iterator["CheckpointMirror"]:
    """Restore, then keep the mirror in sync while the body trains; a final sync on exit."""
    mirror = CheckpointMirror(run_folder, prefix, interval_s)
    restored = mirror.restore()
    print(f"checkpoint mirror {mirror.prefix}: restored {', '.join(restored) or 'nothing'}", file=sys.stderr,
          flush=True)
    mirror.start()
    try:
        yield mirror
    finally:
        mirror.stop()


class CheckpointMirror:
    """Keeps a run folder's latest checkpoint, training log and MLflow run id (``layout.TrainRun``)
    up to date under ``prefix``, from a background thread, so a retried task can resume.

    The checkpoint is written by the trainer with a rename, so any version seen is complete; the
    log is appended to, so only its complete lines are uploaded. Objects are written whole
    (single or multipart upload), so the prefix never holds a half-written checkpoint.
    """

    def __init__(self, local: str | Path, prefix: str, interval_s: float = 30.0):
        self.local, self.prefix, self.interval_s = Path(local), prefix.rstrip("/"), interval_s
        run = TrainRun(self.local)
        # names relative to the run folder, which are also the object names under the prefix
        self.files = tuple(p.relative_to(self.local).as_posix() for p in (run.latest, run.log, run.run_id))
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def restore(self) -> list[str]:
        """Download what an earlier attempt left; returns the names restored."""
        restored = []
        for name in self.files:
            uri = storage.join(self.prefix, name)
            if storage.exists(uri):
                storage.download_file(uri, self.local / name)
                restored.append(name)
                self._seen[name] = self._stamp(self.local / name)
        return restored

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_mtime_ns, st.st_size

    def sync(self) -> list[str]:
        """Upload the files that changed since the last upload; returns their names."""
        uploaded = []
        with self._lock:
            for name in self.files:
                path = self.local / name
                if not path.is_file():
                    continue
                try:
                    stamp = self._stamp(path)
                except FileNotFoundError:  # replaced between the check and the stat
                    continue
                if self._seen.get(name) == stamp:
                    continue
                uri = storage.join(self.prefix, name)
                if name == TrainRun.LOG:
                    data = path.read_bytes()
                    storage.write_bytes(uri, data[:data.rfind(b"\n") + 1])
                else:
                    storage.upload_file(path, uri)
                self._seen[name] = stamp
                uploaded.append(name)
        return uploaded

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as e:  # keep training; the next round or the final sync retries
                print(f"checkpoint mirror: upload failed, will retry: {e}", file=sys.stderr, flush=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="checkpoint-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sync()
