"""Speed of ``cyclegan prepare`` on a standard-layout zip (the issue's figure: <= 30 s on 2 cores).

Prepares ``../shared/datasets/horse2zebra.zip`` (2,661 JPEGs of 256x256, loaded by path,
never copied into the project) into a temporary folder once per ``--resize`` value and
prints one JSON line per run: seconds, images per second, counts, copied/converted/resized.

    python bench/prepare_speed.py                       # resize_to 0 and 286, 2 workers
    python bench/prepare_speed.py --resize 0 128 286 --workers 2 --zip path/to/other.zip

Skips with a message (exit 0) when the zip is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ZIP = ROOT.parent / "shared" / "datasets" / "horse2zebra.zip"
TARGET_S = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", default=str(DEFAULT_ZIP), help="a standard-layout dataset zip")
    parser.add_argument("--resize", type=int, nargs="+", default=[0, 286], help="prepare.resize_to values to time")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    archive = Path(args.zip)
    if not archive.is_file():
        print(f"skipped: {archive} not found (the benchmark needs a standard-layout zip; tests never do)")
        return 0
    from training.config import PrepareConfig
    from training.prepare.prepare import prepare

    print(f"# {archive.name} ({archive.stat().st_size / 1e6:.0f} MB), {args.workers} workers, "
          f"{os.cpu_count()} CPUs visible", file=sys.stderr)
    worst = 0.0
    for resize in args.resize:
        with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
            cfg = PrepareConfig(resize_to=resize, workers=args.workers)
            start = time.perf_counter()
            summary = prepare(cfg, str(archive), str(Path(tmp) / "out"), progress=False)
            seconds = time.perf_counter() - start
        images = sum(summary["counts"].values())
        worst = max(worst, seconds)
        print(json.dumps({"resize_to": resize, "workers": args.workers, "seconds": round(seconds, 2),
                          "images": images, "images_per_s": round(images / seconds, 1),
                          "counts": summary["counts"], "skipped": summary["skipped"],
                          **{k: summary[k] for k in ("copied", "converted", "resized")}}))
    verdict = "meets" if worst <= TARGET_S else "MISSES"
    print(f"# slowest run {worst:.1f} s: {verdict} the {TARGET_S:.0f} s target", file=sys.stderr)
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
