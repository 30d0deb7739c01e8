"""Exactness of the project's training step against the authors' step.

Runs ``../shared/bench/reference_cyclegan.py`` (loaded by path, never copied) and the
project's ``TrainingStep`` on the same weights and the same images, fp32 on CPU, and
prints per-iteration loss differences and the worst per-tensor parameter difference,
each as ||delta|| / ||ref||, for each speed lever that claims to keep the math.

The biases of convolutions that feed an affine-free instance norm are reported apart:
their true gradient is zero, so Adam turns rounding noise into +-lr steps.

With ``--pool-size N`` both history pools hold N images (the reference's are resized to
match) and both sides draw the pools' coin flips from one generator seeded alike, so after N
iterations the discriminators train on swapped-in old fakes on both sides; the report counts
the swaps.

    python bench/exactness.py                  # default levers, 64x64, 9 blocks, 3 iterations
    python bench/exactness.py --size 32 --iters 3 --n-blocks 6
    python bench/exactness.py --device cuda --size 256   # the GPU levers (TF32 off)
    python bench/exactness.py --size 32 --iters 8 --pool-size 2   # the pools fill and swap

Needs torch and numpy only.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "bench" / "reference_cyclegan.py"
sys.path.insert(0, str(ROOT))

from training.config import Config
from training.models.cyclegan import CycleGAN, TrainingStep

TOLERANCE = 1e-5
# lever -> (TrainConfig overrides, whether the lever claims to keep the reference's numerics)
LEVERS = {
    "plain": (dict(merge_passes=False, fused_adam=False), True),
    "fused Adam kernel (forced on CPU)": (dict(merge_passes=False, fused_adam="force"), False),
    "channels_last flag (ignored on CPU)": (dict(merge_passes=False, fused_adam=True, channels_last=True), True),
    "merge_passes": (dict(merge_passes=True, fused_adam=False), False),
    "merge_passes + fused_adam": (dict(merge_passes=True, fused_adam=True), False),
}
# The same question on a GPU, where every lever is real (bench/gpu_suite.py runs these with TF32 off).
CUDA_LEVERS = {
    "default (fused Adam)": ({}, False),
    "plain (per-tensor Adam)": (dict(fused_adam=False), True),
    "channels_last": (dict(fused_adam=False, channels_last=True), True),
    "merge_passes": (dict(fused_adam=False, merge_passes=True), False),
    "merge_passes + fused_adam + channels_last": (dict(merge_passes=True, channels_last=True), False),
    "bf16 autocast": (dict(amp_bf16=True), False),
    "compile": (dict(fused_adam=False, compile=True), False),
    "compile + CUDA graphs": (dict(fused_adam=False, compile=True, cuda_graphs=True), False),
}


def load_reference(path: Path = REFERENCE):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: reference implementation not found (../shared is absent?)")
    spec = importlib.util.spec_from_file_location("reference_cyclegan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zero_gradient_biases(net: nn.Module) -> set[str]:
    """Names of conv biases whose output feeds an affine-free InstanceNorm directly."""
    names = set()
    for prefix, module in net.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, layer), (_, following) in zip(children, children[1:]):
            if (isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and layer.bias is not None
                    and isinstance(following, nn.InstanceNorm2d) and not following.affine):
                names.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return names


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    ref = b.norm().item()
    return (a - b).norm().item() / ref if ref > 0 else (a - b).norm().item()


NETS = ("G_A", "G_B", "D_A", "D_B")


class CountingRandom(random.Random):
    """The pools' generator; counts the swaps (a swap draws the stored image's index)."""
    swaps = 0

    def randrange(self, *args, **kwargs):
        self.swaps += 1
        return super().randrange(*args, **kwargs)


def make_images(size: int, iters: int, seed: int, device="cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``iters`` (real A, real B) pairs in [-1, 1], drawn on the CPU so every device sees the same."""
    g = torch.Generator().manual_seed(seed + 1)
    return [((torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device),
             (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device)) for _ in range(iters)]


