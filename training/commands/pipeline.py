"""Compile, run locally, submit or schedule the Kubeflow pipeline (pipeline/pipeline.py), or
its sweep (pipeline/sweep.py).

  cyclegan pipeline compile [--output FILE]               write the pipeline YAML
  cyclegan pipeline run --local                           run the same pipeline here (kfp.local)
  cyclegan pipeline submit --host URL [--image IMG]       start one run on a KFP server
  cyclegan pipeline schedule --host URL --cron "0 3 * * *"  create a recurring run
  cyclegan pipeline sweep --grid train.lr=0.0002,0.001 [--grid KEY=V1,V2 ...]
                          [--output FILE | --local | --host URL]
                                                          one training per point of the grid, the
                                                          lowest-KID one registered: compile (the
                                                          default), run here, or submit

The run gets one params document (--params FILE with --set overrides applied) and the named
overrides below; cluster placement options apply at compile time.
"""
import json

from ..steps import PIPELINE_OVERRIDES

ACTIONS = ("compile", "run", "submit", "schedule", "sweep")
DEFAULT_OUTPUT = {"compile": "runs/pipeline/cyclegan.yaml", "sweep": "runs/pipeline/cyclegan-sweep.yaml"}


def add_arguments(parser):
    parser.add_argument("action", choices=ACTIONS, help="what to do with the pipeline")
    run = parser.add_argument_group("run parameters")
    run.add_argument("--image", default=None, help="project image for every task (default: components.DEFAULT_IMAGE)")
    for name, key in PIPELINE_OVERRIDES.items():
        kind = int if key.startswith("train.") else str
        run.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f"override {key}")
    run.add_argument("--gpus", type=int, default=None, help="GPUs for the train task (default 1; 0 locally)")
    run.add_argument("--checkpoint-prefix", default=None,
                     help="s3://bucket/prefix where the train task keeps its checkpoint so a retry resumes")
    run.add_argument("--tracking-uri", default=None, help="MLflow server for the tasks")
    run.add_argument("--no-promote", action="store_true", help="register as challenger only; never move champion")
    where = parser.add_argument_group("where")
    where.add_argument("--local", action="store_true", help="with run: run here with the SDK's subprocess runner")
    where.add_argument("--pipeline-root", default="runs/kfp", help="with run --local: where task outputs go")
    where.add_argument("--no-cache", action="store_true",
                       help="with run --local: run every task (default: reuse the outputs of an earlier run's "
                            "task with the same inputs, as the cluster does)")
    where.add_argument("--host", default=None, help="KFP API server URL (submit, schedule)")
    where.add_argument("--namespace", default=None, help="KFP namespace (multi-user installs)")
    where.add_argument("--token", default=None, help="bearer token for the KFP API (default: kfp.Client's own)")
    where.add_argument("--experiment", default="cyclegan", help="KFP experiment name")
    where.add_argument("--run-name", default=None, help="name of the run (submit) or recurring run (schedule)")
    where.add_argument("--cron", default=None, help='schedule: crontab, e.g. "0 3 * * *" (5 fields, or 6 with seconds)')
    where.add_argument("--max-concurrency", type=int, default=1, help="schedule: runs allowed at once")
    place = parser.add_argument_group("cluster placement (compile time)")
    place.add_argument("--output", default=None,
                       help=f"compile, sweep: the pipeline YAML to write (default {DEFAULT_OUTPUT['compile']}, "
                            f"{DEFAULT_OUTPUT['sweep']})")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                       help="values of one data., model. or train. key to try (repeatable: the sweep trains every "
                            "combination)")
    sweep.add_argument("--parallelism", type=int, default=None,
                       help="variants training at once (compile time; default: no limit on a cluster, 1 with "
                            "--local)")
    place.add_argument("--gpu-node-selector", action="append", default=None, metavar="KEY=VALUE",
                       help="node label for the train task (repeatable; default nvidia.com/gpu.present=true)")
    place.add_argument("--gpu-toleration", default=None, metavar="KEY",
                       help="taint key the train task tolerates (default nvidia.com/gpu; '' for none)")
    place.add_argument("--secret", default="", help="Kubernetes Secret with AWS_* / MLFLOW_* keys for every task")
    place.add_argument("--train-cpu", default=None, help="CPU request of the train task (default 4)")
    place.add_argument("--train-memory", default=None, help="memory request of the train task (default 16G)")


def _options(args):
    import importlib

    from ..errors import UserError

    opts = importlib.import_module("pipeline.pipeline").PipelineOptions(credentials_secret=args.secret)
    if args.gpu_node_selector is not None:
        selector = {}
        for item in args.gpu_node_selector:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"--gpu-node-selector {item!r}: expected KEY=VALUE")
            selector[key] = value
        opts.gpu_node_selector = selector
    if args.gpu_toleration is not None:
        opts.gpu_toleration_key = args.gpu_toleration
    if args.train_cpu:
        opts.train_cpu = args.train_cpu
    if args.train_memory:
        opts.train_memory = args.train_memory
    return opts


def _arguments(args) -> dict:
    """Pipeline parameters given on the command line (the rest keep their defaults)."""
    named = {"image": args.image, "gpus": args.gpus, "checkpoint_prefix": args.checkpoint_prefix,
             "tracking_uri": args.tracking_uri, **{name: getattr(args, name) for name in PIPELINE_OVERRIDES}}
    out = {k: v for k, v in named.items() if v is not None}
    if args.no_promote:
        out["promote"] = False
    return out


