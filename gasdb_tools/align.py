"""The annotation frame of each recording, and the ``align`` stage that warps thermal frames into it.

**The annotation frame.** People draw on one image per pair, and one mask must serve both
cameras, so every recording has an *annotation frame*:

* a recording with an RGB camera: the RGB frame at the camera's **native size** (nothing is
  stretched; ``align --size`` chooses another size, and ``--size W`` keeps the aspect ratio);
  the thermal frame is warped into it with the rig calibration (:func:`expected_geometry`);
* a thermal camera alone: the thermal frame itself (identity transform); ``align`` does not apply.

A :class:`Geometry` is that frame's size and the 3x3 transform from thermal pixels to frame
pixels. Its ``key`` is a digest of both: every artifact drawn in the frame (aligned and enhanced
frames, LabelMe documents) records the key it was made in, so a change of calibration or size is
seen everywhere downstream (:mod:`gasdb_tools.provenance`).

**The stage.** :func:`align_workspace` writes ``aligned/<rec>/<pair>.png`` (the thermal bit depth
kept) and ``aligned/<rec>/<pair>_valid.png`` (uint8, 255 where the pixel comes from inside the
thermal frame), and per pair ``aligned``, ``valid``, ``align_digest`` and ``align_inputs`` (the
recipe: the pair's ``extract_digest`` and the geometry key). The recording records what it
asked for (``align_params``) and the geometry its frames are in (``align_geometry``). A pair is
redone when its recipe differs from today's (a new calibration, another size, re-extracted
frames) or its files are missing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from gasdb_tools import provenance
from gasdb_tools.calibration import calibration_path, current_refinement, output_matrix, read_calibration
from gasdb_tools.errors import CalibrationError, WorkspaceError
from gasdb_tools.imaging import read_image, write_image
from gasdb_tools.progress import progress
from gasdb_tools.registration import RadialDistortion, warp_thermal
from gasdb_tools.stages import IndexOps, map_ordered, run_stage
from gasdb_tools.workspace import Workspace, is_thermal_only

__all__ = [
    "Geometry",
    "INTERPOLATIONS",
    "parse_size",
    "frame_size",
    "expected_geometry",
    "annotation_frame",
    "align_recipe",
    "align_workspace",
]

log = logging.getLogger(__name__)

INTERPOLATIONS = ("linear", "nearest", "cubic")
_FLUSH_EVERY = 50


@dataclass(frozen=True)
class Geometry:
    """An annotation frame: ``kind`` (``rgb`` or ``thermal``), ``size`` (width, height),
    ``matrix``, the 3x3 transform from (undistorted) thermal pixels to frame pixels, and the
    thermal lens's radial distortion ``lens_k1`` (0: none; see :mod:`gasdb_tools.registration`)."""

    kind: str
    size: tuple
    matrix: np.ndarray
    lens_k1: float = 0.0

    @property
    def key(self) -> str:
        """Digest of the frame (kind, size, transform, lens)."""
        parts = ["geometry", self.kind, list(self.size), provenance.matrix_key(self.matrix)]
        if self.lens_k1:
            parts.append(float(self.lens_k1))
        return provenance.digest(*parts)

    def lens(self, thermal_size) -> RadialDistortion | None:
        """The thermal lens's distortion for frames of ``thermal_size`` (width, height), or None."""
        return RadialDistortion(self.lens_k1, tuple(int(v) for v in thermal_size)) if self.lens_k1 else None

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "size": [int(v) for v in self.size],
               "matrix": provenance.matrix_key(self.matrix), "key": self.key}
        if self.lens_k1:
            out["lens_k1"] = float(self.lens_k1)
        return out

    @classmethod
    def from_dict(cls, data) -> "Geometry":
        return cls(kind=str(data["kind"]), size=tuple(int(v) for v in data["size"]),
                   matrix=np.asarray(data["matrix"], np.float64), lens_k1=float(data.get("lens_k1") or 0.0))


def parse_size(text) -> tuple[int, int | None] | None:
    """``"640x512"`` -> (640, 512); ``"640"`` -> (640, None) (height from the aspect ratio); bad -> None.

    >>> parse_size("640x480"), parse_size("320"), parse_size("x")
    ((640, 480), (320, None), None)
    """
    try:
        parts = str(text).lower().split("x")
        if len(parts) == 1:
            return int(parts[0]), None
        w, h = (int(v) for v in parts)
        return w, h
    except ValueError:
        return None


def frame_size(native, requested=None) -> tuple[int, int]:
    """The annotation frame's size for a camera of ``native`` (width, height) and a requested size.

    ``requested`` None keeps the native size; ``(W, None)`` scales to width W keeping the aspect
    ratio; ``(W, H)`` is taken as given.

    >>> frame_size((1280, 720)), frame_size((1280, 720), (640, None)), frame_size((1280, 720), (640, 512))
    ((1280, 720), (640, 360), (640, 512))
    """
    nw, nh = (int(v) for v in native)
    if requested is None:
        return nw, nh
    w, h = requested
    if h is None:
        h = max(1, int(round(nh * w / nw)))
    return int(w), int(h)


