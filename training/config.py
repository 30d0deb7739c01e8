"""The typed configuration: one dataclass per ``params.yaml`` section.

The dataclass defaults are the single source of truth and follow the paper and the
authors' code (``train.py --model cycle_gan``). ``params.yaml`` lists every key with a
comment; where it deviates from these defaults (the offline demo profile), it says so.

``load_config`` reads a YAML document, applies ``--set section.key=value`` overrides and
validates types: an unknown key or a wrong type is a ``UserError`` naming the key.
PyYAML is imported lazily so ``training`` imports with torch and numpy alone.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError


@dataclass
class PrepareConfig:
    """How ``cyclegan prepare`` turns a source into trainA/trainB/testA/testB + manifest."""
    source: str = "synthetic"          # synthetic | NAME | path/to.zip | path/to/folder | s3://bucket/prefix
    base_url: str = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
    cache_dir: str = "~/.cache/cyclegan/datasets"
    domain_a: str = ""                 # folder or glob for domain A (any-layout sources)
    domain_b: str = ""
    test_a: str = ""
    test_b: str = ""
    test_fraction: float = 0.1         # used only when the source has no test split
    resize_to: int = 0                 # cache resolution (shorter side); 0 keeps the original size
    min_size: int = 0                  # images smaller than this (shorter side) are handled by small_images
    small_images: str = "upscale"      # upscale | reject
    max_pixels: int = 89_478_485       # header-declared pixel limit (decompression bombs), Pillow's default
    synthetic_size: int = 64           # side of the synthetic images
    synthetic_train: int = 200         # images per domain in the synthetic train split
    synthetic_test: int = 40           # images per domain in the synthetic test split
    seed: int = 0
    jpeg_quality: int = 95             # for JPEGs that must be re-encoded (resized, rotated, converted)
    workers: int = 2                   # decode/validate processes; 0 or 1 works in-process


@dataclass
class DataConfig:
    """Loading and augmentation of the prepared data, named as in the authors' code."""
    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"   # resize_and_crop | crop | scale_width | scale_width_and_crop | none
    no_flip: bool = False
    serial_batches: bool = False       # take B in order instead of at random (tests)
    max_dataset_size: int = 0          # 0 means no limit
    direction: str = "AtoB"            # AtoB | BtoA: BtoA swaps the domains
    input_nc: int = 3
    output_nc: int = 3
    num_workers: int = 2


@dataclass
class ModelConfig:
    netG: str = "resnet_9blocks"       # resnet_<N>blocks | unet_128 | unet_256
    ngf: int = 64
    netD: str = "basic"                # basic | n_layers | pixel
    ndf: int = 64
    n_layers_D: int = 3
    norm: str = "instance"             # instance | batch | none
    init_type: str = "normal"          # normal | xavier | kaiming | orthogonal
    init_gain: float = 0.02
    no_dropout: bool = True            # the authors' CycleGAN default: no dropout in G


@dataclass
class TrainConfig:
    n_epochs: int = 100                # epochs at the initial learning rate
    n_epochs_decay: int = 100          # epochs of linear decay to zero
    epoch_count: int = 1               # the authors' 1-based starting epoch (shifts the schedule)
    max_iters_per_epoch: int = 0       # 0 means a full epoch, max(|A|, |B|) images
    batch_size: int = 1
    lr: float = 0.0002
    beta1: float = 0.5
    beta2: float = 0.999
    lr_policy: str = "linear"          # linear | step | plateau | cosine
    lr_decay_iters: int = 50           # the step policy's period, in epochs
    gan_mode: str = "lsgan"            # lsgan | vanilla | wgangp
    lambda_A: float = 10.0             # cycle weight A -> B -> A
    lambda_B: float = 10.0             # cycle weight B -> A -> B
    lambda_identity: float = 0.5       # identity weight, as a fraction of lambda; 0 turns it off
    lambda_gp: float = 10.0            # WGAN-GP penalty weight
    pool_size: int = 50                # 0 turns the history pool off
    seed: int = 0
    device: str = "auto"               # auto (CUDA when present) | cpu | cuda | cuda:N
    deterministic: bool = False        # deterministic kernels (needed for bit-exact resume)
    log_every: int = 10                # iterations between loss reads (host syncs) and log rows
    sample_every: int = 200            # iterations between sample grids; 0 turns them off
    save_latest_freq: int = 500        # iterations between latest.pt checkpoints
    save_epoch_freq: int = 5           # epochs between kept epoch_<N>.pt checkpoints
    # Speed levers (see README "Fast training" for which keep the reference's numerics).
    merge_passes: bool = False         # batch independent G/D calls: same math, other fp32 sum order
    fused_adam: bool = True            # the fused Adam kernel on CUDA (CPU keeps the faster loop)
    channels_last: bool = False        # exact on GPU; on CPU only used at batch >= 2
    compile: bool = False              # torch.compile the networks
    cuda_graphs: bool = False          # torch.compile mode="reduce-overhead" (static shapes)
    amp_bf16: bool = False             # changes numerics: bf16 autocast
    allow_tf32: bool = True            # PyTorch's CUDA default; false gives strict fp32 convolutions


