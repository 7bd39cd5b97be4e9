"""The ``preannotate`` stage: LabelMe drafts of the gas masks, by background subtraction.

For every recording of a workspace, the stage runs :func:`gasdb_tools.background.gas_masks` over
the recording's pair frames **in time order** and writes one LabelMe document per pair,
``labels/<rec>/<pair>.json``: the mask's blobs as editable ``gas`` polygons
(:func:`gasdb_tools.polygons.mask_to_shapes`), provenance in a top-level ``gasdb`` key, and the
review status ``pending``. pairs.csv gets ``label`` (the JSON's path) and ``review`` (``pending``).

**Which frames, which coordinates.** Annotators draw in the RGB frame (``docs/design.md``), so
the stage uses the thermal frames warped into it (pairs.csv ``aligned``) when *every* pair of the
recording has one; the drafts are then in aligned coordinates, and pixels outside the aligned
thermal image (``valid`` = 0) are never gas. When a recording is not (fully) aligned, the stage
uses the extracted thermal frames, and the drafts are in **thermal** coordinates
(``gasdb.frame = "thermal"``, reported per recording): run ``gasdb align`` and then
``gasdb preannotate`` again, which redoes such untouched drafts on the aligned frames. Masks are
not warped here: warping frames is ``align``'s job, and one warp serves frames and masks alike.

**The image an annotator sees** (``imagePath``, relative to the JSON): the enhanced frame
(``enhanced``, 8-bit, one contrast per recording) when it exists in the draft's coordinates;
otherwise an 8-bit view of the frame the detection ran on, written once to
``labels/<rec>/images/<pair>.png`` with one linear stretch per recording (the 0.5 / 99.5
percentiles of a sample of its frames), because LabelMe 6.x cannot open 16-bit PNGs
(``docs/formats.md`` §1.3) and per-image normalisation would make the sequence flicker.

**Never overwrite annotator work** (``docs/formats.md`` §8). A draft records the SHA-256 of what
it wrote (shapes and image flags, ``gasdb.preannot.content_sha256``). An existing JSON counts as
annotator work when its content no longer matches that hash, its review status (in the JSON or
in pairs.csv) is not ``pending``, or it has no gasdb provenance at all. Such files are never
written, with or without ``force``; their pairs.csv review becomes ``edited``. Untouched drafts
are kept on a rerun (resumable) unless ``force`` is given or they were made on the thermal frame
of a pair that has since been aligned.

Tick ``water_spray`` or ``too_faint`` in LabelMe to exclude a frame: :func:`refresh_review`
(run by ``gasdb label`` when LabelMe closes, and by this stage) adds such pairs to the blacklist
with that reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from gasdb_tools import __version__, labelme_format
from gasdb_tools.background import DEFAULTS, METHODS, OPENCV_DEFAULTS, POLARITIES, gas_masks, preset_params
from gasdb_tools.errors import FormatError, GasdbError, WorkspaceError
from gasdb_tools.fsutil import read_json
from gasdb_tools.imaging import read_image, to_gray, to_uint8, write_image
from gasdb_tools.polygons import DEFAULT_EPSILON_FRAC, MODES, mask_to_shapes
from gasdb_tools.progress import progress
from gasdb_tools.workspace import Workspace

__all__ = [
    "REVIEW_STATUSES",
    "FLAGS",
    "BLACKLIST_FLAGS",
    "content_hash",
    "draft_state",
    "preannotate_workspace",
    "recording_polarity",
    "refresh_review",
]

log = logging.getLogger(__name__)

#: Review statuses (pairs.csv ``review`` and the JSON's ``gasdb.review.status``).
REVIEW_STATUSES = ("pending", "edited", "approved")
#: Image-level flags every draft carries (all false), as in the shipped LabelMe config
#: (``gasdb_tools/annotation/labelme.yaml``).
FLAGS = ("no_leak", "ambiguous", "water_spray", "too_faint", "approved")
#: Flags that put a pair on the blacklist, with the reason written there.
BLACKLIST_FLAGS = {"water_spray": "water spray in view (flagged in LabelMe)",
                   "too_faint": "plume too faint to delineate (flagged in LabelMe)"}

_STRETCH_PERCENTILES = (0.5, 99.5)
_STRETCH_SAMPLES = 16


# ------------------------------------------------------------------------------------------
# drafts and edits
# ------------------------------------------------------------------------------------------
def content_hash(doc) -> str:
    """SHA-256 of what an annotator can change in a document: its shapes and image flags.

    Shapes count by label, points (rounded to 1/1000 px), shape type, group id and mask pixels;
    what LabelMe changes when it saves an unchanged file (key order, indentation, the mask PNG's
    bytes, descriptions, per-shape extras) does not count, so opening and saving a draft
    unchanged keeps it a draft.

    >>> doc = labelme_format.new_document("a.png", 10, 10, shapes=[labelme_format.make_shape([[1, 1], [5, 1], [5, 5]])])
    >>> content_hash(doc) == content_hash(json.loads(json.dumps(doc)))
    True
    """
    shapes = []
    for s in doc.get("shapes") or []:
        points = [[round(float(x), 3), round(float(y), 3)] for x, y in s.get("points") or []]
        mask = s.get("mask")
        if isinstance(mask, str):  # LabelMe re-encodes mask PNGs on save: compare the pixels, not the bytes
            try:
                crop = labelme_format.decode_mask(mask)
                mask = [list(crop.shape), hashlib.sha256(np.packbits(crop).tobytes()).hexdigest()]
            except FormatError:
                pass
        shapes.append({"label": s.get("label"), "points": points, "shape_type": s.get("shape_type") or "polygon",
                       "group_id": s.get("group_id"), "mask": mask})
    flags = {k: bool(v) for k, v in (doc.get("flags") or {}).items()}
    blob = json.dumps({"shapes": shapes, "flags": flags}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def draft_state(path, *, review: str = "") -> str:
    """State of a pair's LabelMe file: ``missing``, ``draft`` (untouched) or ``edited``.

    Parameters
    ----------
    path : path-like
        The JSON file.
    review : str
        The pair's pairs.csv ``review`` value.

    Returns
    -------
    str
        ``edited`` when the file holds annotator work: its content differs from the hash the draft
        recorded, a review status (JSON or ``review``) other than ``pending``, no gasdb
        provenance, or a file that cannot be read as LabelMe JSON (never overwritten either).
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    if review and review != "pending":
        return "edited"
    try:
        doc = labelme_format.read(path)
    except FormatError:
        return "edited"
    meta = doc.get("gasdb")
    if not isinstance(meta, dict) or not isinstance(meta.get("preannot"), dict):
        return "edited"
    status = (meta.get("review") or {}).get("status", "pending") if isinstance(meta.get("review"), dict) else None
    if status != "pending":
        return "edited"
    if meta["preannot"].get("content_sha256") != content_hash(doc):
        return "edited"
    return "draft"


