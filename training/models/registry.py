"""The one map from a ``model.netG`` / ``model.netD`` name to its network (the authors'
``define_G`` / ``define_D``) and to what the rest of the project must know about it.

A generator entry (``GeneratorSpec``) says
  build           (model config, input channels, output channels) -> the module, uninitialised
  size_multiple   sides the generator gives back unchanged: the loader, ``translate``, export
                  and serving pad to it (a ResNet halves twice: 4; a U-Net of depth d: 2**d)
  min_size        the smallest side it accepts
  authors_layout  the import flags an authors' ``.pth`` state dict looks like under this
                  family's key layout (``cyclegan import`` uses it to say what a file is), or None

Adding a generator is its module plus one ``register_generator`` call (tests register a toy
one). ``resnet_<N>blocks`` is a family: any N. Builders import their modules when called, so
this map (and the config that validates names against it) imports without torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

# The loader rounds every image side to a multiple of this (see data/transforms.py), so a
# generator whose multiple divides it trains on any crop.
LOADER_MULTIPLE = 4


@dataclass(frozen=True)
class GeneratorSpec:
    build: Callable[[Any, int, int], Any]
    size_multiple: int
    min_size: int
    authors_layout: Callable[[dict], str | None] | None = None


def authors_flags(netG: str, ngf: int, batch: bool = False, dropout: bool = False) -> str:
    """The ``cyclegan import`` flags describing a generator, as error messages quote them."""
    return f"--netG {netG} --ngf {ngf}" + (" --norm batch" if batch else "") + (" --dropout" if dropout else "")


# -- ResNet generators ------------------------------------------------------------------------

def _resnet(n_blocks: int) -> GeneratorSpec:
    def build(m, input_nc: int, output_nc: int):
        from .resnet import ResnetGenerator

        return ResnetGenerator(input_nc, output_nc, m.ngf, n_blocks, m.norm, dropout=not m.no_dropout)

    # The 1-pixel reflection pads at a quarter of the size need 2 pixels there: 8.
    return GeneratorSpec(build, size_multiple=4, min_size=8, authors_layout=_resnet_layout)


def _resnet_layout(state: dict) -> str | None:
    """``model.1.weight``, ``model.N.conv_block.M...``: the number of blocks from the keys.
    Instance norm and no norm leave the same keys; batch norm adds its own weights. With
    dropout a block is [pad, conv, norm, relu, dropout, pad, conv, norm]: conv_block.6 is a conv."""
    first = state.get("model.1.weight")
    if first is None or first.dim() != 4:
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    if not blocks:
        return None
    dropout = any(k.endswith(".conv_block.6.weight") and v.dim() == 4 for k, v in state.items())
    return authors_flags(f"resnet_{len(blocks)}blocks", first.shape[0], "model.2.weight" in state, dropout)


# -- U-Net generators -------------------------------------------------------------------------

def _unet(num_downs: int) -> GeneratorSpec:
    def build(m, input_nc: int, output_nc: int):
        from .unet import UnetGenerator

        return UnetGenerator(input_nc, output_nc, num_downs, m.ngf, m.norm, dropout=not m.no_dropout)

    multiple = 2 ** num_downs
    return GeneratorSpec(build, size_multiple=multiple, min_size=multiple, authors_layout=_unet_layout)


def _unet_layout(state: dict) -> str | None:
    """Level k's own parameters are named with k + 1 "model" parts: model.model.0.weight
    (outermost), model.model.1.model.1.weight, ... Dropout leaves no keys of its own."""
    if "model.model.0.weight" not in state:
        return None
    levels = max(k.split(".").count("model") for k in state) - 1
    ngf = state["model.model.0.weight"].shape[0]
    name = next((n for n, depth in UNET_DEPTHS.items() if depth == levels), None)
    if name is None:
        return f"a U-Net of {levels} levels (ngf {ngf}), which is neither {' nor '.join(UNET_DEPTHS)}"
    return authors_flags(name, ngf, "model.model.1.model.2.weight" in state)


UNET_DEPTHS = {"unet_128": 7, "unet_256": 8}
_RESNET = re.compile(r"resnet_(\d+)blocks")

GENERATORS: dict[str, GeneratorSpec] = {name: _unet(depth) for name, depth in UNET_DEPTHS.items()}


def register_generator(name: str, spec: GeneratorSpec) -> None:
    """Make ``model.netG: NAME`` mean ``spec`` everywhere (config, training, export, import)."""
    GENERATORS[name] = spec


def generator_spec(name: str) -> GeneratorSpec | None:
    """The entry for a ``model.netG`` name, or None for an unknown name."""
    if name in GENERATORS:
        return GENERATORS[name]
    match = _RESNET.fullmatch(name)
    return _resnet(int(match.group(1))) if match else None


def known_generators() -> str:
    extra = [n for n in GENERATORS if n not in UNET_DEPTHS]
    return " | ".join(["resnet_<N>blocks", *UNET_DEPTHS, *extra])


def authors_layout(state: dict) -> str | None:
    """The import flags an authors' state dict looks like, trying each family's layout once."""
    layouts = [_resnet_layout, *(s.authors_layout for s in GENERATORS.values() if s.authors_layout)]
    for layout in dict.fromkeys(layouts):
        guess = layout(state)
        if guess is not None:
            return guess
    return None


# -- discriminators ---------------------------------------------------------------------------

def _patchgan(m, input_nc: int, n_layers: int | None = None):
    from .discriminators import NLayerDiscriminator

    return NLayerDiscriminator(input_nc, m.ndf, m.n_layers_D if n_layers is None else n_layers, m.norm)


def _pixelgan(m, input_nc: int):
    from .discriminators import PixelDiscriminator

    return PixelDiscriminator(input_nc, m.ndf, m.norm)


# basic: the 70x70 PatchGAN (3 layers); n_layers: PatchGAN of model.n_layers_D; pixel: 1x1
DISCRIMINATORS: dict[str, Callable[[Any, int], Any]] = {
    "basic": lambda m, input_nc: _patchgan(m, input_nc, 3),
    "n_layers": _patchgan,
    "pixel": _pixelgan,
}


# -- building ---------------------------------------------------------------------------------

def build_generator(m, input_nc: int = 3, output_nc: int = 3, init: bool = True):
    """``define_G``: the generator ``m.netG`` (``m`` is the ``model:`` config section)."""
    spec = generator_spec(m.netG)
    if spec is None:
        raise ValueError(f"unknown netG {m.netG!r} (known: {known_generators()})")
    net = spec.build(m, input_nc, output_nc)
    # what translate pads to; export records the same two numbers in the ONNX metadata
    net.size_multiple, net.min_size = spec.size_multiple, spec.min_size
    return _initialised(net, m) if init else net


def build_discriminator(m, input_nc: int = 3, init: bool = True):
    """``define_D``: the discriminator ``m.netD``."""
    if m.netD not in DISCRIMINATORS:
        raise ValueError(f"unknown netD {m.netD!r} (known: {', '.join(DISCRIMINATORS)})")
    net = DISCRIMINATORS[m.netD](m, input_nc)
    return _initialised(net, m) if init else net


def _initialised(net, m):
    from .layers import init_weights

    return init_weights(net, m.init_type, m.init_gain)


def size_multiple(netG: str) -> int:
    return _spec(netG).size_multiple


def min_size(netG: str) -> int:
    return _spec(netG).min_size


def _spec(netG: str) -> GeneratorSpec:
    spec = generator_spec(netG)
    if spec is None:
        raise ValueError(f"unknown netG {netG!r} (known: {known_generators()})")
    return spec
