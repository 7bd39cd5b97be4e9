"""The export stage: a workspace's LabelMe annotations as masks, COCO or the Gas-DB/RT-CAN layout.

Every export reads a pair through :func:`read_pair`, which puts everything in the pair's
**annotation frame** (:func:`gasdb_tools.align.annotation_frame`): the aligned RGB frame of an
RGB + thermal recording, the thermal frame of a thermal camera alone. The LabelMe document is
rasterised with the one rasteriser (:func:`gasdb_tools.labelme_format.rasterize_instances`) and
pixels outside the thermal view (``valid`` 0) become ignore (255). The RGB frame is resized to the
annotation frame when ``align --size`` made them differ (recorded per pair: :attr:`PairFrames.rgb_native`).
So every format holds the same pixels:

* ``masks``: ``OUT/<pair_id>.png``, single channel, 0 background, 1 gas, 255 ignore;
* ``coco``: one JSON, RLE instance masks of the gas pixels, ignore regions as ``iscrowd`` 1
  (see :mod:`gasdb_tools.coco`); ``file_name`` is the image annotators saw;
* ``gasdb``: the folder the official RT-CAN code reads (see :mod:`gasdb_tools.gasdb_layout`),
  plus ``ignore/`` masks beside ``labels/``.

**Missing RGB.** A thermal camera alone has no RGB frame: its pairs are written with RGB = 0 (black)
in the Gas-DB layout's RGBA images, and ``index.csv`` says ``modality`` ``thermal`` (the HDF5 pack
and the Hugging Face export record the same, see ``docs/formats.md`` §3-§5). Thermal frames go to
8 bits with the recording's one contrast stretch (:mod:`gasdb_tools.views`).

Exports check every selected pair before writing anything (pass 1), then write each file
atomically (pass 2). Blacklisted pairs (``WS/blacklist.csv``) are left out of the default
selection of ``masks`` and ``coco``; ``gasdb`` writes them as samples but keeps them out of the
split lists and names them, with their reason, in ``blacklist.txt`` / ``index.csv``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gasdb_tools import coco as coco_mod
from gasdb_tools import gasdb_layout, labelme_format, review, views
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.fsutil import atomic_write_bytes, write_json
from gasdb_tools.imaging import decode_image, encode_png, read_image
from gasdb_tools.progress import progress
from gasdb_tools.recordings import modality as recording_modality

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "PairFrames",
    "read_class_names",
    "read_pair",
    "recording_stretches",
    "annotation_view",
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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


# --------------------------------------------------------------------------------------------
# one pair in its annotation frame
# --------------------------------------------------------------------------------------------
@dataclass
class PairFrames:
    """One pair in its annotation frame, as every export and the release write it.

    ``rgb`` is None for a thermal camera alone (``modality`` ``thermal``). ``rgb_native`` is the
    RGB frame's (width, height) before it was resized to the annotation frame (None without RGB).
    ``files`` holds the bytes of source PNGs whose pixels are exactly ``rgb``/``thermal``/``valid``
    (when asked for with ``keep_bytes``), so a release can copy them instead of encoding again.
    """

    pair_id: str
    recording: str
    modality: str
    thermal_source: str  # 'aligned' (warped into the RGB frame) or 'thermal' (the camera's own frame)
    mask: np.ndarray
    instances: np.ndarray
    valid: np.ndarray
    thermal: np.ndarray | None = None
    rgb: np.ndarray | None = None
    rgb_native: tuple | None = None
    doc: dict | None = None
    label_path: Path | None = None
    files: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the annotation frame."""
        return int(self.mask.shape[1]), int(self.mask.shape[0])

    @property
    def rgb_resized(self) -> bool:
        return self.rgb_native is not None and tuple(self.rgb_native) != self.size

    def rgb_or_zeros(self) -> np.ndarray:
        """The RGB frame, or zeros (black) for a thermal camera alone: what 4-channel consumers see."""
        if self.rgb is not None:
            return self.rgb
        return np.zeros((*self.mask.shape, 3), np.uint8)


