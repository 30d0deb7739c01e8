"""Log one step's part of the pipeline's MLflow run (one run per pipeline run).

  cyclegan track train TRAIN_DIR [--data DIR]          open the run (or reuse the one the folder
                                                       names) and log parameters, losses, samples
  cyclegan track select SELECT_DIR --train TRAIN_DIR   every epoch's validation scores, the chosen
                                                       epoch (tags)
  cyclegan track evaluate EVAL_DIR --train TRAIN_DIR   metrics, report, grids, plots
  cyclegan track export EXPORT_DIR --train TRAIN_DIR [--checkpoint PT]
                                                       the model: both ONNX graphs as one pyfunc

Logging a part again is a no-op. The run's id travels in the train folder, so every later
step finds the run through ``--train``. The tracking store is register.tracking_uri unless
MLFLOW_TRACKING_URI is set.
"""
PARTS = ("train", "select", "evaluate", "export")


def add_arguments(parser):
    parser.add_argument("part", choices=PARTS, help="which step's part to log")
    parser.add_argument("folder", help="that step's output folder")
    parser.add_argument("--train", metavar="TRAIN_DIR", default=None,
                        help="the pipeline's train folder, which names its MLflow run (select, evaluate, export)")
    parser.add_argument("--data", metavar="DIR", default=None, help="train: the prepared data (lineage: its manifest hash)")
    parser.add_argument("--checkpoint", metavar="PT", default=None,
                        help="export: the checkpoint the export came from; its generators go into the model so the "
                             "gate can re-evaluate it on a new test set later")


def run(args):
    from .args import load_args_config
    from ..errors import UserError
    from ..layout import TrainRun
    from ..mlops import tracking

    cfg = load_args_config(args)
    if args.part == "train":
        run_id = tracking.log_train(cfg, args.folder, args.data)
        print(f"mlflow: train part logged to {tracking.run_url(cfg, run_id)}")
        return 0
    if args.train is None:
        raise UserError(f"--train: needed to find the pipeline's MLflow run (track {args.part})")
    run_id = tracking.resolve_run(cfg, TrainRun(args.train).run_id, args.train)
    if args.part == "select":
        tracking.log_select(cfg, run_id, args.folder)
        print(f"mlflow: select part logged to run {run_id}")
    elif args.part == "evaluate":
        tracking.log_evaluate(cfg, run_id, args.folder)
        print(f"mlflow: evaluate part logged to run {run_id}")
    else:
        uri = tracking.log_export(cfg, run_id, args.folder, args.checkpoint)
        print(f"mlflow: model logged as {uri} in run {run_id}")
    return 0