@dataclass
class EvaluateConfig:
    """``cyclegan evaluate``: metrics on the test split, grids, report (README "Evaluation")."""
    max_images: int = 0                # per test domain; 0 evaluates the whole test split
    image_size: int = 0                # side test images are resized to; 0 = the checkpoint's data.crop_size
    batch_size: int = 8                # images per generator / feature-network call
    grid_images: int = 8               # test images per picture grid
    identity: bool = True              # also measure G(y) against y
    features: str = "effnet_lite0"     # feature network for KID, Frechet distance and the probe
    cache_dir: str = "~/.cache/cyclegan/features"   # features of real image sets; "" turns caching off
    kid_subsets: int = 50
    kid_subset_size: int = 100
    probe_max_per_domain: int = 500    # cap on training images per domain for the linear probe
    inception_weights: str = ""        # local TorchScript Inception (inception-2015-12-05.pt) for FID; "" skips it
    device: str = "auto"               # auto (CUDA when present) | cpu | cuda | cuda:N
    seed: int = 0


@dataclass
class ExportConfig:
    """``cyclegan export``: ONNX models, their verification, optional uint8/int8 variants."""
    opset: int = 18                    # >= 18: torch's exporter emits 18 and cannot lower Pad to 17
    uint8_variant: bool = False        # also export a uint8 NHWC model with normalisation inside
    verify_sizes: list[int] = field(default_factory=lambda: [32, 64])
    verify_batches: list[int] = field(default_factory=lambda: [1, 2])
    tolerance: float = 0.0001          # max abs difference ORT vs PyTorch (fp32)
    quantize: bool = False             # also build an int8 model for CPU serving
    calibration_images: int = 32       # training images per domain that calibrate int8 (0: all)
    psnr_images: int = 32              # test images per domain for the int8 PSNR report (0: all)


@dataclass
class RegisterConfig:
    """MLflow tracking, registration and the promotion gate (``cyclegan register``)."""
    tracking_uri: str = "sqlite:///mlflow.db"   # MLFLOW_TRACKING_URI overrides
    artifact_location: str = ""        # artifact root of a new experiment (e.g. s3://bucket/mlflow); "" = store default
    experiment: str = "cyclegan"
    model_name: str = "cyclegan"
    # The gate: each metric's family sets its direction and margin (kid_* lower is better;
    # cycle_psnr_* and *domain_success_* higher is better).
    gate_metrics: list[str] = field(default_factory=lambda: [
        "kid_AtoB_mean", "kid_BtoA_mean", "cycle_psnr_A", "cycle_psnr_B", "domain_success_AtoB", "domain_success_BtoA"])
    kid_margin: float = 0.002          # challenger KID may exceed the champion's by at most this
    psnr_margin: float = 0.0           # challenger cycle PSNR may trail the champion's by at most this (dB)
    success_margin: float = 0.0        # challenger domain success may trail by at most this
    min_domain_success: float = 0.0    # absolute floor for the gate's domain success metrics
    dataset_license: str = "synthetic data generated by cyclegan prepare (no licence restrictions)"


