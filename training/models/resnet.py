"""The ResNet generator of the paper, laid out like the authors' ``ResnetGenerator``.

Module and parameter names match theirs (``model.N...``, ``model.N.conv_block.M...``), so
their ``.pth`` state dicts load with a prefix-free mapping. Parameter counts at ngf = 64:
9 blocks 11,378,179, 6 blocks 7,837,699.
"""
from __future__ import annotations

from torch import nn

from .layers import conv_bias, norm_layer


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, dropout: bool):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-3, tanh.

    Input sides must be multiples of 4 for the output to keep the input's shape.
    """

    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9, norm="instance", dropout=False):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias), make_norm(ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), make_norm(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       make_norm(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)
