"""RTFNet: RGB-thermal fusion by adding thermal ResNet features into the RGB stream.

Sun, Zuo, Liu, "RTFNet: RGB-thermal fusion network for semantic segmentation of urban scenes",
IEEE RA-L 4(3) 2019, doi:10.1109/LRA.2019.2904733 [1]_.

Thermal features are added into the RGB stream after bn1+ReLU (before the max-pool) and after
layer1-3; ``fuse = rgb4 + t4``. The decoder is 5 transposed stages of 2 TransBottlenecks each (the
second upsamples ×2), halving the width each time (2048 → 1024 → … → 128); the last outputs
``n_class`` maps. Parameters (2 classes): 185.23 M for
ResNet-50, 254.50 M for ResNet-152 (the official depth). Module names are the official ones.

References
----------
.. [1] yuxiangsun/RTFNet (MIT), ``model/RTFNet.py``, commit 2457cc6.
"""

from __future__ import annotations

import torch
from torch import nn

from gasdb_tools.bench.models._blocks import make_transpose_layer
from gasdb_tools.bench.models.resnet import DEPTHS, attach_two_stream_trunks, load_two_stream_weights

__all__ = ["RTFNet"]


class RTFNet(nn.Module):
    """RTFNet with a selectable ResNet depth (official: 152). Input H, W multiples of 32.

    Parameters
    ----------
    n_class : int
        Output classes.
    num_resnet_layers : {18, 34, 50, 101, 152}
        Trunk depth.
    imagenet_weights : path or state dict, optional
        Local torchvision ImageNet weights of that depth (both trunks; thermal stem = mean filter).
    """

    n_heads = 1

    def __init__(self, n_class: int = 2, num_resnet_layers: int = 152, *, imagenet_weights=None):
        super().__init__()
        if num_resnet_layers not in DEPTHS:
            raise ValueError(f"num_resnet_layers must be one of {sorted(DEPTHS)}, got {num_resnet_layers!r}")
        self.num_resnet_layers = num_resnet_layers
        attach_two_stream_trunks(self, num_resnet_layers)
        inplanes = 512 if num_resnet_layers < 50 else 2048
        # The official ``_make_transpose_layer(..., self.inplanes/2, ...)`` reads the running
        # ``inplanes``, so the widths halve stage by stage: 2048 → 1024 → 512 → 256 → 128 → n_class.
        for k in range(1, 5):
            setattr(self, f"deconv{k}", make_transpose_layer(inplanes, inplanes // 2, 2, stride=2))
            inplanes //= 2
        self.deconv5 = make_transpose_layer(inplanes, n_class, 2, stride=2)
        if imagenet_weights is not None:
            load_two_stream_weights(self, imagenet_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = self.encoder_rgb_relu(self.encoder_rgb_bn1(self.encoder_rgb_conv1(x[:, :3])))
        thermal = self.encoder_thermal_relu(self.encoder_thermal_bn1(self.encoder_thermal_conv1(x[:, 3:])))
        rgb = self.encoder_rgb_maxpool(rgb + thermal)
        thermal = self.encoder_thermal_maxpool(thermal)
        for k in range(1, 5):
            rgb = getattr(self, f"encoder_rgb_layer{k}")(rgb)
            thermal = getattr(self, f"encoder_thermal_layer{k}")(thermal)
            rgb = rgb + thermal
        fuse = rgb
        for k in range(1, 6):
            fuse = getattr(self, f"deconv{k}")(fuse)
        return fuse


from gasdb_tools.bench.registry import register_model  # noqa: E402

_RTF_REF = "yuxiangsun/RTFNet 2457cc6, model/RTFNet.py"


@register_model("rtfnet-50", summary="RTFNet, 2x ResNet-50, thermal added into RGB, 1 head", imagenet_depth=50,
                reference=_RTF_REF + " (depth changed to 50)", reference_params=185_230_000)
def rtfnet_50(n_class: int = 2, **kwargs) -> RTFNet:
    """RTFNet with ResNet-50 trunks."""
    return RTFNet(n_class, 50, **kwargs)


@register_model("rtfnet-152", summary="RTFNet, 2x ResNet-152 (official depth), 1 head", imagenet_depth=152,
                reference=_RTF_REF, reference_params=254_500_000)
def rtfnet_152(n_class: int = 2, **kwargs) -> RTFNet:
    """RTFNet with ResNet-152 trunks (the official depth)."""
    return RTFNet(n_class, 152, **kwargs)
