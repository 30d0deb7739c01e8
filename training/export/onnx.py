"""Export both generators of a checkpoint to verified, self-describing ONNX models.

The AtoB model is the checkpoint's G_A and the BtoA model its G_B (the same mapping as
``cyclegan translate --checkpoint``; file names in ``layout.Export``). Each is one file (no external data),
opset >= 18, with a dynamic batch, height and width; its ``metadata_props`` say how to
feed it (normalisation, layout, size multiple) and where it came from (checkpoint hash).

Verification is part of the export: ``onnx.checker`` with a full check, then ONNX Runtime
against PyTorch on random inputs at several sizes and batch sizes. Everything is written
to a temporary folder first; only a fully verified set replaces ``OUT``, so a model that
fails verification is never written as the output.

Options: a uint8 NHWC variant with the normalisation inside the graph
(``*_uint8.onnx``), an int8 model from ONNX Runtime's static quantisation calibrated
on training images (``*_int8.onnx``), reported with its PSNR against the fp32 model on
test images, and an fp16 model for GPUs (``*_fp16.onnx``, ``fp16.py``) that must reach
``export.fp16_min_psnr_db`` against fp32 on test images. A Triton model repository of the
served models (``triton.py``) is written into the folder too (``export.triton``).

Why opset 18: torch's exporter (``dynamo=True``, the supported path in torch 2.14) emits
opset 18, and the ONNX version converter has no adapter taking ``Pad`` down to 17.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, ExportConfig
from ..errors import UserError
from ..layout import DIRECTIONS, Export
from ..models.registry import generator_spec
from ..utils import atomic_write_json

NORMALISATION = "input and output in [-1, 1]: x = pixel / 127.5 - 1, pixel = (y + 1) * 127.5"
UINT8_NORMALISATION = "uint8 pixels in and out; the [-1, 1] normalisation is inside the graph"


class Uint8Generator(nn.Module):
    """uint8 N x H x W x C in, uint8 N x H x W x C out, the normalisation in the graph."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, x):
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        y = self.generator(x)
        return ((y.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def _channels(net: nn.Module) -> tuple[int, int]:
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return convs[0].in_channels, convs[-1].out_channels


def export_onnx(net: nn.Module, path: Path, example: torch.Tensor, opset: int, multiple: int,
                layout: str = "NCHW") -> None:
    """Trace ``net`` to a single-file ONNX model with a dynamic batch, height and width."""
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter must know the sides are multiples of ``multiple`` (the padding rule
    # guarantees it), otherwise it rejects the strided convolutions' shape arithmetic.
    h = torch.export.Dim("h", min=1, max=65536 // multiple)
    w = torch.export.Dim("w", min=1, max=65536 // multiple)
    dynamic = {"x": {0: batch, h_axis: multiple * h, w_axis: multiple * w}}
    # The exporter reports its progress on stdout and warns about internals; keep the CLI quiet.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (example,), input_names=["input"], output_names=["output"],
                                    opset_version=opset, dynamo=True, dynamic_shapes=dynamic,
                                    external_data=False, verbose=False)
        program.save(str(path), external_data=False)


def finish_model(path: Path, metadata: dict[str, str], layout: str = "NCHW") -> None:
    """Name the dynamic dimensions, record ``metadata`` and save as one file."""
    import onnx

    model = onnx.load(str(path))
    names = ["batch", "channels", "height", "width"] if layout == "NCHW" else ["batch", "height", "width", "channels"]
    for value in list(model.graph.input) + list(model.graph.output):
        for dim, name in zip(value.type.tensor_type.shape.dim, names):
            if name != "channels":
                dim.ClearField("dim_value")
                dim.dim_param = name
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    model.producer_name = "cyclegan export"
    model.doc_string = f"CycleGAN generator {metadata.get('direction', '')}: {metadata.get('normalisation', '')}"
    onnx.save(model, str(path))


def check_model(path: Path) -> int:
    """``onnx.checker`` with a full check (shape inference included); returns the opset."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise UserError(f"{path.name}: onnx.checker rejects the exported model ({str(e).splitlines()[0][:300]})") from None
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise UserError(f"{path.name}: the model uses external data; expected a single file")
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verification_shapes(cfg: ExportConfig, multiple: int) -> list[tuple[int, int, int]]:
    """(batch, height, width) cases: every size x batch, plus one non-square image."""
    sizes = [s + (-s) % multiple for s in cfg.verify_sizes]
    cases = [(b, s, s) for s in sizes for b in cfg.verify_batches]
    cases.append((1, sizes[0], sizes[-1] + multiple))
    return cases


@torch.inference_mode()
def compare_with_torch(path: Path, net: nn.Module, shapes: list[tuple[int, int, int]], channels: int,
                       layout: str, tolerance: float, seed: int = 0) -> dict:
    """Run ORT and PyTorch on the same random inputs; raise if any differs by > tolerance."""
    session = ort_session(path)
    generator = torch.Generator().manual_seed(seed)
    cases, worst = [], 0.0
    for batch, h, w in shapes:
        if layout == "NCHW":
            x = torch.rand(batch, channels, h, w, generator=generator) * 2 - 1
            expected = net(x).numpy()
            got = session.run(None, {"input": x.numpy()})[0]
            diff = float(np.abs(got - expected).max())
        else:
            x = (torch.rand(batch, h, w, channels, generator=generator) * 255).round().to(torch.uint8)
            expected = net(x).numpy()
            got = session.run(None, {"input": x.numpy()})[0]
            diff = float(np.abs(got.astype(np.int16) - expected.astype(np.int16)).max())
        if got.shape != expected.shape:
            raise UserError(f"{path.name}: ONNX Runtime output shape {list(got.shape)} != PyTorch {list(expected.shape)}")
        cases.append({"input_shape": list(x.shape), "max_abs_diff": diff})
        worst = max(worst, diff)
    passed = worst <= tolerance
    report = {"cases": cases, "max_abs_diff": worst, "tolerance": tolerance, "passed": passed}
    if not passed:
        raise UserError(f"{path.name}: verification failed: ONNX Runtime differs from PyTorch by {worst:.3g} "
                        f"(export.tolerance {tolerance:g}); nothing was written")
    return report


# --- int8 ---------------------------------------------------------------------------------

def _load_images(paths: list[Path], channels: int, multiple: int, min_size: int) -> list[np.ndarray]:
    """Images as float 1 x C x H x W in [-1, 1], padded like the serving path."""
    from PIL import Image

    from ..data.transforms import to_tensor
    from ..translate import pad_to_multiple

    arrays = []
    for path in paths:
        try:
            with Image.open(path) as img:
                x = to_tensor(img, channels).unsqueeze(0)
        except Exception as e:
            raise UserError(f"{path}: cannot read image ({e})") from None
        arrays.append(pad_to_multiple(x, multiple, min_size)[0].numpy())
    return arrays


def _domain_images(data: Path, cfg: Config, domain: str, phase: str, limit: int) -> list[Path]:
    """Images of the generator's input domain; ``domain`` is the checkpoint's A or B side."""
    from ..data.dataset import list_images

    folders = {"A": "A", "B": "B"}
    if cfg.data.direction == "BtoA":  # the trainer swapped the folders
        folders = {"A": "B", "B": "A"}
    folder = data / f"{phase}{folders[domain]}"
    images = list_images(folder) if folder.is_dir() else []
    return images[:limit] if limit > 0 else images


def quantize_int8(fp32_path: Path, out_path: Path, calibration: list[np.ndarray]) -> None:
    """Static QDQ quantisation: int8 per-channel weights, uint8 activations.

    Choices, measured on the paper generator (bench/serve_speed.py): only convolutions are
    quantised, and not the first and last ones nor the two transposed ones (together about
    a tenth of the multiply-adds): the 7x7 convolutions touch the image itself and the
    output's error is amplified by nothing after it, so int8 there costs PSNR for little
    speed. Activation ranges come from the 99.99th percentile of the calibration
    histograms rather than min/max, which outliers stretch. Instance norms stay fp32
    (their statistics are per image).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(calibration)

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {"input": item}

    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        convs = [n for n in onnx.load(str(pre)).graph.node if n.op_type in ("Conv", "ConvTranspose")]
        plain = [n for n in convs if n.op_type == "Conv"]
        exclude = {plain[0].name, plain[-1].name} | {n.name for n in convs if n.op_type == "ConvTranspose"}
        # ORT's quantiser logs through the root logger (a warning per skipped bias); mute it here only.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            op_types_to_quantize=["Conv"], nodes_to_exclude=sorted(exclude),
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": 99.99})
        finally:
            root.setLevel(level)
            pre.unlink(missing_ok=True)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two [-1, 1] outputs as the uint8 images a user sees (capped at 100)."""
    to8 = lambda x: np.rint((np.clip(x, -1, 1) + 1) * 127.5)  # noqa: E731
    mse = float(np.mean((to8(a) - to8(b)) ** 2))
    return 100.0 if mse == 0 else min(100.0, 10 * math.log10(255.0 ** 2 / mse))


def int8_report(fp32_path: Path, int8_path: Path, images: list[np.ndarray], goal_db: float = 30.0) -> dict:
    fp32, int8 = ort_session(fp32_path), ort_session(int8_path)
    values = [psnr_uint8(fp32.run(None, {"input": x})[0], int8.run(None, {"input": x})[0]) for x in images]
    return {"psnr_db_mean": float(np.mean(values)), "psnr_db_min": float(np.min(values)),
            "images": len(values), "goal_db": goal_db, "meets_goal": bool(np.mean(values) >= goal_db)}


# --- the whole export ---------------------------------------------------------------------

def _check_data(cfg: ExportConfig, data) -> None:
    if cfg.quantize and data is None:
        raise UserError("export.quantize: needs --data DIR (trainA/trainB calibrate, testA/testB measure PSNR)")
    if cfg.fp16_variant and data is None:
        raise UserError("export.fp16_variant: needs --data DIR (testA/testB measure its PSNR against fp32)")


def export(checkpoint: str, out: str, cfg: ExportConfig, data: str | None = None, progress: bool = True,
           serve: dict | None = None, metrics: str | None = None) -> dict:
    """``cyclegan export``: local or ``s3://`` checkpoint, output folder and data. ``serve`` is
    the validated ``serve:`` section the Triton repository follows (defaults if None); ``metrics``
    an evaluation's metrics file of this checkpoint (each model records its out-of-domain threshold).

    The models are written to a temporary folder that replaces ``out`` only when every
    model passed verification (``storage.local_output``).
    """
    from ..storage import local_input, local_output

    _check_data(cfg, data)
    with contextlib.ExitStack() as stack:
        local_ckpt = stack.enter_context(local_input(checkpoint))
        local_data = stack.enter_context(local_input(data)) if data is not None else None
        folder = stack.enter_context(local_output(out))
        report = export_generators(local_ckpt, folder, cfg, local_data, progress, serve, metrics)
        report["checkpoint"] = str(checkpoint)
        atomic_write_json(Export(folder).verify, report)
    return report


def export_generators(checkpoint: str | Path, folder: str | Path, cfg: ExportConfig, data: str | Path | None = None,
                      progress: bool = True, serve: dict | None = None, metrics: str | None = None) -> dict:
    """Export, verify and (optionally) quantise both generators into the existing ``folder``;
    returns the verification report. A failed verification raises UserError. ``metrics``
    (an evaluation's metrics file) adds each model's out-of-domain threshold."""
    from tqdm import tqdm

    from ..engine.checkpoint import load_generators
    from ..utils import sha256_file
    from .fp16 import PRECISION, convert_to_fp16
    from .triton import TritonSettings, write_repository

    checkpoint, folder = Path(checkpoint), Path(folder)
    files = Export(folder)
    _check_data(cfg, data)
    triton = TritonSettings.from_serve(serve).checked() if cfg.triton else None
    if data is not None and not Path(data).is_dir():
        raise UserError(f"{data}: data folder not found")
    G_A, G_B, train_cfg = load_generators(checkpoint, "cpu")
    sha = sha256_file(checkpoint)
    from .quality import thresholds
    quality = thresholds(metrics, train_cfg.data.direction, sha) if metrics else {}
    generator = generator_spec(train_cfg.model.netG)
    multiple = generator.size_multiple
    shapes = verification_shapes(cfg, multiple)
    report: dict = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha, "opset": cfg.opset,
                    "tolerance": cfg.tolerance, "models": {}}
    steps = [(d, v) for d in DIRECTIONS for v in ["fp32"] + ["uint8"] * cfg.uint8_variant + ["int8"] * cfg.quantize
             + ["fp16"] * cfg.fp16_variant]
    bar = tqdm(steps, desc="export", unit="model", disable=not progress)
    for direction, variant in bar:
        path = files.onnx(direction, variant)
        bar.set_postfix_str(path.name)
        net, domain = (G_A, "A") if direction == "AtoB" else (G_B, "B")
        c_in, c_out = _channels(net)
        started = time.perf_counter()
        metadata = {
            "direction": direction, "variant": variant, "training_size": train_cfg.data.crop_size,
            "size_multiple": multiple, "min_size": generator.min_size,
            "netG": train_cfg.model.netG, "ngf": train_cfg.model.ngf, "channels_in": c_in, "channels_out": c_out,
            "source_checkpoint": checkpoint.name, "source_checkpoint_sha256": sha,
            "padding": "reflect bottom/right to the size multiple (and min_size), crop back",
            **quality.get(direction, {}),
        }
        if variant == "int8":
            calibration = _load_images(_domain_images(Path(data), train_cfg, domain, "train", cfg.calibration_images),
                                       c_in, multiple, generator.min_size)
            if not calibration:
                raise UserError(f"{data}: no training images of domain {domain} to calibrate int8")
            quantize_int8(files.onnx(direction), path, calibration)
            finish_model(path, {**metadata, "layout": "NCHW", "dtype": "float32", "normalisation": NORMALISATION})
            check_model(path)
            test = _domain_images(Path(data), train_cfg, domain, "test", cfg.psnr_images)
            split = "test" if test else "train"
            images = _load_images(test, c_in, multiple, generator.min_size) if test else calibration
            entry = int8_report(files.onnx(direction), path, images)
            entry["psnr_split"] = split
        elif variant == "fp16":
            convert_to_fp16(files.onnx(direction), path)
            finish_model(path, {**metadata, "layout": "NCHW", "dtype": "float32", "precision": PRECISION,
                                "normalisation": NORMALISATION})
            entry = {"opset": check_model(path), **_fp16_report(files.onnx(direction), path, Path(data), train_cfg,
                                                                domain, c_in, generator, cfg)}
        else:
            layout = "NCHW" if variant == "fp32" else "NHWC"
            module = net if variant == "fp32" else Uint8Generator(net).eval()
            # torch.export specialises a dimension whose example value is 1, so the example
            # holds at least two multiples (a U-Net's multiple is its whole input size).
            size = max(shapes[0][1], 2 * multiple)
            example = (torch.zeros(1, c_in, size, size) if layout == "NCHW"
                       else torch.zeros(1, size, size, c_in, dtype=torch.uint8))
            export_onnx(module, path, example, cfg.opset, multiple, layout)
            finish_model(path, {**metadata, "layout": layout,
                                "dtype": "float32" if variant == "fp32" else "uint8",
                                "normalisation": NORMALISATION if variant == "fp32" else UINT8_NORMALISATION}, layout)
            opset = check_model(path)
            # uint8 outputs may differ by one level where a value sits on a rounding edge
            tolerance = cfg.tolerance if variant == "fp32" else 1.0
            entry = compare_with_torch(path, module, shapes, c_in, layout, tolerance)
            entry["opset"] = opset
        entry.update({"direction": direction, "variant": variant, "bytes": path.stat().st_size,
                      "sha256": sha256_file(path), "seconds": round(time.perf_counter() - started, 2)})
        report["models"][path.name] = entry
    if triton is not None:
        report["triton"] = write_repository(folder, triton, cfg.triton_variant)
    return report


def _fp16_report(fp32_path: Path, fp16_path: Path, data: Path, train_cfg: Config, domain: str, channels: int,
                 generator, cfg: ExportConfig) -> dict:
    """PSNR of the fp16 model against fp32 on the domain's test images (train if it has none),
    run on ONNX Runtime's CPU provider; below ``export.fp16_min_psnr_db`` the export fails."""
    test = _domain_images(data, train_cfg, domain, "test", cfg.psnr_images)
    split = "test" if test else "train"
    paths = test or _domain_images(data, train_cfg, domain, "train", cfg.psnr_images)
    if not paths:
        raise UserError(f"{data}: no images of domain {domain} to measure the fp16 model against fp32")
    images = _load_images(paths, channels, generator.size_multiple, generator.min_size)
    entry = int8_report(fp32_path, fp16_path, images, goal_db=cfg.fp16_min_psnr_db)
    entry.update({"psnr_split": split, "provider": "CPUExecutionProvider"})
    if not entry["meets_goal"]:
        raise UserError(f"{fp16_path.name}: fp16 PSNR against fp32 is {entry['psnr_db_mean']:.2f} dB, below "
                        f"export.fp16_min_psnr_db ({cfg.fp16_min_psnr_db:g}); nothing was written")
    return entry
