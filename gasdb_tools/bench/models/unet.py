"""U-Net with a ResNet-18 encoder on 4-channel RGB-T input (early fusion), smp layout.

Ronneberger, Fischer, Brox, "U-Net: Convolutional networks for biomedical image segmentation",
MICCAI 2015, doi:10.1007/978-3-319-24574-4_28 [1]_, in the layout of segmentation-models-pytorch's
``Unet('resnet18', in_channels=4, classes=2)`` [2]_: state-dict keys ``encoder.*`` (torchvision
ResNet names, no ``fc``), ``decoder.blocks.{0..4}.conv{1,2}.{0,1}.*``, ``segmentation_head.0.*``,
so smp checkpoints load. 14,331,490 parameters with 2 classes (encoder 11,179,648, decoder
3,151,552, head 290); 54.59 GFLOPs at 1×4×512×640.

Decoder: 5 blocks (256, 128, 64, 32, 16), each nearest ×2, concat skip, 2 × [3×3 conv (no bias)
+ BN + ReLU]; head 3×3 conv 16 → n_class at full resolution. ImageNet weights (a local
torchvision ResNet-18 file) fill the encoder; the 4-channel stem follows smp (``stem_init="tile"``)
or the RT-CAN lineage (``"mean"``).

References
----------
.. [1] O. Ronneberger et al., MICCAI 2015.
.. [2] qubvel-org/segmentation_models.pytorch 0.6.0, ``decoders/unet``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gasdb_tools.bench.models.resnet import ResNet, load_imagenet_weights

__all__ = ["UNet"]


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class _DecoderBlock(nn.Module):
    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_ch + skip_ch, out_ch)
        self.conv2 = _conv_bn_relu(out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class _Decoder(nn.Module):
    def __init__(self, encoder_channels=(64, 64, 128, 256, 512), decoder_channels=(256, 128, 64, 32, 16)):
        super().__init__()
        skips = list(encoder_channels[:-1][::-1]) + [0]
        ins = [encoder_channels[-1]] + list(decoder_channels[:-1])
        self.blocks = nn.ModuleList(_DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = features[:-1][::-1] + [None]
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        return x


class UNet(nn.Module):
    """U-Net, ResNet encoder (default 18), early RGB-T fusion. Input H, W multiples of 32.

    Parameters
    ----------
    n_class : int
        Output classes.
    in_channels : int
        Input channels (4 = RGB + thermal).
    depth : {18, 34}
        Encoder depth (BasicBlock ResNets; the skip widths assume them).
    imagenet_weights : path or state dict, optional
        A local torchvision ResNet weight file of that depth.
    stem_init : {'tile', 'mean'}
        How the RGB stem filters become a 4-channel stem when ``imagenet_weights`` is given.

    Examples
    --------
    >>> sum(p.numel() for p in UNet(2).parameters())
    14331490
    """

    n_heads = 1

    def __init__(self, n_class: int = 2, *, in_channels: int = 4, depth: int = 18, imagenet_weights=None,
                 stem_init: str = "tile"):
        super().__init__()
        if depth not in (18, 34):
            raise ValueError(f"depth must be 18 or 34 for this U-Net, got {depth!r}")
        self.encoder = ResNet(depth, in_channels=in_channels, include_fc=False)
        self.decoder = _Decoder()
        self.segmentation_head = nn.Sequential(nn.Conv2d(16, n_class, kernel_size=3, padding=1))
        if imagenet_weights is not None:
            load_imagenet_weights(self.encoder, imagenet_weights, stem_init=stem_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder.features(x)))


from gasdb_tools.bench.registry import register_model  # noqa: E402


@register_model("unet-r18", summary="U-Net, ResNet-18 encoder, 4-channel early fusion, 1 head (smp layout)",
                fusion="early", imagenet_depth=18, reference="segmentation-models-pytorch 0.6.0 Unet('resnet18', "
                "in_channels=4, classes=2)", reference_params=14_331_490)
def unet_r18(n_class: int = 2, **kwargs) -> UNet:
    """U-Net with a ResNet-18 encoder on RGB-T input."""
    return UNet(n_class, depth=18, **kwargs)
