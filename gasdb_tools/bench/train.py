"""Training with the RT-CAN recipe, a real validation split, checkpoints, logs, a plot, resume, DDP.

The recipe of the official ``train.py`` (``reference-models.md`` §3.5): SGD (lr 0.02, momentum
0.9, weight decay 5e-4 on all parameters), ExponentialLR γ = 0.97 stepped once per epoch, batch 4,
shuffle, ``drop_last=False``, 50 epochs, loss ``Σ_heads 0.5·Dice + 0.5·SoftCE(0.1)``, flip + crop,
CUDA AMP (fp16 autocast + GradScaler), seed 3409. Differences, on purpose:

* **Checkpoint selection on a validation split** (``val.txt`` or a carve-out of train, see
  :func:`gasdb_tools.bench.data.split_names`), by gas IoU (``select_metric``); the test split is
  scored **once**, with the selected checkpoint, at the end. The official code scores test every
  epoch and keeps every epoch's weights (test-set selection).
* Seeded end to end: the shuffle order comes from ``seed + epoch``, each sample's augmentation from
  ``(seed, epoch, index)``, so a resumed run continues exactly like an uninterrupted one (bitwise
  on CPU; cuDNN may differ on GPU unless deterministic algorithms are forced).
* ``min_train_batch``: models whose BN sees 1×1 maps (PSPNet) drop a trailing batch of one.
* Models with ``needs_confidence_targets`` (RSFNet) return ``(logits, confidence)`` in training
  mode; the data pipeline adds the saliency pseudo-labels and the loss gains
  ``confidence_weight · smoothL1(confidence, pseudo-labels)`` (λ = 0.3).

**Initialising from a checkpoint** (``init_from``): any registered model's checkpoint (harness
``best.pt``/``last.pt``, or a plain state dict) fills the parameters whose name and shape match;
the rest keep their initialisation. What was loaded, missing, unexpected or of another shape is
written to ``init_report.json`` and the ``start`` log record; ``init_strict`` refuses anything but
an exact match. :func:`transfer` chains two runs: pretraining on visible smoke
(:mod:`gasdb_tools.bench.smoke`), then fine-tuning on gas initialised from the smoke run's
``best.pt``.

Outputs in the run folder: ``config.json``, ``log.jsonl`` (one JSON object per event: ``start``,
``epoch``, ``test``), ``last.pt`` (everything needed to resume), ``best.pt`` (weights of the selected
epoch), ``curves.png`` (loss and validation metrics per epoch), ``test_metrics.json``.

**Multi-GPU:** launched by ``torchrun --nproc_per_node N -m gasdb_tools bench train ...`` the run
uses ``torch.distributed`` (NCCL on GPUs, Gloo on CPU), ``DistributedDataParallel`` and a
``DistributedSampler``; ``batch_size`` is per process; rank 0 writes all files; validation and
test counts are summed over ranks (each scores its own shard, no padding duplicates).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gasdb_tools.errors import ModelError
from gasdb_tools.fsutil import atomic_write_bytes, read_json, write_json

__all__ = ["TrainConfig", "train", "load_config", "demo_run", "init_from_checkpoint", "transfer", "plot_history", "append_log",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "gasdb-bench-checkpoint"
_SELECT = ("gas.iou", "gas.f2", "gas.acc", "gas.f1", "mean.iou")


@dataclass
class TrainConfig:
    """Every setting of a training run (saved as ``config.json``).

    The shipped recipes are listed by :func:`gasdb_tools.resources.bench_configs`.

    Defaults are the RT-CAN recipe with ResNet-50.
    """

    model: str = "rtcan-r50"
    model_kwargs: dict = field(default_factory=dict)
    n_class: int = 2
    epochs: int = 50
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_gamma: float = 0.97
    seed: int = 3409
    amp: bool = True
    num_workers: int = 4
    dice_weight: float = 0.5
    ce_weight: float = 0.5
    label_smoothing: float = 0.1
    flip_p: float = 0.5
    crop_rate: float = 0.1
    crop_p: float = 1.0
    resize: str = "per-channel"
    size: list | None = None
    val_fraction: float = 0.1
    val_block: int = 16
    select_metric: str = "gas.iou"
    imagenet_weights: str | None = None
    eval_batch_size: int = 4
    confidence_weight: float = 0.3
    data_format: str = "auto"
    smoke_thermal: str = "gray"
    init_from: str | None = None
    init_strict: bool = False
    recipe: str = "RT-CAN official recipe, validation split for checkpoint selection"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.lr <= 0 or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"need lr > 0 and 0 < lr_gamma <= 1, got lr={self.lr}, lr_gamma={self.lr_gamma}")
        if self.confidence_weight < 0:
            raise ValueError(f"confidence_weight must be >= 0, got {self.confidence_weight}")
        from gasdb_tools.bench.data import DATA_FORMATS
        from gasdb_tools.bench.smoke import SMOKE_THERMAL

        if self.data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {self.data_format!r}")
        if self.smoke_thermal not in SMOKE_THERMAL:
            raise ValueError(f"smoke_thermal must be one of {SMOKE_THERMAL}, got {self.smoke_thermal!r}")
        if self.select_metric not in _SELECT:
            raise ValueError(f"select_metric must be one of {_SELECT}, got {self.select_metric!r}")
        if self.size is not None:
            if len(self.size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.size):
                raise ValueError(f"size must be [height, width], got {self.size!r}")
            self.size = [int(v) for v in self.size]


def load_config(path, **overrides):
    """Read a JSON config (unknown keys are an error) and apply non-None ``overrides``.

    Returns a :class:`TrainConfig`, or an :class:`~gasdb_tools.bench.identify.IdentifyConfig`
    when the file says ``"task": "identification"``.
    """
    data = read_json(path, error=ModelError)
    if not isinstance(data, dict):
        raise ModelError("a config must be a JSON object", file=path)
    task = data.pop("task", "segmentation")
    if task == "identification":
        from gasdb_tools.bench.identify import IdentifyConfig as cls
    elif task == "segmentation":
        cls = TrainConfig
    else:
        raise ModelError(f"unknown task {task!r}", file=path, field="task",
                         fix="segmentation (default) or identification")
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys are notes
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelError(f"unknown config keys {unknown}", file=path, fix=f"use only {sorted(known)}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise ModelError(str(exc), file=path) from None


# ----------------------------------------------------------------------------------------------
class _EpochSampler(torch.utils.data.Sampler):
    """Shuffles with a generator seeded by ``seed + epoch`` (restart-proof)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class _Shard(torch.utils.data.Sampler):
    """Indices ``rank::world`` in order (evaluation shard, no padding duplicates)."""

    def __init__(self, n: int, rank: int, world: int):
        self.idx = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self) -> int:
        return len(self.idx)


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _metric(scores: dict, key: str):
    block, name = key.split(".")
    return scores[block][name]


