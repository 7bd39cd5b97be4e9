"""The model registry: ``register_model`` on a factory, ``create_model(name)``, ``list_models()``.

One decorated factory adds a model (timm's pattern); the CLI, the trainer, the speed harness and the
registry-driven tests all go through :func:`create_model`, so a new model is benchmarked and tested
without further edits. Unknown names raise :class:`~gasdb_tools.errors.ModelError` listing close
matches.

Examples
--------
>>> from gasdb_tools.bench import registry
>>> "rtcan-r50" in registry.list_models()
True
>>> registry.list_models("rtcan*")
['rtcan-r152', 'rtcan-r50']
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import warnings
from dataclasses import dataclass, field
from typing import Callable

from gasdb_tools.errors import ModelError

__all__ = ["ModelSpec", "register_model", "create_model", "list_models", "get_spec", "count_parameters",
           "model_heads", "TASKS"]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model.

    Attributes
    ----------
    name : str
        Registry name (``rtcan-r50``).
    factory : callable
        ``factory(n_class=2, **kwargs) -> nn.Module``.
    summary : str
        One line for ``gasdb bench models``.
    heads : int
        Output heads; the prediction is ``argmax`` of their sum.
    fusion : str
        ``two-stream`` (separate RGB and thermal encoders), ``early`` (4-channel input or, for
        identification, concatenated feature vectors) or ``single`` (one modality).
    input_multiple : int
        Input height and width must be multiples of this.
    imagenet_depth : int or None
        Depth of the torchvision ResNet whose ImageNet file fits ``imagenet_weights``.
    reference : str
        Where the architecture comes from (official repository and commit, or layout).
    reference_params : int or None
        Parameter count of the official model with 2 classes: exact where it was counted (RT-CAN,
        U-Net), else the published value rounded to 0.01 M (MFNet: 0.734 M).
    kwargs : dict
        Default keyword arguments given to the factory.
    task : str
        ``segmentation`` (RGB-T gas masks, ``(N, 4, H, W)`` input) or ``identification`` (gas
        class from sensor readings and/or a thermal image, :mod:`gasdb_tools.bench.identify`).
    modalities : tuple of str
        Inputs the model uses: ``rgb``, ``thermal`` (image), ``sensor`` (gas-sensor vector).
    deploy_form : bool
        The factory takes ``deploy=True`` and builds a re-parameterised inference form (RSFNet).
    """

    name: str
    factory: Callable
    summary: str
    heads: int
    fusion: str
    input_multiple: int
    imagenet_depth: int | None = None
    reference: str = ""
    reference_params: int | None = None
    kwargs: dict = field(default_factory=dict)
    task: str = "segmentation"
    modalities: tuple = ("rgb", "thermal")
    deploy_form: bool = False


_REGISTRY: dict[str, ModelSpec] = {}
_LOADED = False


TASKS = ("segmentation", "identification")


def register_model(name: str, *, summary: str, heads: int = 1, fusion: str = "two-stream", input_multiple: int = 32,
                   imagenet_depth: int | None = None, reference: str = "", reference_params: int | None = None,
                   task: str = "segmentation", modalities: tuple = ("rgb", "thermal"), deploy_form: bool = False,
                   **kwargs):
    """Decorator registering ``factory(n_class=2, **kwargs)`` under ``name``.

    Re-registering a name replaces it with a warning (handy in notebooks).
    """
    if fusion not in ("two-stream", "early", "single"):
        raise ValueError(f"fusion must be 'two-stream', 'early' or 'single', got {fusion!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(factory: Callable) -> Callable:
        if name in _REGISTRY:
            warnings.warn(f"model {name!r} registered again; the new factory replaces the old one", stacklevel=2)
        _REGISTRY[name] = ModelSpec(name=name, factory=factory, summary=summary, heads=heads, fusion=fusion,
                                    input_multiple=input_multiple, imagenet_depth=imagenet_depth,
                                    reference=reference, reference_params=reference_params, kwargs=dict(kwargs),
                                    task=task, modalities=tuple(modalities), deploy_form=bool(deploy_form))
        return factory

    return decorator


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        importlib.import_module("gasdb_tools.bench.models")
        _LOADED = True


def list_models(pattern: str = "*", *, task: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (and ``task`` when given), sorted."""
    _ensure_loaded()
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return sorted(n for n, s in _REGISTRY.items() if fnmatch.fnmatchcase(n, pattern) and task in (None, s.task))


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises
    ------
    ModelError
        For an unknown name; the fix lists close matches, else every name.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(sorted(_REGISTRY))}"
        raise ModelError(f"unknown model {name!r}", field="model",
                         fix=f"{hint} (`gasdb bench models` lists them)") from None


def create_model(name: str, *, n_class: int = 2, **kwargs):
    """Build a registered model.

    Parameters
    ----------
    name : str
        Registry name (see :func:`list_models`).
    n_class : int
        Output classes (2 for Gas-DB).
    **kwargs
        Passed to the factory after the spec's defaults; ``None`` values are dropped so the
        defaults apply (e.g. ``imagenet_weights=None``).

    Returns
    -------
    torch.nn.Module
        With an ``n_heads`` attribute; a segmentation model's ``model(x)`` takes ``(N, 4, H, W)``
        RGB-T input in [0, 1] (identification models: see :mod:`gasdb_tools.bench.models.gasid`).
    """
    spec = get_spec(name)
    if not isinstance(n_class, int) or n_class < 2:
        raise ValueError(f"n_class must be an int >= 2, got {n_class!r}")
    args = {**spec.kwargs, **{k: v for k, v in kwargs.items() if v is not None}}
    try:
        return spec.factory(n_class=n_class, **args)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ValueError(f"model {name!r} does not take these arguments: {exc}") from None
        raise


def count_parameters(name: str, *, n_class: int = 2, **kwargs) -> int:
    """Parameter count of a registered model, built on the ``meta`` device (no memory, < 1 s)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, n_class=n_class, **kwargs)
    return sum(p.numel() for p in model.parameters())


def model_heads(output, n_heads: int) -> list:
    """The logit heads of a model's output: a tensor is one head; a tuple gives its first ``n_heads``."""
    if isinstance(output, (tuple, list)):
        return list(output[:n_heads])
    return [output]
