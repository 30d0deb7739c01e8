"""What the evaluation fingerprint costs, and how far the settings it leaves out move the numbers.

    python bench/eval_fingerprint.py [--data PREPARED_DIR] [--repeats 5]

1. Cost: the fingerprint's parts on ``--data`` (default: the tests profile's synthetic data):
   content hashes of the test sets and the probe's training subset, the feature network's
   weights hash, the metric code's hash; wall seconds per repeat, min / median / max.
2. Round-off: a tests-profile checkpoint evaluated with batch sizes 1, 4, 8 and 1 or 2 CPU
   threads (the settings left out of the fingerprint because they move numbers by float32
   round-off only). Prints each gate metric's largest difference from the batch 8 / 1 thread
   evaluation, next to the gate's default margin, and whether the fingerprints are equal.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS_PROFILE = ROOT / "profiles" / "tests.yaml"
CYCLEGAN = [sys.executable, "-m", "training.cli"]


def cyclegan(*args: str, threads: int = 1) -> None:
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([*CYCLEGAN, *args], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def fingerprint_cost(data: Path, repeats: int) -> list[float]:
    import torch

    from training.config import load_config
    from training.evaluation.evaluate import fingerprint, fingerprint_parts, probe_images, test_images
    from training.evaluation.features import build_extractor, files_digest

    cfg = load_config(ROOT / "params.yaml", [], required=True)
    extractor = build_extractor(cfg.evaluate.features, torch.device("cpu"))
    paths_a, paths_b = test_images(data, cfg.evaluate.max_images)
    train_a, train_b = probe_images(data, cfg.evaluate.probe_max_per_domain, cfg.evaluate.seed)
    print(f"fingerprint on {data}: {len(paths_a)} + {len(paths_b)} test images, "
          f"{len(train_a)} + {len(train_b)} probe images")
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        digests = {"test_A": files_digest(paths_a), "test_B": files_digest(paths_b),
                   "probe_A": files_digest(train_a), "probe_B": files_digest(train_b)}
        fingerprint(fingerprint_parts(cfg.evaluate, images=digests, size=256, channels={"A": 3, "B": 3},
                                      extractors={"effnet": extractor}, device=torch.device("cpu"), synthetic=False))
        seconds.append(time.perf_counter() - start)
    print(f"  seconds per fingerprint over {repeats} repeats: min {min(seconds):.3f}, "
          f"median {statistics.median(seconds):.3f}, max {max(seconds):.3f}")
    return seconds


def round_off(work: Path) -> None:
    from training.config import RegisterConfig
    from training.evaluation.specs import METRICS

    data, run = work / "data", work / "run"
    cyclegan("prepare", "--params", str(TESTS_PROFILE), "--no-progress", "--out", str(data))
    cyclegan("train", "--params", str(TESTS_PROFILE), "--no-progress", "--data", str(data), "--out", str(run))
    results = {}
    for batch, threads in ((8, 1), (4, 1), (1, 1), (8, 2)):
        out = work / f"eval_b{batch}_t{threads}"
        cyclegan("evaluate", "--params", str(TESTS_PROFILE), "--no-progress", "--data", str(data),
                 "--checkpoint", str(run / "checkpoints" / "latest.pt"), "--out", str(out),
                 "--set", f"evaluate.batch_size={batch}", "--set", f"evaluate.cache_dir={work / f'cache{batch}{threads}'}",
                 threads=threads)
        results[batch, threads] = json.loads((out / "metrics.json").read_text())
    reference = results[8, 1]
    rc = RegisterConfig()
    print("largest difference from batch 8 / 1 thread, per gate metric (default margin):")
    for name in rc.gate_metrics:
        diff = max(abs(m[name] - reference[name]) for m in results.values())
        print(f"  {name:22s} {diff:.3g}   (margin {getattr(rc, METRICS[name].margin):g})")
    same = {k: m["evaluation_fingerprint"] == reference["evaluation_fingerprint"] for k, m in results.items()}
    print(f"fingerprints equal to the reference: {same}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a prepared data folder (default: the tests profile's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cost-only", action="store_true", help="skip the round-off part (needs --data)")
    args = parser.parse_args()
    if args.cost_only and not args.data:
        parser.error("--cost-only needs --data")
    with tempfile.TemporaryDirectory(prefix="cyclegan-fingerprint-") as tmp:
        work = Path(tmp)
        if not args.cost_only:
            round_off(work)
        fingerprint_cost(Path(args.data) if args.data else work / "data", args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
