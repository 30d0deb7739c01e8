"""The typed configuration: one pydantic model per ``params.yaml`` section.

The model defaults are the single source of truth and follow the paper and the authors'
code (``train.py --model cycle_gan``). ``params.yaml`` lists every key with a comment;
where it deviates from these defaults (the offline demo profile), it says so.
``cyclegan params --schema`` writes the JSON Schema of the whole file (``params.schema.json``),
which editors use to complete and check it.

``load_config`` reads a YAML document, applies ``--set section.key=value`` overrides and
validates: an unknown key, a wrong type or a bad value is a one-line ``UserError`` that names
the key. Types are strict (``true`` is not a number, ``"3"`` is not an int; an int is a float).

The ``serve:`` section belongs to the server (``serving/config.py``), which must run without
this package; it is kept here as given and validated by ``cyclegan serve``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .errors import UserError
from .evaluation.specs import DEFAULT_GATE, can_gate, gateable
from .models.registry import LOADER_MULTIPLE, generator_spec, known_generators


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class PrepareConfig(Section):
    """How ``cyclegan prepare`` turns a source into trainA/trainB/testA/testB + manifest."""
    source: str = Field("synthetic", description="synthetic | dataset NAME | path/to.zip | folder | s3://bucket/prefix")
    base_url: str = Field("https://efrosgans.eecs.berkeley.edu/cyclegan/datasets",
                          description="where dataset NAMEs download from")
    cache_dir: str = Field("~/.cache/cyclegan/datasets", description="download cache")
    domain_a: str = Field("", description="folder or glob of domain A, for layouts that are not detected")
    domain_b: str = Field("", description="folder or glob of domain B")
    test_a: str = Field("", description="optional test part of A")
    test_b: str = Field("", description="optional test part of B")
    test_fraction: float = Field(0.1, description="share held out for test when the source has no test split")
    resize_to: int = Field(0, description="cache resolution (shorter side); 0 keeps the original size")
    min_size: int = Field(0, description="images with a shorter side below this are handled by small_images")
    small_images: Literal["upscale", "reject"] = "upscale"
    max_pixels: int = Field(89_478_485, description="skip images whose header claims more pixels "
                            "(decompression bombs; Pillow's default)")
    synthetic_size: int = Field(64, description="synthetic image side")
    synthetic_train: int = Field(200, description="synthetic images per domain, train split")
    synthetic_test: int = Field(40, description="synthetic images per domain, test split")
    seed: int = Field(0, description="synthetic data seed")
    jpeg_quality: int = Field(95, description="quality of JPEGs that must be re-encoded (resized, rotated, converted)")
    workers: int = Field(2, description="decode/validate processes; 0 or 1 works in-process")


Preprocess = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]


class DataConfig(Section):
    """Loading and augmentation of the prepared data, named as in the authors' code."""
    load_size: int = Field(286, gt=0, description="resize_and_crop resizes to this square, scale_width* to this width")
    crop_size: int = Field(256, gt=0, description="the random square crop of the *crop modes")
    preprocess: Preprocess = "resize_and_crop"
    no_flip: bool = Field(False, description="true disables the random horizontal flip")
    serial_batches: bool = Field(False, description="take B in order instead of at random")
    max_dataset_size: int = Field(0, description="use only the first N images per domain; 0 means all")
    direction: Literal["AtoB", "BtoA"] = Field("AtoB", description="BtoA swaps the domains")
    input_nc: int = Field(3, gt=0, description="channels of trainA images (1 = grayscale)")
    output_nc: int = Field(3, gt=0, description="channels of trainB images")
    num_workers: int = Field(2, description="data loader worker processes")


class ModelConfig(Section):
    netG: str = Field("resnet_9blocks", description="resnet_<N>blocks | unet_128 | unet_256 (models/registry.py)")
    ngf: int = Field(64, gt=0, description="generator filters in the first conv")
    netD: Literal["basic", "n_layers", "pixel"] = Field(
        "basic", description="basic (70x70 PatchGAN) | n_layers (PatchGAN of n_layers_D) | pixel (1x1 PixelGAN)")
    ndf: int = Field(64, gt=0, description="discriminator filters in the first conv")
    n_layers_D: int = Field(3, ge=1, description="stride-2 layers of netD n_layers")
    norm: Literal["instance", "batch", "none"] = "instance"
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = "normal"
    init_gain: float = Field(0.02, description="std of normal, scale of xavier/orthogonal")
    no_dropout: bool = Field(True, description="the authors' CycleGAN default: no dropout in G")

    @field_validator("netG")
    @classmethod
    def _known_generator(cls, value: str) -> str:
        if generator_spec(value) is None:
            raise ValueError(f"{value!r} is not {known_generators()}")
        return value


