"""Train a CycleGAN on DIR/trainA and DIR/trainB, writing checkpoints, logs and samples to --out."""
import json


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="prepared data folder with trainA/ and trainB/")
    parser.add_argument("--out", required=True, help="run folder: checkpoints/, train_log.csv, samples/")
    parser.add_argument("--resume", nargs="?", const="exact", default=None, choices=("exact", "auto"),
                        help="continue from OUT/checkpoints/latest.pt. 'exact' (the default when given "
                             "bare) continues or fails; 'auto' continues only an unfinished run with the "
                             "same settings and images, and otherwise starts over (what `dvc repro` uses)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: train.device, auto)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: train.seed)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args):
    from ..cli import load_args_config
    from ..trainer import train

    if args.seed is not None:
        args.overrides.append(f"train.seed={args.seed}")
    cfg = load_args_config(args)
    summary = train(cfg, args.data, args.out, resume=args.resume or False, device=args.device,
                    progress=not args.no_progress)
    print(json.dumps(summary))
    return 0
