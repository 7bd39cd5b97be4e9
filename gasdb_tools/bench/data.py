"""Gas-DB samples for training and evaluation: splits, a torch Dataset, the official augmentation.

The benchmark reads the Gas-DB / RT-CAN folder layout (``images/<name>.png`` RGBA with thermal in
channel 3, ``labels/<name>.png`` 0/1, ``train.txt``, ``test.txt``, optional ``val.txt``,
``blacklist.txt``) through :mod:`gasdb_tools.gasdb_layout`, the toolkit's one reader of that layout.
A release folder works too: its ``gasdb/`` subfolder holds the layout.

**Validation split.** The official code selects checkpoints on the test split. Here a real
validation split picks the checkpoint: ``val.txt`` when the folder has one, otherwise a
deterministic carve-out of ``train.txt`` (:func:`carve_validation`: contiguous blocks of
consecutive names, so near-duplicate neighbouring frames stay on one side). Test is scored once.

**Augmentation** (official ``util/augmentation.py``): horizontal flip with p = 0.5, then a random
crop taking an independent margin of up to 10 % off each side, then a resize back to the frame
size: bicubic for the image, nearest for the label. ``resize="per-channel"`` (default, the clean
recipe) resizes each channel on its own; ``resize="pil-rgba"`` reproduces the official PIL call on
the RGBA image, which premultiplies RGB by the alpha (= thermal) channel (``reference-models.md``
§3.5). Every sample's randomness comes from ``(seed, epoch, index)``, so results do not depend on
worker count or on resuming.

Inputs are RGB / 255 and thermal scaled to [0, 1] by its bit depth; no ImageNet normalisation
(as the official code).

**Confidence pseudo-labels** (RSFNet): with ``confidence_targets=True`` a sample also carries
``(iou_rgb, iou_thermal)`` (:func:`gasdb_tools.bench.saliency.confidence_targets`), computed from
the sample *after* augmentation, so the pseudo-label always describes the image the model sees.

**Other sources:** a folder of smoke images + masks (:mod:`gasdb_tools.bench.smoke`) trains the
same models; :func:`resolve_source` tells the layouts apart (``data_format`` ``auto``, ``gasdb``
or ``smoke``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gasdb_tools import gasdb_layout
from gasdb_tools.errors import FormatError
from gasdb_tools.imaging import to_float01

__all__ = ["Augment", "resolve_data_dir", "carve_validation", "split_names", "augment_sample", "GasDBFolder",
           "RESIZE_MODES", "DATA_FORMATS", "Source", "resolve_source", "SegmentationFolder"]

RESIZE_MODES = ("per-channel", "pil-rgba")
#: Layouts a segmentation run can read (``auto`` tells them apart).
DATA_FORMATS = ("auto", "gasdb", "smoke")


@dataclass(frozen=True)
class Augment:
    """Training augmentation settings (official: flip 0.5, crop rate 0.1 with p = 1)."""

    flip_p: float = 0.5
    crop_rate: float = 0.1
    crop_p: float = 1.0
    resize: str = "per-channel"

    def __post_init__(self):
        if not 0.0 <= self.flip_p <= 1.0 or not 0.0 <= self.crop_p <= 1.0:
            raise ValueError(f"flip_p and crop_p must be probabilities, got {self.flip_p}, {self.crop_p}")
        if not 0.0 <= self.crop_rate < 0.5:
            raise ValueError(f"crop_rate must be in [0, 0.5), got {self.crop_rate}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")


def resolve_data_dir(path) -> Path:
    """The Gas-DB folder for ``path``: the folder itself, or a release's ``gasdb/`` subfolder.

    Raises
    ------
    FormatError
        When neither holds ``train.txt`` and ``labels/``.
    """
    path = Path(path)
    for candidate in (path, path / "gasdb"):
        if (candidate / "train.txt").is_file() and (candidate / "labels").is_dir():
            return candidate
    if path.is_file() and path.suffix in (".h5", ".hdf5"):
        raise FormatError("the benchmark reads the Gas-DB folder layout, not the HDF5 pack", file=path,
                          fix=f"pass the release folder {path.parent} (its gasdb/ subfolder holds the layout)")
    raise FormatError("not a Gas-DB folder (no train.txt and labels/) and no gasdb/ subfolder", file=path,
                      fix="pass a Gas-DB folder (images/, labels/, train.txt, test.txt, blacklist.txt) or a "
                          "release folder")


def carve_validation(names, *, fraction: float = 0.1, block: int = 16, seed: int = 3409):
    """Split names into (train, val) deterministically by contiguous blocks.

    Names are sorted and cut into blocks of ``block`` consecutive names (consecutive Gas-DB names
    are usually consecutive frames of one video); ``round(fraction · n_blocks)`` blocks (at least
    one, at most all but one) are drawn with ``numpy.random.default_rng(seed)`` for validation.

    Returns
    -------
    (list of str, list of str)
        Train names and validation names, each sorted.

    Examples
    --------
    >>> tr, va = carve_validation([f"{i:05d}" for i in range(100)], fraction=0.2, block=10, seed=0)
    >>> len(tr), len(va), sorted(set(tr) & set(va))
    (80, 20, [])
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    names = sorted(set(names))
    blocks = [names[i:i + block] for i in range(0, len(names), block)]
    if len(blocks) < 2:
        if len(names) < 2:
            raise ValueError(f"need at least 2 training names to carve a validation split, got {len(names)}")
        blocks = [[n] for n in names]
    k = min(max(1, round(fraction * len(blocks))), len(blocks) - 1)
    picked = set(np.random.default_rng(seed).choice(len(blocks), size=k, replace=False).tolist())
    val = sorted(n for i in picked for n in blocks[i])
    train = sorted(n for i, b in enumerate(blocks) if i not in picked for n in b)
    return train, val


