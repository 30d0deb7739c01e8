"""Tiled translation: images of any size at bounded memory, with the whole image's
instance-norm statistics.

Why: the generators are fully convolutional, so any size works by padding, but memory grows
with the image: for a 4000 x 3000 photo the paper generator's first convolution output alone
is 64 channels x 12 M pixels x 4 bytes, about 3 GB. Above ``serve.tile_above_pixels`` an image
is translated in overlapping tiles of ``serve.tile_size`` instead, so the network never sees
more than one tile (and one downscaled copy, below).

Instance norms make tiles non-trivial: each normalises with the mean and variance of its own
input, so a tile normalised with its own statistics gets its own colours and every tile
boundary shows. Two models are derived from the exported generator, in memory, when the
server (or ``translate --model``) loads it:

  statistics  image -> every InstanceNormalization's input mean and variance per channel,
              packed into one N x S tensor (mean_1, var_1, mean_2, var_2, ...)
  tile        (tile, statistics) -> translated tile, each InstanceNormalization replaced by
              ``x * a + b`` with ``a = scale / sqrt(var + eps)``, ``b = bias - mean * a``

The statistics model runs on a copy of the image downscaled (box filter) to at most
``serve.tile_above_pixels``: the size that runs whole anyway, so the peak memory of a tiled
image is that of an image at the threshold. Statistics of a downscaled copy are an estimate
(fine texture has less variance at a lower resolution); ``bench/serve_speed.py --tiled``
measures what it costs against the whole-image output.

Why derive the models from the ONNX graph instead of exporting them: every exported model
(fp32, uint8 and int8, whose instance norms stay fp32, and versions already in the registry)
becomes tileable without new files in the export folder or the registered model. A self-check
when loading runs both derived models on a small image with its own statistics and compares
with the generator; a model that fails it is served whole, as before, with a warning. A model
without instance norms (batch norm, no norm) needs no statistics: its tiles run as they are.

Tiles all have the same size (the last one in a row or column is moved back to end at the
image border), start at multiples of the generator's size multiple (its strided convolutions
then see the same pixel grid as on the whole image), and are blended with raised-cosine ramps
across each overlap whose weights sum to one at every pixel, so there is no division and no
weight image.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ServingError

log = logging.getLogger("cyclegan.serving")

STATISTICS = "statistics"          # the tile model's second input, the statistics model's output
_NORM = "InstanceNormalization"


# -- the derived graphs ---------------------------------------------------------------------------

@dataclass
class DerivedGraphs:
    statistics: object | None      # onnx.ModelProto, None when the generator has no instance norm
    tile: object                   # onnx.ModelProto
    channels: list[int]            # channels of each instance norm, in graph order
    sums: list = field(default_factory=list)   # onnx.ModelProto per exactly-summed leading norm

    @property
    def width(self) -> int:
        """S: the length of one image's packed statistics."""
        return 2 * sum(self.channels)


