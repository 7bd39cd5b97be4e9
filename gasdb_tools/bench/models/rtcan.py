"""RT-CAN (``GasSegNet``): a faithful replica of the official RGB-thermal cross-attention network.

Wang, Lin, Zhao, Luo, Chen, Chen, Peng, "Invisible gas detection: An RGB-thermal cross attention
network and a new benchmark", CVIU 248 (2024) 104099, doi:10.1016/j.cviu.2024.104099 [1]_.
Module names (``FA_encoder``, ``CD``, ``ae0..4``, ``rfb*``, ``agg1``, ``agg1_splat``, ``agg2``,
``agant*``, ``deconv*``, ``out2_conv``, ``miniaspp``) are the official ones, so a checkpoint written
by ``logic112358/RT-CAN`` loads key for key. No torchvision: the trunks are
:class:`gasdb_tools.bench.models.resnet.ResNet`.

What the official code does, kept here on purpose (``docs/reference-models.md`` §3):

* Input ``(N, 4, H, W)``: RGB in channels 0-2 and thermal in 3, values / 255, **no** ImageNet
  normalisation. H and W must be multiples of 32.
* RCA (``Att_Enhance``) runs gate → channel attention → "spatial attention"; the last is a
  softmax over the channel axis of a 1-channel map, i.e. identically 1 (a **no-op**; its conv gets
  zero gradient: 3,909 dead parameters). ``spatial_attention="paper-intent"`` replaces the softmax
  by a sigmoid (same parameters, a different function; label results made with it).
* ``miniaspp`` (110,912 parameters) is built and never called; it is counted in the total
  (65,829,822 for R50, 135,101,374 for R152 with 2 classes), as the official count does.
* ``forward`` returns ``(head1, head2, fuse[5], thermal[5], rgb[5])``; the prediction is
  ``argmax(head1 + head2)``.

References
----------
.. [1] logic112358/RT-CAN (MIT), ``model/RT_CAN.py``, commit a2a6708.
"""

from __future__ import annotations

import torch
from torch import nn

from gasdb_tools.bench.models._blocks import (BasicConv2d, MiniASPP, Refine, make_agant_layer,
                                              make_transpose_layer, up2)
from gasdb_tools.bench.models.resnet import attach_two_stream_trunks, load_two_stream_weights

__all__ = ["GasSegNet", "RCA", "GCM", "ChannelAttention", "SpatialAttention", "AggregationInit",
           "AggregationFinal", "CascadedDecoder", "FAEncoder", "SPATIAL_ATTENTION_MODES"]

#: ``faithful``: the official no-op softmax; ``paper-intent``: a sigmoid spatial gate.
SPATIAL_ATTENTION_MODES = ("faithful", "paper-intent")


