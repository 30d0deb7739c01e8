"""Export both generators of a checkpoint to verified single-file ONNX models.

Writes one model per direction (AtoB: the checkpoint's G_A; BtoA: G_B) and a verification
report; with export.uint8_variant also uint8 variants, with export.quantize (and --data) int8
ones (file names in training/layout.py). With --metrics (an evaluation of this checkpoint), each
model records its out-of-domain threshold, which serving's quality signal compares against.
Each model is checked by onnx.checker and compared with PyTorch; OUT is replaced only
when all of them pass. CHECKPOINT, OUT and DATA may be s3:// addresses.
"""


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="trainer checkpoint (.pt), local or s3://")
    parser.add_argument("--out", required=True, help="output folder, local or s3://")
    parser.add_argument("--data", default=None,
                        help="prepared data folder: trainA/trainB calibrate int8, testA/testB measure its PSNR")
    parser.add_argument("--metrics", default=None,
                        help="an evaluation's metrics file of this checkpoint: each model records its out-of-domain "
                             "threshold (ood_cycle_psnr_*) for serving's quality signal")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args):
    from .args import load_args_config
    from ..export.onnx import export

    cfg = load_args_config(args)
    report = export(args.checkpoint, args.out, cfg.export, args.data, progress=not args.no_progress,
                    metrics=args.metrics)
    for name, entry in report["models"].items():
        if "psnr_db_mean" in entry:
            print(f"{name}: int8 PSNR vs fp32 {entry['psnr_db_mean']:.2f} dB (min {entry['psnr_db_min']:.2f}, "
                  f"goal {entry['goal_db']:g}: {'met' if entry['meets_goal'] else 'NOT met'})")
        else:
            print(f"{name}: verified, max abs diff {entry['max_abs_diff']:.3g} <= {entry['tolerance']:g} "
                  f"over {len(entry['cases'])} inputs, opset {entry['opset']}")
    print(f"wrote {len(report['models'])} model(s) and the verification report to {args.out}")
    return 0
