import pytest
import torch
from torch import nn

from training.config import Config, ModelConfig
from training.models.cyclegan import CycleGAN
from training.models.discriminators import NLayerDiscriminator
from training.models.resnet import ResnetGenerator
from training.models.registry import build_discriminator, build_generator
from training.models.layers import count_parameters, generator_macs, init_weights


@pytest.mark.parametrize("netG,expected", [("resnet_9blocks", 11_378_179), ("resnet_6blocks", 7_837_699)])
def test_generator_parameter_counts_match_reference(netG, expected):
    assert count_parameters(build_generator(ModelConfig(netG=netG, ngf=64))) == expected


def test_discriminator_parameter_count_matches_reference():
    assert count_parameters(build_discriminator(ModelConfig(ndf=64))) == 2_764_737


def receptive_field(net: nn.Module, size: int = 160) -> tuple[int, int]:
    """Height and width of the input region that one central output pixel depends on."""
    x = torch.randn(1, 3, size, size, requires_grad=True)
    out = net(x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    rows = (x.grad[0].abs().sum(dim=(0, 2)) > 0).nonzero()
    cols = (x.grad[0].abs().sum(dim=(0, 1)) > 0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_patchgan_receptive_field_is_70():
    torch.manual_seed(0)
    net = init_weights(NLayerDiscriminator(ndf=8, n_layers=3, norm="none"))
    assert receptive_field(net) == (70, 70)


def test_patchgan_receptive_field_grows_with_depth():
    torch.manual_seed(0)
    assert receptive_field(init_weights(NLayerDiscriminator(ndf=4, n_layers=2, norm="none"))) == (34, 34)


@pytest.mark.parametrize("h,w", [(32, 32), (36, 60), (64, 44)])
def test_generator_preserves_shape_of_multiples_of_4(h, w):
    net = ResnetGenerator(ngf=8, n_blocks=2)
    y = net(torch.randn(2, 3, h, w))
    assert y.shape == (2, 3, h, w)
    assert y.abs().max() <= 1.0  # tanh output


def test_instance_norm_is_affine_free_and_convs_keep_bias():
    net = ResnetGenerator(ngf=8, n_blocks=1, norm="instance")
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))


def test_batch_norm_drops_conv_bias_and_none_has_no_norm():
    batch = ResnetGenerator(ngf=8, n_blocks=1, norm="batch")
    assert any(isinstance(m, nn.BatchNorm2d) for m in batch.modules())
    assert batch.model[1].bias is None
    plain = ResnetGenerator(ngf=8, n_blocks=1, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in plain.modules())


def test_normal_init_has_std_002_and_zero_bias():
    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG="resnet_2blocks", ngf=32))
    weight = net.model[10].conv_block[1].weight
    assert abs(weight.std().item() - 0.02) < 0.001 and abs(weight.mean().item()) < 0.001
    assert torch.count_nonzero(net.model[10].conv_block[1].bias) == 0


def test_dropout_option_inserts_dropout_in_blocks():
    cfg = ModelConfig(netG="resnet_2blocks", ngf=8, no_dropout=False)
    assert any(isinstance(m, nn.Dropout) for m in build_generator(cfg).modules())
    cfg.no_dropout = True
    assert not any(isinstance(m, nn.Dropout) for m in build_generator(cfg).modules())


def test_generator_macs_of_the_paper_generator():
    # 99 GFLOP per pass at 256x256 (README of ../shared): 2 FLOP per multiply-accumulate
    macs = generator_macs(build_generator(ModelConfig(), init=False), 256)
    assert 49e9 < macs < 50e9


def test_cyclegan_directions_and_channels():
    cfg = Config()
    cfg.model.ngf = cfg.model.ndf = 8
    cfg.model.netG = "resnet_1blocks"
    cfg.data.input_nc, cfg.data.output_nc = 1, 3
    model = CycleGAN(cfg)
    assert model.G_A(torch.zeros(1, 1, 16, 16)).shape[1] == 3   # A (1 channel) -> B (3)
    assert model.G_B(torch.zeros(1, 3, 16, 16)).shape[1] == 1
    assert model.D_A(torch.zeros(1, 3, 32, 32)).shape[1] == 1   # D_A judges domain B
    assert model.D_B(torch.zeros(1, 1, 32, 32)).shape[1] == 1
