"""Translate an image or a folder of images of any size, keeping file names."""


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="trainer checkpoint (.pt)")
    source.add_argument("--model", help="exported ONNX model file or folder, or models:/NAME@ALIAS (no torch needed)")
    parser.add_argument("--direction", required=True, choices=["AtoB", "BtoA"],
                        help="AtoB uses the checkpoint's G_A (A -> B), BtoA its G_B")
    parser.add_argument("--input", required=True, help="image file or folder, local or s3://")
    parser.add_argument("--output", required=True, help="output folder, local or s3://")
    parser.add_argument("--device", default="cpu", help="with --checkpoint: cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args):
    if args.checkpoint:
        from ..translate import translate_checkpoint

        written = translate_checkpoint(args.checkpoint, args.direction, args.input, args.output, args.device,
                                       progress=not args.no_progress)
        print(f"translated {len(written)} image(s) into {args.output}")
        return 0
    return _translate_model(args)


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
                                     progress=not args.no_progress, source=args.params)
        if code:
            raise SystemExit(code)   # leaves the s3:// output as it was
    return code
