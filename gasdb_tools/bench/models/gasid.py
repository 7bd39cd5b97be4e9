"""Gas-identification models: a 1D-CNN on the gas sensors, GasNet on the thermal image, and their early fusion.

Ahn et al. identify the gas situation of MultimodalGasData (NoGas, Perfume, Smoke, Mixture) with a
1D-CNN on the seven MQ sensor readings (96.3 % accuracy), "GasNet" on the thermal image (six 3×3
convolution layers and three fully connected layers, 96.4 %), and the early fusion of the two
feature vectors, 2304 + 384 values (99.3 %); the dataset's authors reported 83 % (LSTM on the
sensors), 93 % (CNN on the images) and 96 % (fusion) [1]_ [2]_. Layer widths other than those
figures are not published; these are ours, chosen so the feature sizes are the published ones:

* :class:`SensorCNN1D` (``gas-1dcnn``): the 7 standardised readings as a 1-channel sequence;
  Conv1d(1→32, k3, pad 1) → Conv1d(32→64, k3, pad 1) → Conv1d(64→64, k2) (each + BN + ReLU) →
  flatten = **384** features (64 × 6) → dropout 0.3 → Linear(384, 128) → ReLU → Linear(128, n).
* :class:`GasNet` (``gasnet``): a 1-channel thermal image in [0, 1]; six blocks of 3×3 conv + BN +
  ReLU + 2×2 max-pool (32, 32, 64, 64, 128, 256 channels) → adaptive average pool to 3×3 =
  **2304** features (256 × 9) → Linear(2304, 256) → ReLU → dropout 0.5 → Linear(256, 64) → ReLU
  → Linear(64, n).
* :class:`EarlyFusionNet` (``gas-fusion``): both feature extractors, concatenated (2304 + 384 =
  2688) → Linear(2688, 256) → ReLU → dropout 0.5 → Linear(256, n). Built with one modality
  (``modalities=("sensor",)`` or ``("thermal",)``) it is the sensor-only or thermal-only variant
  the harness runs when a release lacks the other modality.

Every model is called with keyword inputs: ``model(sensor=(N, 7) tensor, thermal=(N, 1, H, W)
tensor)`` (the ones it uses) and returns ``(N, n_class)`` logits.

References
----------
.. [1] Ahn et al., multimodal gas identification on MultimodalGasData (1D-CNN, GasNet, early
   fusion); figures as quoted in the project's issue.
.. [2] P. Narkhede et al., "Gas detection and identification using multimodal artificial
   intelligence based sensor fusion", Appl. Syst. Innov. 4(1):3, 2021; dataset: *Data* 7(8):112, 2022.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SensorCNN1D", "GasNet", "EarlyFusionNet", "SENSOR_FEATURES", "THERMAL_FEATURES", "MODALITIES"]

SENSOR_FEATURES = 384
THERMAL_FEATURES = 2304
MODALITIES = ("sensor", "thermal")


def _need(name: str, value):
    if value is None:
        raise ValueError(f"this model needs the {name!r} input (model({name}=...))")
    return value


class SensorCNN1D(nn.Module):
    """1D-CNN on the gas-sensor vector (see the module docstring). ``features`` gives the 384 values."""

    n_heads = 1
    modalities = ("sensor",)

    def __init__(self, n_class: int = 4, *, n_sensors: int = 7, dropout: float = 0.3):
        super().__init__()
        if n_sensors < 2:
            raise ValueError(f"n_sensors must be >= 2, got {n_sensors}")
        self.extractor = nn.Sequential(
            nn.Conv1d(1, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
            nn.Conv1d(32, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
            nn.Conv1d(64, 64, 2), nn.BatchNorm1d(64), nn.ReLU(inplace=True), nn.Flatten())
        self.out_features = 64 * (n_sensors - 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.out_features, 128), nn.ReLU(inplace=True),
                                        nn.Linear(128, n_class))

    def features(self, sensor: torch.Tensor) -> torch.Tensor:
        """(N, n_sensors) → (N, 64·(n_sensors − 1)) features."""
        return self.extractor(sensor[:, None, :])

    def forward(self, sensor: torch.Tensor | None = None, thermal: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(_need("sensor", sensor)))


class GasNet(nn.Module):
    """GasNet on a 1-channel thermal image (see the module docstring). ``features`` gives 2304 values."""

    n_heads = 1
    modalities = ("thermal",)

    def __init__(self, n_class: int = 4, *, in_channels: int = 1, widths=(32, 32, 64, 64, 128, 256)):
        super().__init__()
        if len(widths) != 6:
            raise ValueError(f"GasNet has six convolution layers, got widths {widths!r}")
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c = w
        layers += [nn.AdaptiveAvgPool2d(3), nn.Flatten()]
        self.extractor = nn.Sequential(*layers)
        self.out_features = c * 9
        self.classifier = nn.Sequential(nn.Linear(self.out_features, 256), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                        nn.Linear(256, 64), nn.ReLU(inplace=True), nn.Linear(64, n_class))

    def features(self, thermal: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) → (N, 2304) features."""
        return self.extractor(thermal)

    def forward(self, sensor: torch.Tensor | None = None, thermal: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(_need("thermal", thermal)))


