"""EAEFNet: explicit attention-enhanced fusion of RGB and thermal ResNet streams (2-class port).

Liang, Cao, Huang, Xu, Zhang, Chen, "Explicit attention-enhanced fusion for RGB-thermal perception
tasks", IEEE RA-L 8(7) 2023, doi:10.1109/LRA.2023.3272269 [1]_ (venue as commonly cited).

An EAEF module fuses the streams at 5 points and **its outputs replace both streams**. The decoder
is RT-CAN's GCM / aggregation / refine skeleton with EAEFNet's GCM (SE on each branch, branches
summed, no ReLU inside BasicConv) and a second path that sums the six upsampled GCM maps, applies
a mini-ASPP, then two transposed stages and a 1×1 output conv.

Departures from the official code, all needed for Gas-DB and documented:

* **2-class fix:** the official ``agg1`` output conv is hard-coded to 9 channels (MFNet's classes),
  so ``head1 + head2`` fails for 2 classes; here it has ``n_class`` channels. Parameter counts
  (77.97 M for ResNet-50, 147.24 M for ResNet-152, 2 classes) include the fix.
* **Device-agnostic:** the official ``torch.ones(...).cuda() - gate`` is ``1 - gate`` here.
* Depth is selectable (official: hard-coded 152).

Kept as in the official code: the cross gate takes ``torch.diagonal`` over the **batch and channel**
axes of the ``(N, C, C)`` similarity and reshapes it to ``(N, C)`` (``cross_gate="faithful"``). For
batch 1 this is ``sigmoid(T_c · rgb_0 · t_k)`` per channel k; for larger batches samples mix.
``cross_gate="per-sample"`` uses the channel diagonal of each sample's matrix instead
(``sigmoid(T_c · rgb_k · t_k)``, the paper's description); label results made with it.

References
----------
.. [1] FreeformRobotics/EAEFNet (MIT), ``EAEF_Seg_MF/EAEFNet_MF/model/EAEFNet.py``, commit a830654.
"""

from __future__ import annotations

import torch
from torch import nn

from gasdb_tools.bench.models._blocks import (BasicConv2d, MiniASPP, Refine, make_agant_layer,
                                              make_transpose_layer, up2)
from gasdb_tools.bench.models.resnet import attach_two_stream_trunks, load_two_stream_weights

__all__ = ["EAEFNet", "EAEF", "SEAvgPool", "CROSS_GATE_MODES"]

CROSS_GATE_MODES = ("faithful", "per-sample")


class SEAvgPool(nn.Module):
    """Squeeze-excitation with average pooling: GAP → Linear(C, C/r) → GELU → Linear → sigmoid; x · y."""

    def __init__(self, dim: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, dim // reduction), nn.GELU(), nn.Linear(dim // reduction, dim),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class _FeaturePool(nn.Module):
    """GAP → Linear(C, 2C) → GELU → Linear(2C, C) (official ``Feature_Pool``)."""

    def __init__(self, dim: int, ratio: int = 2):
        super().__init__()
        self.down = nn.Linear(dim, dim * ratio)
        self.act = nn.GELU()
        self.up = nn.Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x.mean(dim=(2, 3)))))


