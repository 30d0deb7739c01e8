"""What every subcommand shares: ``--params`` and ``--set``, and the config they produce."""
from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml",
                        help="YAML params file (default: params.yaml; defaults apply if it is absent)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one parameter, e.g. --set train.n_epochs=5 (repeatable)")


def load_args_config(args):
    """The validated config of ``--params`` (which must exist when named) with ``--set`` applied."""
    from ..config import load_config

    return load_config(args.params, args.overrides, required=args.params != "params.yaml")
