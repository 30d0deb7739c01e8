"""Does live MLflow logging slow training? ``cyclegan train`` it/s with live logging off, on to a
SQLite store, and on to a tracking server that is down (nothing listens on its port).

Each run is a real ``cyclegan train`` process on the tests profile (generated images, one
epoch of ``--iters`` iterations, a log row every 5 and a sample grid every 25 iterations,
system metrics at the default interval). Its speed is taken from its own training log: the
iterations between the first and the last row over the time between them, so process start,
imports and the final flush are left out; and the same over the log's second half, after the
logger's own start-up (importing MLflow, opening the store and the run) is over. The modes run interleaved (round-robin, the order
rotated each round) so that a change in the machine's load hits all of them alike; each
round's ratio to "off" is reported as median and range.

    python bench/live_tracking.py --iters 300 --repeats 3
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MODES = ("off", "sqlite", "dead-server")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # released on close: nothing listens there afterwards


def run_once(mode: str, data: Path, work: Path, iters: int) -> tuple[float, float]:
    """(it/s over the whole log, it/s over its second half: after the logger's start-up)"""
    from helpers import CYCLEGAN, TESTS_PROFILE

    out = work / f"run-{mode}-{time.monotonic_ns()}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    args = [*CYCLEGAN, "train", "--params", str(TESTS_PROFILE), "--data", str(data), "--out", str(out),
            "--no-progress", "--set", f"train.max_iters_per_epoch={iters}", "--set", "train.n_epochs=1",
            "--set", "train.n_epochs_decay=0", "--set", "train.sample_every=25", "--set", "train.save_latest_freq=0"]
    if mode == "sqlite":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        args.append("--track")
    elif mode == "dead-server":
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{closed_port()}"
        args += ["--track", "--set", "register.live_flush_s=1"]
    subprocess.run(args, cwd=work, env=env, check=True, capture_output=True, timeout=1800)
    with open(out / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return speed(rows), speed(rows[len(rows) // 2:])


def speed(rows: list[dict]) -> float:
    first, last = rows[0], rows[-1]
    return (int(last["iteration"]) - int(first["iteration"])) / (float(last["time"]) - float(first["time"]))


def main() -> None:
    from helpers import make_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=300, help="iterations per run (one epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs every mode once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        work = Path(tmp)
        for i, name in enumerate(("trainA", "trainB")):
            make_images(work / "data" / name, args.iters, size=(32, 32), seed=i)
        speeds: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        for r in range(args.repeats):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            for mode in order:
                speeds[mode].append(run_once(mode, work / "data", work, args.iters))
                whole, half = speeds[mode][-1]
                print(f"round {r + 1} {mode:12s} {whole:.2f} it/s (second half {half:.2f})", file=sys.stderr,
                      flush=True)
    load = os.getloadavg()
    result = {"iters": args.iters, "repeats": args.repeats, "loadavg_1_5_15": [round(x, 2) for x in load],
              "cpus": os.cpu_count(), "modes": {}}
    for mode in MODES:
        row = {}
        for part, index in (("whole", 0), ("second_half", 1)):
            values = [s[index] for s in speeds[mode]]
            ratios = [s[index] / o[index] for s, o in zip(speeds[mode], speeds["off"])]
            row[part] = {"it_per_s": [round(v, 2) for v in values], "median_it_per_s": round(statistics.median(values), 2),
                         "ratio_to_off_median": round(statistics.median(ratios), 3),
                         "ratio_to_off_range": [round(min(ratios), 3), round(max(ratios), 3)]}
        result["modes"][mode] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