class TrainConfig(Section):
    n_epochs: int = Field(100, ge=0, description="epochs at the initial learning rate")
    n_epochs_decay: int = Field(100, ge=0, description="epochs of linear decay to zero")
    epoch_count: int = Field(1, ge=1, description="the authors' 1-based starting epoch (shifts the schedule)")
    max_iters_per_epoch: int = Field(0, ge=0, description="0 means a full epoch, max(|A|, |B|) images")
    batch_size: int = Field(1, gt=0, description="the paper's setting; larger batches change the math")
    lr: float = Field(0.0002, description="Adam learning rate")
    beta1: float = Field(0.5, description="Adam beta1")
    beta2: float = Field(0.999, description="Adam beta2")
    lr_policy: Literal["linear", "step", "plateau", "cosine"] = "linear"
    lr_decay_iters: int = Field(50, ge=1, description="the step policy's period, in epochs")
    gan_mode: Literal["lsgan", "vanilla", "wgangp"] = "lsgan"
    lambda_A: float = Field(10.0, description="cycle weight A -> B -> A")
    lambda_B: float = Field(10.0, description="cycle weight B -> A -> B")
    lambda_identity: float = Field(0.5, description="identity weight, as a fraction of lambda; 0 turns it off")
    lambda_gp: float = Field(10.0, description="WGAN-GP penalty weight")
    pool_size: int = Field(50, ge=0, description="0 turns the history pool off")
    seed: int = 0
    device: str = Field("auto", description="auto (CUDA when present) | cpu | cuda | cuda:N")
    threads: int = Field(0, ge=0, description="CPU compute threads; 0 = the CPUs this process may use "
                         "(affinity and cgroup quota) that other jobs leave free, followed while training")
    deterministic: bool = Field(False, description="deterministic kernels (needed for bit-exact resume)")
    log_every: int = Field(10, gt=0, description="iterations between loss reads (host syncs) and log rows")
    sample_every: int = Field(200, description="iterations between sample grids; 0 turns them off")
    save_latest_freq: int = Field(500, description="iterations between latest checkpoints")
    save_epoch_freq: int = Field(5, description="epochs between kept epoch checkpoints")
    keep_full_state: bool = Field(False, description="kept epoch checkpoints hold the whole training state "
                                  "(resumable, ~4x the size) instead of the generators and config")
    # Speed levers (docs/performance.md says which keep the reference's numerics).
    merge_passes: bool = Field(False, description="batch independent G/D calls: same math, other fp32 sum order")
    fused_adam: bool = Field(True, description="the fused Adam kernel on CUDA (CPU keeps the faster loop)")
    channels_last: bool = Field(False, description="NHWC on CUDA (exact); ignored on CPU")
    compile: bool = Field(False, description="torch.compile the networks")
    cuda_graphs: bool = Field(False, description="torch.compile mode=reduce-overhead (static shapes)")
    amp_bf16: bool = Field(False, description="changes numerics: bf16 autocast")
    allow_tf32: bool = Field(True, description="PyTorch's CUDA default; false gives strict fp32 convolutions")