def split_names(data_dir, *, val_fraction: float = 0.1, val_block: int = 16, seed: int = 3409) -> dict:
    """Train / val / test names of a Gas-DB folder, blacklist removed.

    Returns
    -------
    dict
        ``train``, ``val``, ``test`` (lists of names; ``test`` may be empty when there is no
        ``test.txt``) and ``val_source``: ``"val.txt"`` or ``"carved from train.txt (...)"``.
    """
    data_dir = resolve_data_dir(data_dir)
    train = gasdb_layout.read_split(data_dir, "train")
    test = gasdb_layout.read_split(data_dir, "test") if (data_dir / "test.txt").is_file() else []
    if (data_dir / "val.txt").is_file():
        val = gasdb_layout.read_split(data_dir, "val")
        source = "val.txt"
    else:
        train, val = carve_validation(train, fraction=val_fraction, block=val_block, seed=seed)
        source = f"carved from train.txt (fraction {val_fraction}, blocks of {val_block}, seed {seed})"
    overlap = (set(train) & set(test)) | (set(val) & set(test)) | (set(train) & set(val))
    if overlap:
        raise FormatError(f"{len(overlap)} name(s) are in two splits (e.g. {sorted(overlap)[:3]})", file=data_dir,
                          fix="make train.txt, val.txt and test.txt disjoint")
    if not train:
        raise FormatError("the train split is empty after the blacklist", file=data_dir / "train.txt")
    return {"train": train, "val": val, "test": test, "val_source": source}


def _resize_channels(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size_hw
    bicubic = Image.Resampling.BICUBIC
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c])).resize((w, h), bicubic))
             for c in range(image.shape[2])]
    return np.clip(np.stack(chans, axis=2), 0.0, 1.0).astype(np.float32)