def _recorded_size(row: dict, column: str) -> tuple[int, int] | None:
    size = parse_size(row.get(column, ""))
    return size if size and size[1] is not None else None


def _params(row: dict) -> dict:
    try:
        params = json.loads(row.get("align_params") or "{}")
    except ValueError:
        params = {}
    return params if isinstance(params, dict) else {}


def expected_geometry(ws: Workspace, rec: dict, *, size=None, calibration=None) -> Geometry | None:
    """The annotation frame a recording's aligned frames should be in now.

    ``size`` is a requested size (see :func:`frame_size`); default what the recording last asked
    for (``align_params``), else the RGB native size. ``calibration`` (a
    :class:`~gasdb_tools.calibration.Calibration`) defaults to the rig's file. Returns None for a
    thermal camera alone (its frame is the thermal frame; nothing to align).

    Raises
    ------
    CalibrationError
        No calibration for the recording's rig, or frame sizes that do not match it.
    """
    if is_thermal_only(rec):
        return None
    rig = rec.get("rig") or ws.settings.get("rig") or "default"
    if calibration is None:
        path = calibration_path(ws, rig)
        if not path.is_file():
            raise CalibrationError(f"no calibration for rig {rig!r}", file=path,
                                   fix=f"run `gasdb calibrate {ws.root} --rig {rig}` first")
        calibration = read_calibration(path)
    for column, expected in (("rgb_size", calibration.rgb_size), ("thermal_size", calibration.thermal_size)):
        recorded = _recorded_size(rec, column)
        if recorded is not None and recorded != tuple(expected):
            raise CalibrationError(f"recording {rec['id']} has {column} {recorded[0]}x{recorded[1]} but the calibration "
                                   f"of rig {calibration.rig!r} is for {expected[0]}x{expected[1]}",
                                   file=calibration_path(ws, calibration.rig), field=column,
                                   fix="calibrate this camera set-up as its own rig (`gasdb add --rig`)")
    if size is None:
        asked = _params(rec).get("size")
        size = tuple(asked) if asked else None
    out = frame_size(calibration.rgb_size, size)
    refined, _ = current_refinement(ws, rec, calibration)
    matrix = refined if refined is not None else calibration.matrix
    lens = calibration.lens()
    return Geometry("rgb", out, output_matrix(matrix, calibration.rgb_size, out),
                    lens_k1=float(lens.k1) if lens is not None else 0.0)


def annotation_frame(ws: Workspace, rec: dict) -> Geometry | None:
    """The frame a recording's pairs are annotated in **now**: the thermal frame for a thermal camera
    alone, else the geometry its aligned frames were made in (None before ``gasdb align``)."""
    if is_thermal_only(rec):
        size = _recorded_size(rec, "thermal_size")
        if size is None:
            raise WorkspaceError(f"recording {rec['id']} has no thermal_size", file=ws.root / ws.RECORDINGS,
                                 field="thermal_size", fix="register it again with `gasdb add`")
        return Geometry("thermal", size, np.eye(3))
    recorded = rec.get("align_geometry") or ""
    if not recorded:
        return None
    try:
        return Geometry.from_dict(json.loads(recorded))
    except (ValueError, KeyError, TypeError):
        raise WorkspaceError(f"recording {rec['id']}: unreadable align_geometry", file=ws.root / ws.RECORDINGS,
                             field="align_geometry", fix="rerun `gasdb align --force`") from None


def align_recipe(pair: dict, geometry: Geometry, interpolation: str) -> str:
    """The recipe of a pair's aligned frame: its extracted frames, the geometry and the resampling."""
    return provenance.recipe("align", pair.get("extract_digest", ""), geometry.key, params=interpolation)


# ----------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------
def align_workspace(ws: Workspace, *, force: bool = False, size=None, recordings=None,
                    interpolation: str = "linear", jobs: int = 1, scheduler: str | None = None) -> dict:
    """Warp every pair's thermal frame into its recording's annotation frame; resumable.

    Parameters
    ----------
    ws : Workspace
    force : bool
        Redo every pair.
    size : (int, int) or (int, None), optional
        Annotation frame size (width, height); ``(W, None)`` keeps each recording's aspect ratio.
        Default: what each recording last used, else the RGB camera's native size.
    recordings : iterable of str, optional
        Only these recordings.
    interpolation : {'linear', 'nearest', 'cubic'}
        Resampling of the thermal frame.
    jobs : int
        Cores: recordings in parallel worker processes, and the frames of a recording in threads
        when there are fewer recordings than jobs; the outputs are byte-identical whatever the number.
    scheduler : str, optional
        A Dask scheduler's address: the recordings run on that cluster.

    Returns
    -------
    dict
        The stage runner's summary plus ``aligned``, ``skipped``, ``failed`` totals; each recording
        has ``id, rig, pairs, aligned, skipped, size, status, error`` (status ``n/a`` for a thermal
        camera alone).
    """
    if size is not None:
        try:
            w, h = size
            w = int(w)
            h = None if h is None else int(h)
        except (TypeError, ValueError):
            raise ValueError(f"size must be (width, height) or (width, None), got {size!r}") from None
        if w < 16 or (h is not None and h < 16):
            raise ValueError(f"size must be at least 16x16, got {size!r}")
        size = (w, h)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    report = run_stage(ws, "align", _align_work, recordings=recordings, jobs=jobs, scheduler=scheduler,
                       options={"size": size, "force": force, "interpolation": interpolation},
                       defaults={"rig": "", "pairs": 0, "aligned": 0, "skipped": 0, "size": None})
    recs = report["recordings"]
    return {**report, "aligned": sum(r["aligned"] for r in recs), "skipped": sum(r["skipped"] for r in recs),
            "failed": report["failed"]}


