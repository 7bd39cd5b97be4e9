"""The ``preannotate`` stage: LabelMe drafts of the gas masks, by background subtraction.

For every recording of a workspace, the stage runs :func:`gasdb_tools.background.gas_masks` over
the recording's pair frames **in time order** and writes one LabelMe document per pair,
``labels/<rec>/<pair>.json``: the mask's blobs as editable ``gas`` polygons
(:func:`gasdb_tools.polygons.mask_to_shapes`), provenance in a top-level ``gasdb`` key, and the
review status ``pending``. pairs.csv gets ``label`` (the JSON's path) and ``preannotate_inputs``.

**Which frames, which coordinates.** Drafts are drawn in the recording's annotation frame
(:mod:`gasdb_tools.align`, ``docs/design.md`` §5): the aligned frames (thermal warped into the RGB frame) once a
recording with an RGB camera is aligned, the thermal frames of a thermal camera alone. Before
alignment, drafts are made on the extracted thermal frames in thermal coordinates (reported per
recording). Pixels outside the aligned thermal image (``valid`` = 0) are never gas. Each document
records the geometry it is drawn in (``gasdb.geometry``: frame kind, size, the thermal-to-frame
transform and its key).

**Provenance and staleness.** A draft records its recipe (``gasdb.preannot.inputs``, also
pairs.csv ``preannotate_inputs``): the method and its parameters, the geometry and the digests of
every frame of the recording it was computed from. A plain rerun rewrites exactly the untouched
drafts whose recipe changed (new frames, a new alignment, other parameters) and writes the
missing ones.

**The image an annotator sees** (``imagePath``, relative to the JSON): the enhanced frame when it
exists in the draft's coordinates; otherwise an 8-bit view of the frame the detection ran on,
written once to ``labels/<rec>/images/<pair>.png`` with the recording's one contrast stretch
(:mod:`gasdb_tools.views`), because LabelMe 6.x cannot open 16-bit PNGs (``docs/formats.md`` §1.3).
The document's ``gasdb`` block is described in ``docs/formats.md`` §1.4.

**Never overwrite annotator work.** Only an *untouched* draft (:mod:`gasdb_tools.review`: its
content equals what was written and nobody reviewed it) is ever replaced, with or without
``force``, and only through :func:`gasdb_tools.review.write_document`: compare-and-swap on the
file's bytes under the workspace lock, so a LabelMe autosave between planning and writing wins.
When the geometry under an edited or approved document changes (a recalibration, another
``align --size``), its shapes are re-projected through the change of transform
(:func:`gasdb_tools.labelme_format.transform_shapes`, exact for vertices), the old version is
kept in ``labels/<rec>/.history/``, the re-projection is recorded in the document's provenance,
its approval is withdrawn and it is marked for re-review (``recheck``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

import numpy as np

from gasdb_tools import __version__, labelme_format, provenance, review, views
from gasdb_tools.align import Geometry, annotation_frame, parse_size
from gasdb_tools.background import DEFAULTS, METHODS, OPENCV_DEFAULTS, POLARITIES, gas_masks, preset_params
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.fsutil import atomic_write_bytes
from gasdb_tools.imaging import read_image, write_image
from gasdb_tools.polygons import DEFAULT_EPSILON_FRAC, MODES, mask_to_shapes
from gasdb_tools.progress import progress
from gasdb_tools.stages import IndexOps, run_stage
from gasdb_tools.workspace import Workspace, is_thermal_only

__all__ = [
    "REVIEW_STATUSES",
    "FLAGS",
    "preannotate_workspace",
    "preannotate_recipe",
    "recording_polarity",
    "draft_geometry",
    "expected_inputs",
]

log = logging.getLogger(__name__)

REVIEW_STATUSES = review.REVIEW_STATUSES
#: Image-level flags every draft carries (all false), as in the shipped LabelMe config
#: (``gasdb_tools/annotation/labelme.yaml``).
FLAGS = review.FLAGS


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
                          min_area: float = 20.0, jobs: int = 1, **params) -> dict:
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
        Blobs smaller than this many pixels get no shape.
    jobs : int
        Recordings in parallel worker processes.
    **params
        Knobs of the method (``polarity``, ``k``, ``learning_rate``, ...; see
        :data:`gasdb_tools.background.DEFAULTS`). Without ``polarity``, a recording that declares
        one (:func:`recording_polarity`: recordings.csv ``polarity`` column or an ``absorbing`` /
        ``emitting`` tag) uses it; the others use ``both``. Knowing the sign removes false alarms
        of the other sign (a warm person in front of a cold plume).

    Returns
    -------
    dict
        The stage runner's summary plus ``method, preset, params, written, kept_edited,
        reprojected, changed_meanwhile, review`` (``review``: counts read from the documents after
        the run); each recording has ``id, pairs, frame ('aligned'|'thermal'), polarity, written,
        skipped, kept_edited, reprojected, changed_meanwhile, empty, error``.

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
    provenance_ = {"method": method, "preset": preset or ("mask" if method == "gas" else None),
                   "params": {**full, "lead_in_s": lead_in_s} if method == "gas" else full,
                   "mode": mode, "epsilon_frac": float(epsilon_frac), "min_area": float(min_area),
                   "tool_version": f"gasdb-tools {__version__}"}
    report = run_stage(ws, "preannotate", _preannotate_work, recordings=recordings, jobs=jobs,
                       options={"draft": provenance_, "force": force, "lead_in_s": lead_in_s,
                                "explicit_polarity": "polarity" in params},
                       defaults={"pairs": 0, "frame": None, "polarity": None, "written": 0, "skipped": 0,
                                 "kept_edited": 0, "reprojected": 0, "changed_meanwhile": 0, "empty": 0})
    recs = report["recordings"]
    index = ws.read_index()
    wanted = [r["id"] for r in recs]
    ids = [p for p in index.pairs if index.pairs[p]["recording"] in wanted]
    return {**report, "method": method, "preset": provenance_["preset"], "params": provenance_["params"],
            "written": sum(r["written"] for r in recs), "kept_edited": sum(r["kept_edited"] for r in recs),
            "reprojected": sum(r["reprojected"] for r in recs),
            "changed_meanwhile": sum(r["changed_meanwhile"] for r in recs),
            "review": review.counts(review.read_states(ws, index, pairs=ids), ids)}


def draft_geometry(ws: Workspace, rec: dict, rows) -> tuple[str, Geometry]:
    """``(frame kind, geometry)`` the drafts of a recording are drawn in now: ``aligned`` in its
    annotation frame once every pair is aligned, else ``thermal`` in the thermal frame."""
    frame = annotation_frame(ws, rec)
    if frame is not None and frame.kind == "rgb" and rows and all(
            r.get("aligned") and ws.path(r["aligned"]).is_file() for r in rows):
        return "aligned", frame
    size = parse_size(rec.get("thermal_size") or "")
    if not size or size[1] is None:
        size = views.read_source(ws, rows[0], "thermal")[0].shape[::-1] if rows else (1, 1)
    return "thermal", Geometry("thermal", tuple(int(v) for v in size), np.eye(3))


def preannotate_recipe(rows, kind: str, geometry: Geometry, provenance_: dict) -> str:
    """The recipe of a recording's drafts: method and parameters, geometry, every source frame in order."""
    settings = {k: v for k, v in provenance_.items() if k != "tool_version"}
    return provenance.recipe("preannotate", geometry.key, kind,
                             *[views.source_digest(r, kind) or r["pair_id"] for r in rows], params=settings)


