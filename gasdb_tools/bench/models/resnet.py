"""A self-written ResNet whose ``state_dict`` keys are exactly torchvision's.

torchvision's ResNet is "V1.5": the stride-2 of a Bottleneck sits in its 3×3 ``conv2`` [1]_ [2]_.
Module names, parameter shapes and the key order match ``torchvision.models.resnet{18,34,50,101,152}``,
so an ImageNet weight file (e.g. ``resnet50-0676ba61.pth``, IMAGENET1K_V1) loads **strictly** from a
local path: nothing is downloaded, and torchvision is not needed.

References
----------
.. [1] K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016,
   doi:10.1109/CVPR.2016.90.
.. [2] pytorch/vision, ``torchvision/models/resnet.py`` (module layout; see
   ``docs/reference-models.md`` §5 for the key table).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from gasdb_tools.errors import ModelError

__all__ = [
    "BasicBlock", "Bottleneck", "ResNet", "resnet", "resnet18", "resnet34", "resnet50", "resnet101",
    "resnet152", "DEPTHS", "STEM_INITS", "early_fusion_stem_weight", "read_state_dict", "load_imagenet_weights",
    "trunk_state_dict", "thermal_stem_weight", "attach_two_stream_trunks", "load_two_stream_weights",
]

#: Blocks per stage and the block type of each supported depth (torchvision's table).
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or ``downsample``) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here, "V1.5") → 1×1 ×4 with a shortcut; ResNet-50/101/152."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with torchvision's module names (``conv1, bn1, relu, maxpool, layer1..4, avgpool, fc``).

    Parameters
    ----------
    depth : {18, 34, 50, 101, 152}
        Network depth.
    in_channels : int
        Input channels of ``conv1`` (3 for ImageNet weights; 4 for early RGB-T fusion).
    num_classes : int
        Outputs of ``fc``.
    include_fc : bool
        Build ``avgpool`` and ``fc``; without them the model is a trunk and :meth:`forward`
        returns the ``layer4`` features.
    dilate : tuple of 3 bool
        Replace the stride of ``layer2..4`` by dilation (torchvision's
        ``replace_stride_with_dilation``; keys are unchanged), e.g. ``(False, True, True)`` for
        output stride 8 (PSPNet).

    Examples
    --------
    >>> model = ResNet(50)
    >>> sum(p.numel() for p in model.parameters())
    25557032
    >>> len(model.state_dict())
    320
    """

    def __init__(self, depth: int = 50, *, in_channels: int = 3, num_classes: int = 1000, include_fc: bool = True,
                 dilate: tuple[bool, bool, bool] = (False, False, False)):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        if len(dilate) != 3:
            raise ValueError(f"dilate needs 3 flags (layer2, layer3, layer4), got {dilate!r}")
        kind, layers = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate[2])
        self.out_channels = 512 * block.expansion
        if include_fc:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.out_channels, num_classes)
        else:
            self.avgpool = None
            self.fc = None
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 → bn1 → relu (stride 2, before the max-pool)."""
        return self.relu(self.bn1(self.conv1(x)))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem (1/2) and ``layer1..4`` outputs (1/4 … 1/32), as U-Net-style encoders use."""
        s = self.stem(x)
        f1 = self.layer1(self.maxpool(s))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [s, f1, f2, f3, f4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)[-1]
        if self.fc is None:
            return x
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(depth: int, **kwargs) -> ResNet:
    """A :class:`ResNet` of the given depth (keyword arguments as for the class)."""
    return ResNet(depth, **kwargs)


