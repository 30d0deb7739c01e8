"""Reflection padding whose backward is deterministic on every device.

torch has no deterministic CUDA kernel for ``nn.ReflectionPad2d``'s backward: it scatters each
output gradient into the input with atomic adds, whose order (and so the float rounding of the
border pixels, which receive up to nine contributions) changes from run to run. That alone
breaks ``train.deterministic``'s bit-exact resume on a GPU.

``DeterministicReflectionPad2d`` computes the same forward (``F.pad(mode="reflect")`` only copies)
and a backward built from slices, flips and in-place adds in a fixed order: the order in which
the CPU kernel visits the output (rows top to bottom, columns left to right), so each input
pixel's gradient is summed in the same order as on the CPU, and equals the CPU kernel's bit for
bit (tests/models/test_padding.py). It has no parameters, so swapping it in leaves a network's
state-dict keys, and the authors' ``.pth`` files, untouched.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _sources(before: int, size: int, after: int) -> list[tuple[slice, slice, bool]]:
    """(output slice, input slice, flipped) for the three parts of one padded axis, in the order
    the output is scanned: the leading pad mirrors input 1..before, the middle is the input, the
    trailing pad mirrors input size-1-after .. size-2."""
    parts = []
    if before:
        parts.append((slice(0, before), slice(1, before + 1), True))
    parts.append((slice(before, before + size), slice(0, size), False))
    if after:
        parts.append((slice(before + size, before + size + after), slice(size - 1 - after, size - 1), True))
    return parts


class _ReflectionPad2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        ctx.pad, ctx.shape = pad, x.shape
        return F.pad(x, pad, mode="reflect")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        left, right, top, bottom = ctx.pad
        height, width = ctx.shape[-2:]
        grad_input = grad.new_zeros(ctx.shape)
        # Row parts outer, column parts inner: the output's raster order. Each add is one
        # elementwise kernel over a block, so no two writes to a pixel ever race.
        for rows_out, rows_in, flip_rows in _sources(top, height, bottom):
            for cols_out, cols_in, flip_cols in _sources(left, width, right):
                block = grad[..., rows_out, cols_out]
                dims = [d for d, flip in ((-2, flip_rows), (-1, flip_cols)) if flip]
                grad_input[..., rows_in, cols_in] += block.flip(dims) if dims else block
        return grad_input, None


class DeterministicReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` with a deterministic backward (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReflectionPad2d.apply(x, tuple(self.padding))


def use_deterministic_padding(net: nn.Module) -> int:
    """Replace every ``nn.ReflectionPad2d`` in ``net`` by the deterministic one, in place;
    returns how many were replaced. Module names, and so state-dict keys, stay as they were."""
    replaced = 0
    for parent in net.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.ReflectionPad2d:
                setattr(parent, name, DeterministicReflectionPad2d(child.padding))
                replaced += 1
    return replaced
