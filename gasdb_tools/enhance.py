"""The ``enhance`` stage: 8-bit Tarel–Hautière views of the thermal frames, for annotators.

For every pair of a workspace, the thermal frame in the recording's annotation frame (``aligned``,
warped into the RGB frame; the extracted ``thermal`` frame for a thermal camera alone, or when the
pair is not aligned yet) is restored with :func:`gasdb_tools.restoration.restore_visibility` and
written as an 8-bit PNG ``enhanced/<rec>/<pair>.png``; pairs.csv gets ``enhanced`` (the path),
``enhanced_source`` (``aligned`` or ``thermal``), ``enhance_digest`` and ``enhance_inputs`` (the
recipe: the source frame's digest, the settings and the recording's contrast setting; see
:mod:`gasdb_tools.provenance`). A plain rerun redoes exactly the pairs whose recipe changed.

**One contrast setting per recording.** Tarel–Hautière fits its final gamma and tone mapping per
image, so the brightness of a sequence would jump from frame to frame. The stage fixes them per
recording from a sample of its frames (evenly spaced, ``sample_frames``): the input stretch is the
recording's one view stretch (:mod:`gasdb_tools.views`, shared with pre-annotation and export), the
gamma (:func:`~gasdb_tools.restoration.fit_gamma` on the pooled samples) and the tone-mapping peak
(a high percentile of the sampled ``U``, so hot pixels do not set it). The setting is stored in
recordings.csv (``enhance_settings``, JSON, with the recipe of its samples) and reused while its
samples are unchanged, so frames enhanced in different runs look the same.

**Reference rows.** The authors fit the gamma on the bottom third of the image (the road in front
of a car). A gas frame has no such geometry and a plume may sit anywhere, so the stage fits it on
all rows (``gamma_rows="all"``): the output brightness is anchored to the whole frame and does not
depend on where the plume is. ``tarel_hautiere`` keeps the authors' default.

**Polarity.** The veil is bright by construction, and the code's veil ``p * min(W, B)`` crushes
structure darker than its surroundings; an absorbing (cold, dark) plume is therefore better seen
on the inverted frame: ``invert=True`` restores ``1 - frame``, and the output keeps that polarity
(the plume shows bright, like an emitting one).

Warped frames have an invalid border (``valid`` mask): it is filled with the nearest valid pixel
before filtering so that it does not drag the medians down, left out of every fit, and written as 0.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gasdb_tools import provenance, restoration, views
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.imaging import read_image, to_uint8, write_image
from gasdb_tools.progress import progress
from gasdb_tools.stages import IndexOps, map_ordered, run_stage
from gasdb_tools.visibility import MODES as METRIC_MODES
from gasdb_tools.visibility import visibility_metrics
from gasdb_tools.workspace import Workspace

__all__ = ["EnhanceSettings", "RecordingContrast", "enhance_workspace", "enhance_images", "enhance_frame",
           "recording_contrast", "enhance_recipe", "expected_inputs"]

log = logging.getLogger(__name__)

_FLUSH_EVERY = 200  # pairs between index updates within a recording
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm")


@dataclass(frozen=True)
class EnhanceSettings:
    """What the user chooses (the look); see :func:`enhance_workspace`."""

    sv: int = 51
    p: float = 0.95
    gfactor: float = 1.0
    invert: bool = False
    gamma_rows: str = "all"
    peak_percentile: float = 99.9

    def check(self) -> "EnhanceSettings":
        """Raise ValueError naming the bad setting."""
        if isinstance(self.sv, bool) or not isinstance(self.sv, (int, np.integer)) or self.sv < 1 or self.sv % 2 == 0:
            raise ValueError(f"sv must be an odd integer >= 1, got {self.sv!r}; 51 suits 640×512 frames")
        if not 0 < self.p < 1:
            raise ValueError(f"p must lie strictly between 0 and 1, got {self.p!r}; 0.95 is usual")
        if not (math.isfinite(self.gfactor) and self.gfactor > 0):
            raise ValueError(f"gfactor must be a positive number, got {self.gfactor!r}")
        if self.gamma_rows not in restoration.GAMMA_ROWS:
            raise ValueError(f"gamma_rows must be one of {restoration.GAMMA_ROWS}, got {self.gamma_rows!r}")
        if not 50 < self.peak_percentile <= 100:
            raise ValueError(f"peak_percentile must lie in (50, 100], got {self.peak_percentile!r}")
        return self

    def key(self) -> dict:
        d = asdict(self)
        d["invert"] = bool(self.invert)
        return d


@dataclass(frozen=True)
class RecordingContrast:
    """The per-recording contrast setting: input stretch, gamma and tone-mapping peak.

    ``x = clip((frame - lo) / (hi - lo), 0, 1)`` (then ``1 - x`` when inverting), restored to
    ``R``; ``U = scale * R ** power``; ``out = U / (1 + (1 - 1/peak) U)`` clipped to [0, 1].
    """

    lo: float
    hi: float
    power: float
    scale: float
    peak: float
    depth: int  # bits of the source frames (8 or 16)
    source: str  # aligned | thermal | mixed
    frames: int  # frames sampled


# ----------------------------------------------------------------------------------------------
# one frame
# ----------------------------------------------------------------------------------------------
def _normalise(frame: np.ndarray, contrast_lo: float, contrast_hi: float, invert: bool) -> np.ndarray:
    """Source frame -> float32 in [0, 1], on the 8-bit grid when the source is 8-bit."""
    x = (frame.astype(np.float32) - np.float32(contrast_lo)) * np.float32(1.0 / (contrast_hi - contrast_lo))
    np.clip(x, 0, 1, out=x)
    if frame.dtype == np.uint8:  # stretch factor >= 1: rounding back to 1/255 loses nothing
        x = np.rint(x * 255) * np.float32(1 / 255)
    if invert:
        x = 1 - x
    return x


def _fill_invalid(x: np.ndarray, valid: np.ndarray | None, cache: dict) -> np.ndarray:
    if valid is None or valid.all():
        return x
    if not valid.any():
        raise FormatError("the valid mask of the aligned frame is empty", field="valid",
                          fix="check the calibration and rerun `gasdb align`")
    key = valid.tobytes()
    if key not in cache:
        from scipy import ndimage

        cache.clear()
        cache[key] = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    iy, ix = cache[key]
    return x[iy, ix]


def enhance_frame(frame: np.ndarray, contrast: RecordingContrast, settings: EnhanceSettings, *,
                  valid: np.ndarray | None = None, cache: dict | None = None) -> np.ndarray:
    """Enhance one thermal frame with a fixed per-recording setting; returns H×W uint8.

    Parameters
    ----------
    frame : (H, W) uint8 or uint16 ndarray
        The thermal frame (aligned or extracted).
    contrast : RecordingContrast
        From the recording's sample (see :func:`enhance_workspace`).
    settings : EnhanceSettings
    valid : (H, W) bool ndarray, optional
        Valid pixels of an aligned frame; the rest are written as 0.
    """
    x = _normalise(frame, contrast.lo, contrast.hi, settings.invert)
    x = _fill_invalid(x, valid, cache if cache is not None else {})
    rest = restoration.restore_visibility(x, sv=settings.sv, p=settings.p,
                                          median="uint8" if frame.dtype == np.uint8 else "auto")
    u = restoration.apply_gamma(rest.restored, restoration.GammaFit(contrast.power, contrast.scale))
    out = to_uint8(restoration.tone_map(u, peak=contrast.peak))
    if valid is not None:
        out[~valid] = 0
    return out


# ----------------------------------------------------------------------------------------------
# the workspace stage
# ----------------------------------------------------------------------------------------------
def recording_contrast(frames: list[tuple[np.ndarray, np.ndarray | None]], settings: EnhanceSettings,
                       *, source: str = "thermal", stretch: views.Stretch | None = None) -> RecordingContrast:
    """Fit the per-recording setting on sample frames ``[(frame, valid or None), ...]``.

    ``stretch`` is the recording's view stretch (default: fitted on these frames,
    :func:`gasdb_tools.views.fit_stretch`).
    """
    if not frames:
        raise ValueError("need at least one sample frame to fit the contrast setting")
    depth = 16 if any(f.dtype == np.uint16 for f, _ in frames) else 8
    stretch = stretch or views.fit_stretch(frames)
    lo, hi = stretch.lo, stretch.hi
    cache: dict = {}
    nbo, nbr, restored, masks = [], [], [], []
    for f, v in frames:
        x = _fill_invalid(_normalise(f, lo, hi, settings.invert), v, cache)
        rest = restoration.restore_visibility(x, sv=settings.sv, p=settings.p,
                                              median="uint8" if f.dtype == np.uint8 else "auto")
        nbo.append(rest.original_mean)
        nbr.append(rest.restored_mean)
        restored.append(rest.restored)
        masks.append(v)
    fit = restoration.fit_gamma(nbo, nbr, gfactor=settings.gfactor, rows=settings.gamma_rows,
                                mask=masks if any(m is not None for m in masks) else None)
    u = np.concatenate([restoration.apply_gamma(r if m is None else r[m], fit).ravel()
                        for r, m in zip(restored, masks)])
    peak = float(np.percentile(u, settings.peak_percentile)) if u.size else 1.0
    if not peak > 0:
        peak = float(u.max()) if u.size and u.max() > 0 else 1.0
    return RecordingContrast(lo=float(lo), hi=float(hi), power=fit.power, scale=fit.scale, peak=peak,
                             depth=depth, source=source, frames=len(frames))


def enhance_recipe(pair: dict, kind: str, stored: dict) -> str:
    """The recipe of a pair's enhanced frame: its source frame, the settings and the recording's contrast."""
    return provenance.recipe("enhance", kind, views.source_digest(pair, kind), params=stored)


def enhance_workspace(ws: Workspace, *, sv: int = 51, p: float = 0.95, gfactor: float = 1.0, invert: bool = False,
                      gamma_rows: str = "all", sample_frames: int = 16, force: bool = False, metrics: bool = False,
                      metrics_mode: str = "compat", metrics_frames: int | None = None, recordings=None,
                      jobs: int = 1, scheduler: str | None = None) -> dict:
    """Write ``enhanced/<rec>/<pair>.png`` (8-bit) for every pair; resumable.

    Parameters
    ----------
    ws : Workspace
    sv, p, gfactor : see :func:`gasdb_tools.restoration.tarel_hautiere`
        ``sv`` should exceed the plume width (structure wider than ``sv`` is treated as veil).
    invert : bool
        Restore the inverted frame, for absorbing (dark) plumes; the output keeps that polarity.
    gamma_rows : {'all', 'bottom_third'}
        Rows the gamma is fitted on (``all``: see the module docstring).
    sample_frames : int
        Frames per recording (evenly spaced) that fix its contrast setting.
    force : bool
        Redo every pair and refit the setting. Without it, pairs whose recipe still holds are
        skipped; stale ones (their source frame or the recording's contrast changed) are redone.
    metrics : bool
        Compute Hautière's e, r̄, σ (with n_o, n_r) per enhanced frame (about 1 s per frame).
    metrics_mode : {'compat', 'fixed'}
        See :mod:`gasdb_tools.visibility`.
    metrics_frames : int, optional
        With ``metrics``, only this many evenly spaced frames per recording.
    recordings : iterable of str, optional
        Only these recordings.
    jobs : int
        Cores: recordings in parallel worker processes, and the frames of a recording in threads
        when there are fewer recordings than jobs (:func:`gasdb_tools.stages.run_stage`); the
        outputs are byte-identical whatever the number.
    scheduler : str, optional
        A Dask scheduler's address: the recordings run on that cluster.

    Returns
    -------
    dict
        The stage runner's summary plus ``settings`` and ``frames``; each recording has ``id, pairs,
        enhanced, skipped, sources, contrast, error``; each frame processed in this run has
        ``pair_id, recording, source, output`` and, with ``metrics``, ``metrics``.

    Raises
    ------
    ValueError
        A bad setting (before anything is read or written).
    """
    settings = EnhanceSettings(sv=sv, p=float(p), gfactor=float(gfactor), invert=bool(invert),
                               gamma_rows=gamma_rows).check()
    if isinstance(sample_frames, bool) or not isinstance(sample_frames, int) or sample_frames < 1:
        raise ValueError(f"sample_frames must be an integer >= 1, got {sample_frames!r}")
    if metrics_mode not in METRIC_MODES:
        raise ValueError(f"metrics_mode must be one of {METRIC_MODES}, got {metrics_mode!r}")
    if metrics_frames is not None and (isinstance(metrics_frames, bool) or metrics_frames < 1):
        raise ValueError(f"metrics_frames must be a positive integer or None, got {metrics_frames!r}")
    options = {"settings": settings, "force": force, "sample_frames": sample_frames, "metrics": metrics,
               "metrics_mode": metrics_mode, "metrics_frames": metrics_frames}
    report = run_stage(ws, "enhance", _enhance_work, recordings=recordings, jobs=jobs, scheduler=scheduler,
                       options=options,
                       defaults={"pairs": 0, "enhanced": 0, "skipped": 0, "sources": {"aligned": 0, "thermal": 0},
                                 "contrast": None, "frames": []})
    frames = [f for r in report["recordings"] for f in r.pop("frames")]
    return {**report, "settings": settings.key(), "frames": frames}


def _enhance_work(ws: Workspace, rec: str, sink, *, settings, force, sample_frames, metrics, metrics_mode,
                  metrics_frames) -> dict:
    rec_row = ws.recording(rec)
    rows = sorted(ws.iter_pairs(rec), key=lambda p: p["pair_id"])  # this recording's rows only, as a stream
    kinds = {r["pair_id"]: views.source_kind(rec_row, r) for r in rows}
    entry = {"pairs": len(rows), "enhanced": 0, "skipped": 0,
             "sources": {"aligned": sum(1 for k in kinds.values() if k == "aligned"),
                         "thermal": sum(1 for k in kinds.values() if k == "thermal")},
             "contrast": None, "frames": []}
    if not rows:
        return entry
    stretch, stretch_columns = views.recording_stretch(ws, rec_row, rows)
    picks = views.sample_rows(rows, sample_frames)
    contrast_inputs = _contrast_recipe(stretch, settings.key(), picks, kinds)
    stored = _stored_setting(rec_row)
    if stored is not None and not force and stored["settings"] != settings.key():
        raise WorkspaceError(f"recording {rec} was enhanced with other settings "
                             f"({_diff(stored['settings'], settings.key())})",
                             file=ws.root / ws.RECORDINGS, field="enhance_settings",
                             fix="rerun with the same options, or pass --force to redo the whole recording")
    if stored is None or force or stored.get("inputs") != contrast_inputs:
        kinds_mix = {kinds[r["pair_id"]] for r in rows}
        source = kinds_mix.pop() if len(kinds_mix) == 1 else "mixed"
        contrast = recording_contrast([views.read_source(ws, r, kinds[r["pair_id"]]) for r in picks], settings,
                                      source=source, stretch=stretch)
        stored = {"settings": settings.key(), "contrast": asdict(contrast), "inputs": contrast_inputs}
        columns = {**(stretch_columns or {}),
                   "enhance_settings": json.dumps(stored, sort_keys=True, separators=(",", ":"))}
        sink.commit(IndexOps(recording={rec: columns}))
    elif stretch_columns:
        sink.commit(IndexOps(recording={rec: stretch_columns}))
    contrast = RecordingContrast(**stored["contrast"])
    entry["contrast"] = asdict(contrast)
    recipe_params = {"settings": stored["settings"], "contrast": stored["contrast"]}
    metric_ids = None
    if metrics and metrics_frames is not None:
        metric_ids = {r["pair_id"] for r in views.sample_rows(rows, metrics_frames)}
    todo = []
    for r in rows:
        out_path = ws.output_path("enhanced", rec, f"{r['pair_id']}.png")
        current = r.get("enhance_inputs") == enhance_recipe(r, kinds[r["pair_id"]], recipe_params)
        if force or not current or not r.get("enhanced") or not out_path.is_file():
            todo.append(r)
        else:
            entry["skipped"] += 1
    local = threading.local()  # one fill-index cache per thread

    def process(r: dict):
        cache = local.__dict__.setdefault("cache", {})
        kind = kinds[r["pair_id"]]
        frame, valid = views.read_source(ws, r, kind)
        out = enhance_frame(frame, contrast, settings, valid=valid, cache=cache)
        out_path, digest = write_image(ws.output_path("enhanced", rec, f"{r['pair_id']}.png"), out,
                                       compression=1, digest=True)
        item = {"pair_id": r["pair_id"], "recording": rec, "source": kind, "output": ws.rel(out_path)}
        if metrics and (metric_ids is None or r["pair_id"] in metric_ids):
            before = to_uint8(_normalise(frame, contrast.lo, contrast.hi, settings.invert))
            t0 = time.perf_counter()
            scores = visibility_metrics(before, out, mode=metrics_mode).to_dict()
            scores["seconds"] = round(time.perf_counter() - t0, 3)
            item["metrics"] = scores
        return r, kind, digest, item

    done: dict[str, dict] = {}
    try:  # frames in sink.threads threads (each frame on its own: the outputs do not depend on it)
        for r, kind, digest, item in progress(map_ordered(process, todo, sink.threads), total=len(todo),
                                              desc=f"enhance {rec}", unit="frame"):
            entry["frames"].append(item)
            done[r["pair_id"]] = {"enhanced": item["output"], "enhanced_source": kind, "enhance_digest": digest,
                                  "enhance_inputs": enhance_recipe(r, kind, recipe_params)}
            entry["enhanced"] += 1
            if len(done) >= _FLUSH_EVERY:
                sink.commit(IndexOps(pairs=dict(done)))
                done.clear()
    finally:
        sink.commit(IndexOps(pairs=done))
    return entry


def _contrast_recipe(stretch, settings: dict, picks, kinds) -> str:
    """The recipe of a recording's contrast setting: its stretch, the settings and the sampled frames."""
    return provenance.recipe("enhance_contrast", stretch.to_dict(), settings,
                             *[f"{kinds[r['pair_id']]}:{views.source_digest(r, kinds[r['pair_id']]) or r['pair_id']}"
                               for r in picks])


def expected_inputs(rec_row: dict, rows) -> dict | None:
    """``{pair_id: recipe}`` each pair's enhanced frame should have now, from the recording's stored
    setting; None when there is no usable setting or its samples changed (then every output is stale)."""
    stored = _stored_setting(rec_row)
    if stored is None:
        return None
    stretch = views.recorded_stretch(rec_row, rows)
    if stretch is None:
        return None
    kinds = {r["pair_id"]: views.source_kind(rec_row, r) for r in rows}
    picks = views.sample_rows(rows, int(stored["contrast"].get("frames") or views.SAMPLE_FRAMES))
    contrast_inputs = _contrast_recipe(stretch, stored["settings"], picks, kinds)
    if stored.get("inputs") != contrast_inputs:
        return None
    params = {"settings": stored["settings"], "contrast": stored["contrast"]}
    return {r["pair_id"]: enhance_recipe(r, kinds[r["pair_id"]], params) for r in rows}


def _stored_setting(rec_row: dict) -> dict | None:
    """The recording's stored ``enhance_settings`` (None when absent or unreadable)."""
    try:
        stored = json.loads(rec_row.get("enhance_settings") or "null")
        RecordingContrast(**stored["contrast"])
        return stored if isinstance(stored.get("settings"), dict) else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _diff(old, new) -> str:
    if not isinstance(old, dict):
        return "unknown settings"
    keys = sorted(k for k in new if old.get(k) != new[k])
    return ", ".join(f"{k}: {old.get(k)!r} then, {new[k]!r} now" for k in keys) or "same"


# ----------------------------------------------------------------------------------------------
# loose images
# ----------------------------------------------------------------------------------------------
def enhance_images(paths, out_dir, *, sv: int | None = None, p: float = 0.95, gfactor: float = 1.0,
                   invert: bool = False, gamma_rows: str = "all", balance: float = -1.0, force: bool = False,
                   metrics: bool = False, metrics_mode: str = "compat") -> dict:
    """Enhance loose image files into ``out_dir/<stem>.png`` (8-bit), each with its own setting.

    Gray images stay gray, colour images are restored in colour (``balance`` for white balance);
    8-bit images are read as value/255, 16-bit ones stretched between their 0.1 and 99.9
    percentiles. Existing outputs are skipped unless ``force``.
    ``sv=None`` uses the authors' rule for the image size (:func:`~gasdb_tools.restoration.default_sv`).

    Returns ``{"out_dir", "images": [{"input", "output", "sv", "skipped", "metrics"?}]}``.

    Raises
    ------
    FormatError
        A file is missing or not an image (nothing is written then).
    ValueError
        Bad settings, or two inputs with the same file stem.
    """
    paths = [Path(p_) for p_ in paths]
    if not paths:
        raise ValueError("no image given; pass one or more image files")
    if metrics_mode not in METRIC_MODES:
        raise ValueError(f"metrics_mode must be one of {METRIC_MODES}, got {metrics_mode!r}")
    stems: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise FormatError("image file not found", file=path, fix="check the path")
        if path.suffix.lower() not in _IMAGE_SUFFIXES:
            raise FormatError(f"not an image file name ({path.suffix or 'no suffix'})", file=path,
                              fix=f"pass images ({', '.join(_IMAGE_SUFFIXES)})")
        if path.stem in stems:
            raise ValueError(f"two inputs would both write {path.stem}.png: {stems[path.stem]} and {path}; "
                             "rename one or enhance them into different folders")
        stems[path.stem] = path
    out_dir = Path(out_dir)
    report = {"out_dir": str(out_dir), "images": []}
    for path in progress(paths, desc="enhance", unit="image"):
        out_path = out_dir / f"{path.stem}.png"
        item = {"input": str(path), "output": str(out_path), "skipped": False}
        report["images"].append(item)
        if out_path.exists() and not force:
            item["skipped"] = True
            continue
        image = read_image(path, mode="unchanged")
        if image.ndim == 3:
            image = image[:, :, :3]
            if image.shape[2] == 3 and np.array_equal(image[..., 0], image[..., 1]) and \
                    np.array_equal(image[..., 0], image[..., 2]):
                image = image[..., 0]  # a gray image saved with three equal channels
        if image.dtype == np.uint16:  # radiometric frames use a sliver of 0-65535: stretch to [0, 1]
            lo, hi = views.exact_percentiles([image], (0.1, 99.9))
            lo, hi = (lo, hi) if hi > lo else (0.0, 65535.0)
            x = np.clip((image.astype(np.float32) - np.float32(lo)) * np.float32(1 / (hi - lo)), 0, 1)
        else:
            x = image.astype(np.float32) / np.float32(255)
        if invert:
            x = 1 - x
        used_sv = restoration.default_sv(x.shape) if sv is None else sv
        out = restoration.tarel_hautiere(x, sv=used_sv, p=p, balance=balance, gfactor=gfactor, gamma_rows=gamma_rows)
        out8 = to_uint8(out)
        write_image(out_path, out8)
        item["sv"] = used_sv
        if metrics:
            t0 = time.perf_counter()
            scores = visibility_metrics(to_uint8(x), out8, mode=metrics_mode).to_dict()
            scores["seconds"] = round(time.perf_counter() - t0, 3)
            item["metrics"] = scores
    return report
