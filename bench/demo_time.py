"""How long the main job takes: `dvc repro` of the default profile, stage by stage.

    python bench/demo_time.py [--params params.yaml] [--keep DIR]

Copies dvc.yaml, the params file and the code the stages depend on into a fresh git + DVC
repo in a temporary folder (cold caches: its own HOME), runs the five stages one at a time
and prints wall and CPU seconds per stage, the load average around each, and the demo
summary's "visibly working" figures. Goal: the whole `dvc repro` within 10 minutes on a 2-core
CPU (README, issue 5).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "train", "evaluate", "export", "register"]


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--keep", default=None, help="run in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cyclegan-demo-"))
    repo = work / "repo"
    repo.mkdir(parents=True, exist_ok=False)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copy(args.params, repo / "params.yaml")
    shutil.copytree(ROOT / "training", repo / "training", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("/mlruns/\nmlflow.db\n")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HOME": str(work / "home"), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q",
                                          "--allow-empty", "-m", "init"], [str(bin_dir / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")

    rows, total = [], time.perf_counter()
    for stage in STAGES:
        load0, cpu0, t0 = os.getloadavg()[0], child_cpu(), time.perf_counter()
        proc = subprocess.run([str(bin_dir / "dvc"), "repro", "-s", stage], cwd=repo, env=env,
                              capture_output=True, text=True)
        rows.append({"stage": stage, "wall_s": round(time.perf_counter() - t0, 1),
                     "cpu_s": round(child_cpu() - cpu0, 1), "load_before": round(load0, 2),
                     "load_after": round(os.getloadavg()[0], 2), "rc": proc.returncode})
        print(json.dumps(rows[-1]), flush=True)
        if proc.returncode:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
    wall = time.perf_counter() - total
    print("\n| stage | wall s | CPU s | load avg before -> after |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['wall_s']} | {r['cpu_s']} | {r['load_before']} -> {r['load_after']} |")
    print(f"| **total** | **{wall:.0f}** | {sum(r['cpu_s'] for r in rows):.0f} | |\n")
    summary = subprocess.run([sys.executable, "-m", "training.demo_summary"], cwd=repo, env=env,
                             capture_output=True, text=True)
    print(summary.stdout, summary.stderr[-2000:])
    return summary.returncode


if __name__ == "__main__":
    sys.exit(main())
