"""The reference benchmark harness behind ``gasdb bench`` (needs the ``bench`` extra: PyTorch).

* :mod:`~gasdb_tools.bench.registry`: ``create_model``, ``list_models``, ``register_model``;
* :mod:`~gasdb_tools.bench.models`: RT-CAN (R50/R152), MFNet, RTFNet, EAEFNet, U-Net-R18, PSPNet,
  RSFNet (50-18/101-34, re-parameterisable), on a self-written ResNet whose keys match
  torchvision's; gas-identification models (1D-CNN, GasNet, early fusion);
* :mod:`~gasdb_tools.bench.losses`: 0.5 Dice + 0.5 label-smoothed CE per head, summed; RSFNet's
  confidence loss;
* :mod:`~gasdb_tools.bench.data`: the Gas-DB folder layout and the official augmentation;
  :mod:`~gasdb_tools.bench.smoke`: smoke images + masks for the smoke -> gas transfer;
  :mod:`~gasdb_tools.bench.saliency`: RSFNet's saliency pseudo-labels;
* :mod:`~gasdb_tools.bench.train`, :mod:`~gasdb_tools.bench.evaluate`, :mod:`~gasdb_tools.bench.speed`;
* :mod:`~gasdb_tools.bench.gasid` (MultimodalGasData -> identification release) and
  :mod:`~gasdb_tools.bench.identify` (training and scoring identification models).

Protocols and reference numbers: ``docs/reference-models.md``.
"""

from gasdb_tools.bench.registry import (ModelSpec, count_parameters, create_model, get_spec, list_models,
                                        model_heads, register_model)

__all__ = ["ModelSpec", "count_parameters", "create_model", "get_spec", "list_models", "model_heads",
           "register_model"]
