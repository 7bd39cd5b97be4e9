"""MFNet: a small two-stream RGB-thermal segmentation network, as in the official PyTorch code.

Ha, Watanabe, Karasawa, Ushiku, Harada, "MFNet: Towards real-time semantic segmentation for
autonomous vehicles with multi-spectral scenes", IROS 2017, doi:10.1109/IROS.2017.8206396 [1]_.

RGB widths [16, 48, 48, 96, 96], thermal [16, 16, 16, 36, 36]; conv + BN + LeakyReLU(0.2);
MiniInception (concatenated plain and dilated 3×3 convs) at stages 4-5; 4 max-pools; concatenation
fusion; the decoder adds the skips after nearest ×2 upsampling. The last layer is a conv + BN +
LeakyReLU like the others (as in the official code). 734,238 parameters with 2 classes; no
pretraining. Module names are the official ones.

References
----------
.. [1] haqishen/MFNet-pytorch, ``model/MFNet.py``, commit fff9e28.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MFNet", "ConvBnLeakyRelu2d", "MiniInception"]


class ConvBnLeakyRelu2d(nn.Module):
    """Conv (with bias) → BN → LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, stride: int = 1,
                 dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=padding, stride=stride,
                              dilation=dilation)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), negative_slope=0.2)


class MiniInception(nn.Module):
    """Three rounds of [3×3 conv ‖ dilated (2) 3×3 conv], each half the output width, concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.conv1_left = ConvBnLeakyRelu2d(in_channels, half)
        self.conv1_right = ConvBnLeakyRelu2d(in_channels, half, padding=2, dilation=2)
        self.conv2_left = ConvBnLeakyRelu2d(out_channels, half)
        self.conv2_right = ConvBnLeakyRelu2d(out_channels, half, padding=2, dilation=2)
        self.conv3_left = ConvBnLeakyRelu2d(out_channels, half)
        self.conv3_right = ConvBnLeakyRelu2d(out_channels, half, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.conv1_left(x), self.conv1_right(x)), dim=1)
        x = torch.cat((self.conv2_left(x), self.conv2_right(x)), dim=1)
        return torch.cat((self.conv3_left(x), self.conv3_right(x)), dim=1)


class MFNet(nn.Module):
    """MFNet (official layout). Input ``(N, 4, H, W)`` with H, W multiples of 16; output ``(N, n_class, H, W)``.

    Examples
    --------
    >>> sum(p.numel() for p in MFNet(2).parameters())
    734238
    """

    n_heads = 1

    def __init__(self, n_class: int = 2):
        super().__init__()
        rgb_ch = [16, 48, 48, 96, 96]
        inf_ch = [16, 16, 16, 36, 36]
        for tag, ch, cin in (("rgb", rgb_ch, 3), ("inf", inf_ch, 1)):
            setattr(self, f"conv1_{tag}", ConvBnLeakyRelu2d(cin, ch[0]))
            setattr(self, f"conv2_1_{tag}", ConvBnLeakyRelu2d(ch[0], ch[1]))
            setattr(self, f"conv2_2_{tag}", ConvBnLeakyRelu2d(ch[1], ch[1]))
            setattr(self, f"conv3_1_{tag}", ConvBnLeakyRelu2d(ch[1], ch[2]))
            setattr(self, f"conv3_2_{tag}", ConvBnLeakyRelu2d(ch[2], ch[2]))
            setattr(self, f"conv4_{tag}", MiniInception(ch[2], ch[3]))
            setattr(self, f"conv5_{tag}", MiniInception(ch[3], ch[4]))
        self.decode4 = ConvBnLeakyRelu2d(rgb_ch[3] + inf_ch[3], rgb_ch[2] + inf_ch[2])
        self.decode3 = ConvBnLeakyRelu2d(rgb_ch[2] + inf_ch[2], rgb_ch[1] + inf_ch[1])
        self.decode2 = ConvBnLeakyRelu2d(rgb_ch[1] + inf_ch[1], rgb_ch[0] + inf_ch[0])
        self.decode1 = ConvBnLeakyRelu2d(rgb_ch[0] + inf_ch[0], n_class)

    def _encode(self, x: torch.Tensor, tag: str):
        m = lambda name: getattr(self, f"{name}_{tag}")  # noqa: E731
        x = F.max_pool2d(m("conv1")(x), kernel_size=2, stride=2)
        p2 = m("conv2_2")(m("conv2_1")(x))
        x = F.max_pool2d(p2, kernel_size=2, stride=2)
        p3 = m("conv3_2")(m("conv3_1")(x))
        x = F.max_pool2d(p3, kernel_size=2, stride=2)
        p4 = m("conv4")(x)
        x = m("conv5")(F.max_pool2d(p4, kernel_size=2, stride=2))
        return x, p2, p3, p4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, r2, r3, r4 = self._encode(x[:, :3], "rgb")
        t, t2, t3, t4 = self._encode(x[:, 3:], "inf")
        x = torch.cat((r, t), dim=1)
        x = self.decode4(F.interpolate(x, scale_factor=2, mode="nearest") + torch.cat((r4, t4), dim=1))
        x = self.decode3(F.interpolate(x, scale_factor=2, mode="nearest") + torch.cat((r3, t3), dim=1))
        x = self.decode2(F.interpolate(x, scale_factor=2, mode="nearest") + torch.cat((r2, t2), dim=1))
        return self.decode1(F.interpolate(x, scale_factor=2, mode="nearest"))


from gasdb_tools.bench.registry import register_model  # noqa: E402


@register_model("mfnet", summary="MFNet, two small CNN streams, concat fusion, 1 head", input_multiple=16,
                reference="haqishen/MFNet-pytorch fff9e28, model/MFNet.py", reference_params=734_000)
def mfnet(n_class: int = 2) -> MFNet:
    """MFNet (no pretraining)."""
    return MFNet(n_class)
