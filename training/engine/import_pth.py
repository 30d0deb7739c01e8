"""Import generators saved by the authors' CycleGAN code (``.pth`` state dicts).

The authors save each network as its bare ``state_dict``: ``latest_net_G_A.pth`` holds
G_A (A -> B), ``latest_net_G_B.pth`` G_B (B -> A), and each published pretrained model
(``horse2zebra.pth``, ...) holds one generator, for one direction. Their keys are ours:
``ResnetGenerator`` ``model.1.weight``, ``model.10.conv_block.1.weight``...;
``UnetGenerator`` ``model.model.0.weight``, ``model.model.1.model.1.weight``...

``import_generators`` turns one or two such files into a checkpoint in the trainer's
format (``checkpoint.FORMAT``) that holds the generators only, so ``load_generators`` and
everything built on it (translate, evaluate, export, serve) accept it. A direction with
no file of its own gets a copy of the other's weights, and the checkpoint says so under
``imported``.

Loading follows the authors' ``load_networks``: files from PyTorch < 0.4 carry
``running_mean``/``running_var``/``num_batches_tracked`` entries for instance-norm layers
that keep no running statistics; those entries are dropped. Anything else that does not
match the chosen architecture is a ``UserError`` listing the offending keys.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..config import Config, config_from_dict
from ..errors import UserError
from ..layout import TrainRun
from ..models.registry import LOADER_MULTIPLE, authors_flags, authors_layout, size_multiple
from ..utils import atomic_path, atomic_write_text

DIRECTIONS = ("AtoB", "BtoA")
SLOT = {"AtoB": "G_A", "BtoA": "G_B"}
MAX_LISTED = 12


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an authors' ``.pth`` file; a DataParallel ``module.`` prefix is removed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: .pth file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or truncated files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable PyTorch state dict ({reason[:200]})") from None
    if isinstance(obj, dict) and "format" in obj and "models" in obj:
        raise UserError(f"{path}: this is already a cyclegan checkpoint; use it directly, no import needed")
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{path}: expected a generator state dict (parameter name -> tensor), "
                        f"got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: expected a generator state dict (parameter name -> tensor); "
                        f"these entries are not tensors: {_listing([str(k) for k in bad])}")
    state = dict(obj)  # drops the OrderedDict's _metadata, as the authors' loader does
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def drop_instance_norm_stats(state: dict[str, torch.Tensor], net: nn.Module) -> list[str]:
    """Remove, in place, the running-statistics entries of ``net``'s instance-norm layers
    that keep none (the authors' ``__patch_instance_norm_state_dict``). Returns the keys."""
    modules = dict(net.named_modules())
    dropped = []
    for key in list(state):
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if not type(module).__name__.startswith("InstanceNorm"):
            continue
        if leaf == "num_batches_tracked" or (leaf in ("running_mean", "running_var")
                                             and getattr(module, leaf, None) is None):
            del state[key]
            dropped.append(key)
    return dropped


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f", ... ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else "")


def _channels(state: dict[str, torch.Tensor], net: nn.Module) -> tuple[int | None, int | None]:
    """(input_nc, output_nc) read from the file's first and last convolution weights."""
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    (first_name, first), (last_name, last) = convs[0], convs[-1]
    w_in, w_out = state.get(f"{first_name}.weight"), state.get(f"{last_name}.weight")
    # Conv2d weights are (out, in, k, k); ConvTranspose2d weights are (in, out, k, k).
    nc_in = None if w_in is None or w_in.dim() != 4 else int(
        w_in.shape[0] if isinstance(first, nn.ConvTranspose2d) else w_in.shape[1])
    nc_out = None if w_out is None or w_out.dim() != 4 else int(
        w_out.shape[1] if isinstance(last, nn.ConvTranspose2d) else w_out.shape[0])
    return nc_in, nc_out


def describe_model(cfg: Config) -> str:
    m = cfg.model
    return f"--netG {m.netG} --ngf {m.ngf} --norm {m.norm}" + ("" if m.no_dropout else " --dropout")


def load_authors_generator(path: str | Path, cfg: Config) -> tuple[nn.Module, dict]:
    """Build ``cfg.model``'s generator with the file's channel counts and load the file.

    Returns (generator in eval mode, info: path, input_nc, output_nc, dropped keys, sha256).
    """
    from ..utils import sha256_file
    from ..models.registry import build_generator

    state = read_state_dict(path)
    with torch.device("meta"):  # only its layout is needed: no memory, no initialisation
        probe = build_generator(cfg.model, 3, 3, init=False)
    nc_in, nc_out = _channels(state, probe)
    net = build_generator(cfg.model, nc_in or 3, nc_out or 3, init=False)
    dropped = drop_instance_norm_stats(state, net)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
        guess = authors_layout(state)
        m = cfg.model
        asked = authors_flags(m.netG, m.ngf, m.norm == "batch", not m.no_dropout and m.netG.startswith("resnet"))
        hint = f"; the file looks like {guess}" if guess and guess != asked else ""
        raise UserError(f"{path}: does not match {describe_model(cfg)}: " + "; ".join(problems) + hint)
    net.load_state_dict(state)
    info = {"path": str(path), "sha256": sha256_file(path), "input_nc": net_channels(net)[0],
            "output_nc": net_channels(net)[1], "dropped_keys": len(dropped)}
    return net.eval(), info


def net_channels(net: nn.Module) -> tuple[int, int]:
    """(input_nc, output_nc) of a generator, from its first and last convolutions."""
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    first, last = convs[0], convs[-1]
    return first.in_channels, last.out_channels


def import_config(cfg: Config, netG: str, ngf: int, norm: str, dropout: bool) -> Config:
    """``cfg`` with the model flags of the import applied and validated.

    A generator with a size multiple the loader does not round to (a U-Net: 128 or 256) only
    takes such sides; when the params' crop size is not one, the stored training size becomes
    that multiple (the authors' size).
    """
    raw = cfg.to_dict()
    raw["model"].update(netG=netG, ngf=ngf, norm=norm, no_dropout=not dropout)
    multiple = size_multiple(netG)
    if LOADER_MULTIPLE % multiple and raw["data"]["crop_size"] % multiple:
        raw["data"]["crop_size"] = multiple
        raw["data"]["load_size"] = max(raw["data"]["load_size"], multiple)
    return config_from_dict(raw, "import flags")


def import_generators(files: dict[str, str | Path], cfg: Config, out: str | Path, overwrite: bool = False) -> dict:
    """Write the latest checkpoint and config of a run folder ``out`` (``layout.TrainRun``)
    from the authors' files.

    ``files`` maps a direction (``AtoB``, ``BtoA``) to its ``.pth``; at least one. ``cfg``
    carries the architecture (``model.*``) and the rest of the configuration to store. An
    existing checkpoint is replaced only with ``overwrite``.
    Domain A has the AtoB generator's input channels; the stored config says so with
    ``data.direction = AtoB`` and ``data.input_nc``/``output_nc`` read from the weights.
    """
    from .checkpoint import FORMAT, load_generators

    unknown = [d for d in files if d not in DIRECTIONS]
    if unknown or not files:
        raise UserError(f"import: give a .pth for AtoB and/or BtoA (got {', '.join(map(str, files)) or 'none'})")
    raw = cfg.to_dict()
    raw["data"]["direction"] = "AtoB"  # G_A is the AtoB generator, whatever the params say
    cfg = config_from_dict(raw, "import")
    nets, infos = {}, {}
    for direction, path in files.items():
        nets[direction], infos[direction] = load_authors_generator(path, cfg)
    given = next(iter(files))
    for direction in DIRECTIONS:
        if direction not in nets:
            nc_in, nc_out = net_channels(nets[given])
            if nc_in != nc_out:
                other = "BtoA" if given == "AtoB" else "AtoB"
                raise UserError(f"{files[given]}: maps {nc_in} to {nc_out} channels, so it cannot stand in for "
                                f"the {other} direction; give --pth-{other} as well")
            nets[direction] = nets[given]
            infos[direction] = {"copy_of": given}
    nc_a, nc_b = net_channels(nets["AtoB"])
    nc_b2, nc_a2 = net_channels(nets["BtoA"])
    if (nc_a, nc_b) != (nc_a2, nc_b2):
        raise UserError(f"import: the AtoB generator maps {nc_a} -> {nc_b} channels but the BtoA one "
                        f"maps {nc_b2} -> {nc_a2}; they are not the two directions of one model")
    raw = cfg.to_dict()
    raw["data"].update(input_nc=nc_a, output_nc=nc_b)
    if nc_a != nc_b:
        raw["train"]["lambda_identity"] = 0.0  # the identity loss needs equal channel counts
    cfg = config_from_dict(raw, "import")

    run = TrainRun(out)
    path = run.latest
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; choose another --out or pass --force to replace it")
    state = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "epoch": 0, "epoch_iter": 0, "global_iter": 0,
        "models": {SLOT[d]: {k: v.clone() for k, v in nets[d].state_dict().items()} for d in DIRECTIONS},
        "imported": infos,
    }
    # Check the written file loads the way translate/export/serve load it before it takes
    # the final name, so a failed import never replaces a good checkpoint.
    with atomic_path(path) as staging:
        torch.save(state, staging)
        load_generators(staging)
    atomic_write_text(run.config, json.dumps(cfg.to_dict(), indent=2))
    return {"checkpoint": str(path), "netG": cfg.model.netG, "ngf": cfg.model.ngf, "norm": cfg.model.norm,
            "input_nc": nc_a, "output_nc": nc_b, "imported": infos}
