import pytest
import torch

from training.config import TrainConfig
from training.engine.schedule import build_scheduler, linear_factor, step_scheduler


def lr_by_epoch(cfg: TrainConfig, epochs: int) -> list[float]:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        step_scheduler(sched, 1.0)
    return rates


def test_linear_policy_at_paper_epochs():
    rates = lr_by_epoch(TrainConfig(), 200)
    base = 2e-4
    assert rates[0] == pytest.approx(base)
    assert rates[99] == pytest.approx(base)          # last epoch at the full rate
    assert rates[100] == pytest.approx(base * 100 / 101)
    assert rates[199] == pytest.approx(base / 101)   # the last epoch runs at 1/101


def test_linear_factor_formula():
    assert linear_factor(0, 100, 100) == 1.0
    assert linear_factor(150, 100, 100) == pytest.approx(1 - 51 / 101)
    # epoch_count shifts the schedule as the authors' --epoch_count does
    assert linear_factor(0, 100, 100, epoch_count=101) == pytest.approx(1 - 1 / 101)
