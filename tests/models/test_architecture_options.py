"""The network options of the authors' code, each tested for what it means:
U-Net generators (shapes, skips, bottleneck), dropout, PixelGAN and n-layer PatchGAN
receptive fields, and the four initialisations with their gain."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from training.config import ModelConfig, config_from_dict
from training.errors import UserError
from training.models.discriminators import NLayerDiscriminator
from training.models.registry import build_discriminator, build_generator
from training.models.layers import count_parameters, init_weights
from training.models.discriminators import PixelDiscriminator
from training.models.unet import UnetSkipConnectionBlock


def unet(netG="unet_128", ngf=4, input_nc=3, output_nc=3, **kw):
    return build_generator(ModelConfig(netG=netG, ngf=ngf, **kw), input_nc, output_nc)


def input_gradient(net, x, index):
    """d net(x)[index] / d x."""
    x = x.clone().requires_grad_(True)
    net(x)[index].backward()
    return x.grad


# -- U-Net ---------------------------------------------------------------------------------

@pytest.mark.parametrize("netG,size", [("unet_128", 128), ("unet_256", 256)])
def test_unet_output_shape_and_bottleneck(netG, size):
    net = unet(netG, input_nc=1, output_nc=2)
    innermost = [m for m in net.modules() if isinstance(m, UnetSkipConnectionBlock)][-1]
    bottleneck = []
    innermost.model[1].register_forward_hook(lambda m, i, o: bottleneck.append(o.shape))
    with torch.no_grad():
        y = net(torch.rand(2, 1, size, 2 * size) * 2 - 1)
    assert y.shape == (2, 2, size, 2 * size)
    assert y.abs().max() <= 1  # tanh output
    # the image is halved down to one pixel (per `size` square) at the innermost level
    assert bottleneck == [torch.Size([2, 4 * 8, 1, 2])]


@pytest.mark.parametrize("netG,depth", [("unet_128", 7), ("unet_256", 8)])
def test_unet_levels_and_widths(netG, depth):
    net = unet(netG, ngf=4)
    blocks = [m for m in net.modules() if isinstance(m, UnetSkipConnectionBlock)]
    assert len(blocks) == depth
    assert net.size_multiple == 2 ** depth
    widths = [b.model[1 if i else 0].out_channels for i, b in enumerate(blocks)]
    assert widths == [4, 8, 16] + [32] * (depth - 3)  # ngf, 2ngf, 4ngf, then 8ngf


def test_unet_parameter_counts_match_the_authors_printout():
    """The authors' code prints (pix2pix, batch norm, ngf 64): unet_256 54.414 M, unet_128 41.829 M."""
    with torch.device("meta"):
        counts = {n: count_parameters(build_generator(ModelConfig(netG=n, norm="batch"), init=False))
                  for n in ("unet_128", "unet_256")}
    assert round(counts["unet_128"] / 1e6, 3) == 41.829
    assert round(counts["unet_256"] / 1e6, 3) == 54.414


def test_unet_skips_carry_each_levels_input_to_its_decoder():
    """Every level but the outermost returns cat([LeakyReLU(x), decoder output])."""
    net = unet("unet_128", ngf=4)
    blocks = [m for m in net.modules() if isinstance(m, UnetSkipConnectionBlock)][1:]
    seen = []

    def pre(module, args):
        module._x = args[0].detach().clone()

    def post(module, args, out):
        c = module._x.shape[1]
        seen.append(out.shape[1] == 2 * c and torch.equal(out[:, :c], F.leaky_relu(module._x, 0.2)))

    for b in blocks:
        b.register_forward_pre_hook(pre)
        b.register_forward_hook(post)
    with torch.no_grad():
        net(torch.rand(1, 3, 128, 128))
    assert seen == [True] * 6


