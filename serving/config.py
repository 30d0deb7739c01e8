"""The ``serve:`` section of ``params.yaml``: ONNX Runtime, batching and HTTP limits.

It lives here, not in the training package, because the server runs without torch and
imports nothing of ``training`` (the serve image has no torch; ``cyclegan serve`` only parses
the command line in the training package and hands over to ``serving.cli``). ``load_serve_config`` validates the section
as ``cyclegan serve`` received it (``--params`` with ``--set serve.KEY=VALUE`` applied): an
unknown key, a wrong type or a bad value is a one-line ``ServingError`` naming the key.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ServingError

CONTENT_TYPES = ("image/png", "image/jpeg", "image/webp")   # what the server decodes


class ServeConfig(BaseModel):
    """``cyclegan serve`` / ``translate --model``: ONNX Runtime, batching, HTTP limits."""
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 inside a container")
    port: int = Field(8080, gt=0)
    provider: Literal["cpu", "cuda", "tensorrt"] = Field(
        "cpu", description="ONNX Runtime execution provider; a requested GPU provider that is missing is an error")
    variant: Literal["fp32", "int8", "uint8", "fp16"] = Field(
        "fp32", description="which exported model to serve; fp16 is for GPUs (export.fp16_variant)")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = the CPUs the process may use "
                         "(affinity and cgroup quota, resolved by the cyclegan command)")
    max_batch_size: int = Field(8, gt=0, description="dynamic batching: most images per model call")
    max_batch_delay_ms: float = Field(5.0, ge=0, description="dynamic batching: longest wait for a batch to fill")
    max_upload_bytes: int = Field(20_000_000, gt=0, description="/v1/translate request body limit")
    max_infer_bytes: int = Field(200_000_000, gt=0, description="/v2/models/*/infer request body limit")
    max_pixels: int = Field(50_000_000, gt=0, description="per image, checked from the header before decoding; "
                            "tiling keeps the network's memory flat, the image buffers cost about 30 bytes a pixel")
    tile_above_pixels: int = Field(1_048_576, gt=0, description="larger images are translated in tiles; the "
                                   "instance-norm statistics come from a copy downscaled to this many pixels")
    tile_size: int = Field(512, gt=0, description="tile side in pixels (rounded up to the generator's size multiple)")
    tile_overlap: int = Field(64, ge=0, description="pixels neighbouring tiles share and blend across; at most "
                              "half of tile_size")
    tile_exact_norms: int = Field(7, ge=0, description="leading instance norms whose statistics are summed exactly "
                                  "over the tiles, one partial pass each; the deeper ones come from the downscaled "
                                  "copy. 7: tiled within 33.8 dB of whole where 3 gave 28.0 dB, at 1.35x the time "
                                  "(bench/RESULTS.md); a large number makes it exact, at ~5x more")
    content_types: list[str] = Field(default_factory=lambda: list(CONTENT_TYPES),
                                     description="accepted upload types")
    model_name: str = Field("cyclegan", description="models are served as <model_name>-AtoB and <model_name>-BtoA")
    graceful_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, finish in-flight requests for this long")
    header_timeout_s: float = Field(10.0, gt=0, description="headers complete within this after connecting (or the "
                                    "last answer), else 408")
    body_timeout_s: float = Field(60.0, gt=0, description="whole body within this after the headers, else 408; raise "
                                  "it for big, slow uploads")
    max_connections: int = Field(256, gt=0, description="open connections at once; one more is answered 503 and closed")
    # GPU provider options (ignored by the cpu provider); /v2/models/{name} and the startup log show those in use.
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "EXHAUSTIVE", description="cuda/tensorrt: how cuDNN picks convolution algorithms: EXHAUSTIVE benchmarks each "
        "new input shape once (best for a few sizes), HEURISTIC skips that (many different sizes)")
    io_binding: bool = Field(True, description="cuda/tensorrt: copy each batch to the GPU once and keep the output "
                             "there until it is read back (ONNX Runtime I/O binding)")
    trt_fp16: bool = Field(False, description="tensorrt: let TensorRT build fp16 kernels (changes numerics)")
    trt_cache_dir: str = Field("~/.cache/cyclegan/tensorrt", description="tensorrt: engine and timing cache folder, so "
                               "a restart loads engines instead of rebuilding them; '' turns caching off")
    trt_opt_side: int = Field(0, ge=0, description="tensorrt: image side the engine is tuned for; 0 = the model's "
                              "training size")
    trt_max_side: int = Field(1024, gt=0, description="tensorrt: largest image side served (the engine's shape "
                              "profile); larger images are refused with 413")

    @model_validator(mode="after")
    def _overlap_fits(self) -> "ServeConfig":
        if 2 * self.tile_overlap > self.tile_size:
            raise ValueError(f"serve.tile_overlap ({self.tile_overlap}) must be at most half of serve.tile_size "
                             f"({self.tile_size})")
        return self

    @field_validator("content_types")
    @classmethod
    def _decodable(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - set(CONTENT_TYPES))
        if unknown or not types:
            raise ValueError(f"{unknown or 'empty'} (the server decodes {', '.join(CONTENT_TYPES)})")
        return types

    @model_validator(mode="after")
    def _profile_order(self):
        if self.trt_opt_side > self.trt_max_side:
            raise ValueError(f"serve.trt_opt_side ({self.trt_opt_side}) is more than serve.trt_max_side "
                             f"({self.trt_max_side})")
        return self


def load_serve_config(section: dict[str, Any] | None, source: str = "params") -> ServeConfig:
    """Validate the raw ``serve:`` section; missing keys keep their defaults."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ServingError(f"{source}: section 'serve' must be a mapping")
    try:
        return ServeConfig.model_validate(section)
    except ValidationError as error:
        e = error.errors(include_url=False)[0]
        if not e["loc"]:   # a check across keys names its keys itself
            raise ServingError(f"{source}: {e['msg'].removeprefix('Value error, ')}") from None
        where = "serve." + ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            raise ServingError(f"{source}: unknown key '{where}'") from None
        shown = "" if e["type"].startswith("value_error") else f", got {e.get('input')!r}"
        raise ServingError(f"{source}: {where}: {e['msg'].removeprefix('Value error, ')}{shown}") from None
