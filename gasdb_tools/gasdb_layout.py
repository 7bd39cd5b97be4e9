"""The Gas-DB / RT-CAN on-disk layout: writer and reader (``docs/formats.md`` §3).

The layout the official RT-CAN code (``util/MF_dataset.py``, the MFNet/RTFNet convention) reads::

    <data_dir>/train.txt, test.txt     one sample name per line, no extension (e.g. 00665)
    <data_dir>/blacklist.txt           must exist; names to exclude
    <data_dir>/images/<name>.png       uint8 RGBA: channels 0-2 RGB, channel 3 thermal (8-bit)
    <data_dir>/labels/<name>.png       uint8 single channel, class index: 0 background, 1 gas

gasdb-tools adds, beside them (the official loader never looks at them)::

    <data_dir>/ignore/<name>.png       uint8 single channel: 255 where the pixel is not scored (outside
                                       the thermal view, or drawn as ``__ignore__``), else 0
    <data_dir>/index.csv               name, pair_id, recording, split, blacklist_reason, modality,
                                       rgb_resized_from

``labels/`` hold 0 at ignored pixels (RT-CAN's loader and losses expect 0/1 only); a scorer or
loader that honours the ignore masks reads them with ``read_sample(..., ignore=True)``. A pair from a
thermal camera alone has no RGB frame: its RGB channels are 0 and ``index.csv`` says ``modality``
``thermal``.

Names are 5-digit zero-padded integers. The writer ends **every** line with ``\\n`` and writes no
trailing spaces: RT-CAN compares ``readlines()`` output including the terminator, so a last line
without a newline silently fails to be excluded by the blacklist. The reader strips lines before
comparing, and warns when stripping changed which names are excluded (the official loader would
then behave differently). The reader also accepts 0/255 labels (as in CGNet's data) and separate
RGB and thermal files.

References
----------
J. Zhu et al., "RT-CAN: Real-time gas leak segmentation ..." (Gas-DB), code at
https://github.com/logic112358/RT-CAN; Q. Ha et al., "MFNet: Towards real-time semantic
segmentation for autonomous vehicles with multi-spectral scenes", IROS 2017,
doi:10.1109/IROS.2017.8206396.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from gasdb_tools.errors import FormatError
from gasdb_tools.fsutil import atomic_write_bytes, atomic_write_text
from gasdb_tools.imaging import encode_png, read_image, to_gray

__all__ = [
    "NAME_DIGITS",
    "SPLIT_FILES",
    "format_name",
    "check_name",
    "compose_rgbt",
    "write_sample",
    "write_list",
    "write_layout_lists",
    "encode_sample",
    "write_index",
    "INDEX_COLUMNS",
    "IGNORE_DIR",
    "read_list",
    "read_split",
    "read_sample",
    "list_samples",
    "BlacklistNewlineWarning",
]

NAME_DIGITS = 5
#: Split list files the official loader knows (only train and test are used by RT-CAN).
SPLIT_FILES = ("train", "val", "test", "test_day", "test_night", "val_test", "most_wanted")
_NAME_RE = re.compile(r"\d{5}")
#: Folder of the ignore masks (255 = not scored) beside ``labels/``.
IGNORE_DIR = "ignore"
#: Columns of the layout's ``index.csv``.
INDEX_COLUMNS = ("name", "pair_id", "recording", "split", "blacklist_reason", "modality", "rgb_resized_from")


class BlacklistNewlineWarning(UserWarning):
    """Stripping whitespace changed which names a list excludes (RT-CAN's loader would differ)."""


def format_name(index: int) -> str:
    """The Gas-DB name of sample ``index``: 5 digits, zero-padded.

    >>> format_name(665)
    '00665'
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index <= 99999:
        raise ValueError(f"a Gas-DB name is an integer in 0..99999, got {index!r}")
    return f"{int(index):05d}"


def check_name(name: str) -> str:
    """Return ``name`` if it is a 5-digit Gas-DB name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"a Gas-DB name is 5 digits such as '00665', got {name!r}")
    return name


def compose_rgbt(rgb: np.ndarray, thermal: np.ndarray) -> np.ndarray:
    """Stack RGB (H, W, 3) uint8 and 8-bit thermal (H, W) into the RGBA array Gas-DB stores.

    Raises ``ValueError`` on a size or dtype mismatch (convert thermal with
    :func:`gasdb_tools.imaging.to_uint8` first).
    """
    rgb, thermal = np.asarray(rgb), np.asarray(thermal)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    if thermal.ndim == 3:
        thermal = to_gray(thermal)
    if thermal.shape != rgb.shape[:2] or thermal.dtype != np.uint8:
        raise ValueError(f"thermal must be (H, W) uint8 matching rgb {rgb.shape[:2]}, got {thermal.shape} "
                         f"{thermal.dtype} (convert with imaging.to_uint8, warp into the RGB frame first)")
    return np.dstack([rgb, thermal])