def _read_png(path: Path, *, mode: str = "unchanged", keep: bool = False):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError("image file not found", file=path, fix="check the path or rerun the stage "
                          "that writes it") from None
    image = decode_image(data, mode=mode, name=str(path))
    return image, (data if keep and data[:8] == _PNG_SIGNATURE else None)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    w, h = size
    shrink = image.shape[1] > w or image.shape[0] > h
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def read_pair(ws, pair_row, rec: Mapping | None = None, *, class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
              unlabelled: str = "error", arrays: Sequence[str] = ("rgb", "thermal"),
              keep_bytes: bool = False) -> PairFrames:
    """Read one pair in its annotation frame: mask, instances, valid, and the frames in ``arrays``.

    Parameters
    ----------
    ws : Workspace
    pair_row : dict or str
        A pairs.csv row (or a pair id).
    rec : dict, optional
        Its recordings.csv row; when omitted, a pair without an RGB frame counts as a thermal
        camera alone.
    class_names : sequence of str
        Label list (default ``__ignore__``, ``_background_``, ``gas``).
    unlabelled : {'error', 'background'}
        What a pair without a LabelMe document gives: a :class:`FormatError` (default), or an
        all-background mask.
    arrays : sequence of {'rgb', 'thermal'}
        Frames to read besides the masks. The thermal frame keeps its bit depth; the RGB frame is
        resized to the annotation frame when their sizes differ (``INTER_AREA`` to shrink).
    keep_bytes : bool
        Keep the source PNG bytes whose pixels equal the arrays (``files``).

    Raises
    ------
    FormatError
        An unlabelled pair (by default), an invalid document, an unknown label, a document whose
        size differs from the annotation frame, missing frames, or an RGB + thermal pair that is
        not aligned while its RGB frame is asked for.
    """
    if unlabelled not in _UNLABELLED:
        raise ValueError(f"unlabelled must be one of {_UNLABELLED}, got {unlabelled!r}")
    bad = [a for a in arrays if a not in ("rgb", "thermal")]
    if bad:
        raise ValueError(f"arrays must be a subset of ('rgb', 'thermal'), got {bad}")
    row = _row(ws, pair_row)
    pid = row.get("pair_id", "?")
    if rec is None:  # a thermal camera alone has no RGB frames: the pair row says enough (no index read)
        rec = {"id": row.get("recording", ""), "rgb": row.get("rgb", "")}
    modality = recording_modality(rec)
    kind = views.source_kind(rec, row)
    if modality != "thermal" and kind != "aligned" and "rgb" in arrays:
        raise FormatError(f"pair {pid} has no aligned thermal frame, so RGB and thermal are in different frames",
                          file=ws.root / ws.PAIRS, field="aligned",
                          fix="run `gasdb calibrate` and `gasdb align`, then `gasdb preannotate`")
    files: dict = {}
    thermal = None
    valid = None
    if kind == "aligned" and row.get("valid"):
        valid, files["valid"] = _read_png(ws.path(row["valid"]), keep=keep_bytes)
        if valid.ndim != 2 or valid.dtype != np.uint8:
            raise FormatError(f"valid mask must be single-channel uint8, got {valid.dtype} {valid.shape}",
                              file=ws.path(row["valid"]), fix="rerun `gasdb align`")
    if "thermal" in arrays or valid is None:
        rel = row.get(kind) or ""
        if not rel:
            raise FormatError(f"pair {pid} has no {kind} thermal frame", file=ws.root / ws.PAIRS, field=kind,
                              fix="rerun `gasdb extract`" if kind == "thermal" else "rerun `gasdb align`")
        thermal, data = _read_png(ws.path(rel), keep=keep_bytes)
        if thermal.ndim == 3:
            raise FormatError(f"{kind} thermal frame has {thermal.shape[2]} channels; expected one",
                              file=ws.path(rel), fix="re-extract the recording (single-channel thermal)")
        if thermal.dtype not in (np.uint8, np.uint16):
            raise FormatError(f"thermal frames must be 8- or 16-bit, got {thermal.dtype}", file=ws.path(rel))
        files["thermal"] = data
        if valid is None:
            valid = np.full(thermal.shape, 255, np.uint8)
            files["valid"] = None
        elif thermal.shape != valid.shape:
            raise FormatError(f"valid mask {valid.shape} does not match the aligned frame {thermal.shape}",
                              file=ws.path(row["valid"]), fix="rerun `gasdb align --force`")
    frame_name = "aligned frame" if kind == "aligned" else "thermal frame"
    label_rel = row.get("label") or ""
    doc = label_path = None
    if not label_rel:
        if unlabelled == "error":
            raise FormatError(f"pair {pid} has no LabelMe annotation", file=ws.root / ws.PAIRS, field="label",
                              fix="annotate it (gasdb preannotate / gasdb label), blacklist it, or leave it out")
        cls = np.zeros(valid.shape, dtype=np.uint8)
        ins = np.zeros(valid.shape, dtype=np.int32)
    else:
        label_path = ws.path(label_rel)
        doc = labelme_format.read(label_path)
        cls, ins, _ = labelme_format.rasterize_instances(doc, class_names, file=label_path)
        if valid.shape != cls.shape:
            raise FormatError(f"annotation is {cls.shape[1]}x{cls.shape[0]} but the {frame_name} is "
                              f"{valid.shape[1]}x{valid.shape[0]} (width x height)", file=label_path,
                              field="imageHeight", fix=f"annotate the {frame_name} (rerun gasdb preannotate)")
    cls[valid == 0] = labelme_format.IGNORE_INDEX
    ins[valid == 0] = 0
    rgb = native = None
    if "rgb" in arrays and modality != "thermal":
        if not row.get("rgb"):
            raise FormatError(f"pair {pid} has no RGB frame", file=ws.root / ws.PAIRS, field="rgb",
                              fix="rerun `gasdb extract`")
        rgb, data = _read_png(ws.path(row["rgb"]), mode="unchanged", keep=keep_bytes)
        if rgb.ndim == 2:
            rgb, data = np.repeat(rgb[:, :, None], 3, axis=2), None
        elif rgb.shape[2] == 4:
            rgb, data = np.ascontiguousarray(rgb[:, :, :3]), None
        if rgb.dtype != np.uint8:
            from gasdb_tools.imaging import to_uint8

            rgb, data = to_uint8(rgb), None
        native = (int(rgb.shape[1]), int(rgb.shape[0]))
        if rgb.shape[:2] != cls.shape:
            rgb, data = _resize(rgb, (cls.shape[1], cls.shape[0])), None
        files["rgb"] = data
    return PairFrames(pair_id=pid, recording=row.get("recording", ""), modality=modality, thermal_source=kind,
                      mask=cls, instances=ins, valid=valid, thermal=thermal, rgb=rgb, rgb_native=native, doc=doc,
                      label_path=label_path, files=files if keep_bytes else {})


