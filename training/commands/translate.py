"""Translate an image or a folder of images of any size, keeping file names."""


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="trainer checkpoint (.pt)")
    source.add_argument("--model", help="exported ONNX model file, or models:/NAME@ALIAS")
    parser.add_argument("--direction", required=True, choices=["AtoB", "BtoA"])
    parser.add_argument("--input", required=True, help="image file or folder")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    if args.checkpoint:
        from ..translate import translate_checkpoint

        written = translate_checkpoint(args.checkpoint, args.direction, args.input, args.output, args.device,
                                       progress=not args.no_progress)
    else:
        from serving.translate import translate_model

        written = translate_model(args.model, args.direction, args.input, args.output,
                                  progress=not args.no_progress)
    print(f"translated {len(written)} image(s) into {args.output}")
    return 0