def _preannotate_work(ws: Workspace, rec: str, sink, *, draft, force, lead_in_s, explicit_polarity) -> dict:
    index = ws.read_index()
    rec_row = index.recordings[rec]
    rows = sorted(index.pairs_of(rec), key=lambda r: (float(r.get("t_thermal") or 0), r["pair_id"]))
    entry = {"pairs": len(rows), "frame": None, "polarity": draft["params"].get("polarity"), "written": 0,
             "skipped": 0, "kept_edited": 0, "reprojected": 0, "changed_meanwhile": 0, "empty": 0}
    known = recording_polarity(rec_row)
    if draft["method"] == "gas" and not explicit_polarity and known:
        draft = {**draft, "params": {**draft["params"], "polarity": known}}
        entry["polarity"] = known
    if not rows:
        return entry
    kind, geometry = draft_geometry(ws, rec_row, rows)
    entry["frame"] = kind
    recipe = preannotate_recipe(rows, kind, geometry, draft)
    plan: dict[str, tuple[str, str]] = {}  # pair id -> (action, raw digest of the bytes the plan was made from)
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
            plan[pid] = ("write", raw) if force or not current else ("skip", raw)
        elif state.geometry and state.geometry != geometry.key and not state.error:
            plan[pid] = ("reproject", raw)
        else:
            plan[pid] = ("keep", raw)
    entry["skipped"] = sum(1 for a, _ in plan.values() if a == "skip")
    entry["kept_edited"] = sum(1 for a, _ in plan.values() if a in ("keep", "reproject"))
    updates: dict[str, dict] = {r["pair_id"]: {"label": ws.rel(_label_path(ws, rec, r["pair_id"]))}
                                for r in rows if plan[r["pair_id"]][0] in ("skip", "keep")}
    for r in rows:
        if plan[r["pair_id"]][0] == "reproject":
            _reproject(ws, rec, r, geometry, kind, plan[r["pair_id"]][1], entry, updates)
    if any(a == "write" for a, _ in plan.values()):
        _write_drafts(ws, rec, rows, kind, geometry, plan, draft, recipe, lead_in_s, entry, updates, rec_row, sink)
    sink.commit(IndexOps(pairs=updates, recording={rec: {"preannotate_settings": json.dumps(
        {k: v for k, v in draft.items() if k != "tool_version"}, sort_keys=True)}}))
    return entry


