"""Train a CycleGAN on DIR/trainA and DIR/trainB, writing checkpoints, logs and samples to --out
(names in training/layout.py). Under torchrun, one process per GPU (docs/training.md)."""
import json


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="prepared data folder with trainA/ and trainB/")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, training log, samples, config")
    parser.add_argument("--resume", nargs="?", const="exact", default=None, choices=("exact", "auto"),
                        help="continue from OUT's latest checkpoint. 'exact' (the default when given "
                             "bare) continues or fails; 'auto' continues only an unfinished run with the "
                             "same settings and images, and otherwise starts over (what `dvc repro` uses)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: train.device, auto)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: train.seed)")
    parser.add_argument("--mirror", metavar="PREFIX", default=None,
                        help="s3://... (or another object store) where the checkpoint is kept while training, "
                             "restored first: a retried task on another machine resumes from it")
    parser.add_argument("--track", action="store_true",
                        help="open the pipeline's MLflow run before training (or reuse the one OUT names), so a "
                             "retried task logs into the same run; `cyclegan track train` logs the results")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args):
    import contextlib
    import os

    from .args import load_args_config
    from ..errors import UserError
    from ..engine.mirror import mirrored
    from ..engine.trainer import train
    from ..utils import configure_threads

    if args.seed is not None:
        args.overrides.append(f"train.seed={args.seed}")
    cfg = load_args_config(args)
    configure_threads(cfg.train.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.mirror and distributed:
        raise UserError("--mirror: run it in the process that starts torchrun, not under torchrun")
    with contextlib.ExitStack() as stack:
        if args.mirror:
            stack.enter_context(mirrored(args.out, args.mirror))
        summary = train(cfg, args.data, args.out, resume=args.resume or False, device=args.device,
                        progress=not args.no_progress, on_start=_open_run(cfg, args) if args.track else None)
    print(json.dumps(summary))
    return 0


def _open_run(cfg, args):
    """Called once training knows whether it continues OUT's run: opens the MLflow run (a run
    that continues keeps its own, whose id OUT holds)."""
    def on_start() -> None:
        from ..mlops import tracking

        tracking.open_run(cfg, args.out, args.data)

    return on_start
