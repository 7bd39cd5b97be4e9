"""RSFNet: residual spatial fusion of an asymmetric RGB / thermal encoder, gated by modality confidence.

Li, Chen, Lin, Xu, "Residual spatial fusion network for RGB-thermal semantic segmentation",
Neurocomputing 2024, arXiv:2306.10364 [1]_. Layout (``RSFNet50-18``; ``101-34`` swaps the trunks):

* **Asymmetric encoder:** ResNet-50 on RGB, ResNet-18 on the thermal channel repeated to 3
  channels (torchvision layouts, so ImageNet files load: ``imagenet_weights`` for the RGB trunk,
  ``thermal_imagenet_weights`` for the thermal one).
* **Confidence per modality:** GAP of the last stage → Linear(C, 128) → ReLU → Linear(128, 1) →
  sigmoid. The two scores ``c_rgb, c_t`` are regressed (smooth L1, weight λ = 0.3 in the recipe)
  towards saliency pseudo-labels (:func:`gasdb_tools.bench.saliency.confidence_targets`); for
  gating they are normalised, ``g_rgb = c_rgb / (c_rgb + c_t)``, ``g_t = 1 - g_rgb`` (as the
  authors' code does).
* **Residual Spatial Fusion (RSF) per stage** (1/4 … 1/32, widths 64, 128, 256, 256):
  channel recalibration per modality (ECA with an adaptive 1-D kernel, ``x + x·eca(x)``, then a
  1×1 compression to the stage width), a 1×1 ConvBNReLU to 64 channels, a 5×5 convolution,
  cross-modal spatial gating ``r' = r·σ(t)``, ``t' = t·σ(r)``, concatenation with the 1×1
  features, a 1×1 ConvBNReLU back to the stage width, × the modality's confidence gate, **+ the
  recalibrated input** (the residual).
* **Structural re-parameterisation:** each 5×5 convolution is trained as a multi-branch block
  (:class:`MultiBranchConv`: K×K + BN, 1×1 + BN, 1×1 → 1×K and 1×1 → K×1) and fused into one K×K
  convolution with bias for inference by :meth:`RSFNet.switch_to_deploy` (RepVGG / DBB rules
  [2]_); ``deploy=True`` builds the fused form directly.
* **Decoder:** per modality a top-down chain of feature-aggregation modules (FAM) to 1/4; the
  head (3×3 conv 128 + BN + ReLU, dropout 0.1, 1×1 conv) runs on ``rgb + thermal`` and is
  upsampled ×4 (bilinear, ``align_corners=True``).

**Parameters** (deploy form, 9 classes): 44,571,187 (50-18) and 73,671,475 (101-34), against the
paper's 44.53 M and 73.63 M (+0.09 % and +0.06 %). The authors' code also builds two
deep-supervision heads at 1/8 and 1/16 that run in training only (+445,202 parameters with 9
classes); the paper does not describe them and its counts leave them out, so they are not built
here. The training form adds 53,440 parameters per multi-branch block (8 blocks: +427,520).

References
----------
.. [1] P. Li, J. Chen, B. Lin, X. Xu, Neurocomputing 2024; code ``mlvccn/research`` (RSFNet,
   ``DPAdd50_EGCFM_k5_addHead``), read for the layout; not copied.
.. [2] X. Ding et al., "RepVGG", CVPR 2021; "Diverse Branch Block", CVPR 2021.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gasdb_tools.bench.models.resnet import ResNet, load_imagenet_weights

__all__ = ["RSFNet", "MultiBranchConv", "RSF", "ECACompress", "FAM", "fuse_conv_bn", "STAGE_WIDTHS"]

#: Output width of each fusion stage (1/4, 1/8, 1/16, 1/32).
STAGE_WIDTHS = (64, 128, 256, 256)
_PAIRS = {(50, 18), (101, 34), (50, 34), (101, 18), (50, 50), (101, 101)}


def _conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def fuse_conv_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding bias-free convolution: ``(weight', bias')``."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class MultiBranchConv(nn.Module):
    """A K×K convolution trained as four parallel branches and fused into one for inference.

    Branches (summed, no nonlinearity): K×K conv + BN; 1×1 conv + BN; 1×1 conv → 1×K conv;
    1×1 conv → K×1 conv (the factorised branches of the authors' code, bias- and BN-free, so their
    composition is exactly a K×K kernel of rank-1 rows/columns). Stride 1, ``padding = K // 2``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd K (RSFNet: 5).
    deploy : bool
        Build the fused single K×K convolution (with bias) instead of the branches.

    Examples
    --------
    >>> block = MultiBranchConv(8, 8, 5).eval()
    >>> x = torch.randn(1, 8, 9, 7)
    >>> y = block(x)
    >>> block.switch_to_deploy()
    >>> bool(torch.allclose(block(x), y, atol=1e-5))
    True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, *, deploy: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        p = kernel_size // 2
        if deploy:
            self.reparam = nn.Conv2d(in_channels, out_channels, kernel_size, padding=p, bias=True)
            return
        self.kxk = nn.Conv2d(in_channels, out_channels, kernel_size, padding=p, bias=False)
        self.kxk_bn = nn.BatchNorm2d(out_channels)
        self.one = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.one_bn = nn.BatchNorm2d(out_channels)
        self.row = nn.Sequential(nn.Conv2d(in_channels, in_channels, 1, bias=False),
                                 nn.Conv2d(in_channels, out_channels, (1, kernel_size), padding=(0, p), bias=False))
        self.col = nn.Sequential(nn.Conv2d(in_channels, in_channels, 1, bias=False),
                                 nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(p, 0), bias=False))

    @property
    def deployed(self) -> bool:
        """Whether the block is the fused single convolution."""
        return hasattr(self, "reparam")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.reparam(x)
        return self.kxk_bn(self.kxk(x)) + self.one_bn(self.one(x)) + self.row(x) + self.col(x)

    @torch.no_grad()
    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent single K×K ``(weight, bias)`` (BN running statistics folded in)."""
        if self.deployed:
            return self.reparam.weight.detach().clone(), self.reparam.bias.detach().clone()
        k, p = self.kernel_size, self.kernel_size // 2
        w, b = fuse_conv_bn(self.kxk.weight, self.kxk_bn)
        w1, b1 = fuse_conv_bn(self.one.weight, self.one_bn)
        w = w + F.pad(w1, (p, p, p, p))
        b = b + b1
        # 1×1 (C→C) then 1×K: W[o, i, 0, x] = Σ_m B[o, m, 0, x] · A[m, i]; then K×1 likewise
        for seq, pad in ((self.row, (0, 0, p, p)), (self.col, (p, p, 0, 0))):
            a = seq[0].weight[:, :, 0, 0]
            comp = torch.einsum("omyx,mi->oiyx", seq[1].weight, a)
            w = w + F.pad(comp, pad)
        assert w.shape[-2:] == (k, k)
        return w, b

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the branches by the fused convolution (in place; idempotent)."""
        if self.deployed:
            return
        w, b = self.fused_kernel()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, padding=self.kernel_size // 2,
                         bias=True).to(device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        for name in ("kxk", "kxk_bn", "one", "one_bn", "row", "col"):
            delattr(self, name)
        self.reparam = conv


class ECACompress(nn.Module):
    """Channel recalibration by ECA (Wang et al., CVPR 2020) then a 1×1 compression.

    ``y = σ(conv1d_k(GAP(x)))``, ``out = conv1x1(x + x·y)``; the 1-D kernel size is ECA's adaptive
    ``k = odd(|(log2 C + 1) / 2|)``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        t = int(abs((math.log2(in_channels) + 1) / 2))
        k = t if t % 2 else t + 1
        self.eca = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.compress = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.eca(x.mean((2, 3))[:, None, :])  # (N, 1, C)
        y = torch.sigmoid(y)[:, 0, :, None, None]
        return self.compress(x + x * y)


class RSF(nn.Module):
    """Residual Spatial Fusion of one stage (both modalities; see the module docstring).

    ``forward(rgb, thermal, g_rgb, g_t)`` returns the fused ``(rgb, thermal)`` features, each
    ``out_channels`` wide.
    """

    def __init__(self, rgb_channels: int, thermal_channels: int, out_channels: int, *, mid_channels: int = 64,
                 kernel_size: int = 5, deploy: bool = False):
        super().__init__()
        self.rgb_recal = ECACompress(rgb_channels, out_channels)
        self.thermal_recal = ECACompress(thermal_channels, out_channels)
        self.rgb_reduce = _conv_bn_relu(out_channels, mid_channels)
        self.thermal_reduce = _conv_bn_relu(out_channels, mid_channels)
        self.rgb_spatial = MultiBranchConv(mid_channels, mid_channels, kernel_size, deploy=deploy)
        self.thermal_spatial = MultiBranchConv(mid_channels, mid_channels, kernel_size, deploy=deploy)
        self.rgb_fuse = _conv_bn_relu(2 * mid_channels, out_channels)
        self.thermal_fuse = _conv_bn_relu(2 * mid_channels, out_channels)

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor, g_rgb: torch.Tensor, g_t: torch.Tensor):
        r, t = self.rgb_recal(rgb), self.thermal_recal(thermal)
        r1, t1 = self.rgb_reduce(r), self.thermal_reduce(t)
        r2, t2 = self.rgb_spatial(r1), self.thermal_spatial(t1)
        r_cross, t_cross = r2 * torch.sigmoid(t2), t2 * torch.sigmoid(r2)
        r_out = self.rgb_fuse(torch.cat([r_cross, r1], 1)) * g_rgb + r
        t_out = self.thermal_fuse(torch.cat([t_cross, t1], 1)) * g_t + t
        return r_out, t_out


class FAM(nn.Module):
    """Feature aggregation of a lateral (``left``) and a coarser (``down``) map, as in RSFNet's decoder.

    ``z1 = ReLU(conv_l2d(left) · up(down))``, ``z2 = ReLU(up(conv_d2l(down)) · left)``,
    ``out = ReLU(BN(conv3x3(cat[z1, z2])))`` at the lateral resolution (3×3 convs with bias).
    """

    def __init__(self, left_channels: int, down_channels: int, out_channels: int):
        super().__init__()
        self.conv_d2l = nn.Conv2d(down_channels, left_channels, 3, padding=1)
        self.conv_l2d = nn.Conv2d(left_channels, down_channels, 3, padding=1)
        self.conv = nn.Conv2d(left_channels + down_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, left: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        size = left.shape[-2:]
        down_mask = self.conv_d2l(down)
        left_mask = self.conv_l2d(left)
        if down.shape[-2:] != size:
            down = F.interpolate(down, size=size, mode="bilinear", align_corners=True)
            down_mask = F.interpolate(down_mask, size=size, mode="bilinear", align_corners=True)
        z1 = F.relu(left_mask * down)
        z2 = F.relu(down_mask * left)
        return F.relu(self.bn(self.conv(torch.cat([z1, z2], 1))))


class _Confidence(nn.Sequential):
    def __init__(self, channels: int, hidden: int = 128):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, 1), nn.Sigmoid())


class RSFNet(nn.Module):
    """RSFNet with an asymmetric ResNet encoder. Input (N, 4, H, W) RGB-T, H and W multiples of 32.

    Parameters
    ----------
    n_class : int
        Output classes.
    rgb_depth, thermal_depth : int
        Trunk depths (50/18 or 101/34 as published).
    mid_channels, kernel_size : int
        RSF inner width (64) and spatial kernel (5).
    deploy : bool
        Build the inference form (fused K×K convolutions) directly.
    imagenet_weights, thermal_imagenet_weights : path or state dict, optional
        Local torchvision ImageNet files of ``rgb_depth`` and ``thermal_depth``.

    Notes
    -----
    In training mode ``forward`` returns ``(logits, confidence)`` with ``confidence`` the raw
    sigmoid scores ``(N, 2)`` = ``[c_rgb, c_t]`` (the trainer regresses them onto the saliency
    pseudo-labels); in eval mode it returns the logits, or the pair with ``return_confidence``.
    """

    n_heads = 1
    #: the trainer asks the data pipeline for saliency pseudo-labels (``confidence_targets``)
    needs_confidence_targets = True

    def __init__(self, n_class: int = 2, *, rgb_depth: int = 50, thermal_depth: int = 18, mid_channels: int = 64,
                 kernel_size: int = 5, deploy: bool = False, imagenet_weights=None, thermal_imagenet_weights=None):
        super().__init__()
        if (rgb_depth, thermal_depth) not in _PAIRS:
            raise ValueError(f"(rgb_depth, thermal_depth) must be one of {sorted(_PAIRS)}, "
                             f"got {(rgb_depth, thermal_depth)}")
        self.rgb_depth, self.thermal_depth = rgb_depth, thermal_depth
        self.rgb_encoder = ResNet(rgb_depth, include_fc=False)
        self.thermal_encoder = ResNet(thermal_depth, include_fc=False)
        rgb_ch = [c * (4 if rgb_depth >= 50 else 1) for c in (64, 128, 256, 512)]
        th_ch = [c * (4 if thermal_depth >= 50 else 1) for c in (64, 128, 256, 512)]
        self.rgb_confidence = _Confidence(rgb_ch[-1])
        self.thermal_confidence = _Confidence(th_ch[-1])
        self.fusion = nn.ModuleList(RSF(rc, tc, w, mid_channels=mid_channels, kernel_size=kernel_size, deploy=deploy)
                                    for rc, tc, w in zip(rgb_ch, th_ch, STAGE_WIDTHS))
        w = STAGE_WIDTHS
        self.rgb_decoder = nn.ModuleList([FAM(w[2], w[3], w[2]), FAM(w[1], w[2], w[1]), FAM(w[0], w[1], w[0])])
        self.thermal_decoder = nn.ModuleList([FAM(w[2], w[3], w[2]), FAM(w[1], w[2], w[1]), FAM(w[0], w[1], w[0])])
        self.head = nn.Sequential(nn.Conv2d(w[0], 128, 3, padding=1, bias=False), nn.BatchNorm2d(128),
                                  nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(128, n_class, 1))
        if imagenet_weights is not None:
            load_imagenet_weights(self.rgb_encoder, imagenet_weights)
        if thermal_imagenet_weights is not None:
            load_imagenet_weights(self.thermal_encoder, thermal_imagenet_weights)

    @staticmethod
    def _stages(encoder: ResNet, x: torch.Tensor) -> list[torch.Tensor]:
        return encoder.features(x)[1:]

    def forward(self, x: torch.Tensor, *, return_confidence: bool = False):
        rgb_feats = self._stages(self.rgb_encoder, x[:, :3])
        th_feats = self._stages(self.thermal_encoder, x[:, 3:4].expand(-1, 3, -1, -1))
        c_rgb = self.rgb_confidence(rgb_feats[-1])
        c_t = self.thermal_confidence(th_feats[-1])
        g_rgb = (c_rgb / (c_rgb + c_t + 1e-7))[:, :, None, None]
        g_t = 1.0 - g_rgb
        fused = [rsf(r, t, g_rgb, g_t) for rsf, r, t in zip(self.fusion, rgb_feats, th_feats)]
        r, t = fused[3]
        for k, (fam_r, fam_t) in enumerate(zip(self.rgb_decoder, self.thermal_decoder)):
            lr, lt = fused[2 - k]
            r, t = fam_r(lr, r), fam_t(lt, t)
        logits = F.interpolate(self.head(r + t), scale_factor=4, mode="bilinear", align_corners=True)
        if self.training or return_confidence:
            return logits, torch.cat([c_rgb, c_t], 1)
        return logits

    def switch_to_deploy(self) -> "RSFNet":
        """Fuse every :class:`MultiBranchConv` into one K×K convolution (in place; returns self).

        Exact in eval mode (BN running statistics are folded in); train further only in the
        training form.
        """
        for m in self.modules():
            if isinstance(m, MultiBranchConv):
                m.switch_to_deploy()
        return self

    reparameterize = switch_to_deploy


from gasdb_tools.bench.registry import register_model  # noqa: E402

_REF = "Li et al., Neurocomputing 2024 (arXiv 2306.10364); authors' code mlvccn/research RSFNet (layout)"


@register_model("rsfnet-50-18", summary="RSFNet, ResNet-50 RGB + ResNet-18 thermal, confidence-gated RSF, 1 head",
                imagenet_depth=50, reference=_REF + "; paper: 44.53 M params (9 classes, deploy form)",
                reference_params=44_530_000, deploy_form=True)
def rsfnet_50_18(n_class: int = 2, **kwargs) -> RSFNet:
    """RSFNet50-18 (training form unless ``deploy=True``)."""
    return RSFNet(n_class, rgb_depth=50, thermal_depth=18, **kwargs)


@register_model("rsfnet-101-34", summary="RSFNet, ResNet-101 RGB + ResNet-34 thermal, confidence-gated RSF, 1 head",
                imagenet_depth=101, reference=_REF + "; paper: 73.63 M params (9 classes, deploy form)",
                reference_params=73_630_000, deploy_form=True)
def rsfnet_101_34(n_class: int = 2, **kwargs) -> RSFNet:
    """RSFNet101-34 (training form unless ``deploy=True``)."""
    return RSFNet(n_class, rgb_depth=101, thermal_depth=34, **kwargs)
