"""Log each pipeline step to its MLflow run (--log-train/--log-evaluate/--log-export), register
the exported model as alias 'challenger' (--model --metrics), move 'champion' when the gate of
params.yaml's register: section passes (--promote), roll back (--rollback), show the trail
(--status). The README's "Promotion and rollback" section has the details."""
import json


def add_arguments(parser):
    parser.add_argument("--model", metavar="EXPORT_DIR", help="export folder with G_AtoB.onnx and G_BtoA.onnx")
    parser.add_argument("--metrics", metavar="METRICS_JSON", help="metrics.json written by cyclegan evaluate")
    parser.add_argument("--promote", action="store_true", help="move 'champion' to the new version if the gate passes")
    parser.add_argument("--rollback", action="store_true", help="move 'champion' back to the previous champion")
    parser.add_argument("--status", action="store_true", help="print aliases and the champion trail as JSON")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="prepared data (manifest hash for lineage; test set to re-evaluate the champion on)")
    parser.add_argument("--checkpoint", metavar="PT", default=None,
                        help="trainer checkpoint the export came from: its generators go into the model so "
                             "the gate can re-evaluate it on a new test set later")
    parser.add_argument("--run-id-file", metavar="FILE", default=None,
                        help="file holding the pipeline's MLflow run id (default: runs/train/mlflow_run_id "
                             "when it exists)")
    parser.add_argument("--out", metavar="DIR", default="runs/register", help="where decision.json goes")
    parser.add_argument("--log-train", metavar="TRAIN_DIR", help="open the run and log the train part")
    parser.add_argument("--log-evaluate", metavar="EVAL_DIR", help="log the evaluate part to the run")
    parser.add_argument("--log-export", metavar="EXPORT_DIR", help="log the exported model to the run")


DEFAULT_RUN_ID_FILE = "runs/train/mlflow_run_id"


def run(args):
    from pathlib import Path

    from .. import registry, tracking
    from ..cli import load_args_config
    from ..errors import UserError

    cfg = load_args_config(args)
    modes = [m for m in ("model", "rollback", "status") if getattr(args, m)]
    logs = [m for m in ("log_train", "log_evaluate", "log_export") if getattr(args, m)]
    if len(modes) > 1:
        raise UserError("--model, --rollback and --status: give one of them")
    if not modes and not logs:
        raise UserError("nothing to do: give --model EXPORT_DIR --metrics METRICS_JSON, --rollback, --status "
                        "or one of --log-train/--log-evaluate/--log-export")
    if args.model and not args.metrics:
        raise UserError("--metrics: required with --model")
    if args.metrics and not args.model:
        raise UserError("--model: required with --metrics")
    if args.promote and not args.model:
        raise UserError("--promote: needs --model and --metrics")

    run_id_file = args.run_id_file
    if run_id_file is None and args.log_train:
        run_id_file = str(Path(args.log_train) / tracking.RUN_ID_FILE)
    if run_id_file is None and Path(DEFAULT_RUN_ID_FILE).exists():
        run_id_file = DEFAULT_RUN_ID_FILE

    if args.log_train:
        run_id = tracking.log_train(cfg, args.log_train, args.data)
        print(f"mlflow: train part logged to {tracking.run_url(cfg, run_id)}")
    if args.log_evaluate or args.log_export:
        if run_id_file is None:
            raise UserError("--run-id-file: needed to find the pipeline's MLflow run")
        run_id = tracking.resolve_run(cfg, run_id_file)
        if args.log_evaluate:
            tracking.log_evaluate(cfg, run_id, args.log_evaluate)
            print(f"mlflow: evaluate part logged to run {run_id}")
        if args.log_export:
            uri = tracking.log_export(cfg, run_id, args.log_export, args.checkpoint)
            print(f"mlflow: model logged as {uri} in run {run_id}")
    if args.model:
        decision = registry.register(cfg, args.model, args.metrics, promote=args.promote, run_id_file=run_id_file,
                                     data_dir=args.data, checkpoint=args.checkpoint, out=args.out)
        for row in decision["metrics"]:
            mark = "ok  " if row["passed"] else "FAIL"
            print(f"  {mark} {row['metric']}: {row['challenger']} ({row['rule']}; threshold {row['threshold']})")
        print(f"{decision['model_name']} version {decision['challenger_version']}: gate {decision['verdict']}, "
              f"action: {decision['action']}; champion is now version {decision['champion_after']} "
              f"({Path(args.out) / 'decision.json'})")
    elif args.rollback:
        result = registry.rollback(cfg, args.out)
        print(f"{result['model_name']}: champion rolled back from version {result['from_version']} "
              f"to version {result['champion_after']}")
    elif args.status:
        print(json.dumps(registry.status(cfg), indent=2))
    return 0
