"""Training and scoring gas-identification models on a release of :mod:`gasdb_tools.bench.gasid`.

The track of ``gasdb bench train/eval`` for the ``identification`` models (``gas-1dcnn``,
``gasnet``, ``gas-fusion``). The recipe is ours (the papers do not publish theirs): Adam (lr 1e-3,
weight decay 1e-4), cross-entropy, batch 64, 100 epochs, seeded shuffling, checkpoint chosen on
the validation split's macro F1, the test split scored **once** with that checkpoint.

Inputs: sensor readings standardised with the mean and standard deviation of the training split
(stored in the checkpoint); thermal images read as gray, scaled to [0, 1] and resized to
``thermal_size`` (area interpolation). **Missing modality:** a release without thermal images
runs the fusion model's sensor-only variant (``modalities=("sensor",)``, logged as ``variant``);
a thermal-only model on such a release is an error. ``modalities`` in ``model_kwargs`` selects a
variant explicitly (``["thermal"]`` = thermal-only fusion head).

Scores (:func:`classification_scores`): accuracy, macro F1 (mean over the classes present in the
ground truth or the predictions, as scikit-learn's ``f1_score(average="macro")``), per-class
precision / recall / F1 / support, and the confusion matrix (rows ground truth, columns
prediction, class order of the release).

Run folder: ``config.json``, ``log.jsonl`` (``start``, ``epoch``, ``test``), ``last.pt``
(resumable), ``best.pt``, ``curves.png`` (drawn when the epochs are done: an epoch takes well under
a second, a plot about half of one), ``test_metrics.json``.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gasdb_tools.bench.train import append_log, plot_history
from gasdb_tools.errors import ModelError
from gasdb_tools.fsutil import atomic_write_bytes, read_json, write_json

__all__ = ["IdentifyConfig", "classification_scores", "IdentificationDataset", "train_identification",
           "load_id_checkpoint", "evaluate_identification", "resolve_modalities", "is_id_checkpoint"]

_SELECT = ("macro_f1", "accuracy")


@dataclass
class IdentifyConfig:
    """Every setting of an identification run (saved as ``config.json``; shipped recipes in ``gasdb_tools/bench/configs``)."""

    model: str = "gas-1dcnn"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    num_workers: int = 0
    thermal_size: list = field(default_factory=lambda: [224, 224])
    select_metric: str = "macro_f1"
    eval_batch_size: int = 256
    task: str = "identification"
    recipe: str = ("ours: Adam (lr 1e-3, weight decay 1e-4), cross-entropy, batch 64, 100 epochs, seeded; "
                   "checkpoint chosen on validation macro F1, test scored once")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.select_metric not in _SELECT:
            raise ValueError(f"select_metric must be one of {_SELECT}, got {self.select_metric!r}")
        if self.task != "identification":
            raise ValueError(f"task must be 'identification', got {self.task!r}")
        if len(self.thermal_size) != 2 or not all(isinstance(v, int) and v >= 8 for v in self.thermal_size):
            raise ValueError(f"thermal_size must be [height, width] >= 8, got {self.thermal_size!r}")
        self.thermal_size = [int(v) for v in self.thermal_size]


def classification_scores(y_true, y_pred, classes) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : (N,) int arrays
        Class indices into ``classes``.
    classes : sequence of str

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``macro_f1``, ``per_class`` ({class: {precision, recall, f1,
        support}}; ``None`` where a denominator is 0), ``confusion_matrix`` (rows ground truth),
        ``classes``.
    """
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    k = len(classes)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= k):
        raise ValueError(f"class indices must be in [0, {k})")
    cm = np.bincount(k * y_true + y_pred, minlength=k * k).reshape(k, k)
    per, f1s = {}, []
    for i, name in enumerate(classes):
        tp, fp, fn = int(cm[i, i]), int(cm[:, i].sum() - cm[i, i]), int(cm[i].sum() - cm[i, i])
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
        per[name] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        if tp + fp + fn:
            f1s.append(f1)
    n = int(y_true.size)
    return {"n": n, "accuracy": float(np.trace(cm)) / n if n else None,
            "macro_f1": float(np.mean(f1s)) if f1s else None, "per_class": per,
            "confusion_matrix": cm.tolist(), "classes": list(classes)}


