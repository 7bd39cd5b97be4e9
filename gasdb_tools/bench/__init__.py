"""The reference benchmark harness behind ``gasdb bench`` (needs the ``bench`` extra: PyTorch).

* :mod:`~gasdb_tools.bench.registry`: ``create_model``, ``list_models``, ``register_model``;
* :mod:`~gasdb_tools.bench.models`: RT-CAN (R50/R152), MFNet, RTFNet, EAEFNet, U-Net-R18, PSPNet,
  on a self-written ResNet whose keys match torchvision's;
* :mod:`~gasdb_tools.bench.losses`: 0.5 Dice + 0.5 label-smoothed CE per head, summed;
* :mod:`~gasdb_tools.bench.data`: the Gas-DB folder layout and the official augmentation;
* :mod:`~gasdb_tools.bench.train`, :mod:`~gasdb_tools.bench.evaluate`, :mod:`~gasdb_tools.bench.speed`.

Protocols and reference numbers: ``docs/reference-models.md``.
"""

from gasdb_tools.bench.registry import (ModelSpec, count_parameters, create_model, get_spec, list_models,
                                        model_heads, register_model)

__all__ = ["ModelSpec", "count_parameters", "create_model", "get_spec", "list_models", "model_heads",
           "register_model"]
