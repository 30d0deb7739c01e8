"""Tiled translation with a PyTorch generator (``cyclegan translate --checkpoint``): images of
any size at bounded memory, with the whole image's instance-norm statistics.

The same algorithm as ``serving/tiling.py`` (which serving runs on the ONNX graph; see its
docstring for the why), here by swapping every ``nn.InstanceNorm2d`` of a copy of the
generator for a :class:`GivenStatistics` module that records its input's statistics, applies
given ones, or sums its input over a tile region:

  1. every norm's statistics from a copy of the image downscaled (box filter) to at most
     ``stats_pixels`` pixels;
  2. the first ``exact_norms`` norms' statistics summed exactly over the tiles, one norm at a
     time (norm k's input depends on the statistics of the norms before it);
  3. the tiles, each normalised with those statistics, blended with raised-cosine ramps.

Tiles are at most ``tile_size`` and as small as covering the image with that many tiles allows.

The grid, the ramps, the regions and the downscaling mirror the NumPy functions of
``serving/tiling.py`` (serving must not import this package, nor this package serving);
``tests/serving/test_tiling.py`` checks the two agree.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn


# -- the grid (mirrors serving/tiling.py) -------------------------------------------------------

def tile_side(length: int, tile: int, overlap: int, multiple: int) -> int:
    """The tile side along one axis: as many tiles as ``tile`` needs to cover ``length`` with
    ``overlap``, each shrunk to the least side (on the ``multiple`` grid) that still covers it,
    so an image just above one tile is not translated as two-thirds overlap."""
    if length <= tile:
        return length
    count = 1 + math.ceil((length - tile) / (tile - overlap))
    side = -(-(length + (count - 1) * overlap) // count)
    return min(tile, -(-side // multiple) * multiple)


def tile_starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Where the tiles along one axis begin: evenly spread from 0 to ``length - tile`` on the
    ``multiple`` grid, neighbours sharing at least ``overlap`` pixels."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = 1 + math.ceil((length - tile) / stride)
    last = length - tile
    return [last if i == count - 1 else (i * last // (count - 1)) // multiple * multiple for i in range(count)]


def ramps(starts: list[int], tile: int, length: int) -> list[np.ndarray]:
    """Each tile's blending weight along one axis: raised-cosine ramps across the overlaps,
    normalised to sum to 1 at every position."""
    size = min(tile, length)
    weights = []
    for i, start in enumerate(starts):
        w = np.ones(size, dtype=np.float64)
        if i > 0 and starts[i - 1] + size > start:
            n = starts[i - 1] + size - start
            w[:n] *= np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        if i < len(starts) - 1 and start + size > starts[i + 1]:
            n = start + size - starts[i + 1]
            w[size - n:] *= np.cos(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        weights.append(w)
    total = np.zeros(length, dtype=np.float64)
    for start, w in zip(starts, weights):
        total[start:start + size] += w
    return [(w / total[start:start + size]).astype(np.float32) for start, w in zip(starts, weights)]


def owned(starts: list[int], tile: int, length: int, multiple: int) -> list[tuple[int, int]]:
    """The part of the axis each tile answers for when statistics are summed (tile coordinates)."""
    size = min(tile, length)
    cuts = [0] + [(starts[i] + starts[i - 1] + size) // 2 // multiple * multiple for i in range(1, len(starts))] \
        + [length]
    return [(cuts[i] - start, cuts[i + 1] - start) for i, start in enumerate(starts)]


def statistics_size(h: int, w: int, max_pixels: int, multiple: int, min_size: int) -> tuple[int, int]:
    if h * w <= max_pixels:
        return h, w
    factor = math.sqrt(max_pixels / (h * w))

    def side(s: int) -> int:
        return max(min_size, multiple, int(s * factor) // multiple * multiple)

    return side(h), side(w)


def downscale(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Box-filter 1 x C x H x W to ``size``, channel by channel, in float32 (Pillow's "F" mode, as serving)."""
    from PIL import Image

    planes = [np.asarray(Image.fromarray(x[0, c].float().cpu().numpy(), mode="F").resize((size[1], size[0]), Image.BOX),
                         dtype=np.float32) for c in range(x.shape[1])]
    return torch.from_numpy(np.stack(planes)[None]).to(x.device, x.dtype)


# -- the norm swap --------------------------------------------------------------------------

class _Summed(Exception):
    """Stops the forward pass at the norm whose input is being summed."""

    def __init__(self, s1: torch.Tensor, s2: torch.Tensor, count: int):
        super().__init__()
        self.s1, self.s2, self.count = s1, s2, count


