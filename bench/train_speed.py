"""Training speed: the project's iteration, lever by lever, against the authors' step.

Both run in this one process, on the same device, image size and batch, on random
images in [-1, 1]; the reference step is loaded by path from
``../shared/bench/reference_cyclegan.py``. Prints it/s, the ratio to the reference and
peak GPU memory (CUDA only). Needs torch and numpy only, so it runs on bare GPU machines.

    python bench/train_speed.py --device cpu --size 128 --iters 3 --warmup 1
    python bench/train_speed.py --device cuda --size 256 --iters 50 --warmup 15 \\
        --configs plain,fused,merge+fused,merge+fused+cl,compile-graphs

Configurations (comma-separated with --configs):
  plain           the project's step with every lever off (the authors' call order)
  fused           + foreach (CPU) / fused (CUDA) Adam                     [exact]
  merge+fused     + independent G/D calls batched into one                [same math, other fp32 sum order]
  merge+fused+cl  + channels_last (CUDA only)                             [exact on GPU]
  compile         + torch.compile                                          
  compile-graphs  + torch.compile(mode="reduce-overhead"): CUDA graphs
  bf16            merge+fused+cl + bf16 autocast                          [changes numerics]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT.parent / "shared" / "bench" / "reference_cyclegan.py"

from training.config import Config
from training.models.cyclegan import CycleGAN, TrainingStep

BASE = dict(merge_passes=False, fused_adam=False, channels_last=False, compile=False, cuda_graphs=False,
            amp_bf16=False)
CONFIGS = {
    "plain": {},
    "fused": dict(fused_adam=True),
    "merge+fused": dict(merge_passes=True, fused_adam=True),
    "merge+fused+cl": dict(merge_passes=True, fused_adam=True, channels_last=True),
    "compile": dict(merge_passes=True, fused_adam=True, channels_last=True, compile=True),
    "compile-graphs": dict(merge_passes=True, fused_adam=True, channels_last=True, compile=True, cuda_graphs=True),
    "bf16": dict(merge_passes=True, fused_adam=True, channels_last=True, amp_bf16=True),
}


def load_reference(path: Path = REFERENCE):
    spec = importlib.util.spec_from_file_location("reference_cyclegan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(device, size, batch, n=4):
    g = torch.Generator().manual_seed(0)
    return [((torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device),
             (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)) for _ in range(n)]


def timed(step_fn, data, iters, warmup, device) -> tuple[float, float]:
    """(seconds per iteration, peak GPU memory in GiB or nan)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        step_fn(*data[i % len(data)])
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(iters):
        step_fn(*data[i % len(data)])
    sync()
    seconds = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def project_step(levers: dict, device, ngf, n_blocks):
    cfg = Config()
    cfg.model.ngf, cfg.model.netG = ngf, f"resnet_{n_blocks}blocks"
    for key, value in {**BASE, **levers}.items():
        setattr(cfg.train, key, value)
    torch.manual_seed(0)
    step = TrainingStep(CycleGAN(cfg).to(device), cfg.train, device)
    return lambda a, b: step(a, b)   # losses stay on the device: no host sync inside the loop


def reference_step(device, ngf, n_blocks, reference: Path = REFERENCE):
    module = load_reference(reference)
    torch.manual_seed(0)
    random.seed(0)
    model = module.ReferenceCycleGAN(str(device), ngf=ngf, n_blocks=n_blocks)
    return model.step   # reads three losses back with .item() every iteration, as the authors do


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternate reference/project this many times; best kept")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--n-blocks", type=int, default=9)
    parser.add_argument("--configs", default="plain,fused,merge+fused")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # as the reference does
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    if not REFERENCE.is_file():
        parser.error(f"{REFERENCE} not found: the reference step is the 1.0x baseline")

    data = make_data(device, args.size, args.batch)
    steps = {"reference": reference_step(device, args.ngf, args.n_blocks)}
    steps.update({name: project_step(CONFIGS[name], device, args.ngf, args.n_blocks) for name in names})
    results = {name: [] for name in steps}
    peaks = {}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            seconds, peak = timed(fn, data, args.iters, args.warmup, device)
            results[name].append(seconds)
            peaks[name] = peak
    best = {name: min(v) for name, v in results.items()}
    ref = best["reference"]
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'} "
          f"({torch.get_num_threads()} threads), {args.size}x{args.size}, batch {args.batch}, ngf {args.ngf}, "
          f"{args.n_blocks} blocks; best of {args.rounds} rounds x {args.iters} iterations")
    print(f"{'config':16s} {'s/it':>9s} {'it/s':>8s} {'vs ref':>7s} {'peak GiB':>9s}")
    rows = []
    for name, seconds in best.items():
        ratio = ref / seconds
        print(f"{name:16s} {seconds:9.4f} {1 / seconds:8.2f} {ratio:6.2f}x {peaks[name]:9.2f}")
        rows.append(dict(config=name, s_per_iter=seconds, it_per_s=1 / seconds, ratio=ratio,
                         peak_gib=peaks[name], spread=statistics.pstdev(results[name]) if len(results[name]) > 1 else 0))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=str(device), size=args.size, batch=args.batch,
                                                   torch=torch.__version__, rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
