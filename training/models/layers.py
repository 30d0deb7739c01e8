"""Building blocks every network shares: normalisation, initialisation, and the measures
``cyclegan summary`` prints (parameter count, multiply-accumulates of one pass)."""
from __future__ import annotations

import functools

import torch
from torch import nn


def norm_layer(kind: str):
    """A constructor ``channels -> nn.Module`` for the normalisation ``kind``.

    ``instance`` is affine-free and keeps no running statistics, as in the authors'
    code, so the convolutions before it keep their bias (which then has zero gradient).
    """
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if kind == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def conv_bias(kind: str) -> bool:
    # BatchNorm has its own affine shift, so the authors drop the conv bias there.
    return kind != "batch"



def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """The authors' ``init_weights``: conv/linear weights by ``init_type``, biases zero,
    BatchNorm weights N(1, gain)."""
    for m in net.modules():
        name = type(m).__name__
        if hasattr(m, "weight") and m.weight is not None and ("Conv" in name or "Linear" in name):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=gain)
            else:
                raise ValueError(f"unknown init_type {init_type!r}")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif "BatchNorm2d" in name:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net



def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def generator_macs(net: nn.Module, size: int, channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a 1 x channels x size x size image."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * k
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            total += inputs[0].numel() * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, size, size, device=next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return total
