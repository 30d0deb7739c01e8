"""Cost of ``cyclegan evaluate`` against the generator passes it needs, side by side.

Goal (issue 4): a full evaluation of horse2zebra's 260 test images at 256x256 costs at most
1.3x the time of its generator passes, with cold caches.

1. Unpacks ``../shared/datasets/horse2zebra.zip`` (test and train splits; the probe fits on
   train images) into a temporary folder. Not timed.
2. Builds a 256 px, 9-block, ngf 64 checkpoint from a fresh ``CycleGAN`` in the trainer's
   checkpoint format (``Trainer.save``). Not timed.
3. Times the whole evaluation (``training.evaluation.evaluate.evaluate``) with an empty
   feature cache: image decoding, generator passes, features of the translations, the real
   test sets and the probe's training sets, metrics, the probe, KID/FD, report, outputs.
4. Times the generator passes alone on images already decoded into memory: per test image
   and direction one translation, one reconstruction and (identity on) one identity pass,
   in batches of ``evaluate.batch_size``, under inference mode. It runs once before and
   once after the evaluation, and the ratio uses their mean, so that load from other jobs
   on a shared machine drifting during the run biases neither side.

    python bench/eval_speed.py                     # all 260 test images (25-60 min on 2 busy cores)
    python bench/eval_speed.py --max-images 40     # quicker: 40 per domain (the probe cost stays)

Prints one JSON object; record the figures in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ZIP = ROOT.parent / "shared" / "datasets" / "horse2zebra.zip"
sys.path.insert(0, str(ROOT))

from training.config import Config


def unpack(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as z:
        members = [m for m in z.namelist() if not m.endswith("/")]
        z.extractall(dest, members)
    roots = {Path(m).parts[0] for m in members}
    return dest / roots.pop() if len(roots) == 1 else dest


def build_checkpoint(cfg: Config, data: Path, out: Path) -> Path:
    from training.engine.trainer import Trainer

    trainer = Trainer(cfg, data, out, device=cfg.evaluate.device)
    path = out / "checkpoints" / "latest.pt"
    trainer.save(path)
    return path


def time_generator_passes(checkpoint: Path, data: Path, cfg: Config, device: torch.device) -> dict:
    from training.engine.checkpoint import load_generators
    from training.data.dataset import list_images
    from training.evaluation.evaluate import load_image
    from training.translate import translate_tensor

    G_A, G_B, model_cfg = load_generators(checkpoint, device)
    size, bs, n = cfg.evaluate.image_size or model_cfg.data.crop_size, cfg.evaluate.batch_size, cfg.evaluate.max_images
    total, passes = 0.0, 0
    for folder, forward, backward in (("testA", G_A, G_B), ("testB", G_B, G_A)):
        paths = list_images(data / folder)[: n or None]
        images = torch.stack([load_image(p, size, 3) for p in paths])   # decoded up front: not timed
        for i in range(0, len(images), bs):
            x = images[i:i + bs].to(device)
            start = time.perf_counter()
            fake = translate_tensor(forward, x)
            translate_tensor(backward, fake)
            if cfg.evaluate.identity:
                translate_tensor(backward, x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            total += time.perf_counter() - start
            passes += x.shape[0] * (3 if cfg.evaluate.identity else 2)
    return {"seconds": round(total, 2), "passes": passes, "seconds_per_pass": round(total / passes, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", default=str(ZIP))
    parser.add_argument("--max-images", type=int, default=0, help="test images per domain; 0 = all")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-identity", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from training.evaluation.evaluate import evaluate, resolve_device

    cfg = Config()                     # the paper's model: resnet_9blocks, ngf 64, 256x256
    cfg.train.device = cfg.evaluate.device = args.device
    cfg.evaluate.max_images = args.max_images
    cfg.evaluate.batch_size = args.batch_size
    cfg.evaluate.identity = not args.no_identity
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        tmp = Path(tmp)
        data = unpack(Path(args.zip), tmp / "zip")
        checkpoint = build_checkpoint(cfg, data, tmp / "run")
        cfg.evaluate.cache_dir = str(tmp / "feature-cache")          # cold: empty
        before = time_generator_passes(checkpoint, data, cfg, device)
        start = time.perf_counter()
        summary = evaluate(cfg, str(data), str(checkpoint), str(tmp / "eval"), device=args.device, progress=False)
        evaluation = time.perf_counter() - start
        after = time_generator_passes(checkpoint, data, cfg, device)
        metrics = summary["metrics"]
    generator_seconds = (before["seconds"] + after["seconds"]) / 2
    result = {
        "device": str(device), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "test_images": [metrics["n_test_A"], metrics["n_test_B"]],
        "probe_images": [metrics["n_probe_train_A"], metrics["n_probe_train_B"]],
        "batch_size": args.batch_size, "identity": cfg.evaluate.identity,
        "evaluate_seconds": round(evaluation, 2),
        "evaluate_breakdown_s": summary["timings_s"],
        "generator_passes_before": before,
        "generator_passes_after": after,
        "ratio": round(evaluation / generator_seconds, 3),
        "ratio_to_in_run_generator_time": round(evaluation / summary["timings_s"]["generator"], 3),
        "goal": 1.3,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
