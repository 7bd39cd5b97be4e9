"""Rig calibration files and the ``calibrate`` workspace stage.

A **rig calibration file** (``WS/calibration/<rig>.json``, format documented in
``calibration/README.md``) holds the one transform that maps thermal pixels to RGB pixels for a
fixed camera rig, how it was estimated (model, source frames, tool version, date) and how well
it fits (residual statistics, a consistency flag). :func:`calibrate_workspace` writes it from
frame pairs spread over the rig's recordings (:func:`gasdb_tools.registration.register_pairs`),
with a QA figure beside it; :mod:`gasdb_tools.align` warps every thermal frame into the RGB frame
with it (a valid-pixel mask beside), so one annotation serves both modalities.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gasdb_tools import __version__
from gasdb_tools.errors import CalibrationError, FormatError, WorkspaceError
from gasdb_tools.fsutil import atomic_write_bytes, read_json, write_json
from gasdb_tools.imaging import read_image, to_gray
from gasdb_tools.registration import (MODEL_CHOICES, MODELS, RadialDistortion, RigRegistration, estimate_distortion,
                                     register_pairs, warp_thermal)
from gasdb_tools.registration.distortion import undistort_thermal

#: What ``calibrate_workspace(distortion=...)`` accepts.
DISTORTION_MODES = ("keep", "estimate", "none")
from gasdb_tools.review import exclusions
from gasdb_tools.workspace import Workspace, check_id, is_thermal_only

__all__ = [
    "DISTORTION_MODES",
    "FORMAT",
    "FORMAT_VERSION",
    "Calibration",
    "calibration_from_registration",
    "validate_calibration",
    "read_calibration",
    "write_calibration",
    "calibration_path",
    "output_matrix",
    "select_pairs",
    "calibrate_workspace",
    "qa_figure",
    "recording_qa_figure",
    "geometry_key",
    "calibration_state",
    "refine_recordings",
    "refinement_path",
    "current_refinement",
]

log = logging.getLogger(__name__)

FORMAT = "gasdb-rig-calibration"
FORMAT_VERSION = 1
DIRECTION = "thermal_px_to_rgb_px"


# ----------------------------------------------------------------------------------------------
# the file format
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """A rig calibration: the thermal->RGB transform and its provenance and residuals.

    Attributes
    ----------
    rig : str
        Rig name (the file is ``calibration/<rig>.json``).
    model : str
        One of :data:`gasdb_tools.registration.MODELS`.
    matrix : (3, 3) float64 ndarray
        Maps thermal pixel coordinates to RGB pixel coordinates (``matrix[2, 2] == 1``).
    rgb_size, thermal_size : (int, int)
        (width, height) of the frames the matrix is for.
    score : float
        Mean ECC score (edge NCC) of the used frames at ``matrix``.
    consistent : bool
        False when the residuals disagree (see ``residuals["warnings"]``).
    residuals : dict
        Residual statistics (:meth:`gasdb_tools.registration.RigRegistration.stats`).
    source_frames : list of dict
        The frame pairs used or tried: ``pair_id, recording, rgb, thermal, used, reason, score,
        score_combined, corner_deviation_px``.
    method : dict
        How it was estimated (tool knobs).
    tool : dict
        ``{"name": "gasdb-tools", "version": ...}``.
    created : str
        UTC ISO-8601 time of estimation.
    qa_figure : str
        File name of the QA figure beside the JSON ('' if none).
    model_choice : dict
        How the model was chosen: ``{"requested": "auto" or a model, "reason": ...}``, with
        ``model='auto'`` also the held-out evidence (:meth:`ModelChoice.to_dict`); ``{}`` in files
        written before the choice existed.
    distortion : dict
        Radial distortion of the thermal lens, ``{}`` for none: ``{"model": "radial", "k1",
        "center", "radius", "source": "estimated" or "given", ...}``; ``matrix`` then maps
        undistorted thermal px (see :meth:`lens`).
    """

    rig: str
    model: str
    matrix: np.ndarray
    rgb_size: tuple
    thermal_size: tuple
    score: float
    consistent: bool
    residuals: dict = field(default_factory=dict)
    source_frames: list = field(default_factory=list)
    method: dict = field(default_factory=dict)
    tool: dict = field(default_factory=lambda: {"name": "gasdb-tools", "version": __version__})
    created: str = ""
    qa_figure: str = ""
    model_choice: dict = field(default_factory=dict)
    distortion: dict = field(default_factory=dict)

    def lens(self):
        """The thermal lens's :class:`~gasdb_tools.registration.RadialDistortion`, or None.

        Pass it to :func:`gasdb_tools.registration.warp_thermal` (``distortion=``) with ``matrix``.
        """
        if not self.distortion:
            return None
        return RadialDistortion(float(self.distortion["k1"]), tuple(self.thermal_size))

    def to_dict(self) -> dict:
        """The JSON document (see ``calibration/README.md``)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "rig": self.rig,
            "model": self.model,
            "direction": DIRECTION,
            "matrix": [[float(v) for v in row] for row in np.asarray(self.matrix, np.float64)],
            "rgb_size": [int(v) for v in self.rgb_size],
            "thermal_size": [int(v) for v in self.thermal_size],
            "score": _finite_or_none(self.score),
            "consistent": bool(self.consistent),
            "residuals": self.residuals,
            "source_frames": self.source_frames,
            "method": self.method,
            "tool": self.tool,
            "created": self.created,
            "qa_figure": self.qa_figure,
            "model_choice": self.model_choice,
            "distortion": self.distortion,
        }


