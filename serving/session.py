"""One exported generator behind an ONNX Runtime session.

The provider comes from configuration. ``onnxruntime-gpu`` lists the CUDA and TensorRT
providers even on machines without a GPU and, when one cannot start, silently runs on
the CPU instead; a server that believes it is on a GPU while it is not is worse than one
that does not start, so a requested GPU provider that is not in use is an error.
TensorRT is only used when asked for: it builds an engine per new input shape.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ServingError

from .images import crop, float_to_uint8, pad_to_multiple, uint8_to_float

log = logging.getLogger("cyclegan.serving")

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_REQUIRED = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}


@dataclass
class GeneratorSession:
    """A loaded generator: ``translate(uint8 images)`` and ``run(raw model input)``."""

    path: Path
    provider: str
    session: object
    metadata: dict[str, str]
    input_name: str
    output_name: str
    dtype: type
    layout: str                      # NCHW (float models) or NHWC (uint8 models)
    channels_in: int
    channels_out: int
    size_multiple: int
    min_size: int
    providers_in_use: list[str] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return self.metadata.get("direction", "")

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (2, 3) if self.layout == "NCHW" else (1, 2)

    def input_shape(self) -> list[int]:
        """The protocol shape of the input, -1 for the dynamic batch, height and width."""
        return [-1, self.channels_in, -1, -1] if self.layout == "NCHW" else [-1, -1, -1, self.channels_in]

    def output_shape(self) -> list[int]:
        return [-1, self.channels_out, -1, -1] if self.layout == "NCHW" else [-1, -1, -1, self.channels_out]

    def run(self, x: np.ndarray) -> np.ndarray:
        """The raw model on a batch whose sides are multiples of ``size_multiple``."""
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def run_any_size(self, x: np.ndarray) -> np.ndarray:
        """The model on a batch of any height and width: pad, run, crop back."""
        padded, size = pad_to_multiple(x, self.size_multiple, self.spatial_axes, self.min_size)
        return crop(self.run(padded), size, self.spatial_axes)

    def to_model_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x C -> this model's input layout and dtype."""
        return uint8_to_float(images) if self.layout == "NCHW" else images

    def to_images(self, y: np.ndarray) -> np.ndarray:
        """This model's output -> uint8 N x H x W x C."""
        return float_to_uint8(y) if self.layout == "NCHW" else y

    def translate(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x C images of one size -> their translations, same shape."""
        return self.to_images(self.run_any_size(self.to_model_input(images)))

    def warm_up(self, size: int | None = None, batch: int = 1) -> None:
        """One run at the training size, so the first request does not pay for allocation."""
        size = size or int(self.metadata.get("training_size", 64))
        size += (-size) % self.size_multiple
        shape = (batch, self.channels_in, size, size) if self.layout == "NCHW" else (batch, size, size, self.channels_in)
        self.run(np.zeros(shape, dtype=self.dtype))


def check_provider(provider: str) -> None:
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise ServingError(f"serve.provider: {provider!r} is not one of {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    if _REQUIRED[provider] not in available:
        raise ServingError(f"serve.provider: {provider} was requested but this ONNX Runtime build lacks "
                        f"{_REQUIRED[provider]} (available: {', '.join(available)}); install onnxruntime-gpu "
                        "or choose provider cpu")


def _preload_cuda_libraries() -> str:
    """Load CUDA/cuDNN from the ``nvidia-*`` pip packages (installed with torch's CUDA build),
    which are not on the loader path; ORT's CUDA provider finds them once loaded. Returns
    what ORT reported while trying (it prints), for the error message if the GPU still fails."""
    import contextlib
    import io

    import onnxruntime as ort

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            ort.preload_dlls()
        except Exception as e:  # no CUDA at all, a wrong version, ...: the provider check reports it
            print(f"preload_dlls: {e}")
    return " ".join(out.getvalue().split())[:500]


def load_session(path: str | Path, provider: str = "cpu", threads: int = 0, warm_up: bool = True) -> GeneratorSession:
    """Open ``path`` on ``provider`` with full graph optimisation; fail loudly if the
    requested provider is not the one running the model."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ServingError(f"{path}: ONNX model not found")
    check_provider(provider)
    notes = ""
    if provider != "cpu":
        notes = _preload_cuda_libraries()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=PROVIDERS[provider])
    except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types
        raise ServingError(f"{path}: ONNX Runtime cannot load this model ({str(e).splitlines()[0][:300]})") from None
    in_use = session.get_providers()
    if _REQUIRED[provider] not in in_use:
        raise ServingError(f"serve.provider: {provider} was requested but ONNX Runtime fell back to "
                        f"{', '.join(in_use)} (no usable GPU or CUDA/cuDNN/TensorRT libraries?); refusing to "
                        "serve on the wrong device" + (f" [library loading: {notes}]" if notes else ""))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
        raise ServingError(f"{path}: expected one 4-D input and one output, as written by cyclegan export")
    dtype = _DTYPES.get(inputs[0].type)
    if dtype is None:
        raise ServingError(f"{path}: unsupported input type {inputs[0].type}")
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    layout = metadata.get("layout", "NCHW" if dtype is np.float32 else "NHWC")
    c_axis = 1 if layout == "NCHW" else 3
    channels_in = inputs[0].shape[c_axis]
    channels_out = outputs[0].shape[c_axis]
    if not isinstance(channels_in, int) or not isinstance(channels_out, int):
        raise ServingError(f"{path}: the channel dimension must be fixed")
    multiple = int(metadata.get("size_multiple", 4))
    generator = GeneratorSession(
        path=path, provider=provider, session=session, metadata=metadata, input_name=inputs[0].name,
        output_name=outputs[0].name, dtype=dtype, layout=layout, channels_in=channels_in,
        channels_out=channels_out, size_multiple=multiple, min_size=int(metadata.get("min_size", 2 * multiple)),
        providers_in_use=in_use)
    if warm_up:
        generator.warm_up()
    log.info("model loaded", extra={"fields": {"path": str(path), "direction": generator.direction,
                                               "provider": provider, "providers_in_use": in_use}})
    return generator
