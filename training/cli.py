"""The ``cyclegan`` command line: parse, call one library function, report.

Each subcommand lives in ``training/commands/<name>.py`` with two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their library
code inside ``run`` so ``cyclegan --help`` stays fast and light.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

COMMANDS = {
    "summary": "Print parameter counts and the cost of one generator pass.",
    "prepare": "Turn a data source into trainA/trainB/testA/testB + manifest.json.",
    "train": "Train a CycleGAN (full-state checkpoints, exact --resume).",
    "translate": "Translate images with a checkpoint or an exported ONNX model.",
    "evaluate": "Measure a checkpoint on the test split: metrics.json, grids, report.",
    "export": "Export both generators to verified ONNX models.",
    "register": "Log to MLflow, register the model, gate promotion to champion, roll back.",
    "serve": "Serve exported generators over the Open Inference Protocol and a web page.",
    "pipeline": "Compile, run locally, submit or schedule the Kubeflow pipeline.",
    "import": "Import a generator .pth saved by the authors' CycleGAN code.",
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--params and --set, shared by every subcommand."""
    parser.add_argument("--params", default="params.yaml",
                        help="YAML params file (default: params.yaml; defaults apply if it is absent)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one parameter, e.g. --set train.n_epochs=5 (repeatable)")


def load_args_config(args):
    from .config import load_config

    return load_config(args.params, args.overrides, required=args.params != "params.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclegan", description="CycleGAN (Zhu et al. 2017) as an MLOps pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"training.commands.{name.replace('import', 'import_pth')}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        add_config_arguments(p)
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