class IdentificationDataset(torch.utils.data.Dataset):
    """Rows of a release as batches: ``ds[list_of_rows]`` → ``{"sensor", "thermal", "label", "row"}``.

    Indexed with a list of row numbers (used with a ``BatchSampler`` and ``batch_size=None``), so
    sensor batches are one slice; thermal images are read per row.

    Parameters
    ----------
    release : IdRelease
    rows : array of int
        The split's row indices.
    modalities : tuple of str
        What to load.
    sensor_mean, sensor_std : (n_sensors,) arrays
        Standardisation (from the training split).
    thermal_size : (int, int)
        (height, width) of the thermal tensors.
    """

    def __init__(self, release, rows, *, modalities, sensor_mean, sensor_std, thermal_size=(224, 224)):
        self.release = release
        self.rows = np.asarray(rows, np.int64)
        self.modalities = tuple(modalities)
        self.sensor = torch.from_numpy(((release.values - np.asarray(sensor_mean, np.float32))
                                        / np.asarray(sensor_std, np.float32)).astype(np.float32))
        self.labels = torch.from_numpy(release.labels)
        self.thermal_size = tuple(int(v) for v in thermal_size)
        if "thermal" in self.modalities and not release.has_thermal:
            raise ModelError("the release has no thermal images", file=release.root,
                             fix="use a sensor model (gas-1dcnn) or rebuild the release with the thermal images")

    def __len__(self) -> int:
        return len(self.rows)

    def thermal_image(self, row: int) -> np.ndarray:
        """The thermal image of a release row as (H, W) float32 in [0, 1] at ``thermal_size``."""
        import cv2

        from gasdb_tools.imaging import read_image, to_float01

        img = to_float01(read_image(self.release.thermal[row], mode="gray"))
        h, w = self.thermal_size
        if img.shape != (h, w):
            shrink = img.shape[0] > h or img.shape[1] > w
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return img

    def __getitem__(self, positions):
        if isinstance(positions, (int, np.integer)):
            positions = [int(positions)]
        rows = self.rows[np.asarray(positions, np.int64)]
        idx = torch.from_numpy(rows)
        batch = {"label": self.labels[idx], "row": idx}
        if "sensor" in self.modalities:
            batch["sensor"] = self.sensor[idx]
        if "thermal" in self.modalities:
            batch["thermal"] = torch.from_numpy(np.stack([self.thermal_image(int(r)) for r in rows])[:, None])
        return batch


class _SeededOrder(torch.utils.data.Sampler):
    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _loader(ds, batch_size: int, *, seed: int = 0, shuffle: bool = False, num_workers: int = 0):
    from torch.utils.data import BatchSampler, DataLoader

    order = _SeededOrder(len(ds), seed, shuffle)
    loader = DataLoader(ds, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None,
                        num_workers=num_workers, persistent_workers=False)
    return loader, order


def resolve_modalities(model_name: str, model_kwargs: dict, release) -> tuple[dict, str | None]:
    """Model arguments fitted to the modalities a release has, and the variant note (or None).

    A fusion model on a release without thermal images becomes its sensor-only variant; a model
    that needs the thermal image there is refused.
    """
    from gasdb_tools.bench.registry import get_spec

    spec = get_spec(model_name)
    if spec.task != "identification":
        raise ModelError(f"{model_name!r} is a {spec.task} model, not an identification model", field="model",
                         fix="choose gas-1dcnn, gasnet or gas-fusion (`gasdb bench models`)")
    kwargs = dict(model_kwargs)
    wanted = tuple(kwargs.get("modalities", spec.modalities))
    if "thermal" in wanted and not release.has_thermal:
        rest = tuple(m for m in wanted if m != "thermal")
        if rest and (spec.fusion == "early" or "modalities" in kwargs):
            kwargs["modalities"] = list(rest)
            return kwargs, f"{'-'.join(rest)}-only (the release has no thermal images)"
        raise ModelError(f"{model_name!r} needs thermal images and the release has none", file=release.root,
                         fix="use gas-1dcnn (sensors), or rebuild the release from a copy with "
                             "'Thermal Camera Images/'")
    if "modalities" in kwargs:
        kwargs["modalities"] = list(wanted)
        if tuple(wanted) != tuple(spec.modalities):
            return kwargs, f"{'-'.join(wanted)}-only (chosen)"
    return kwargs, None


def _modalities_of(model) -> tuple:
    return tuple(getattr(model, "modalities", ("sensor",)))


def _forward(model, batch: dict, dev) -> torch.Tensor:
    inputs = {m: batch[m].to(dev, non_blocking=True) for m in _modalities_of(model)}
    return model(**inputs)