def derive_graphs(model, layout: str = "NCHW", exact_norms: int = 0) -> DerivedGraphs:
    """The statistics and tile models of an exported generator (an ``onnx.ModelProto``), and
    the partial models that sum the first ``exact_norms`` norms' inputs over a tile region."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    norms = [n for n in model.graph.node if n.op_type == _NORM]
    channels = []
    for node in norms:
        scale = initializers.get(node.input[1])
        if scale is None:
            raise ServingError(f"{node.name}: the instance norm's scale is not a constant")
        channels.append(int(scale.shape[0]))
    if not norms:
        return DerivedGraphs(None, model, [])

    axes = helper.make_tensor("tiling_axes_hw", TensorProto.INT64, [2], [2, 3])
    axes_1 = helper.make_tensor("tiling_axis_1", TensorProto.INT64, [1], [1])
    axes_0 = helper.make_tensor("tiling_axis_0", TensorProto.INT64, [1], [0])

    def float_input(name: str, nodes: list, tag: str) -> str:
        """``name`` as float32 (fp16 graphs normalise in fp16; statistics travel as fp32)."""
        if types.get(name, TensorProto.FLOAT) == TensorProto.FLOAT:
            return name
        nodes.append(helper.make_node("Cast", [name], [f"{tag}_f32"], to=TensorProto.FLOAT))
        return f"{tag}_f32"

    # statistics: the generator unchanged, plus the mean and variance of each norm's input,
    # computed right after the norm: ORT runs nodes in the order given, and statistics left to
    # the end would keep every norm's full-size input alive until then
    stats = onnx.ModelProto()
    stats.CopyFrom(model)
    ordered, packed, i = [], [], 0
    for node in model.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        ordered.append(copy)
        if node.op_type != _NORM:
            continue
        tag = f"tiling_stat{i}"
        x = float_input(node.input[0], ordered, tag)
        ordered += [
            helper.make_node("ReduceMean", [x, axes.name], [f"{tag}_mean4"], keepdims=1),
            helper.make_node("Sub", [x, f"{tag}_mean4"], [f"{tag}_centred"]),
            helper.make_node("Mul", [f"{tag}_centred", f"{tag}_centred"], [f"{tag}_square"]),
            helper.make_node("ReduceMean", [f"{tag}_square", axes.name], [f"{tag}_var4"], keepdims=1),
            helper.make_node("Flatten", [f"{tag}_mean4"], [f"{tag}_mean"], axis=1),
            helper.make_node("Flatten", [f"{tag}_var4"], [f"{tag}_var"], axis=1),
        ]
        packed += [f"{tag}_mean", f"{tag}_var"]
        i += 1
    ordered.append(helper.make_node("Concat", packed, [STATISTICS], axis=1))
    del stats.graph.node[:]
    stats.graph.node.extend(ordered)
    stats.graph.initializer.extend([axes])
    del stats.graph.output[:]
    stats.graph.output.append(helper.make_tensor_value_info(STATISTICS, TensorProto.FLOAT,
                                                            ["batch", sum(channels) * 2]))
    _prune(stats.graph)

    # tile: each norm applies the given statistics
    tile = onnx.ModelProto()
    tile.CopyFrom(model)
    nodes, offset = [], 0
    norm_index = {id(n): i for i, n in enumerate(norms)}
    for node in model.graph.node:
        if node.op_type != _NORM:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            nodes.append(copy)
            continue
        i = norm_index[id(node)]
        c = channels[i]
        tag = f"tiling_norm{i}"
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        consts = [helper.make_tensor(f"{tag}_{k}", TensorProto.INT64, [1], [v])
                  for k, v in (("m0", offset), ("m1", offset + c), ("v0", offset + c), ("v1", offset + 2 * c))]
        tile.graph.initializer.extend(consts)
        tile.graph.initializer.append(helper.make_tensor(f"{tag}_eps", TensorProto.FLOAT, [], [eps]))
        scale = float_input(node.input[1], nodes, f"{tag}_scale")
        bias = float_input(node.input[2], nodes, f"{tag}_bias")
        nodes += [
            helper.make_node("Slice", [STATISTICS, f"{tag}_m0", f"{tag}_m1", axes_1.name], [f"{tag}_mean"]),
            helper.make_node("Slice", [STATISTICS, f"{tag}_v0", f"{tag}_v1", axes_1.name], [f"{tag}_var"]),
            helper.make_node("Add", [f"{tag}_var", f"{tag}_eps"], [f"{tag}_var_eps"]),
            helper.make_node("Sqrt", [f"{tag}_var_eps"], [f"{tag}_std"]),
            helper.make_node("Unsqueeze", [scale, axes_0.name], [f"{tag}_scale_row"]),    # 1 x C
            helper.make_node("Div", [f"{tag}_scale_row", f"{tag}_std"], [f"{tag}_a"]),    # N x C
            helper.make_node("Mul", [f"{tag}_mean", f"{tag}_a"], [f"{tag}_mean_a"]),
            helper.make_node("Unsqueeze", [bias, axes_0.name], [f"{tag}_bias_row"]),
            helper.make_node("Sub", [f"{tag}_bias_row", f"{tag}_mean_a"], [f"{tag}_b"]),
            helper.make_node("Unsqueeze", [f"{tag}_a", axes.name], [f"{tag}_a4"]),        # N x C x 1 x 1
            helper.make_node("Unsqueeze", [f"{tag}_b", axes.name], [f"{tag}_b4"]),
        ]
        a4, b4 = f"{tag}_a4", f"{tag}_b4"
        x_type = types.get(node.input[0], TensorProto.FLOAT)
        if x_type != TensorProto.FLOAT:   # fp16 activations: apply in their own type
            nodes += [helper.make_node("Cast", [a4], [f"{tag}_a4_cast"], to=x_type),
                      helper.make_node("Cast", [b4], [f"{tag}_b4_cast"], to=x_type)]
            a4, b4 = f"{tag}_a4_cast", f"{tag}_b4_cast"
        nodes += [helper.make_node("Mul", [node.input[0], a4], [f"{tag}_scaled"]),
                  helper.make_node("Add", [f"{tag}_scaled", b4], [node.output[0]])]
        offset += 2 * c
    del tile.graph.node[:]
    tile.graph.node.extend(nodes)
    tile.graph.initializer.extend([axes, axes_0, axes_1])
    tile.graph.input.append(helper.make_tensor_value_info(STATISTICS, TensorProto.FLOAT, ["batch", offset]))
    sums = [_region_sums(tile, norms[k], k, sum(2 * c for c in channels[:k]), channels[k], types, layout)
            for k in range(min(exact_norms, len(norms)))]
    _prune(tile.graph)
    return DerivedGraphs(stats, tile, channels, sums)


def _region_sums(tile, norm, k: int, offset: int, c: int, types: dict, layout: str):
    """A copy of the tile graph that stops at norm ``k``'s input X and returns, over the part of
    the tile given as ``region`` = [y0, y1, x0, x1] (input pixels, scaled to X's resolution
    in the graph), ``sums`` = [sum(X - m), sum((X - m)^2)] per channel (N x 2C, m the mean in
    ``statistics``: centring on it keeps float32 sums exact enough) and ``count``, the pixels."""
    import onnx
    from onnx import TensorProto, helper

    g = onnx.ModelProto()
    g.CopyFrom(tile)
    tag = f"tiling_sum{k}"
    h_index = 2 if layout == "NCHW" else 1
    x = norm.input[0]
    nodes = []
    if types.get(x, TensorProto.FLOAT) != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], [f"{tag}_x32"], to=TensorProto.FLOAT))
        x = f"{tag}_x32"

    def const(name, values):
        g.graph.initializer.append(helper.make_tensor(f"{tag}_{name}", TensorProto.INT64, [len(values)], values))
        return f"{tag}_{name}"

    def part(source, start, name):      # one element of a 1-D tensor, kept 1-D
        nodes.append(helper.make_node("Slice", [source, const(f"{name}_s", [start]), const(f"{name}_e", [start + 1])],
                                      [f"{tag}_{name}"]))
        return f"{tag}_{name}"

    input_name = g.graph.input[0].name
    nodes += [helper.make_node("Shape", [input_name], [f"{tag}_in_shape"]),
              helper.make_node("Shape", [x], [f"{tag}_x_shape"])]
    big_h, big_w = part(f"{tag}_in_shape", h_index, "H"), part(f"{tag}_in_shape", h_index + 1, "W")
    h, w = part(f"{tag}_x_shape", 2, "h"), part(f"{tag}_x_shape", 3, "w")
    bounds = []
    for i, (name, small, big) in enumerate((("y0", h, big_h), ("y1", h, big_h), ("x0", w, big_w), ("x1", w, big_w))):
        r = part("region", i, f"r{name}")
        nodes += [helper.make_node("Mul", [r, small], [f"{tag}_{name}_scaled"]),
                  helper.make_node("Div", [f"{tag}_{name}_scaled", big], [f"{tag}_{name}"])]
        bounds.append(f"{tag}_{name}")
    y0, y1, x0, x1 = bounds
    nodes += [
        helper.make_node("Concat", [y0, x0], [f"{tag}_starts"], axis=0),
        helper.make_node("Concat", [y1, x1], [f"{tag}_ends"], axis=0),
        helper.make_node("Slice", [x, f"{tag}_starts", f"{tag}_ends", "tiling_axes_hw"], [f"{tag}_part"]),
        helper.make_node("Slice", [STATISTICS, const("m0", [offset]), const("m1", [offset + c]), "tiling_axis_1"],
                         [f"{tag}_mean"]),
        helper.make_node("Unsqueeze", [f"{tag}_mean", "tiling_axes_hw"], [f"{tag}_mean4"]),
        helper.make_node("Sub", [f"{tag}_part", f"{tag}_mean4"], [f"{tag}_d"]),
        helper.make_node("Mul", [f"{tag}_d", f"{tag}_d"], [f"{tag}_d2"]),
        helper.make_node("ReduceSum", [f"{tag}_d", "tiling_axes_hw"], [f"{tag}_s1"], keepdims=0),
        helper.make_node("ReduceSum", [f"{tag}_d2", "tiling_axes_hw"], [f"{tag}_s2"], keepdims=0),
        helper.make_node("Concat", [f"{tag}_s1", f"{tag}_s2"], ["sums"], axis=1),
        helper.make_node("Sub", [y1, y0], [f"{tag}_dy"]),
        helper.make_node("Sub", [x1, x0], [f"{tag}_dx"]),
        helper.make_node("Mul", [f"{tag}_dy", f"{tag}_dx"], [f"{tag}_n"]),
        helper.make_node("Cast", [f"{tag}_n"], ["count"], to=TensorProto.FLOAT),
    ]
    g.graph.node.extend(nodes)
    g.graph.input.append(helper.make_tensor_value_info("region", TensorProto.INT64, [4]))
    del g.graph.output[:]
    g.graph.output.extend([helper.make_tensor_value_info("sums", TensorProto.FLOAT, ["batch", 2 * c]),
                           helper.make_tensor_value_info("count", TensorProto.FLOAT, [1])])
    _prune(g.graph)
    return g


def _prune(graph) -> None:
    """Drop the nodes and initializers no graph output depends on."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:   # subgraphs (If/Loop) read outer names too
                for sub in list(attr.g.node if attr.HasField("g") else []):
                    needed.update(sub.input)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


