"""A run folder's checkpoint kept in object storage while training runs, so that a retried
or preempted task (a Kubeflow retry on a new node) restores it and ``--resume auto`` continues:
``cyclegan train --mirror s3://bucket/prefix`` (or ``gs://``, any ``training.storage``
address) restores what an earlier attempt left, uploads from a background thread every
``interval_s`` seconds, and once more at the end.

What lies under the prefix (names as in the run folder, ``layout.TrainRun``)::

    the latest checkpoint             the newest checkpoint uploaded
    ... + ".sha256"                   its SHA-256 (``sha256sum`` format), written after it
    the previous checkpoint           the one before it (``TrainRun.previous``), kept to fall back to
    ... + ".sha256"
    the training log, the MLflow run id

Why a checkpoint is never spliced: the trainer renames each new checkpoint over the latest one,
and an upload that reads the live file in several passes (a multipart upload reopening it per
part) can store part of one version and part of the next, which ``torch.load`` may load without
complaint. So the mirror uploads an immutable snapshot instead: a hard link to the current
latest checkpoint under a private name (a copy where links fail), hashed and uploaded, then
removed.

Why a sidecar hash and not object metadata: it works the same on every fsspec backend (S3, GCS,
Azure, ``memory://``; their metadata options differ and some have none), and being written
after the object it also marks the upload complete, like ``_SUCCESS`` for a prefix. The order
of one upload: keep the verified latest object as the previous one (server-side copy, its hash
removed first and written last), remove the latest one's hash, upload the snapshot, write its
hash. A crash anywhere leaves at least one verifiable copy, or, before the first upload
finished, none.

Restore verifies: it downloads the latest object and checks it against its hash; a missing hash
or a mismatch falls back to the previous one (checked the same way), and when neither verifies,
training starts over. Each fallback is said on stderr. A prefix written by a mirror older than
these hashes has no ``.sha256`` objects, so its checkpoint is not trusted (training starts over).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import uuid
from pathlib import Path
from typing import Iterator

from .. import storage
from ..layout import TrainRun
from ..utils import sha256_file

SNAPSHOT_SUFFIX = ".mirror"


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


def _hash_line(digest: str, name: str) -> bytes:
    return f"{digest}  {name}\n".encode()


class CheckpointMirror:
    """Keeps a run folder's latest checkpoint, training log and MLflow run id (``layout.TrainRun``)
    up to date under ``prefix``, from a background thread, so a retried task can resume.

    The checkpoint goes up as a verified snapshot (module docstring); the log is appended to, so
    only its complete lines are uploaded; the run id is written once.
    """

    def __init__(self, local: str | Path, prefix: str, interval_s: float = 30.0):
        self.local, self.prefix, self.interval_s = Path(local), prefix.rstrip("/"), interval_s
        run = TrainRun(self.local)

        def name(path: Path) -> str:   # relative to the run folder: also the object name under the prefix
            return path.relative_to(self.local).as_posix()

        self.checkpoint, self.log, self.run_id = name(run.latest), name(run.log), name(run.run_id)
        self.previous = name(run.previous)
        self.files = (self.checkpoint, self.log, self.run_id)
        self._seen: dict[str, tuple[int, int, int]] = {}
        # the SHA-256 of the latest object when it is known whole (we uploaded it and wrote
        # its hash, or restore verified it): only such a copy becomes the previous one
        self._remote_good: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _uri(self, name: str) -> str:
        return storage.join(self.prefix, name)

    @staticmethod
    def _say(message: str) -> None:
        print(f"checkpoint mirror: {message}", file=sys.stderr, flush=True)

    # -- restore ---------------------------------------------------------------------------------

    def restore(self) -> list[str]:
        """Download what an earlier attempt left, the checkpoint only when its hash verifies;
        returns the names restored."""
        self._remove_snapshots()
        restored = []
        if self._restore_checkpoint():
            restored.append(self.checkpoint)
        for name in (self.log, self.run_id):
            uri = self._uri(name)
            if storage.exists(uri):
                storage.download_file(uri, self.local / name)
                restored.append(name)
                self._seen[name] = self._stamp(self.local / name)
        return restored

    def _restore_checkpoint(self) -> bool:
        target = self.local / self.checkpoint
        problems, found = [], False
        for name in (self.checkpoint, self.previous):
            uri = self._uri(name)
            if not storage.exists(uri) and not storage.exists(uri + ".sha256"):
                problems.append(f"{uri}: not there")
                continue
            found = True
            digest, problem = self._fetch_verified(uri, target)
            if problem is not None:
                problems.append(f"{uri}: {problem}")
                continue
            if name == self.checkpoint:
                self._remote_good = digest
            else:
                self._say(f"{'; '.join(problems)}; restored the previous checkpoint {uri} instead")
            self._seen[self.checkpoint] = self._stamp(target)
            return True
        if found:   # a first attempt (nothing under the prefix yet) is no news
            self._say(f"{'; '.join(problems)}; no verified checkpoint, training starts over")
        return False

    def _fetch_verified(self, uri: str, target: Path) -> tuple[str | None, str | None]:
        """Download ``uri`` beside ``target`` and move it into place only when its SHA-256 equals
        the one recorded; returns (digest, None) or (None, why not)."""
        try:
            expected = storage.read_bytes(uri + ".sha256").decode("ascii", "replace").split()
        except storage.NotFound:
            return None, "no sha256 recorded (its upload did not finish)"
        if not expected or len(expected[0]) != 64:
            return None, f"unreadable hash in {uri}.sha256"
        tmp = self._private_name(target)
        try:
            try:
                storage.download_file(uri, tmp)
            except storage.NotFound:
                return None, "hash recorded but the checkpoint is missing"
            actual = sha256_file(tmp)
            if actual != expected[0]:
                return None, f"sha256 mismatch (recorded {expected[0][:12]}, downloaded {actual[:12]})"
            os.replace(tmp, target)
            return actual, None
        finally:
            tmp.unlink(missing_ok=True)

    # -- upload ----------------------------------------------------------------------------------

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int]:
        """Which version of a file this is: the trainer's rename gives each a new inode."""
        st = path.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    @staticmethod
    def _private_name(path: Path) -> Path:
        return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{SNAPSHOT_SUFFIX}")

    def _remove_snapshots(self) -> None:
        """Snapshots a killed process left (each as large as a checkpoint)."""
        folder = (self.local / self.checkpoint).parent
        name = Path(self.checkpoint).name
        if folder.is_dir():
            for leftover in folder.glob(f".{name}.*{SNAPSHOT_SUFFIX}"):
                leftover.unlink(missing_ok=True)

    def _snapshot(self, path: Path) -> tuple[Path, tuple[int, int, int]] | None:
        """An immutable copy of ``path`` under a private name and the stamp of the version it
        holds; None when ``path`` vanished. A hard link costs nothing and keeps the version even
        when the trainer renames a new file over ``path``; a copy is the fallback."""
        snapshot = self._private_name(path)
        try:
            os.link(path, snapshot)
            return snapshot, self._stamp(snapshot)
        except FileNotFoundError:
            return None
        except OSError:   # no hard links here (some network and FUSE file systems)
            pass
        try:
            with open(path, "rb") as source, open(snapshot, "wb") as copy:
                st = os.fstat(source.fileno())   # the version this open file holds
                shutil.copyfileobj(source, copy, 16 * 1024 * 1024)
            return snapshot, (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            snapshot.unlink(missing_ok=True)
            return None
        except BaseException:
            snapshot.unlink(missing_ok=True)
            raise

    def _upload_checkpoint(self, path: Path) -> bool:
        taken = self._snapshot(path)
        if taken is None:
            return False
        snapshot, stamp = taken
        try:
            digest = sha256_file(snapshot)
            if digest != self._remote_good:
                uri, previous = self._uri(self.checkpoint), self._uri(self.previous)
                if self._remote_good is not None:   # keep the verified copy to fall back to
                    storage.delete(previous + ".sha256")
                    storage.copy(uri, previous)
                    storage.write_bytes(previous + ".sha256", _hash_line(self._remote_good, Path(previous).name))
                storage.delete(uri + ".sha256")     # unverifiable until its new hash is written
                self._remote_good = None
                storage.upload_file(snapshot, uri)
                storage.write_bytes(uri + ".sha256", _hash_line(digest, Path(uri).name))
                self._remote_good = digest
        finally:
            snapshot.unlink(missing_ok=True)
        self._seen[self.checkpoint] = stamp
        return True

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
                uri = self._uri(name)
                if name == self.checkpoint:
                    if not self._upload_checkpoint(path):
                        continue
                elif name == self.log:
                    data = path.read_bytes()
                    storage.write_bytes(uri, data[:data.rfind(b"\n") + 1])
                    self._seen[name] = stamp
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
