"""Score a segmentation submission against a Gas-DB release, exactly as the Gas-DB paper reports.

For each ground-truth id in sorted order, the submitted mask is checked and decoded
(:mod:`gasdb_tools.submission`) and its 2×2 confusion matrix against the ground truth is added to
one int64 total (:func:`gasdb_tools.metrics.confusion`); the metrics come from that total
(``docs/reference-models.md`` §8, ``docs/formats.md`` §6.2). Reading, decoding, hashing and
counting run in one process per core (this one and forked ones, :func:`_map_chunks`); the result
is the same for any number of processes. Plain 8-bit gray mask PNGs are inflated in one call
(zlib, or libdeflate when the ``deflate`` package is installed; submitted masks with libdeflate
only): two-valued masks whose rows are filtered None or Up (ours) are then counted on packed bits
(:func:`gasdb_tools.submission.decode_png_bits`, :func:`gasdb_tools.metrics.confusion_packed`,
no image is built), other None/Sub/Up masks are unfiltered whole
(:func:`gasdb_tools.submission.decode_png_gray8`), and any other PNG goes to OpenCV as before,
with the same pixels and verdicts. zlib 1.2's inflate, which libpng calls row by row, takes
most of the time of ``cv2.imdecode`` on masks.

The result is a deterministic JSON-ready dict (no wall-clock data, sorted keys when dumped):
schema and tool versions, the confusion matrix, metrics at full precision and a 2-decimal percent
view, optional per-image rows and per-scene/per-recording breakdowns, the sha256 of the ground
truth and of the submission, and warnings. Adapters turn it into CodaLab ``scores.txt``,
Codabench ``scores.json`` and an EvalAI result dict.

Ground truth (``gt``) may be

* a release root: ``gasdb/labels/<name>.png`` (0/1), ``gasdb/<split>.txt`` (names) and
  ``index.csv`` (``name, pair_id, recording, scene, split``) at the root;
* an RT-CAN data folder itself (``labels/`` + ``<split>.txt``; ``index.csv`` in it or beside it);
* a plain folder of ``<id>.png`` masks (0/1, 255 = ignored), all scored; an optional
  ``index.csv`` (column ``name`` or ``id``) in it or beside it enables ``by``.

As RT-CAN's loader does, names listed in ``blacklist.txt`` next to the split list are not scored.

**Ignore pixels.** A release keeps 0/1 labels for RT-CAN's loader and the pixels that are not
scored (outside the thermal view, or drawn as ``__ignore__``) in ``ignore/<id>.png`` beside
``labels/``. By default those pixels (and 255 in a masks folder) are left out of the confusion
matrix; ``count_ignore=True`` scores them as background, exactly as RT-CAN's official code does
(its labels hold 0 there and it has no ignore class).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import multiprocessing
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from gasdb_tools import __version__
from gasdb_tools.errors import FormatError, SubmissionError
from gasdb_tools.fsutil import atomic_write_bytes, read_file, sha256_bytes
from gasdb_tools.imaging import decode_image, encode_png
from gasdb_tools.metrics import METRICS, confusion, confusion_packed, per_image_means, scores
from gasdb_tools.submission import (InvalidSubmissionError, SubmissionLimits, decode_mask, decode_png_bits,
                                   decode_png_gray8, open_submission, png_header)

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "BY_COLUMNS",
    "GroundTruth",
    "load_ground_truth",
    "score",
    "default_workers",
    "percent_view",
    "format_table",
    "to_codalab",
    "to_codabench",
    "to_evalai",
    "evaluate",
    "write_example_submission",
    "score_demo",
]

SCHEMA = "gasdb-score"
SCHEMA_VERSION = 1
#: Columns of ``index.csv`` a result can be broken down by.
BY_COLUMNS = ("scene", "recording")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_UNINDEXED = "(not in index.csv)"
_CHUNK = 16  # ids per task
_MIN_FORK_IDS = 128  # fewer ids are scored in one process


# --------------------------------------------------------------------------- ground truth

@dataclass
class GroundTruth:
    """Where the ground-truth masks of one split are, and their optional index rows.

    Attributes
    ----------
    root : Path
        The path given.
    kind : {'release', 'rtcan', 'masks'}
    split : str or None
        The split scored (``None`` for a plain masks folder: every mask is scored).
    ids : list of str
        Sorted ids (file stems) to score.
    label_dir : Path
        Folder of ``<id>.png``.
    index : dict or None
        id → ``index.csv`` row (a dict of strings).
    index_path : Path or None
    warnings : list of str
    """

    root: Path
    kind: str
    split: str | None
    ids: list
    label_dir: Path
    index: dict | None = None
    index_path: Path | None = None
    warnings: list = field(default_factory=list)
    ignore_dir: Path | None = None

    def label_path(self, id_: str) -> Path:
        return self.label_dir / f"{id_}.png"


def _read_names(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise FormatError("split list is not UTF-8 text", file=path, fix="save it as UTF-8") from None
    names = [line.strip() for line in lines if line.strip()]
    for i, name in enumerate(names):
        if not _NAME_RE.match(name):
            raise FormatError(f"bad sample name {name!r} (letters, digits, '.', '_', '-' only)", file=path,
                              field=f"line {i + 1}", fix="list one file stem per line")
    return names


def _read_index(path: Path) -> dict:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            header = rows[0].keys() if rows else []
    except UnicodeDecodeError:
        raise FormatError("index is not UTF-8 text", file=path, fix="save it as UTF-8") from None
    key = "name" if "name" in header else "id" if "id" in header else None
    if rows and key is None:
        raise FormatError("index.csv has no 'name' (or 'id') column", file=path,
                          fix="add a column naming each mask's file stem")
    index = {}
    for i, row in enumerate(rows):
        name = (row.get(key) or "").strip()
        if name in index:
            raise FormatError(f"name {name!r} listed twice", file=path, field=f"row {i + 2}",
                              fix="keep one row per sample")
        index[name] = {k: (v or "").strip() for k, v in row.items() if k is not None}
    return index


def load_ground_truth(path, *, split: str = "test", need_columns=()) -> GroundTruth:
    """Find the ground-truth masks and ids of ``split`` under ``path`` (see the module docstring).

    ``need_columns``: of the candidate ``index.csv`` files (in the folder, then beside it), the
    first one that has these columns is used (else the first one found).

    Raises
    ------
    FormatError
        When ``path`` is none of the known layouts, the split list is missing or malformed, or a
        listed label file does not exist.
    """
    root = Path(path)
    if not root.is_dir():
        raise FormatError("ground truth not found (expected a release or a masks folder)", file=root,
                          fix="pass a release folder (with gasdb/labels/) or a folder of <id>.png masks")
    if (root / "gasdb" / "labels").is_dir():
        kind, data_dir, index_candidates = "release", root / "gasdb", [root / "index.csv"]
    elif (root / "labels").is_dir() and any(root.glob("*.txt")):
        kind, data_dir, index_candidates = "rtcan", root, [root / "index.csv", root.parent / "index.csv"]
    else:
        kind, data_dir, index_candidates = "masks", root, [root / "index.csv", root.parent / "index.csv"]

    warnings: list[str] = []
    if kind == "masks":
        label_dir = root
        ids = sorted(p.stem for p in root.iterdir()
                     if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file())
        if not ids:
            raise FormatError("no <id>.png masks (and no gasdb/labels/ folder)", file=root,
                              fix="pass a release folder or a folder of ground-truth masks")
        split_name = None
    else:
        label_dir = data_dir / "labels"
        split_file = data_dir / f"{split}.txt"
        if not split_file.is_file():
            have = sorted(p.stem for p in data_dir.glob("*.txt") if p.stem != "blacklist")
            raise FormatError(f"no split list for split {split!r}", file=split_file,
                              fix=f"choose one of {have}" if have else "run `gasdb release` again")
        names = _read_names(split_file)
        if len(set(names)) != len(names):
            warnings.append(f"{split_file.name} lists {len(names) - len(set(names))} name(s) twice; each scored once")
        blacklist_file = data_dir / "blacklist.txt"
        blacklisted = set(_read_names(blacklist_file)) if blacklist_file.is_file() else set()
        dropped = sorted(set(names) & blacklisted)
        if dropped:
            warnings.append(f"{len(dropped)} name(s) of {split_file.name} are in blacklist.txt and were not scored "
                            f"(as RT-CAN's loader does): {', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}")
        ids = sorted(set(names) - blacklisted)
        if not ids:
            raise FormatError(f"split {split!r} lists no samples", file=split_file)
        split_name = split
    bad = [i for i in ids if not _NAME_RE.match(i)]
    if bad:
        raise FormatError(f"bad mask name(s) {bad[:5]}", file=label_dir, fix="rename to letters, digits, '.', '_', '-'")

    index_path, index = None, None
    for candidate in (p for p in index_candidates if p.is_file()):
        rows = _read_index(candidate)
        has = set(next(iter(rows.values()), {}))
        if index_path is None or set(need_columns) <= has:
            index_path, index = candidate, rows
        if set(need_columns) <= has:
            break
    ignore_dir = label_dir.parent / "ignore" if kind != "masks" and (label_dir.parent / "ignore").is_dir() else None
    return GroundTruth(root=root, kind=kind, split=split_name, ids=ids, label_dir=label_dir, index=index,
                       index_path=index_path, warnings=warnings, ignore_dir=ignore_dir)


# --------------------------------------------------------------------------- scoring

def percent_view(metrics: dict) -> dict:
    """The metric blocks of :func:`gasdb_tools.metrics.scores` as percentages rounded to 2 decimals."""
    def pct(v):
        return None if v is None else round(100.0 * v, 2)

    out = {block: {k: pct(metrics[block][k]) for k in METRICS} for block in ("gas", "background", "mean")}
    out["pixel_accuracy"] = pct(metrics["pixel_accuracy"])
    return out


def _summary(cm: np.ndarray) -> dict:
    s = scores(cm)
    metrics = {k: s[k] for k in ("gas", "background", "mean", "pixel_accuracy")}
    return {"confusion": {k: s[k] for k in ("tn", "fp", "fn", "tp")}, "n_pixels": s["n_pixels"],
            "metrics": metrics, "percent": percent_view(metrics)}


def _digest(lines: list[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
    return h.hexdigest()


def score(gt, submission, *, split: str = "test", per_image: bool = False, by=None, binary_255: bool = False,
          allow_missing: bool = False, limits: SubmissionLimits | None = None, workers: int | None = None,
          count_ignore: bool = False) -> dict:
    """Score a submission folder or zip against a release (or a masks folder).

    Parameters
    ----------
    gt : str or os.PathLike
        A release root, an RT-CAN data folder or a folder of ground-truth ``<id>.png`` masks.
    submission : str or os.PathLike
        A folder or ``.zip`` of ``<id>.png`` (see :mod:`gasdb_tools.submission`).
    split : str
        Which split list of a release to score (``gasdb/<split>.txt``); ignored for a masks folder.
    per_image : bool
        Add per-image rows (gas-class values) and per-image means (secondary; undefined IoU excluded).
    by : str or sequence of str, optional
        ``"scene"`` and/or ``"recording"``: add a breakdown per value of that ``index.csv`` column.
    binary_255 : bool
        Submitted masks are 0/255 instead of 0/1.
    allow_missing : bool
        Development mode: score missing masks as all background, with a warning.
    limits : SubmissionLimits, optional
        Safety caps for the submission.
    workers : int, optional
        Processes that read, decode and count the masks (default: every core, :func:`default_workers`);
        one (this process) for fewer than 128 ids, where there is no ``fork`` (Windows), or when
        this process runs other Python threads. The result does not depend on it: counts are
        exact integers summed in id order.
    count_ignore : bool
        Score ignore pixels as background (RT-CAN's official protocol, which has no ignore) instead
        of leaving them out (the default).

    Returns
    -------
    dict
        JSON-ready and deterministic: ``schema``, ``schema_version``, ``tool``, ``split``, ``n_images``,
        ``n_pixels``, ``confusion`` ``{tn, fp, fn, tp}``, ``confusion_matrix`` ``[[tn, fp], [fn, tp]]``,
        ``metrics`` (full precision; gas ``acc`` is the recall, Gas-DB's "Acc"), ``percent`` (2 decimals),
        ``ground_truth`` and ``submission`` (name, kind, content sha256), ``warnings``, and optionally
        ``by``, ``per_image``, ``per_image_mean``.

    Raises
    ------
    InvalidSubmissionError
        When any submitted file fails a check; every problem is listed (``.errors``, ``.report``).
    SubmissionError
        When the submission cannot be opened at all or breaks a safety cap.
    FormatError
        When the ground truth is missing or malformed.
    ValueError
        For an unknown ``by`` column.

    Notes
    -----
    sha256 values are of the content: the hash of the lines ``<id>\\t<sha256 of the file>\\n`` in id
    order, so a folder and a zip of the same masks hash alike (``archive_sha256`` is the zip's own).
    """
    by_cols = _check_by(by)
    truth = load_ground_truth(gt, split=split, need_columns=by_cols)
    for col in by_cols:
        if truth.index is None:
            raise FormatError(f"breaking down by {col!r} needs an index.csv", file=truth.root,
                              fix="score a release (it has index.csv) or put an index.csv beside the masks")
        first = next(iter(truth.index.values()), {})
        if col not in first:
            raise FormatError(f"index.csv has no {col!r} column", file=truth.index_path,
                              fix=f"choose --by from the columns {sorted(first)}")

    ids = truth.ids
    with open_submission(submission, ids=ids, limits=limits, allow_missing=allow_missing) as sub:
        wanted = [i for i in ids if i in sub.files or i in sub.missing]
        n_workers = max(1, min(int(workers or default_workers()), len(wanted) or 1))
        chunks = [wanted[k:k + _CHUNK] for k in range(0, len(wanted), _CHUNK)]
        work = partial(_score_chunk, truth=truth, sub=sub, binary_255=binary_255, count_ignore=count_ignore)
        results = _map_chunks(work, chunks, n_workers, sub)

        gt_errors = [r[3] for r in results if r[3] is not None]
        if gt_errors:
            raise gt_errors[0]
        file_errors = [r[2] for r in results if isinstance(r[2], SubmissionError)]
        errors = list(sub.errors) + file_errors
        warnings = list(truth.warnings) + list(sub.warnings)
        if errors:
            raise InvalidSubmissionError(errors, warnings=warnings, file=sub.path)
        kind, archive_sha, sub_name = sub.kind, sub.archive_sha256, sub.path.name

    cms = np.stack([r[0] for r in results]).astype(np.int64)
    total = cms.sum(axis=0)
    summary = _summary(total)
    result = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "gasdb-tools", "version": __version__},
        "split": truth.split,
        "n_images": len(ids),
        "n_pixels": summary["n_pixels"],
        "confusion": summary["confusion"],
        "confusion_matrix": total.tolist(),
        "metrics": summary["metrics"],
        "percent": summary["percent"],
        "ground_truth": {"name": truth.root.name, "kind": truth.kind, "n_ids": len(ids),
                         "ignore": "scored as background (count_ignore)" if count_ignore else
                         "excluded" + (" (ignore/ masks)" if truth.ignore_dir is not None else ""),
                         "sha256": _digest([f"{i}\t{r[1]}\n" for i, r in zip(ids, results)])},
        "submission": {"name": sub_name, "kind": kind, "binary_255": bool(binary_255),
                       "sha256": _digest([f"{i}\t{r[2]}\n" for i, r in zip(ids, results)]),
                       "archive_sha256": archive_sha},
        "warnings": warnings,
    }
    groups = {col: [(truth.index.get(i) or {}).get(col) or _UNINDEXED for i in ids] for col in by_cols}
    for col in by_cols:
        unindexed = sum(g == _UNINDEXED for g in groups[col])
        if unindexed:
            warnings.append(f"{unindexed} scored id(s) are not in index.csv; grouped as {_UNINDEXED!r} for --by {col}")
        values = np.array(groups[col], dtype=object)
        result.setdefault("by", {})[col] = {
            g: {"n_images": int(np.count_nonzero(values == g)), **_summary(cms[values == g].sum(axis=0))}
            for g in sorted(set(groups[col]))}
    if per_image:
        rows = []
        for k, id_ in enumerate(ids):
            s = scores(cms[k])
            row = {"id": id_, **{c: s[c] for c in ("tn", "fp", "fn", "tp")},
                   **{m: s["gas"][m] for m in ("precision", "recall", "iou", "f1", "f2")}}
            for col in by_cols:
                row[col] = groups[col][k]
            rows.append(row)
        result["per_image"] = rows
        result["per_image_mean"] = per_image_means(cms)
    return result


def _map_chunks(work, chunks: list, n_workers: int, sub) -> list:
    """``work`` over ``chunks``, flattened in their order, on ``n_workers`` processes (this one and forked ones).

    Processes, not threads: the per-mask work is many short numpy calls, and a thread would wait
    for the GIL between them (two threads ran no faster than one). The children are forked, so
    nothing but the ids and the results (small confusion matrices and hashes) cross a pipe; each
    child opens its own handle on a zip (:meth:`Submission.reopen`). Chunks are dealt round-robin
    and put back in order, so the result does not depend on ``n_workers``. A child that dies has
    its share done here. Everything runs in this process where there is no fork (Windows), for
    fewer than ``_MIN_FORK_IDS`` ids (a fork costs more than it saves), or while this process
    runs other Python threads (a lock one of them holds would stay locked in a child; Python
    3.12+ warns about such forks). The library threads of numpy and OpenCV are idle at a fork
    and never used by a child (PNG decoding is single-threaded), as in ``gasdb release``.
    """
    n_ids = sum(len(c) for c in chunks)
    if (n_workers <= 1 or n_ids < _MIN_FORK_IDS or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        return [r for chunk in chunks for r in work(chunk)]
    ctx = multiprocessing.get_context("fork")
    n = min(n_workers, len(chunks))
    shares = [chunks[i::n] for i in range(n)]
    children = []
    try:
        for share in shares[1:]:
            receive, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_child, args=(send, work, share, sub), daemon=True)
            child.start()
            send.close()
            children.append((receive, child))
        parts = [[work(chunk) for chunk in shares[0]]]
        for (receive, child), share in zip(children, shares[1:]):
            try:
                parts.append(receive.recv())
            except EOFError:  # the child died (killed, out of memory): its share is done here
                parts.append([work(chunk) for chunk in share])
    finally:  # on an error here too: no child outlives the call
        for receive, child in children:
            receive.close()
            if child.is_alive():
                child.terminate()
            child.join()
    return [r for j in range(len(chunks)) for r in parts[j % n][j // n]]


def _child(send, work, share: list, sub) -> None:
    """A forked scoring process: its share of the chunks, sent back through ``send``."""
    sub.reopen()
    send.send([work(chunk) for chunk in share])
    send.close()


def _score_chunk(ids: list, *, truth: GroundTruth, sub, binary_255: bool, count_ignore: bool) -> list:
    return [_score_one(id_, truth, sub, binary_255, count_ignore) for id_ in ids]


_buffers = threading.local()  # per scoring thread: two frame buffers the masks are decoded into


_MAX_BUFFER_PIXELS = 1 << 22  # larger (or headerless) masks are decoded into fresh arrays (a thread keeps <= 8 MB)


def _frame_buffers(shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """This thread's (ground truth, prediction) buffers of ``shape``, reused from mask to mask.

    Fresh frame-sized arrays cost more than decoding into them: the allocator hands their pages
    back to the system when they are freed, and every new one faults them in again.
    """
    if not 0 < shape[0] * shape[1] <= _MAX_BUFFER_PIXELS:
        return None, None
    pair = getattr(_buffers, "pair", None)
    if pair is None or pair[0].shape != shape:
        pair = _buffers.pair = (np.empty(shape, np.uint8), np.empty(shape, np.uint8))
    return pair


def _score_one(id_: str, truth: GroundTruth, sub, binary_255: bool, count_ignore: bool):
    """``(confusion, gt sha256, submission sha256 or its SubmissionError, ground-truth error)`` of one id.

    Two-valued masks filtered None or Up (ours) are counted on their packed bits
    (:func:`gasdb_tools.submission.decode_png_bits`, :func:`gasdb_tools.metrics.confusion_packed`);
    any other ground truth or ignore mask is decoded whole (:func:`_score_arrays`), with the same counts.
    """
    gt_path = os.path.join(truth.label_dir, f"{id_}.png")  # == str(truth.label_path(id_)), without pathlib's cost
    try:
        gt_bytes = read_file(gt_path)
    except OSError:
        return None, None, None, FormatError("ground-truth mask not readable", file=gt_path,
                                             fix="check the release with `gasdb verify`")
    ignore_path, ignore_bytes = None, None
    if not count_ignore and truth.ignore_dir is not None:
        ignore_path = os.path.join(truth.ignore_dir, f"{id_}.png")
        try:
            ignore_bytes = read_file(ignore_path)
        except OSError:  # reported after the ground truth's own problems, as the whole-mask path does
            pass
    shape = _png_size(gt_bytes)
    gt_bits = decode_png_bits(gt_bytes) if shape[0] * shape[1] else None
    ignore_bits = None
    if gt_bits is not None and ignore_bytes is not None:
        ignore_bits = decode_png_bits(ignore_bytes) if _png_size(ignore_bytes) == shape else None
    if gt_bits is None or (ignore_path is not None and ignore_bits is None):
        return _score_arrays(id_, truth, sub, binary_255, count_ignore, gt_path, gt_bytes, ignore_path, ignore_bytes)
    gt_sha = sha256_bytes(gt_bytes if ignore_bits is None else gt_bytes + ignore_bytes)
    if id_ in sub.files:
        try:
            data = sub.read(id_)
            pred = decode_mask(data, shape=shape, name=sub.display_name(id_), binary_255=binary_255, packed=True)
        except SubmissionError as exc:
            return None, gt_sha, exc, None
        sub_sha = sha256_bytes(data)
    else:
        pred, sub_sha = np.zeros_like(gt_bits), "-"
    return confusion_packed(gt_bits, pred, n_pixels=shape[0] * shape[1], ignore=ignore_bits), gt_sha, sub_sha, None


def _score_arrays(id_: str, truth: GroundTruth, sub, binary_255: bool, count_ignore: bool, gt_path: str,
                  gt_bytes: bytes, ignore_path: str | None, ignore_bytes: bytes | None):
    """:func:`_score_one` on whole decoded masks (any PNG OpenCV reads, 255 = ignored in the ground truth).

    The masks live in this thread's reused buffers until the confusion is counted: no mask
    outlives the call.
    """
    gt_buffer, pred_buffer = _frame_buffers(_png_size(gt_bytes))
    try:
        gt_mask = _decode_truth(gt_bytes, gt_path, out=gt_buffer)
    except FormatError as exc:
        return None, None, None, exc
    if gt_mask.ndim != 2:
        return None, None, None, FormatError(f"ground-truth mask has shape {gt_mask.shape}, expected 2-D",
                                             file=gt_path)
    if count_ignore:
        np.putmask(gt_mask, gt_mask == 255, 0)
    elif ignore_path is not None:
        try:
            if ignore_bytes is None:
                raise FormatError("not readable", file=ignore_path)
            ignore = _decode_truth(ignore_bytes, ignore_path)
        except FormatError:
            return None, None, None, FormatError("ignore mask missing or unreadable", file=ignore_path,
                                                 fix="check the release with `gasdb verify`, or score with "
                                                     "--count-ignore")
        if ignore.shape != gt_mask.shape:
            return None, None, None, FormatError(f"ignore mask {ignore.shape} differs from the label "
                                                 f"{gt_mask.shape}", file=ignore_path)
        np.putmask(gt_mask, ignore != 0, 255)
        gt_bytes = gt_bytes + ignore_bytes
    gt_sha = sha256_bytes(gt_bytes)
    if id_ in sub.files:
        try:
            data = sub.read(id_)
            pred = decode_mask(data, shape=gt_mask.shape, name=sub.display_name(id_), binary_255=binary_255,
                               out=pred_buffer)
        except SubmissionError as exc:
            return None, gt_sha, exc, None
        sub_sha = sha256_bytes(data)
    else:
        pred, sub_sha = np.zeros(gt_mask.shape, np.uint8), "-"
    try:
        cm = confusion(gt_mask, pred, ignore_index=255)
    except (ValueError, TypeError) as exc:
        return None, None, None, FormatError(f"bad ground-truth mask: {exc}", file=gt_path)
    return cm, gt_sha, sub_sha, None


def _decode_truth(data: bytes, name: str, out: np.ndarray | None = None) -> np.ndarray:
    """A ground-truth (or ignore) mask PNG: the fast path for plain 8-bit gray, else OpenCV."""
    mask = decode_png_gray8(data, out=out)
    return decode_image(data, name=name) if mask is None else mask


def _png_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR, (0, 0) when it has none (the decoder reports why)."""
    try:
        height, width = png_header(data)[:2]
    except ValueError:
        return 0, 0
    return height, width


def default_workers() -> int:
    """Processes :func:`score` uses by default: every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_by(by) -> tuple[str, ...]:
    if by is None:
        return ()
    cols = (by,) if isinstance(by, str) else tuple(by)
    for col in cols:
        if col not in BY_COLUMNS:
            raise ValueError(f"by must be one of {BY_COLUMNS}, got {col!r}")
    return tuple(dict.fromkeys(cols))


# --------------------------------------------------------------------------- views and adapters

def _fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_table(result: dict) -> str:
    """A readable text table of a :func:`score` result (Gas-DB's Acc, IoU, F2 first)."""
    p = result["percent"]
    c = result["confusion"]
    lines = [f"Gas-DB score: {result['submission']['name']} vs {result['ground_truth']['name']}"
             f" (split {result['split'] or 'all'}, {result['n_images']} images, {result['n_pixels']} pixels)",
             "",
             f"{'class':<11}{'Acc(recall)':>12}{'IoU':>8}{'F2':>8}{'Prec.':>8}{'F1':>8}"]
    for block in ("gas", "background", "mean"):
        m = p[block]
        lines.append(f"{block:<11}{_fmt(m['acc']):>12}{_fmt(m['iou']):>8}{_fmt(m['f2']):>8}"
                     f"{_fmt(m['precision']):>8}{_fmt(m['f1']):>8}")
    lines += ["", f"pixel accuracy {_fmt(p['pixel_accuracy'])} %   (Acc above is the gas recall, as in Gas-DB)",
              f"confusion [[TN, FP], [FN, TP]] = [[{c['tn']}, {c['fp']}], [{c['fn']}, {c['tp']}]]"]
    for col, table in result.get("by", {}).items():
        lines += ["", f"{col:<20}{'images':>7}{'Acc':>8}{'IoU':>8}{'F2':>8}"]
        for g, s in table.items():
            m = s["percent"]["gas"]
            lines.append(f"{g:<20}{s['n_images']:>7}{_fmt(m['acc']):>8}{_fmt(m['iou']):>8}{_fmt(m['f2']):>8}")
    if "per_image_mean" in result:
        m = result["per_image_mean"]["gas"]
        lines += ["", f"per-image means (secondary): IoU {_fmt(_pct(m['iou']))} over {m['n_defined']['iou']} "
                      f"images with a defined IoU, F2 {_fmt(_pct(m['f2']))}"]
    for w in result["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def _pct(v):
    return None if v is None else 100.0 * v


def _leaderboard(result: dict, *, digits: int = 4) -> dict:
    """Flat percent columns (gas class unless named), None when undefined."""
    m = result["metrics"]

    def r(v):
        return None if v is None else round(100.0 * v, digits)

    flat = {"acc": r(m["gas"]["acc"]), "iou": r(m["gas"]["iou"]), "f2": r(m["gas"]["f2"]),
            "precision": r(m["gas"]["precision"]), "f1": r(m["gas"]["f1"]), "miou": r(m["mean"]["iou"]),
            "pixel_accuracy": r(m["pixel_accuracy"])}
    for col, table in result.get("by", {}).items():
        for g, s in table.items():
            key = re.sub(r"[^A-Za-z0-9]+", "_", g).strip("_").lower() or "unknown"
            for metric in ("acc", "iou", "f2"):
                flat[f"{metric}_{col}_{key}"] = r(s["metrics"]["gas"][metric])
    return flat


def to_codalab(result: dict) -> str:
    """CodaLab ``scores.txt``: one ``key: value`` line per leaderboard column (percent, 4 decimals).

    Undefined metrics (zero denominators) are left out, so the leaderboard shows them as empty.
    """
    return "".join(f"{k}: {v:.4f}\n" for k, v in _leaderboard(result).items() if v is not None)


def to_codabench(result: dict) -> dict:
    """Codabench ``scores.json``: flat keys (match ``columns[].key`` in ``competition.yaml``), percent."""
    return {k: v for k, v in _leaderboard(result).items() if v is not None}


_EVALAI_NAMES = {"acc": "Acc", "iou": "IoU", "f2": "F2", "precision": "Precision", "f1": "F1", "miou": "mIoU",
                 "pixel_accuracy": "Pixel accuracy"}


def to_evalai(result: dict, *, split: str | None = None) -> dict:
    """EvalAI's result dict ``{"result": [{split: {...}}], "submission_result": {...}}`` (percent)."""
    name = split or result["split"] or "test"
    flat = _leaderboard(result)
    metrics = {_EVALAI_NAMES[k]: v for k, v in flat.items() if k in _EVALAI_NAMES and v is not None}
    return {"result": [{name: metrics}], "submission_result": {name: metrics}}


def evaluate(test_annotation_file, user_submission_file, phase_codename, **kwargs) -> dict:
    """EvalAI's entry point: score ``user_submission_file`` against ``test_annotation_file``.

    ``test_annotation_file`` is a release (or masks folder); ``phase_codename`` names the split
    key in the result. Keyword arguments of :func:`score` (e.g. ``binary_255=True``) pass through;
    EvalAI's own (``submission_metadata``) are ignored. Invalid submissions raise
    :class:`InvalidSubmissionError`, whose message lists every problem.
    """
    allowed = {"split", "binary_255", "allow_missing", "limits", "workers", "count_ignore"}
    result = score(test_annotation_file, user_submission_file, **{k: v for k, v in kwargs.items() if k in allowed})
    return to_evalai(result, split=phase_codename)


def write_example_submission(gt, out, *, split: str = "test", shift: int = 0, grow: int = 0,
                             as_zip: bool = False) -> Path:
    """Write a submission made from the ground truth itself: perfect, or degraded by a shift.

    For demos, tests and benchmarks: each ground-truth mask (ignored pixels as background) is
    rolled ``shift`` pixels to the right and down and grown by ``grow`` pixels (a square dilation),
    so ``shift=0, grow=0`` scores 100 % and larger values lower the gas scores (``grow`` lowers
    precision more than recall).

    Parameters
    ----------
    gt : str or os.PathLike
        A release or masks folder (see :func:`load_ground_truth`).
    out : str or os.PathLike
        A folder to create (``<id>.png`` inside) or, with ``as_zip``, a ``.zip`` file.
    split : str
    shift : int
        Pixels to move every mask by (``np.roll`` along both axes).
    grow : int
        Dilation radius in pixels applied after the shift.
    as_zip : bool
        Write one zip (masks at its root) instead of a folder.

    Returns
    -------
    Path
        ``out``.
    """
    truth = load_ground_truth(gt, split=split)
    out = Path(out)
    files = {}
    for id_ in truth.ids:
        mask = decode_image(truth.label_path(id_).read_bytes(), name=str(truth.label_path(id_)))
        mask = (mask == 1).astype(np.uint8)
        if shift:
            mask = np.roll(mask, (int(shift), int(shift)), axis=(0, 1))
        if grow:
            import cv2

            mask = cv2.dilate(mask, np.ones((2 * int(grow) + 1,) * 2, np.uint8))
        files[f"{id_}.png"] = encode_png(mask, compression=1)
    if as_zip:
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name in sorted(files):
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), files[name])
        atomic_write_bytes(out, buf.getvalue())
    else:
        for name, data in files.items():
            atomic_write_bytes(out / name, data)
    return out


def score_demo(release, out, *, shift: int = 4, grow: int = 2) -> dict:
    """Score a perfect and a degraded submission against ``release`` (what ``gasdb demo`` runs).

    Writes ``out/perfect/`` (the ground truth itself) and ``out/degraded.zip`` (every mask moved
    by ``shift`` px and grown by ``grow`` px), scores both with a per-scene breakdown when the release has an index, and
    writes ``out/score-perfect.json`` and ``out/score-degraded.json``.

    Returns
    -------
    dict
        ``{"perfect": {...}, "degraded": {...}}``, each the gas-class percent view plus ``n_images``.
    """
    from gasdb_tools.fsutil import write_json

    out = Path(out)
    truth = load_ground_truth(release)
    by = "scene" if truth.index is not None and "scene" in next(iter(truth.index.values()), {}) else None
    summary = {}
    for name, sub in (("perfect", write_example_submission(release, out / "perfect")),
                      ("degraded", write_example_submission(release, out / "degraded.zip", shift=shift,
                                                            grow=grow, as_zip=True))):
        result = score(release, sub, by=by)
        write_json(out / f"score-{name}.json", result)
        summary[name] = {"n_images": result["n_images"], **result["percent"]["gas"]}
    return summary