def test_unet_gradients_flow_through_the_skip_and_the_deep_path():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    near, far = (slice(None), slice(None), slice(60, 68), slice(60, 68)), (0, slice(None), 127, 127)
    index = (0, 0, 64, 64)

    net = unet("unet_128", ngf=4, norm="none").eval()
    grad = input_gradient(net, x, index)
    # The deep path reaches the 1x1 bottleneck, so one output pixel sees the whole image.
    assert grad[far].abs().sum() > 0

    # Cut the deep path where it re-enters the outermost decoder: the input channels
    # ngf: of the last transposed conv read the inner levels, :ngf read the skip.
    upconv = net.model.model[3]
    with torch.no_grad():
        upconv.weight[4:] = 0
    grad = input_gradient(net, x, index)
    assert grad[far].abs().sum() == 0          # nothing far away reaches the output any more
    assert grad[near].abs().sum() > 0          # the skip alone still carries the input

    net = unet("unet_128", ngf=4, norm="none").eval()
    with torch.no_grad():
        net.model.model[3].weight[:4] = 0      # cut the skip instead: the deep path remains
    grad = input_gradient(net, x, index)
    assert grad[far].abs().sum() > 0


def test_unet_rejects_sides_it_cannot_halve_enough():
    with pytest.raises(ValueError, match="divisible by 128, got 96x128"):
        unet("unet_128")(torch.rand(1, 3, 96, 128))
    with pytest.raises(UserError, match="crop must be a multiple of 256, got 128"):
        config_from_dict({"model": {"netG": "unet_256"}, "data": {"crop_size": 128, "load_size": 143}})
    config_from_dict({"model": {"netG": "unet_256"}, "data": {"crop_size": 256, "load_size": 286}})


# -- dropout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("netG,dropouts,size", [("unet_128", 2, 128), ("unet_256", 3, 256), ("resnet_3blocks", 3, 32)])
def test_no_dropout_switches_dropout(netG, dropouts, size):
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size)
    for no_dropout in (True, False):
        net = build_generator(ModelConfig(netG=netG, ngf=4, no_dropout=no_dropout))
        count = sum(isinstance(m, nn.Dropout) for m in net.modules())
        assert count == (0 if no_dropout else dropouts)
        net.train()
        with torch.no_grad():
            differs = not torch.equal(net(x), net(x))
        assert differs == (not no_dropout)  # dropout draws a new mask on each training pass
        net.eval()
        with torch.no_grad():
            assert torch.equal(net(x), net(x))  # and none at test time
    if netG.startswith("unet"):
        # the authors place dropout only in the middle levels, of width 8 ngf
        net = build_generator(ModelConfig(netG=netG, ngf=4, no_dropout=False))
        for block in (m for m in net.modules() if isinstance(m, UnetSkipConnectionBlock)):
            if isinstance(block.model[-1], nn.Dropout):
                assert block.model[1].out_channels == 32 and block.model[1].in_channels == 32


# -- discriminators ------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["none", "batch"])
def test_pixel_discriminator_judges_each_pixel_alone(norm):
    torch.manual_seed(0)
    net = build_discriminator(ModelConfig(netD="pixel", ndf=8, norm=norm))
    assert isinstance(net, PixelDiscriminator)
    net.eval()  # batch norm in eval mode uses fixed statistics: no mixing across pixels
    x = torch.rand(2, 3, 20, 28)
    assert net(x).shape == (2, 1, 20, 28)
    grad = input_gradient(net, x, (1, 0, 7, 11))
    nonzero = grad.abs().sum(dim=1).nonzero().tolist()
    assert nonzero == [[1, 7, 11]]  # one sample, one pixel: a 1x1 receptive field


def test_pixel_discriminator_layout_matches_the_authors():
    net = PixelDiscriminator(3, 64, "batch")
    assert list(net.state_dict()) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.3.weight", "net.3.bias",
                                      "net.3.running_mean", "net.3.running_var", "net.3.num_batches_tracked",
                                      "net.5.weight"]
    assert count_parameters(net) == 3 * 64 + 64 + 64 * 128 + 2 * 128 + 128


def receptive_field(n_layers: int) -> int:
    """n stride-2 4x4 convs then two stride-1 4x4 convs: r = 4 + 3, then r -> 2r + 2 per stride-2 conv."""
    r = 7
    for _ in range(n_layers):
        r = 2 * r + 2
    return r