def parameter_differences(reference, other) -> dict:
    """Worst ||delta|| / ||ref|| over every parameter of the four networks of ``other``
    (the project's model, or a second reference) against ``reference``; the zero-gradient
    biases apart. The project's names carry a ``model.`` prefix the reference's lack."""
    worst, worst_name, worst_excluded, per_tensor = 0.0, "", 0.0, {}
    for name in NETS:
        ref_net, net = getattr(reference, name), getattr(other, name)
        excluded = zero_gradient_biases(ref_net)
        ref_params = dict(ref_net.named_parameters())
        for pname, p in net.named_parameters():
            key = pname.removeprefix("model.")
            diff = relative(p.detach().float().cpu(), ref_params[key].detach().float().cpu())
            per_tensor[f"{name}.{key}"] = diff
            if key in excluded:
                worst_excluded = max(worst_excluded, diff)
            elif diff > worst:
                worst, worst_name = diff, f"{name}.{key}"
    return {"max_param_rel_diff": worst, "worst_param": worst_name,
            "max_zero_grad_bias_rel_diff": worst_excluded, "per_tensor": per_tensor}


def compare(lever: dict, size: int = 64, iters: int = 3, ngf: int = 64, n_blocks: int = 9, seed: int = 0,
            force_channels_last: bool = False, device: str | torch.device = "cpu",
            reference: Path = REFERENCE, pool_size: int | None = None) -> dict:
    """Run both steps ``iters`` times from identical weights on ``device``; return the differences.

    ``lever`` overrides ``TrainConfig`` fields; an empty one is the project's default step.
    ``pool_size`` None keeps both sides' pools as they are (50: they only fill in a short run);
    a number resizes both and makes them draw from twin generators (see the module docstring).
    """
    device = torch.device(device)
    ref_module = load_reference(Path(reference))
    torch.manual_seed(seed)
    random.seed(seed)
    reference_model = ref_module.ReferenceCycleGAN(str(device), ngf=ngf, n_blocks=n_blocks)

    cfg = Config()
    cfg.model.ngf, cfg.model.netG = ngf, f"resnet_{n_blocks}blocks"
    force_fused = lever.get("fused_adam") == "force"
    for key, value in lever.items():
        setattr(cfg.train, key, True if value == "force" else value)
    if pool_size is not None:
        cfg.train.pool_size = pool_size
    model = CycleGAN(cfg, init=False)
    for name in NETS:
        ref_state = getattr(reference_model, name).state_dict()
        getattr(model, name).load_state_dict({f"model.{k}": v for k, v in ref_state.items()})
    model.to(device)
    step = TrainingStep(model, cfg.train, device)
    pool_rng = None
    if pool_size is not None:
        # The reference's pools draw from the global `random`, B's query before A's in each
        # iteration; ours each own a generator, queried in the same order. One generator shared
        # by our two pools, seeded as the global one, makes both sides draw the same coins.
        reference_model.pool_A.size = reference_model.pool_B.size = pool_size
        pool_rng = CountingRandom(seed + 2)
        random.seed(seed + 2)
        step.pool_A.rng = step.pool_B.rng = pool_rng
    if force_fused:  # fused_adam only takes the fused kernel on CUDA; check that kernel's math here
        kwargs = dict(lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), fused=True)
        step.opt_G = torch.optim.Adam([*model.G_A.parameters(), *model.G_B.parameters()], **kwargs)
        step.opt_D = torch.optim.Adam([*model.D_A.parameters(), *model.D_B.parameters()], **kwargs)
    if force_channels_last:  # bypass the CPU guard, to show the harness catches the fault
        step.channels_last = True
        model.to(memory_format=torch.channels_last)

    loss_diffs = []
    for real_A, real_B in make_images(size, iters, seed, device):
        ref_losses = reference_model.step(real_A, real_B)
        ours = step(real_A, real_B).losses
        mine = (ours["G"].item(), ours["D_A"].item(), ours["D_B"].item())
        loss_diffs.append(max(abs(m - r) / abs(r) for m, r in zip(mine, ref_losses)))

    params = parameter_differences(reference_model, model)
    return {"loss_rel_diff_per_iter": loss_diffs, "max_loss_rel_diff": max(loss_diffs), **params,
            "pool_swaps": pool_rng.swaps if pool_rng is not None else 0,
            "pool_images": [len(step.pool_A.images), len(step.pool_B.images)],
            "exact": max(loss_diffs) <= TOLERANCE and params["max_param_rel_diff"] <= TOLERANCE}


