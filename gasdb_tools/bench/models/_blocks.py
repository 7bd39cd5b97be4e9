"""Building blocks shared by the RT-CAN lineage (RTFNet → EAEFNet → RT-CAN).

Attribute names follow the official code so that its checkpoints map key for key.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicConv2d", "TransBottleneck", "make_transpose_layer", "make_agant_layer", "MiniASPP",
           "Refine", "up2"]


def up2(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Bilinear upsampling by ``factor`` with ``align_corners=True`` (the lineage's ``nn.Upsample``)."""
    return nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


class BasicConv2d(nn.Module):
    """Conv (no bias) → BN → ReLU (``relu=False``: EAEFNet's variant without the ReLU)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size, stride=1, padding=0, dilation=1, *,
                 relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding,
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TransBottleneck(nn.Module):
    """RTFNet's decoder block: 1×1, 3×3, then a 3×3 conv or a 2×2 stride-2 transposed conv.

    With ``upsample`` (a ConvT + BN shortcut) and ``stride == 2`` the block doubles the size.
    Xavier-uniform init for its convs, BN weight 1 / bias 0 (as in RTFNet).
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if upsample is not None and stride != 1:
            self.conv3 = nn.ConvTranspose2d(planes, planes, kernel_size=2, stride=stride, padding=0, bias=False)
        else:
            self.conv3 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample
        self.stride = stride
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def make_transpose_layer(inplanes: int, planes: int, blocks: int, stride: int = 2) -> nn.Sequential:
    """``blocks`` TransBottlenecks; the last one upsamples ×``stride`` (ConvT + BN shortcut)."""
    if stride != 1:
        upsample = nn.Sequential(nn.ConvTranspose2d(inplanes, planes, kernel_size=2, stride=stride, padding=0,
                                                    bias=False), nn.BatchNorm2d(planes))
    else:
        upsample = nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, bias=False), nn.BatchNorm2d(planes))
    _xavier_init(upsample)
    layers = [TransBottleneck(inplanes, inplanes) for _ in range(1, blocks)]
    layers.append(TransBottleneck(inplanes, planes, stride, upsample))
    return nn.Sequential(*layers)


def make_agant_layer(inplanes: int, planes: int) -> nn.Sequential:
    """3×3 conv (no bias) → BN → ReLU."""
    return nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=3, stride=1, padding=1, bias=False),
                         nn.BatchNorm2d(planes), nn.ReLU(inplace=True))


class MiniASPP(nn.Module):
    """Three dilated 3×3 convs (6/12/18) sharing one BN, summed (RT-CAN builds it but never calls it)."""

    def __init__(self, channel: int):
        super().__init__()
        self.conv_6 = nn.Conv2d(channel, channel, kernel_size=3, stride=1, padding=6, dilation=6)
        self.conv_12 = nn.Conv2d(channel, channel, kernel_size=3, stride=1, padding=12, dilation=12)
        self.conv_18 = nn.Conv2d(channel, channel, kernel_size=3, stride=1, padding=18, dilation=18)
        self.bn = nn.BatchNorm2d(channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv_6(x)) + self.bn(self.conv_12(x)) + self.bn(self.conv_18(x))


class Refine(nn.Module):
    """The cascaded partial decoder's holistic attention (no parameters): ``x += x · att``."""

    def forward(self, attention: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor):
        att2 = up2(attention)
        return x1 + x1 * att2, x2 + x2 * att2, x3 + x3 * attention
