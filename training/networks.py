"""The generators and discriminators of CycleGAN, laid out like the authors' modules.

Module and parameter names match the authors' ``ResnetGenerator`` (``model.N...``,
``model.N.conv_block.M...``) and ``NLayerDiscriminator``, so their ``.pth`` state dicts
load with a prefix-free mapping. Parameter counts at ngf = ndf = 64: generator with
9 blocks 11,378,179, with 6 blocks 7,837,699; 70x70 PatchGAN 2,764,737.
"""
from __future__ import annotations

import functools
import re

import torch
from torch import nn

from .config import ModelConfig


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


def _conv_bias(kind: str) -> bool:
    # BatchNorm has its own affine shift, so the authors drop the conv bias there.
    return kind != "batch"


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, dropout: bool):
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-3, tanh.

    Input sides must be multiples of 4 for the output to keep the input's shape.
    """

    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9, norm="instance", dropout=False):
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias), make_norm(ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), make_norm(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       make_norm(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, then two stride-1 ones.

    At ``n_layers=3`` each output sees a 70x70 patch of the input.
    """

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="instance"):
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                       make_norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                   make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def resnet_blocks(netG: str) -> int | None:
    """``resnet_9blocks`` -> 9; None for other generator names."""
    match = re.fullmatch(r"resnet_(\d+)blocks", netG)
    return int(match.group(1)) if match else None


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


def build_generator(cfg: ModelConfig, input_nc: int = 3, output_nc: int = 3, init: bool = True) -> nn.Module:
    n_blocks = resnet_blocks(cfg.netG)
    if n_blocks is not None:
        net = ResnetGenerator(input_nc, output_nc, cfg.ngf, n_blocks, cfg.norm, dropout=not cfg.no_dropout)
    elif cfg.netG in ("unet_128", "unet_256"):
        from .unet import UnetGenerator

        depth = 7 if cfg.netG == "unet_128" else 8
        net = UnetGenerator(input_nc, output_nc, depth, cfg.ngf, cfg.norm, dropout=not cfg.no_dropout)
    else:
        raise ValueError(f"unknown netG {cfg.netG!r}")
    return init_weights(net, cfg.init_type, cfg.init_gain) if init else net


def build_discriminator(cfg: ModelConfig, input_nc: int = 3, init: bool = True) -> nn.Module:
    if cfg.netD == "basic":
        net = NLayerDiscriminator(input_nc, cfg.ndf, 3, cfg.norm)
    elif cfg.netD == "n_layers":
        net = NLayerDiscriminator(input_nc, cfg.ndf, cfg.n_layers_D, cfg.norm)
    elif cfg.netD == "pixel":
        from .unet import PixelDiscriminator

        net = PixelDiscriminator(input_nc, cfg.ndf, cfg.norm)
    else:
        raise ValueError(f"unknown netD {cfg.netD!r}")
    return init_weights(net, cfg.init_type, cfg.init_gain) if init else net


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
