"""The U-Net generators, laid out like the authors' modules.

Module and parameter names match the authors' ``UnetGenerator`` /
``UnetSkipConnectionBlock`` (``model.model.0.weight``, ``model.model.1.model.1.weight``,
...), so their ``.pth`` state dicts load as they are. At ngf = 64 with batch norm (pix2pix's
setting) the generators have 41,828,992 (``unet_128``) and 54,414,016 (``unet_256``) parameters, as the authors' code prints.

A U-Net of ``num_downs`` levels halves the image ``num_downs`` times, down to 1x1 at its
nominal size (128 or 256), so both sides must be multiples of ``2 ** num_downs``; the
generator says so in ``size_multiple``.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bias, norm_layer


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down (4x4 stride-2 conv), the inner levels, up (4x4 stride-2
    transposed conv). Every level but the outermost returns ``cat([x, up(...)])``: the skip
    connection that hands the level's input straight to the decoder.

    Layouts of ``self.model``, as the authors':
      outermost: [downconv, submodule, ReLU, upconv, Tanh]
      innermost: [LeakyReLU, downconv, ReLU, upconv, upnorm]
      otherwise: [LeakyReLU, downconv, downnorm, submodule, ReLU, upconv, upnorm (, Dropout)]
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            # The output layer keeps its bias whatever the norm: nothing normalises after it.
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            # The bottleneck is 1x1: no norm after its downconv (instance norm of one pixel is 0).
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, make_norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, make_norm(inner_nc), submodule,
                      nn.ReLU(True), upconv, make_norm(outer_nc)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        # The first LeakyReLU(True) acts in place on ``x`` (the outer level's conv output),
        # so the skip carries LeakyReLU(x), exactly as the authors' code does.
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` levels: ngf, 2ngf, 4ngf, then 8ngf for every further level.

    ``unet_128`` has 7 levels and ``unet_256`` 8. Dropout (``dropout=True``), as in the
    authors' code, sits only in the ``num_downs - 5`` middle levels of width 8ngf.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: bool = False):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs at least 5 levels, got {num_downs}")
        self.size_multiple = 2 ** num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, dropout=dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm=norm)

    def forward(self, x):
        # A clear error instead of a shape mismatch deep inside torch.cat; skipped while
        # tracing or exporting so symbolic shapes stay free of guards.
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling() or _is_exporting()):
            h, w = x.shape[-2:]
            m = self.size_multiple
            if h % m or w % m:
                raise ValueError(f"this U-Net needs image sides divisible by {m}, got {h}x{w}")
        return self.model(x)


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())
