"""Training on a CPU shared with another job: 300 demo iterations (64x64, the demo profile's
networks), alone and beside a second identical training job, for one or more checkouts.

    python bench/contention.py --repo . --repo /tmp/before --repeats 3 --json out.json

Each checkout's ``cyclegan train`` runs as a subprocess (``python -m training.cli``, the
checkout on PYTHONPATH), so a checkout of an earlier commit (``git worktree add /tmp/before
COMMIT``) measures "before" with its own defaults. Reports the wall time of the measured job;
beside: a second job of the same kind starts a moment earlier and keeps running until the
measured one ends. Extra environment for one checkout: ``--env KEY=VALUE`` (applies to all).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITERS = ["--set", "train.n_epochs=2", "--set", "train.n_epochs_decay=0", "--set", "train.max_iters_per_epoch=150",
         "--set", "train.sample_every=0", "--set", "data.num_workers=0"]


def prepare(repo: Path, data: Path, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "training.cli", "prepare", "--out", str(data), "--no-progress",
                    "--params", str(repo / "params.yaml")], cwd=repo, env=env, check=True, capture_output=True)


def train_cmd(repo: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "training.cli", "train", "--data", str(data), "--out", str(out), "--no-progress",
            "--params", str(repo / "params.yaml"), *ITERS]


def run_once(repo: Path, data: Path, tmp: Path, env: dict, beside: bool) -> float:
    other = None
    if beside:   # the neighbour: the same job, started first, stopped when ours ends
        other = subprocess.Popen(train_cmd(repo, data, tmp / "neighbour") + ["--set", "train.n_epochs=50"], cwd=repo,
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
    try:
        start = time.perf_counter()
        subprocess.run(train_cmd(repo, data, tmp / "measured"), cwd=repo, env=env, check=True, capture_output=True)
        return time.perf_counter() - start
    finally:
        if other is not None:
            other.kill()
            other.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", action="append", default=None, help="a checkout to measure (repeatable; default .)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per checkout and mode")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    repos = [Path(r).resolve() for r in (args.repo or [str(ROOT)])]
    results = {}
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        tmp = Path(tmp)
        for repo in repos:
            env = {**os.environ, "PYTHONPATH": str(repo), "TQDM_DISABLE": "1",
                   **dict(item.split("=", 1) for item in args.env)}
            data = tmp / f"data-{repos.index(repo)}"
            prepare(repo, data, env)
            for mode in ("alone", "beside"):
                times = [run_once(repo, data, tmp / f"{repos.index(repo)}-{mode}-{i}", env, mode == "beside")
                         for i in range(args.repeats)]
                results[f"{repo.name}:{mode}"] = {"seconds": [round(t, 1) for t in times],
                                                  "median_s": round(statistics.median(times), 1)}
                print(f"{repo}: {mode}: {results[f'{repo.name}:{mode}']}", flush=True)
    report = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cores": os.cpu_count(),
              "loadavg_at_end": os.getloadavg(), "iterations": 300, "results": results}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
