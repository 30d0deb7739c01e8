"""Checkpoints built for a purpose: generators-only epoch checkpoints without training, and
generators made deliberately bad (a solid colour whatever the input), so that the epochs of a
run score differently by construction."""
from __future__ import annotations

from pathlib import Path

import torch

RED = (10.0, -10.0, -10.0)   # final-conv bias before tanh: (1, -1, -1), a solid red picture
# far from both synthetic domains to the feature network (measured on the tests profile: mean KID
# 0.746 against 0.65 for 1-3 trained epochs and 0.59-0.71 for red, white, black, grey, blue, magenta)
GREEN = (-10.0, 10.0, -10.0)


def write_generator_checkpoint(path: Path, cfg, epoch: int, seed: int = 0, selection: dict | None = None) -> Path:
    """A generators + config checkpoint (what kept epoch checkpoints hold) of freshly initialised
    generators for the ``cfg`` (a training.config.Config); ``selection`` adds a selection record."""
    from training.engine.checkpoint import FORMAT, atomic_torch_save
    from training.models.registry import build_generator

    torch.manual_seed(seed)
    state = {"format": FORMAT, "config": cfg.to_dict(), "epoch": epoch, "global_iter": 10 * epoch,
             "models": {name: build_generator(cfg.model, cfg.data.input_nc, cfg.data.output_nc).state_dict()
                        for name in ("G_A", "G_B")}}
    if selection is not None:
        state["selection"] = selection
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, path)
    return path


def paint_solid(path: Path, colour: tuple[float, float, float] = RED) -> Path:
    """Make both generators of a checkpoint output one colour: the last convolution's weights
    become 0 and its bias ``colour`` (before the tanh). Works on full and generators-only files."""
    state = torch.load(path, weights_only=True)
    for name in ("G_A", "G_B"):
        weights = state["models"][name]
        last = [key for key, value in weights.items() if value.dim() == 4][-1]   # the output convolution
        weights[last].zero_()
        weights[last.replace("weight", "bias")].copy_(torch.tensor(colour))
    torch.save(state, path)
    return path


def generator_tensors(path: Path) -> dict[str, torch.Tensor]:
    """``G_A.<name>`` / ``G_B.<name>`` -> tensor, to compare the generators of two files."""
    state = torch.load(path, weights_only=True)
    return {f"{g}.{k}": v for g in ("G_A", "G_B") for k, v in state["models"][g].items()}


def same_generators(a: Path, b: Path) -> bool:
    ta, tb = generator_tensors(a), generator_tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