def refresh_review(ws: Workspace, *, recordings=None) -> dict:
    """Bring pairs.csv ``review`` up to date with the LabelMe files, and apply blacklist flags.

    A pair whose file was changed by an annotator (see :func:`draft_state`) gets ``review``
    ``edited`` (``approved`` is kept; a status written in the JSON wins). Pairs whose file ticks
    a flag of :data:`BLACKLIST_FLAGS` are added to the blacklist (existing entries are kept).

    Returns
    -------
    dict
        ``{"pending", "edited", "approved", "blacklisted": [pair ids added]}`` counts over the
        pairs that have a label file.
    """
    index = ws.read_index()
    wanted = set(index.recordings) if recordings is None else set(recordings)
    updates: dict[str, str] = {}
    counts = {"pending": 0, "edited": 0, "approved": 0}
    black = ws.blacklist()
    added = []
    for pid, row in sorted(index.pairs.items()):
        if row.get("recording") not in wanted or not row.get("label"):
            continue
        path = ws.path(row["label"])
        state = draft_state(path, review=row.get("review", ""))
        status = row.get("review") or "pending"
        doc = None
        if state == "edited" and path.exists():
            try:
                doc = labelme_format.read(path)
            except FormatError:
                doc = None
            json_status = ((doc or {}).get("gasdb") or {}).get("review", {}) if doc else {}
            json_status = json_status.get("status") if isinstance(json_status, dict) else None
            if json_status in ("edited", "approved"):
                status = json_status
            elif status == "pending":
                status = "edited"
        elif state == "missing":
            continue
        counts[status] = counts.get(status, 0) + 1
        if status != (row.get("review") or ""):
            updates[pid] = status
        if doc is not None:
            flags = doc.get("flags") or {}
            for flag, reason in BLACKLIST_FLAGS.items():
                if flags.get(flag) is True and pid not in black:
                    black[pid] = reason
                    added.append(pid)
                    break
    if updates:
        ws.update_pairs({pid: {"review": status} for pid, status in updates.items()})
    if added:
        ws.set_blacklist(black)
    return {**counts, "blacklisted": added}


