"""Choose the checkpoint the pipeline evaluates, exports and registers: with evaluate.select
best, every kept epoch checkpoint of the run in --train is scored on a fixed validation subset
of the training images (KID and domain success) and the best one is written to --out; with
latest, the run's latest checkpoint is. --out gets the checkpoint, the scores of every epoch
and a CSV for `dvc plots` (names in training/layout.py). Paths may be local or s3://."""
import json


def add_arguments(parser):
    parser.add_argument("--train", required=True, help="the run folder written by cyclegan train (its checkpoints/)")
    parser.add_argument("--data", default=None,
                        help="prepared data folder: trainA/ and trainB/ score the epochs (needed for select best)")
    parser.add_argument("--out", required=True, help="output folder: the selected checkpoint and the scores")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: evaluate.device, auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args):
    from .args import load_args_config
    from ..evaluation.select import select
    from ..utils import configure_threads

    cfg = load_args_config(args)
    configure_threads(cfg.evaluate.threads)
    summary = select(cfg, args.data, args.train, args.out, device=args.device, progress=not args.no_progress)
    for row in summary["epochs"]:
        mark = "*" if row["epoch"] == summary["selected_epoch"] else " "
        print(f" {mark} epoch {row['epoch']:>4}: score {row['score']:.6g} (KID {row['kid_AtoB_mean']:.4g} / "
              f"{row['kid_BtoA_mean']:.4g}, domain success {row['domain_success_AtoB']:.3g} / "
              f"{row['domain_success_BtoA']:.3g})")
    print(json.dumps({"out": args.out, "mode": summary["mode"], "selected_epoch": summary["selected_epoch"],
                      "metric": summary["metric"], "score": summary["score"],
                      "seconds": summary["timings_s"]["total"]}))
    return 0
