"""Model-assisted drafts: a small segmentation network trained on the pairs people corrected.

The analogue of HeatNet's teacher (Vertens et al., "HeatNet: Bridging the Day-Night Domain Gap in
Semantic Segmentation with Thermal Images", IROS 2020 [1]_): instead of labelling a new modality by
hand, a model trained on what is already labelled drafts the rest. ``gasdb preannotate WS
--model`` collects the workspace's corrected pairs (edited or approved), trains :class:`TinyUNet`
on them and drafts the pending pairs with it.

**Inputs** (:func:`model_inputs`): two channels at the thermal camera's native size, the thermal
frame stretched with the recording's contrast stretch (0-1), and the background model's signed
evidence in noise sigmas divided by 8 (:meth:`gasdb_tools.background.GasSubtractor.evidence`), so
the network sees both what the plume looks like and how it moves against the background.

**Network and training** (:class:`TrainConfig`): a U-Net (Ronneberger et al. [2]_) three levels
deep, ``width`` channels at full size (12: 118,898 parameters), trained from scratch on random
``crop`` x ``crop`` crops (half of them centred on a gas pixel when the pair has one, random
flips) with the benchmark harness's loss (0.5 Dice + 0.5 label-smoothed cross-entropy,
:func:`gasdb_tools.bench.losses.joint_loss`; ``__ignore__`` pixels left out), Adam, a fixed number
of iterations and a fixed seed. Every ``val_every``-th corrected pair (in time order) is held out
and scored (IoU, whole frames) before the model is used; it runs on a GPU when one is present.
The checkpoint's sha256 goes into every draft it made.

Needs torch (the ``bench`` extra); it is imported only when this module's functions run.

References
----------
.. [1] J. Vertens, J. Zürn, W. Burgard, "HeatNet: Bridging the Day-Night Domain Gap in Semantic
   Segmentation with Thermal Images", IROS 2020, doi:10.1109/IROS45743.2020.9341192.
.. [2] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
   Segmentation", MICCAI 2015, doi:10.1007/978-3-319-24574-4_28.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gasdb_tools.errors import ModelError

__all__ = ["CHANNELS", "TrainConfig", "model_inputs", "build", "train", "predict", "save", "load", "require_torch"]

#: Input channels of the draft model.
CHANNELS = ("thermal", "evidence")
_EVIDENCE_SCALE = 8.0


@dataclass(frozen=True)
class TrainConfig:
    """How the draft model is trained (recorded in its checkpoint and in every draft's provenance)."""

    width: int = 12
    iterations: int = 400
    batch: int = 8
    crop: int = 96
    lr: float = 2e-3
    seed: int = 3409
    val_every: int = 5
    threshold: float = 0.5

    def __post_init__(self):
        for name in ("width", "iterations", "batch", "crop", "val_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.crop % 8:
            raise ValueError(f"crop must be a multiple of 8 (three poolings), got {self.crop}")
        if not 0 < self.lr < 1 or not 0 < self.threshold < 1:
            raise ValueError("lr and threshold must be in (0, 1)")


def require_torch():
    """Import torch, or raise :class:`~gasdb_tools.errors.ModelError` saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ModelError("model-assisted drafts need torch", field="--model",
                         fix="pip install 'gasdb-tools[bench]'") from None
    return torch


def model_inputs(blurred: np.ndarray, evidence: np.ndarray, levels) -> np.ndarray:
    """The (2, H, W) float32 input of one frame: stretched thermal (0-1) and evidence / 8.

    >>> x = model_inputs(np.full((2, 3), 150.0), np.full((2, 3), 4.0), (100.0, 200.0))
    >>> x.shape, float(x[0, 0, 0]), float(x[1, 0, 0])
    ((2, 2, 3), 0.5, 0.5)
    """
    lo, hi = float(levels[0]), float(levels[1])
    thermal = (np.asarray(blurred, np.float32) - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))
    return np.stack([np.clip(thermal, -0.5, 1.5), np.asarray(evidence, np.float32) / np.float32(_EVIDENCE_SCALE)])


def build(width: int = 12):
    """A :class:`TinyUNet` with ``width`` channels at full size (needs torch)."""
    torch = require_torch()
    nn = torch.nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class TinyUNet(nn.Module):
        """U-Net, 3 poolings, widths w, 2w, 4w, 4w; 2 classes. Input height/width: any (padded to 8)."""

        def __init__(self, cin: int = len(CHANNELS), w: int = width):
            super().__init__()
            self.enc = nn.ModuleList([block(cin, w), block(w, 2 * w), block(2 * w, 4 * w)])
            self.mid = block(4 * w, 4 * w)
            self.up = nn.ModuleList([block(8 * w, 2 * w), block(4 * w, w), block(2 * w, w)])
            self.head = nn.Conv2d(w, 2, 1)

        def forward(self, x):
            h, w_ = x.shape[-2:]
            ph, pw = (-h) % 8, (-w_) % 8
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
            skips = []
            for enc in self.enc:
                x = enc(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.mid(x)
            for up, skip in zip(self.up, reversed(skips)):
                x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = up(torch.cat([x, skip], dim=1))
            return self.head(x)[..., :h, :w_]

    return TinyUNet()


def _device(device):
    from gasdb_tools.bench.evaluate import resolve_device

    return resolve_device(device)


def _crops(rng, inputs, labels, config: TrainConfig):
    """One batch of crops (inputs (B, C, s, s), labels (B, s, s) with 255 = ignore)."""
    s = config.crop
    xs, ys = [], []
    for _ in range(config.batch):
        k = int(rng.integers(len(inputs)))
        x, y = inputs[k], labels[k]
        h, w = y.shape
        if h < s or w < s:  # small frames: pad with ignore
            ph, pw = max(0, s - h), max(0, s - w)
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
            y = np.pad(y, ((0, ph), (0, pw)), constant_values=255)
            h, w = y.shape
        gas = np.argwhere(y == 1)
        if len(gas) and rng.random() < 0.5:
            cy, cx = gas[int(rng.integers(len(gas)))]
            top = int(np.clip(cy - s // 2 + rng.integers(-s // 4, s // 4 + 1), 0, h - s))
            left = int(np.clip(cx - s // 2 + rng.integers(-s // 4, s // 4 + 1), 0, w - s))
        else:
            top, left = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        cx_, cy_ = x[:, top:top + s, left:left + s], y[top:top + s, left:left + s]
        if rng.random() < 0.5:
            cx_, cy_ = cx_[:, :, ::-1], cy_[:, ::-1]
        if rng.random() < 0.5:
            cx_, cy_ = cx_[:, ::-1, :], cy_[::-1, :]
        xs.append(np.ascontiguousarray(cx_))
        ys.append(np.ascontiguousarray(cy_))
    return np.stack(xs), np.stack(ys)


def _labels(truth: np.ndarray, counted: np.ndarray) -> np.ndarray:
    y = np.asarray(truth, bool).astype(np.uint8)
    y[~np.asarray(counted, bool)] = 255
    return y


def train(inputs, truths, counted, *, config: TrainConfig = TrainConfig(), device="auto") -> tuple:
    """Train a draft model; returns ``(model, info)``.

    Parameters
    ----------
    inputs : list of (2, H, W) float32
        :func:`model_inputs` of the corrected pairs, in time order.
    truths, counted : list of (H, W) bool
        Their gas masks and the pixels that count.
    config : TrainConfig
    device : str
        ``auto`` (a GPU when present), ``cpu`` or ``cuda``.

    Returns
    -------
    model : torch.nn.Module
        In eval mode.
    info : dict
        ``train_pairs, val_pairs, val_iou`` (None without held-out pairs), ``device``, ``seconds``,
        ``parameters``, ``config``.
    """
    torch = require_torch()
    from gasdb_tools.bench.losses import joint_loss

    if not inputs or len(inputs) != len(truths) or len(truths) != len(counted):
        raise ValueError("need as many inputs as truths and counted masks, at least one")
    n = len(inputs)
    val = [i for i in range(n) if n >= config.val_every and i % config.val_every == config.val_every - 1]
    fit = [i for i in range(n) if i not in val]
    labels = [_labels(truths[i], counted[i]) for i in range(n)]
    dev = _device(device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build(config.width).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.iterations)
    t0 = time.perf_counter()
    model.train()
    train_x = [np.asarray(inputs[i], np.float32) for i in fit]
    train_y = [labels[i] for i in fit]
    for _ in range(config.iterations):
        xb, yb = _crops(rng, train_x, train_y, config)
        logits = model(torch.from_numpy(xb).to(dev))
        loss = joint_loss(logits, torch.from_numpy(yb.astype(np.int64)).to(dev), ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    seconds = time.perf_counter() - t0
    val_iou = None
    if val:
        tp = fp = fn = 0
        for i in val:
            pred = predict(model, inputs[i], device=dev) > config.threshold
            c = np.asarray(counted[i], bool)
            t = np.asarray(truths[i], bool) & c
            p = pred & c
            tp += int(np.count_nonzero(p & t))
            fp += int(np.count_nonzero(p & ~t))
            fn += int(np.count_nonzero(t & ~p))
        val_iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    info = {"train_pairs": len(fit), "val_pairs": len(val), "val_iou": None if val_iou is None else round(val_iou, 4),
            "device": str(dev), "seconds": round(seconds, 2),
            "parameters": int(sum(p.numel() for p in model.parameters())), "config": asdict(config)}
    return model, info


def predict(model, inputs: np.ndarray, *, device=None) -> np.ndarray:
    """Probability of gas (H, W) for one frame's :func:`model_inputs`."""
    torch = require_torch()
    dev = next(model.parameters()).device if device is None else _device(device)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32))[None].to(dev)
        return torch.softmax(model(x), dim=1)[0, 1].float().cpu().numpy()


def save(model, path, info: dict) -> str:
    """Write the checkpoint (weights + info without the timing) atomically; returns its sha256.

    The same corrections and settings give the same bytes (on one device), so the drafts' recipe
    holds across retraining.
    """
    torch = require_torch()
    from gasdb_tools.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    info = {k: v for k, v in info.items() if k != "seconds"}
    torch.save({"state_dict": state, "info": info, "channels": list(CHANNELS)}, buf)
    data = buf.getvalue()
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load(path, *, device="auto"):
    """``(model, info)`` from a checkpoint written by :func:`save`."""
    torch = require_torch()
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        info = blob["info"]
        model = build(int(info["config"]["width"]))
        model.load_state_dict(blob["state_dict"])
    except (OSError, KeyError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelError(f"cannot load the draft model ({exc})", file=path,
                         fix="run `gasdb preannotate --model` again to retrain it") from None
    return model.to(_device(device)).eval(), info
