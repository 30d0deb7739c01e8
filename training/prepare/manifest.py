"""``manifest.json``: what a prepared dataset holds, and the test set's identity.

The manifest sits at the root of a prepared dataset::

    {
      "format": 1,
      "source": {"kind": "zip", "source": "horse2zebra", "layout": "trainA/trainB/testA/testB"},
      "params": {... the prepare parameters that shape the output ...},
      "counts": {"trainA": 1067, "trainB": 1334, "testA": 120, "testB": 140},
      "splits": {"trainA": [{"path": "trainA/n02381460_1001.jpg", "size": 12345,
                             "sha256": "...", "source": "horse2zebra/trainA/n02381460_1001.jpg"}, ...], ...},
      "skipped": [{"path": "horse2zebra/trainA/broken.jpg", "reason": "corrupt or truncated image (...)"}, ...]
    }

Paths are relative POSIX paths; ``path`` is inside the prepared dataset, ``source`` inside the
source. Everything is sorted and there are no timestamps, so two runs on the same input with
the same parameters write byte-identical manifests.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import storage
from ..utils import sha256_file

MANIFEST = "manifest.json"
FORMAT = 1
SPLITS = ("trainA", "trainB", "testA", "testB")


def dumps(manifest: dict) -> bytes:
    """The canonical encoding: sorted keys, one-space indent, UTF-8, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(data_dir: str | Path) -> dict | None:
    """The manifest of a prepared dataset (local or s3://), or None when it has none."""
    uri = storage.join(str(data_dir), MANIFEST)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_bytes(uri).decode("utf-8"))


def hash_entries(entries: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for path, digest in sorted(entries):
        h.update(f"{path}\t{digest}\n".encode("utf-8"))
    return h.hexdigest()


def manifest_hash(data_dir: str | Path, splits: tuple[str, ...] | list[str] = ("testA", "testB")) -> str:
    """A stable sha256 identifying the files of ``splits`` (by default the test set).

    It hashes the sorted lines ``<relative path>\\t<sha256 of the file>`` of those splits,
    taken from ``manifest.json``; without a manifest, the same lines are computed from the
    files themselves (every file under ``data_dir/<split>/``), so both ways agree on a
    dataset that matches its manifest. The evaluation and the promotion gate key on it.
    """
    manifest = read_manifest(data_dir)
    if manifest is not None:
        entries = [(e["path"], e["sha256"]) for split in splits for e in manifest.get("splits", {}).get(split, [])]
        return hash_entries(entries)
    with storage.local_input(data_dir) as root:
        entries = []
        for split in splits:
            folder = root / split
            if folder.is_dir():
                entries += [(p.relative_to(root).as_posix(), sha256_file(p))
                            for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        return hash_entries(entries)