def _align_work(ws: Workspace, rec: str, sink, *, size, force, interpolation) -> dict:
    index = ws.read_index()
    rec_row = index.recordings[rec]
    rows = [p for p in index.pairs_of(rec) if p.get("thermal")]
    entry = {"rig": rec_row.get("rig") or ws.settings.get("rig") or "default", "pairs": len(rows), "aligned": 0,
             "skipped": 0, "size": None}
    if is_thermal_only(rec_row):
        return {**entry, "status": "n/a"}
    geometry = expected_geometry(ws, rec_row, size=size)
    entry["size"] = list(geometry.size)
    native = _recorded_size(rec_row, "rgb_size")
    if native and abs(geometry.size[0] / geometry.size[1] - native[0] / native[1]) > 0.01 * native[0] / native[1]:
        log.warning("align %s: %dx%d does not keep the RGB camera's %dx%d aspect ratio (frames are stretched)",
                    rec, *geometry.size, *native)
    params = {"size": None if size is None and not _params(rec_row).get("size") else
              list(size if size is not None else _params(rec_row)["size"]), "interpolation": interpolation}
    rec_columns = {"align_params": json.dumps(params, sort_keys=True),
                   "align_geometry": json.dumps(geometry.to_dict(), sort_keys=True)}
    todo = []
    for r in rows:
        have = (r.get("aligned") and r.get("valid") and ws.path(r["aligned"]).is_file()
                and ws.path(r["valid"]).is_file())
        if force or not have or r.get("align_inputs") != align_recipe(r, geometry, interpolation):
            todo.append(r)
        else:
            entry["skipped"] += 1
    if todo and rec_row.get("align_geometry") != rec_columns["align_geometry"]:
        # frames of the old geometry must not pass as current if this run stops half-way
        sink.commit(IndexOps(pairs={r["pair_id"]: {"align_inputs": ""} for r in todo},
                             recording={rec: {"align_geometry": ""}}))
    expected = _recorded_size(rec_row, "thermal_size")
    lens = None
    if geometry.lens_k1:
        lens = geometry.lens(expected or read_image(ws.path(rows[0]["thermal"])).shape[1::-1])

    def process(r: dict):
        thermal = read_image(ws.path(r["thermal"]))
        if expected and (thermal.shape[1], thermal.shape[0]) != expected:
            raise CalibrationError(f"pair {r['pair_id']}: thermal frame is {thermal.shape[1]}x{thermal.shape[0]}, "
                                   f"the recording's camera is {expected[0]}x{expected[1]}",
                                   file=ws.path(r["thermal"]), fix="re-extract the recording (`gasdb extract --force`)")
        warped, valid = warp_thermal(thermal, geometry.matrix, geometry.size, interpolation=interpolation,
                                     distortion=lens)
        out, d_frame = write_image(ws.output_path("aligned", rec, f"{r['pair_id']}.png"), warped, compression=1,
                                   digest=True)
        mask, d_valid = write_image(ws.output_path("aligned", rec, f"{r['pair_id']}_valid.png"),
                                    np.where(valid, 255, 0).astype(np.uint8), compression=1, digest=True)
        return r, out, mask, provenance.combine(d_frame, d_valid)

    done: dict[str, dict] = {}
    try:  # frames in sink.threads threads (each frame on its own: the outputs do not depend on it)
        for r, out, mask, digest in progress(map_ordered(process, todo, sink.threads), total=len(todo),
                                             desc=f"align {rec}", unit="frame"):
            done[r["pair_id"]] = {"aligned": ws.rel(out), "valid": ws.rel(mask), "align_digest": digest,
                                  "align_inputs": align_recipe(r, geometry, interpolation)}
            entry["aligned"] += 1
            if len(done) >= _FLUSH_EVERY:
                sink.commit(IndexOps(pairs=dict(done)))
                done.clear()
    except BaseException:
        sink.commit(IndexOps(pairs=done))  # finished frames stay done: a rerun resumes after them
        raise
    sink.commit(IndexOps(pairs=done, recording={rec: rec_columns}))
    return entry
