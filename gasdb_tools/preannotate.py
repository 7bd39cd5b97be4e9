"""The ``preannotate`` stage: LabelMe drafts of the gas masks, by background subtraction on the
dense thermal stream, refined by what people corrected.

For every recording of a workspace, the stage decodes the recording's **thermal video** at its
full frame rate and native size, runs the background model of :mod:`gasdb_tools.background` on
every frame (:mod:`gasdb_tools.dense`), and keeps the masks of the frames that are extracted
pairs, whatever ``extract`` sampled. Each mask is warped into the annotation frame
(:mod:`gasdb_tools.align`, ``docs/design.md`` §5) and written as one LabelMe document per pair,
``labels/<rec>/<pair>.json``: the mask's blobs as editable ``gas`` polygons
(:func:`gasdb_tools.polygons.mask_to_shapes`), provenance in a top-level ``gasdb`` key, and the
review status ``pending``. pairs.csv gets ``label`` (the JSON's path) and ``preannotate_inputs``.
Memory stays flat with a recording's length: frames are streamed, only the gas-free lead-in is
held.

**Time knobs on the dense stream.** The model's per-frame rates (``learning_rate``,
``ema_alpha``, ...) and ``hold`` count frames of the thermal video, as they were tuned; before
the dense stream they counted extracted pairs (``extent``'s ``hold=25`` was 25 pairs, 12.5 s at
``--every 0.5``; now it is 25 frames, 1 s at 25 frames/s). ``lead_in_s`` is in seconds.

**Which coordinates.** Drafts are drawn in the recording's annotation frame: the aligned frame
(thermal warped into the RGB frame) once a recording with an RGB camera is aligned, the thermal
frame of a thermal camera alone. Before alignment, drafts are made in thermal coordinates
(reported per recording). The model always runs at the thermal camera's native size (its pixel
knobs were tuned there); the mask is warped with the recording's geometry, and pixels outside
the thermal view are never gas. Each document records the geometry it is drawn in
(``gasdb.geometry``: frame kind, size, the thermal-to-frame transform and its key).

**Learning from corrections** (``refine=True``, ``gasdb preannotate --refine``). The
recording's edited and approved documents (not flagged ``ambiguous``, ``water_spray`` or
``too_faint``, not awaiting a re-check) are the supervision: :mod:`gasdb_tools.refine` fits the
background model's parameters to them and a per-pixel fusion of its evidence with the
corrected masks carried along the stream by optical flow (:mod:`gasdb_tools.propagate`), each
judged by leave-one-out IoU on the corrected pairs, and the pending drafts are rewritten from the
best of current parameters / fitted parameters / fusion. The fit and its held-out scores are
recorded in every refined draft (``gasdb.preannot.refined``) and in the report.

**Provenance and staleness.** A draft records its recipe (``gasdb.preannot.inputs``, also
pairs.csv ``preannotate_inputs``): the thermal video's sha256, the pairs' times, the geometry,
the method and its parameters (and the refinement, when refined). A plain rerun rewrites exactly
the untouched drafts whose recipe changed (another video, re-extracted pairs, a new alignment,
other parameters) and writes the missing ones; a plain rerun after ``--refine`` goes back to
plain drafts (refine again after more corrections). Each draft also records
``gasdb.preannot.stats`` (uncertainty near the plume, gas fraction, disagreement between fusion
and the background model) for ``gasdb suggest``.

**The image an annotator sees** (``imagePath``, relative to the JSON): the enhanced frame when it
exists in the draft's coordinates; otherwise an 8-bit view of the pair's frame, written once to
``labels/<rec>/images/<pair>.png`` with the recording's one contrast stretch
(:mod:`gasdb_tools.views`), because LabelMe 6.x cannot open 16-bit PNGs (``docs/formats.md`` §1.3).
The document's ``gasdb`` block is described in ``docs/formats.md`` §1.4.

**Never overwrite annotator work.** Only an *untouched* draft (:mod:`gasdb_tools.review`: its
content equals what was written and nobody reviewed it) is ever replaced, with or without
``force`` or ``refine``, and only through :func:`gasdb_tools.review.write_document`:
compare-and-swap on the file's bytes under the workspace lock, so a LabelMe autosave between
planning and writing wins. When the geometry under an edited or approved document changes (a
recalibration, another ``align --size``), its shapes are re-projected through the change of
transform (:func:`gasdb_tools.labelme_format.transform_shapes`, exact for vertices), the old
version is kept in ``labels/<rec>/.history/``, the re-projection is recorded in the document's
provenance, its approval is withdrawn and it is marked for re-review (``recheck``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from gasdb_tools import __version__, dense, labelme_format, provenance, review, video, views
from gasdb_tools.align import Geometry, annotation_frame, parse_size
from gasdb_tools.background import POLARITIES, GasParams, GasSubtractor, OpenCVSubtractor, method_params
from gasdb_tools.errors import FormatError, VideoError, WorkspaceError
from gasdb_tools.fsutil import atomic_write_bytes
from gasdb_tools.imaging import write_image
from gasdb_tools.polygons import DEFAULT_EPSILON_FRAC, MODES, mask_to_shapes
from gasdb_tools.progress import progress
from gasdb_tools.registration import warp_thermal
from gasdb_tools.registration.distortion import undistort_points
from gasdb_tools.stages import IndexOps, run_stage
from gasdb_tools.workspace import Workspace

__all__ = [
    "REVIEW_STATUSES",
    "FLAGS",
    "preannotate_workspace",
    "preannotate_recipe",
    "recording_polarity",
    "draft_geometry",
    "expected_inputs",
    "thermal_stream",
    "supervision",
    "to_annotation_frame",
]

log = logging.getLogger(__name__)

REVIEW_STATUSES = review.REVIEW_STATUSES
#: Image-level flags every draft carries (all false), as in the shipped LabelMe config
#: (``gasdb_tools/annotation/labelme.yaml``).
FLAGS = review.FLAGS
#: Drafts written between two index commits of a recording.
CHECKPOINT = 500


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
    """The full parameter set of ``method`` (the preset, then ``params``), JSON-ready, checked."""
    if "lead_in" in params:
        raise ValueError("give the gas-free lead-in in seconds (lead_in_s), not frames")
    try:
        settings = method_params(method, params, preset)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return settings.to_dict() if isinstance(settings, GasParams) else settings


def preannotate_workspace(ws: Workspace, *, method: str = "gas", preset: str | None = None, force: bool = False,
                          recordings=None, lead_in_s: float = 1.0, mode: str = "polygon",
                          epsilon_frac: float = DEFAULT_EPSILON_FRAC, min_area: float = 20.0, jobs: int = 1,
                          refine: bool = False, search: bool = True, carry_window_s: float | None = None,
                          model: bool = False, model_config=None, device: str = "auto", **params) -> dict:
    """Write LabelMe drafts ``labels/<rec>/<pair>.json`` for every pair; never touches annotator work.

    Parameters
    ----------
    ws : Workspace
    method : {'gas', 'mog2', 'knn'}
        Background subtraction (:mod:`gasdb_tools.background`) on every frame of the thermal video.
    preset : {'mask', 'extent'}, optional
        A named parameter set of the gas method (:data:`gasdb_tools.background.PRESETS`; ``params``
        override it). ``mask`` (default): the plume as each frame shows it. ``extent``: the region
        the plume filled over the last 25 frames, kept only where the scene flickers like gas.
    force : bool
        Replace untouched drafts even when their recipe still holds (edited, approved and reviewed
        documents are kept regardless).
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
        Blobs smaller than this many pixels (of the annotation frame) get no shape.
    jobs : int
        Recordings in parallel worker processes.
    refine : bool
        Learn from each recording's corrected documents (see the module docstring and
        :mod:`gasdb_tools.refine`); a recording without any keeps plain drafts. ``gas`` method only.
    search : bool
        With ``refine``: also search the background model's parameters (False: the fusion only).
    carry_window_s : float, optional
        With ``refine``: how far (seconds) a corrected mask is carried along the stream
        (default :data:`gasdb_tools.propagate.WINDOW_S`).
    model : bool
        Model-assisted drafts (:mod:`gasdb_tools.draftmodel`, needs torch): train a small network
        on the corrected pairs of the selected recordings, save it in ``WS/models/``, and draft
        every pending pair with it. ``gas`` method only; not with ``refine``.
    model_config : gasdb_tools.draftmodel.TrainConfig, optional
        How to train it (default :class:`~gasdb_tools.draftmodel.TrainConfig`).
    device : str
        Where to train and run it: ``auto`` (a GPU when present), ``cpu``, ``cuda``.
    **params
        Knobs of the method (:class:`gasdb_tools.background.GasParams` fields: ``polarity``,
        ``k``, ``hold``, ...). Without ``polarity``, a recording that declares one
        (:func:`recording_polarity`: recordings.csv ``polarity`` column or an ``absorbing`` /
        ``emitting`` tag) uses it; the others use ``both``.

    Returns
    -------
    dict
        The stage runner's summary plus ``method, preset, params, written, kept_edited,
        reprojected, changed_meanwhile, review``; each recording has ``id, pairs, frame
        ('aligned'|'thermal'), polarity, written, skipped, kept_edited, reprojected,
        changed_meanwhile, empty, frames_decoded, review, error`` and, with ``refine``, ``refined``
        (:meth:`gasdb_tools.refine.Refinement.to_dict`, or a ``note`` saying why not). With
        ``model``, ``model`` describes the trained network (checkpoint path and sha256, pairs,
        held-out IoU, seconds, device). ``review`` counts the documents by review status
        (:func:`gasdb_tools.review.counts`) as the run leaves them: each recording counts its own
        as it plans and writes them (the documents are not read back: memory stays flat with the
        number of pairs); a failed recording's are read from the files.

    Raises
    ------
    ValueError, TypeError
        A bad option or parameter (before anything is read or written).
    WorkspaceError
        An unknown recording id.
    """
    from gasdb_tools.propagate import WINDOW_S

    full = _effective_params(method, params, preset)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        lead_in_s = float(lead_in_s)
    except (TypeError, ValueError):
        raise TypeError(f"lead_in_s must be a number of seconds, got {lead_in_s!r}") from None
    if not lead_in_s >= 0:
        raise ValueError(f"lead_in_s must be >= 0 seconds, got {lead_in_s!r}")
    if refine and method != "gas":
        raise ValueError(f"refine fits the gas pipeline; it does not apply to method {method!r}")
    if model and (method != "gas" or refine):
        raise ValueError("--model drafts with the gas pipeline's evidence and does not combine with --refine")
    carry_window_s = WINDOW_S if carry_window_s is None else float(carry_window_s)
    if not carry_window_s > 0:
        raise ValueError(f"carry_window_s must be > 0 seconds, got {carry_window_s!r}")
    mask_to_shapes(np.zeros((4, 4), bool), mode=mode, epsilon_frac=epsilon_frac, min_area=min_area)  # checks
    provenance_ = {"method": method, "preset": preset or ("mask" if method == "gas" else None),
                   "params": {**full, "lead_in_s": lead_in_s} if method == "gas" else full,
                   "mode": mode, "epsilon_frac": float(epsilon_frac), "min_area": float(min_area),
                   "stream": "thermal video, every frame", "tool_version": f"gasdb-tools {__version__}"}
    trained = None
    if model:
        trained = _train_model(ws, recordings, provenance_, lead_in_s, "polarity" in params, model_config, device)
    report = run_stage(ws, "preannotate", _preannotate_work, recordings=recordings, jobs=jobs,
                       options={"draft": provenance_, "force": force, "lead_in_s": lead_in_s,
                                "explicit_polarity": "polarity" in params,
                                "refine": {"search": bool(search), "window_s": carry_window_s} if refine else None,
                                "model": trained, "device": device},
                       defaults={"pairs": 0, "frame": None, "polarity": None, "written": 0, "skipped": 0,
                                 "kept_edited": 0, "reprojected": 0, "changed_meanwhile": 0, "empty": 0,
                                 "frames_decoded": 0})
    recs = report["recordings"]
    counts = _sum_counts([r["review"] for r in recs if r.get("review") is not None])
    unknown = {r["id"] for r in recs if r.get("review") is None}  # failed: read their documents
    if unknown:
        index = ws.read_index()
        ids = [p for p in index.pairs if index.pairs[p]["recording"] in unknown]
        counts = _sum_counts([counts, review.counts(review.read_states(ws, index, pairs=ids), ids)])
    return {**report, "method": method, "preset": provenance_["preset"], "params": provenance_["params"],
            "refine": bool(refine), "model": trained,
            "written": sum(r["written"] for r in recs), "kept_edited": sum(r["kept_edited"] for r in recs),
            "reprojected": sum(r["reprojected"] for r in recs),
            "changed_meanwhile": sum(r["changed_meanwhile"] for r in recs), "review": counts}


def _sum_counts(parts) -> dict:
    """Review counts (:func:`gasdb_tools.review.counts`) added up."""
    keys = (*REVIEW_STATUSES, "recheck", "unlabelled")
    return {k: sum(p.get(k, 0) for p in parts) for k in keys}


def _count(entry: dict, state) -> None:
    """Count one pair's document state (None: no document) in the recording's review counts."""
    counts = entry["review"]
    if state is None:
        counts["unlabelled"] += 1
        return
    counts[state.status] += 1
    counts["recheck"] += bool(state.recheck)


def _count_file(entry: dict, path: Path, pid: str) -> None:
    """Count the state of the document now on disk (after someone saved it meanwhile)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = None
    _count(entry, _state_of(data, path, pid))