@dataclass
class ServeConfig:
    """``cyclegan serve`` / ``translate --model``: ONNX Runtime, batching, HTTP limits."""
    host: str = "127.0.0.1"
    port: int = 8080
    provider: str = "cpu"              # cpu | cuda | tensorrt; a missing GPU provider is an error
    variant: str = "fp32"              # fp32 | int8 | uint8: which exported file to load
    threads: int = 0                   # ORT intra-op threads; 0 = one per physical core
    max_batch_size: int = 8            # dynamic batching: most images per model call
    max_batch_delay_ms: float = 5.0    # dynamic batching: longest wait for a batch to fill
    max_upload_bytes: int = 20_000_000     # /v1/translate body limit
    max_infer_bytes: int = 200_000_000     # /v2/.../infer body limit
    max_pixels: int = 16_777_216       # per image, read from the header before decoding
    content_types: list[str] = field(default_factory=lambda: ["image/png", "image/jpeg", "image/webp"])
    model_name: str = "cyclegan"       # served as <model_name>-AtoB and <model_name>-BtoA
    graceful_timeout_s: float = 30.0   # on SIGTERM: stop accepting, finish requests for this long
    header_timeout_s: float = 10.0     # a request's headers must be complete this long after it starts, else 408
    body_timeout_s: float = 60.0       # its whole body must arrive this long after its headers, else 408
    max_connections: int = 256         # open connections; one more is answered 503 and closed at once


@dataclass
class Config:
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise a UserError naming ``where``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            if option is type(None) and value is None:
                return None
            try:
                return _check_type(value, option, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0])
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"unsupported config type {annotation} at {where}")
    raise UserError(f"{where}: expected {annotation.__name__}, got {value!r}")


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_from_dict(raw: dict[str, Any], source: str = "params") -> Config:
    """Build a validated Config from nested dicts; missing keys keep their defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    sections = _section_types(Config)
    cfg = Config()
    for name, values in raw.items():
        if name not in sections:
            raise UserError(f"{source}: unknown section '{name}' (known: {', '.join(sections)})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{source}: section '{name}' must be a mapping")
        section_cls = sections[name]
        hints = _section_types(section_cls)
        current = getattr(cfg, name)
        for key, value in values.items():
            if key not in hints:
                raise UserError(f"{source}: unknown key '{name}.{key}'")
            setattr(current, key, _check_type(value, hints[key], f"{source}: {name}.{key}"))
    validate(cfg)
    return cfg


def parse_overrides(overrides: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["train.lr=0.001", "data.no_flip=true"]`` -> nested dict, values parsed as YAML."""
    import yaml

    nested: dict[str, dict[str, Any]] = {}
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected section.key=value")
        dotted, text = item.split("=", 1)
        if dotted.count(".") != 1:
            raise UserError(f"--set {item!r}: the key must be section.key, got '{dotted}'")
        section, key = dotted.split(".")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        nested.setdefault(section, {})[key] = value
    return nested


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        if isinstance(out.get(section), dict) and isinstance(values, dict):
            out[section].update(values)
        else:
            out[section] = values
    return out


def read_params(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: params file not found") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def load_config(params: str | Path | None = "params.yaml", overrides: list[str] | None = None,
                required: bool = False) -> Config:
    """Defaults <- params file (if present, or if ``required``) <- ``--set`` overrides."""
    raw: dict = {}
    source = "defaults"
    if params is not None and (required or Path(params).exists()):
        raw = read_params(params)
        source = str(params)
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
        source = f"{source} + --set"
    return config_from_dict(raw, source)


CHOICES = {
    ("data", "preprocess"): ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"),
    ("data", "direction"): ("AtoB", "BtoA"),
    ("model", "norm"): ("instance", "batch", "none"),
    ("model", "netD"): ("basic", "n_layers", "pixel"),
    ("model", "init_type"): ("normal", "xavier", "kaiming", "orthogonal"),
    ("train", "gan_mode"): ("lsgan", "vanilla", "wgangp"),
    ("train", "lr_policy"): ("linear", "step", "plateau", "cosine"),
    ("prepare", "small_images"): ("upscale", "reject"),
    ("serve", "provider"): ("cpu", "cuda", "tensorrt"),
    ("serve", "variant"): ("fp32", "int8", "uint8"),
    ("evaluate", "features"): ("effnet_lite0",),
}

