"""Measure a checkpoint on DIR/testA and DIR/testB: the metrics (documented names, identity
baselines), grids/, report/index.html and plots/ in --out. Paths may be local or s3://."""
import json


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="prepared data folder (testA/, testB/, trainA/, trainB/)")
    parser.add_argument("--checkpoint", required=True, help="trainer checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="output folder: metrics, grids, HTML report, plots (names in training/layout.py)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="test images per domain (default: evaluate.max_images; 0 = all)")
    parser.add_argument("--train-log", default=None,
                        help="the trainer's training log for the loss curves (default: the one in the checkpoint's "
                             "run folder)")
    parser.add_argument("--selection", default=None,
                        help="the scores file of cyclegan select, shown in the report by epoch (default: the one "
                             "beside the checkpoint, if any)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: evaluate.device, auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args):
    from .args import load_args_config
    from ..utils import configure_threads
    from ..evaluation.evaluate import evaluate

    if args.max_images is not None:
        args.overrides.append(f"evaluate.max_images={args.max_images}")
    cfg = load_args_config(args)
    configure_threads(cfg.evaluate.threads)
    summary = evaluate(cfg, args.data, args.checkpoint, args.out, train_log=args.train_log, device=args.device,
                       progress=not args.no_progress, selection=args.selection)
    gate = {k: summary["metrics"][k] for k in cfg.register.gate_metrics}
    print(json.dumps({"out": summary["out"], **gate, "seconds": summary["timings_s"]["total"]}))
    return 0