def compare_reference_with_itself(size: int = 64, iters: int = 3, ngf: int = 64, n_blocks: int = 9, seed: int = 0,
                                  device: str | torch.device = "cpu", reference: Path = REFERENCE) -> dict:
    """Two copies of the reference step from identical weights on the same images: the
    device's own run-to-run difference (non-deterministic kernels), the floor under ``compare``."""
    device = torch.device(device)
    ref_module = load_reference(Path(reference))
    torch.manual_seed(seed)
    random.seed(seed)
    first = ref_module.ReferenceCycleGAN(str(device), ngf=ngf, n_blocks=n_blocks)
    second = ref_module.ReferenceCycleGAN(str(device), ngf=ngf, n_blocks=n_blocks)
    for name in NETS:
        getattr(second, name).load_state_dict(getattr(first, name).state_dict())
    loss_diffs = []
    for real_A, real_B in make_images(size, iters, seed, device):
        a, b = first.step(real_A, real_B), second.step(real_A, real_B)
        loss_diffs.append(max(abs(x - y) / abs(x) for x, y in zip(a, b)))
    params = parameter_differences(first, second)
    return {"loss_rel_diff_per_iter": loss_diffs, "max_loss_rel_diff": max(loss_diffs), **params,
            "exact": max(loss_diffs) <= TOLERANCE and params["max_param_rel_diff"] <= TOLERANCE}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--n-blocks", type=int, default=9)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU levers with TF32 off")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the authors' step, loaded by path")
    parser.add_argument("--show-channels-last-fault", action="store_true",
                        help="also run channels_last forced on CPU (torch's instance_norm fault)")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="history pools of this size on both sides, drawing alike (default: 50, unfilled)")
    args = parser.parse_args()
    cuda = torch.device(args.device).type == "cuda"
    if cuda:   # strict fp32: TF32 convolutions differ from the reference by ~1e-3 by design
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, {args.device} fp32, {args.size}x{args.size}, ngf {args.ngf}, "
          f"{args.n_blocks} blocks, {args.iters} iterations, tolerance {TOLERANCE:g}"
          + (f", pools of {args.pool_size}" if args.pool_size is not None else ""))
    print(f"{'lever':40s} {'max loss diff':>14s} {'max param diff':>15s} {'zero-grad biases':>17s}  exact  claims")
    ok = True
    for label, (lever, claims_exact) in (CUDA_LEVERS if cuda else LEVERS).items():
        r = compare(lever, args.size, args.iters, args.ngf, args.n_blocks, device=args.device,
                    reference=args.reference, pool_size=args.pool_size)
        if claims_exact:
            ok &= r["exact"]
        print(f"{label:40s} {r['max_loss_rel_diff']:14.2e} {r['max_param_rel_diff']:15.2e} "
              f"{r['max_zero_grad_bias_rel_diff']:17.2e}  {'yes' if r['exact'] else 'NO':5s}  "
              f"{'exact' if claims_exact else 'no'}"
              + (f"  ({r['pool_swaps']} pool swaps)" if args.pool_size is not None else ""))
    if args.show_channels_last_fault:
        r = compare(LEVERS["plain"][0], args.size, args.iters, args.ngf, args.n_blocks,
                    force_channels_last=True, reference=args.reference)
        print(f"{'channels_last FORCED on CPU':40s} {r['max_loss_rel_diff']:14.2e} {r['max_param_rel_diff']:15.2e} "
              f"{r['max_zero_grad_bias_rel_diff']:17.2e}  {'yes' if r['exact'] else 'NO'} (expected NO)")
        print(json.dumps({"worst_param": r["worst_param"]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
