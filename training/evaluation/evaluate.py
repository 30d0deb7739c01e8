"""``cyclegan evaluate``: measure a checkpoint on the test split and write what people and
the promotion gate read.

Passes, the whole cost (see docs/evaluation.md, "Cost"): per test image and direction one
translation and one reconstruction, plus the other generator's identity pass when
``evaluate.identity`` is on, merged into the reconstruction call; every call is batched and
runs under ``torch.inference_mode``. The feature network sees each image set once: the
translations as they are made, the real test and probe-training sets once ever (their
features are cached on disk by a content hash of the images). Decoding of the next batch
overlaps the current batch's passes.

Outputs (names in ``layout.Evaluation``; written into a temporary folder and swapped into
place by ``storage.local_output``, so a failed run leaves the previous output whole):
  metrics          flat JSON, the documented names of ``specs.METRICS`` (+ ``baseline_*``)
  grids            per direction: input | translation | reconstruction, ``evaluate.grid_images`` rows
  report           one self-contained HTML page: grids, metric table with baselines, loss curves
  plots            the training log's loss curves and the metrics against their baselines (CSV),
                   for ``dvc plots``
  info             inputs, their hashes, the evaluate config, the fingerprint's parts, how many
                   images the feature networks saw, timings

The evaluation fingerprint (``evaluation_fingerprint`` in the metrics, its parts in the info):
one hash over everything that changes a number, so that the promotion gate compares only
like with like. Its parts: the content hashes of the evaluated images (the ``max_images``
subset, not the whole split) and of the probe's training subset; the image side and channels;
each feature network's name, preprocessing version and a hash of its weights; every
``evaluate:`` setting except ``NUMBERLESS_SETTINGS``; whether the synthetic statistic is
measured; a hash of the source of the modules that compute the numbers; the versions of the
numeric libraries; and the device type.

The device type (cpu, cuda) is a part, the device's model and index are not. On CUDA,
convolutions run in TF32 by default (a 10-bit mantissa: ~5e-4 relative error per product, some
thousand times float32's) with other kernels than on CPU; errors of that size in the generators'
outputs can flip a domain-probe verdict near 0.5, and the gate's default margin on domain
success is 0, so CPU and CUDA figures are not compared (the TF32 switches are parts too). Two
machines of one kind differ by float32 round-off, as batch sizes and thread counts do:
``bench/eval_fingerprint.py`` measured at most 3.2e-7 dB of cycle PSNR and 1.9e-7 of KID
between batch 1, 4, 8 and 1 or 2 threads, with domain success unchanged. That is far below any
difference worth a decision, so they are left out rather than forcing a re-evaluation on every
machine; only a margin of exactly 0 (the PSNR default) lets round-off decide an exact tie.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..config import Config
from ..errors import UserError
from ..layout import Evaluation, TrainRun
from ..utils import resolve_device
from . import metrics as M
from .specs import GATE_KEYS, METRICS


# -- inputs -----------------------------------------------------------------------------
def load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image as C x size x size in [-1, 1] (bicubic resize when it is not that size)."""
    from PIL import Image

    from ..data.transforms import to_tensor

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BICUBIC)
            return to_tensor(img, channels)
    except Exception as e:
        raise UserError(f"{path}: cannot read image ({e})") from None


