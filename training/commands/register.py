"""Register the exported model as alias 'challenger' (--model --metrics), move 'champion' when
the gate of params.yaml's register: section passes (--promote), roll back (--rollback), show
the trail (--status). Logging a step's part of the MLflow run is `cyclegan track`.
docs/mlops.md has the details."""
import json


def add_arguments(parser):
    parser.add_argument("--model", metavar="EXPORT_DIR", help="export folder written by cyclegan export")
    parser.add_argument("--metrics", metavar="METRICS_JSON", help="metrics file written by cyclegan evaluate")
    parser.add_argument("--promote", action="store_true", help="move 'champion' to the new version if the gate passes")
    parser.add_argument("--rollback", action="store_true", help="move 'champion' back to the previous champion")
    parser.add_argument("--status", action="store_true", help="print aliases and the champion trail as JSON")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="prepared data (manifest hash for lineage; test set to re-evaluate the champion on)")
    parser.add_argument("--checkpoint", metavar="PT", default=None,
                        help="trainer checkpoint the export came from: its generators go into the model so "
                             "the gate can re-evaluate it on a new test set later")
    parser.add_argument("--train", metavar="TRAIN_DIR", default=None,
                        help="the pipeline's train folder, which names its MLflow run (default: runs/train when "
                             "it names one; else a run of its own)")
    parser.add_argument("--out", metavar="DIR", default="runs/register", help="where the decision file goes")


def run(args):
    from .args import load_args_config
    from ..errors import UserError
    from ..layout import FOLDERS, Registration, TrainRun
    from ..mlops import registry

    cfg = load_args_config(args)
    modes = [m for m in ("model", "rollback", "status") if getattr(args, m)]
    if len(modes) > 1:
        raise UserError("--model, --rollback and --status: give one of them")
    if not modes:
        raise UserError("nothing to do: give --model EXPORT_DIR --metrics METRICS_JSON, --rollback or --status "
                        "(cyclegan track logs a step's part of the MLflow run)")
    if args.model and not args.metrics:
        raise UserError("--metrics: required with --model")
    if args.metrics and not args.model:
        raise UserError("--model: required with --metrics")
    if args.promote and not args.model:
        raise UserError("--promote: needs --model and --metrics")

    if args.model:
        train = TrainRun(args.train or FOLDERS["train"])
        run_id_file = train.run_id if args.train or train.run_id.exists() else None
        decision = registry.register(cfg, args.model, args.metrics, promote=args.promote, run_id_file=run_id_file,
                                     data_dir=args.data, checkpoint=args.checkpoint, out=args.out)
        for row in decision["metrics"]:
            mark = "ok  " if row["passed"] else "FAIL"
            print(f"  {mark} {row['metric']}: {row['challenger']} ({row['rule']}; threshold {row['threshold']})")
        print(f"{decision['model_name']} version {decision['challenger_version']}: gate {decision['verdict']}, "
              f"action: {decision['action']}; champion is now version {decision['champion_after']} "
              f"({Registration(args.out).decision})")
    elif args.rollback:
        result = registry.rollback(cfg, args.out)
        print(f"{result['model_name']}: champion rolled back from version {result['from_version']} "
              f"to version {result['champion_after']}")
    else:
        print(json.dumps(registry.status(cfg), indent=2))
    return 0