class EvaluateConfig(Section):
    """``cyclegan evaluate``: metrics on the test split, grids, report (docs/evaluation.md)."""
    max_images: int = Field(0, ge=0, description="per test domain; 0 evaluates the whole test split")
    image_size: int = Field(0, description="side test images are resized to; 0 = the checkpoint's data.crop_size")
    batch_size: int = Field(8, gt=0, description="images per generator / feature-network call")
    grid_images: int = Field(8, gt=0, description="test images per picture grid")
    identity: bool = Field(True, description="also measure G(y) against y")
    features: Literal["effnet_lite0"] = Field("effnet_lite0", description="feature network for KID, FD and the probe")
    cache_dir: str = Field("~/.cache/cyclegan/features", description="features of real image sets; '' turns "
                           "caching off")
    kid_subsets: int = Field(50, gt=0, description="random subsets KID is averaged over")
    kid_subset_size: int = Field(100, ge=2, description="images per KID subset (shrinks to the smaller set)")
    probe_max_per_domain: int = Field(500, ge=0, description="cap on training images per domain for the probe")
    inception_weights: str = Field("", description="local TorchScript Inception for standard FID; '' skips it")
    device: str = Field("auto", description="auto (CUDA when present) | cpu | cuda | cuda:N")
    threads: int = Field(0, ge=0, description="CPU compute threads; 0 = the CPUs this process may use "
                         "(affinity and cgroup quota)")
    seed: int = Field(0, description="KID subsets, the probe's training subset and the selection's validation subset")
    # Which kept epoch checkpoint the pipeline evaluates, exports and registers (evaluation/select.py).
    select: Literal["best", "latest"] = Field(
        "best", description="best: the kept epoch checkpoint that scores best on the validation subset | "
        "latest: the run's last state")
    select_metric: Literal["kid", "domain_success"] = Field(
        "kid", description="what ranks epochs: kid (mean of both directions, lower is better) | domain_success "
        "(mean of both directions, higher is better; ties go to the lower KID)")
    select_images: int = Field(200, ge=2, description="training images per domain translated to score each epoch "
                               "(a seeded subset, the same for every epoch)")
    ood_percentile: float = Field(5.0, ge=0, le=100, description="percentile of per-image cycle PSNR on the test "
                                  "split recorded as the out-of-domain threshold (ood_cycle_psnr_A/B)")

    @field_validator("image_size")
    @classmethod
    def _ssim_window(cls, value: int) -> int:
        if value != 0 and value < 11:
            raise ValueError("must be 0 (the checkpoint's crop size) or at least 11 (the SSIM window)")
        return value


class ExportConfig(Section):
    """``cyclegan export``: ONNX models, their verification, optional uint8/int8 variants."""
    opset: int = Field(18, ge=18, description=">= 18: torch's exporter emits 18 and cannot lower Pad to 17")
    uint8_variant: bool = Field(False, description="also export a uint8 NHWC model with normalisation inside")
    verify_sizes: list[int] = Field(default_factory=lambda: [32, 64], min_length=1,
                                    description="image sides checked against PyTorch")
    verify_batches: list[int] = Field(default_factory=lambda: [1, 2], min_length=1,
                                      description="batch sizes checked against PyTorch")
    tolerance: float = Field(0.0001, ge=0, description="max abs difference ORT vs PyTorch (fp32)")
    quantize: bool = Field(False, description="also build an int8 model for CPU serving")
    calibration_images: int = Field(32, ge=0, description="training images per domain that calibrate int8 (0: all)")
    psnr_images: int = Field(32, ge=0, description="test images per domain for the int8 and fp16 PSNR reports "
                             "(0: all)")
    fp16_variant: bool = Field(False, description="also export an fp16 model for GPUs (inputs and outputs stay "
                               "float32); needs export --data: its PSNR against fp32 is measured on test images")
    fp16_min_psnr_db: float = Field(40.0, ge=0, description="the fp16 model's mean PSNR against fp32 must reach this, "
                                    "else the export fails")
    triton: bool = Field(True, description="also write a Triton model repository (triton/ in the export folder) "
                         "with the names, batching and GPU settings of the serve: section")
    triton_variant: Literal["fp32", "fp16", "uint8"] = Field(
        "fp32", description="the exported model the Triton repository serves (fp16 and uint8 need their variant)")

    @field_validator("verify_sizes", "verify_batches")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if min(values) <= 0:
            raise ValueError("need at least one value, all positive")
        return values

    @field_validator("triton_variant")
    @classmethod
    def _exported(cls, value: str, info: ValidationInfo) -> str:
        switch = {"fp16": "fp16_variant", "uint8": "uint8_variant"}.get(value)
        if switch is not None and not info.data.get(switch, False):
            raise ValueError(f"{value} needs export.{switch}: true (the Triton repository serves an exported model)")
        return value


class RegisterConfig(Section):
    """MLflow tracking, registration and the promotion gate (``cyclegan register``)."""
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLFLOW_TRACKING_URI overrides")
    artifact_location: str = Field("", description="artifact root of a new experiment (e.g. s3://bucket/mlflow)")
    experiment: str = "cyclegan"
    model_name: str = Field("cyclegan", description="registered model (one version holds both generators)")
    # Which way each metric is better, and which margin below applies, is in evaluation/specs.py.
    gate_metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_GATE),
                                    description="metrics the promotion gate compares")
    kid_margin: float = Field(0.002, description="challenger KID may exceed the champion's by at most this")
    psnr_margin: float = Field(0.0, description="challenger cycle PSNR may trail the champion's by at most this (dB)")
    success_margin: float = Field(0.0, description="challenger domain success may trail by at most this")
    min_domain_success: float = Field(0.0, description="absolute floor for the gate's domain success metrics")
    dataset_license: str = Field("synthetic data generated by cyclegan prepare (no licence restrictions)",
                                 description="lineage tag on runs and versions")
    live_metrics: bool = Field(True, description="train --track: log losses, lr, it/s and sample grids to the run "
                                                 "while training (from a background thread)")
    live_flush_s: float = Field(30.0, ge=0, description="at the end of training, wait at most this long for the live "
                                                        "logger to deliver what it holds")
    system_metrics_interval_s: float = Field(10.0, ge=0, description="train --track: MLflow's system metrics (CPU, "
                                                                     "memory, disk, network, GPU) every this many "
                                                                     "seconds; 0 = off")

    @field_validator("gate_metrics")
    @classmethod
    def _gateable(cls, names: list[str]) -> list[str]:
        for name in names:
            if not can_gate(name):
                raise ValueError(f"{name!r} has no gate rule (gateable: {', '.join(gateable())})")
        return names