def expected_inputs(ws: Workspace, rec_row: dict, rows) -> str | None:
    """The recipe a recording's untouched drafts should have now (with the settings it last used);
    None when it was never pre-annotated."""
    try:
        settings = json.loads(rec_row.get("preannotate_settings") or "null")
    except ValueError:
        settings = None
    if not isinstance(settings, dict) or not rows:
        return None
    rows = sorted(rows, key=lambda r: (float(r.get("t_thermal") or 0), r["pair_id"]))
    kind, geometry = draft_geometry(ws, rec_row, rows)
    return preannotate_recipe(rows, kind, geometry, settings)


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


def _write_drafts(ws, rec, rows, kind, geometry, plan, provenance_, recipe, lead_in_s, entry, updates, rec_row,
                  sink) -> None:
    method, params = provenance_["method"], dict(provenance_["params"])
    if method == "gas":
        params.pop("lead_in_s", None)
        t0 = float(rows[0].get("t_thermal") or 0)
        params["lead_in"] = sum(1 for r in rows if float(r.get("t_thermal") or 0) < t0 + lead_in_s)
    stretch, columns = views.recording_stretch(ws, rec_row, rows)
    if columns:
        sink.commit(IndexOps(recording={rec: columns}))
    frames = (_read_frame(ws, r, kind) for r in rows)
    pairs = progress(_frames_and_masks(frames, method, params), total=len(rows), desc=f"preannotate {rec}",
                     unit="frame")
    for r, (frame, mask) in zip(rows, pairs):
        pid = r["pair_id"]
        action, planned = plan[pid]
        if action != "write":
            continue
        if kind == "aligned" and r.get("valid") and ws.path(r["valid"]).is_file():
            valid = read_image(ws.path(r["valid"]))
            mask = mask & (valid > 0)
        shapes = mask_to_shapes(mask, mode=provenance_["mode"], epsilon_frac=provenance_["epsilon_frac"],
                                min_area=provenance_["min_area"], extra={"gasdb": {"source": "bgsub"}})
        image = _annotator_image(ws, r, kind, stretch, rec, frame)
        path = _label_path(ws, rec, pid)
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
            "geometry": geometry.to_dict(),
            "preannot": {**provenance_, "inputs": recipe, "blobs": len(shapes)},
            "review": {"status": "pending", "annotator": None},
        }
        doc["gasdb"]["preannot"]["content_sha256"] = review.content_hash(doc)
        if review.write_document(ws, path, doc, expected=planned):
            entry["written"] += 1
            entry["empty"] += not shapes
            updates[pid] = {"label": ws.rel(path), "preannotate_inputs": recipe}
        else:
            entry["changed_meanwhile"] += 1
            updates[pid] = {"label": ws.rel(path)}


def _frames_and_masks(frames, method, params):
    """``(frame, mask)`` in time order, reading each frame once (the lead-in is held by gas_masks)."""
    held = []

    def feed():
        for f in frames:
            held.append(f)
            yield f

    for mask in gas_masks(feed(), method=method, **params):
        yield held.pop(0), mask