def encode_sample(rgb: np.ndarray, thermal: np.ndarray, label: np.ndarray, *, ignore=None,
                  compression: int = 1) -> dict[str, bytes]:
    """PNG bytes of one sample: ``{"images/{name}.png": RGBA, "labels/{name}.png": label[, "ignore/{name}.png"]}``.

    ``label`` holds class indices (uint8, the image's size); ``ignore`` (bool, optional) marks the
    pixels that are not scored, written as 255 in ``ignore/``. Keys are templates: format them with
    ``name=``.
    """
    label = np.asarray(label)
    if label.shape != np.asarray(rgb).shape[:2]:
        raise ValueError(f"label {label.shape} must have the image's size {np.asarray(rgb).shape[:2]}")
    if label.dtype != np.uint8:
        raise ValueError(f"label must be uint8 class indices, got {label.dtype}")
    out = {"images/{name}.png": encode_png(compose_rgbt(rgb, thermal), compression=compression),
           "labels/{name}.png": encode_png(label, compression=compression)}
    if ignore is not None:
        ignore = np.asarray(ignore, bool)
        if ignore.shape != label.shape:
            raise ValueError(f"ignore {ignore.shape} must have the label's size {label.shape}")
        out[IGNORE_DIR + "/{name}.png"] = encode_png(np.where(ignore, 255, 0).astype(np.uint8),
                                                     compression=compression)
    return out


def write_sample(data_dir, name: str, rgb: np.ndarray, thermal: np.ndarray, label: np.ndarray, *,
                 ignore=None) -> tuple[Path, Path]:
    """Write ``images/<name>.png`` (RGBA, thermal in channel 3) and ``labels/<name>.png``, atomically.

    ``label`` must hold class indices (0 background, 1 gas; 255 is kept if present, but the
    official loader expects 0/1 only). With ``ignore`` (bool mask) ``ignore/<name>.png`` is written too.
    """
    check_name(name)
    data_dir = Path(data_dir)
    paths = []
    for rel, data in encode_sample(rgb, thermal, label, ignore=ignore, compression=3).items():
        paths.append(atomic_write_bytes(data_dir / rel.format(name=name), data))
    return paths[0], paths[1]