def plot_history(history: list[dict], path: Path, title: str, *, loss_label: str = "train loss (sum of heads)",
                 metrics=(("iou", "val gas IoU"), ("acc", "val gas Acc (recall)"), ("f2", "val gas F2"))) -> None:
    """Training curves of a run as a PNG: the train loss, and the validation ``metrics`` (key, label) per epoch."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label=loss_label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    for key, label in metrics:
        ys = [np.nan if h["val"].get(key) is None else h["val"][key] for h in history]
        ax2.plot(epochs, ys, marker="o", label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def append_log(path: Path, record: dict) -> None:
    """Append ``record`` to the JSON-lines log at ``path``."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")


def _summary_scores(s: dict) -> dict:
    return {"iou": s["gas"]["iou"], "acc": s["gas"]["acc"], "f2": s["gas"]["f2"], "precision": s["gas"]["precision"],
            "miou": s["mean"]["iou"]}


def train(config: TrainConfig, data, out_dir, *, device="auto", resume: bool = True, force: bool = False,
          log_fn=None) -> dict:
    """Train ``config.model`` on a Gas-DB folder; resumable; returns a summary dict.

    Parameters
    ----------
    config : TrainConfig
    data : path
        Gas-DB folder or release folder, or a smoke images + masks folder
        (``config.data_format``).
    out_dir : path
        Run folder (created). With ``resume`` and an existing ``last.pt`` the run continues from
        it (``config.epochs`` may be raised to train longer); ``force`` starts over.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun: the local rank's GPU).
    log_fn : callable, optional
        Called with each log record (the CLI prints progress with it).

    Returns
    -------
    dict
        ``out_dir``, ``epochs_run``, ``best`` (epoch, metric, value), ``val_source``, ``test``
        (scores or None), ``history`` (per-epoch records), ``init`` (the ``init_from`` report or
        None).

    Raises
    ------
    ModelError
        When ``out_dir`` holds a checkpoint of another model/config and neither ``resume`` nor
        ``force`` applies.
    """
    from torch.utils.data import DataLoader

    from gasdb_tools.bench.data import Augment, resolve_source
    from gasdb_tools.bench.evaluate import evaluate_model, forward_outputs, load_checkpoint, report, resolve_device
    from gasdb_tools.bench.losses import confidence_loss, joint_loss
    from gasdb_tools.bench.registry import create_model, get_spec

    world, rank, local_rank = _dist_env()
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        if device in (None, "auto"):
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        elif str(device) == "cuda":
            device = f"cuda:{local_rank}"
        if not dist.is_initialized():
            dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    is_main = rank == 0
    out_dir = Path(out_dir)
    spec = get_spec(config.model)
    if spec.task != "segmentation":
        raise ModelError(f"{config.model!r} is a {spec.task} model", field="model",
                         fix="train it with gasdb_tools.bench.identify.train (`gasdb bench train` picks it)")
    source = resolve_source(data, config.data_format, smoke_thermal=config.smoke_thermal)
    data_dir = source.root

    # -- seeds (the official seeds Python and torch; we also seed NumPy) --------------------------
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)

    names = source.splits(val_fraction=config.val_fraction, val_block=config.val_block, seed=config.seed)
    augment = Augment(flip_p=config.flip_p, crop_rate=config.crop_rate, crop_p=config.crop_p, resize=config.resize)
    size_hw = tuple(config.size) if config.size else None
    model = create_model(config.model, n_class=config.n_class, imagenet_weights=config.imagenet_weights,
                         **config.model_kwargs).to(dev)
    use_confidence = bool(getattr(model, "needs_confidence_targets", False)) and config.confidence_weight > 0
    train_ds = source.dataset(names["train"], augment=augment, size_hw=size_hw, seed=config.seed,
                              confidence_targets=use_confidence)
    val_ds = source.dataset(names["val"], size_hw=size_hw)
    min_batch = getattr(model, "min_train_batch", 1)
    drop_last = min_batch > 1 and (len(train_ds) // world) % config.batch_size == 1
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
    use_amp = config.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # -- resume ----------------------------------------------------------------------------------
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    log_path = out_dir / "log.jsonl"
    start_epoch, best, history = 0, {"epoch": None, "metric": config.select_metric, "value": None}, []
    init_report = None
    if last_path.exists() and not force:
        if not resume:
            raise ModelError("the run folder already holds a checkpoint", file=last_path,
                             fix="resume it (--resume), start over (--force) or choose another --out")
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        if ckpt.get("model") != config.model or ckpt.get("model_kwargs") != config.model_kwargs:
            raise ModelError(f"the run folder holds a {ckpt.get('model')!r} run {ckpt.get('model_kwargs')}, "
                             f"not {config.model!r} {config.model_kwargs}", file=last_path,
                             fix="use another --out, or --force to start over")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if dev.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], dev)
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best"], list(ckpt["history"])
        init_report = ckpt.get("init")
    else:
        if is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            for stale in (last_path, log_path, best_path, out_dir / "test_metrics.json", out_dir / "curves.png",
                          out_dir / "init_report.json"):
                if stale.exists():
                    stale.unlink()
        if config.init_from:
            init_report = init_from_checkpoint(model, config.init_from, strict=config.init_strict)
            if is_main:
                write_json(out_dir / "init_report.json", init_report)

    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        from torch.utils.data.distributed import DistributedSampler

        train_sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed,
                                           drop_last=False)
        val_sampler = _Shard(len(val_ds), rank, world)
    else:
        train_sampler = _EpochSampler(len(train_ds), config.seed)
        val_sampler = None
    pin = dev.type == "cuda"
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=train_sampler, drop_last=drop_last,
                              num_workers=config.num_workers, pin_memory=pin,
                              persistent_workers=config.num_workers > 0)
    val_loader = DataLoader(val_ds, batch_size=config.eval_batch_size, sampler=val_sampler, shuffle=False,
                            num_workers=config.num_workers, pin_memory=pin)

    def emit(record):
        if is_main:
            append_log(log_path, record)
        if log_fn is not None and is_main:
            log_fn(record)

    if is_main:
        write_json(out_dir / "config.json", asdict(config))
    if start_epoch == 0:
        emit({"event": "start", "model": config.model, "params": sum(p.numel() for p in model.parameters()),
              "data": str(data_dir), "data_format": source.kind, "n_train": len(train_ds), "n_val": len(val_ds),
              "n_test": len(names["test"]), "val_source": names["val_source"], "device": str(dev),
              "world_size": world, "amp": use_amp, "torch": torch.__version__, "config": asdict(config),
              "confidence_loss": use_confidence, "init": _init_summary(init_report)})

    loss_kwargs = dict(dice_weight=config.dice_weight, ce_weight=config.ce_weight,
                       smoothing=config.label_smoothing)
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        train_sampler.set_epoch(epoch)
        net.train()
        lr = optimizer.param_groups[0]["lr"]
        # [sum, head1, ..., confidence] · n
        total = torch.zeros(2 + spec.heads, dtype=torch.float64, device=dev)
        count = torch.zeros(1, dtype=torch.float64, device=dev)
        for batch in train_loader:
            images = batch[0].to(dev, non_blocking=True)
            labels = batch[1].to(dev, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                heads, raw = forward_outputs(net, images, n_heads=spec.heads, multiple=spec.input_multiple)
            per_head = [joint_loss(h, labels, **loss_kwargs) for h in heads]
            loss = sum(per_head)
            conf_term = torch.zeros((), device=dev)
            if use_confidence:
                conf_term = confidence_loss(raw[-1], batch[3].to(dev, non_blocking=True))
                loss = loss + config.confidence_weight * conf_term
            if not torch.isfinite(loss):
                raise ModelError(f"the loss became {loss.item()} at epoch {epoch}", field="lr",
                                 fix="lower the learning rate or check the input data")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = images.shape[0]
            total += torch.tensor([loss.item()] + [h.item() for h in per_head] + [conf_term.item()],
                                  dtype=torch.float64, device=dev) * n
            count += n
        if distributed:
            torch.distributed.all_reduce(total)
            torch.distributed.all_reduce(count)
        means = (total / count.clamp_min(1)).tolist()
        cms = evaluate_model(model, val_loader, device=dev, n_heads=spec.heads, multiple=spec.input_multiple,
                             heads="sum", amp=use_amp, distributed=distributed) if len(val_ds) else None
        val_scores = report(cms)["sum"] if cms is not None else None
        value = _metric(val_scores, config.select_metric) if val_scores else None
        # no validation data or an undefined metric so far: the latest epoch is the selection
        if (val_scores is None or best["epoch"] is None
                or (value is not None and (best["value"] is None or value > best["value"]))):
            best = {"epoch": epoch, "metric": config.select_metric, "value": value}
        scheduler.step()
        record = {"event": "epoch", "epoch": epoch, "lr": lr, "train_loss": means[0],
                  "train_loss_heads": means[1:1 + spec.heads],
                  "train_confidence_loss": means[-1] if use_confidence else None,
                  "val": _summary_scores(val_scores) if val_scores else {},
                  "val_confusion_matrix": val_scores["confusion_matrix"] if val_scores else None,
                  "best": best["epoch"] == epoch, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(record)
        if is_main:
            state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in model.state_dict().items()}
            common = {"format": CHECKPOINT_FORMAT, "version": 1, "model": config.model,
                      "model_kwargs": config.model_kwargs, "n_class": config.n_class, "config": asdict(config),
                      "epoch": epoch, "best": best, "val_source": names["val_source"], "init": init_report}
            if best["epoch"] == epoch:
                _save({**common, "state_dict": state, "val_scores": val_scores}, best_path)
            _save({**common, "state_dict": state, "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "history": history,
                   "rng": {"torch": torch.get_rng_state(),
                           "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}}, last_path)
            plot_history(history, out_dir / "curves.png", f"{config.model} on {data_dir.name}: best epoch {best['epoch']}")
        emit(record)

    # -- the test split, scored once with the selected checkpoint ------------------------------------
    test_result = None
    test_path = out_dir / "test_metrics.json"
    if names["test"]:
        if distributed:
            torch.distributed.barrier()
        if test_path.exists() and start_epoch >= config.epochs:
            test_result = read_json(test_path, error=ModelError)
        else:
            best_model, _meta = load_checkpoint(best_path, model_kwargs=None)
            best_model.to(dev)
            test_ds = source.dataset(names["test"], size_hw=size_hw, ignore=True)
            test_loader = DataLoader(test_ds, batch_size=config.eval_batch_size, shuffle=False,
                                     sampler=_Shard(len(test_ds), rank, world) if distributed else None,
                                     num_workers=config.num_workers)
            cms = evaluate_model(best_model, test_loader, device=dev, n_heads=spec.heads,
                                 multiple=spec.input_multiple, heads="all", amp=use_amp, distributed=distributed)
            test_result = {"model": config.model, "model_kwargs": config.model_kwargs, "checkpoint": str(best_path),
                           "epoch": best["epoch"], "selected_by": f"val {config.select_metric}",
                           "val_source": names["val_source"], "data": str(data_dir), "data_format": source.kind,
                           "split": "test",
                           "n_images": len(test_ds),
                           "prediction": "argmax(" + " + ".join(f"head{i + 1}" for i in range(spec.heads)) + ")",
                           "scores": report(cms)}
            if is_main:
                write_json(test_path, test_result)
            emit({"event": "test", "epoch": best["epoch"], **_summary_scores(test_result["scores"]["sum"])})
    if distributed:
        torch.distributed.barrier()
    return {"out_dir": str(out_dir), "model": config.model, "epochs_run": len(history), "best": best,
            "val_source": names["val_source"], "test": test_result, "history": history, "init": init_report}


def _init_summary(report: dict | None) -> dict | None:
    if report is None:
        return None
    out = {k: v for k, v in report.items() if not isinstance(v, list)}
    for key in ("missing", "unexpected", "shape_mismatch"):
        out[key] = len(report[key])
        out[f"{key}_examples"] = report[key][:5]
    return out


def init_from_checkpoint(model, source, *, strict: bool = False) -> dict:
    """Fill ``model``'s parameters and buffers from a checkpoint where name and shape match.

    Parameters
    ----------
    model : torch.nn.Module
    source : path
        A harness checkpoint (``best.pt``/``last.pt`` of any registered model) or a plain state
        dict file (wrappers ``state_dict``/``model`` and DDP ``module.`` prefixes are removed).
    strict : bool
        Refuse unless every key matches in name and shape both ways.

    Returns
    -------
    dict
        ``source``, ``source_model`` (the checkpoint's model name, or None), ``strict``,
        ``loaded`` (keys copied), ``loaded_params`` (elements of the parameters copied),
        ``total_params`` (the model's), ``missing`` (model keys the file lacks, kept as
        initialised), ``unexpected`` (file keys the model lacks, ignored), ``shape_mismatch``
        (``"key: file (..) vs model (..)"``, kept as initialised).

    Raises
    ------
    ModelError
        When the file cannot be read, nothing matches, or ``strict`` and anything differs.
    """
    from gasdb_tools.bench.models.resnet import read_state_dict

    path = os.fspath(source)
    source_model = None
    if os.path.isfile(path):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"cannot read the checkpoint ({type(exc).__name__}: {exc})", file=path,
                             fix="pass best.pt/last.pt of a run or a state dict") from exc
        if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
            source_model = raw.get("model")
            raw = raw["state_dict"]
        state = read_state_dict(raw)
    else:
        state = read_state_dict(path)  # raises "weight file not found"
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    shape_mismatch = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in own if k in state and k not in loaded]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if not loaded:
        raise ModelError("no weight of the checkpoint fits the model (no key matches in name and shape)", file=path,
                         fix="initialise from a checkpoint of the same architecture (e.g. a unet-r18 smoke run)")
    if strict and (missing or unexpected or shape_mismatch):
        raise ModelError(f"the checkpoint does not fit exactly: {len(missing)} missing (e.g. {missing[:2]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(shape_mismatch)} with "
                         f"another shape (e.g. {shape_mismatch[:1]})", file=path,
                         fix="drop --init-strict to load the matching part only")
    model.load_state_dict(loaded, strict=False)
    params = dict(model.named_parameters())
    return {"source": path, "source_model": source_model, "strict": strict, "loaded": len(loaded),
            "loaded_params": int(sum(v.numel() for k, v in loaded.items() if k in params)),
            "total_params": int(sum(p.numel() for p in params.values())), "missing": missing,
            "unexpected": unexpected, "shape_mismatch": shape_mismatch}


def transfer(pretrain: TrainConfig, finetune: TrainConfig, smoke_data, gas_data, out_dir, *, device="auto",
             force: bool = False, log_fn=None) -> dict:
    """Two-stage transfer: pretrain on visible smoke, then fine-tune on gas from the smoke run's ``best.pt``.

    Stage 1 trains ``pretrain`` on ``smoke_data`` (``data_format`` forced to ``smoke``) into
    ``out_dir/smoke``; stage 2 trains ``finetune`` on ``gas_data`` into ``out_dir/gas`` with
    ``init_from = out_dir/smoke/best.pt`` (partial loading unless ``finetune.init_strict``).
    Both stages resume like :func:`train`. Writes ``out_dir/transfer.json``.

    Returns
    -------
    dict
        ``smoke`` and ``gas`` (each :func:`train`'s summary without the history) and ``init``
        (what the gas model took from the smoke model).
    """
    out_dir = Path(out_dir)
    if pretrain.model != finetune.model:
        raise ModelError(f"pretraining {pretrain.model!r} and fine-tuning {finetune.model!r} differ", field="model",
                         fix="use the same model in both stages")
    pre = dataclasses.replace(pretrain, data_format="smoke")
    smoke = train(pre, smoke_data, out_dir / "smoke", device=device, force=force, log_fn=log_fn)
    fine = dataclasses.replace(finetune, init_from=str(out_dir / "smoke" / "best.pt"))
    if fine.data_format == "smoke":
        fine = dataclasses.replace(fine, data_format="auto")
    gas = train(fine, gas_data, out_dir / "gas", device=device, force=force, log_fn=log_fn)
    result = {"model": pretrain.model, "smoke": {k: v for k, v in smoke.items() if k != "history"},
              "gas": {k: v for k, v in gas.items() if k != "history"},
              "init": _init_summary(gas["init"])}
    write_json(out_dir / "transfer.json", result)
    return result


def demo_run(data, out_dir, *, model: str = "mfnet", epochs: int = 1, size=(128, 160), device: str = "cpu",
             num_workers: int = 0) -> dict:
    """A quick CPU run for ``gasdb demo``: train ``model`` briefly on a release, score test once.

    ``size`` downsizes the frames (640×512 → 160×128 by default) so one MFNet epoch takes
    seconds on a CPU; the numbers only show the harness works, they are not a benchmark result.

    Returns
    -------
    dict
        :func:`train`'s summary without the per-epoch history, plus ``params``.
    """
    from gasdb_tools.bench.registry import count_parameters

    config = TrainConfig(model=model, epochs=epochs, num_workers=num_workers, size=list(size) if size else None,
                         amp=False, recipe=f"demo: {epochs} epoch(s) at {size}, not a benchmark result")
    summary = train(config, data, out_dir, device=device)
    return {**{k: v for k, v in summary.items() if k != "history"}, "params": count_parameters(model)}
