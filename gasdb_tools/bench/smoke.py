"""Visible-smoke segmentation data for pretraining (the smoke -> gas transfer recipe).

Gas data is scarce; visible smoke looks like a plume too and public smoke-segmentation sets are
larger. The transfer recipe pretrains a model on smoke images + masks, then fine-tunes it on gas
(``gasdb bench transfer``). The smoke data is the user's; these layouts are accepted:

**Flat** (names = file stems)::

    ROOT/images/<name>.jpg|png|...     also: image/, img/, imgs/, JPEGImages/
    ROOT/masks/<name>.png              also: mask/, gt/, labels/, SegmentationClass/
    ROOT/train.txt, val.txt, test.txt  optional lists of names; without them every pair is
                                       training data and validation is carved from it

**Split folders** (SMOKE5K-style; names = ``<split>/<stem>``)::

    ROOT/train/images/ + ROOT/train/masks/     (the same folder aliases)
    ROOT/val/... (or validation/), ROOT/test/...   optional

Images are read as 8-bit RGB. Masks are gray PNGs: with a maximum of 1 the values are class
indices (> 0 = smoke); otherwise (0/255, antialiased or JPEG-like masks) a pixel is smoke at
>= 128. Image and mask sizes must agree. The models take 4-channel RGB-T input; a smoke image
fills the thermal slot with its luma (``thermal="gray"``, default) or zeros (``"zeros"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gasdb_tools.bench.data import SegmentationFolder, carve_validation
from gasdb_tools.errors import FormatError
from gasdb_tools.imaging import read_image, to_gray, to_uint8, write_image

__all__ = ["IMAGE_DIRS", "MASK_DIRS", "SMOKE_THERMAL", "SmokeLayout", "find_smoke_layout", "smoke_split_names",
           "read_smoke_pair", "SmokeFolder", "write_smoke_folder"]

IMAGE_DIRS = ("images", "image", "img", "imgs", "JPEGImages")
MASK_DIRS = ("masks", "mask", "gt", "labels", "SegmentationClass")
SMOKE_THERMAL = ("gray", "zeros")
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class SmokeLayout:
    """Image and mask paths of a smoke folder: ``pairs[name] = (image, mask)``, ``lists[split] = names``."""

    root: Path
    kind: str  # "flat" or "split-folders"
    pairs: dict
    lists: dict  # split -> names, only for the splits the folder defines


def _pick(folder: Path, names) -> Path | None:
    for n in names:
        if (folder / n).is_dir():
            return folder / n
    return None


def _pairs(image_dir: Path, mask_dir: Path, prefix: str = "") -> dict:
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in _IMAGE_EXT}
    masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() in _IMAGE_EXT}
    missing = sorted(set(images) - set(masks))
    if missing:
        raise FormatError(f"{len(missing)} image(s) have no mask (e.g. {missing[:3]})", file=mask_dir,
                          fix="give every image a mask with the same file stem")
    return {prefix + stem: (images[stem], masks[stem]) for stem in images}


def find_smoke_layout(root) -> SmokeLayout:
    """Find the image/mask pairs of a smoke folder (layouts in the module docstring).

    Raises
    ------
    FormatError
        When ``root`` holds neither layout, an image lacks its mask, a list names an unknown
        sample, or there are no pairs.
    """
    root = Path(root)
    if not root.is_dir():
        raise FormatError("not a folder", file=root, fix="pass a folder of images/ and masks/")
    image_dir, mask_dir = _pick(root, IMAGE_DIRS), _pick(root, MASK_DIRS)
    if image_dir is not None and mask_dir is not None:
        pairs = _pairs(image_dir, mask_dir)
        lists = {}
        for split in ("train", "val", "test"):
            f = root / f"{split}.txt"
            if f.is_file():
                names = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
                unknown = sorted(set(names) - set(pairs))
                if unknown:
                    raise FormatError(f"{len(unknown)} name(s) have no image/mask pair (e.g. {unknown[:3]})", file=f,
                                      fix=f"list stems of files in {image_dir.name}/")
                lists[split] = names
        kind = "flat"
    else:
        pairs, lists = {}, {}
        for split, dirs in _SPLIT_DIRS.items():
            sdir = _pick(root, dirs)
            if sdir is None:
                continue
            si, sm = _pick(sdir, IMAGE_DIRS), _pick(sdir, MASK_DIRS)
            if si is None or sm is None:
                continue
            found = _pairs(si, sm, prefix=f"{split}/")
            pairs.update(found)
            lists[split] = sorted(found)
        kind = "split-folders"
        if not pairs and "train" not in lists:
            raise FormatError("no smoke layout: expected images/ + masks/ (or train/images/ + train/masks/)",
                              file=root, fix=f"image folder one of {IMAGE_DIRS}, mask folder one of {MASK_DIRS}")
    if not pairs:
        raise FormatError("no image/mask pairs found", file=root, fix=f"images with extensions {_IMAGE_EXT}")
    return SmokeLayout(root=root, kind=kind, pairs=pairs, lists=lists)


def smoke_split_names(root, *, val_fraction: float = 0.1, val_block: int = 16, seed: int = 3409) -> dict:
    """Train / val / test names of a smoke folder (as :func:`gasdb_tools.bench.data.split_names`).

    Listed splits are used as given; without a ``train`` list every pair not listed in val/test is
    training data; without a ``val`` list validation is carved from train
    (:func:`~gasdb_tools.bench.data.carve_validation`).
    """
    layout = find_smoke_layout(root)
    test = list(layout.lists.get("test", []))
    val = list(layout.lists.get("val", []))
    if "train" in layout.lists:
        train = list(layout.lists["train"])
    else:
        taken = set(val) | set(test)
        train = sorted(n for n in layout.pairs if n not in taken)
    if val:
        source = "val list" if layout.kind == "flat" else "val/ folder"
    else:
        train, val = carve_validation(train, fraction=val_fraction, block=val_block, seed=seed)
        source = f"carved from train (fraction {val_fraction}, blocks of {val_block}, seed {seed})"
    overlap = (set(train) & set(test)) | (set(val) & set(test)) | (set(train) & set(val))
    if overlap:
        raise FormatError(f"{len(overlap)} name(s) are in two splits (e.g. {sorted(overlap)[:3]})", file=root,
                          fix="make train.txt, val.txt and test.txt disjoint")
    if not train:
        raise FormatError("the train split is empty", file=root)
    return {"train": train, "val": val, "test": test, "val_source": source}


def read_smoke_pair(image_path, mask_path, *, thermal: str = "gray") -> tuple[np.ndarray, np.ndarray]:
    """One smoke sample: ``(image (H, W, 4) float32 in [0, 1], label (H, W) uint8 0/1)``."""
    if thermal not in SMOKE_THERMAL:
        raise ValueError(f"thermal must be one of {SMOKE_THERMAL}, got {thermal!r}")
    rgb = to_uint8(read_image(image_path, mode="rgb"))
    mask = read_image(mask_path, mode="gray")
    if mask.shape != rgb.shape[:2]:
        raise FormatError(f"mask {mask.shape} and image {rgb.shape[:2]} sizes differ", file=mask_path,
                          fix="save the mask at the image's size")
    label = (mask > 0) if int(mask.max(initial=0)) <= 1 else (mask >= 128)
    t = to_gray(rgb) if thermal == "gray" else np.zeros(rgb.shape[:2], np.uint8)
    image = np.concatenate([rgb, t[:, :, None]], axis=2).astype(np.float32) / np.float32(255)
    return image, label.astype(np.uint8)


class SmokeFolder(SegmentationFolder):
    """Samples of a smoke folder, shaped like :class:`~gasdb_tools.bench.data.GasDBFolder`'s (4-channel input).

    Parameters
    ----------
    root : path
    names : list of str
        From :func:`smoke_split_names`.
    thermal : {'gray', 'zeros'}
        What fills the thermal channel.
    **kwargs
        ``augment``, ``size_hw``, ``seed``, ``confidence_targets`` as for the base class.
    """

    def __init__(self, root, names, *, thermal: str = "gray", **kwargs):
        super().__init__(names, **kwargs)
        if thermal not in SMOKE_THERMAL:
            raise ValueError(f"thermal must be one of {SMOKE_THERMAL}, got {thermal!r}")
        self.layout = find_smoke_layout(root)
        self.thermal = thermal
        unknown = [n for n in self.names if n not in self.layout.pairs]
        if unknown:
            raise FormatError(f"{len(unknown)} unknown sample name(s) (e.g. {unknown[:3]})", file=root)

    def read(self, index: int):
        """One sample as numpy: ``(image (H, W, 4) float32 in [0, 1], label (H, W) uint8, name)``."""
        name = self.names[index]
        image, label = read_smoke_pair(*self.layout.pairs[name], thermal=self.thermal)
        return image, label, name


def write_smoke_folder(out, *, n: int = 12, size=(96, 64), seed: int = 0, test: int = 0) -> Path:
    """Write a flat smoke folder of simulated visible smoke (:func:`gasdb_tools.synth.render_visible_smoke`).

    ``images/smoke_NNNN.png`` + ``masks/smoke_NNNN.png`` (0/255); with ``test > 0`` the last
    ``test`` names go to ``test.txt`` and the rest to ``train.txt``. For tests and demos only.
    """
    from gasdb_tools.fsutil import atomic_write_text
    from gasdb_tools.synth import render_visible_smoke

    out = Path(out)
    names = [f"smoke_{i:04d}" for i in range(n)]
    for i, name in enumerate(names):
        rgb, mask = render_visible_smoke(tuple(size), seed=seed + i)
        write_image(out / "images" / f"{name}.png", rgb)
        write_image(out / "masks" / f"{name}.png", (mask * 255).astype(np.uint8))
    if test:
        atomic_write_text(out / "train.txt", "\n".join(names[:n - test]) + "\n")
        atomic_write_text(out / "test.txt", "\n".join(names[n - test:]) + "\n")
    return out