def _report_local(result: dict) -> None:
    """One line: the gate's verdict, where the outputs are, what came from the cache."""
    from pathlib import Path

    from ..layout import Registration

    # kfp.local keeps each task's output artifact under <root>/<run>/<task>/<output name>/
    decision_file = Path(result["run_dir"] or "", "register", "decision", Registration("").decision.name)
    reused = f"; reused from the cache: {', '.join(result['reused'])}" if result["reused"] else ""
    if decision_file.is_file():
        decision = json.loads(decision_file.read_text())
        print(f"pipeline finished: gate {decision['verdict']}, {decision['action']}; outputs under "
              f"{result['run_dir']}{reused}")
    else:
        print(f"pipeline finished; outputs under {result['run_dir']}{reused}")


def grid_variants(items: list[str]) -> list[dict]:
    """``["train.lr=0.0002,0.001", "model.ngf=8,16"]`` -> the four combinations as
    ``{"train.lr": 0.0002, "model.ngf": 8}``, ...; values are read as YAML, like --set's."""
    import itertools

    import yaml

    from ..errors import UserError

    axes = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise UserError(f"--grid {item!r}: expected SECTION.KEY=VALUE1,VALUE2,...")
        if key in axes:
            raise UserError(f"--grid {key}: given twice; list all its values in one --grid")
        axes[key] = [yaml.safe_load(v) for v in values.split(",")]
    if not axes:
        raise UserError("sweep: give the search space with --grid SECTION.KEY=VALUE1,VALUE2 (repeatable)")
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def _sweep(args, runner, document: str) -> int:
    """Compile the sweep (default), run it here (--local) or submit it (--host)."""
    import importlib
    from pathlib import Path

    from ..errors import UserError

    variants = grid_variants(args.grid)
    apply_variant = importlib.import_module("components.runtime").apply_variant
    for variant in variants:   # a bad key or value fails here, not in a pod
        try:
            apply_variant(document, variant)
        except (ValueError, UserError) as e:
            raise UserError(f"--grid: {e}") from None
    sweep = importlib.import_module("pipeline.sweep")
    arguments = {**_arguments(args), "variants": variants}
    print(f"sweep of {len(variants)} variant(s): " + "; ".join(
        ", ".join(f"{k}={v}" for k, v in variant.items()) for variant in variants))
    if args.local:
        pipeline = sweep.build_sweep_pipeline(params=document, variants=variants,
                                              parallelism=1 if args.parallelism is None else args.parallelism)
        result = runner.run_local(arguments, args.pipeline_root, document, cache=not args.no_cache,
                                  pipeline=pipeline)
        board = Path(result["run_dir"] or "", "select-best", "leaderboard")
        if board.is_file():
            print(board.read_text(), end="")
        _report_local(result)
        return 0

    def compile_to(path):
        return sweep.compile_sweep(path, _options(args), document, variants, args.parallelism or 0)

    if args.host:
        result = runner.submit(args.host, arguments, params=document, options=_options(args),
                               experiment=args.experiment, run_name=args.run_name, namespace=args.namespace,
                               token=args.token, compile_to=compile_to)
        print(f"submitted sweep {result['run_id']}: {result['url']}")
        return 0
    print(f"wrote {compile_to(args.output or DEFAULT_OUTPUT['sweep'])}")
    return 0


def run(args):
    from pathlib import Path

    import importlib

    from ..errors import UserError

    # the Kubeflow side is its own package (kfp); the library reaches it by module path only
    runner = importlib.import_module("pipeline.run")
    compile_pipeline = importlib.import_module("pipeline.pipeline").compile_pipeline

    # like every command: params.yaml when present, an explicit --params file must exist
    params_path = None if args.params == "params.yaml" and not Path(args.params).exists() else args.params
    document = runner.params_document(params_path, args.overrides)
    if args.action == "compile":
        out = compile_pipeline(args.output or DEFAULT_OUTPUT["compile"], _options(args), document)
        print(f"wrote {out}")
        return 0
    if args.action == "sweep":
        return _sweep(args, runner, document)
    if args.action == "run":
        if not args.local:
            raise UserError("run: add --local (or use 'submit --host URL' for a cluster)")
        result = runner.run_local(_arguments(args), args.pipeline_root, document, cache=not args.no_cache)
        _report_local(result)
        return 0
    if not args.host:
        raise UserError(f"{args.action}: --host URL of the Kubeflow Pipelines API is required")
    if args.action == "submit":
        result = runner.submit(args.host, _arguments(args), params=document, options=_options(args),
                               experiment=args.experiment, run_name=args.run_name, namespace=args.namespace,
                               token=args.token)
        print(f"submitted run {result['run_id']}: {result['url']}")
        return 0
    if not args.cron:
        raise UserError('schedule: --cron "MIN HOUR DOM MON DOW" is required')
    result = runner.schedule(args.host, args.cron, _arguments(args), params=document, options=_options(args),
                             experiment=args.experiment, job_name=args.run_name, namespace=args.namespace,
                             token=args.token, max_concurrency=args.max_concurrency)
    print(f"recurring run {result['recurring_run_id']} ({result['cron']}) in experiment {result['experiment_id']}")
    return 0
