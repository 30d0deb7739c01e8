"""The deterministic reflection pad (train.deterministic): nn.ReflectionPad2d's forward and
backward bit for bit on CPU, the generators' state-dict keys unchanged, a whole training step
unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import TESTS_PROFILE
from training.config import load_config
from training.models.cyclegan import CycleGAN, TrainingStep
from training.models.padding import DeterministicReflectionPad2d, use_deterministic_padding
from training.models.registry import build_generator

# reflection needs every pad smaller than its side
CASES = [(pad, shape) for pad in (1, 3, (1, 2, 3, 0), (0, 2, 1, 1))
         for shape in ((1, 3, 8, 8), (2, 4, 5, 7), (3, 1, 9, 4), (1, 2, 4, 4), (1, 1, 3, 3))
         if max(nn.ReflectionPad2d(pad).padding) < min(shape[-2:])]


def _pad_and_grad(module, x, grad):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(grad)
    return y, x.grad


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pad,shape", CASES)
def test_equals_reflection_pad_forward_and_backward_bit_for_bit(pad, shape, channels_last):
    # small images too: with 3 rows and a pad of 1, top and bottom both mirror row 1, so a pixel
    # gets up to 9 gradient contributions, whose summation order decides the rounding
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    reference = nn.ReflectionPad2d(pad)
    grad = torch.randn(reference(x).shape, generator=g) * 1000
    y_ref, grad_ref = _pad_and_grad(reference, x, grad)
    y, grad_x = _pad_and_grad(DeterministicReflectionPad2d(pad), x, grad)
    assert torch.equal(y, y_ref) and torch.equal(grad_x, grad_ref)


def test_the_comparison_would_catch_another_summation_order():
    """flip + cat with autograd's own backward is also deterministic, but sums the corner
    gradients in another order: not bit-equal, which is why padding.py orders its adds."""
    def flip_cat(x, p):
        x = torch.cat([x[..., 1:p + 1].flip(-1), x, x[..., -p - 1:-1].flip(-1)], -1)
        return torch.cat([x[..., 1:p + 1, :].flip(-2), x, x[..., -p - 1:-1, :].flip(-2)], -2)

    g = torch.Generator().manual_seed(0)
    x, grad = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 22, 22, generator=g)
    _, grad_ref = _pad_and_grad(nn.ReflectionPad2d(3), x, grad)
    _, grad_ours = _pad_and_grad(DeterministicReflectionPad2d(3), x, grad)
    _, grad_flip_cat = _pad_and_grad(lambda t: flip_cat(t, 3), x, grad)
    assert torch.equal(grad_ours, grad_ref) and not torch.equal(grad_flip_cat, grad_ref)


def test_swapping_keeps_the_generators_state_dict_keys():
    cfg = load_config(TESTS_PROFILE, ["model.netG=resnet_9blocks"], required=True)
    net = build_generator(cfg.model, 3, 3, init=True)
    before = net.state_dict()
    # 2 pads of the ends (3 pixels) and 2 in each of the 9 blocks (1 pixel)
    assert use_deterministic_padding(net) == 2 + 2 * 9
    assert not any(type(m) is nn.ReflectionPad2d for m in net.modules())
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def _two_steps(deterministic: bool):
    cfg = load_config(TESTS_PROFILE, [f"train.deterministic={str(deterministic).lower()}"], required=True)
    torch.manual_seed(0)
    model = CycleGAN(cfg)
    step = TrainingStep(model, cfg.train, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(2):
        result = step(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)
        losses.append([v.item() for v in result.losses.values()])
    return losses, {k: v.clone() for k, v in model.state_dict().items()}, model


def test_a_deterministic_training_step_computes_exactly_what_the_default_one_does():
    losses, params, _ = _two_steps(False)
    det_losses, det_params, model = _two_steps(True)
    assert any(isinstance(m, DeterministicReflectionPad2d) for m in model.G_A.modules())
    assert det_losses == losses
    assert list(det_params) == list(params) and all(torch.equal(det_params[k], params[k]) for k in params)
