"""The discriminators, laid out like the authors' modules: the PatchGAN
(``NLayerDiscriminator``, 70x70 at three layers: 2,764,737 parameters at ndf = 64) and the
1x1 PixelGAN (``PixelDiscriminator``, ``net.N...``)."""
from __future__ import annotations

from torch import nn

from .layers import conv_bias, norm_layer


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, then two stride-1 ones.

    At ``n_layers=3`` each output sees a 70x70 patch of the input.
    """

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="instance"):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                       make_norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                   make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """PixelGAN: three 1x1 convs, so each output judges one pixel (its colour statistics).

    Output: N x 1 x H x W, one score per input pixel. With instance or batch norm (in
    training mode) the normalisation statistics still mix pixels; the convolutions do not.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, stride=1, padding=0, bias=bias),
            make_norm(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, stride=1, padding=0, bias=bias))

    def forward(self, x):
        return self.net(x)
