"""Benchmark models (PyTorch, no torchvision). Importing this package registers every model.

=============== ============================================== ==============
registry name   model                                          params, 2 cls
=============== ============================================== ==============
rtcan-r50       RT-CAN (GasSegNet), 2× ResNet-50               65,829,822
rtcan-r152      RT-CAN, 2× ResNet-152                          135,101,374
mfnet           MFNet                                          734,238
rtfnet-50       RTFNet, 2× ResNet-50                           185.23 M
rtfnet-152      RTFNet, 2× ResNet-152 (official depth)         254.50 M
eaefnet-50      EAEFNet, 2× ResNet-50 (2-class fix)            77.97 M
eaefnet-152     EAEFNet, 2× ResNet-152 (official depth)        147.24 M
unet-r18        U-Net, ResNet-18 encoder, early fusion         14,331,490
pspnet-r50      PSPNet, dilated ResNet-50, early fusion        (ours)
rsfnet-50-18    RSFNet, ResNet-50 RGB + ResNet-18 thermal      44.57 M deploy
rsfnet-101-34   RSFNet, ResNet-101 RGB + ResNet-34 thermal     73.67 M deploy
=============== ============================================== ==============

Gas identification (MultimodalGasData, :mod:`~gasdb_tools.bench.models.gasid`): ``gas-1dcnn``
(sensors), ``gasnet`` (thermal image), ``gas-fusion`` (early fusion of both feature vectors).
"""

from gasdb_tools.bench.models import eaefnet, gasid, mfnet, pspnet, resnet, rsfnet, rtcan, rtfnet, unet  # noqa: F401
from gasdb_tools.bench.models.eaefnet import EAEFNet
from gasdb_tools.bench.models.gasid import EarlyFusionNet, GasNet, SensorCNN1D
from gasdb_tools.bench.models.mfnet import MFNet
from gasdb_tools.bench.models.pspnet import PSPNet
from gasdb_tools.bench.models.resnet import ResNet
from gasdb_tools.bench.models.rsfnet import RSFNet
from gasdb_tools.bench.models.rtcan import GasSegNet
from gasdb_tools.bench.models.rtfnet import RTFNet
from gasdb_tools.bench.models.unet import UNet

__all__ = ["GasSegNet", "MFNet", "RTFNet", "EAEFNet", "UNet", "PSPNet", "RSFNet", "ResNet", "SensorCNN1D", "GasNet",
           "EarlyFusionNet"]