@pytest.mark.parametrize("netD,n_layers", [("basic", 3), ("n_layers", 1), ("n_layers", 2), ("n_layers", 4)])
def test_n_layers_sets_the_patch_size(netD, n_layers):
    rf = receptive_field(n_layers)
    assert receptive_field(3) == 70  # the paper's 70x70 PatchGAN
    net = build_discriminator(ModelConfig(netD=netD, n_layers_D=n_layers, ndf=4, norm="none"), init=False)
    strided = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == n_layers
    size = 2 * rf + 16
    x = torch.rand(1, 3, size, size)
    out_size = net(x).shape[-1]
    grad = input_gradient(net, x, (0, 0, out_size // 2, out_size // 2)).abs().sum(dim=(0, 1))
    rows, cols = grad.sum(dim=1).nonzero().flatten(), grad.sum(dim=0).nonzero().flatten()
    assert rows.min() > 0 and rows.max() < size - 1  # the patch lies inside the image (not clipped)
    assert rows.max() - rows.min() + 1 == rf and cols.max() - cols.min() + 1 == rf


def test_basic_is_n_layers_3():
    basic = build_discriminator(ModelConfig(netD="basic", n_layers_D=5), init=False)
    three = build_discriminator(ModelConfig(netD="n_layers", n_layers_D=3), init=False)
    assert isinstance(basic, NLayerDiscriminator)
    assert [p.shape for p in basic.parameters()] == [p.shape for p in three.parameters()]
    assert count_parameters(basic) == 2_764_737


# -- initialisation ------------------------------------------------------------------------

def init_probe(init_type: str, gain: float) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 128, 3), nn.BatchNorm2d(20000), nn.ConvTranspose2d(128, 64, 3),
                        nn.InstanceNorm2d(64), nn.Linear(256, 512))
    return init_weights(net, init_type, gain)


@pytest.mark.parametrize("init_type,gain", [("normal", 0.02), ("normal", 0.1), ("xavier", 0.5), ("xavier", 2.0),
                                            ("kaiming", 0.02), ("orthogonal", 0.5), ("orthogonal", 1.3)])
def test_init_type_and_gain(init_type, gain):
    net = init_probe(init_type, gain)
    conv, bn, linear = net[0], net[1], net[4]
    fan_in, fan_out = 64 * 9, 128 * 9
    w = conv.weight.detach()
    if init_type == "normal":
        expected_std = gain
    elif init_type == "xavier":
        expected_std = gain * (2 / (fan_in + fan_out)) ** 0.5
    elif init_type == "kaiming":
        expected_std = (2 / fan_in) ** 0.5  # He et al.: the authors' kaiming ignores the gain
    if init_type == "orthogonal":
        for weight in (w.flatten(1), linear.weight.detach().T):  # rows <= cols in both views
            gram = weight @ weight.T
            assert torch.allclose(gram, gain ** 2 * torch.eye(gram.shape[0]), atol=1e-4 * max(1.0, gain ** 2))
    else:
        assert w.std().item() == pytest.approx(expected_std, rel=0.03)
        assert abs(w.mean().item()) < 0.05 * expected_std
    for m in (conv, net[2], linear):
        assert torch.count_nonzero(m.bias) == 0
    # BatchNorm scales: N(1, gain), shifts zero, whatever the conv init
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.05 * gain + 1e-3)
    assert bn.weight.std().item() == pytest.approx(gain, rel=0.05)
    assert torch.count_nonzero(bn.bias) == 0


def test_model_config_init_reaches_the_networks():
    cfg = ModelConfig(netG="resnet_1blocks", ngf=32, netD="pixel", init_type="orthogonal", init_gain=0.7)
    first = build_generator(cfg).model[1].weight.detach().flatten(1)   # 32 x 147
    assert torch.allclose(first @ first.T, 0.49 * torch.eye(32), atol=1e-4)
    d = build_discriminator(cfg).net[2].weight.detach().flatten(1)     # 128 x 64: rows > cols
    assert torch.allclose(d.T @ d, 0.49 * torch.eye(64), atol=1e-4)
    normal = build_generator(ModelConfig(netG="unet_128", ngf=8, init_gain=0.05))
    convs = [m for m in normal.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.std().item() == pytest.approx(0.05, rel=0.03)
