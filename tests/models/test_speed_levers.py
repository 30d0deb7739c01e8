"""The GPU speed levers that a CPU can still run: ``train.compile`` (inductor) and
``train.amp_bf16`` (bf16 autocast). Short runs from the same weights and images as the eager
fp32 step; both are slow (inductor compiles the passes for minutes on a shared 2-core CPU).

Tolerances, each ||delta|| / ||ref||:
  compile  losses of iterations 1-2 within 1e-4, each network's weights within 1e-3 after them
           (same math, other fp32 summation order; measured 7e-7 and 3e-4 on torch 2.14.1)
  bf16     losses finite, iteration 1's within 5e-2 of fp32 (bf16 keeps 8 significant bits;
           measured 4e-3)
The conv biases before an affine-free instance norm are left out of the weights: their true
gradient is 0, so Adam turns any rounding difference into a full +-lr step.
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from helpers import ROOT, TESTS_PROFILE
from training.config import load_config
from training.models.cyclegan import CycleGAN, TrainingStep

pytestmark = pytest.mark.slow

NETWORKS = ("G_A", "G_B", "D_A", "D_B")


def _zero_gradient_biases(model) -> set[str]:
    spec = importlib.util.spec_from_file_location("exactness", ROOT / "bench" / "exactness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f"{name}.{p}" for name in NETWORKS for p in module.zero_gradient_biases(getattr(model, name))}


def _run(iters: int, *overrides):
    cfg = load_config(TESTS_PROFILE, list(overrides), required=True)
    torch.manual_seed(0)
    model = CycleGAN(cfg)
    step = TrainingStep(model, cfg.train, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(iters):
        result = step(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)
        losses.append({k: v.item() for k, v in result.losses.items()})
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, model


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _network_differences(weights: dict, reference: dict, skip: set[str]) -> dict[str, float]:
    out = {}
    for net in NETWORKS:
        keys = [k for k in reference if k.startswith(f"{net}.") and k not in skip]
        a, b = (torch.cat([w[k].flatten().float() for k in keys]) for w in (weights, reference))
        out[net] = ((a - b).norm() / b.norm()).item()
    return out


def test_compiled_step_equals_the_eager_step():
    eager_losses, eager_weights, model = _run(2)
    compiled_losses, compiled_weights, _ = _run(2, "train.compile=true")
    for eager, compiled in zip(eager_losses, compiled_losses):
        assert all(math.isfinite(v) for v in compiled.values())
        worst = max(_relative(compiled[k], eager[k]) for k in eager)
        assert worst <= 1e-4, (eager, compiled)
    differences = _network_differences(compiled_weights, eager_weights, _zero_gradient_biases(model))
    assert max(differences.values()) <= 1e-3, differences


def test_bf16_autocast_trains_with_finite_losses_close_to_fp32(tiny_data, tmp_path):
    fp32_losses, _, _ = _run(1)
    bf16_losses, _, _ = _run(3, "train.amp_bf16=true")
    assert all(math.isfinite(v) for losses in bf16_losses for v in losses.values())
    assert max(_relative(bf16_losses[0][k], fp32_losses[0][k]) for k in fp32_losses[0]) <= 5e-2
    # and a short run of the trainer: every logged loss finite
    from training.engine.trainer import train

    summary = train(load_config(TESTS_PROFILE, ["train.amp_bf16=true", "train.max_iters_per_epoch=2",
                                                "train.log_every=1", "train.sample_every=0"], required=True),
                    tiny_data, tmp_path / "run", progress=False)
    assert summary["iterations"] == 4
    assert all(math.isfinite(v) for k, v in summary.items() if k.startswith("loss_"))
