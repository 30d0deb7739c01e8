"""training.engine.mirror: the checkpoint mirror uploads whole checkpoints only, and restore
verifies what it downloads (issue 13 item 1: a multipart upload that reopened the live file per
part stored part of one checkpoint and part of the next)."""
from __future__ import annotations

import os
import uuid

import fsspec
import numpy as np
import pytest

from training import storage
from training.engine import mirror as mirror_module
from training.engine.mirror import CheckpointMirror
from training.errors import UserError
from training.layout import TrainRun

MiB = 1024 * 1024
PART = 5 * MiB           # S3's smallest part size
SIZE = 12 * MiB          # above the multipart threshold: parts of 5 + 5 + 2 MiB


def _versions(size: int = SIZE) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(13)
    return rng.bytes(size), rng.bytes(size)


def _origin(stored: bytes, old: bytes, new: bytes) -> str:
    """Which version each 5 MiB part of ``stored`` came from, e.g. "new, old, new"."""
    parts = range(0, len(stored), PART)
    return ", ".join("old" if stored[i:i + PART] == old[i:i + PART] else
                     "new" if stored[i:i + PART] == new[i:i + PART] else "neither" for i in parts)


@pytest.mark.parametrize("snapshot", ["hard link", "copy"])
def test_checkpoint_replaced_during_upload_is_never_spliced(snapshot, s3_env, tmp_path, monkeypatch):
    """The trainer renames a new checkpoint over latest.pt while the mirror uploads the old one:
    the object must be one whole version, stored as a multipart upload, and restore verifies it."""
    from moto.s3.models import S3Backend

    bucket = s3_env(f"mirror-torn-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(storage, "MULTIPART_CHUNKSIZE", PART)
    if snapshot == "copy":   # a file system without hard links
        def no_links(src, dst):
            raise OSError(95, "Operation not supported", str(dst))

        monkeypatch.setattr(mirror_module.os, "link", no_links)
    old, new = _versions()
    run = TrainRun(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.latest.write_bytes(old)
    staged = run.checkpoints / "next.pt"
    staged.write_bytes(new)
    replaced = []

    def replace_live(why: str) -> None:
        # what the trainer's atomic_torch_save does: rename a finished file over latest.pt
        if not replaced:
            os.replace(staged, run.latest)
            replaced.append(why)

    # Two hooks, whichever comes first: the server has stored part 1 of latest.pt; or the
    # uploader opens the live file a second time (a per-part reopen, as boto3's transfer does).
    real_upload_part = S3Backend.upload_part

    def upload_part(self, bucket_name, multipart_id, part_id, value):
        result = real_upload_part(self, bucket_name, multipart_id, part_id, value)
        if bucket_name == bucket and part_id == 1:
            replace_live("after part 1 was stored")
        return result

    monkeypatch.setattr(S3Backend, "upload_part", upload_part)
    real_open = open
    opens = []

    def tracking_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(run.latest) and "r" in mode:
            opens.append(mode)
            if len(opens) == 2:
                replace_live("when the live file was reopened")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", tracking_open)
    prefix = f"s3://{bucket}/mirror"
    CheckpointMirror(run.root, prefix).sync()
    monkeypatch.setattr("builtins.open", real_open)

    assert replaced, "the live checkpoint was never replaced during the upload"
    assert run.latest.read_bytes() == new
    key = "mirror/checkpoints/latest.pt"
    head = s3_env.client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")       # a multipart upload of 3 parts
    stored = s3_env.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert len(stored) == SIZE
    assert stored == old or stored == new, f"spliced upload (replaced {replaced[0]}): parts {_origin(stored, old, new)}"
    assert [p.name for p in run.checkpoints.iterdir()] == ["latest.pt"]   # the snapshot is gone

    # a retried task restores exactly that version, verified
    retry = TrainRun(tmp_path / "retry")
    assert "checkpoints/latest.pt" in CheckpointMirror(retry.root, prefix).restore()
    assert retry.latest.read_bytes() == stored


# -- restore verifies, and falls back ----------------------------------------------------------

@pytest.fixture(params=["s3", "memory"])
def prefix(request):
    """A mirror prefix in a new bucket on the loopback S3 server or on fsspec's memory file system."""
    bucket = f"mirror-{uuid.uuid4().hex[:8]}"
    if request.param == "s3":
        yield f"s3://{request.getfixturevalue('s3_env')(bucket)}/run-1"
        return
    yield f"memory://{bucket}/run-1"
    fs = fsspec.filesystem("memory")
    for key in [k for k in fs.store if k.startswith(f"/{bucket}/")]:
        del fs.store[key]


def _save(run: TrainRun, data: bytes) -> None:
    """What the trainer does: write a new checkpoint and rename it over latest.pt."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = run.checkpoints / ".latest.pt.next.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, run.latest)


def _uploaded(run, prefix, *versions) -> CheckpointMirror:
    mirror = CheckpointMirror(run.root, prefix)
    for data in versions:
        _save(run, data)
        assert "checkpoints/latest.pt" in mirror.sync()
    return mirror


def test_sync_keeps_the_previous_verified_checkpoint(prefix, tmp_path):
    v1, v2 = (bytes([i]) * 1000 for i in (1, 2))
    run = TrainRun(tmp_path / "run")
    mirror = _uploaded(run, prefix, v1, v2)
    assert mirror.sync() == []                     # nothing changed: nothing uploaded
    ckpt = f"{prefix}/checkpoints/latest.pt"
    assert storage.read_bytes(ckpt) == v2 and storage.read_bytes(f"{prefix}/checkpoints/previous.pt") == v1
    import hashlib

    assert storage.read_bytes(ckpt + ".sha256") == f"{hashlib.sha256(v2).hexdigest()}  latest.pt\n".encode()
    assert storage.read_bytes(f"{prefix}/checkpoints/previous.pt.sha256").split()[0].decode() == \
        hashlib.sha256(v1).hexdigest()


@pytest.mark.parametrize("damage", ["spliced", "hash missing", "checkpoint missing"])
def test_restore_falls_back_to_the_previous_checkpoint(damage, prefix, tmp_path, capsys):
    v1, v2 = (np.random.default_rng(i).bytes(3000) for i in (1, 2))
    _uploaded(TrainRun(tmp_path / "run"), prefix, v1, v2)
    ckpt = f"{prefix}/checkpoints/latest.pt"
    if damage == "spliced":   # what the old mirror could store: part of v1, part of v2, under v2's hash
        storage.write_bytes(ckpt, v1[:1000] + v2[1000:])
    elif damage == "hash missing":
        storage.delete(ckpt + ".sha256")
    else:
        storage.delete(ckpt)
    retry = TrainRun(tmp_path / "retry")
    restored = CheckpointMirror(retry.root, prefix).restore()
    assert restored == ["checkpoints/latest.pt"]
    assert retry.latest.read_bytes() == v1
    err = capsys.readouterr().err
    why = {"spliced": "sha256 mismatch", "hash missing": "no sha256 recorded",
           "checkpoint missing": "hash recorded but the checkpoint is missing"}[damage]
    assert f"{ckpt}: {why}" in err and f"restored the previous checkpoint {prefix}/checkpoints/previous.pt instead" in err
    assert sorted(p.name for p in retry.checkpoints.iterdir()) == ["latest.pt"]   # no temporary left


def test_restore_starts_over_when_no_checkpoint_verifies(prefix, tmp_path, capsys):
    v1, v2 = b"one" * 500, b"two" * 500
    _uploaded(TrainRun(tmp_path / "run"), prefix, v1, v2)
    storage.write_bytes(f"{prefix}/checkpoints/latest.pt", b"torn")
    storage.delete(f"{prefix}/checkpoints/previous.pt.sha256")
    retry = TrainRun(tmp_path / "retry")
    assert CheckpointMirror(retry.root, prefix).restore() == []
    assert not retry.latest.exists() and list(retry.checkpoints.iterdir()) == []
    err = capsys.readouterr().err
    assert "latest.pt: sha256 mismatch" in err and "previous.pt: no sha256 recorded" in err
    assert "no verified checkpoint, training starts over" in err


def test_failed_upload_leaves_a_verified_fallback(prefix, tmp_path, monkeypatch, capsys):
    """An upload of latest.pt that dies (a lost node) leaves latest.pt without its hash, and
    the copy made before it as previous.pt; the next sync does not make that unverified
    latest.pt the fallback."""
    v1, v2, v3, v4 = (bytes([i]) * 2000 for i in (1, 2, 3, 4))
    run = TrainRun(tmp_path / "run")
    mirror = _uploaded(run, prefix, v1, v2)
    _save(run, v3)
    fs, _ = storage.filesystem(prefix)
    real_put = fs.put_file

    def lost(lpath, rpath, **kwargs):
        raise ConnectionResetError("simulated: node lost mid-upload")

    monkeypatch.setattr(fs, "put_file", lost)
    with pytest.raises(UserError, match="latest.pt: upload failed: ConnectionResetError"):
        mirror.sync()
    monkeypatch.setattr(fs, "put_file", real_put)
    assert not storage.exists(f"{prefix}/checkpoints/latest.pt.sha256")
    assert [p.name for p in run.checkpoints.iterdir()] == ["latest.pt"]   # the snapshot is gone

    retry = TrainRun(tmp_path / "retry")
    CheckpointMirror(retry.root, prefix).restore()
    assert retry.latest.read_bytes() == v2
    assert "restored the previous checkpoint" in capsys.readouterr().err

    _save(run, v4)
    assert mirror.sync() == ["checkpoints/latest.pt"]
    assert storage.read_bytes(f"{prefix}/checkpoints/latest.pt") == v4
    assert storage.read_bytes(f"{prefix}/checkpoints/previous.pt") == v2   # not the unverified one


def test_restore_of_an_empty_prefix_restores_nothing_quietly(prefix, tmp_path, capsys):
    retry = TrainRun(tmp_path / "retry")
    assert CheckpointMirror(retry.root, prefix).restore() == []
    assert capsys.readouterr().err == "" and not retry.latest.exists()
