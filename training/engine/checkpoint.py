"""Full-state checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and primitives only (``torch.load(weights_only=True)``
refuses NumPy arrays and dataclasses):

  format, config (nested dict), epoch, epoch_iter, global_iter,
  models {G_A, G_B, D_A, D_B}, optimizers {G, D}, schedulers {G, D},
  pools {A, B}, rng {python, numpy, torch, cuda}
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, config_from_dict
from ..errors import UserError
from ..utils import atomic_path

FORMAT = "cyclegan-checkpoint/1"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save to a temporary file beside ``path``, fsync, then rename over it, so a kill at
    any moment leaves either the old file or the new one, never a torn one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def rng_state() -> dict:
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and sanity-check a checkpoint; any problem is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable cyclegan checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a cyclegan checkpoint (expected format {FORMAT!r})")
    missing = [k for k in ("config", "models") if k not in state]
    if missing:
        raise UserError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def checkpoint_config(state: dict, path: str | Path = "checkpoint") -> Config:
    return config_from_dict(state["config"], f"{path} (stored config)")


def load_generators(path: str | Path, device: str | torch.device = "cpu"):
    """(G_A, G_B, config) in eval mode from a trainer checkpoint, for translate/evaluate/export."""
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
            raise UserError(f"{path}: generator {name} does not match its stored config ({str(e)[:200]})") from None
        nets.append(net.to(device).eval())
    return nets[0], nets[1], cfg