def recording_stretches(ws, recordings: Iterable[str], index=None) -> dict[str, views.Stretch]:
    """The one contrast stretch of each recording (:func:`gasdb_tools.views.recording_stretch`), read-only."""
    index = index or ws.read_index()
    out = {}
    for rec in sorted(set(recordings)):
        row = index.recordings.get(rec, {"id": rec})
        out[rec] = views.recording_stretch(ws, row, index.pairs_of(rec))[0]
    return out


def annotation_view(frames: PairFrames, stretch: views.Stretch) -> tuple[bytes, str]:
    """PNG bytes of the image annotators saw for a pair, and where it came from.

    The image the LabelMe document opens (``imagePath``; an 8-bit view in the annotation frame,
    copied byte for byte), else the thermal frame through the recording's stretch
    (:func:`gasdb_tools.views.apply_stretch`). Returns ``(png_bytes, "document" | "stretch")``.
    """
    if frames.doc is not None and frames.label_path is not None:
        path, _ = labelme_format.image_file(frames.doc, frames.label_path)
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        # 8-bit (gray, gray+alpha, RGB or RGBA) PNG of the annotation frame's size, read from its header
        if len(data) > 26 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data[24] == 8 \
                and data[25] in (0, 2, 4, 6) and (int.from_bytes(data[16:20], "big"),
                                                  int.from_bytes(data[20:24], "big")) == frames.size:
            return data, "document"
    if frames.thermal is None:
        raise ValueError("annotation_view needs the thermal frame (read_pair(..., arrays=('thermal',)))")
    return encode_png(views.apply_stretch(frames.thermal, stretch), compression=1), "stretch"


