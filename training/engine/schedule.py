"""Learning-rate policies, stepped once per epoch as in the authors' code."""
from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def linear_factor(epoch: int, n_epochs: int, n_epochs_decay: int, epoch_count: int = 1) -> float:
    """The authors' linear policy for 0-based ``epoch``: constant for ``n_epochs`` epochs,
    then linear decay over ``n_epochs_decay`` epochs; the last epoch runs at
    1 / (n_epochs_decay + 1) of the base rate. With ``epoch_count`` > 1 the epochs past the
    authors' last one would get a negative factor (gradient ascent); they stop at 0."""
    return max(0.0, 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.lr_policy == "linear":
        n, decay, start = cfg.n_epochs, cfg.n_epochs_decay, cfg.epoch_count

        def factor(epoch: int) -> float:
            return linear_factor(epoch, n, decay, start)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.lr_policy == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_decay_iters, gamma=0.1)
    if cfg.lr_policy == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01,
                                                          patience=5)
    if cfg.lr_policy == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.n_epochs, eta_min=0)
    raise ValueError(f"unknown lr_policy {cfg.lr_policy!r}")


def step_scheduler(scheduler, metric: float | None = None) -> None:
    """Advance one epoch; the plateau policy needs the epoch's metric (mean G loss)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metric if metric is not None and math.isfinite(metric) else 0.0)
    else:
        scheduler.step()