def draft_geometry(ws: Workspace, rec: dict, rows) -> tuple[str, Geometry]:
    """``(frame kind, geometry)`` the drafts of a recording are drawn in now: ``aligned`` in its
    annotation frame once every pair is aligned, else ``thermal`` in the thermal frame."""
    frame = annotation_frame(ws, rec)
    if frame is not None and frame.kind == "rgb" and rows and all(
            r.get("aligned") and ws.path(r["aligned"]).is_file() for r in rows):
        return "aligned", frame
    return "thermal", Geometry("thermal", _thermal_size(ws, rec, rows), np.eye(3))


def _thermal_size(ws: Workspace, rec: dict, rows) -> tuple[int, int]:
    size = parse_size(rec.get("thermal_size") or "")
    if not size or size[1] is None:
        size = views.read_source(ws, rows[0], "thermal")[0].shape[::-1] if rows else (1, 1)
    return tuple(int(v) for v in size)


def preannotate_recipe(rec_row: dict, rows, kind: str, geometry: Geometry, provenance_: dict) -> str:
    """The recipe of a recording's drafts: the thermal video's sha256, the pairs' times, the geometry,
    the method and its settings (including a refinement)."""
    settings = {k: v for k, v in provenance_.items() if k != "tool_version"}
    return provenance.recipe("preannotate", rec_row.get("thermal_sha256", ""), geometry.key, kind,
                             [r.get("t_thermal", "") for r in rows], params=settings)


