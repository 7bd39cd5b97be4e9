"""Scoring a model on a Gas-DB split with the toolkit's metrics (``gasdb_tools.metrics``).

The protocol of the official ``test.py`` (``reference-models.md`` §3.6, §8): prediction =
``argmax(head1 + head2)`` (a one-head model: ``argmax(head)``), no threshold sweep, one global int64
confusion matrix over every pixel of the split, Gas-DB's Acc = gas recall, IoU, F2. Each head can
also be scored on its own. The model runs at the label's size; inputs whose height or width is not
a multiple of the model's stride are zero-padded at the bottom/right and the logits cropped back
(a no-op for 640×512 frames).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from gasdb_tools.errors import ModelError
from gasdb_tools.metrics import ConfusionMatrix

__all__ = ["forward_heads", "forward_outputs", "evaluate_model", "report", "load_checkpoint", "evaluate_checkpoint",
           "HEAD_CHOICES"]

HEAD_CHOICES = ("sum", "all")


def forward_heads(model, images: torch.Tensor, *, n_heads: int, multiple: int = 32) -> list[torch.Tensor]:
    """Run ``model`` on ``images`` (N, 4, H, W) and return its logit heads at (H, W).

    Height and width are zero-padded up to a multiple of ``multiple`` (bottom/right) and the
    heads cropped back.
    """
    return forward_outputs(model, images, n_heads=n_heads, multiple=multiple)[0]


def forward_outputs(model, images: torch.Tensor, *, n_heads: int, multiple: int = 32):
    """Like :func:`forward_heads`, also returning the model's raw output (e.g. RSFNet's confidences)."""
    from gasdb_tools.bench.registry import model_heads

    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    x = F.pad(images, (0, pw, 0, ph)) if (ph or pw) else images
    raw = model(x)
    return [y[..., :h, :w] for y in model_heads(raw, n_heads)], raw


@torch.no_grad()
def evaluate_model(model, loader, *, device, n_heads: int, multiple: int = 32, heads: str = "all", amp: bool = False,
                   distributed: bool = False) -> dict[str, np.ndarray]:
    """Accumulate confusion matrices of a model over a loader.

    Parameters
    ----------
    model : torch.nn.Module
    loader : iterable of (images, labels, names)
    device : torch.device
    n_heads : int
        Heads the model returns.
    heads : {'sum', 'all'}
        ``sum``: only ``argmax(Σ heads)``; ``all``: also ``head1``, ``head2``, … separately.
    amp : bool
        Autocast to fp16 (CUDA only).
    distributed : bool
        All-reduce the counts over the process group (each rank scores its own shard).

    Returns
    -------
    dict of str to (2, 2) int64 array
        ``sum`` (the official prediction) and, with ``heads='all'`` and 2+ heads, ``head1`` …
    """
    if heads not in HEAD_CHOICES:
        raise ValueError(f"heads must be one of {HEAD_CHOICES}, got {heads!r}")
    was_training = model.training
    model.eval()
    keys = ["sum"] + ([f"head{i + 1}" for i in range(n_heads)] if heads == "all" and n_heads > 1 else [])
    cms = {k: ConfusionMatrix() for k in keys}
    use_amp = bool(amp) and torch.device(device).type == "cuda"
    try:
        for batch in loader:
            images, labels = batch[0].to(device, non_blocking=True), batch[1]
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                outs = forward_heads(model, images, n_heads=n_heads, multiple=multiple)
            gt = labels.numpy()
            preds = {"sum": sum(o.float() for o in outs)}
            for i, o in enumerate(outs):
                if f"head{i + 1}" in cms:
                    preds[f"head{i + 1}"] = o
            for key, logits in preds.items():
                cms[key].update(gt, logits.argmax(1).to(torch.uint8).cpu().numpy())
    finally:
        model.train(was_training)
    out = {k: m.matrix for k, m in cms.items()}
    if distributed:
        import torch.distributed as dist

        for k, cm in out.items():
            t = torch.as_tensor(cm, dtype=torch.int64, device=device)
            dist.all_reduce(t)
            out[k] = t.cpu().numpy()
    return out


def report(cms: dict[str, np.ndarray]) -> dict:
    """JSON-ready scores: ``{"sum": scores(cm), "head1": ..., ...}`` with the matrices as lists."""
    from gasdb_tools.metrics import scores

    return {k: {**scores(cm), "confusion_matrix": np.asarray(cm).tolist()} for k, cm in cms.items()}


def load_checkpoint(path, *, model_name: str | None = None, model_kwargs: dict | None = None, n_class: int = 2,
                    map_location="cpu"):
    """Build the model of a checkpoint and load its weights.

    Accepts a harness checkpoint (``best.pt``/``last.pt``: the model name, its arguments and the
    weights are inside) or a plain state dict such as an official RT-CAN ``<epoch>_latest.pth``
    (then ``model_name`` is required; keys must match exactly).

    Returns
    -------
    (model, meta)
        The model in eval mode on CPU, and the checkpoint's metadata (without weights).

    Raises
    ------
    ModelError
        When the file is unreadable, the model is unknown or the weights do not fit.
    """
    from gasdb_tools.bench.registry import create_model

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError("checkpoint not found", file=path, fix="pass best.pt or last.pt of a training run")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read the checkpoint ({type(exc).__name__}: {exc})", file=path,
                         fix="pass a checkpoint written by `gasdb bench train` or a plain state dict") from exc
    if isinstance(ckpt, dict) and ckpt.get("format") == "gasdb-bench-checkpoint":
        name = model_name or ckpt["model"]
        if model_name and model_name != ckpt["model"]:
            raise ModelError(f"the checkpoint holds {ckpt['model']!r}, not {model_name!r}", file=path,
                             fix=f"use --model {ckpt['model']} or leave --model out")
        kwargs = dict(ckpt.get("model_kwargs") or {})
        kwargs.update(model_kwargs or {})
        n_class = int(ckpt.get("n_class", n_class))
        state = ckpt["state_dict"]
        meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "scheduler", "scaler", "rng")}
    elif isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        if model_name is None:
            raise ModelError("a plain state dict does not say which model it is", file=path,
                             fix="pass --model (e.g. rtcan-r50)")
        name, kwargs, state, meta = model_name, dict(model_kwargs or {}), ckpt, {"model": model_name}
    else:
        raise ModelError("not a harness checkpoint or a state dict", file=path,
                         fix="pass a checkpoint written by `gasdb bench train`")
    for key in [k for k in kwargs if k.endswith("imagenet_weights")]:
        kwargs.pop(key)  # the checkpoint's weights replace them
    model = create_model(name, n_class=n_class, **kwargs)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"the weights do not fit {name!r}: {str(exc).splitlines()[0]}", file=path,
                         fix="check --model and its arguments (e.g. the ResNet depth)") from None
    meta = {**meta, "model": name, "model_kwargs": kwargs, "n_class": n_class}
    return model.eval(), meta


def evaluate_checkpoint(checkpoint, data, *, split: str = "test", model_name: str | None = None,
                        model_kwargs: dict | None = None, device="auto", batch_size: int = 4, num_workers: int = 0,
                        heads: str = "all", amp: bool = False, size_hw=None, out=None, data_format: str | None = None,
                        deploy: bool = False, count_ignore: bool = False) -> dict:
    """Score a checkpoint on one split of a Gas-DB folder and (optionally) write the JSON.

    Parameters
    ----------
    checkpoint : path
    data : path
        Gas-DB folder or release folder (or a smoke folder, see ``data_format``).
    data_format : {'auto', 'gasdb', 'smoke'}, optional
        Default: the checkpoint's training config, else ``auto``.
    deploy : bool
        Re-parameterise the model first (``switch_to_deploy()``, e.g. RSFNet); an error for
        models without one.
    split : {'test', 'val', 'train'}
        ``val`` is ``val.txt`` or the carve-out the trainer used (its seed/fraction from the
        checkpoint's config when present).
    out : path, optional
        Where to write the metrics JSON.
    count_ignore : bool
        Score the pixels the release marks as ignore (``ignore/``) as background, as RT-CAN's
        official ``test.py`` does; by default they are left out of the confusion matrix.

    Returns
    -------
    dict
        ``model``, ``checkpoint``, ``split``, ``n_images``, ``prediction``, ``scores``
        (``sum`` and per-head blocks from :func:`gasdb_tools.metrics.scores`).
    """
    from torch.utils.data import DataLoader

    from gasdb_tools.bench.data import resolve_source
    from gasdb_tools.bench.registry import get_spec
    from gasdb_tools.fsutil import write_json

    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, model_name=model_name, model_kwargs=model_kwargs)
    spec = get_spec(meta["model"])
    if deploy:
        if not hasattr(model, "switch_to_deploy"):
            raise ModelError(f"{meta['model']!r} has no deploy form", field="deploy",
                             fix="leave --deploy out for this model")
        model.switch_to_deploy()
    cfg = meta.get("config") or {}
    source = resolve_source(data, data_format or cfg.get("data_format", "auto"),
                            smoke_thermal=cfg.get("smoke_thermal", "gray"))
    names = source.splits(val_fraction=cfg.get("val_fraction", 0.1), val_block=cfg.get("val_block", 16),
                          seed=cfg.get("seed", 3409))
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if not names[split]:
        raise ModelError(f"the {split} split is empty", file=source.root, fix=f"add {split}.txt")
    if size_hw is None and cfg.get("size"):
        size_hw = tuple(cfg["size"])
    ds = source.dataset(names[split], size_hw=size_hw, ignore=not count_ignore)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    model.to(dev)
    cms = evaluate_model(model, loader, device=dev, n_heads=spec.heads, multiple=spec.input_multiple, heads=heads,
                         amp=amp)
    result = {
        "model": meta["model"], "model_kwargs": meta["model_kwargs"], "checkpoint": str(checkpoint),
        "epoch": meta.get("epoch"), "data": str(source.root), "data_format": source.kind, "split": split,
        "n_images": len(ds), "form": "deploy" if deploy else "train",
        "val_source": names["val_source"] if split == "val" else None,
        "prediction": "argmax(" + " + ".join(f"head{i + 1}" for i in range(spec.heads)) + ")",
        "ignore": "scored as background (count_ignore)" if count_ignore else "excluded",
        "scores": report(cms),
    }
    if out is not None:
        write_json(Path(out), result)
    return result


def resolve_device(device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise ``torch.device(device)`` (checked).

    A CUDA device always carries its index (``cuda`` → ``cuda:<current>``): ``torch.cuda.set_device``
    and the RNG state functions refuse one without.
    """
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but torch sees no GPU", field="device",
                         fix="use --device cpu, or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev
