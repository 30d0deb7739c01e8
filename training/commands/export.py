"""Export both generators of a checkpoint to verified single-file ONNX models.

Writes one model per direction (AtoB: the checkpoint's G_A; BtoA: G_B) and a verification
report; with export.uint8_variant also uint8 variants, with export.quantize (and --data) int8
ones, with export.fp16_variant (and --data) fp16 ones for GPUs (file names in training/layout.py).
With export.triton (the default) also a Triton model repository, triton/, serving the same
models under the same names as `cyclegan serve` (settings from the serve: section). With
--metrics (an evaluation of this checkpoint), each model records its out-of-domain threshold,
which serving's quality signal compares against.
Each model is checked by onnx.checker and compared with PyTorch (int8 and fp16: with the fp32
model); OUT is replaced only when all of them pass. CHECKPOINT, OUT and DATA may be s3:// addresses.
"""


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="trainer checkpoint (.pt), local or s3://")
    parser.add_argument("--out", required=True, help="output folder, local or s3://")
    parser.add_argument("--data", default=None,
                        help="prepared data folder: trainA/trainB calibrate int8, testA/testB measure the int8 and "
                             "fp16 models' PSNR")
    parser.add_argument("--metrics", default=None,
                        help="an evaluation's metrics file of this checkpoint: each model records its out-of-domain "
                             "threshold (ood_cycle_psnr_*) for serving's quality signal")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def serve_section(cfg, source: str) -> dict:
    """The serve: section validated by the server's own schema (reached by module path: the
    library never imports serving/), as plain values for the Triton repository."""
    import importlib

    from ..errors import UserError

    serving = importlib.import_module("serving.config")
    try:
        return serving.load_serve_config(cfg.serve, source).model_dump()
    except serving.ServingError as e:
        raise UserError(str(e)) from None


def run(args):
    from .args import load_args_config
    from ..export.onnx import export

    cfg = load_args_config(args)
    serve = serve_section(cfg, args.params) if cfg.export.triton else None
    report = export(args.checkpoint, args.out, cfg.export, args.data, progress=not args.no_progress, serve=serve,
                    metrics=args.metrics)
    for name, entry in report["models"].items():
        if "psnr_db_mean" in entry:
            print(f"{name}: {entry['variant']} PSNR vs fp32 {entry['psnr_db_mean']:.2f} dB "
                  f"(min {entry['psnr_db_min']:.2f}, goal {entry['goal_db']:g}: "
                  f"{'met' if entry['meets_goal'] else 'NOT met'})")
        else:
            print(f"{name}: verified, max abs diff {entry['max_abs_diff']:.3g} <= {entry['tolerance']:g} "
                  f"over {len(entry['cases'])} inputs, opset {entry['opset']}")
    if "triton" in report:
        print(f"{report['triton']['path']}/: Triton model repository ({', '.join(report['triton']['models'])}, "
              f"{report['triton']['variant']})")
    print(f"wrote {len(report['models'])} model(s) and the verification report to {args.out}")
    return 0