class EarlyFusionNet(nn.Module):
    """Early fusion of the sensor (384) and thermal (2304) feature vectors, or one of them alone.

    Parameters
    ----------
    n_class : int
    modalities : sequence of {'sensor', 'thermal'}
        The branches to build; one modality gives the sensor-only / thermal-only variant.
    n_sensors : int
    """

    n_heads = 1

    def __init__(self, n_class: int = 4, *, modalities=MODALITIES, n_sensors: int = 7):
        super().__init__()
        given = (modalities,) if isinstance(modalities, str) else tuple(modalities)
        unknown = set(given) - set(MODALITIES)
        modalities = tuple(m for m in MODALITIES if m in given)
        if not modalities or unknown:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {given!r}")
        self.modalities = modalities
        width = 0
        if "sensor" in modalities:
            self.sensor_branch = SensorCNN1D(n_class, n_sensors=n_sensors).extractor
            width += 64 * (n_sensors - 1)
        if "thermal" in modalities:
            self.thermal_branch = GasNet(n_class).extractor
            width += THERMAL_FEATURES
        self.fused_features = width
        self.classifier = nn.Sequential(nn.Linear(width, 256), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                        nn.Linear(256, n_class))

    def features(self, sensor: torch.Tensor | None = None, thermal: torch.Tensor | None = None) -> torch.Tensor:
        """The concatenated feature vector (thermal first, then sensor: 2304 + 384)."""
        parts = []
        if "thermal" in self.modalities:
            parts.append(self.thermal_branch(_need("thermal", thermal)))
        if "sensor" in self.modalities:
            parts.append(self.sensor_branch(_need("sensor", sensor)[:, None, :]))
        return torch.cat(parts, dim=1)

    def forward(self, sensor: torch.Tensor | None = None, thermal: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(sensor=sensor, thermal=thermal))


from gasdb_tools.bench.registry import register_model  # noqa: E402

_REF = "Ahn et al. (1D-CNN 96.3 %, GasNet 96.4 %, early fusion 99.3 % on MultimodalGasData); widths ours"


@register_model("gas-1dcnn", summary="1D-CNN on the 7 MQ gas sensors (384 features), gas identification",
                task="identification", modalities=("sensor",), fusion="single", input_multiple=1, reference=_REF)
def gas_1dcnn(n_class: int = 4, **kwargs) -> SensorCNN1D:
    """The sensor-only 1D-CNN."""
    return SensorCNN1D(n_class, **kwargs)


@register_model("gasnet", summary="GasNet: 6 conv 3x3 + 3 fc on the thermal image (2304 features), gas identification",
                task="identification", modalities=("thermal",), fusion="single", input_multiple=1, reference=_REF)
def gasnet(n_class: int = 4, **kwargs) -> GasNet:
    """The thermal-only GasNet."""
    return GasNet(n_class, **kwargs)


@register_model("gas-fusion", summary="early fusion of GasNet (2304) + 1D-CNN (384) features, gas identification",
                task="identification", modalities=("sensor", "thermal"), fusion="early", input_multiple=1,
                reference=_REF)
def gas_fusion(n_class: int = 4, **kwargs) -> EarlyFusionNet:
    """Early fusion of the thermal and sensor features (or one branch, with ``modalities``)."""
    return EarlyFusionNet(n_class, **kwargs)
