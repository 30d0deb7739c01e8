"""Translate an image or a folder of images of any size, keeping file names.

Images above serve.tile_above_pixels are translated in tiles at bounded memory (serve.tile_*
settings, both paths). --quality also runs the other generator and writes quality.csv into
the output folder: each image's cycle PSNR and whether it is out of domain (below the
threshold the model recorded at export, or, with --checkpoint, the one in --metrics).
"""


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="trainer checkpoint (.pt)")
    source.add_argument("--model", help="exported ONNX model file or folder, or models:/NAME@ALIAS (no torch needed)")
    parser.add_argument("--direction", required=True, choices=["AtoB", "BtoA"],
                        help="AtoB uses the checkpoint's G_A (A -> B), BtoA its G_B")
    parser.add_argument("--input", required=True, help="image file or folder, local or s3://")
    parser.add_argument("--output", required=True, help="output folder, local or s3://")
    parser.add_argument("--device", default="cpu", help="with --checkpoint: cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--quality", action="store_true",
                        help="also run the return generator; write quality.csv (file, cycle_psnr_db, out_of_domain)")
    parser.add_argument("--metrics", default=None,
                        help="with --checkpoint --quality: the evaluation's metrics file holding the out-of-domain "
                             "thresholds (an exported --model records its own)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args):
    from ..errors import UserError

    if args.metrics and args.model:
        raise UserError("--metrics: only with --checkpoint (an exported model records its threshold at export)")
    if args.checkpoint:
        from ..translate import translate_checkpoint

        written = translate_checkpoint(args.checkpoint, args.direction, args.input, args.output, args.device,
                                       progress=not args.no_progress, tiling=_tiling(args), quality=args.quality,
                                       metrics=args.metrics)
        print(f"translated {len(written)} image(s) into {args.output}")
        return 0
    return _translate_model(args)


def _tiling(args):
    """The serve.tile_* settings, validated by the server's own config (reached by module path)."""
    import importlib

    from ..errors import UserError
    from ..translate import Tiling
    from .args import load_args_config

    cfg = load_args_config(args)
    serving = importlib.import_module("serving.config")
    try:
        serve = serving.load_serve_config(cfg.serve, args.params)
    except serving.ServingError as e:
        raise UserError(str(e)) from None
    return Tiling(serve.tile_above_pixels, serve.tile_size, serve.tile_overlap, serve.tile_exact_norms)


def _translate_model(args) -> int:
    """The ONNX path runs in serving (no torch), on local copies of s3:// inputs and outputs."""
    import contextlib
    import importlib
    import os

    from .. import storage
    from .args import load_args_config
    from .serve import serve_section

    cfg = load_args_config(args)
    serving_cli = importlib.import_module("serving.cli")
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.register.tracking_uri
    with contextlib.ExitStack() as stack:
        local_in = stack.enter_context(storage.local_input(args.input))
        local_out = stack.enter_context(storage.local_output(args.output)) if storage.is_remote(args.output) \
            else args.output
        code = serving_cli.translate(args.model, args.direction, local_in, local_out, serve_section(cfg), tracking_uri,
                                     progress=not args.no_progress, source=args.params, quality=args.quality)
        if code:
            raise SystemExit(code)   # leaves the s3:// output as it was
    return code