def _resize_pil_rgba(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size_hw
    rgba = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    out = np.asarray(Image.fromarray(rgba).resize((w, h)))  # PIL's default filter, as official
    return out.astype(np.float32) / np.float32(255)


def _resize_label(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size_hw
    return np.asarray(Image.fromarray(label).resize((w, h), Image.Resampling.NEAREST))


def augment_sample(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *, augment: Augment,
                   size_hw: tuple[int, int] | None = None):
    """Flip, crop and resize one sample (the official order).

    Parameters
    ----------
    image : (H, W, 4) float32 array in [0, 1]
    label : (H, W) uint8 array
    rng : numpy Generator
    augment : Augment
    size_hw : (int, int), optional
        Output size; default the input size.

    Returns
    -------
    (image, label)
        Same dtypes; ``size_hw`` spatial size.
    """
    h, w = label.shape
    size_hw = (h, w) if size_hw is None else tuple(size_hw)
    if rng.random() < augment.flip_p:
        image, label = image[:, ::-1], label[:, ::-1]
    if augment.crop_rate > 0 and rng.random() < augment.crop_p:
        top = int(rng.integers(0, max(1, int(h * augment.crop_rate))))
        left = int(rng.integers(0, max(1, int(w * augment.crop_rate))))
        bottom = int(rng.integers(int(np.ceil(h - h * augment.crop_rate)), h + 1))
        right = int(rng.integers(int(np.ceil(w - w * augment.crop_rate)), w + 1))
        image, label = image[top:bottom, left:right], label[top:bottom, left:right]
    image, label = np.ascontiguousarray(image), np.ascontiguousarray(label)
    if image.shape[:2] != size_hw:
        resize = _resize_pil_rgba if augment.resize == "pil-rgba" else _resize_channels
        image = resize(image, size_hw)
        label = _resize_label(label, size_hw)
    return image, label


try:  # a torch Dataset when torch is there
    from torch.utils.data import Dataset as _Base
except ImportError:  # pragma: no cover - the bench extra needs torch anyway
    _Base = object


class SegmentationFolder(_Base):
    """Base of the segmentation datasets: ``(image (4, H, W) float32, label (H, W) int64, name[, targets])``.

    Subclasses implement :meth:`read` (one sample as numpy). Augmentation, resizing and the
    optional RSFNet confidence targets (a float32 tensor ``(2,)`` = ``[iou_rgb, iou_thermal]``,
    appended as a 4th item) are shared.
    """

    def __init__(self, names, *, augment: Augment | None = None, size_hw=None, seed: int = 0,
                 confidence_targets: bool = False):
        self.names = list(names)
        self.augment = augment
        self.size_hw = tuple(size_hw) if size_hw is not None else None
        self.seed = int(seed)
        self.epoch = 0
        self.confidence_targets = bool(confidence_targets)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of ``epoch`` (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int):
        import torch

        image, label, name = self.read(index)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, label = augment_sample(image, label, rng, augment=self.augment, size_hw=self.size_hw)
        elif self.size_hw is not None and image.shape[:2] != self.size_hw:
            image, label = _resize_channels(image, self.size_hw), _resize_label(label, self.size_hw)
        item = (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(label.astype(np.int64)), name)
        if self.confidence_targets:
            from gasdb_tools.bench.saliency import confidence_targets
            from gasdb_tools.imaging import to_uint8

            ious = confidence_targets(to_uint8(image[:, :, :3]), to_uint8(image[:, :, 3]), label)
            item = item + (torch.tensor(ious, dtype=torch.float32),)
        return item


class GasDBFolder(SegmentationFolder):
    """Samples of a Gas-DB folder as ``(image (4, H, W) float32 tensor, label (H, W) int64 tensor, name)``.

    Parameters
    ----------
    data_dir : path
        A Gas-DB folder or a release folder (see :func:`resolve_data_dir`).
    names : list of str
        The samples (e.g. ``split_names(...)["train"]``).
    augment : Augment, optional
        Training augmentation; None for evaluation.
    size_hw : (int, int), optional
        Resize every sample to this size (image bicubic per channel, label nearest); default
        native size (Gas-DB frames are all 640×512).
    seed : int
        With the epoch (:meth:`set_epoch`) and the index, seeds each sample's augmentation.
    confidence_targets : bool
        Append RSFNet's saliency pseudo-labels ``[iou_rgb, iou_thermal]`` to each sample.
    ignore : bool
        Labels are 255 where the folder's ``ignore/`` masks mark pixels that are not scored (for
        evaluation; training keeps RT-CAN's 0/1 labels).
    """

    def __init__(self, data_dir, names, *, augment: Augment | None = None, size_hw=None, seed: int = 0,
                 confidence_targets: bool = False, ignore: bool = False):
        super().__init__(names, augment=augment, size_hw=size_hw, seed=seed, confidence_targets=confidence_targets)
        self.ignore = bool(ignore)
        self.data_dir = resolve_data_dir(data_dir)

    def read(self, index: int):
        """One sample as numpy: ``(image (H, W, 4) float32 in [0, 1], label (H, W) uint8, name)``."""
        name = self.names[index]
        rgb, thermal, label = gasdb_layout.read_sample(self.data_dir, name, ignore=self.ignore)
        image = np.concatenate([rgb.astype(np.float32) / np.float32(255), to_float01(thermal)[:, :, None]], axis=2)
        return image, label, name


@dataclass(frozen=True)
class Source:
    """A segmentation data source: its ``kind`` (``gasdb`` or ``smoke``) and folder.

    :meth:`splits` gives train/val/test names (as :func:`split_names`); :meth:`dataset` builds the
    torch Dataset of some names.
    """

    kind: str
    root: Path
    smoke_thermal: str = "gray"

    def splits(self, *, val_fraction: float = 0.1, val_block: int = 16, seed: int = 3409) -> dict:
        if self.kind == "smoke":
            from gasdb_tools.bench.smoke import smoke_split_names

            return smoke_split_names(self.root, val_fraction=val_fraction, val_block=val_block, seed=seed)
        return split_names(self.root, val_fraction=val_fraction, val_block=val_block, seed=seed)

    def dataset(self, names, *, ignore: bool = False, **kwargs) -> SegmentationFolder:
        """The Dataset of ``names``; ``ignore`` marks not-scored pixels 255 (Gas-DB folders have
        ``ignore/`` masks; smoke masks have none)."""
        if self.kind == "smoke":
            from gasdb_tools.bench.smoke import SmokeFolder

            return SmokeFolder(self.root, names, thermal=self.smoke_thermal, **kwargs)
        kwargs["ignore"] = ignore
        return GasDBFolder(self.root, names, **kwargs)


def resolve_source(path, data_format: str = "auto", *, smoke_thermal: str = "gray") -> Source:
    """The :class:`Source` of ``path``: a Gas-DB folder / release, or a smoke images + masks folder.

    ``auto`` takes a Gas-DB folder (or a release's ``gasdb/``) when there is one, else a smoke
    layout (:func:`gasdb_tools.bench.smoke.find_smoke_layout`).

    Raises
    ------
    FormatError
        When ``path`` is neither (the message lists both layouts).
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    if data_format == "gasdb":
        return Source("gasdb", resolve_data_dir(path))
    if data_format == "smoke":
        from gasdb_tools.bench.smoke import find_smoke_layout

        find_smoke_layout(path)
        return Source("smoke", Path(path), smoke_thermal)
    try:
        return Source("gasdb", resolve_data_dir(path))
    except FormatError as gas_error:
        from gasdb_tools.bench.smoke import find_smoke_layout

        try:
            find_smoke_layout(path)
        except FormatError:
            raise FormatError("neither a Gas-DB folder (train.txt + labels/) nor a smoke folder "
                              "(images/ + masks/)", file=path, fix=gas_error.fix) from None
        return Source("smoke", Path(path), smoke_thermal)