def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (11,689,512 parameters with ``fc``)."""
    return ResNet(18, **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (21,797,672 parameters with ``fc``)."""
    return ResNet(34, **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (25,557,032 parameters with ``fc``)."""
    return ResNet(50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (44,549,160 parameters with ``fc``)."""
    return ResNet(101, **kwargs)


def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (60,192,808 parameters with ``fc``)."""
    return ResNet(152, **kwargs)


# ----------------------------------------------------------------------------------------------
# Loading ImageNet weights from a local file
# ----------------------------------------------------------------------------------------------

def read_state_dict(source) -> dict[str, torch.Tensor]:
    """Read a weight file (a plain tensor dict, as torchvision publishes) or pass a mapping through.

    Parameters
    ----------
    source : str, os.PathLike or Mapping
        A ``.pth`` file, loaded with ``torch.load(..., map_location="cpu", weights_only=True)``
        (no code from the file runs), or an already loaded state dict. A checkpoint that wraps the
        weights under ``"state_dict"`` or ``"model"`` is unwrapped.

    Raises
    ------
    ModelError
        When the file is missing or does not hold a tensor dict.
    """
    if isinstance(source, Mapping):
        state = dict(source)
        name = "<state dict>"
    else:
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise ModelError("weight file not found", file=name,
                             fix="download the torchvision ImageNet file once (e.g. resnet50-0676ba61.pth) "
                                 "and pass its local path")
        try:
            state = torch.load(name, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, truncated zip, ...
            raise ModelError(f"cannot read the weight file ({type(exc).__name__}: {exc})", file=name,
                             fix="pass a torchvision .pth state dict") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = dict(state[wrapper])
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("the file does not hold a dict of tensors", file=name,
                         fix="pass a torchvision .pth state dict")
    return dict(state)


def _add_missing_bn_counters(state: dict[str, torch.Tensor], expected: list[str]) -> dict[str, torch.Tensor]:
    """Pre-0.4.1 files lack ``num_batches_tracked``; add zero counters so strict loading works."""
    out = dict(state)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros((), dtype=torch.long)
    return out


def load_imagenet_weights(model: ResNet, source, *, strict: bool = True, stem_init: str = "tile") -> ResNet:
    """Load torchvision ImageNet weights into a :class:`ResNet` (in place; returns it).

    ``fc.*`` keys are dropped when the model has no ``fc``; missing ``num_batches_tracked`` keys
    (old files) are filled with zeros; every other key must match by name and shape. A model
    whose ``conv1`` takes more than 3 channels (early RGB-T fusion) gets its stem from the RGB
    filters: ``stem_init="tile"`` (segmentation-models-pytorch's rule: channel i ← RGB channel
    i mod 3, all × 3/in_channels) or ``"mean"`` (RGB filters kept, each extra channel = their mean,
    the RT-CAN lineage's thermal stem).

    Raises
    ------
    ModelError
        When keys or shapes do not match (the message lists the first few).
    """
    state = read_state_dict(source)
    if model.fc is None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = list(model.state_dict())
    state = _add_missing_bn_counters(state, expected)
    w = state.get("conv1.weight")
    in_ch = model.conv1.weight.shape[1]
    if w is not None and w.ndim == 4 and w.shape[1] == 3 and in_ch != 3:
        state["conv1.weight"] = early_fusion_stem_weight(w, in_ch, mode=stem_init)
    _load_strict(model, state, strict=strict, what=f"ResNet-{model.depth}")
    return model


STEM_INITS = ("tile", "mean")


def early_fusion_stem_weight(weight: torch.Tensor, in_channels: int, *, mode: str = "tile") -> torch.Tensor:
    """(O, 3, k, k) RGB filters → (O, in_channels, k, k) for an early-fusion stem.

    ``tile``: channel i = RGB channel i mod 3, all × 3/in_channels (segmentation-models-pytorch);
    ``mean``: the RGB filters unchanged and every extra channel = their mean.
    """
    if mode not in STEM_INITS:
        raise ValueError(f"stem_init must be one of {STEM_INITS}, got {mode!r}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if mode == "tile":
        idx = torch.arange(in_channels) % weight.shape[1]
        return weight[:, idx] * (weight.shape[1] / in_channels)
    extra = weight.mean(dim=1, keepdim=True).expand(-1, max(in_channels - weight.shape[1], 0), -1, -1)
    return torch.cat([weight[:, :in_channels], extra], dim=1)


def thermal_stem_weight(weight: torch.Tensor) -> torch.Tensor:
    """The RT-CAN-lineage thermal stem: the mean of the RGB ``conv1`` filters, kept as (O, 1, k, k)."""
    return weight.mean(dim=1, keepdim=True)


def _load_strict(module: nn.Module, state: dict, *, strict: bool, what: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} with another shape (e.g. {shapes[:2]})")
        raise ModelError(f"weights do not fit {what}: " + "; ".join(parts),
                         fix="use torchvision ImageNet weights of the same depth")
    module.load_state_dict(state, strict=strict)


def trunk_state_dict(source) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict without ``fc.*`` (and with BN counters where missing)."""
    return {k: v for k, v in read_state_dict(source).items() if not k.startswith("fc.")}


# ----------------------------------------------------------------------------------------------
# The two-stream encoders of the RT-CAN lineage (RTFNet, EAEFNet, RT-CAN)
# ----------------------------------------------------------------------------------------------

_TRUNK_PARTS = ("bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def attach_two_stream_trunks(module: nn.Module, depth: int) -> None:
    """Give ``module`` the RTFNet-style flat trunk attributes of two ResNets of ``depth``.

    RGB: ``encoder_rgb_{conv1,bn1,relu,maxpool,layer1..4}``; thermal: a 1-channel
    ``encoder_thermal_conv1`` (initialised with the mean of its ResNet's ``conv1`` filters) and
    ``encoder_thermal_{bn1,relu,maxpool,layer1..4}``. These are the official module names, so
    checkpoints of RTFNet, EAEFNet and RT-CAN map key for key.
    """
    thermal = ResNet(depth, include_fc=False)
    rgb = ResNet(depth, include_fc=False)
    module.encoder_thermal_conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        module.encoder_thermal_conv1.weight.copy_(thermal_stem_weight(thermal.conv1.weight))
    for part in _TRUNK_PARTS:
        setattr(module, f"encoder_thermal_{part}", getattr(thermal, part))
    module.encoder_rgb_conv1 = rgb.conv1
    for part in _TRUNK_PARTS:
        setattr(module, f"encoder_rgb_{part}", getattr(rgb, part))


def load_two_stream_weights(module: nn.Module, source) -> nn.Module:
    """Load ImageNet ResNet weights into both trunks made by :func:`attach_two_stream_trunks`.

    Both streams get the same file (as the official code does with ``pretrained=True``); the
    thermal stem gets the mean of the RGB ``conv1`` filters. Every trunk key must be filled.

    Raises
    ------
    ModelError
        When the file does not fit the trunks (wrong depth, not a ResNet).
    """
    state = trunk_state_dict(source)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "conv1":
            mapped[f"encoder_rgb_conv1.{rest}"] = value
            mapped[f"encoder_thermal_conv1.{rest}"] = thermal_stem_weight(value)
        else:
            mapped[f"encoder_rgb_{head}.{rest}"] = value
            mapped[f"encoder_thermal_{head}.{rest}"] = value
    own = {k: v for k, v in module.state_dict().items() if k.startswith(("encoder_rgb_", "encoder_thermal_"))}
    mapped = _add_missing_bn_counters(mapped, list(own))
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    shapes = [k for k in own if k in mapped and tuple(mapped[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ModelError(f"ImageNet weights do not fit the two-stream encoder: {len(missing)} missing "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
                         f"{len(shapes)} with another shape (e.g. {shapes[:2]})",
                         fix="use torchvision ImageNet weights of the model's ResNet depth")
    module.load_state_dict(mapped, strict=False)
    return module
