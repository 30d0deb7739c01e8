"""Turn a data source into the unpaired layout training reads: trainA/ trainB/ testA/ testB/
and manifest.json (per-file size and sha256, counts, skipped files with reasons, source, params).

SRC is one of: synthetic (generated, offline); a dataset name from the CycleGAN server
(horse2zebra, monet2photo, ...); a .zip; a folder; s3://bucket/prefix. Layouts trainA/trainB
[/testA/testB], train/{A,B}, A/B and {A,B}/{train,test} are detected; name other layouts with
--set prepare.domain_a=FOLDER_OR_GLOB --set prepare.domain_b=... (and test_a / test_b).
OUT may be a folder or an s3:// prefix; it is replaced only when the run succeeds.
"""
import json
import sys


def add_arguments(parser):
    parser.add_argument("--source", default=None, help="data source (default: prepare.source)")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix, e.g. data/prepared")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args):
    from .args import load_args_config
    from ..prepare.prepare import format_summary, prepare

    cfg = load_args_config(args)
    summary = prepare(cfg.prepare, args.source, args.out, progress=not args.no_progress)
    print(format_summary(summary), file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped_files"}, ensure_ascii=False))
    return 0
