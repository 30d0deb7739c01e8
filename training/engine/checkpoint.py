"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and primitives only (``torch.load(weights_only=True)``
refuses NumPy arrays and dataclasses). A full training state, what resume reads:

  format, config (nested dict), data_hash, world_size, epoch, epoch_iter, global_iter,
  models {G_A, G_B, D_A, D_B}, optimizers {G, D}, schedulers {G, D},
  pools {A, B}, rng {python, numpy, torch, cuda (the one device the process used)}

A generators checkpoint (kept epoch checkpoints unless ``train.keep_full_state``, imported
``.pth`` files) holds format, config, models {G_A, G_B} and the counters: what translate,
evaluate and export read through ``load_generators``.

The latest checkpoint is replaced in a way that always leaves one readable full state:
the new file is written beside it, flushed, read back, and only then the old one is moved to
the previous-checkpoint name and the new one renamed over it (``save_latest``).
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, config_from_dict
from ..errors import UserError
from ..utils import atomic_path

FORMAT = "cyclegan-checkpoint/1"
TRAINING_KEYS = ("optimizers", "schedulers", "pools", "rng")
NETWORKS = ("G_A", "G_B", "D_A", "D_B")


def one_line(text) -> str:
    """A multi-line message (torch's load errors run to many lines, with terminal colour codes)
    as one line, whole."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    return " ".join(line.strip() for line in plain.splitlines() if line.strip())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save to a temporary file beside ``path``, fsync, then rename over it, so a kill at
    any moment leaves either the old file or the new one, never a torn one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_latest(state: dict, latest: str | Path, previous: str | Path) -> None:
    """Replace ``latest`` with ``state``, keeping the old one as ``previous`` until the new
    one is on disk and reads back: whatever happens, one of the two is a readable checkpoint.

    A kill between the two renames leaves ``previous`` alone (and a complete temporary, which
    the trainer removes as stale); resume with ``--resume auto`` falls back to ``previous``.
    """
    latest, previous = Path(latest), Path(previous)
    with atomic_path(latest) as tmp:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:   # on disk before the old one gives up its name
            os.fsync(f.fileno())
        verify_readable(tmp)
        if latest.exists():
            os.replace(latest, previous)


def verify_readable(path: str | Path) -> None:
    """Read a just-written checkpoint's archive index and structure back (memory-mapped, so
    the tensors' bytes are not copied): an unfinished or torn file fails here."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:   # a filesystem that cannot map files: read it the ordinary way
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RuntimeError(f"{path}: the checkpoint just written does not read back")


def generators_state(state: dict) -> dict:
    """The generators, config and counters of a full training state: what reading a kept
    checkpoint needs (``load_generators``), a tenth of the size at the paper's scale."""
    kept = {k: state[k] for k in ("format", "config", "data_hash", "world_size", "epoch", "epoch_iter",
                                  "global_iter") if k in state}
    return {**kept, "models": {k: state["models"][k] for k in ("G_A", "G_B")}}


def is_training_state(state: dict) -> bool:
    """Whether ``state`` holds everything resume needs (not generators only)."""
    return all(k in state for k in TRAINING_KEYS) and set(state["models"]) == set(NETWORKS)


def rng_state(device: torch.device | None = None) -> dict:
    """Python, NumPy and torch CPU generators, and the CUDA generator of ``device`` only (of
    the current CUDA device when None): a process drives one GPU, and saving every visible
    device's state would make the checkpoint unloadable where fewer are visible."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None, saved_index: int = 0) -> None:
    """Restore what ``rng_state`` saved; the CUDA state goes to ``device`` (the current CUDA
    device when None), and is skipped on a CPU run.

    Checkpoints of older versions hold a list with every visible device's state; the one of
    the device the saving process used (``saved_index``) is restored, whatever the count now.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None:
        return
    if device is None:
        if not torch.cuda.is_available():
            return
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type != "cuda":
        return
    if isinstance(cuda, (list, tuple)):
        if not cuda:
            return
        cuda = cuda[saved_index] if saved_index < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda, device)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load and sanity-check a checkpoint; any problem is a one-line UserError naming the file
    and giving torch's whole reason. ``mmap`` maps the tensors instead of reading them: a cheap
    look at what a file holds."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception:
            if not mmap:
                raise
            # a filesystem that cannot map files (or a broken file: then this raises again)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = one_line(e) or type(e).__name__
        raise UserError(f"{path}: not a readable cyclegan checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a cyclegan checkpoint (expected format {FORMAT!r})")
    missing = [k for k in ("config", "models") if k not in state]
    if missing:
        raise UserError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def checkpoint_config(state: dict, path: str | Path = "checkpoint") -> Config:
    return config_from_dict(state["config"], f"{path} (stored config)")


def load_generators(path: str | Path, device: str | torch.device = "cpu"):
    """(G_A, G_B, config) in eval mode from a trainer checkpoint (a full training state or a
    generators checkpoint), for translate/evaluate/export."""
    from ..models.registry import build_generator

    state = load_checkpoint(path)
    cfg = checkpoint_config(state, path)
    a_nc, b_nc = cfg.data.input_nc, cfg.data.output_nc
    if cfg.data.direction == "BtoA":
        a_nc, b_nc = b_nc, a_nc
    nets = []
    for name, (i, o) in (("G_A", (a_nc, b_nc)), ("G_B", (b_nc, a_nc))):
        net = build_generator(cfg.model, i, o, init=False)
        try:
            net.load_state_dict(state["models"][name])
        except (KeyError, RuntimeError) as e:
            raise UserError(f"{path}: generator {name} does not match its stored config ({one_line(e)})") from None
        nets.append(net.to(device).eval())
    return nets[0], nets[1], cfg
