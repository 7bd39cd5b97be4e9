"""PSPNet with a dilated ResNet-50 on 4-channel RGB-T input: an early-fusion baseline.

Zhao, Shi, Qi, Wang, Jia, "Pyramid scene parsing network", CVPR 2017, doi:10.1109/CVPR.2017.660 [1]_.
The RT-CAN paper compares PSPNet as a single-stream model; how it fed thermal is not published, so
this is the early-fusion form of ``docs/reference-models.md`` §4.5: the stem takes 4 channels and,
with ImageNet weights, the thermal filter is the mean of the RGB filters (``stem_init="mean"``).

Layout: ResNet-50 with layer3/4 dilated (output stride 8, torchvision's
``replace_stride_with_dilation=[False, True, True]``; keys unchanged) → pyramid pooling (bins 1, 2,
3, 6; 1×1 conv 2048→512 + BN + ReLU each) → concat (4096) → 3×3 conv 512 + BN + ReLU → dropout 0.1
→ 1×1 conv → bilinear ×8. No auxiliary head. Its pooled BN needs training batches of ≥ 2, so
the trainer drops a trailing batch of one sample for it (``min_train_batch = 2``).

References
----------
.. [1] H. Zhao et al., CVPR 2017.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gasdb_tools.bench.models.resnet import ResNet, load_imagenet_weights

__all__ = ["PSPNet"]


class _PPM(nn.Module):
    def __init__(self, in_ch: int, reduction: int, bins=(1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_ch, reduction, 1, bias=False),
                          nn.BatchNorm2d(reduction), nn.ReLU(inplace=True)) for b in self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False)
                                for s in self.stages], dim=1)


class PSPNet(nn.Module):
    """PSPNet (dilated ResNet, early RGB-T fusion). Input H, W multiples of 8.

    Parameters
    ----------
    n_class : int
        Output classes.
    in_channels : int
        Input channels (4 = RGB + thermal).
    depth : {50, 101, 152}
        Encoder depth.
    imagenet_weights : path or state dict, optional
        A local torchvision ResNet weight file of that depth.
    stem_init : {'mean', 'tile'}
        How the RGB stem filters become a 4-channel stem when ``imagenet_weights`` is given.
    """

    n_heads = 1
    min_train_batch = 2

    def __init__(self, n_class: int = 2, *, in_channels: int = 4, depth: int = 50, imagenet_weights=None,
                 stem_init: str = "mean"):
        super().__init__()
        if depth not in (50, 101, 152):
            raise ValueError(f"depth must be 50, 101 or 152 for PSPNet, got {depth!r}")
        self.encoder = ResNet(depth, in_channels=in_channels, include_fc=False, dilate=(False, True, True))
        self.ppm = _PPM(2048, 512)
        self.bottleneck = nn.Sequential(nn.Conv2d(4096, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512),
                                        nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(512, n_class, 1)
        if imagenet_weights is not None:
            load_imagenet_weights(self.encoder, imagenet_weights, stem_init=stem_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.classifier(self.dropout(self.bottleneck(self.ppm(self.encoder.features(x)[-1]))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


from gasdb_tools.bench.registry import register_model  # noqa: E402


@register_model("pspnet-r50", summary="PSPNet, dilated ResNet-50, 4-channel early fusion, 1 head", fusion="early",
                input_multiple=8, imagenet_depth=50, reference="Zhao et al. CVPR 2017 (PPM 1/2/3/6, OS 8), "
                "early fusion per docs/reference-models.md §4.5")
def pspnet_r50(n_class: int = 2, **kwargs) -> PSPNet:
    """PSPNet with a dilated ResNet-50 on RGB-T input."""
    return PSPNet(n_class, depth=50, **kwargs)