# ------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------
def recording_polarity(row) -> str | None:
    """The plume polarity a recording declares: its ``polarity`` column, else an ``absorbing`` /
    ``emitting`` tag; None when it declares none.

    >>> recording_polarity({"tags": "night;absorbing"}), recording_polarity({"polarity": "emitting"})
    ('absorbing', 'emitting')
    """
    value = str(row.get("polarity", "") or "").strip().lower()
    if value in POLARITIES:
        return value
    tags = str(row.get("tags", "") or "").replace(";", " ").replace(",", " ").lower().split()
    found = [t for t in tags if t in ("absorbing", "emitting")]
    return found[0] if len(found) == 1 else None


def _effective_params(method: str, params: dict, preset: str | None = None) -> dict:
    """The full parameter set of ``method`` (defaults, then the preset, then ``params``), JSON-ready, checked."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    preset_defaults = preset_params(preset, method=method)
    if "lead_in" in params:
        raise ValueError("give the gas-free lead-in in seconds (lead_in_s), not frames: pairs may be "
                         "sampled sparsely in time")
    defaults = OPENCV_DEFAULTS if method in ("mog2", "knn") else {k: v for k, v in DEFAULTS.items() if k != "lead_in"}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for method {method!r}; known: {sorted(defaults)}")
    full = {**defaults, **preset_defaults, **params}
    # validate by building the subtractor on a dummy frame (raises ValueError/TypeError naming the knob)
    probe = {**full, "lead_in": 0} if method == "gas" else full
    next(gas_masks([np.zeros((8, 8), np.uint8)], method=method, **probe))
    return full


def preannotate_workspace(ws: Workspace, *, method: str = "gas", preset: str | None = None, force: bool = False,
                          recordings=None,
                          lead_in_s: float = 1.0, mode: str = "polygon", epsilon_frac: float = DEFAULT_EPSILON_FRAC,
                          min_area: float = 20.0, **params) -> dict:
    """Write LabelMe drafts ``labels/<rec>/<pair>.json`` for every pair; never touches annotator work.

    Parameters
    ----------
    ws : Workspace
    method : {'gas', 'mog2', 'knn'}
        Background subtraction (:func:`gasdb_tools.background.gas_masks`).
    preset : {'mask', 'extent'}, optional
        A named parameter set of the gas method (:data:`gasdb_tools.background.PRESETS`; ``params``
        override it). ``mask`` (default): the plume as each frame shows it. ``extent``: the region
        the plume filled over the last 25 pairs, kept only where the scene flickers like gas.
    force : bool
        Replace untouched drafts too (edited files are kept regardless).
    recordings : iterable of str, optional
        Only these recordings (default: all).
    lead_in_s : float
        Seconds at the start of each recording taken as gas-free (their median is the initial
        background; ``gas`` method only). 0: start from the first frame.
    mode : {'polygon', 'mask'}
        Draft shapes: editable polygons (default) or exact LabelMe ``mask`` shapes.
    epsilon_frac : float
        Polygon simplification, as a fraction of each blob's perimeter.
    min_area : float
        Blobs smaller than this many pixels get no shape.
    **params
        Knobs of the method (``polarity``, ``k``, ``learning_rate``, ...; see
        :data:`gasdb_tools.background.DEFAULTS`). Without ``polarity``, a recording that declares
        one (:func:`recording_polarity`: recordings.csv ``polarity`` column or an ``absorbing`` /
        ``emitting`` tag) uses it; the others use ``both``. Knowing the sign removes false alarms
        of the other sign (a warm person in front of a cold plume).

    Returns
    -------
    dict
        ``{"workspace", "method", "preset", "params", "recordings": [...], "written", "kept_edited", "failed",
        "review"}`` (``review``: :func:`refresh_review`'s counts after the run);
        each recording has ``id, pairs, frame ('aligned'|'thermal'|None), polarity, written,
        skipped, kept_edited, empty, error``.

    Raises
    ------
    ValueError, TypeError
        A bad option or parameter (before anything is read or written).
    WorkspaceError
        An unknown recording id.
    """
    full = _effective_params(method, params, preset)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        lead_in_s = float(lead_in_s)
    except (TypeError, ValueError):
        raise TypeError(f"lead_in_s must be a number of seconds, got {lead_in_s!r}") from None
    if not lead_in_s >= 0:
        raise ValueError(f"lead_in_s must be >= 0 seconds, got {lead_in_s!r}")
    mask_to_shapes(np.zeros((4, 4), bool), mode=mode, epsilon_frac=epsilon_frac, min_area=min_area)  # checks
    index = ws.read_index()
    wanted = ws.select_recordings(recordings, index=index)
    provenance = {"method": method, "preset": preset or ("mask" if method == "gas" else None),
                  "params": {**full, "lead_in_s": lead_in_s} if method == "gas" else full,
                  "mode": mode, "epsilon_frac": float(epsilon_frac), "min_area": float(min_area),
                  "tool_version": f"gasdb-tools {__version__}"}
    report = {"workspace": str(ws.root), "method": method, "preset": provenance["preset"],
              "params": provenance["params"], "recordings": [],
              "written": 0, "kept_edited": 0, "failed": 0}
    for rec in wanted:
        rows = sorted(index.pairs_of(rec), key=lambda r: (float(r.get("t_thermal") or 0), r["pair_id"]))
        entry = {"id": rec, "pairs": len(rows), "frame": None, "polarity": provenance["params"].get("polarity"),
                 "written": 0, "skipped": 0, "kept_edited": 0, "empty": 0, "error": None}
        report["recordings"].append(entry)
        rec_provenance = provenance
        known = recording_polarity(index.recordings[rec])
        if method == "gas" and "polarity" not in params and known:
            rec_provenance = {**provenance, "params": {**provenance["params"], "polarity": known}}
            entry["polarity"] = known
        try:
            _preannotate_recording(ws, rec, rows, entry, rec_provenance, force=force, lead_in_s=lead_in_s)
            error = ""
        except (GasdbError, ValueError, OSError) as exc:
            error = str(exc)
            entry["error"] = error
            report["failed"] += 1
            log.info("preannotate %s failed: %s", rec, error)
        ws.set_stage_error(rec, "preannotate", error)
        report["written"] += entry["written"]
        report["kept_edited"] += entry["kept_edited"]
    report["review"] = refresh_review(ws, recordings=wanted)
    return report


def _frame_kind(ws: Workspace, rows) -> str:
    """``aligned`` when every pair has an aligned frame on disk, else ``thermal``."""
    if rows and all(r.get("aligned") and ws.path(r["aligned"]).is_file() for r in rows):
        return "aligned"
    return "thermal"


def _read_frame(ws: Workspace, row: dict, kind: str) -> np.ndarray:
    rel = row.get(kind) or ""
    if not rel:
        raise WorkspaceError(f"pair {row['pair_id']} has no {kind} frame", file=ws.root / ws.PAIRS,
                             field=f"{row['pair_id']}.{kind}", fix="rerun `gasdb extract` for its recording")
    image = read_image(ws.path(rel))
    return to_gray(image) if image.ndim == 3 else image


def _stretch(ws: Workspace, rows, kind: str) -> tuple[float, float]:
    picks = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, min(len(rows), _STRETCH_SAMPLES)).astype(int))]
    values = np.concatenate([_read_frame(ws, r, kind)[::4, ::4].ravel() for r in picks]).astype(np.float64)
    lo, hi = np.percentile(values, _STRETCH_PERCENTILES)
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _annotator_image(ws: Workspace, row: dict, kind: str, frame: np.ndarray, stretch, rec: str) -> Path:
    """The 8-bit image LabelMe should open for this draft (an 8-bit view is written when needed).

    LabelMe opens a folder of images, so the folder must hold nothing else: the enhanced frames
    and the extracted thermal frames qualify; the aligned folder also holds ``*_valid.png``, so
    aligned frames get a view in ``labels/<rec>/images/`` even when they are 8-bit.
    """
    enhanced = row.get("enhanced") or ""
    if enhanced and ws.path(enhanced).is_file() and row.get("enhanced_source", kind) in ("", kind):
        return ws.path(enhanced)
    if kind == "thermal" and frame.dtype == np.uint8 and ws.path(row["thermal"]).suffix.lower() == ".png":
        return ws.path(row["thermal"])
    out = ws.output_path("labels", rec, f"{row['pair_id']}.png", sub="images")
    view = frame if frame.dtype == np.uint8 else to_uint8(frame, lo=stretch[0], hi=stretch[1])
    write_image(out, view, compression=1)
    return out


def _preannotate_recording(ws: Workspace, rec: str, rows, entry: dict, provenance: dict, *, force: bool,
                           lead_in_s: float) -> None:
    if not rows:
        return
    kind = _frame_kind(ws, rows)
    entry["frame"] = kind
    plan: dict[str, str] = {}  # pair id -> "write" | "skip" | "edited"
    for r in rows:
        path = ws.output_path("labels", rec, f"{r['pair_id']}.json")
        state = draft_state(path, review=r.get("review", ""))
        if state == "edited":
            plan[r["pair_id"]] = "edited"
        elif state == "missing" or force:
            plan[r["pair_id"]] = "write"
        else:
            doc_frame = (read_json(path, error=FormatError).get("gasdb") or {}).get("frame")
            plan[r["pair_id"]] = "write" if doc_frame != kind else "skip"  # stale geometry: redo
    entry["kept_edited"] = sum(1 for v in plan.values() if v == "edited")
    entry["skipped"] = sum(1 for v in plan.values() if v == "skip")
    updates: dict[str, dict] = {}
    for r in rows:
        rel = ws.rel(ws.output_path("labels", rec, f"{r['pair_id']}.json"))
        if plan[r["pair_id"]] == "edited":
            updates[r["pair_id"]] = {"label": rel, "review": r.get("review") if r.get("review") not in ("", "pending")
                                     else "edited"}
        elif plan[r["pair_id"]] == "skip":
            updates[r["pair_id"]] = {"label": rel, "review": "pending"}
    if any(v == "write" for v in plan.values()):
        _write_drafts(ws, rec, rows, kind, plan, provenance, lead_in_s, entry, updates)
    ws.update_pairs(updates)


def _write_drafts(ws, rec, rows, kind, plan, provenance, lead_in_s, entry, updates) -> None:
    method, params = provenance["method"], dict(provenance["params"])
    if method == "gas":
        params.pop("lead_in_s", None)
        t0 = float(rows[0].get("t_thermal") or 0)
        params["lead_in"] = sum(1 for r in rows if float(r.get("t_thermal") or 0) < t0 + lead_in_s)
    stretch = None
    frames = (_read_frame(ws, r, kind) for r in rows)
    pairs = progress(_frames_and_masks(frames, method, params), total=len(rows), desc=f"preannotate {rec}",
                     unit="frame")
    for r, (frame, mask) in zip(rows, pairs):
        pid = r["pair_id"]
        if plan[pid] != "write":
            continue
        if kind == "aligned" and r.get("valid") and ws.path(r["valid"]).is_file():
            valid = read_image(ws.path(r["valid"]))
            mask = mask & (valid > 0)
        shapes = mask_to_shapes(mask, mode=provenance["mode"], epsilon_frac=provenance["epsilon_frac"],
                                min_area=provenance["min_area"], extra={"gasdb": {"source": "bgsub"}})
        if not shapes:
            entry["empty"] += 1
        if stretch is None and frame.dtype != np.uint8:
            stretch = _stretch(ws, rows, kind)
        image = _annotator_image(ws, r, kind, frame, stretch, rec)
        path = ws.output_path("labels", rec, f"{pid}.json")
        doc = labelme_format.new_document(image.resolve(), int(mask.shape[0]), int(mask.shape[1]), shapes=shapes,
                                          flags={f: False for f in FLAGS})
        doc["gasdb"] = {
            "pair_id": pid,
            "recording": rec,
            "frame": kind,
            "frame_path": r.get(kind, ""),
            "rgb_path": r.get("rgb", ""),
            "thermal_raw_path": r.get("thermal", ""),
            "t_thermal": r.get("t_thermal", ""),
            "preannot": {**provenance, "content_sha256": content_hash(doc), "blobs": len(shapes)},
            "review": {"status": "pending", "annotator": None},
        }
        labelme_format.write(doc, path)
        entry["written"] += 1
        updates[pid] = {"label": ws.rel(path), "review": "pending"}


def _frames_and_masks(frames, method, params):
    """``(frame, mask)`` in time order, reading each frame once (the lead-in is held by gas_masks)."""
    held = []

    def feed():
        for f in frames:
            held.append(f)
            yield f

    for mask in gas_masks(feed(), method=method, **params):
        yield held.pop(0), mask