def _sorted_rows(rows) -> list:
    return sorted(rows, key=lambda r: (float(r.get("t_thermal") or 0), r["pair_id"]))


class _Plan:
    """``{pair id: (action, raw digest)}`` kept small (an action code a pair; digests only for
    documents that exist): a fresh 24-minute recording's plan is a dict of 36,000 small ints."""

    _ACTIONS = ("write", "skip", "reproject", "keep")

    def __init__(self):
        self._code: dict[str, int] = {}
        self._raw: dict[str, str] = {}

    def __setitem__(self, pid: str, value) -> None:
        action, raw = value
        self._code[pid] = self._ACTIONS.index(action)
        if raw:
            self._raw[pid] = raw

    def __getitem__(self, pid: str) -> tuple[str, str]:
        return self._ACTIONS[self._code[pid]], self._raw.get(pid, "")

    def values(self):
        return (self[pid] for pid in self._code)


class _Rows(Sequence):
    """A recording's pair rows in time order, each kept as one string (its values joined by NUL):
    about 250 bytes a pair instead of about 900 as a dict, so a 24-minute recording's 36,000 rows
    stay a few MB (memory flat with length). Items are read-only dicts made on access."""

    _SEP = "\0"

    def __init__(self, rows):
        self._columns: tuple | None = None  # None: the items are plain dicts
        self._items: list = []
        rows = iter(rows)
        last = None
        for r in rows:
            key = (float(r.get("t_thermal") or 0), r["pair_id"])
            cols = tuple(r)
            if (last is not None and key < last) or (self._columns is not None and cols != self._columns):
                # not in time order, or rows of other columns (never from one CSV): plain dicts, sorted
                plain = [self[k] for k in range(len(self._items))] + [dict(r)] + [dict(x) for x in rows]
                self._columns, self._items = None, _sorted_rows(plain)
                return
            last, self._columns = key, cols
            values = tuple(r.values())
            self._items.append(values if any(self._SEP in v for v in values) else self._SEP.join(values))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        item = self._items[i]
        if self._columns is None:
            return item
        return dict(zip(self._columns, item.split(self._SEP) if isinstance(item, str) else item))


