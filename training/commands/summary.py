"""Print each network's parameter count and one generator pass's multiply-accumulates."""
import json


def add_arguments(parser):
    parser.add_argument("--size", type=int, default=None, help="image side for the MAC count (default: data.crop_size)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args):
    import torch

    from .args import load_args_config
    from ..models.cyclegan import CycleGAN
    from ..models.layers import count_parameters, generator_macs

    cfg = load_args_config(args)
    size = args.size or cfg.data.crop_size
    model = CycleGAN(cfg, init=False)
    rows = {name: count_parameters(getattr(model, name)) for name in ("G_A", "G_B", "D_A", "D_B")}
    first_conv = next(m for m in model.G_A.modules() if isinstance(m, torch.nn.Conv2d))
    macs = generator_macs(model.G_A, size, first_conv.in_channels)
    if args.json:
        print(json.dumps({"parameters": rows, "generator_macs": macs, "size": size}))
        return 0
    print(f"netG={cfg.model.netG} ngf={cfg.model.ngf} netD={cfg.model.netD} ndf={cfg.model.ndf} norm={cfg.model.norm}")
    for name, count in rows.items():
        print(f"  {name:4s} {count:>14,d} parameters")
    print(f"  one generator pass at {size}x{size}: {macs / 1e9:,.2f} GMAC ({2 * macs / 1e9:,.1f} GFLOP)")
    return 0