def _pair_arrays(ws, pair_row: Mapping, class_names: Sequence[str], unlabelled: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    frames = read_pair(ws, pair_row, class_names=class_names, unlabelled=unlabelled, arrays=())
    return frames.mask, frames.instances


def pair_mask(ws, pair_row, class_names: Sequence[str] = DEFAULT_CLASS_NAMES, *,
              unlabelled: str = "error") -> np.ndarray:
    """A pair's class-index mask in its annotation frame: uint8 (H, W), 0 bg, 1 gas, 255 ignore.

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
        document whose size differs from the annotation frame's.
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
        The files written, in pair id order. Each mask is at its pair's annotation frame size.
    """
    from gasdb_tools.imaging import write_image

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

    Images are numbered 1..N in pair id order, each at its own annotation frame size;
    ``file_name`` is the workspace path of the image annotators saw (the LabelMe document's
    ``imagePath``), and each image entry also carries ``pair_id``, ``recording``, ``modality``,
    ``rgb`` (the RGB frame's workspace path, "" for a thermal camera alone) and ``thermal``.
    Instances are LabelMe's ``(label, group_id)`` groups restricted to gas pixels; the ignored
    pixels (255) of an image form one ``iscrowd`` 1 region (COCOeval ignores what overlaps it).
    A release writes COCO folders that hold their images (:mod:`gasdb_tools.release`).

    Returns
    -------
    Path
        ``out_json``.
    """
    rows = select_pairs(ws, pairs)
    _check_all(ws, rows, class_names, "coco")
    index = ws.read_index()
    images, annotations = [], []
    for image_id, row in enumerate(progress(rows, desc="export coco", unit="pair"), start=1):
        rec = index.recordings.get(row.get("recording", ""), {"id": row.get("recording", "")})
        frames = read_pair(ws, row, rec, class_names=class_names, arrays=())
        shown = ""
        if frames.doc is not None:
            path, _ = labelme_format.image_file(frames.doc, frames.label_path)
            shown = ws.rel(path) if path.is_file() else ""
        rgb = row.get("rgb", "") if frames.modality != "thermal" else ""
        images.append(coco_mod.make_image(image_id, shown or row.get(frames.thermal_source, ""), *frames.mask.shape,
                                          pair_id=row["pair_id"], recording=row.get("recording", ""),
                                          modality=frames.modality, rgb=rgb, thermal=row.get(frames.thermal_source, "")))
        for ann in coco_mod.mask_annotations(frames.mask, frames.instances):
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id})
    doc = coco_mod.build_coco(images, annotations, info={"description": f"gasdb-tools export of {ws.root.name}",
                                                         "workspace": ws.root.name,
                                                         "file_names": "relative to the workspace"})
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


def gasdb_thermal(ws, frames: PairFrames, row: Mapping, thermal: str, stretch: views.Stretch) -> np.ndarray:
    """The 8-bit thermal channel of a pair's Gas-DB image: the annotation-frame thermal through the
    recording's stretch (``thermal='aligned'``), or the enhanced frame (``thermal='enhanced'``)."""
    if thermal == "enhanced":
        rel = row.get("enhanced") or ""
        if not rel:
            raise FormatError(f"pair {row['pair_id']} has no enhanced thermal frame", field="enhanced",
                              fix="run `gasdb enhance` first")
        th = read_image(ws.path(rel), mode="gray")
        if th.shape != frames.mask.shape:
            raise FormatError(f"enhanced frame is {th.shape[1]}x{th.shape[0]}, the annotation frame "
                              f"{frames.size[0]}x{frames.size[1]}", file=ws.path(rel), fix="rerun `gasdb enhance`")
        return th if th.dtype == np.uint8 else views.apply_stretch(th, stretch)
    return views.apply_stretch(frames.thermal, stretch)


def export_gasdb(ws, out_dir, *, splits: dict[str, list[str]] | None = None,
                 names: dict[str, str] | None = None, thermal: str = "aligned", ignore_value: int = 0,
                 class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> dict:
    """Write the Gas-DB / RT-CAN folder layout (images, labels, ignore, train.txt, test.txt, blacklist.txt).

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
        Which thermal frame goes into channel 3 (both are in the annotation frame): the one the
        pair is annotated on (aligned, or the thermal frame of a thermal camera alone) mapped to 8
        bits with the recording's one stretch (:mod:`gasdb_tools.views`), or the enhanced frame.
    ignore_value : int
        What ignore pixels (255: outside the thermal view, or ``__ignore__``) become in
        ``labels/``. The official loader expects 0/1 only, hence 0 (background) by default; pass
        255 to keep them. ``ignore/<name>.png`` (255 = ignore) always records them.

    Returns
    -------
    dict
        ``{"out_dir", "samples", "splits": {name: count}, "blacklisted": {name: reason},
        "names": {pair_id: name}, "ignored_pixels", "size": [H, W] or None (mixed sizes),
        "sizes": {"WxH": samples}, "modalities": {modality: samples}, "rgb_resized": samples,
        "warnings": [...]}``.

    Notes
    -----
    Frames keep their recording's size (no resizing between recordings). Pairs of a thermal
    camera alone have RGB = 0. Labelled blacklisted pairs are written as samples (as in Gas-DB)
    and listed in ``blacklist.txt``, never in a split list. ``index.csv`` maps every name to its
    pair id, recording, split, blacklist reason, modality and the RGB frame's size before resizing.
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
        rec = index.recordings.get(row["recording"], {"id": row["recording"]})
        unl = "background" if row["pair_id"] in black else "error"
        frames = read_pair(ws, row, rec, class_names=class_names, unlabelled=unl, arrays=())
        need = [] if frames.modality == "thermal" else ["rgb"]
        if thermal == "enhanced":
            need.append("enhanced")
        for col in need:
            if not row.get(col) or not ws.path(row[col]).is_file():
                raise FormatError(f"pair {row['pair_id']} has no {col} frame on disk",
                                  file=ws.path(row.get(col) or "."), field=col,
                                  fix="rerun `gasdb enhance`" if col == "enhanced" else "rerun `gasdb extract`")
    stretch = recording_stretches(ws, {r["recording"] for r in rows}, index)

    # pass 2: write
    out_dir = Path(out_dir)
    ignored, sizes, mods, resized = 0, Counter(), Counter(), 0
    extra = {}
    for row in progress(rows, desc="export gasdb", unit="pair"):
        pid = row["pair_id"]
        rec = index.recordings.get(row["recording"], {"id": row["recording"]})
        frames = read_pair(ws, row, rec, class_names=class_names,
                           unlabelled="background" if pid in black else "error")
        th8 = gasdb_thermal(ws, frames, row, thermal, stretch[row["recording"]])
        ignore = frames.mask == labelme_format.IGNORE_INDEX
        ignored += int(ignore.sum())
        label = frames.mask.copy()
        label[ignore] = ignore_value
        for rel, data in gasdb_layout.encode_sample(frames.rgb_or_zeros(), th8, label, ignore=ignore).items():
            atomic_write_bytes(out_dir / rel.format(name=names[pid]), data)
        sizes[f"{frames.size[0]}x{frames.size[1]}"] += 1
        mods[frames.modality] += 1
        resized += int(frames.rgb_resized)
        extra[pid] = (frames.modality, "" if not frames.rgb_resized else "{}x{}".format(*frames.rgb_native))
    warn = []
    if set(sizes) - {"640x512"}:
        warn.append(f"frame sizes {', '.join(f'{s} ({n})' for s, n in sorted(sizes.items()))}: the official loader "
                    "resizes every frame to 640x512 (Gas-DB's size)")
    if mods.get("thermal"):
        warn.append(f"{mods['thermal']} sample(s) come from a thermal camera alone: their RGB channels are 0")

    split_of = {p: s for s, ids in splits.items() for p in ids}
    lists = {s: [names[p] for p in ids if p not in black] for s, ids in splits.items()}
    for required in ("train", "test"):
        lists.setdefault(required, [])
    black_names = {names[p]: black[p] or "no reason given" for p in pair_ids if p in black}
    gasdb_layout.write_layout_lists(out_dir, lists, black_names)
    index_rows = [[names[p], p, index.pairs[p]["recording"], "" if p in black else split_of.get(p, ""),
                   black.get(p, ""), *extra[p]] for p in sorted(pair_ids, key=lambda p: names[p])]
    gasdb_layout.write_index(out_dir, index_rows)
    one = list(sizes)[0] if len(sizes) == 1 else None
    return {
        "out_dir": str(out_dir),
        "samples": len(rows),
        "splits": {s: len(v) for s, v in sorted(lists.items())},
        "blacklisted": dict(sorted(black_names.items())),
        "names": {p: names[p] for p in pair_ids},
        "ignored_pixels": ignored,
        "size": [int(one.split("x")[1]), int(one.split("x")[0])] if one else None,
        "sizes": dict(sorted(sizes.items())),
        "modalities": dict(sorted(mods.items())),
        "rgb_resized": resized,
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