def iter_batches(paths: list[Path], size: int, channels: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of decoded images; the next batch decodes in a thread while this one runs."""
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    if not chunks:
        return

    def load(chunk):
        return torch.stack([load_image(p, size, channels) for p in chunk])

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(load, chunks[0])
        for i in range(len(chunks)):
            batch = future.result()
            if i + 1 < len(chunks):
                future = pool.submit(load, chunks[i + 1])
            yield batch


def test_images(data: Path, max_images: int) -> tuple[list[Path], list[Path]]:
    from ..data.dataset import domain_folders, list_images

    sets = []
    for folder in domain_folders(data, "test"):
        paths = list_images(folder)
        if max_images > 0:
            paths = paths[:max_images]
        if len(paths) < 2:
            raise UserError(f"{folder}: needs at least 2 test images (KID and the Fréchet distance "
                            f"compare sets), found {len(paths)}")
        sets.append(paths)
    return sets[0], sets[1]


def training_subsets(data: Path, user: str, why: str, pick) -> tuple[list[Path], list[Path]]:
    """A subset of each domain's training images: ``pick(n, domain_index)`` chooses the indices
    among ``n``. ``user`` names who needs them in errors (the domain probe, the selection)."""
    from ..data.dataset import domain_folders, list_images

    try:
        folders = domain_folders(data, "train")
    except UserError as e:
        raise UserError(f"{e} ({why})") from None
    sets = []
    for k, folder in enumerate(folders):
        paths = list_images(folder)
        if len(paths) < 2:
            raise UserError(f"{folder}: {user} needs at least 2 training images, found {len(paths)}")
        sets.append([paths[i] for i in pick(len(paths), k)])
    return sets[0], sets[1]


def probe_images(data: Path, cap: int, seed: int) -> tuple[list[Path], list[Path]]:
    from .probe import subset_indices

    return training_subsets(data, "the domain probe", "the domain probe is fitted on the training images",
                            lambda n, k: subset_indices(n, cap, seed + k))


def read_manifest(data: Path) -> dict:
    path = data / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    return manifest if isinstance(manifest, dict) else {}


def source_kind(manifest: dict) -> str:
    """The prepare step's source kind (``synthetic``, ``zip``, ...), '' without a manifest."""
    source = manifest.get("source", "")
    if isinstance(source, dict):
        return str(source.get("kind", ""))
    return str(source)


def test_split_hash(data: Path) -> tuple[str, str]:
    """(hash, how) of the whole test split (not the ``max_images`` subset): the prepare
    step's ``manifest_hash`` (from manifest.json, or from the files when there is none)."""
    how = "manifest" if (data / "manifest.json").is_file() else "files"
    try:
        from ..prepare.manifest import manifest_hash
    except ImportError:   # the prepare module is optional here: hash names and bytes ourselves
        from ..data.dataset import domain_folders, list_images
        from .features import files_digest

        folder_a, folder_b = domain_folders(data, "test")
        return files_digest(list_images(folder_a) + list_images(folder_b)), "files"
    return str(manifest_hash(data)), how


def synthetic_scorer(manifest: dict):
    """The synthetic data set's labelless domain statistic (> 0 = B-like), or None."""
    if source_kind(manifest) != "synthetic":
        return None
    try:
        from ..prepare.synthetic import domain_score
    except ImportError:
        return None
    return domain_score


# -- passes -----------------------------------------------------------------------------
@dataclass
class FeatureSets:
    """Features of the real sets (from the cache or computed in the pass) and translations."""
    real: list = field(default_factory=list)
    fake: list = field(default_factory=list)

    def stack(self, which: str) -> np.ndarray:
        parts = getattr(self, which)
        return torch.cat(parts).double().cpu().numpy() if parts else np.zeros((0, 0))


@dataclass
class Pass:
    """What one direction's pass over a test set gathers, per image."""
    cycle: dict = field(default_factory=lambda: {"l1": [], "psnr": [], "ssim": []})
    # the cycle with the identity map as the return generator: the translation against its input
    no_return: dict = field(default_factory=lambda: {"l1": [], "psnr": [], "ssim": []})
    identity: list = field(default_factory=list)
    effnet: FeatureSets = field(default_factory=FeatureSets)
    inception: FeatureSets = field(default_factory=FeatureSets)
    synth_fake: list = field(default_factory=list)
    synth_real: list = field(default_factory=list)
    grid: list = field(default_factory=list)     # [inputs, translations, reconstructions]


class Timer:
    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    def add(self, name: str, start: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def run_pass(paths: list[Path], size: int, channels: int, forward, backward, identity: bool,
             extractors: dict, need_real: dict, scorer, grid_images: int, batch_size: int,
             device: torch.device, timer: Timer, desc: str, progress: bool) -> Pass:
    """x -> forward(x) -> backward(forward(x)), with backward(x) (identity) merged in."""
    from tqdm import tqdm

    from ..translate import translate_tensor

    out = Pass()
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    for x in iter_batches(paths, size, channels, batch_size):
        x = x.to(device)
        n = x.shape[0]
        t = time.perf_counter()
        fake = translate_tensor(forward, x)
        if identity:   # one call for the reconstruction and the identity: same generator
            rec, idt = translate_tensor(backward, torch.cat([fake, x])).split([n, n])
        else:
            rec, idt = translate_tensor(backward, fake), None
        timer.add("generator", t)

        t = time.perf_counter()
        for name, extractor in extractors.items():
            sets = getattr(out, name)
            sets.fake.append(extractor(fake).float().cpu())
            if need_real[name]:
                sets.real.append(extractor(x).float().cpu())
        timer.add("features", t)

        t = time.perf_counter()
        ux, urec = M.to_unit(x).cpu(), M.to_unit(rec).cpu()
        out.cycle["l1"].append(M.l1(urec, ux))
        out.cycle["psnr"].append(M.psnr(urec, ux))
        out.cycle["ssim"].append(M.ssim(urec, ux))
        if fake.shape == x.shape:   # domains with other channel counts have no such baseline
            ufake = M.to_unit(fake).cpu()
            out.no_return["l1"].append(M.l1(ufake, ux))
            out.no_return["psnr"].append(M.psnr(ufake, ux))
            out.no_return["ssim"].append(M.ssim(ufake, ux))
        if idt is not None:
            out.identity.append(M.l1(M.to_unit(idt).cpu(), ux))
        if scorer is not None:
            out.synth_fake.append(torch.as_tensor(scorer(fake)).float().cpu().reshape(-1))
            out.synth_real.append(torch.as_tensor(scorer(x)).float().cpu().reshape(-1))
        shown = sum(g.shape[0] for g in out.grid[0]) if out.grid else 0
        if shown < grid_images:
            k = min(grid_images - shown, n)
            if not out.grid:
                out.grid = [[], [], []]
            for column, images in zip(out.grid, (x, fake, rec)):
                column.append(images[:k].cpu())
        timer.add("metrics", t)
        bar.update(n)
    bar.close()
    out.grid = [torch.cat(c) for c in out.grid]
    return out


def real_features(name: str, extractor, paths: list[Path], size: int, channels: int, cache, batch_size: int,
                  device: torch.device, timer: Timer, progress: bool, compute: bool = True,
                  digest: str | None = None):
    """(features or None, cache key) of a real image set: from the cache, else computed
    when ``compute`` (else None: the caller computes them in its own pass). ``digest`` is the
    set's ``files_digest`` when the caller has it already."""
    from tqdm import tqdm

    from .features import files_digest

    t = time.perf_counter()
    key = cache.key(features=extractor.version, size=size, channels=channels,
                    images=digest or files_digest(paths))
    cached = cache.get(key)
    timer.add("cache", t)
    if cached is not None and cached.shape[0] == len(paths):
        return cached.astype(np.float64), key
    if not compute:
        return None, key
    t = time.perf_counter()
    parts = []
    for x in tqdm(iter_batches(paths, size, channels, batch_size), total=-(-len(paths) // batch_size),
                  desc=f"features {name}", unit="batch", disable=not progress, dynamic_ncols=True):
        parts.append(extractor(x.to(device)).float().cpu())
    features = torch.cat(parts).numpy()
    cache.put(key, features)
    timer.add("features", t)
    return features.astype(np.float64), key


# -- the fingerprint ----------------------------------------------------------------------
# ``evaluate:`` settings that change no number: how work is batched (float32 round-off only),
# how many pictures the grids show, where cached features live (the cache is keyed by content),
# the device setting (the resolved device type is a part of its own), the Inception path
# (its weights' hash is a part) and how the select step chooses a checkpoint (which generators
# are measured is the challenger itself, not a way of measuring). Every other setting is a
# part, so a new key is covered until someone decides here that it changes nothing.
NUMBERLESS_SETTINGS = frozenset({"batch_size", "grid_images", "cache_dir", "device", "inception_weights",
                                 "select", "select_metric", "select_images"})
# the libraries whose arithmetic or image decoding the numbers depend on
NUMERIC_LIBRARIES = ("torch", "numpy", "scikit-learn", "pillow", "efficientnet-lite-pytorch")


class CountingExtractor:
    """A feature network that counts the images it is shown: the evaluation's record of its
    feature work (``feature_images`` in the info), which tests read instead of timings."""

    def __init__(self, extractor):
        self.extractor, self.images = extractor, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.extractor(x)

    def __getattr__(self, name):
        return getattr(self.extractor, name)


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes, bytes): the identity of its weights
    whatever file they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def code_sha256(synthetic: bool) -> str:
    """sha256 over the source of the modules that compute the numbers. Any edit counts, a
    comment too: a needless re-evaluation costs minutes, a missed one a wrong promotion."""
    from ..data import transforms
    from . import distances, features, metrics, probe

    modules = [sys.modules[__name__], metrics, distances, features, probe, transforms]
    if synthetic:
        from ..prepare import synthetic as synthetic_module

        modules.append(synthetic_module)
    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.__name__.encode() + b"\0" + Path(module.__file__).read_bytes() + b"\0")
    return digest.hexdigest()


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions = {}
    for name in NUMERIC_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_part(device: torch.device) -> dict:
    """The device type; on CUDA also whether TF32 is on, which changes the numbers by itself."""
    part: dict = {"type": device.type}
    if device.type == "cuda":
        part["tf32_conv"] = bool(torch.backends.cudnn.allow_tf32)
        part["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return part


def fingerprint_parts(ecfg, *, images: dict[str, str], size: int, channels: dict[str, int], extractors: dict,
                      device: torch.device, synthetic: bool) -> dict:
    """What the fingerprint covers (see the module's notes), as plain JSON values."""
    settings = {k: v for k, v in ecfg.model_dump().items() if k not in NUMBERLESS_SETTINGS}
    return {
        "images": dict(sorted(images.items())),
        "size": size,
        "channels": dict(sorted(channels.items())),
        "features": {name: {"name": getattr(net, "name", type(net).__name__), "version": getattr(net, "version", ""),
                            "weights_sha256": weights_sha256(net)} for name, net in sorted(extractors.items())},
        "settings": settings,
        "synthetic_statistic": synthetic,
        "code_sha256": code_sha256(synthetic),
        "libraries": library_versions(),
        "device": device_part(device),
    }


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fingerprint_differences(a: dict, b: dict) -> list[str]:
    """The parts in which two fingerprints differ (sorted names)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# -- the whole evaluation ---------------------------------------------------------------
def _mean(values: list[torch.Tensor]) -> float:
    return M.summarise(values)


def _fraction(scores: list[torch.Tensor], positive: bool) -> float:
    s = torch.cat(scores)
    return float(((s > 0) if positive else (s < 0)).double().mean())


def compute(cfg: Config, data: Path, checkpoint: Path, device: torch.device, progress: bool = True):
    """All metrics and pictures of a checkpoint on local ``data``: (metrics, grids, info)."""
    from ..engine.checkpoint import load_generators
    from ..utils import sha256_file
    from .distances import frechet_distance_features, kid
    from .features import FeatureCache, InceptionFeatures, build_extractor, files_digest, inception_path
    from .probe import DomainProbe

    ecfg = cfg.evaluate
    timer = Timer(device)
    start = time.perf_counter()
    paths_a, paths_b = test_images(data, ecfg.max_images)
    train_a, train_b = probe_images(data, ecfg.probe_max_per_domain, ecfg.seed)
    manifest = read_manifest(data)

    t = time.perf_counter()
    G_A, G_B, model_cfg = load_generators(checkpoint, device)
    # metric names follow the data folders: A = testA. A checkpoint trained with
    # data.direction=BtoA has its G_A mapping folder B to folder A, so swap.
    to_b, to_a = (G_A, G_B) if model_cfg.data.direction == "AtoB" else (G_B, G_A)
    nc_a = next(to_b.parameters()).shape[1]
    nc_b = next(to_a.parameters()).shape[1]
    size = ecfg.image_size or model_cfg.data.crop_size
    extractors = {"effnet": CountingExtractor(build_extractor(ecfg.features, device))}
    incep_path = inception_path(ecfg.inception_weights)
    if incep_path is not None:
        extractors["inception"] = CountingExtractor(InceptionFeatures(incep_path).to(device))
    elif ecfg.inception_weights:   # configured but absent: say so, never download
        print(f"warning: evaluate.inception_weights: {ecfg.inception_weights} not found; standard FID skipped",
              file=sys.stderr)
    scorer = synthetic_scorer(manifest)
    digests = {"test_A": files_digest(paths_a), "test_B": files_digest(paths_b),
               "probe_A": files_digest(train_a), "probe_B": files_digest(train_b)}
    parts = fingerprint_parts(ecfg, images=digests, size=size, channels={"A": nc_a, "B": nc_b},
                              extractors={n: e.extractor for n, e in extractors.items()}, device=device,
                              synthetic=scorer is not None)
    timer.add("load", t)
    cache = FeatureCache(ecfg.cache_dir)

    # real test sets: from the cache, or computed inside the passes (decoded only once)
    real, keys = {}, {}
    for name, extractor in extractors.items():
        for domain, paths, nc in (("A", paths_a, nc_a), ("B", paths_b, nc_b)):
            real[name, domain], keys[name, domain] = real_features(
                f"test{domain}", extractor, paths, size, nc, cache, ecfg.batch_size, device, timer, progress,
                compute=False, digest=digests[f"test_{domain}"])

    common = dict(size=size, identity=ecfg.identity, extractors=extractors, scorer=scorer,
                  grid_images=ecfg.grid_images, batch_size=ecfg.batch_size, device=device, timer=timer,
                  progress=progress)
    pass_a = run_pass(paths_a, channels=nc_a, forward=to_b, backward=to_a, desc="evaluate A->B",
                      need_real={n: real[n, "A"] is None for n in extractors}, **common)
    pass_b = run_pass(paths_b, channels=nc_b, forward=to_a, backward=to_b, desc="evaluate B->A",
                      need_real={n: real[n, "B"] is None for n in extractors}, **common)
    for name in extractors:
        for domain, result in (("A", pass_a), ("B", pass_b)):
            if real[name, domain] is None:
                computed = getattr(result, name).stack("real")
                cache.put(keys[name, domain], computed.astype(np.float32))
                real[name, domain] = computed.astype(np.float32).astype(np.float64)

    effnet = extractors["effnet"]
    probe_a, _ = real_features("trainA", effnet, train_a, size, nc_a, cache, ecfg.batch_size, device, timer, progress,
                               digest=digests["probe_A"])
    probe_b, _ = real_features("trainB", effnet, train_b, size, nc_b, cache, ecfg.batch_size, device, timer, progress,
                               digest=digests["probe_B"])

    t = time.perf_counter()
    m: dict = {}
    # Identity maps in both directions would reconstruct perfectly (L1 0, PSNR at the cap), which
    # says nothing. The cycle's baseline keeps the forward generator and makes the return leg the
    # identity map: the translation against its own input. A cycle that beats it has brought the
    # content back from the other domain.
    for domain, result in (("A", pass_a), ("B", pass_b)):
        for metric in ("l1", "psnr", "ssim"):
            m[f"cycle_{metric}_{domain}"] = _mean(result.cycle[metric])
            if result.no_return[metric]:
                m[f"baseline_cycle_{metric}_{domain}"] = _mean(result.no_return[metric])
        # the low end of the in-domain cycle PSNR: serving's out-of-domain threshold
        per_image = torch.cat(result.cycle["psnr"]).double().numpy()
        m[f"ood_cycle_psnr_{domain}"] = float(np.percentile(per_image, ecfg.ood_percentile))
    m["ood_percentile"] = ecfg.ood_percentile
    if ecfg.identity:
        # authors' naming: idt_A is G_A (A->B) on B images, measured in the B pass
        m["identity_l1_A"], m["baseline_identity_l1_A"] = _mean(pass_b.identity), 0.0
        m["identity_l1_B"], m["baseline_identity_l1_B"] = _mean(pass_a.identity), 0.0

    # translations as float32 like the cached real sets, so cache hits and misses agree
    fake = {(n, d): getattr(r, n).stack("fake").astype(np.float32).astype(np.float64)
            for n in extractors for d, r in (("AtoB", pass_a), ("BtoA", pass_b))}
    kid_args = dict(subsets=ecfg.kid_subsets, subset_size=ecfg.kid_subset_size, seed=ecfg.seed)
    for direction, source, target in (("AtoB", "A", "B"), ("BtoA", "B", "A")):
        real_src, real_tgt = real["effnet", source], real["effnet", target]
        m[f"kid_{direction}_mean"], m[f"kid_{direction}_std"] = kid(fake["effnet", direction], real_tgt, **kid_args)
        m[f"baseline_kid_{direction}_mean"], m[f"baseline_kid_{direction}_std"] = kid(real_src, real_tgt, **kid_args)
        m[f"fd_effnet_{direction}"] = frechet_distance_features(fake["effnet", direction], real_tgt)
        m[f"baseline_fd_effnet_{direction}"] = frechet_distance_features(real_src, real_tgt)
        if "inception" in extractors:
            m[f"fid_{direction}"] = frechet_distance_features(fake["inception", direction], real["inception", target])
            m[f"baseline_fid_{direction}"] = frechet_distance_features(real["inception", source],
                                                                       real["inception", target])

    probe = DomainProbe(seed=ecfg.seed).fit(probe_a, probe_b)
    m["domain_success_AtoB"] = probe.fraction_b(fake["effnet", "AtoB"])
    m["domain_success_BtoA"] = probe.fraction_a(fake["effnet", "BtoA"])
    m["probe_floor_AtoB"] = m["baseline_domain_success_AtoB"] = probe.fraction_b(real["effnet", "A"])
    m["probe_floor_BtoA"] = m["baseline_domain_success_BtoA"] = probe.fraction_a(real["effnet", "B"])
    m["probe_ceiling_AtoB"] = probe.fraction_b(real["effnet", "B"])
    m["probe_ceiling_BtoA"] = probe.fraction_a(real["effnet", "A"])
    m["probe_accuracy_test"] = probe.accuracy(real["effnet", "A"], real["effnet", "B"])
    m["probe_accuracy_train"] = probe.accuracy(probe_a, probe_b)

    if scorer is not None:
        m["synthetic_domain_success_AtoB"] = _fraction(pass_a.synth_fake, positive=True)
        m["baseline_synthetic_domain_success_AtoB"] = _fraction(pass_a.synth_real, positive=True)
        m["synthetic_domain_success_BtoA"] = _fraction(pass_b.synth_fake, positive=False)
        m["baseline_synthetic_domain_success_BtoA"] = _fraction(pass_b.synth_real, positive=False)

    m["n_test_A"], m["n_test_B"] = len(paths_a), len(paths_b)
    m["n_probe_train_A"], m["n_probe_train_B"] = len(train_a), len(train_b)
    m["image_size"] = size
    m["test_manifest_sha256"], hash_source = test_split_hash(data)
    m["evaluation_fingerprint"] = fingerprint(parts)
    timer.add("statistics", t)

    for key, value in m.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"metrics: {key} is {value} (degenerate test set or features?)")
    missing = [k for k in GATE_KEYS if k not in m]
    assert not missing, f"gate metrics missing: {missing}"
    unknown = [k for k in m if k.removeprefix("baseline_") not in METRICS]
    assert not unknown, f"undocumented metric names: {unknown}"

    ordered = {k: m[k] for name in METRICS for k in (name, f"baseline_{name}") if k in m}
    grids = {"AtoB": pass_a.grid, "BtoA": pass_b.grid}
    timer.seconds["total"] = time.perf_counter() - start
    info = {
        "checkpoint_sha256": sha256_file(checkpoint),
        "test_manifest_sha256": m["test_manifest_sha256"],
        "test_hash_source": hash_source,
        "data_source": source_kind(manifest),
        "image_size": size,
        "features": ecfg.features,
        "standard_fid": incep_path is not None,
        "generator": f"{model_cfg.model.netG}, ngf {model_cfg.model.ngf}, norm {model_cfg.model.norm}",
        "device": str(device),
        "evaluate_config": cfg.to_dict()["evaluate"],
        "fingerprint_parts": parts,
        "feature_images": {name: extractor.images for name, extractor in extractors.items()},
        "timings_s": {k: round(v, 3) for k, v in timer.seconds.items()},
    }
    return ordered, grids, info


def write_outputs(out: Path, metrics: dict, grids: dict, info: dict, train_log: Path | None,
                  selection: dict | None = None) -> None:
    """Everything into the (temporary) folder ``out``; ``selection``: the select step's scores."""
    from ..data.transforms import save_image
    from .report import grid_tensor, loss_charts, png_bytes, read_train_log, render_html, write_plots

    files = Evaluation(out)
    files.grids.mkdir(parents=True, exist_ok=True)
    pngs = {}
    for direction, columns in grids.items():
        image = grid_tensor(columns)
        save_image(image, files.grid(direction))
        pngs[direction] = png_bytes(image)
    log = read_train_log(train_log)
    write_plots(files, metrics, log)
    files.report_dir.mkdir(parents=True, exist_ok=True)
    shown = {k: info[k] for k in ("checkpoint", "checkpoint_sha256", "checkpoint_epoch", "data",
                                  "test_manifest_sha256", "data_source", "image_size", "generator", "features",
                                  "train_log") if k in info}
    files.report.write_text(render_html(metrics, pngs, loss_charts(log), shown, selection), encoding="utf-8")
    files.info.write_text(json.dumps(info, indent=2) + "\n")
    files.metrics.write_text(json.dumps(metrics, indent=2) + "\n")


def default_train_log(checkpoint: str) -> str:
    """The training log of the run folder the checkpoint sits in (``layout.TrainRun``)."""
    from .. import storage

    if storage.is_remote(checkpoint):
        scheme, bucket, key = storage.split(checkpoint)
        parts = key.split("/")
        return f"{scheme}://{bucket}/" + "/".join(parts[:-2] + [TrainRun.LOG])
    return str(TrainRun(Path(checkpoint).expanduser().parent.parent).log)


def _selection_scores(checkpoint: str, selection: str | None) -> dict | None:
    """The select step's scores: ``selection`` (which must exist), else the file beside the
    checkpoint when it is a selected one (``layout.Selection``), else None."""
    from .. import storage
    from ..layout import Selection
    from .report import read_selection

    if selection is None:
        if storage.is_remote(checkpoint):
            return None
        beside = Selection(Path(checkpoint).expanduser().parent)
        if Path(checkpoint).name != beside.checkpoint.name or not beside.scores.is_file():
            return None
        selection = str(beside.scores)
    elif not storage.exists(selection):
        raise UserError(f"{selection}: selection file not found")
    return read_selection(selection)


def evaluate(cfg: Config, data: str, checkpoint: str, out: str, train_log: str | None = None,
             device: str | None = None, progress: bool = True, selection: str | None = None) -> dict:
    """Evaluate ``checkpoint`` on ``data`` (local or object storage) into ``out``; returns a summary.
    ``selection``: the select step's scores file, shown in the report (default: the one beside
    the checkpoint, if any)."""
    import contextlib

    from .. import storage
    from ..utils import sha256_file

    if not storage.is_remote(checkpoint) and not Path(checkpoint).expanduser().is_file():
        raise UserError(f"{checkpoint}: checkpoint not found")
    if not storage.is_remote(data) and not Path(data).expanduser().is_dir():
        raise UserError(f"{data}: data folder not found")
    explicit_log = train_log is not None
    scores = _selection_scores(checkpoint, selection)
    if scores is not None and not explicit_log and scores.get("train"):
        run = str(scores["train"])   # a selected checkpoint sits outside its run folder
        train_log = storage.join(run, TrainRun.LOG) if storage.is_remote(run) else str(TrainRun(run).log)
    train_log = train_log or default_train_log(checkpoint)
    if explicit_log and not storage.exists(train_log):
        raise UserError(f"{train_log}: training log not found")
    device_ = resolve_device(device or cfg.evaluate.device, "evaluate.device")
    with contextlib.ExitStack() as stack:
        local_data = stack.enter_context(storage.local_input(data))
        local_ckpt = stack.enter_context(storage.local_input(checkpoint))
        local_log = stack.enter_context(storage.local_input(train_log)) if storage.exists(train_log) else None
        if scores is not None and scores.get("checkpoint_sha256") not in (None, sha256_file(local_ckpt)):
            raise UserError(f"{selection or 'the selection file beside the checkpoint'}: describes another "
                            f"checkpoint than {checkpoint} (written by another cyclegan select)")
        metrics, grids, info = compute(cfg, local_data, local_ckpt, device_, progress)
        info = {"checkpoint": str(checkpoint), "data": str(data),
                "train_log": str(train_log) if local_log else "", **info}
        if scores is not None:
            info["checkpoint_epoch"] = scores["selected_epoch"]
            info["selection"] = {k: scores.get(k) for k in ("mode", "selected_epoch", "selected_checkpoint",
                                                            "metric", "score", "kept_epochs", "epochs_trained")}
        with storage.local_output(out) as tmp:
            write_outputs(tmp, metrics, grids, info, local_log, scores)
    return {"out": str(out), "metrics": metrics, "timings_s": info["timings_s"],
            "fingerprint_parts": info["fingerprint_parts"]}