def _preannotate_work(ws: Workspace, rec: str, sink, *, draft, force, lead_in_s, explicit_polarity, refine, model=None,
                      device="auto") -> dict:
    rec_row = ws.recording(rec)
    rows = _Rows(ws.iter_pairs(rec))  # only this recording's rows, read as a stream, kept compact (memory)
    entry = {"pairs": len(rows), "frame": None, "polarity": draft["params"].get("polarity"), "written": 0,
             "skipped": 0, "kept_edited": 0, "reprojected": 0, "changed_meanwhile": 0, "empty": 0,
             "frames_decoded": 0, "review": _sum_counts([])}
    draft = _with_polarity(draft, rec_row, explicit_polarity)
    entry["polarity"] = draft["params"].get("polarity")
    if not rows:
        return entry
    kind, geometry = draft_geometry(ws, rec_row, rows)
    entry["frame"] = kind
    refinement = sup = None
    if refine is not None:
        refinement, sup, note = _refine(ws, rec_row, rows, kind, geometry, draft, lead_in_s, refine, sink.threads)
        entry["refined"] = refinement.to_dict() if refinement is not None else {"note": note}
        if refinement is not None:
            draft = {**draft, "refined": refinement.to_dict()}
    if model is not None:
        draft = {**draft, "model": {k: model[k] for k in ("sha256", "path", "train_pairs", "val_pairs", "val_iou")}}
        sup = supervision(ws, rec_row, rows, geometry)
    recipe = preannotate_recipe(rec_row, rows, kind, geometry, draft)
    plan = _Plan()  # pair id -> (action, raw digest of the bytes the plan was made from)
    for r in rows:
        pid = r["pair_id"]
        path = _label_path(ws, rec, pid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        state = _state_of(data, path, pid)
        raw = review.raw_digest(data)
        if state is None:
            plan[pid] = ("write", "")
        elif state.untouched:
            current = state.draft_inputs == recipe and state.geometry == geometry.key
            plan[pid] = ("write", raw) if force or not current else ("skip", "")  # (only a rewrite needs it)
        elif state.geometry and state.geometry != geometry.key and not state.error:
            plan[pid] = ("reproject", raw)
        else:
            plan[pid] = ("keep", "")
        if plan[pid][0] in ("skip", "keep"):
            _count(entry, state)  # the review counts: what the documents are when this run ends
    entry["skipped"] = sum(1 for a, _ in plan.values() if a == "skip")
    entry["kept_edited"] = sum(1 for a, _ in plan.values() if a in ("keep", "reproject"))
    updates: dict[str, dict] = {}
    for r in rows:
        if plan[r["pair_id"]][0] in ("skip", "keep"):
            updates[r["pair_id"]] = {"label": ws.rel(_label_path(ws, rec, r["pair_id"]))}
            if len(updates) >= CHECKPOINT:  # a rerun of a long recording: committed as they come (memory)
                sink.commit(IndexOps(pairs=dict(updates)))
                updates.clear()
    for r in rows:
        if plan[r["pair_id"]][0] == "reproject":
            _reproject(ws, rec, r, geometry, kind, plan[r["pair_id"]][1], entry, updates)
            _count_file(entry, _label_path(ws, rec, r["pair_id"]), r["pair_id"])
    if any(a == "write" for a, _ in plan.values()):
        _write_drafts(ws, rec, rows, kind, geometry, plan, draft, recipe, lead_in_s, entry, updates, rec_row, sink,
                      refinement, sup, model=model, device=device)
    sink.commit(IndexOps(pairs=updates, recording={rec: {"preannotate_settings": json.dumps(
        {k: v for k, v in draft.items() if k != "tool_version"}, sort_keys=True)}}))
    return entry


def _with_polarity(draft: dict, rec_row: dict, explicit: bool) -> dict:
    """The settings with the recording's declared polarity, unless one was given."""
    known = recording_polarity(rec_row)
    if draft["method"] == "gas" and not explicit and known:
        return {**draft, "params": {**draft["params"], "polarity": known}}
    return draft


def expected_inputs(ws: Workspace, rec_row: dict, rows) -> str | None:
    """The recipe a recording's untouched drafts should have now (with the settings it last used);
    None when it was never pre-annotated."""
    try:
        settings = json.loads(rec_row.get("preannotate_settings") or "null")
    except ValueError:
        settings = None
    if not isinstance(settings, dict) or not rows:
        return None
    rows = _sorted_rows(rows)
    kind, geometry = draft_geometry(ws, rec_row, rows)
    return preannotate_recipe(rec_row, rows, kind, geometry, settings)


# ------------------------------------------------------------------------------------------
# the thermal stream, and masks between the thermal and the annotation frame
# ------------------------------------------------------------------------------------------
def thermal_stream(ws: Workspace, rec_row: dict, *, threads: int | None = None):
    """``(t, frame)`` for every frame of a recording's thermal video (gray; 16 bits kept).

    ``threads`` is the caller's share of the cores (:attr:`gasdb_tools.stages.Sink.threads`;
    ``--jobs`` counts cores): 1 decodes in the calling thread, without FFmpeg threads, so a
    recording keeps one core busy and ``--jobs N`` runs N recordings side by side on N cores;
    ``n >= 2`` decodes ahead in a thread of its own (:func:`gasdb_tools.dense.prefetch`) with
    ``n - 1`` FFmpeg threads, beside the background model. None (default): decoded ahead, FFmpeg
    picks its threads (a caller alone on the machine). The frames are the same in every case.

    Raises
    ------
    WorkspaceError
        The video is not where recordings.csv says.
    """
    rel = rec_row.get("thermal") or ""
    path = ws.path(rel) if rel else None
    if path is None or not path.is_file():
        raise WorkspaceError(f"recording {rec_row['id']}: thermal video not found; drafts are computed from every "
                             "frame of it", file=path or ws.root / ws.RECORDINGS, field="thermal",
                             fix="put the video back at this path (or register the recording again with `gasdb add`)")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
    decode = True if threads is None else max(1, threads - 1)
    frames = ((t, video.frame_to_array(f, gray=True)) for t, f in video.iter_av_frames(path, threads=decode))
    return frames if threads == 1 else dense.prefetch(frames)


def to_annotation_frame(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A thermal-frame mask in the annotation frame (identity for a thermal frame): warped with the
    thermal-to-frame transform (linear, then >= 0.5), never gas outside the thermal view."""
    if geometry.kind == "thermal" and np.allclose(geometry.matrix, np.eye(3)) and \
            tuple(mask.shape[::-1]) == tuple(geometry.size):
        return np.asarray(mask, bool)
    warped, valid = warp_thermal(np.asarray(mask, np.uint8) * np.uint8(255), geometry.matrix, geometry.size,
                                 interpolation="linear", distortion=geometry.lens(mask.shape[::-1]))
    return (warped >= 128) & valid


def _to_thermal_frame(mask: np.ndarray, geometry: Geometry, size) -> np.ndarray:
    """An annotation-frame mask in the thermal frame (nearest), False outside the annotation frame."""
    if geometry.kind == "thermal" and np.allclose(geometry.matrix, np.eye(3)) and tuple(mask.shape[::-1]) == tuple(size):
        return np.asarray(mask, bool)
    size = tuple(int(v) for v in size)
    lens = geometry.lens(size)
    if lens is None:
        inv = np.linalg.inv(geometry.matrix)
        out = cv2.warpPerspective(np.asarray(mask, np.uint8), inv, size, flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out > 0
    # each (distorted) thermal pixel: undistorted, then through the matrix into the frame
    xs, ys = np.meshgrid(np.arange(size[0], dtype=np.float64), np.arange(size[1], dtype=np.float64))
    und = undistort_points(np.stack([xs.ravel(), ys.ravel()], 1), lens)
    pts = cv2.perspectiveTransform(und.reshape(-1, 1, 2), geometry.matrix).reshape(size[1], size[0], 2)
    out = cv2.remap(np.asarray(mask, np.uint8), pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32),
                    cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out > 0


def supervision(ws: Workspace, rec_row: dict, rows, geometry: Geometry):
    """The corrected pairs of a recording, in thermal coordinates (:class:`gasdb_tools.refine.Supervision`).

    A pair counts when its document is ``edited`` or ``approved``, readable, drawn in the current
    geometry, not flagged ``ambiguous`` / ``water_spray`` / ``too_faint`` and not awaiting a
    re-check. ``__ignore__`` pixels do not count; ``no_leak`` documents count as no gas.
    """
    from gasdb_tools.refine import Supervision

    rows = _sorted_rows(rows)
    states = review.read_states(ws, pairs=[r["pair_id"] for r in rows])
    size = _thermal_size(ws, rec_row, rows)
    out = Supervision()
    for i, r in enumerate(rows):
        st = states.get(r["pair_id"])
        if (st is None or st.status not in ("edited", "approved") or st.error or st.exclude or st.recheck
                or "ambiguous" in st.flags or (st.geometry and st.geometry != geometry.key)):
            continue
        path = Path(st.path)
        try:
            doc = labelme_format.read(path)
            cls = labelme_format.rasterize(doc, file=path)
        except FormatError as exc:
            log.warning("preannotate %s: %s left out of the refinement: %s", rec_row["id"], path, exc)
            continue
        if (cls.shape[1], cls.shape[0]) != tuple(geometry.size):
            log.warning("preannotate %s: %s is %dx%d, the annotation frame %dx%d: left out of the refinement",
                        rec_row["id"], path, cls.shape[1], cls.shape[0], *geometry.size)
            continue
        out.indices.append(i)
        out.ids.append(r["pair_id"])
        out.masks.append(_to_thermal_frame(cls == 1, geometry, size))
        out.counted.append(_to_thermal_frame(cls != 255, geometry, size))
    return out


def _levels(stretch) -> tuple[float, float]:
    return (float(stretch.lo), float(stretch.hi)) if stretch is not None else (0.0, 255.0)


def _refine(ws, rec_row, rows, kind, geometry, draft, lead_in_s, options, threads=None):
    """(Refinement or None, Supervision, note)."""
    from gasdb_tools import refine as refine_mod

    sup = supervision(ws, rec_row, rows, geometry)
    if not len(sup):
        return None, sup, "no corrected pairs (edited or approved) to learn from: plain drafts"
    params = {k: v for k, v in draft["params"].items() if k != "lead_in_s"}
    stretch, _ = views.recording_stretch(ws, rec_row, rows)
    refinement = refine_mod.refine(lambda: thermal_stream(ws, rec_row, threads=threads), [float(r["t_thermal"]) for r in rows], sup,
                                   base=GasParams(**params), lead_in_s=lead_in_s, search=options["search"],
                                   window_s=options["window_s"], levels=_levels(stretch))
    return refinement, sup, ""


def _state_of(data: bytes | None, path: Path, pid: str) -> review.DocState | None:
    """The review state of a document's bytes (None when there is no file)."""
    if data is None:
        return None
    try:
        return review.document_state(labelme_format.loads(data, file=path), pair_id=pid, path=str(path))
    except FormatError as exc:
        return review.DocState(pair_id=pid, path=str(path), exists=True, status="edited", error=str(exc))


def _label_path(ws: Workspace, rec: str, pid: str) -> Path:
    return ws.output_path("labels", rec, f"{pid}.json")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _reproject(ws, rec, row, geometry: Geometry, kind: str, planned: str, entry, updates) -> None:
    """Carry an annotator's document into a new geometry (see the module docstring)."""
    pid = row["pair_id"]
    path = _label_path(ws, rec, pid)
    data = path.read_bytes()
    if review.raw_digest(data) != planned:
        entry["changed_meanwhile"] += 1
        return
    doc = labelme_format.loads(data, file=path)
    old = doc["gasdb"]["geometry"]
    try:
        old_geometry = Geometry.from_dict(old)
        change = geometry.matrix @ np.linalg.inv(old_geometry.matrix)
    except (KeyError, TypeError, ValueError, np.linalg.LinAlgError):
        log.warning("preannotate %s: %s records no usable geometry; left as it is", rec, path)
        return
    history = path.parent / ".history" / f"{pid}.{_now().replace(':', '')}.json"
    atomic_write_bytes(history, data)
    doc["shapes"] = labelme_format.transform_shapes(doc["shapes"], change, size=geometry.size)
    doc["imageWidth"], doc["imageHeight"] = int(geometry.size[0]), int(geometry.size[1])
    image = _annotator_image(ws, row, kind, None, rec)
    doc["imagePath"] = str(image.resolve())
    meta = doc["gasdb"]
    meta["geometry"] = geometry.to_dict()
    meta["frame"] = kind
    meta["frame_path"] = row.get(kind, "")
    meta.setdefault("reprojections", []).append(
        {"at": _now(), "from": old_geometry.key, "to": geometry.key, "previous_version": ws.rel(history),
         "transform": provenance.matrix_key(change)})
    doc.setdefault("flags", {})["approved"] = False
    rev = meta.setdefault("review", {})
    rev["recheck"] = {"reason": "the geometry changed: shapes re-projected, please check them",
                      "content_sha256": review.content_hash(doc)}
    if review.write_document(ws, path, doc, expected=planned):
        entry["reprojected"] += 1
        updates[pid] = {"label": ws.rel(path)}
    else:
        entry["changed_meanwhile"] += 1


def _read_frame(ws: Workspace, row: dict, kind: str) -> np.ndarray:
    return views.read_source(ws, row, kind)[0]


def _annotator_image(ws: Workspace, row: dict, kind: str, stretch, rec: str, frame=None) -> Path:
    """The 8-bit image LabelMe should open for this draft (an 8-bit view is written when needed).

    LabelMe opens a folder of images, so the folder must hold nothing else: the enhanced frames
    and the extracted thermal frames qualify; the aligned folder also holds ``*_valid.png``, so
    aligned frames get a view in ``labels/<rec>/images/`` even when they are 8-bit.
    """
    enhanced = row.get("enhanced") or ""
    if enhanced and ws.path(enhanced).is_file() and row.get("enhanced_source", kind) in ("", kind):
        return ws.path(enhanced)
    out = ws.output_path("labels", rec, f"{row['pair_id']}.png", sub="images")
    if frame is None:
        frame = _read_frame(ws, row, kind)
    if kind == "thermal" and frame.dtype == np.uint8 and ws.path(row["thermal"]).suffix.lower() == ".png":
        return ws.path(row["thermal"])
    if stretch is None:
        stretch = views.fit_stretch([(frame, None)])
    write_image(out, views.apply_stretch(frame, stretch), compression=1)
    return out


class _Tap:
    """Counts the frames of a stream and keeps the one at ``t_keep`` (to check the video's identity)."""

    def __init__(self, t_keep: float | None):
        self.t_keep = t_keep
        self.kept = None
        self.frames = 0

    def __call__(self, stream):
        for t, frame in stream:
            self.frames += 1
            if self.t_keep is not None and self.kept is None and abs(t - self.t_keep) <= dense.TOLERANCE_S:
                self.kept = frame
            yield t, frame


def _masks(ws, rec_row, rows, provenance_, lead_in_s, refinement, sup, tap, model=None, device="auto", threads=None):
    """``(pair index, thermal-frame mask, stats)`` from the dense stream (plain, refined or by the model)."""
    times = [float(r["t_thermal"]) for r in rows]

    def stream():
        tap.frames = 0
        return tap(thermal_stream(ws, rec_row, threads=threads))

    if model is not None:
        stretch, _ = views.recording_stretch(ws, rec_row, rows)
        return _model_masks(stream(), times, ws.path(model["path"]), sup, provenance_, lead_in_s, _levels(stretch),
                            device)
    if refinement is not None:
        from gasdb_tools.refine import refined_masks

        stretch, _ = views.recording_stretch(ws, rec_row, rows)
        return refined_masks(stream, times, refinement, sup, lead_in_s=lead_in_s, levels=_levels(stretch))
    params = dict(provenance_["params"])
    if provenance_["method"] == "gas":
        params.pop("lead_in_s", None)
        sub = GasSubtractor(params=GasParams(**params))
    else:
        sub = OpenCVSubtractor(provenance_["method"], **params)
    return dense.pair_masks(stream(), times, subtractor=sub, lead_in_s=lead_in_s, stats=True)


def _check_source(ws: Workspace, row: dict, rec_row: dict, decoded) -> None:
    """A pair's extracted frame must be the video's frame at its time: the same video."""
    rel = row.get("thermal") or ""
    if decoded is None or not rel or not ws.path(rel).is_file():
        return
    extracted = views.read_source(ws, row, "thermal")[0]
    if extracted.shape != decoded.shape or not np.array_equal(extracted, decoded):
        raise VideoError(f"pair {row['pair_id']}: the thermal video's frame at t = {row['t_thermal']} s differs from "
                         "the extracted frame: the video is not the one the pairs came from",
                         file=ws.path(rec_row["thermal"]),
                         fix="re-extract the recording (`gasdb extract --force`) or restore its video")


def _write_drafts(ws, rec, rows, kind, geometry, plan, provenance_, recipe, lead_in_s, entry, updates, rec_row,
                  sink, refinement=None, sup=None, model=None, device="auto") -> None:
    stretch, columns = views.recording_stretch(ws, rec_row, rows)
    if columns:
        sink.commit(IndexOps(recording={rec: columns}))
    first = next(r for r in rows if plan[r["pair_id"]][0] == "write")
    tap = _Tap(float(first["t_thermal"]))
    checked = False
    for i, mask, stats in progress(_masks(ws, rec_row, rows, provenance_, lead_in_s, refinement, sup, tap, model, device,
                                          sink.threads),
                                   total=len(rows), desc=f"preannotate {rec}", unit="pair"):
        r = rows[i]
        pid = r["pair_id"]
        action, planned = plan[pid]
        if action != "write":
            continue
        if not checked:
            _check_source(ws, first, rec_row, tap.kept)
            checked = True
        frame_mask = to_annotation_frame(mask, geometry)
        shapes = mask_to_shapes(frame_mask, mode=provenance_["mode"], epsilon_frac=provenance_["epsilon_frac"],
                                min_area=provenance_["min_area"], extra={"gasdb": {"source": "bgsub"}})
        image = _annotator_image(ws, r, kind, stretch, rec)
        path = _label_path(ws, rec, pid)
        doc = labelme_format.new_document(image.resolve(), int(geometry.size[1]), int(geometry.size[0]),
                                          shapes=shapes, flags={f: False for f in FLAGS})
        doc["gasdb"] = {
            "pair_id": pid,
            "recording": rec,
            "frame": kind,
            "frame_path": r.get(kind, ""),
            "rgb_path": r.get("rgb", ""),
            "thermal_raw_path": r.get("thermal", ""),
            "t_thermal": r.get("t_thermal", ""),
            "geometry": geometry.to_dict(),
            "preannot": {**provenance_, "thermal_sha256": rec_row.get("thermal_sha256", ""), "inputs": recipe,
                         "blobs": len(shapes), "stats": stats},
            "review": {"status": "pending", "annotator": None},
        }
        doc["gasdb"]["preannot"]["content_sha256"] = review.content_hash(doc)
        if review.write_document(ws, path, doc, expected=planned):
            entry["written"] += 1
            entry["empty"] += not shapes
            entry["review"]["pending"] += 1  # a fresh draft
            updates[pid] = {"label": ws.rel(path), "preannotate_inputs": recipe}
        else:
            entry["changed_meanwhile"] += 1
            _count_file(entry, path, pid)
            updates[pid] = {"label": ws.rel(path)}
        if len(updates) >= CHECKPOINT:  # drafts on disk reach the index as they come (bounded memory)
            sink.commit(IndexOps(pairs=dict(updates)))
            updates.clear()
    entry["frames_decoded"] = tap.frames


# ------------------------------------------------------------------------------------------
# model-assisted drafts
# ------------------------------------------------------------------------------------------
def _gas_params(provenance_: dict) -> GasParams:
    return GasParams(**{k: v for k, v in provenance_["params"].items() if k != "lead_in_s"})


def _inputs_at(stream, times, wanted: set, params: GasParams, lead_in_s: float, levels):
    """``(pair index, model inputs, background-model mask)`` at the pairs in ``wanted``."""
    from gasdb_tools.draftmodel import model_inputs

    clock = dense.PairTimes(times)
    sub = GasSubtractor(params=params)
    primed = dense.prime(stream, lead_in_s=lead_in_s, blur_ksize=params.blur_ksize)
    if primed.background is not None:
        sub.set_background(primed.background, static=primed.static)
    for t, _, blurred in primed.frames:
        mask = sub.apply(blurred, blurred=True)
        i = clock.match(t)
        if i is not None and i in wanted:
            yield i, model_inputs(blurred, sub.evidence(), levels), mask
    missing = clock.missing()
    if missing:
        raise ValueError(f"pair time t = {times[missing[0]]:.6f} s has no frame in the thermal stream")


def _train_model(ws: Workspace, recordings, provenance_: dict, lead_in_s: float, explicit_polarity: bool, config,
                 device) -> dict:
    """Train the draft model on the corrected pairs of the selected recordings; the checkpoint's description."""
    from gasdb_tools import draftmodel

    draftmodel.require_torch()
    config = config or draftmodel.TrainConfig()
    index = ws.read_index()
    inputs, truths, counted, used = [], [], [], []
    for rec in ws.select_recordings(recordings, index=index):
        rec_row = index.recordings[rec]
        rows = _sorted_rows(index.pairs_of(rec))
        if not rows:
            continue
        _, geometry = draft_geometry(ws, rec_row, rows)
        sup = supervision(ws, rec_row, rows, geometry)
        if not len(sup):
            continue
        draft = _with_polarity(provenance_, rec_row, explicit_polarity)
        stretch, _ = views.recording_stretch(ws, rec_row, rows)
        by_index = {i: k for k, i in enumerate(sup.indices)}
        for i, x, _ in _inputs_at(thermal_stream(ws, rec_row), [float(r["t_thermal"]) for r in rows], set(by_index),
                                  _gas_params(draft), lead_in_s, _levels(stretch)):
            k = by_index[i]
            inputs.append(x.astype(np.float16))
            truths.append(sup.masks[k])
            counted.append(sup.counted[k])
            used.append(sup.ids[k])
    if not inputs:
        raise WorkspaceError("no corrected pairs (edited or approved) to train the draft model on",
                             file=ws.root / "labels", fix="correct a few drafts in LabelMe first (`gasdb suggest` "
                                                          "lists which), or run without --model")
    net, info = draftmodel.train([x.astype(np.float32) for x in inputs], truths, counted, config=config,
                                 device=device)
    out = ws.root / "models" / "drafts.pt"
    sha = draftmodel.save(net, out, {**info, "pairs": used})
    final = ws.root / "models" / f"drafts-{sha[:12]}.pt"
    out.replace(final)
    return {"path": ws.rel(final), "sha256": sha, **info}


def _model_masks(stream, times, path, sup, provenance_, lead_in_s, levels, device):
    """``(pair index, mask, stats)`` of the pending pairs, drafted by the model."""
    from gasdb_tools import draftmodel
    from gasdb_tools.background import clean_mask

    net, info = draftmodel.load(path, device=device)
    params = _gas_params(provenance_)
    threshold = float(info["config"]["threshold"])
    pending = set(range(len(times))) - set(sup.indices)
    for i, x, base_mask in _inputs_at(stream, times, pending, params, lead_in_s, levels):
        prob = draftmodel.predict(net, x)
        mask = clean_mask(prob > threshold, open_size=params.open_size, close_size=params.close_size,
                          min_area_frac=params.min_area_frac)
        yield i, mask, dense.draft_stats(mask, prob, base_mask)