# The section is called `register` in params.yaml; the name only hides ABCMeta.register, which
# nothing calls on a config, so pydantic's warning about it is silenced here.
warnings.filterwarnings("ignore", message='Field name "register" in "Config" shadows', category=UserWarning)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    register: RegisterConfig = Field(default_factory=RegisterConfig)
    serve: dict[str, Any] = Field(default_factory=dict,
                                  description="the server's section, validated by serving/config.py")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return self.model_dump()


SECTIONS = [name for name in Config.model_fields]


# -- loading ----------------------------------------------------------------------------------

def _one_line(error: ValidationError, source: str) -> UserError:
    """The first problem pydantic found, as ``SOURCE: section.key: what is wrong``."""
    e = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in e["loc"])
    if e["type"] == "extra_forbidden":
        if len(e["loc"]) == 1:
            return UserError(f"{source}: unknown section '{where}' (known: {', '.join(SECTIONS)})")
        return UserError(f"{source}: unknown key '{where}'")
    message = e["msg"].removeprefix("Value error, ")
    if e["type"] in ("model_type", "dict_type") and len(e["loc"]) == 1:
        return UserError(f"{source}: section '{where}' must be a mapping")
    shown = "" if e["type"].startswith("value_error") else f", got {e.get('input')!r}"
    return UserError(f"{source}: {where}: {message}{shown}")


def config_from_dict(raw: dict[str, Any] | None, source: str = "params") -> Config:
    """Build a validated Config from nested dicts; missing keys keep their defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    raw = {k: v for k, v in raw.items() if v is not None}   # an empty section keeps its defaults
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise _one_line(e, source) from None
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


def merge(base: dict, extra: dict) -> dict:
    """``extra``'s sections laid over ``base``'s, key by key (neither is changed)."""
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


def load_document(params: str | Path | None = "params.yaml", overrides: list[str] | None = None,
                  required: bool = False) -> tuple[dict, str]:
    """(raw params, where they came from): the params file (if present, or if ``required``)
    with the ``--set`` overrides laid over it, not yet validated."""
    raw: dict = {}
    source = "defaults"
    if params is not None and (required or Path(params).exists()):
        raw = read_params(params)
        source = str(params)
    if overrides:
        raw = merge(raw, parse_overrides(overrides))
        source = f"{source} + --set"
    return raw, source


def load_config(params: str | Path | None = "params.yaml", overrides: list[str] | None = None,
                required: bool = False) -> Config:
    """Defaults <- params file (if present, or if ``required``) <- ``--set`` overrides."""
    raw, source = load_document(params, overrides, required)
    return config_from_dict(raw, source)


# -- checks across keys ------------------------------------------------------------------------

def validate(cfg: Config) -> None:
    """Cross-field checks that one key's type and range cannot express."""
    data, model = cfg.data, cfg.model
    if data.crop_size > data.load_size and data.preprocess in ("resize_and_crop", "scale_width_and_crop"):
        raise UserError(f"data.crop_size ({data.crop_size}) must not exceed data.load_size ({data.load_size})")
    multiple = generator_spec(model.netG).size_multiple
    # the loader itself rounds sides to LOADER_MULTIPLE; a generator needing more (a U-Net)
    # needs crops that already fit it
    if LOADER_MULTIPLE % multiple and data.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop") \
            and data.crop_size % multiple:
        raise UserError(f"data.crop_size: {model.netG} needs sides that are multiples of {multiple}, so the crop "
                        f"must be a multiple of {multiple}, got {data.crop_size}")
    if cfg.train.lambda_identity > 0 and data.input_nc != data.output_nc:
        raise UserError("train.lambda_identity: the identity loss needs data.input_nc == data.output_nc")
