"""The export stage: a workspace's LabelMe annotations as masks, COCO or the Gas-DB/RT-CAN layout.

Every export goes through :func:`pair_mask`, which rasterises a pair's LabelMe document with the
one rasteriser (:func:`gasdb_tools.labelme_format.rasterize`) in the aligned RGB frame and marks
pixels outside the aligned thermal's ``valid`` mask as ignore (255). So the three formats hold
the same pixels:

* ``masks``: ``OUT/<pair_id>.png``, single channel, 0 background, 1 gas, 255 ignore;
* ``coco``: one JSON, RLE instance masks of the gas pixels (see :mod:`gasdb_tools.coco`);
* ``gasdb``: the folder the official RT-CAN code reads (see :mod:`gasdb_tools.gasdb_layout`).

Exports check every selected pair before writing anything (pass 1), then write each file
atomically (pass 2). Blacklisted pairs (``WS/blacklist.csv``) are left out of the default
selection of ``masks`` and ``coco``; ``gasdb`` writes them as samples but keeps them out of the
split lists and names them, with their reason, in ``blacklist.txt`` / ``index.csv``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from gasdb_tools import coco as coco_mod
from gasdb_tools import gasdb_layout, labelme_format, review
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.fsutil import atomic_write_text, write_json
from gasdb_tools.imaging import read_image, to_uint8, write_image
from gasdb_tools.progress import progress

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "read_class_names",
    "pair_mask",
    "pair_instances",
    "select_pairs",
    "export_masks",
    "export_coco",
    "export_gasdb",
    "default_splits",
    "default_names",
    "export_all",
]

DEFAULT_CLASS_NAMES = labelme_format.DEFAULT_CLASS_NAMES
_UNLABELLED = ("error", "background")


def read_class_names(path) -> list[str]:
    """Read a ``labels.txt`` (one label per line, ``__ignore__`` and ``_background_`` first)."""
    path = Path(path)
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise FormatError("label list not found", file=path,
                          fix="use WS/annotation/labels.txt (written by gasdb init)") from None
    try:
        labelme_format.class_index(names)
    except ValueError as exc:
        raise FormatError(str(exc), file=path, fix="one label per line, _background_ first after __ignore__") from None
    return names


def _row(ws, pair) -> dict:
    if isinstance(pair, Mapping):
        return dict(pair)
    pairs = ws.read_index().pairs
    if pair not in pairs:
        raise WorkspaceError(f"no pair {pair!r} in the workspace", file=ws.root / ws.PAIRS,
                             fix="check the id with `gasdb status` or pairs.csv")
    return pairs[pair]


def _pair_arrays(ws, pair_row: Mapping, class_names: Sequence[str], unlabelled: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    if unlabelled not in _UNLABELLED:
        raise ValueError(f"unlabelled must be one of {_UNLABELLED}, got {unlabelled!r}")
    pid = pair_row.get("pair_id", "?")
    valid = None
    if pair_row.get("valid"):
        valid_path = ws.path(pair_row["valid"])
        valid = read_image(valid_path)
        if valid.ndim != 2:
            raise FormatError(f"valid mask must be single-channel, got shape {valid.shape}", file=valid_path,
                              fix="rerun `gasdb align`")
    label_rel = pair_row.get("label") or ""
    if not label_rel:
        if unlabelled == "error":
            raise FormatError(f"pair {pid} has no LabelMe annotation", file=ws.root / ws.PAIRS, field="label",
                              fix="annotate it (gasdb preannotate / gasdb label), blacklist it, or leave it out")
        if valid is not None:
            shape = valid.shape
        else:
            shape = read_image(ws.path(pair_row["rgb"])).shape[:2]
        cls = np.zeros(shape, dtype=np.uint8)
        ins = np.zeros(shape, dtype=np.int32)
    else:
        label_path = ws.path(label_rel)
        doc = labelme_format.read(label_path)
        cls, ins, _ = labelme_format.rasterize_instances(doc, class_names, file=label_path)
        if valid is not None and valid.shape != cls.shape:
            raise FormatError(f"annotation is {cls.shape[1]}x{cls.shape[0]} but the aligned frame is "
                              f"{valid.shape[1]}x{valid.shape[0]} (width x height)", file=label_path,
                              field="imageHeight", fix="annotate the aligned frame (rerun gasdb preannotate)")
    if valid is not None:
        cls[valid == 0] = labelme_format.IGNORE_INDEX
        ins[valid == 0] = 0
    return cls, ins


def pair_mask(ws, pair_row, class_names: Sequence[str] = DEFAULT_CLASS_NAMES, *,
              unlabelled: str = "error") -> np.ndarray:
    """A pair's class-index mask in the aligned RGB frame: uint8 (H, W), 0 bg, 1 gas, 255 ignore.

    Parameters
    ----------
    ws : Workspace
    pair_row : dict or str
        A pairs.csv row (or a pair id).
    class_names : sequence of str
        Label list (default ``__ignore__``, ``_background_``, ``gas``).
    unlabelled : {'error', 'background'}
        What a pair without a LabelMe document gives: a :class:`FormatError` (default), or an
        all-background mask.

    Raises
    ------
    FormatError
        For an unlabelled pair (by default), an invalid document, an unknown label, or a
        document whose size differs from the aligned frame's.
    """
    return _pair_arrays(ws, _row(ws, pair_row), class_names, unlabelled)[0]


def pair_instances(ws, pair_row, class_names: Sequence[str] = DEFAULT_CLASS_NAMES, *,
                   unlabelled: str = "error") -> tuple[np.ndarray, list[np.ndarray]]:
    """``(pair_mask, gas instance masks)``: one boolean mask per LabelMe ``(label, group_id)`` instance."""
    cls, ins = _pair_arrays(ws, _row(ws, pair_row), class_names, unlabelled)
    return cls, coco_mod.instance_masks(cls, ins)


def select_pairs(ws, pairs=None, *, include_blacklisted: bool = False) -> list[dict]:
    """Rows to export: ``pairs`` (ids or rows) as given, or every labelled pair sorted by id.

    The default selection leaves out blacklisted pairs unless ``include_blacklisted``.
    """
    index = ws.read_index()
    if pairs is None:
        states = review.read_states(ws, index)
        black = review.exclusions(ws, index, states)
        return [review.with_label(ws, index.pairs[p]) for p in sorted(index.pairs)
                if p in states and (include_blacklisted or p not in black)]
    rows = []
    for p in pairs:
        pid = p["pair_id"] if isinstance(p, Mapping) else p
        if pid not in index.pairs:
            raise WorkspaceError(f"no pair {pid!r} in the workspace", file=ws.root / ws.PAIRS,
                                 fix="check the id with `gasdb status` or pairs.csv")
        rows.append(review.with_label(ws, index.pairs[pid]))
    ids = [r["pair_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("pairs lists a pair twice; give each pair id once")
    return rows


def _check_all(ws, rows: Sequence[Mapping], class_names, desc: str, unlabelled="error") -> None:
    """Pass 1: every selected pair rasterises (fail before writing anything)."""
    for row in progress(rows, desc=f"check {desc}", unit="pair"):
        _pair_arrays(ws, row, class_names, unlabelled)


def export_masks(ws, out_dir, *, pairs=None, class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> list[Path]:
    """Write ``OUT/<pair_id>.png`` class-index masks (0 bg, 1 gas, 255 ignore) for the selected pairs.

    Parameters
    ----------
    ws : Workspace
    out_dir : path
        Output folder (created).
    pairs : iterable of str or dict, optional
        Pair ids (or rows); default every labelled, non-blacklisted pair.

    Returns
    -------
    list of Path
        The files written, in pair id order.
    """
    rows = select_pairs(ws, pairs)
    _check_all(ws, rows, class_names, "masks")
    out_dir = Path(out_dir)
    written = []
    for row in progress(rows, desc="export masks", unit="pair"):
        mask = _pair_arrays(ws, row, class_names, "error")[0]
        written.append(write_image(out_dir / f"{row['pair_id']}.png", mask))
    return written


def export_coco(ws, out_json, *, pairs=None, class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> Path:
    """Write a COCO instance-segmentation JSON (RLE masks, gas = 1) for the selected pairs.

    Images are numbered 1..N in pair id order; ``file_name`` is the RGB frame's workspace path,
    and each image entry also carries ``pair_id``, ``recording`` and ``thermal`` (the aligned
    thermal's path). Instances are LabelMe's ``(label, group_id)`` groups restricted to gas
    pixels; ignored pixels (255) belong to no instance.

    Returns
    -------
    Path
        ``out_json``.
    """
    rows = select_pairs(ws, pairs)
    _check_all(ws, rows, class_names, "coco")
    images, annotations = [], []
    for image_id, row in enumerate(progress(rows, desc="export coco", unit="pair"), start=1):
        cls, ins = _pair_arrays(ws, row, class_names, "error")
        images.append(coco_mod.make_image(image_id, row.get("rgb", ""), cls.shape[0], cls.shape[1],
                                          pair_id=row["pair_id"], recording=row.get("recording", ""),
                                          thermal=row.get("aligned") or row.get("thermal", "")))
        for mask in coco_mod.instance_masks(cls, ins):
            annotations.append(coco_mod.make_annotation(mask, ann_id=len(annotations) + 1, image_id=image_id))
    doc = coco_mod.build_coco(images, annotations, info={"description": f"gasdb-tools export of {ws.root.name}",
                                                         "workspace": ws.root.name})
    return write_json(Path(out_json), doc)


# --------------------------------------------------------------------------------------------
# Gas-DB layout
# --------------------------------------------------------------------------------------------
def default_splits(ws, pair_ids: Sequence[str], *, test_fraction: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """Default train/test lists for :func:`export_gasdb`.

    Uses ``WS/splits/default.json`` (``gasdb split``) when it exists, restricted to ``pair_ids``;
    otherwise splits **by recording** (no recording on both sides): recordings in a seeded
    random order go to test until it holds ``test_fraction`` of the pairs (with two or more
    recordings at least one is in test).
    """
    if (ws.root / "splits" / "default.json").is_file():
        from gasdb_tools.splits import load_split

        split = load_split(ws, "default")
        wanted = set(pair_ids)
        return {name: sorted(p for p in ids if p in wanted) for name, ids in split.pairs.items()}
    index = ws.read_index()
    by_rec: dict[str, list[str]] = {}
    for pid in sorted(pair_ids):
        by_rec.setdefault(index.pairs[pid]["recording"], []).append(pid)
    recs = sorted(by_rec)
    order = [recs[i] for i in np.random.default_rng(seed).permutation(len(recs))]
    test, n_test, total = [], 0, len(pair_ids)
    for rec in order:
        if len(recs) < 2 or len(test) == len(recs) - 1:
            break
        if n_test >= test_fraction * total:
            break
        test.append(rec)
        n_test += len(by_rec[rec])
    return {"train": sorted(p for r in recs if r not in test for p in by_rec[r]),
            "test": sorted(p for r in test for p in by_rec[r])}


def default_names(pair_ids: Iterable[str], *, start: int = 1) -> dict[str, str]:
    """Pair id -> 5-digit Gas-DB name, numbering the sorted pair ids from ``start``.

    >>> default_names(["b_00001000", "a_00000500"])
    {'a_00000500': '00001', 'b_00001000': '00002'}
    """
    return {pid: gasdb_layout.format_name(start + i) for i, pid in enumerate(sorted(set(pair_ids)))}


def _thermal_source(row: Mapping, thermal: str) -> str:
    rel = row.get(thermal) or ""
    if not rel:
        stage = {"aligned": "gasdb align", "enhanced": "gasdb enhance"}.get(thermal, "the stage")
        raise FormatError(f"pair {row['pair_id']} has no {thermal} thermal frame", field=thermal,
                          fix=f"run `{stage}` first")
    return rel


def _contrast(ws, rows: Sequence[Mapping], thermal: str, samples: int = 8) -> dict[str, tuple[float, float]]:
    """Per recording: one (lo, hi) stretch for >8-bit thermal (0.5 / 99.5 percentiles of a few frames)."""
    by_rec: dict[str, list[Mapping]] = {}
    for row in rows:
        by_rec.setdefault(row["recording"], []).append(row)
    out = {}
    for rec, recrows in sorted(by_rec.items()):
        spots = np.unique(np.linspace(0, len(recrows) - 1, min(samples, len(recrows))).astype(int))
        picks = [recrows[i] for i in spots]
        values = []
        for row in picks:
            image = read_image(ws.path(_thermal_source(row, thermal)), mode="gray")
            if image.dtype == np.uint8:
                values = None
                break
            valid = read_image(ws.path(row["valid"])) > 0 if row.get("valid") else np.ones(image.shape, bool)
            values.append(image[valid].ravel()[::7])
        if values:
            v = np.concatenate(values)
            lo, hi = (float(x) for x in np.percentile(v, [0.5, 99.5]))
            out[rec] = (lo, hi if hi > lo else lo + 1.0)
    return out


def export_gasdb(ws, out_dir, *, splits: dict[str, list[str]] | None = None,
                 names: dict[str, str] | None = None, thermal: str = "aligned", ignore_value: int = 0,
                 class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> dict:
    """Write the Gas-DB / RT-CAN folder layout (images, labels, train.txt, test.txt, blacklist.txt).

    Parameters
    ----------
    ws : Workspace
    out_dir : path
        Output folder (created).
    splits : dict of str -> list of str, optional
        Split name -> pair ids (``train``, ``test``, ...). Default :func:`default_splits` over the
        labelled, non-blacklisted pairs.
    names : dict of str -> str, optional
        Pair id -> 5-digit name. Default :func:`default_names` over the exported pairs.
    thermal : {'aligned', 'enhanced'}
        Which thermal frame goes into channel 3 (both are in the RGB frame). 16-bit frames are
        mapped to 8 bits with one stretch per recording.
    ignore_value : int
        What ignore pixels (255: outside the aligned thermal) become in ``labels/``. The official
        loader expects 0/1 only, hence 0 (background) by default; pass 255 to keep them.

    Returns
    -------
    dict
        ``{"out_dir", "samples", "splits": {name: count}, "blacklisted": {name: reason},
        "names": {pair_id: name}, "ignored_pixels", "size": [H, W] or None, "warnings": [...]}``.

    Notes
    -----
    Labelled blacklisted pairs are written as samples (as in Gas-DB) and listed in
    ``blacklist.txt``, never in a split list. ``index.csv`` maps every name to its pair id,
    recording, split and blacklist reason.
    """
    if thermal not in ("aligned", "enhanced"):
        raise ValueError(f"thermal must be 'aligned' or 'enhanced', got {thermal!r}")
    if ignore_value not in (0, 255):
        raise ValueError(f"ignore_value must be 0 or 255, got {ignore_value!r}")
    index = ws.read_index()
    states = review.read_states(ws, index)
    black = review.exclusions(ws, index, states)
    index.pairs = {p: review.with_label(ws, row) for p, row in index.pairs.items()}
    if splits is None:
        clean = [p for p in sorted(index.pairs) if p in states and p not in black]
        splits = default_splits(ws, clean)
    splits = {str(k): list(v) for k, v in splits.items()}
    in_splits = [p for ids in splits.values() for p in ids]
    if len(set(in_splits)) != len(in_splits):
        raise ValueError("a pair id appears in more than one split (or twice in one); splits must be disjoint")
    labelled_black = [p for p in sorted(black) if p in index.pairs and p in states]
    pair_ids = sorted(set(in_splits) | set(labelled_black))
    rows = select_pairs(ws, pair_ids)
    names = dict(names) if names is not None else default_names(pair_ids)
    missing = [p for p in pair_ids if p not in names]
    if missing:
        raise ValueError(f"names has no entry for {len(missing)} pair(s), e.g. {missing[:3]}; map every exported "
                         "pair id to a 5-digit name")
    used = [names[p] for p in pair_ids]
    for n in used:
        gasdb_layout.check_name(n)
    if len(set(used)) != len(used):
        raise ValueError("names maps two pairs to the same Gas-DB name")

    # pass 1: every pair rasterises and has its frames (nothing written yet)
    for row in progress(rows, desc="check gasdb", unit="pair"):
        unl = "background" if row["pair_id"] in black else "error"
        _pair_arrays(ws, row, class_names, unl)
        for col in ("rgb",):
            if not row.get(col) or not ws.path(row[col]).is_file():
                raise FormatError(f"pair {row['pair_id']} has no {col} frame on disk",
                                  file=ws.path(row.get(col) or "."),
                                  field=col, fix="rerun `gasdb extract`")
        if not ws.path(_thermal_source(row, thermal)).is_file():
            raise FormatError(f"pair {row['pair_id']}: {thermal} thermal frame missing", file=ws.path(row[thermal]),
                              fix=f"rerun `gasdb {'align' if thermal == 'aligned' else 'enhance'}`")
    contrast = _contrast(ws, rows, thermal)

    # pass 2: write
    out_dir = Path(out_dir)
    ignored, size, warn = 0, None, []
    for row in progress(rows, desc="export gasdb", unit="pair"):
        pid = row["pair_id"]
        mask = _pair_arrays(ws, row, class_names, "background" if pid in black else "error")[0]
        rgb = read_image(ws.path(row["rgb"]), mode="rgb")
        if rgb.dtype != np.uint8:
            rgb = to_uint8(rgb)
        th = read_image(ws.path(_thermal_source(row, thermal)), mode="gray")
        if th.dtype != np.uint8:
            lo, hi = contrast[row["recording"]]
            th = to_uint8(th, lo=lo, hi=hi)
        if rgb.shape[:2] != mask.shape or th.shape != mask.shape:
            raise FormatError(f"pair {pid}: RGB {rgb.shape[:2]}, thermal {th.shape} and annotation {mask.shape} "
                              "sizes differ", file=ws.path(row["rgb"]), fix="rerun `gasdb align`")
        n_ignored = int((mask == labelme_format.IGNORE_INDEX).sum())
        ignored += n_ignored
        label = mask.copy()
        label[mask == labelme_format.IGNORE_INDEX] = ignore_value
        gasdb_layout.write_sample(out_dir, names[pid], rgb, th, label)
        if size is None:
            size = list(mask.shape)
        elif list(mask.shape) != size:
            warn.append(f"pair {pid} is {mask.shape[1]}x{mask.shape[0]}, others {size[1]}x{size[0]}")
    if size is not None and size != [512, 640]:
        warn.append(f"frames are {size[1]}x{size[0]}; the official loader resizes to 640x512 (Gas-DB's size)")

    split_of = {p: s for s, ids in splits.items() for p in ids}
    lists = {s: [names[p] for p in ids if p not in black] for s, ids in splits.items()}
    for required in ("train", "test"):
        lists.setdefault(required, [])
    black_names = {names[p]: black[p] or "no reason given" for p in pair_ids if p in black}
    gasdb_layout.write_layout_lists(out_dir, lists, black_names)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "pair_id", "recording", "split", "blacklist_reason"])
    for pid in sorted(pair_ids, key=lambda p: names[p]):
        split = "" if pid in black else split_of.get(pid, "")
        writer.writerow([names[pid], pid, index.pairs[pid]["recording"], split, black.get(pid, "")])
    atomic_write_text(out_dir / "index.csv", buf.getvalue())
    return {
        "out_dir": str(out_dir),
        "samples": len(rows),
        "splits": {s: len(v) for s, v in sorted(lists.items())},
        "blacklisted": dict(sorted(black_names.items())),
        "names": {p: names[p] for p in pair_ids},
        "ignored_pixels": ignored,
        "size": size,
        "warnings": warn,
    }


def export_all(ws, out_dir, *, splits: dict[str, list[str]] | None = None,
               class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> dict:
    """All three exports of a workspace into ``out_dir``: ``masks/``, ``coco.json`` and ``gasdb/``.

    Returns ``{"masks": n_files, "coco": path, "gasdb": export_gasdb's result}`` (for demos).
    """
    out_dir = Path(out_dir)
    masks = export_masks(ws, out_dir / "masks", class_names=class_names)
    coco_path = export_coco(ws, out_dir / "coco.json", class_names=class_names)
    gasdb = export_gasdb(ws, out_dir / "gasdb", splits=splits, class_names=class_names)
    return {"masks": len(masks), "coco": str(coco_path), "gasdb": gasdb}