@torch.no_grad()
def _predict(model, loader, dev) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    was = model.training
    model.eval()
    ys, ps, rows = [], [], []
    try:
        for batch in loader:
            ps.append(_forward(model, batch, dev).argmax(1).cpu().numpy())
            ys.append(batch["label"].numpy())
            rows.append(batch["row"].numpy())
    finally:
        model.train(was)
    cat = (lambda a: np.concatenate(a) if a else np.zeros(0, np.int64))  # noqa: E731
    return cat(ys), cat(ps), cat(rows)


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def is_id_checkpoint(path) -> bool:
    """Whether ``path`` is a harness checkpoint of an identification model."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(ckpt, dict) and ckpt.get("task") == "identification"


def train_identification(config: IdentifyConfig, data, out_dir, *, device="auto", resume: bool = True,
                         force: bool = False, log_fn=None) -> dict:
    """Train an identification model on a release; resumable; returns a summary dict.

    Parameters
    ----------
    config : IdentifyConfig
    data : path
        An identification release (:func:`gasdb_tools.bench.gasid.read_id_release`).
    out_dir : path
        Run folder (rerun = resume; ``force`` starts over).

    Returns
    -------
    dict
        ``out_dir``, ``model``, ``modalities``, ``variant``, ``epochs_run``, ``best``, ``test``
        (the test scores or None), ``history``.
    """
    from gasdb_tools.bench.evaluate import resolve_device
    from gasdb_tools.bench.gasid import read_id_release
    from gasdb_tools.bench.registry import create_model

    dev = resolve_device(device)
    out_dir = Path(out_dir)
    release = read_id_release(data)
    kwargs, variant = resolve_modalities(config.model, config.model_kwargs, release)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    model = create_model(config.model, n_class=len(release.classes), **kwargs).to(dev)
    modalities = _modalities_of(model)
    train_rows = release.splits["train"]
    if len(train_rows) == 0:
        raise ModelError("the train split is empty", file=release.root / "train.txt")
    mean = release.values[train_rows].mean(0)
    std = release.values[train_rows].std(0)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    common_ds = dict(modalities=modalities, sensor_mean=mean, sensor_std=std, thermal_size=config.thermal_size)
    train_ds = IdentificationDataset(release, train_rows, **common_ds)
    val_ds = IdentificationDataset(release, release.splits["val"], **common_ds)
    train_loader, order = _loader(train_ds, config.batch_size, seed=config.seed, shuffle=True,
                                  num_workers=config.num_workers)
    val_loader, _ = _loader(val_ds, config.eval_batch_size, num_workers=config.num_workers)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()

    last_path, best_path, log_path = out_dir / "last.pt", out_dir / "best.pt", out_dir / "log.jsonl"
    test_path = out_dir / "test_metrics.json"
    start_epoch, best, history = 0, {"epoch": None, "metric": config.select_metric, "value": None}, []
    if last_path.exists() and not force:
        if not resume:
            raise ModelError("the run folder already holds a checkpoint", file=last_path,
                             fix="resume it (--resume), start over (--force) or choose another --out")
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        if ckpt.get("model") != config.model or ckpt.get("model_kwargs") != kwargs:
            raise ModelError(f"the run folder holds a {ckpt.get('model')!r} run {ckpt.get('model_kwargs')}, not "
                             f"{config.model!r} {kwargs}", file=last_path, fix="use another --out, or --force")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best"], list(ckpt["history"])
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (last_path, best_path, log_path, test_path, out_dir / "curves.png"):
            if stale.exists():
                stale.unlink()
    write_json(out_dir / "config.json", asdict(config))

    def emit(record):
        append_log(log_path, record)
        if log_fn is not None:
            log_fn(record)

    meta = {"format": "gasdb-bench-checkpoint", "version": 1, "task": "identification", "model": config.model,
            "model_kwargs": kwargs, "n_class": len(release.classes), "classes": list(release.classes),
            "sensors": list(release.sensors), "sensor_mean": mean.tolist(), "sensor_std": std.tolist(),
            "thermal_size": list(config.thermal_size), "modalities": list(modalities), "variant": variant,
            "config": asdict(config)}
    if start_epoch == 0:
        emit({"event": "start", "model": config.model, "params": sum(p.numel() for p in model.parameters()),
              "data": str(release.root), "modalities": list(modalities), "variant": variant,
              "n_train": len(train_ds), "n_val": len(val_ds), "n_test": int(len(release.splits["test"])),
              "classes": list(release.classes), "device": str(dev), "torch": torch.__version__,
              "config": asdict(config)})
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        order.epoch = epoch
        model.train()
        total, count, correct = 0.0, 0, 0
        for batch in train_loader:
            labels = batch["label"].to(dev)
            optimizer.zero_grad(set_to_none=True)
            logits = _forward(model, batch, dev)
            loss = criterion(logits, labels)
            if not torch.isfinite(loss):
                raise ModelError(f"the loss became {loss.item()} at epoch {epoch}", field="lr",
                                 fix="lower the learning rate")
            loss.backward()
            optimizer.step()
            n = labels.shape[0]
            total += loss.item() * n
            count += n
            correct += int((logits.argmax(1) == labels).sum())
        val = None
        if len(val_ds):
            y, p, _ = _predict(model, val_loader, dev)
            val = classification_scores(y, p, release.classes)
        value = val[config.select_metric] if val else None
        if (val is None or best["epoch"] is None
                or (value is not None and (best["value"] is None or value > best["value"]))):
            best = {"epoch": epoch, "metric": config.select_metric, "value": value}
        record = {"event": "epoch", "epoch": epoch, "train_loss": total / max(count, 1),
                  "train_accuracy": correct / max(count, 1),
                  "val": {"accuracy": val["accuracy"], "macro_f1": val["macro_f1"]} if val else {},
                  "best": best["epoch"] == epoch, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(record)
        state = model.state_dict()
        common = {**meta, "epoch": epoch, "best": best}
        if best["epoch"] == epoch:
            _save({**common, "state_dict": state, "val_scores": val}, best_path)
        _save({**common, "state_dict": state, "optimizer": optimizer.state_dict(), "history": history,
               "rng": torch.get_rng_state()}, last_path)
        emit(record)
    if history and (start_epoch < config.epochs or not (out_dir / "curves.png").exists()):
        plot_history(history, out_dir / "curves.png", f"{config.model} on {release.root.name}: best epoch {best['epoch']}",
                     loss_label="train loss", metrics=(("accuracy", "val accuracy"), ("macro_f1", "val macro_f1")))

    test = None
    if len(release.splits["test"]):
        if test_path.exists() and start_epoch >= config.epochs:
            test = read_json(test_path, error=ModelError)
        else:
            test = evaluate_identification(best_path, release.root, split="test", device=dev,
                                           batch_size=config.eval_batch_size, num_workers=config.num_workers)
            test["selected_by"] = f"val {config.select_metric}"
            write_json(test_path, test)
            emit({"event": "test", "epoch": test["epoch"], "accuracy": test["scores"]["accuracy"],
                  "macro_f1": test["scores"]["macro_f1"]})
    return {"out_dir": str(out_dir), "model": config.model, "task": "identification", "modalities": list(modalities),
            "variant": variant, "epochs_run": len(history), "best": best, "test": test, "history": history}


def load_id_checkpoint(path, *, map_location="cpu"):
    """The model of an identification checkpoint (eval mode) and its metadata (classes, standardisation, ...)."""
    from gasdb_tools.bench.registry import create_model

    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ModelError("checkpoint not found", file=path, fix="pass best.pt or last.pt of a run") from None
    except Exception as exc:
        raise ModelError(f"cannot read the checkpoint ({type(exc).__name__}: {exc})", file=path) from exc
    if not isinstance(ckpt, dict) or ckpt.get("task") != "identification":
        raise ModelError("not an identification checkpoint", file=path,
                         fix="pass best.pt of a `gasdb bench train` run of gas-1dcnn, gasnet or gas-fusion")
    model = create_model(ckpt["model"], n_class=int(ckpt["n_class"]), **ckpt["model_kwargs"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(f"the weights do not fit {ckpt['model']!r}: {str(exc).splitlines()[0]}", file=path) from None
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "rng", "history")}
    return model.eval(), meta


def evaluate_identification(checkpoint, data, *, split: str = "test", device="auto", batch_size: int = 256,
                            num_workers: int = 0, out=None) -> dict:
    """Score an identification checkpoint on one split of a release (accuracy, macro F1, confusion matrix).

    Returns
    -------
    dict
        ``model``, ``modalities``, ``variant``, ``checkpoint``, ``epoch``, ``data``, ``split``,
        ``n_samples``, ``scores`` (:func:`classification_scores`).
    """
    from gasdb_tools.bench.evaluate import resolve_device
    from gasdb_tools.bench.gasid import SPLITS, read_id_release

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    dev = resolve_device(device)
    model, meta = load_id_checkpoint(checkpoint)
    release = read_id_release(data)
    if list(release.classes) != list(meta["classes"]) or list(release.sensors) != list(meta["sensors"]):
        raise ModelError(f"the release's classes/sensors {list(release.classes)}/{list(release.sensors)} differ from "
                         f"the checkpoint's {meta['classes']}/{meta['sensors']}", file=release.root)
    rows = release.splits[split]
    if len(rows) == 0:
        raise ModelError(f"the {split} split is empty", file=release.root / f"{split}.txt")
    ds = IdentificationDataset(release, rows, modalities=_modalities_of(model), sensor_mean=meta["sensor_mean"],
                               sensor_std=meta["sensor_std"], thermal_size=meta["thermal_size"])
    loader, _ = _loader(ds, batch_size, num_workers=num_workers)
    y, p, _ = _predict(model.to(dev), loader, dev)
    result = {"model": meta["model"], "model_kwargs": meta["model_kwargs"], "modalities": list(_modalities_of(model)),
              "variant": meta.get("variant"), "checkpoint": str(checkpoint), "epoch": meta.get("epoch"),
              "data": str(release.root), "split": split, "n_samples": int(len(rows)),
              "scores": classification_scores(y, p, release.classes)}
    if out is not None:
        write_json(Path(out), result)
    return result