class ChannelAttention(nn.Module):
    """Global max pool → Linear(C, C/r) → GELU → Linear(C/r, C) → sigmoid (official ``Channel_Attention``)."""

    def __init__(self, dim: int, ratio: int = 16):
        super().__init__()
        self.down = nn.Linear(dim, dim // ratio)
        self.act = nn.GELU()
        self.up = nn.Linear(dim // ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.amax(x, dim=(2, 3))  # (N, C): AdaptiveMaxPool2d(1)
        return torch.sigmoid(self.up(self.act(self.down(pooled))))[:, :, None, None]


class SpatialAttention(nn.Module):
    """1×1 conv C → 1 and a normalisation of the 1-channel map.

    ``faithful``: softmax over the channel axis (official; the result is all ones);
    ``paper-intent``: sigmoid.
    """

    def __init__(self, dim: int, mode: str = "faithful"):
        super().__init__()
        if mode not in SPATIAL_ATTENTION_MODES:
            raise ValueError(f"spatial_attention must be one of {SPATIAL_ATTENTION_MODES}, got {mode!r}")
        self.mode = mode
        self.conv1 = nn.Conv2d(dim, 1, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        return torch.softmax(x1, dim=1) if self.mode == "faithful" else torch.sigmoid(x1)


class RCA(nn.Module):
    """RT-CAN's RGB-thermal cross attention (official ``Att_Enhance(C)``).

    ``w = sigmoid(BN(conv1x1(ReLU([T, R]))))``; ``out = T·w``; ``out ·= channel_att(out)``;
    ``out ·= spatial_att(out)``. Parameters: 17C²/8 + 81C/16 + 1.
    """

    def __init__(self, out_channels: int, spatial_attention: str = "faithful"):
        super().__init__()
        self.w = nn.Sequential(nn.Conv2d(out_channels * 2, out_channels, kernel_size=1, bias=True),
                               nn.BatchNorm2d(out_channels), nn.Sigmoid())
        self.cse = ChannelAttention(out_channels)
        self.sse = SpatialAttention(out_channels, spatial_attention)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, thermal: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        weight = self.w(self.relu(torch.cat([thermal, rgb], dim=1)))
        out = thermal * weight
        out = out * self.cse(out)
        return out * self.sse(out)


class GCM(nn.Module):
    """Global context module (the paper's "GTA"): 4 separable branches, concat, channel attention.

    Branches of BasicConv2d (conv + BN + ReLU): 1×1; 1×1→1×3→3×1; 1×1→1×5→5×1; 1×1→1×7→7×1;
    concatenated (4·64 ch) × channel attention (ratio 4) → 3×3 BasicConv2d → + 1×1 residual conv
    (bias) → ReLU. Parameters: 320·C_in + 304,896 for 64 output channels.
    """

    def __init__(self, in_channel: int, out_channel: int = 64):
        super().__init__()
        self.relu = nn.ReLU(True)
        self.branch0 = nn.Sequential(BasicConv2d(in_channel, out_channel, 1))
        self.branch1 = BasicConv2d(in_channel, out_channel, 1)
        self.branch1_1 = BasicConv2d(out_channel, out_channel, kernel_size=(1, 3), padding=(0, 1))
        self.branch1_2 = BasicConv2d(out_channel, out_channel, kernel_size=(3, 1), padding=(1, 0))
        self.branch2 = BasicConv2d(in_channel, out_channel, 1)
        self.branch2_1 = BasicConv2d(out_channel, out_channel, kernel_size=(1, 5), padding=(0, 2))
        self.branch2_2 = BasicConv2d(out_channel, out_channel, kernel_size=(5, 1), padding=(2, 0))
        self.branch3 = BasicConv2d(in_channel, out_channel, 1)
        self.branch3_1 = BasicConv2d(out_channel, out_channel, kernel_size=(1, 7), padding=(0, 3))
        self.branch3_2 = BasicConv2d(out_channel, out_channel, kernel_size=(7, 1), padding=(3, 0))
        self.catt = ChannelAttention(4 * out_channel, 4)
        self.conv_cat = BasicConv2d(4 * out_channel, out_channel, 3, padding=1)
        self.conv_res = nn.Conv2d(in_channel, out_channel, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.branch0(x)
        x1 = self.branch1_2(self.branch1_1(self.branch1(x)))
        x2 = self.branch2_2(self.branch2_1(self.branch2(x)))
        x3 = self.branch3_2(self.branch3_1(self.branch3(x)))
        x_cat = torch.cat((x0, x1, x2, x3), 1)
        x_cat = self.conv_cat(x_cat * self.catt(x_cat))
        return self.relu(x_cat + self.conv_res(x))


class AggregationInit(nn.Module):
    """Cascaded partial decoder aggregation at 1/8 (official ``aggregation_init``).

    Inputs x1 (1/32), x2 (1/16), x3 (1/8), each ``channel`` wide; the output has ``n_out`` channels
    at 1/8. Parameters 1,107,712 + 193·n_out for channel 64. ``basic_relu=False`` and ``se=True``
    give EAEFNet's variant (BasicConv2d without ReLU, an unused SE block).
    """

    def __init__(self, channel: int, n_out: int, *, basic_relu: bool = True, se: bool = False):
        super().__init__()
        c = channel

        def bc(i, o):
            return BasicConv2d(i, o, 3, padding=1, relu=basic_relu)

        self.relu = nn.ReLU(True)
        self.conv_upsample1 = bc(c, c)
        self.conv_upsample2 = bc(c, c)
        self.conv_upsample3 = bc(c, c)
        self.conv_upsample4 = bc(c, c)
        self.conv_upsample5 = bc(2 * c, 2 * c)
        self.conv_concat2 = bc(2 * c, 2 * c)
        self.conv_concat3 = bc(3 * c, 3 * c)
        self.conv4 = bc(3 * c, 3 * c)
        if se:
            from gasdb_tools.bench.models.eaefnet import SEAvgPool  # EAEFNet only; built, never called

            self.se = SEAvgPool(3 * c, 4)
        self.conv = nn.Conv2d(3 * c, n_out, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        x2_1 = self.conv_upsample1(up2(x1)) * x2
        x3_1 = self.conv_upsample2(up2(up2(x1))) * self.conv_upsample3(up2(x2)) * x3
        x2_2 = self.conv_concat2(torch.cat((x2_1, self.conv_upsample4(up2(x1))), 1))
        x3_2 = self.conv_concat3(torch.cat((x3_1, self.conv_upsample5(up2(x2_2))), 1))
        return self.conv(self.conv4(x3_2))


class AggregationFinal(nn.Module):
    """The second path's aggregation at 1/4 (official ``aggregation_final``): 3·channel outputs.

    Inputs x1 (1/8), x2 (1/4), x3 (1/4); no ``conv4`` and no output conv.
    """

    def __init__(self, channel: int):
        super().__init__()
        c = channel
        self.relu = nn.ReLU(True)
        self.conv_upsample1 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample2 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample3 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample4 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample5 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * c, 3 * c, 3, padding=1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        x2_1 = self.conv_upsample1(up2(x1)) * x2
        x3_1 = self.conv_upsample2(up2(x1)) * self.conv_upsample3(x2) * x3
        x2_2 = self.conv_concat2(torch.cat((x2_1, self.conv_upsample4(up2(x1))), 1))
        return self.conv_concat3(torch.cat((x3_1, self.conv_upsample5(x2_2)), 1))


class FAEncoder(nn.Module):
    """Two independent ResNet trunks (RGB; 1-channel thermal stem) fused by RCA at 5 points.

    The fused maps never feed back into either stream. Returns ``(fuse, thermal, rgb)``, lists of
    5 maps at 1/4 (64 ch), 1/4 (256), 1/8 (512), 1/16 (1024), 1/32 (2048). The official MC-dropout
    (p 0.09) is built but never called; it has no parameters and is left out.
    """

    def __init__(self, num_resnet_layers: int = 50, spatial_attention: str = "faithful"):
        super().__init__()
        if num_resnet_layers not in (50, 101, 152):
            raise ValueError(f"num_resnet_layers must be 50, 101 or 152, got {num_resnet_layers!r}")
        self.num_resnet_layers = num_resnet_layers
        attach_two_stream_trunks(self, num_resnet_layers)
        for i, c in enumerate((64, 256, 512, 1024, 2048)):
            setattr(self, f"ae{i}", RCA(c, spatial_attention))

    def forward(self, x: torch.Tensor):
        rgb = self.encoder_rgb_maxpool(self.encoder_rgb_relu(self.encoder_rgb_bn1(self.encoder_rgb_conv1(x[:, :3]))))
        thermal = self.encoder_thermal_maxpool(self.encoder_thermal_relu(
            self.encoder_thermal_bn1(self.encoder_thermal_conv1(x[:, 3:]))))
        rgbs, thermals, fuses = [rgb], [thermal], [self.ae0(thermal, rgb)]
        for k in range(1, 5):
            rgb = getattr(self, f"encoder_rgb_layer{k}")(rgb)
            thermal = getattr(self, f"encoder_thermal_layer{k}")(thermal)
            rgbs.append(rgb)
            thermals.append(thermal)
            fuses.append(getattr(self, f"ae{k}")(thermal, rgb))
        return fuses, thermals, rgbs


class CascadedDecoder(nn.Module):
    """RT-CAN's decoder (official ``Cascaded_decoder``): head 1 at 1/8 → ×8; head 2 via the PTM path."""

    def __init__(self, n_class: int = 2, channel: int = 64):
        super().__init__()
        self.rfb2_1 = GCM(512, channel)
        self.rfb3_1 = GCM(1024, channel)
        self.rfb4_1 = GCM(2048, channel)
        self.rfb0_2 = GCM(64, channel)
        self.rfb1_2 = GCM(256, channel)
        self.rfb2_2 = GCM(512, channel)
        self.agg1 = AggregationInit(channel, n_class)
        self.agg1_splat = AggregationInit(channel, 1)
        self.agg2 = AggregationFinal(channel)
        self.miniaspp = MiniASPP(channel)  # built, never called (as in the official code)
        self.HA = Refine()
        self.agant1 = make_agant_layer(channel * 3, channel)
        self.deconv1 = make_transpose_layer(channel, channel, 3, stride=2)
        self.agant2 = make_agant_layer(channel, channel)
        self.deconv2 = make_transpose_layer(channel, channel, 3, stride=2)
        self.out2_conv = nn.Conv2d(channel, n_class, kernel_size=1)

    def forward(self, fuse):
        f0, f1, f2, f3, f4 = fuse
        x2_1 = self.rfb2_1(f2)
        x3_1 = self.rfb3_1(f3)
        x4_1 = self.rfb4_1(f4)
        attention_gate = torch.sigmoid(self.agg1_splat(x4_1, x3_1, x2_1))
        x, x1, x5 = self.HA(attention_gate, f0, f1, f2)
        x0_2 = self.rfb0_2(x)
        x1_2 = self.rfb1_2(x1)
        x5_2 = self.rfb2_2(x5)
        head1 = up2(self.agg1(x4_1, x3_1, x2_1), 8)
        y = self.agg2(x5_2, x1_2, x0_2)
        y = self.deconv2(self.agant2(self.deconv1(self.agant1(y))))
        return head1, self.out2_conv(y)


class GasSegNet(nn.Module):
    """RT-CAN (official class name ``GasSegNet``).

    Parameters
    ----------
    n_class : int
        Output classes (2 for Gas-DB: background, gas).
    num_resnet_layers : {50, 101, 152}
        Depth of both ResNet trunks (the paper reports 50 and 152).
    spatial_attention : {'faithful', 'paper-intent'}
        The RCA's spatial step: the official no-op softmax, or a sigmoid gate.
    imagenet_weights : path or state dict, optional
        Local torchvision ImageNet weights of the same depth for both trunks (V1 reproduces the
        paper: ``resnet50-0676ba61.pth`` / ``resnet152-b121ed2d.pth``). Nothing is downloaded.

    Examples
    --------
    >>> with torch.device("meta"):
    ...     model = GasSegNet(2)
    >>> sum(p.numel() for p in model.parameters())
    65829822
    """

    n_heads = 2

    def __init__(self, n_class: int = 2, num_resnet_layers: int = 50, *, spatial_attention: str = "faithful",
                 imagenet_weights=None):
        super().__init__()
        self.FA_encoder = FAEncoder(num_resnet_layers, spatial_attention)
        self.CD = CascadedDecoder(n_class)
        if imagenet_weights is not None:
            load_two_stream_weights(self.FA_encoder, imagenet_weights)

    def forward(self, x: torch.Tensor):
        fuse, thermal, rgb = self.FA_encoder(x)
        head1, head2 = self.CD(fuse)
        return head1, head2, fuse, thermal, rgb


# ----------------------------------------------------------------------------------------------
from gasdb_tools.bench.registry import register_model  # noqa: E402

_RTCAN_REF = "logic112358/RT-CAN a2a6708, model/RT_CAN.py (GasSegNet)"


@register_model("rtcan-r50", summary="RT-CAN, 2x ResNet-50, RCA fusion, 2 heads (faithful replica)", heads=2,
                imagenet_depth=50, reference=_RTCAN_REF, reference_params=65_829_822)
def rtcan_r50(n_class: int = 2, **kwargs) -> GasSegNet:
    """RT-CAN with ResNet-50 trunks (``spatial_attention``, ``imagenet_weights`` as for GasSegNet)."""
    return GasSegNet(n_class, 50, **kwargs)


@register_model("rtcan-r152", summary="RT-CAN, 2x ResNet-152, RCA fusion, 2 heads (faithful replica)", heads=2,
                imagenet_depth=152, reference=_RTCAN_REF, reference_params=135_101_374)
def rtcan_r152(n_class: int = 2, **kwargs) -> GasSegNet:
    """RT-CAN with ResNet-152 trunks."""
    return GasSegNet(n_class, 152, **kwargs)