def _finite_or_none(value):
    return round(float(value), 6) if value is not None and np.isfinite(value) else None


def validate_calibration(data, *, file=None) -> Calibration:
    """Check a parsed calibration document and return it as a :class:`Calibration`.

    Raises
    ------
    FormatError
        Naming the field that is missing or wrong, and the fix.
    """
    def bad(field_, message, fix="re-run `gasdb calibrate` to rewrite the file"):
        raise FormatError(message, file=file, field=field_, fix=fix)

    if not isinstance(data, dict):
        bad(None, "a calibration file must hold a JSON object")
    if data.get("format") != FORMAT:
        bad("format", f"expected {FORMAT!r}, got {data.get('format')!r}", fix="this is not a gasdb rig calibration")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        bad("format_version", f"unsupported version {version!r} (this gasdb reads {FORMAT_VERSION})",
            fix="use the gasdb version that wrote it, or re-run `gasdb calibrate`")
    for key in ("rig", "model", "matrix", "rgb_size", "thermal_size"):
        if key not in data:
            bad(key, "missing")
    rig = data["rig"]
    if not isinstance(rig, str) or not rig:
        bad("rig", f"must be a non-empty string, got {rig!r}")
    if data.get("direction", DIRECTION) != DIRECTION:
        bad("direction", f"must be {DIRECTION!r} (matrices map thermal px to RGB px), got {data.get('direction')!r}")
    model = data["model"]
    if model not in MODELS:
        bad("model", f"must be one of {', '.join(MODELS)}, got {model!r}")
    try:
        matrix = np.array(data["matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        bad("matrix", "must be a 3x3 array of numbers")
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        bad("matrix", f"must be a 3x3 array of finite numbers, got shape {matrix.shape}")
    if abs(matrix[2, 2]) < 1e-12 or abs(np.linalg.det(matrix)) < 1e-12:
        bad("matrix", "is singular (it cannot map the thermal frame)")
    matrix = matrix / matrix[2, 2]
    if model != "homography" and (abs(matrix[2, 0]) > 1e-12 or abs(matrix[2, 1]) > 1e-12):
        bad("matrix", f"a {model} matrix must have the last row [0, 0, 1]")
    sizes = {}
    for key in ("rgb_size", "thermal_size"):
        value = data[key]
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            bad(key, f"must be [width, height] with positive integers, got {value!r}")
        sizes[key] = (int(value[0]), int(value[1]))
    for key, kind in (("residuals", dict), ("source_frames", list), ("method", dict), ("tool", dict),
                      ("model_choice", dict)):
        if key in data and not isinstance(data[key], kind):
            bad(key, f"must be a JSON {'object' if kind is dict else 'array'}")
    score = data.get("score")
    if score is not None and not isinstance(score, (int, float)):
        bad("score", f"must be a number or null, got {score!r}")
    distortion = data.get("distortion", {})
    if not isinstance(distortion, dict):
        bad("distortion", "must be a JSON object ({} for no lens distortion)")
    if distortion:
        if distortion.get("model") != "radial":
            bad("distortion.model", f"must be 'radial', got {distortion.get('model')!r}")
        k1 = distortion.get("k1")
        if isinstance(k1, bool) or not isinstance(k1, (int, float)) or not math.isfinite(k1) or abs(k1) >= 0.5:
            bad("distortion.k1", f"must be a number with |k1| < 0.5, got {k1!r}",
                fix="give the thermal lens's first radial coefficient (r = 1 at the frame corners)")
        w, h = sizes["thermal_size"]
        for key, expected in (("center", [(w - 1) / 2, (h - 1) / 2]), ("radius", 0.5 * math.hypot(w - 1, h - 1))):
            if key in distortion and not np.allclose(distortion[key], expected, atol=1e-6):
                bad(f"distortion.{key}", f"must be {expected} for a {w}x{h} thermal frame (the frame centre and "
                    f"half its diagonal), got {distortion[key]!r}", fix=f"remove distortion.{key} or correct it")
    return Calibration(
        rig=rig, model=model, matrix=matrix, rgb_size=sizes["rgb_size"], thermal_size=sizes["thermal_size"],
        score=float(score) if score is not None else float("nan"), consistent=bool(data.get("consistent", True)),
        residuals=data.get("residuals", {}), source_frames=data.get("source_frames", []),
        method=data.get("method", {}), tool=data.get("tool", {}), created=str(data.get("created", "")),
        qa_figure=str(data.get("qa_figure", "")), model_choice=data.get("model_choice", {}),
        distortion=distortion)


def read_calibration(path) -> Calibration:
    """Read and validate a rig calibration file.

    Raises
    ------
    FormatError
        Missing file, malformed JSON or a wrong field (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError("calibration file not found", file=path,
                          fix="run `gasdb calibrate WS` (or `--rig NAME`) first")
    return validate_calibration(read_json(path, error=FormatError), file=path)


def write_calibration(path, calibration: Calibration) -> Path:
    """Write a calibration file atomically (deterministic JSON); validates it first."""
    doc = calibration.to_dict()
    validate_calibration(doc, file=path)
    return write_json(path, doc)


def calibration_path(ws: Workspace, rig: str) -> Path:
    """``WS/calibration/<rig>.json``."""
    return ws.root / "calibration" / f"{check_id(rig, what='rig name')}.json"


def calibration_from_registration(rig: str, result: RigRegistration, *, source_frames=(), method=None,
                                  qa_figure: str = "", created: str | None = None,
                                  requested_model: str | None = None, distortion: dict | None = None) -> Calibration:
    """Package a :class:`~gasdb_tools.registration.RigRegistration` as a :class:`Calibration`.

    ``requested_model`` (default: ``'auto'`` when the result carries a model choice, else its
    model) is recorded with the choice's evidence in ``model_choice``.
    """
    frames = []
    for meta, fr in zip(list(source_frames) or [{}] * len(result.frames), result.frames):
        frames.append({**meta, "used": bool(fr.used), "reason": fr.reason,
                       "score": _finite_or_none(fr.score), "score_combined": _finite_or_none(fr.score_combined),
                       "corner_deviation_px": _finite_or_none(fr.corner_deviation)})
    if created is None:
        created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    if result.model_choice is not None:
        choice = {"requested": requested_model or "auto", **result.model_choice.to_dict()}
    else:
        requested = requested_model or result.model
        choice = {"requested": requested, "model": result.model,
                  "reason": f"{requested} was requested (no held-out comparison)"}
    return Calibration(rig=rig, model=result.model, matrix=result.matrix, rgb_size=result.rgb_size,
                       thermal_size=result.thermal_size, score=result.score, consistent=result.consistent,
                       residuals=result.stats(), source_frames=frames, method=dict(method or {}),
                       created=created, qa_figure=qa_figure, model_choice=choice, distortion=dict(distortion or {}))


def output_matrix(matrix, rgb_size, out_size) -> np.ndarray:
    """Thermal px -> output px for an output that is the RGB frame resized to ``out_size``.

    Pixel centres follow ``cv2.resize``: ``x_out = (x + 0.5) * out_w / rgb_w - 0.5``.

    >>> output_matrix(np.eye(3), (1280, 1024), (640, 512)).round(3).tolist()
    [[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]]
    """
    (rw, rh), (ow, oh) = rgb_size, out_size
    sx, sy = ow / rw, oh / rh
    resize = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    out = resize @ np.asarray(matrix, np.float64)
    return out / out[2, 2]


# ----------------------------------------------------------------------------------------------
# calibrate
# ----------------------------------------------------------------------------------------------
def _rig_of(rec: dict, default: str) -> str:
    return rec.get("rig") or default


def select_pairs(pairs_by_recording: dict, frames: int) -> list[dict]:
    """Pick up to ``frames`` pairs spread over recordings (round robin) and over time within each.

    Deterministic: recording ``r`` gets ``frames // R`` pairs (the first ``frames % R`` one more,
    capped by what it has, the remainder going to the others), evenly spaced in its time order.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    recs = [r for r, rows in pairs_by_recording.items() if rows]
    quota = {r: 0 for r in recs}
    left = frames
    while left > 0:
        progressed = False
        for r in recs:
            if left > 0 and quota[r] < len(pairs_by_recording[r]):
                quota[r] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    chosen = []
    for r in recs:
        rows = pairs_by_recording[r]
        n = quota[r]
        if n == 0:
            continue
        # centres of n equal parts of the recording (avoids the very first and last frames)
        idx = sorted({min(len(rows) - 1, int((k + 0.5) * len(rows) / n)) for k in range(n)})
        chosen.extend(rows[i] for i in idx)
    return chosen


def calibrate_workspace(ws: Workspace, *, rig: str | None = None, model: str = "auto", frames: int = 20,
                        force: bool = False, refine: bool = True, figure: bool = True, distortion: str = "keep",
                        **options) -> dict:
    """Estimate the rig calibration(s) of a workspace from its extracted frame pairs.

    For each rig (``rig``, or every rig that has recordings), ``frames`` pairs are picked spread
    over its recordings and their time (:func:`select_pairs`; blacklisted pairs are skipped), and
    :func:`gasdb_tools.registration.register_pairs` estimates one transform from them (frames
    grouped by recording, so a camera that moved between recordings is flagged). The result is
    written to ``WS/calibration/<rig>.json`` with a QA figure ``<rig>_qa.png`` beside it. If the
    estimate fails, nothing is written and the error propagates.

    Parameters
    ----------
    ws : Workspace
    rig : str, optional
        Only this rig (default: every rig with recordings; a recording without a ``rig`` belongs
        to the workspace's rig from ``gasdb.json``).
    model : str
        ``'auto'`` (choose by held-out error: :func:`gasdb_tools.registration.selection.select_model`;
        recordings are the folds with three or more of them, else quadrants of the view) or one of
        :data:`gasdb_tools.registration.MODELS` to force it. The file and the report record the
        choice and why.
    frames : int
        Frame pairs to use (10-30 recommended).
    force : bool
        Recalibrate a rig that already has a calibration file (else it is skipped).
    refine : bool
        Joint multi-frame refinement (see :func:`~gasdb_tools.registration.register_pairs`).
    figure : bool
        Write the QA figure.
    distortion : {'keep', 'estimate', 'none'}
        Radial distortion of the thermal lens. ``keep``: use the one the rig's existing file gives
        (written by hand or estimated before; none if it has none), undistorting the thermal
        frames before registration; ``estimate``: estimate it jointly
        (:func:`gasdb_tools.registration.estimate_distortion`: one registration per candidate, so
        about 8x slower) and keep it only when the frames constrain it; ``none``: no distortion.
    **options
        Passed to :func:`~gasdb_tools.registration.register_pairs` (e.g. ``min_score``,
        ``max_deviation_px``, ``max_rotation``).

    Returns
    -------
    dict
        ``{"workspace", "rigs": [{"rig", "path", "figure", "skipped", "model", "model_requested",
        "model_reason", "distortion_k1", "matrix", "score", "consistent", "warnings", "frames_used",
        "frames_total", "corner_deviation_px"}]}``.

    Raises
    ------
    WorkspaceError
        Unknown rig, or a rig without extracted pairs.
    CalibrationError
        The frames did not give a trustworthy transform (no file is written).
    """
    if model not in MODEL_CHOICES:
        raise ValueError(f"model must be one of {MODEL_CHOICES}, got {model!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
    if distortion not in DISTORTION_MODES:
        raise ValueError(f"distortion must be one of {DISTORTION_MODES}, got {distortion!r}")
    index = ws.read_index()
    default_rig = ws.settings.get("rig") or "default"
    rigs: dict[str, list[str]] = {}
    for rec_id, rec in index.recordings.items():
        if not is_thermal_only(rec):  # a thermal camera alone has nothing to register
            rigs.setdefault(_rig_of(rec, default_rig), []).append(rec_id)
    if not rigs and index.recordings and rig is None:
        return {"workspace": str(ws.root), "rigs": [],
                "note": "every recording is a thermal camera alone: there is nothing to calibrate"}
    if rig is not None:
        check_id(rig, what="rig name")
        if rig not in rigs:
            raise WorkspaceError(f"no recordings use rig {rig!r} (rigs: {', '.join(sorted(rigs)) or 'none'})",
                                 file=ws.root / ws.RECORDINGS, field="rig",
                                 fix="check the name, or register recordings with that rig")
        wanted = [rig]
    else:
        wanted = sorted(rigs)
        if not wanted:
            raise WorkspaceError("the workspace has no recordings", file=ws.root / ws.RECORDINGS,
                                 fix="add recordings with `gasdb add` and run `gasdb extract`")
    blacklist = exclusions(ws, index)
    report = {"workspace": str(ws.root), "rigs": []}
    for name in wanted:
        path = calibration_path(ws, name)
        if path.exists() and not force:
            cal = read_calibration(path)
            report["rigs"].append({**_summary(cal, path), "skipped": True})
            continue
        by_rec = {r: [p for p in index.pairs_of(r) if p.get("rgb") and p.get("thermal")
                      and p["pair_id"] not in blacklist] for r in rigs[name]}
        chosen = select_pairs(by_rec, frames)
        if not chosen:
            raise WorkspaceError(f"rig {name!r} has no extracted frame pairs", file=ws.root / ws.PAIRS,
                                 fix="run `gasdb extract` first")
        pairs = [(read_image(ws.path(p["rgb"]), mode="rgb"), _thermal_gray(ws, p)) for p in chosen]
        opts = {"min_frames": min(3, len(pairs)), "model": model, "refine": refine,
                "groups": [p["recording"] for p in chosen], **options}
        given = read_calibration(path).distortion if distortion == "keep" and path.is_file() else {}
        lens_entry, evidence = {}, None
        try:
            if distortion == "estimate":
                est = estimate_distortion(pairs, **opts)
                result, evidence = est.registration, est.to_dict()
                if est.distortion is not None:
                    lens_entry = {**est.distortion.to_dict(), "source": "estimated"}
                    pairs = [(rgb, undistort_thermal(th, est.distortion)[0]) for rgb, th in pairs]
            elif given:
                lens = RadialDistortion(float(given["k1"]), pairs[0][1].shape[1::-1])
                pairs = [(rgb, *undistort_thermal(th, lens)) for rgb, th in pairs]
                result = register_pairs(pairs, **opts)
                lens_entry = {**lens.to_dict(), "source": given.get("source", "given")}
            else:
                result = register_pairs(pairs, **opts)
        except CalibrationError as exc:
            raise CalibrationError(f"rig {name!r}: {exc.message}", file=path, fix=exc.fix) from None
        source = [{"pair_id": p["pair_id"], "recording": p["recording"], "rgb": p["rgb"], "thermal": p["thermal"],
                   "extract_digest": p.get("extract_digest", "")} for p in chosen]
        fig_name = f"{name}_qa.png" if figure else ""
        method = {"features": "edge strength x doubled-angle direction (sigma 1.5 px)",
                  "search": "rotation x scale grid + phase correlation", "refinement": "pyramid ECC (LM)",
                  "combination": "median of projected corners" + (" + joint refinement" if refine else ""),
                  "model": "held-out ECC error, one-standard-error rule" if model == "auto" else "given",
                  "frames_requested": frames, "options": {k: _jsonable(v) for k, v in sorted(options.items())}}
        method["distortion"] = distortion
        if evidence is not None:
            method["distortion_evidence"] = evidence
        cal = calibration_from_registration(name, result, source_frames=source, method=method, qa_figure=fig_name,
                                            requested_model=model, distortion=lens_entry)
        if figure:
            best = max((f for f in result.frames if f.used), key=lambda f: f.score_combined)
            rgb, thermal = pairs[best.index][:2]  # the thermal frame undistorted when the lens has distortion
            qa_figure(path.parent / fig_name, rgb, thermal, result,
                      title=f"rig {name}: {chosen[best.index]['pair_id']}")
        write_calibration(path, cal)
        log.info("calibrated rig %s from %d frames: consistent=%s", name, len(result.used), result.consistent)
        report["rigs"].append({**_summary(cal, path), "skipped": False})
    return report


def _jsonable(value):
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _thermal_gray(ws: Workspace, pair: dict) -> np.ndarray:
    frame = read_image(ws.path(pair["thermal"]))
    return to_gray(frame) if frame.ndim == 3 else frame


def _summary(cal: Calibration, path: Path) -> dict:
    res = cal.residuals or {}
    return {"rig": cal.rig, "path": str(path), "figure": str(path.parent / cal.qa_figure) if cal.qa_figure else None,
            "model": cal.model, "model_requested": cal.model_choice.get("requested", cal.model),
            "model_reason": cal.model_choice.get("reason", ""),
            "distortion_k1": cal.distortion.get("k1") if cal.distortion else None,
            "matrix": cal.matrix.tolist(), "score": _finite_or_none(cal.score),
            "consistent": cal.consistent, "warnings": list(res.get("warnings", [])),
            "frames_used": res.get("frames_used"), "frames_total": res.get("frames_total"),
            "corner_deviation_px": res.get("corner_deviation_px")}


# ----------------------------------------------------------------------------------------------
# QA figure
# ----------------------------------------------------------------------------------------------
def _stretch(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    lo, hi = np.percentile(x, (1, 99))
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def qa_figure(path, rgb, thermal, result: RigRegistration, *, title: str = "") -> Path:
    """Write the calibration QA figure (PNG, matplotlib Agg).

    Panels: edge overlay before (nominal transform: the thermal frame scaled onto the RGB frame)
    and after (the calibration), thermal edges magenta, RGB edges green, overlap white; a 8x8
    checkerboard blend of the RGB frame and the warped thermal frame; per-frame corner deviation
    and score; the per-block residual shifts (arrows, RGB px, x10).
    """
    from matplotlib.figure import Figure  # object-oriented API, Agg canvas: no pyplot, no display

    from gasdb_tools.registration import default_initial, edge_features

    rgb_gray = to_gray(np.asarray(rgb))
    size = (rgb_gray.shape[1], rgb_gray.shape[0])
    f_rgb = edge_features(rgb_gray)
    f_th = edge_features(thermal)
    nominal = default_initial(result.rgb_size, result.thermal_size)

    def overlay(matrix):
        warped, valid = warp_thermal(f_th, matrix, size)
        return np.dstack([warped, f_rgb, warped]) * np.float32(0.85) + np.float32(0.15) * valid[..., None]

    th_warped, valid = warp_thermal(_stretch(thermal), result.matrix, size)
    g = _stretch(rgb_gray)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    cell = max(size) // 8
    checker = ((yy // cell + xx // cell) % 2).astype(bool) & valid
    blend = np.where(checker, th_warped, g)

    fig = Figure(figsize=(12, 9), dpi=100)
    axes = fig.subplots(2, 2)
    axes[0, 0].imshow(np.clip(overlay(nominal), 0, 1))
    axes[0, 0].set_title("edges before (nominal): thermal magenta, RGB green")
    axes[0, 1].imshow(np.clip(overlay(result.matrix), 0, 1))
    axes[0, 1].set_title(f"edges after ({result.model}, score {result.score:.3f})")
    axes[1, 0].imshow(blend, cmap="gray", vmin=0, vmax=1)
    axes[1, 0].set_title("checkerboard: RGB / warped thermal")
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[1, 1]
    idx = [f.index for f in result.frames]
    dev = [f.corner_deviation for f in result.frames]
    colours = ["tab:blue" if f.used else "tab:red" for f in result.frames]
    ax.bar(idx, [d if np.isfinite(d) else 0 for d in dev], color=colours)
    ax.set_xlabel("frame (red: not used)")
    ax.set_ylabel("corner deviation from result (px)")
    ax2 = ax.twinx()
    ax2.plot(idx, [f.score_combined for f in result.frames], "k.", label="score at result")
    ax2.set_ylabel("edge correlation at result")
    state = "consistent" if result.consistent else "FLAGGED: " + "; ".join(result.warnings)[:90]
    ax.set_title(f"{len(result.used)}/{len(result.frames)} frames used - {state}", fontsize=9)
    _block_arrows(axes[0, 1], result.block_shifts, size)  # block residuals on the 'after' panel, x10
    if title:
        fig.suptitle(f"{title} (yellow: block residuals x10)")
    if result.model_choice is not None:
        fig.text(0.01, 0.005, textwrap.shorten("model: " + result.model_choice.reason, 230), fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def recording_qa_figure(path, rgb, thermal, refinement, *, title: str = "") -> Path:
    """Write the QA figure of a per-recording refinement (PNG, matplotlib Agg).

    ``refinement`` is a :class:`gasdb_tools.registration.recording.RecordingRefinement` and
    ``rgb``/``thermal`` one of its frame pairs (``refinement.best_frame``). Panels: edge overlays
    at the rig matrix and at the refined matrix (thermal magenta, RGB green) with the block
    residuals (yellow arrows, x10); the edge correlation of every frame before and after.
    """
    from matplotlib.figure import Figure

    from gasdb_tools.registration import edge_features

    rgb_gray = to_gray(np.asarray(rgb))
    size = (rgb_gray.shape[1], rgb_gray.shape[0])
    f_rgb = edge_features(rgb_gray)
    f_th = edge_features(thermal)
    fig = Figure(figsize=(12, 8), dpi=100)
    axes = fig.subplots(2, 2)
    for ax, matrix, blocks, label in ((axes[0, 0], refinement.rig_matrix, refinement.block_shifts_rig, "rig"),
                                      (axes[0, 1], refinement.matrix, refinement.block_shifts, "refined")):
        warped, valid = warp_thermal(f_th, matrix, size)
        ax.imshow(np.clip(np.dstack([warped, f_rgb, warped]) * np.float32(0.85)
                          + np.float32(0.15) * valid[..., None], 0, 1))
        _block_arrows(ax, blocks, size)
        ax.set_title(f"{label} matrix: mean edge correlation "
                     f"{refinement.score_rig if label == 'rig' else refinement.score:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[1, 0]
    idx = np.arange(len(refinement.frame_scores))
    before, after = np.array(refinement.frame_scores).T
    ax.bar(idx - 0.2, before, 0.4, label="rig")
    ax.bar(idx + 0.2, after, 0.4, label="refined")
    ax.set_xlabel("frame pair")
    ax.set_ylabel("edge correlation")
    ax.legend(fontsize=8)
    axes[1, 1].axis("off")
    u = refinement.update
    axes[1, 1].text(0, 0.9, f"update ({refinement.model}, prior {refinement.prior_px:g} px):\n"
                            + "\n".join("  ".join(f"{v:9.4f}" for v in row) for row in u)
                            + f"\ncorner shift mean {refinement.shift_px[0]:.2f} px, max {refinement.shift_px[1]:.2f} px",
                    family="monospace", fontsize=9, va="top")
    if title:
        fig.suptitle(f"{title} (yellow: block residuals x10)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())
def _block_arrows(ax, blocks, size):
    rows, cols = blocks.shape[:2]
    for i in range(rows):
        for j in range(cols):
            dx, dy = blocks[i, j]
            if not (np.isfinite(dx) and np.isfinite(dy)):
                continue
            cx, cy = (j + 0.5) * size[0] / cols, (i + 0.5) * size[1] / rows
            ax.annotate("", xy=(cx + 10 * dx, cy + 10 * dy), xytext=(cx, cy),
                        arrowprops={"arrowstyle": "->", "color": "yellow", "lw": 1.5})



# ----------------------------------------------------------------------------------------------
# provenance of a rig calibration, and per-recording refinements on top of it
# ----------------------------------------------------------------------------------------------
REFINEMENT_FORMAT = "gasdb-recording-refinement"


def geometry_key(cal: Calibration) -> str:
    """Digest of what a calibration does to pixels (matrix, frame sizes, lens distortion), not of
    when or how it was written: a rewritten file with the same geometry keeps its digest."""
    from gasdb_tools import provenance

    return provenance.digest("rig", provenance.matrix_key(cal.matrix), list(cal.rgb_size), list(cal.thermal_size),
                             float((cal.distortion or {}).get("k1", 0.0)))


def calibration_state(ws: Workspace, cal: Calibration, index=None) -> tuple[str, str]:
    """``("done", "")`` or ``("stale", why)``: stale when a frame pair it was estimated from is gone
    from the index or its frames changed since (their ``extract_digest``)."""
    index = index or ws.read_index()
    changed = []
    for frame in cal.source_frames or []:
        if not isinstance(frame, dict) or not frame.get("used", True):
            continue
        pair = index.pairs.get(frame.get("pair_id", ""))
        if pair is None:
            changed.append(f"{frame.get('pair_id')} (gone)")
        elif frame.get("extract_digest") and pair.get("extract_digest") != frame["extract_digest"]:
            changed.append(f"{frame['pair_id']} (re-extracted)")
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return "stale", f"estimated from frames that changed since: {', '.join(changed[:3])}{more}"
    return "done", ""


def refinement_path(ws: Workspace, recording: str) -> Path:
    """``WS/calibration/recordings/<recording>.json``."""
    return ws.root / "calibration" / "recordings" / f"{check_id(recording)}.json"


def current_refinement(ws: Workspace, rec: dict, cal: Calibration) -> tuple[np.ndarray | None, str]:
    """The recording's refined thermal -> RGB matrix when its refinement was computed on this rig
    calibration, and its state: ``none``, ``current`` or ``stale`` (the rig was recalibrated since;
    the rig matrix is used until ``gasdb calibrate --per-recording`` runs again)."""
    path = refinement_path(ws, rec["id"])
    if not path.is_file():
        return None, "none"
    doc = read_json(path, error=FormatError)
    if not isinstance(doc, dict) or doc.get("format") != REFINEMENT_FORMAT:
        raise FormatError("not a gasdb recording refinement", file=path, field="format",
                          fix="delete it and run `gasdb calibrate --per-recording` again")
    if doc.get("rig_calibration") != geometry_key(cal):
        return None, "stale"
    try:
        matrix = np.asarray(doc["matrix"], np.float64)
        if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise FormatError("matrix must be a 3x3 array of numbers", file=path, field="matrix",
                          fix="delete it and run `gasdb calibrate --per-recording` again") from None
    return matrix, "current"


def refine_recordings(ws: Workspace, *, recordings=None, frames: int = 12, model: str = "translation",
                      prior_px: float = 2.0, figure: bool = True, jobs: int = 1) -> dict:
    """Refine the rig calibration for each recording (:func:`gasdb_tools.registration.refine_recording`).

    A fixed rig has parallax: one homography cannot align a plume 3 m away and one 20 m away.
    Each recording gets a small, regularised update on top of its rig's calibration (the scene's
    depth plane), estimated from ``frames`` pairs spread over it, written to
    ``calibration/recordings/<rec>.json`` with the rig calibration it was computed on, its
    residuals before and after, and a QA figure; ``align`` then uses it (stale once the rig is
    recalibrated). Recordings of a thermal camera alone are skipped.

    Returns
    -------
    dict
        The stage runner's summary; each recording has ``path``, ``shift_px``, ``score_rig``,
        ``score`` (edge correlation before / after) and ``status`` (``done`` or ``n/a``).
    """
    from gasdb_tools.registration.recording import UPDATE_MODELS
    from gasdb_tools.stages import run_stage

    if model not in UPDATE_MODELS:
        raise ValueError(f"model must be one of {UPDATE_MODELS}, got {model!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
    return run_stage(ws, "calibrate", _refine_work, recordings=recordings, jobs=jobs,
                     options={"frames": frames, "model": model, "prior_px": float(prior_px), "figure": figure},
                     defaults={"path": None, "shift_px": None, "score_rig": None, "score": None})


def _refine_work(ws: Workspace, rec_id: str, sink, *, frames, model, prior_px, figure) -> dict:
    from gasdb_tools.registration import refine_recording
    from gasdb_tools.registration.distortion import undistort_thermal

    index = ws.read_index()
    rec = index.recordings[rec_id]
    if is_thermal_only(rec):
        return {"status": "n/a", "path": None, "shift_px": None, "score_rig": None, "score": None}
    rig = _rig_of(rec, ws.settings.get("rig") or "default")
    cal_path = calibration_path(ws, rig)
    if not cal_path.is_file():
        raise CalibrationError(f"no calibration for rig {rig!r}", file=cal_path,
                               fix=f"run `gasdb calibrate {ws.root} --rig {rig}` first")
    cal = read_calibration(cal_path)
    black = exclusions(ws, index)
    rows = [p for p in index.pairs_of(rec_id) if p.get("rgb") and p.get("thermal") and p["pair_id"] not in black]
    chosen = select_pairs({rec_id: rows}, frames)
    if not chosen:
        raise WorkspaceError(f"recording {rec_id} has no extracted frame pairs", file=ws.root / ws.PAIRS,
                             fix="run `gasdb extract` first")
    lens = cal.lens()
    pairs = []
    for p in chosen:
        rgb, thermal = read_image(ws.path(p["rgb"]), mode="rgb"), _thermal_gray(ws, p)
        pairs.append((rgb, *undistort_thermal(thermal, lens)) if lens is not None else (rgb, thermal))
    try:
        ref = refine_recording(pairs, cal.matrix, model=model, prior_px=prior_px)
    except CalibrationError as exc:
        raise CalibrationError(f"recording {rec_id}: {exc.message}", file=refinement_path(ws, rec_id),
                               fix=exc.fix) from None
    path = refinement_path(ws, rec_id)
    fig_name = f"{rec_id}_qa.png" if figure else ""
    if figure:
        best = pairs[ref.best_frame]
        recording_qa_figure(path.parent / fig_name, best[0], best[1], ref,
                            title=f"recording {rec_id} on rig {rig}: {chosen[ref.best_frame]['pair_id']}")
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    write_json(path, {
        "format": REFINEMENT_FORMAT, "format_version": 1, "recording": rec_id, "rig": rig,
        "rig_calibration": geometry_key(cal), "direction": DIRECTION,
        "update": [[float(v) for v in row] for row in ref.update],
        "matrix": [[float(v) for v in row] for row in ref.matrix],
        "model": model, "prior_px": prior_px, "stats": ref.stats(),
        "source_frames": [{"pair_id": p["pair_id"], "extract_digest": p.get("extract_digest", "")} for p in chosen],
        "tool": {"name": "gasdb-tools", "version": __version__}, "created": created, "qa_figure": fig_name})
    return {"path": str(path), "shift_px": [float(v) for v in ref.shift_px], "score_rig": float(ref.score_rig),
            "score": float(ref.score)}