class _ChannelLogits(nn.Module):
    """Global max pool → Linear(C, C/16) → GELU → Linear (no sigmoid; official ``Channel_Attention``)."""

    def __init__(self, dim: int, ratio: int = 16):
        super().__init__()
        self.down = nn.Linear(dim, dim // ratio)
        self.act = nn.GELU()
        self.up = nn.Linear(dim // ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(torch.amax(x, dim=(2, 3)))))[:, :, None, None]


class _SpatialLogits(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, 1, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class EAEF(nn.Module):
    """The EAEF fusion module on ``concat[RGB, T]`` (2C channels in, 2C out).

    (1) per-modality GAP-MLP embeddings, L2-normalised; cross similarity ``T_c · rgb tᵀ``, sigmoid,
    diagonal → ``cross_gate``, ``add_gate = 1 - cross_gate``; (2) gated features → depthwise 7×7
    conv → channel MLP → sigmoid gates per modality; (3) a 1×1 spatial map per modality, softmax
    over the two, mixing; output ``concat[new_RGB, new_T]``.
    """

    def __init__(self, dim: int, cross_gate: str = "faithful"):
        super().__init__()
        if cross_gate not in CROSS_GATE_MODES:
            raise ValueError(f"cross_gate must be one of {CROSS_GATE_MODES}, got {cross_gate!r}")
        self.cross_gate_mode = cross_gate
        self.mlp_pool = _FeaturePool(dim)
        self.dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=7, padding=3, groups=dim)
        self.T_c = nn.Parameter(torch.ones([]) * dim)
        self.cse = _ChannelLogits(dim * 2)
        self.sse_r = _SpatialLogits(dim)
        self.sse_t = _SpatialLogits(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        rgb, t = x[:, :c], x[:, c:]
        b = rgb.shape[0]
        rgb_y = self.mlp_pool(rgb)
        t_y = self.mlp_pool(t)
        rgb_y = rgb_y / rgb_y.norm(dim=1, keepdim=True)
        t_y = t_y / t_y.norm(dim=1, keepdim=True)
        if self.cross_gate_mode == "faithful":
            logits = self.T_c * rgb_y.view(b, c, 1) @ t_y.view(b, 1, c)
            gate = torch.diagonal(torch.sigmoid(logits)).reshape(b, c, 1, 1)
        else:
            gate = torch.sigmoid(self.T_c * rgb_y * t_y).reshape(b, c, 1, 1)
        add_gate = 1 - gate
        rgb_a = rgb * gate
        t_a = t * gate
        fuse_gate = torch.sigmoid(self.cse(self.dwconv(torch.cat((rgb_a, t_a), dim=1))))
        new_rgb = rgb * add_gate + rgb_a * fuse_gate[:, :c]
        new_t = t * add_gate + t_a * fuse_gate[:, c:]
        att = torch.softmax(torch.cat([self.sse_r(new_rgb), self.sse_t(new_t)], dim=1), dim=1)
        att_l, att_r = att[:, 0:1], att[:, 1:2]
        new_rgb = new_rgb * att_l + new_t * att_r
        new_t = new_t * att_r
        return torch.cat([new_rgb, new_t], dim=1)


class _GCM(nn.Module):
    """EAEFNet's GCM: 4 branches (BasicConv2d without ReLU), one shared SE (avg, ratio 4) on each, summed."""

    def __init__(self, in_channel: int, out_channel: int = 64):
        super().__init__()

        def bc(i, o, k, p=0):
            return BasicConv2d(i, o, k, padding=p, relu=False)

        self.relu = nn.ReLU(True)
        self.branch0 = nn.Sequential(bc(in_channel, out_channel, 1))
        self.branch1 = bc(in_channel, out_channel, 1)
        self.branch1_1 = bc(out_channel, out_channel, (1, 3), (0, 1))
        self.branch1_2 = bc(out_channel, out_channel, (3, 1), (1, 0))
        self.branch2 = bc(in_channel, out_channel, 1)
        self.branch2_1 = bc(out_channel, out_channel, (1, 5), (0, 2))
        self.branch2_2 = bc(out_channel, out_channel, (5, 1), (2, 0))
        self.branch3 = bc(in_channel, out_channel, 1)
        self.branch3_1 = bc(out_channel, out_channel, (1, 7), (0, 3))
        self.branch3_2 = bc(out_channel, out_channel, (7, 1), (3, 0))
        self.se = SEAvgPool(out_channel, 4)
        self.conv_res = nn.Conv2d(in_channel, out_channel, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.se(self.branch0(x))
        x1 = self.se(self.branch1_2(self.branch1_1(self.branch1(x))))
        x2 = self.se(self.branch2_2(self.branch2_1(self.branch2(x))))
        x3 = self.se(self.branch3_2(self.branch3_1(self.branch3(x))))
        return self.relu(x0 + x1 + x2 + x3 + self.conv_res(x))


class _FAEncoder(nn.Module):
    """Two ResNet trunks; EAEF at 5 points, fed back into both streams. Returns 5 RGB-side maps."""

    def __init__(self, num_resnet_layers: int = 152, cross_gate: str = "faithful"):
        super().__init__()
        if num_resnet_layers not in (50, 101, 152):
            raise ValueError(f"num_resnet_layers must be 50, 101 or 152, got {num_resnet_layers!r}")
        self.num_resnet_layers = num_resnet_layers
        attach_two_stream_trunks(self, num_resnet_layers)
        for i, c in enumerate((64, 256, 512, 1024, 2048)):
            setattr(self, f"idam_{i}", EAEF(c, cross_gate))

    def forward(self, x: torch.Tensor):
        rgb = self.encoder_rgb_maxpool(self.encoder_rgb_relu(self.encoder_rgb_bn1(self.encoder_rgb_conv1(x[:, :3]))))
        t = self.encoder_thermal_maxpool(self.encoder_thermal_relu(
            self.encoder_thermal_bn1(self.encoder_thermal_conv1(x[:, 3:]))))
        out = self.idam_0(torch.cat([rgb, t], dim=1))
        rgb, t = out[:, :64], out[:, 64:]
        maps = [rgb]
        for k in range(1, 5):
            rgb = getattr(self, f"encoder_rgb_layer{k}")(rgb)
            t = getattr(self, f"encoder_thermal_layer{k}")(t)
            c = rgb.shape[1]
            out = getattr(self, f"idam_{k}")(torch.cat([rgb, t], dim=1))
            rgb, t = out[:, :c], out[:, c:]
            maps.append(rgb)
        return maps[::-1]  # official order: [1/32, 1/16, 1/8, 1/4 (layer1), 1/4 (stem)]


class _TurboDecoder(nn.Module):
    def __init__(self, n_class: int = 2, channel: int = 64):
        super().__init__()
        from gasdb_tools.bench.models.rtcan import AggregationInit

        self.rfb2_1 = _GCM(512, channel)
        self.rfb3_1 = _GCM(1024, channel)
        self.rfb4_1 = _GCM(2048, channel)
        self.rfb0_2 = _GCM(64, channel)
        self.rfb1_2 = _GCM(256, channel)
        self.rfb5_2 = _GCM(512, channel)
        self.agg1 = AggregationInit(channel, n_class, basic_relu=False, se=True)  # official: 9 outputs
        self.agg1_splat = AggregationInit(channel, 1, basic_relu=False, se=True)
        self.miniaspp = MiniASPP(channel)
        self.HA = Refine()
        self.agant1 = make_agant_layer(channel, channel)
        self.deconv1 = make_transpose_layer(channel, channel, 3, stride=2)
        self.agant2 = make_agant_layer(channel, channel)
        self.deconv2 = make_transpose_layer(channel, channel, 3, stride=2)
        self.out2_conv = nn.Conv2d(channel, n_class, kernel_size=1)

    def forward(self, maps):
        r4, r3, r2, r1, r0 = maps
        x2_1 = self.rfb2_1(r2)
        x3_1 = self.rfb3_1(r3)
        x4_1 = self.rfb4_1(r4)
        attention_gate = torch.sigmoid(self.agg1_splat(x4_1, x3_1, x2_1))
        x, x1, x5 = self.HA(attention_gate, r0, r1, r2)
        x0_2 = self.rfb0_2(x)
        x1_2 = self.rfb1_2(x1)
        x5_2 = self.rfb5_2(x5)
        feature_map = up2(x5_2) + x1_2 + up2(x2_1) + up2(x3_1, 4) + x0_2 + up2(x4_1, 8)
        y = self.miniaspp(feature_map)
        head1 = up2(self.agg1(x4_1, x3_1, x2_1), 8)
        y = self.deconv2(self.agant2(self.deconv1(self.agant1(y))))
        return head1, self.out2_conv(y)


class EAEFNet(nn.Module):
    """EAEFNet, 2-class-capable and device-agnostic. Returns ``(head1, head2)``.

    Parameters
    ----------
    n_class : int
        Output classes of both heads.
    num_resnet_layers : {50, 101, 152}
        Trunk depth (official: 152).
    cross_gate : {'faithful', 'per-sample'}
        See the module docstring.
    imagenet_weights : path or state dict, optional
        Local torchvision ImageNet weights of that depth.
    """

    n_heads = 2

    def __init__(self, n_class: int = 2, num_resnet_layers: int = 152, *, cross_gate: str = "faithful",
                 imagenet_weights=None):
        super().__init__()
        self.FA_encoder = _FAEncoder(num_resnet_layers, cross_gate)
        self.Turbo_decoder = _TurboDecoder(n_class)
        if imagenet_weights is not None:
            load_two_stream_weights(self.FA_encoder, imagenet_weights)

    def forward(self, x: torch.Tensor):
        return self.Turbo_decoder(self.FA_encoder(x))


from gasdb_tools.bench.registry import register_model  # noqa: E402

_EAEF_REF = "FreeformRobotics/EAEFNet a830654, EAEF_Seg_MF/EAEFNet_MF/model/EAEFNet.py (2-class fix)"


@register_model("eaefnet-50", summary="EAEFNet, 2x ResNet-50, EAEF fusion fed back, 2 heads (2-class fix)",
                heads=2, imagenet_depth=50, reference=_EAEF_REF + " (depth changed to 50)",
                reference_params=77_970_000)
def eaefnet_50(n_class: int = 2, **kwargs) -> EAEFNet:
    """EAEFNet with ResNet-50 trunks."""
    return EAEFNet(n_class, 50, **kwargs)


@register_model("eaefnet-152", summary="EAEFNet, 2x ResNet-152 (official depth), 2 heads (2-class fix)", heads=2,
                imagenet_depth=152, reference=_EAEF_REF, reference_params=147_240_000)
def eaefnet_152(n_class: int = 2, **kwargs) -> EAEFNet:
    """EAEFNet with ResNet-152 trunks (the official depth)."""
    return EAEFNet(n_class, 152, **kwargs)
