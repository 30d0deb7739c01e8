"""How often serving's out-of-domain flag fires: on held-out in-domain images (few flags
wanted) against images from another domain and noise (most flagged wanted).

The model is an export made with ``cyclegan export --metrics`` (each generator records the
evaluation's 5th-percentile cycle PSNR of its input domain's test split as its threshold).
Image sets, per direction (for AtoB, domain A is "in"):
  * in-domain, held out: synthetic images of the input domain drawn with a seed the prepare
    step never used (so not the test split the threshold came from)
  * the other domain: synthetic images of the output domain
  * photos: horse2zebra testA and testB (../shared/datasets/horse2zebra.zip, read in place),
    at the model's training size and at their own 256 x 256
  * noise: uniform random pixels
The flag is computed by the serving code (serving/quality.py), on the same path the server takes.

    .venv/bin/python bench/quality_flags.py --model runs/export [--count 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ZIP = ROOT.parent / "shared" / "datasets" / "horse2zebra.zip"


def photos(split: str, size: int | None, count: int) -> list[np.ndarray]:
    from PIL import Image

    if not ZIP.is_file():
        return []
    out = []
    with zipfile.ZipFile(ZIP) as z:
        names = sorted(n for n in z.namelist() if f"/{split}/" in n and n.endswith(".jpg"))[:count]
        for name in names:
            with z.open(name) as f:
                img = Image.open(f).convert("RGB")
                if size:
                    img = img.resize((size, size), Image.BICUBIC)
                out.append(np.asarray(img))
    return out


def flag_rate(forward, back, pictures: list[np.ndarray]) -> dict:
    from serving.quality import assess, threshold_of

    threshold = threshold_of(forward.metadata)
    values, flags = [], []
    for picture in pictures:
        x = forward.to_model_input(picture[None])
        q = assess(x, back.run_any_size(forward.run_any_size(x)), forward.layout, threshold)[0]
        values.append(q.cycle_psnr_db)
        flags.append(bool(q.out_of_domain))
    return {"images": len(pictures), "flagged": int(sum(flags)), "rate": float(np.mean(flags)) if flags else None,
            "cycle_psnr_median": float(np.median(values)) if values else None, "threshold_db": threshold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an export folder made with cyclegan export --metrics")
    parser.add_argument("--count", type=int, default=200, help="images per synthetic and noise set")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from serving.model_store import resolve_model
    from serving.quality import threshold_of
    from serving.session import load_session
    from training.prepare.synthetic import image_rng, render

    info = resolve_model(args.model)
    sessions = {d: load_session(info.path(d), warm_up=False) for d in ("AtoB", "BtoA")}
    size = int(sessions["AtoB"].metadata.get("training_size", 64))
    if threshold_of(sessions["AtoB"].metadata) is None:
        raise SystemExit(f"{args.model}: no quality_threshold_db in the models (export with --metrics)")
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.count)]
    report = {"model": args.model, "training_size": size, "loadavg_1m": os.getloadavg()[0], "directions": {}}
    for direction, source, other, split in (("AtoB", "A", "B", "testA"), ("BtoA", "B", "A", "testB")):
        forward, back = sessions[direction], sessions["BtoA" if direction == "AtoB" else "AtoB"]
        sets = {
            f"in-domain {source} (held-out seed)": [render(image_rng(1234, "test", source, i), size, source)
                                                   for i in range(args.count)],
            f"other domain {other}": [render(image_rng(1234, "test", other, i), size, other)
                                      for i in range(args.count)],
            f"photos {split} at {size}": photos(split, size, args.count),
            f"photos {split} at 256": photos(split, None, args.count),
            "noise": noise,
        }
        rows = {name: flag_rate(forward, back, pictures) for name, pictures in sets.items() if pictures}
        report["directions"][direction] = rows
        for name, row in rows.items():
            print(f"{direction} | {name} | {row['images']} | {row['flagged']} ({100 * row['rate']:.1f}%) | "
                  f"{row['cycle_psnr_median']:.1f} dB | {row['threshold_db']:.2f} dB", flush=True)
    info.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
