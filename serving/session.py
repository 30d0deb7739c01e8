"""One exported generator behind an ONNX Runtime session.

The provider comes from configuration. ``onnxruntime-gpu`` lists the CUDA and TensorRT
providers even on machines without a GPU and, when one cannot start, silently runs on
the CPU instead; a server that believes it is on a GPU while it is not is worse than one
that does not start, so a requested GPU provider that is not in use is an error.
TensorRT is only used when asked for.

Provider options (``serve:`` keys; ``provider_options`` builds them, and ``/v2/models/{name}``
and the startup log show them):
  * CUDA: ``cudnn_conv_algo_search`` (EXHAUSTIVE benchmarks cuDNN's algorithms once per new
    input shape; HEURISTIC suits traffic of many different sizes).
  * TensorRT: one engine whose shape profile covers every batch and side the server sends
    (min: one image at the model's smallest side; opt: ``max_batch_size`` images at
    ``trt_opt_side``; max: ``max_batch_size`` at ``trt_max_side``), so no request triggers a
    rebuild; larger images are refused before they reach the engine (``size_error``).
    Engines and TensorRT's timing cache are kept in ``trt_cache_dir`` so a restart loads
    them instead of building them again; ``trt_fp16`` lets TensorRT use fp16 kernels.
  * I/O binding (``io_binding``, GPU providers): a batch is copied to the device once and
    the output is read back once, instead of ONNX Runtime staging both per call.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ServeConfig
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
    provider_options: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # as given to ONNX Runtime
    io_binding: bool = False         # run through ONNX Runtime I/O binding on ``binding_device``
    binding_device: str = "cuda"
    max_side: int = 0                # > 0: the largest image side the session accepts (TensorRT's profile)

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
        if self.io_binding:
            return self._run_bound(x)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def _run_bound(self, x: np.ndarray) -> np.ndarray:
        """One copy of the batch to the device, the output allocated there and copied back once."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), self.binding_device, 0)
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, self.binding_device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def size_error(self, height: int, width: int) -> str | None:
        """Why an image of this size cannot be served by this session, or None."""
        if self.max_side and max(height, width) > self.max_side:
            return (f"{height}x{width} has a side above serve.trt_max_side ({self.max_side}), the largest the "
                    "TensorRT engine's shape profile covers")
        return None

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


@dataclass(frozen=True)
class ModelInterface:
    """What the TensorRT shape profile needs to know about a model before a session exists."""
    input_name: str
    channels: int
    layout: str
    size_multiple: int
    min_size: int
    training_size: int

    @classmethod
    def read(cls, path: Path) -> ModelInterface:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise ServingError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
        meta = {p.key: p.value for p in model.metadata_props}
        value = model.graph.input[0]
        layout = meta.get("layout", "NCHW" if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT else "NHWC")
        dims = value.type.tensor_type.shape.dim
        channels = dims[1 if layout == "NCHW" else 3].dim_value
        multiple = int(meta.get("size_multiple", 4))
        return cls(value.name, channels, layout, multiple, int(meta.get("min_size", 2 * multiple)),
                   int(meta.get("training_size", 256)))

    def shape(self, batch: int, side: int) -> str:
        """TensorRT's profile notation, ``input:8x3x256x256``."""
        dims = (batch, self.channels, side, side) if self.layout == "NCHW" else (batch, side, side, self.channels)
        return f"{self.input_name}:{'x'.join(map(str, dims))}"


def _round_up(side: int, multiple: int) -> int:
    return side + (-side) % multiple


def trt_profile(model: ModelInterface, cfg: ServeConfig) -> dict[str, str]:
    """min/opt/max shapes covering every input the server sends: images are padded to the
    model's size multiple and at least its ``min_size``, batches hold up to ``max_batch_size``."""
    low = _round_up(max(model.min_size, 1), model.size_multiple)
    high = max(_round_up(cfg.trt_max_side, model.size_multiple), low)
    opt = min(max(_round_up(cfg.trt_opt_side or model.training_size, model.size_multiple), low), high)
    batch = cfg.max_batch_size
    return {"trt_profile_min_shapes": model.shape(1, low), "trt_profile_opt_shapes": model.shape(batch, opt),
            "trt_profile_max_shapes": model.shape(batch, high)}


def trt_cache(path: Path, cfg: ServeConfig) -> dict[str, str]:
    """Engine and timing cache options. ONNX Runtime names a cached engine after the graph's
    structure, not its weights, so two versions of one architecture would share an engine:
    the prefix (the model file's hash) keeps each version's engines apart. The timing cache
    (kernel timings per layer shape) is valid across versions and shared."""
    if not cfg.trt_cache_dir:
        return {}
    folder = Path(cfg.trt_cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)   # ONNX Runtime creates one level only
    except OSError as e:
        raise ServingError(f"serve.trt_cache_dir: cannot create {folder} ({e.strerror})") from None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(folder),
            "trt_engine_cache_prefix": f"cyclegan_{digest.hexdigest()[:16]}",
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(folder)}


def provider_options(path: Path, provider: str, cfg: ServeConfig) -> list[tuple[str, dict[str, str]]]:
    """``providers=`` for ``onnxruntime.InferenceSession``: each provider with its options, in
    priority order (the CPU provider last, for the few nodes a GPU provider does not take)."""
    if provider not in PROVIDERS:
        raise ServingError(f"serve.provider: {provider!r} is not one of {', '.join(PROVIDERS)}")
    options: dict[str, dict[str, str]] = {
        "CPUExecutionProvider": {},
        "CUDAExecutionProvider": {"cudnn_conv_algo_search": cfg.cudnn_conv_algo_search},
    }
    if provider == "tensorrt":
        options["TensorrtExecutionProvider"] = {"trt_fp16_enable": str(cfg.trt_fp16),
                                                **trt_profile(ModelInterface.read(path), cfg), **trt_cache(path, cfg)}
    return [(name, options[name]) for name in PROVIDERS[provider]]


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


def load_session(path: str | Path, provider: str = "cpu", threads: int = 0, warm_up: bool = True,
                 settings: ServeConfig | None = None) -> GeneratorSession:
    """Open ``path`` on ``provider`` with full graph optimisation and the provider options of
    ``settings`` (the ``serve:`` section; defaults if None); fail loudly if the requested
    provider is not the one running the model."""
    import onnxruntime as ort

    path = Path(path)
    settings = settings or ServeConfig()
    if not path.is_file():
        raise ServingError(f"{path}: ONNX model not found")
    check_provider(provider)
    providers = provider_options(path, provider, settings)
    notes = ""
    if provider != "cpu":
        notes = _preload_cuda_libraries()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
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
        providers_in_use=in_use, provider_options=providers, io_binding=provider != "cpu" and settings.io_binding,
        max_side=settings.trt_max_side if provider == "tensorrt" else 0)
    if warm_up:
        generator.warm_up()
    log.info("model loaded", extra={"fields": {"path": str(path), "direction": generator.direction,
                                               "provider": provider, "providers_in_use": in_use,
                                               "provider_options": dict(providers), "io_binding": generator.io_binding}})
    return generator