# -- the tile grid ------------------------------------------------------------------------------

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
    """Where the tiles along one axis of ``length`` begin: the first at 0, the last at
    ``length - tile``, evenly spread in between, each a multiple of ``multiple``, with at
    least ``overlap`` pixels shared by neighbours. ``length`` and ``tile`` are multiples of
    ``multiple``; ``length <= tile`` is one tile."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"tile {tile} must exceed overlap {overlap}")
    count = 1 + math.ceil((length - tile) / stride)
    last = length - tile
    # rounding each start down to the multiple keeps neighbours at most `stride` apart
    return [last if i == count - 1 else (i * last // (count - 1)) // multiple * multiple for i in range(count)]


def ramps(starts: list[int], tile: int, length: int) -> list[np.ndarray]:
    """Each tile's blending weight along one axis (float32, ``min(tile, length)`` values):
    1 inside, a raised-cosine ramp across each overlap with a neighbour, normalised so that
    the weights of all tiles sum to exactly 1 at every position."""
    size = min(tile, length)
    weights = []
    for i, start in enumerate(starts):
        w = np.ones(size, dtype=np.float64)
        if i > 0 and starts[i - 1] + size > start:
            n = starts[i - 1] + size - start           # overlap with the previous tile
            t = (np.arange(n) + 0.5) / n
            w[:n] *= np.sin(0.5 * np.pi * t) ** 2
        if i < len(starts) - 1 and start + size > starts[i + 1]:
            n = start + size - starts[i + 1]           # overlap with the next tile
            t = (np.arange(n) + 0.5) / n
            w[size - n:] *= np.cos(0.5 * np.pi * t) ** 2
        weights.append(w)
    total = np.zeros(length, dtype=np.float64)
    for start, w in zip(starts, weights):
        total[start:start + size] += w
    return [(w / total[start:start + size]).astype(np.float32) for start, w in zip(starts, weights)]


def owned(starts: list[int], tile: int, length: int, multiple: int) -> list[tuple[int, int]]:
    """The part of the axis each tile answers for when statistics are summed over tiles
    (tile coordinates): neighbours split their overlap in the middle, on the ``multiple``
    grid, so the parts cover the axis exactly once and stay away from tile borders."""
    size = min(tile, length)
    cuts = [0] + [(starts[i] + starts[i - 1] + size) // 2 // multiple * multiple for i in range(1, len(starts))] \
        + [length]
    return [(cuts[i] - start, cuts[i + 1] - start) for i, start in enumerate(starts)]


def statistics_size(h: int, w: int, max_pixels: int, multiple: int, min_size: int) -> tuple[int, int]:
    """The (height, width) of the copy the statistics are taken from: the image itself when it
    has at most ``max_pixels``, else downscaled to fit, keeping the aspect ratio, sides
    multiples of ``multiple`` and at least ``min_size``."""
    if h * w <= max_pixels:
        return h, w
    factor = math.sqrt(max_pixels / (h * w))

    def side(s: int) -> int:
        return max(min_size, multiple, int(s * factor) // multiple * multiple)

    return side(h), side(w)


def downscale(x: np.ndarray, size: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    """Box-filter ``x`` (one image, model layout) to ``size`` along its spatial ``axes``,
    channel by channel, in float32 (Pillow's "F" mode); uint8 input comes back as uint8."""
    from PIL import Image

    h_axis, w_axis = axes
    c_axis = next(a for a in range(1, x.ndim) if a not in axes)
    planes = []
    for c in range(x.shape[c_axis]):
        plane = np.take(x[0], c, axis=c_axis - 1).astype(np.float32)
        resized = Image.fromarray(plane, mode="F").resize((size[1], size[0]), Image.BOX)
        planes.append(np.asarray(resized, dtype=np.float32))
    out = np.stack(planes, axis=c_axis - 1)[None]
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


# -- running ------------------------------------------------------------------------------------

Progress = Callable[[int, int], None]    # (done, total) model calls


@dataclass
class TilePlan:
    """The tiles of one image: starts per axis (on the padded image) and the model calls."""
    height: int
    width: int
    padded: tuple[int, int]
    rows: list[int]
    cols: list[int]
    tile: tuple[int, int]
    statistics: tuple[int, int] | None

    @property
    def tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    exact: int = 0                 # leading norms whose statistics are summed over the tiles

    @property
    def calls(self) -> int:
        return self.tiles * (1 + self.exact) + (self.statistics is not None)


class TiledGenerator:
    """One generator run tile by tile (``translate``), beside its whole-image session."""

    def __init__(self, generator, graphs: DerivedGraphs, tile_size: int, overlap: int, stats_pixels: int):
        """``graphs`` from :func:`derive_graphs`; sizes in pixels, rounded up to the generator's grid."""
        self.generator = generator
        self.graphs = graphs
        m = generator.size_multiple
        # tiles and overlaps on the generator's grid: sides it accepts, starts it sees alike
        self.tile_size = max(generator.min_size, -(-tile_size // m) * m)
        self.overlap = -(-overlap // m) * m
        if self.overlap * 2 > self.tile_size:
            raise ServingError(f"serve.tile_overlap: {overlap} is more than half of serve.tile_size ({tile_size}) "
                               f"on the {m}-pixel grid of {generator.path.name}")
        self.stats_pixels = stats_pixels
        self.stats_session = _derived_session(generator, graphs.statistics, passes=True, statistics=True) \
            if graphs.statistics else None
        self.tile_session = _derived_session(generator, graphs.tile) if graphs.channels else None
        self.sum_sessions = [_derived_session(generator, g, passes=True) for g in graphs.sums]
        # the sessions hold their own copies of the weights: drop the graphs' (a model's worth each)
        self.graphs = DerivedGraphs(None, None, graphs.channels)
        self.largest_call = 0    # most pixels any one model call saw: what bounds the memory
        # Each ORT session keeps its own memory arena at its peak; held at once they would add
        # up. The statistics and summing passes give theirs back after each run, the tile
        # model after an image's last tile, so the peak is the largest single pass.
        import onnxruntime as ort

        self._release = ort.RunOptions()
        self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def plan(self, h: int, w: int) -> TilePlan:
        g = self.generator
        m = g.size_multiple
        ph, pw = max(h + (-h) % m, g.min_size), max(w + (-w) % m, g.min_size)
        th = max(g.min_size, tile_side(ph, self.tile_size, self.overlap, m))
        tw = max(g.min_size, tile_side(pw, self.tile_size, self.overlap, m))
        rows, cols = tile_starts(ph, th, self.overlap, m), tile_starts(pw, tw, self.overlap, m)
        stats = statistics_size(ph, pw, self.stats_pixels, m, g.min_size) if self.stats_session else None
        # statistics of a copy at full size are exact already
        exact = len(self.sum_sessions) if stats is not None and stats != (ph, pw) else 0
        return TilePlan(h, w, (ph, pw), rows, cols, (th, tw), stats, exact)

    def _run(self, session, feeds: dict, all_outputs: bool = False, release: bool = True):
        x = next(iter(feeds.values()))
        h_axis, w_axis = self.generator.spatial_axes
        self.largest_call = max(self.largest_call, x.shape[0] * x.shape[h_axis] * x.shape[w_axis])
        outputs = session.run(None, feeds, self._release if release else None)
        return outputs if all_outputs else outputs[0]

    def statistics(self, padded: np.ndarray, plan: TilePlan, step: Callable[[], None] = lambda: None) -> np.ndarray:
        """1 x S statistics of one padded image: every norm's from its downscaled copy, then
        the first ``plan.exact`` norms' summed exactly over the tiles, one norm at a time
        (norm k's input depends on the statistics of the norms before it)."""
        axes = self.generator.spatial_axes
        small = padded if plan.statistics == plan.padded else downscale(padded, plan.statistics, axes)
        stats = self._run(self.stats_session, {self.stats_session.get_inputs()[0].name: small}).astype(np.float32)
        step()
        m = self.generator.size_multiple
        own_y = owned(plan.rows, plan.tile[0], plan.padded[0], m)
        own_x = owned(plan.cols, plan.tile[1], plan.padded[1], m)
        offset = 0
        for k in range(plan.exact):
            c = self.graphs.channels[k]
            session = self.sum_sessions[k]
            total, s1, s2 = 0.0, np.zeros(c), np.zeros(c)
            for tile, (r, q) in zip(self._tiles(padded, plan), ((r, q) for r in own_y for q in own_x)):
                region = np.array([r[0], r[1], q[0], q[1]], dtype=np.int64)
                sums, count = self._run(session, {session.get_inputs()[0].name: tile, STATISTICS: stats,
                                                  "region": region}, all_outputs=True)
                s1 += sums[0, :c]
                s2 += sums[0, c:]
                total += float(count[0])
                step()
            shift = s1 / total
            stats[0, offset:offset + c] += shift
            stats[0, offset + c:offset + 2 * c] = np.maximum(s2 / total - shift ** 2, 0.0)
            offset += 2 * c
        return stats

    def _tiles(self, padded: np.ndarray, plan: TilePlan):
        """Each tile of the padded image, row by row, as a contiguous model input."""
        axes = self.generator.spatial_axes
        th, tw = plan.tile
        for y0 in plan.rows:
            for x0 in plan.cols:
                index = [slice(None)] * padded.ndim
                index[axes[0]], index[axes[1]] = slice(y0, y0 + th), slice(x0, x0 + tw)
                yield np.ascontiguousarray(padded[tuple(index)])

    def translate(self, x: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """N images of one size in the model's layout -> their translations, tile by tile."""
        outputs = []
        for i in range(x.shape[0]):
            outputs.append(self._translate_one(x[i:i + 1], progress))
        return np.concatenate(outputs) if len(outputs) > 1 else outputs[0]

    def _translate_one(self, x: np.ndarray, progress: Progress | None) -> np.ndarray:
        from .images import crop, pad_to_multiple

        g = self.generator
        axes = g.spatial_axes
        h, w = x.shape[axes[0]], x.shape[axes[1]]
        plan = self.plan(h, w)
        padded, _ = pad_to_multiple(x, g.size_multiple, axes, g.min_size)
        done = 0

        def step():
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, plan.calls)

        feeds = {}
        if self.stats_session is not None:
            feeds[STATISTICS] = self.statistics(padded, plan, step)
        session = self.tile_session or g.session
        input_name = session.get_inputs()[0].name
        th, tw = plan.tile
        wy = ramps(plan.rows, th, plan.padded[0])
        wx = ramps(plan.cols, tw, plan.padded[1])
        out = None
        places = [(r, c) for r in range(len(plan.rows)) for c in range(len(plan.cols))]
        for (r, c), tile in zip(places, self._tiles(padded, plan)):
            y = self._run(session, {input_name: tile, **feeds}, release=(r, c) == places[-1])
            if out is None:
                shape = list(y.shape)
                shape[axes[0]], shape[axes[1]] = plan.padded
                out = np.zeros(shape, dtype=np.float32)
            index = [slice(None)] * out.ndim
            index[axes[0]] = slice(plan.rows[r], plan.rows[r] + th)
            index[axes[1]] = slice(plan.cols[c], plan.cols[c] + tw)
            weight = np.outer(wy[r], wx[c])
            weight = weight[None, None] if axes == (2, 3) else weight[None, :, :, None]
            out[tuple(index)] += y.astype(np.float32) * weight
            step()
        if g.dtype == np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(crop(out, (h, w), axes))


def _derived_session(generator, model, passes: bool = False, statistics: bool = False):
    """An ORT session for a derived graph with the generator session's own options and
    providers (the server's provider settings apply to the tiles too). ``passes``: the
    statistics and summing models, which give their memory back after every run."""
    import onnxruntime as ort

    session = generator.session
    options = session.get_provider_options()
    providers = [(name, options.get(name, {})) for name in session.get_providers()]
    session_options = session.get_session_options()
    if passes:
        # ORT's memory pattern pre-allocates a run's whole plan at once from the second run on:
        # 1.6x the first run's peak for the statistics model (measured at 768 x 768)
        session_options.enable_mem_pattern = False
    if statistics:
        # ORT's default order runs the added statistics nodes late, keeping every norm's input
        # alive: 2.4x the generator's peak on the paper generator; priority order runs each
        # right after its norm (measured: 293 MB against 698 MB over the base at 512 x 512)
        session_options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    try:
        return ort.InferenceSession(model.SerializeToString(), session_options, providers=providers)
    except Exception as e:  # ORT raises its own types
        raise ServingError(f"{generator.path}: the derived tiling model does not load "
                           f"({str(e).splitlines()[0][:300]})") from None


def self_check(tiler: TiledGenerator, seed: int = 0) -> float:
    """Largest difference between the generator and statistics + tile on one small image
    (with its own statistics, so the two must agree to rounding); raises if too large."""
    g = tiler.generator
    side = max(g.min_size, 2 * g.size_multiple, 32 // g.size_multiple * g.size_multiple)
    rng = np.random.default_rng(seed)
    if g.layout == "NCHW":
        shape = [1, g.channels_in, side, side + g.size_multiple]
        x = (rng.random(shape, dtype=np.float32) * 2 - 1).astype(g.dtype)
    else:
        shape = [1, side, side + g.size_multiple, g.channels_in]
        x = rng.integers(0, 256, shape, dtype=np.uint8)
    expected = g.run(x).astype(np.float32)
    feeds = {tiler.tile_session.get_inputs()[0].name: x}
    if tiler.stats_session is not None:
        feeds[STATISTICS] = tiler.stats_session.run(None, {tiler.stats_session.get_inputs()[0].name: x})[0]
    got = tiler.tile_session.run(None, feeds)[0].astype(np.float32)
    diff = float(np.abs(got - expected).max())
    # uint8 outputs may differ by a level where a value sits on a rounding edge; the int8
    # model's quantisers may move one step where the float path differs in the last bits
    tolerance = {"uint8": 1.0, "int8": 0.05}.get(g.metadata.get("variant", ""), 1e-3)
    if not diff <= tolerance:
        raise ServingError(f"{g.path.name}: the tile model differs from the generator by {diff:.3g} "
                           f"(tolerance {tolerance:g})")
    return diff


def load_tiler(generator, tile_size: int, overlap: int, stats_pixels: int,
               exact_norms: int = 7) -> tuple[TiledGenerator | None, str]:
    """(the tiled generator, "on") or (None, why not): a model that cannot be tiled is served
    whole, as before tiling existed."""
    import onnx

    started = time.perf_counter()
    try:
        graphs = derive_graphs(onnx.load(str(generator.path)), generator.layout, exact_norms)
        if not graphs.channels:
            # no instance norm: the generator itself is the tile model, no statistics needed
            tiler = TiledGenerator(generator, graphs, tile_size, overlap, stats_pixels)
            return tiler, "on (no instance norm)"
        tiler = TiledGenerator(generator, graphs, tile_size, overlap, stats_pixels)
        diff = self_check(tiler)
    except ServingError as e:
        if "serve.tile_overlap" in str(e):
            raise
        log.warning("tiling off", extra={"fields": {"path": str(generator.path), "reason": str(e)}})
        return None, f"off: {e}"
    except Exception as e:   # e.g. the provider cannot run the derived graphs: serve whole, say why
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        log.warning("tiling off", extra={"fields": {"path": str(generator.path), "reason": reason}})
        return None, f"off: {reason}"
    log.info("tiling ready", extra={"fields": {
        "path": str(generator.path), "instance_norms": len(graphs.channels), "tile_size": tiler.tile_size,
        "overlap": tiler.overlap, "self_check_max_abs_diff": diff,
        "seconds": round(time.perf_counter() - started, 3)}})
    return tiler, "on"


# -- progress for the web page ------------------------------------------------------------------

class ProgressBoard:
    """What each running translation has done, by a job id the client chose: the web page
    polls it while a large image is translated. Entries are kept ``keep_s`` after they finish
    and at most ``capacity`` at once (the oldest go first), so a client that never asks costs
    nothing lasting."""

    def __init__(self, capacity: int = 1024, keep_s: float = 60.0):
        self.capacity, self.keep_s = capacity, keep_s
        self._jobs: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, job: str, stage: str, total: int) -> None:
        with self._lock:
            self._expire()
            self._jobs[job] = {"job": job, "stage": stage, "done": 0, "total": total, "finished": False,
                               "updated": time.monotonic()}
            self._jobs.move_to_end(job)
            while len(self._jobs) > self.capacity:
                self._jobs.popitem(last=False)

    def update(self, job: str, stage: str, done: int, total: int) -> None:
        with self._lock:
            entry = self._jobs.get(job)
            if entry is not None:
                entry.update(stage=stage, done=done, total=total, updated=time.monotonic())

    def finish(self, job: str) -> None:
        with self._lock:
            entry = self._jobs.get(job)
            if entry is not None:
                entry.update(finished=True, stage="done", done=entry["total"], updated=time.monotonic())

    def get(self, job: str) -> dict | None:
        with self._lock:
            self._expire()
            entry = self._jobs.get(job)
            return None if entry is None else {k: v for k, v in entry.items() if k != "updated"}

    def _expire(self) -> None:
        now = time.monotonic()
        for job in [j for j, e in self._jobs.items() if e["finished"] and now - e["updated"] > self.keep_s]:
            del self._jobs[job]
