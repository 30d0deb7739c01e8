"""Import generators saved by the authors' CycleGAN code as a checkpoint that translate,
evaluate, export and serve accept (OUT's latest checkpoint, generators only, and
OUT/config.json). A published pretrained model (horse2zebra.pth, ...) holds one generator:
give it with --pth and the direction it translates (--direction, default AtoB); the other
direction then gets a copy of the same weights, recorded in the checkpoint. Both generators
of one of their runs: --pth-AtoB latest_net_G_A.pth --pth-BtoA latest_net_G_B.pth. --netG
(and --ngf, --norm, --dropout) must describe the files; channel counts are read from the
weights; everything else comes from --params/--set.
"""
import json


def add_arguments(parser):
    parser.add_argument("--pth", help="one generator .pth; it translates in --direction")
    parser.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB",
                        help="the direction --pth translates (default: AtoB)")
    parser.add_argument("--pth-AtoB", dest="pth_AtoB", help="the A -> B generator (the authors' net_G_A)")
    parser.add_argument("--pth-BtoA", dest="pth_BtoA", help="the B -> A generator (the authors' net_G_B)")
    parser.add_argument("--netG", required=True,
                        help="the architecture the files were trained with: resnet_<N>blocks | unet_128 | unet_256")
    parser.add_argument("--ngf", type=int, default=64, help="generator filters in the first conv (default: 64)")
    parser.add_argument("--norm", choices=["instance", "batch", "none"], default="instance",
                        help="normalisation (default: instance, the authors' CycleGAN default; pix2pix uses batch)")
    parser.add_argument("--dropout", action="store_true",
                        help="the generator was built with dropout (trained without --no_dropout)")
    parser.add_argument("--out", default="runs/import", help="output folder (default: runs/import)")
    parser.add_argument("--force", action="store_true", help="replace OUT's latest checkpoint if it exists")


def run(args):
    from .args import load_args_config
    from ..errors import UserError
    from ..engine.import_pth import import_config, import_generators

    files = {}
    if args.pth:
        files[args.direction] = args.pth
    for direction, path in (("AtoB", args.pth_AtoB), ("BtoA", args.pth_BtoA)):
        if path:
            if direction in files:
                raise UserError(f"--pth-{direction}: the {direction} generator is already given by --pth")
            files[direction] = path
    if not files:
        raise UserError("--pth, --pth-AtoB or --pth-BtoA: give at least one generator file")
    cfg = import_config(load_args_config(args), args.netG, args.ngf, args.norm, args.dropout)
    summary = import_generators(files, cfg, args.out, overwrite=args.force)
    print(json.dumps(summary))
    return 0