def write_index(data_dir, rows: Iterable[Iterable]) -> Path:
    """Write ``index.csv`` (:data:`INDEX_COLUMNS`, one row per sample, in the order given)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    writer.writerows(rows)
    return atomic_write_text(Path(data_dir) / "index.csv", buf.getvalue())


def write_list(path, names: Iterable[str]) -> Path:
    """Write a list file: one name per line, every line ``\\n``-terminated, no spaces (atomic)."""
    names = [check_name(n) for n in names]
    return atomic_write_text(path, "".join(f"{n}\n" for n in names))


def write_layout_lists(data_dir, splits: Mapping[str, Iterable[str]], blacklist: Iterable[str]) -> list[Path]:
    """Write ``<split>.txt`` for each split and ``blacklist.txt`` (always, even when empty)."""
    data_dir = Path(data_dir)
    paths = []
    for split, names in splits.items():
        if not re.match(r"^[A-Za-z0-9_-]+$", split):
            raise ValueError(f"split name {split!r} must be letters, digits, '_' or '-'")
        paths.append(write_list(data_dir / f"{split}.txt", sorted(names)))
    paths.append(write_list(data_dir / "blacklist.txt", sorted(set(blacklist))))
    return paths


def _raw_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:  # text mode, as RT-CAN: CRLF becomes \n
            return fh.readlines()
    except FileNotFoundError:
        raise FormatError("list file not found", file=path,
                          fix="a Gas-DB folder needs train.txt, test.txt and blacklist.txt") from None
    except UnicodeDecodeError:
        raise FormatError("list file is not UTF-8 text", file=path) from None


def read_list(path) -> list[str]:
    """Read a list file: stripped, non-empty lines, in file order."""
    return [line.strip() for line in _raw_lines(Path(path)) if line.strip()]


def read_split(data_dir, split: str = "train") -> list[str]:
    """Names of a split with the blacklist removed (compared after stripping whitespace).

    Warns with :class:`BlacklistNewlineWarning` when the result differs from RT-CAN's own
    comparison of raw lines (a missing final newline or trailing spaces in ``<split>.txt`` or
    ``blacklist.txt``): the official loader would then train or test on blacklisted frames.
    """
    data_dir = Path(data_dir)
    split_path, black_path = data_dir / f"{split}.txt", data_dir / "blacklist.txt"
    raw_split, raw_black = _raw_lines(split_path), _raw_lines(black_path)
    black = {line.strip() for line in raw_black if line.strip()}
    names = [line.strip() for line in raw_split if line.strip() and line.strip() not in black]
    rtcan = [line.strip() for line in raw_split if line not in raw_black and line.strip()]
    if sorted(rtcan) != sorted(names):
        leaked = sorted(set(rtcan) - set(names))
        warnings.warn(f"{split_path}: RT-CAN's loader would not exclude {len(leaked)} blacklisted name(s) "
                      f"({', '.join(leaked[:5])}{' ...' if len(leaked) > 5 else ''}) because of line endings or "
                      f"trailing spaces in {split_path.name} or {black_path.name}; rewrite both files with one "
                      f"name per line, each ending with a newline", BlacklistNewlineWarning, stacklevel=2)
    return names


def list_samples(data_dir) -> list[str]:
    """Names of all samples with a label file, sorted."""
    return sorted(p.stem for p in (Path(data_dir) / "labels").glob("*.png"))


def _find(data_dir: Path, folders: Iterable[str], name: str) -> Path | None:
    for folder in folders:
        for ext in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
            p = data_dir / folder / f"{name}{ext}"
            if p.is_file():
                return p
    return None


def read_sample(data_dir, name: str, *, ignore: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one sample as ``(rgb (H, W, 3) uint8, thermal (H, W), label (H, W) uint8)``.

    Accepts the official 4-channel ``images/<name>.png``, or separate ``rgb/`` (or ``visible/``)
    and ``thermal/`` (or ``infrared/``, ``ir/``) files. Labels are class indices; a 0/255 label
    (CGNet's convention) is binarised at > 128 to 0/1. With ``ignore``, pixels that
    ``ignore/<name>.png`` marks (nonzero) are 255 in the label (not scored); a folder without
    ignore masks reads as before.
    """
    data_dir = Path(data_dir)
    combined = data_dir / "images" / f"{name}.png"
    if combined.is_file():
        image = read_image(combined)
        if image.ndim != 3 or image.shape[2] != 4:
            raise FormatError(f"expected a 4-channel RGBA image (RGB + thermal), got shape {image.shape}",
                              file=combined, fix="store thermal in channel 3 (alpha), or use separate rgb/ and "
                                                 "thermal/ folders")
        rgb, thermal = np.ascontiguousarray(image[:, :, :3]), np.ascontiguousarray(image[:, :, 3])
    else:
        rgb_path = _find(data_dir, ("rgb", "visible", "RGB"), name)
        th_path = _find(data_dir, ("thermal", "infrared", "ir", "T"), name)
        if rgb_path is None or th_path is None:
            raise FormatError(f"no image for sample {name!r}", file=combined,
                              fix="provide images/<name>.png (RGBA) or rgb/<name>.png + thermal/<name>.png")
        rgb = read_image(rgb_path, mode="rgb")
        thermal = read_image(th_path, mode="gray")
        if thermal.shape != rgb.shape[:2]:
            raise FormatError(f"thermal {thermal.shape} and RGB {rgb.shape[:2]} sizes differ", file=th_path,
                              fix="warp the thermal image into the RGB frame first")
    label_path = data_dir / "labels" / f"{name}.png"
    label = read_image(label_path)
    if label.ndim != 2:
        raise FormatError(f"a label must be single-channel, got shape {label.shape}", file=label_path,
                          fix="save class indices as an 8-bit gray PNG")
    if label.dtype != np.uint8:
        raise FormatError(f"a label must be 8-bit, got {label.dtype}", file=label_path)
    values = set(np.unique(label).tolist())
    if values <= {0, 255} and 255 in values:
        label = (label > 128).astype(np.uint8)
    if label.shape != rgb.shape[:2]:
        raise FormatError(f"label {label.shape} and image {rgb.shape[:2]} sizes differ", file=label_path)
    if ignore:
        ignore_path = data_dir / IGNORE_DIR / f"{name}.png"
        if ignore_path.is_file():
            marks = read_image(ignore_path)
            if marks.shape != label.shape:
                raise FormatError(f"ignore mask {marks.shape} and label {label.shape} sizes differ", file=ignore_path,
                                  fix="re-export the layout (gasdb export --format gasdb)")
            label = label.copy()
            label[marks != 0] = 255
    return rgb, thermal, label