POSITIVE = [("data", "load_size"), ("data", "crop_size"), ("data", "input_nc"), ("data", "output_nc"),
            ("model", "ngf"), ("model", "ndf"), ("train", "batch_size"), ("train", "log_every")]


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    import re

    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise UserError(f"{section}.{key}: {value!r} is not one of {', '.join(allowed)}")
    for section, key in POSITIVE:
        if getattr(getattr(cfg, section), key) <= 0:
            raise UserError(f"{section}.{key}: must be positive")
    if not (re.fullmatch(r"resnet_\d+blocks", cfg.model.netG) or cfg.model.netG in ("unet_128", "unet_256")):
        raise UserError(f"model.netG: {cfg.model.netG!r} is not resnet_<N>blocks, unet_128 or unet_256")
    if cfg.data.crop_size > cfg.data.load_size and cfg.data.preprocess in ("resize_and_crop", "scale_width_and_crop"):
        raise UserError(f"data.crop_size ({cfg.data.crop_size}) must not exceed data.load_size ({cfg.data.load_size})")
    for key in ("n_epochs", "n_epochs_decay", "pool_size", "max_iters_per_epoch"):
        if getattr(cfg.train, key) < 0:
            raise UserError(f"train.{key}: must not be negative")
    for name in cfg.register.gate_metrics:
        if not (name.startswith(("kid_", "cycle_psnr_")) or "domain_success_" in name):
            raise UserError(f"register.gate_metrics: {name!r} has no gate rule "
                            "(use kid_*, cycle_psnr_* or *domain_success_* metrics)")
    for key in ("batch_size", "grid_images", "kid_subsets"):
        if getattr(cfg.evaluate, key) <= 0:
            raise UserError(f"evaluate.{key}: must be positive")
    for key in ("max_images", "probe_max_per_domain"):
        if getattr(cfg.evaluate, key) < 0:
            raise UserError(f"evaluate.{key}: must not be negative")
    if cfg.evaluate.kid_subset_size < 2:
        raise UserError("evaluate.kid_subset_size: must be at least 2")
    if cfg.evaluate.image_size != 0 and cfg.evaluate.image_size < 11:
        raise UserError("evaluate.image_size: must be 0 (the checkpoint's crop size) or at least 11 (the SSIM window)")
    _validate_export_serve(cfg)
    _validate_options(cfg)
    if cfg.train.lambda_identity > 0 and cfg.data.input_nc != cfg.data.output_nc:
        raise UserError("train.lambda_identity: the identity loss needs data.input_nc == data.output_nc")


def _validate_options(cfg: Config) -> None:
    """The options taken over from the authors' code (U-Net sizes, schedule periods)."""
    if cfg.train.epoch_count < 1:
        raise UserError("train.epoch_count: must be at least 1 (the authors' epochs count from 1)")
    if cfg.train.lr_decay_iters < 1:
        raise UserError("train.lr_decay_iters: must be at least 1 (the step policy's period, in epochs)")
    if cfg.model.n_layers_D < 1:
        raise UserError("model.n_layers_D: must be at least 1")
    if cfg.model.netG in ("unet_128", "unet_256") and cfg.data.preprocess in (
            "resize_and_crop", "crop", "scale_width_and_crop"):
        multiple = 128 if cfg.model.netG == "unet_128" else 256
        if cfg.data.crop_size % multiple:
            raise UserError(f"data.crop_size: {cfg.model.netG} halves the image {multiple.bit_length() - 1} "
                            f"times, so the crop must be a multiple of {multiple}, got {cfg.data.crop_size}")


def _validate_export_serve(cfg: Config) -> None:
    if cfg.export.opset < 18:
        raise UserError(f"export.opset: {cfg.export.opset} is below 18 (torch's exporter emits opset 18)")
    if not cfg.export.verify_sizes or not cfg.export.verify_batches \
            or min(cfg.export.verify_sizes + cfg.export.verify_batches) <= 0:
        raise UserError("export.verify_sizes, export.verify_batches: need at least one value each, all positive")
    for key in ("tolerance", "calibration_images", "psnr_images"):
        if getattr(cfg.export, key) < 0:
            raise UserError(f"export.{key}: must not be negative")
    for key in ("port", "max_batch_size", "max_upload_bytes", "max_infer_bytes", "max_pixels", "header_timeout_s",
                "body_timeout_s", "max_connections"):
        if getattr(cfg.serve, key) <= 0:
            raise UserError(f"serve.{key}: must be positive")
    for key in ("threads", "max_batch_delay_ms", "graceful_timeout_s"):
        if getattr(cfg.serve, key) < 0:
            raise UserError(f"serve.{key}: must not be negative")
    unknown = sorted(set(cfg.serve.content_types) - {"image/png", "image/jpeg", "image/webp"})
    if unknown or not cfg.serve.content_types:
        raise UserError(f"serve.content_types: {unknown or 'empty'} (the server decodes image/png, image/jpeg, image/webp)")
