"""The ``cyclegan`` command line: parse, call one library function, report.

Each subcommand lives in ``training/commands/<name>.py`` with two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their library
code inside ``run`` so ``cyclegan --help`` stays fast and light.
"""
from __future__ import annotations

import argparse
import sys

from .commands import args as shared_args
from .commands import (evaluate, export, import_pth, params, pipeline, prepare, register, select, serve, steps, summary,
                       track, train, translate)
from .errors import UserError

# name: (module, one-line help), in the order of the pipeline
COMMANDS = {
    "prepare": (prepare, "Turn a data source into trainA/trainB/testA/testB + a manifest."),
    "train": (train, "Train a CycleGAN (full-state checkpoints, exact --resume)."),
    "select": (select, "Choose the checkpoint to evaluate, export and register: the best kept epoch, or the latest."),
    "evaluate": (evaluate, "Measure a checkpoint on the test split: metrics, grids, report."),
    "export": (export, "Export both generators to verified ONNX models."),
    "track": (track, "Log a step's part of the pipeline's MLflow run."),
    "register": (register, "Register the exported model, gate promotion to champion, roll back."),
    "serve": (serve, "Serve exported generators over the Open Inference Protocol and a web page."),
    "translate": (translate, "Translate images with a checkpoint or an exported ONNX model."),
    "pipeline": (pipeline, "Compile, run locally, submit or schedule the Kubeflow pipeline."),
    "steps": (steps, "Show the step table, or write the dvc.yaml generated from it."),
    "params": (params, "Print the effective parameters, or the JSON Schema of params.yaml."),
    "summary": (summary, "Print parameter counts and the cost of one generator pass."),
    "import": (import_pth, "Import a generator .pth saved by the authors' CycleGAN code."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclegan", description="CycleGAN (Zhu et al. 2017) as an MLOps pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        shared_args.add_config_arguments(p)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"cyclegan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cyclegan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