class GivenStatistics(nn.Module):
    """An ``nn.InstanceNorm2d`` whose statistics can come from outside.

    mode ``own``: the norm itself (its input's statistics), which it also records;
    ``given``: normalises with ``mean``/``var`` (N x C); ``sum``: sums its input minus
    ``mean`` (and squared) over ``region`` (input-pixel bounds of a tile of ``tile_hw``,
    scaled to this layer's resolution) and stops the pass."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        self.eps = norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.mode = "own"
        self.mean = self.var = None
        self.region: tuple[int, int, int, int] | None = None
        self.tile_hw: tuple[int, int] | None = None

    def forward(self, x):
        if self.mode == "sum":
            h, w = x.shape[-2:]
            y0, y1, x0, x1 = self.region
            th, tw = self.tile_hw
            part = x[..., y0 * h // th:y1 * h // th, x0 * w // tw:x1 * w // tw].double()
            d = part - self.mean.double()[..., None, None]
            raise _Summed(d.sum((2, 3)), (d * d).sum((2, 3)), part.shape[-2] * part.shape[-1])
        if self.mode == "own":
            self.mean = x.mean((2, 3))
            self.var = x.var((2, 3), unbiased=False)
        scale = torch.rsqrt(self.var + self.eps)
        y = (x - self.mean[..., None, None]) * scale[..., None, None]
        if self.weight is not None:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def with_given_statistics(generator: nn.Module) -> tuple[nn.Module, list[GivenStatistics]]:
    """A copy of ``generator`` whose instance norms are :class:`GivenStatistics` (same weights)."""
    net = copy.deepcopy(generator).eval()
    norms = []
    # named_modules is depth-first in registration order: the order the norms run in (for the
    # networks here), which the exact summation relies on
    for name, child in list(net.named_modules()):
        if isinstance(child, nn.InstanceNorm2d) and not child.track_running_stats:
            parent_name, _, attribute = name.rpartition(".")
            swapped = GivenStatistics(child)
            setattr(net.get_submodule(parent_name), attribute, swapped)
            norms.append(swapped)
    return net, norms


# -- running --------------------------------------------------------------------------------

@torch.inference_mode()
def translate_tiled(generator: nn.Module, padded: torch.Tensor, tile_size: int, overlap: int, stats_pixels: int,
                    exact_norms: int = 7) -> torch.Tensor:
    """1 x C x H x W in [-1, 1], already padded to the generator's size multiple and minimum
    side (``translate.pad_to_multiple``) -> its translation, tile by tile. ``generator``
    carries the registry's ``size_multiple`` and ``min_size``."""
    m, min_size = generator.size_multiple, generator.min_size
    tile = max(min_size, -(-tile_size // m) * m)
    overlap = -(-overlap // m) * m
    x = padded
    ph, pw = padded.shape[-2:]
    th = max(min_size, tile_side(ph, tile, overlap, m))
    tw = max(min_size, tile_side(pw, tile, overlap, m))
    rows, cols = tile_starts(ph, th, overlap, m), tile_starts(pw, tw, overlap, m)
    net, norms = with_given_statistics(generator)

    def tiles():
        for y0 in rows:
            for x0 in cols:
                yield padded[..., y0:y0 + th, x0:x0 + tw]

    if norms:
        stats_hw = statistics_size(ph, pw, stats_pixels, m, min_size)
        net(padded if stats_hw == (ph, pw) else downscale(padded, stats_hw))   # records every norm's own
        for norm in norms:
            norm.mode = "given"
        if stats_hw != (ph, pw):
            own_y, own_x = owned(rows, th, ph, m), owned(cols, tw, pw, m)
            regions = [(r[0], r[1], q[0], q[1]) for r in own_y for q in own_x]
            for norm in norms[:exact_norms]:
                norm.mode, norm.tile_hw = "sum", (th, tw)
                s1 = s2 = 0.0
                count = 0
                for part, region in zip(tiles(), regions):
                    norm.region = region
                    try:
                        net(part)
                    except _Summed as summed:
                        s1, s2, count = s1 + summed.s1, s2 + summed.s2, count + summed.count
                shift = s1 / count
                norm.var = (s2 / count - shift ** 2).clamp_min(0).to(norm.mean.dtype)
                norm.mean = norm.mean + shift.to(norm.mean.dtype)
                norm.mode = "given"
    wy, wx = ramps(rows, th, ph), ramps(cols, tw, pw)
    out = torch.zeros(padded.shape[0], 0, ph, pw, dtype=torch.float32, device=x.device)
    places = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
    for (r, c), part in zip(places, tiles()):
        y = net(part).float()
        if out.shape[1] == 0:
            out = torch.zeros(y.shape[0], y.shape[1], ph, pw, dtype=torch.float32, device=x.device)
        weight = torch.from_numpy(np.outer(wy[r], wx[c])).to(x.device)
        out[..., rows[r]:rows[r] + th, cols[c]:cols[c] + tw] += y * weight
    return out
