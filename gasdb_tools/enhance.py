"""The ``enhance`` stage: 8-bit Tarel–Hautière views of the thermal frames, for annotators.

For every pair of a workspace, the thermal frame warped into the RGB frame (``aligned``; the
extracted ``thermal`` frame when the pair is not aligned yet) is restored with
:func:`gasdb_tools.restoration.restore_visibility` and written as an 8-bit PNG
``enhanced/<rec>/<pair>.png``; pairs.csv gets ``enhanced`` (the path) and ``enhanced_source``
(``aligned`` or ``thermal``).

**One contrast setting per recording.** Tarel–Hautière fits its final gamma and tone mapping per
image, so the brightness of a sequence would jump from frame to frame. The stage fixes them per
recording from a sample of its frames (evenly spaced, ``sample_frames``): the input stretch
(percentiles of the sampled thermal values), the gamma (:func:`~gasdb_tools.restoration.fit_gamma`
on the pooled samples) and the tone-mapping peak (a high percentile of the sampled ``U``, so hot
pixels do not set it). The setting is stored in recordings.csv (``enhance_settings``, JSON) and
reused when the stage resumes, so frames enhanced in different runs look the same.

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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gasdb_tools import restoration
from gasdb_tools.errors import FormatError, GasdbError, WorkspaceError
from gasdb_tools.imaging import read_image, to_uint8, write_image
from gasdb_tools.progress import progress
from gasdb_tools.visibility import MODES as METRIC_MODES
from gasdb_tools.visibility import visibility_metrics
from gasdb_tools.workspace import Workspace

__all__ = ["EnhanceSettings", "RecordingContrast", "enhance_workspace", "enhance_images", "enhance_frame"]

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
    stretch: tuple[float, float] = (0.1, 99.9)
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
        lo, hi = self.stretch
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"stretch must be two percentiles 0 <= lo < hi <= 100, got {self.stretch!r}")
        if not 50 < self.peak_percentile <= 100:
            raise ValueError(f"peak_percentile must lie in (50, 100], got {self.peak_percentile!r}")
        return self

    def key(self) -> dict:
        d = asdict(self)
        d["stretch"] = list(self.stretch)
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
def _source(pair: dict) -> str:
    return "aligned" if pair.get("aligned") else "thermal"


def _read_source(ws: Workspace, pair: dict) -> tuple[np.ndarray, np.ndarray | None]:
    kind = _source(pair)
    rel = pair.get(kind) or ""
    if not rel:
        raise WorkspaceError(f"pair {pair['pair_id']} has no thermal frame", file=ws.root / ws.PAIRS,
                             field="thermal", fix="run `gasdb extract` first")
    frame = read_image(ws.path(rel), mode="gray")
    if frame.dtype not in (np.uint8, np.uint16):
        raise FormatError(f"thermal frames must be 8- or 16-bit, got {frame.dtype}", file=ws.path(rel))
    valid = None
    if kind == "aligned" and pair.get("valid"):
        valid = read_image(ws.path(pair["valid"]), mode="gray") > 0
        if valid.shape != frame.shape:
            raise FormatError(f"valid mask {valid.shape} does not match the aligned frame {frame.shape}",
                              file=ws.path(pair["valid"]), fix="rerun `gasdb align --force`")
    return frame, valid


def _sample(rows: list, n: int) -> list:
    if not rows:
        return []
    idx = np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int))
    return [rows[i] for i in idx]


def _percentiles(values: list[np.ndarray], pcts) -> list[float]:
    """Exact percentiles (numpy 'linear') of integer frames via a histogram."""
    counts = sum(np.bincount(v.ravel(), minlength=65536) for v in values)
    cdf = np.cumsum(counts)
    total = int(cdf[-1])
    out = []
    for pct in pcts:
        pos = pct / 100 * (total - 1)
        lo_i, frac = int(math.floor(pos)), pos - math.floor(pos)
        a = int(np.searchsorted(cdf, lo_i + 1))
        b = int(np.searchsorted(cdf, min(lo_i + 2, total)))
        out.append(a + frac * (b - a))
    return out


def recording_contrast(frames: list[tuple[np.ndarray, np.ndarray | None]], settings: EnhanceSettings,
                       *, source: str = "thermal") -> RecordingContrast:
    """Fit the per-recording setting on sample frames ``[(frame, valid or None), ...]``."""
    if not frames:
        raise ValueError("need at least one sample frame to fit the contrast setting")
    depth = 16 if any(f.dtype == np.uint16 for f, _ in frames) else 8
    vals = [(f if v is None else f[v]).astype(np.uint16 if depth == 16 else np.uint8) for f, v in frames]
    lo, hi = _percentiles(vals, settings.stretch)
    if hi <= lo:  # a flat recording: keep the full range of the type
        lo, hi = 0.0, float(255 if depth == 8 else 65535)
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


def _pair_source_mix(rows: list) -> str:
    kinds = {_source(p) for p in rows}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def enhance_workspace(ws: Workspace, *, sv: int = 51, p: float = 0.95, gfactor: float = 1.0, invert: bool = False,
                      gamma_rows: str = "all", stretch: tuple[float, float] = (0.1, 99.9), sample_frames: int = 16,
                      force: bool = False, metrics: bool = False, metrics_mode: str = "compat",
                      metrics_frames: int | None = None, recordings=None) -> dict:
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
    stretch : (float, float)
        Percentiles of the sampled thermal values mapped to 0 and 1 before restoration.
    sample_frames : int
        Frames per recording (evenly spaced) that fix its contrast setting.
    force : bool
        Redo every pair and refit the setting. Without it, done pairs are skipped; a pair
        enhanced from its extracted frame that has since been aligned is redone (its geometry is stale).
    metrics : bool
        Compute Hautière's e, r̄, σ (with n_o, n_r) per enhanced frame (about 1 s per frame).
    metrics_mode : {'compat', 'fixed'}
        See :mod:`gasdb_tools.visibility`.
    metrics_frames : int, optional
        With ``metrics``, only this many evenly spaced frames per recording.
    recordings : iterable of str, optional
        Only these recordings.

    Returns
    -------
    dict
        ``{"workspace", "settings", "recordings": [...], "frames": [...], "failed"}``; each recording
        has ``id, pairs, enhanced, skipped, sources, contrast, error``; each frame processed in
        this run has ``pair_id, recording, source, output`` and, with ``metrics``, ``metrics``.

    Raises
    ------
    ValueError
        A bad setting (before anything is read or written).
    """
    settings = EnhanceSettings(sv=sv, p=float(p), gfactor=float(gfactor), invert=bool(invert),
                               gamma_rows=gamma_rows, stretch=tuple(float(v) for v in stretch)).check()
    if isinstance(sample_frames, bool) or not isinstance(sample_frames, int) or sample_frames < 1:
        raise ValueError(f"sample_frames must be an integer >= 1, got {sample_frames!r}")
    if metrics_mode not in METRIC_MODES:
        raise ValueError(f"metrics_mode must be one of {METRIC_MODES}, got {metrics_mode!r}")
    if metrics_frames is not None and (isinstance(metrics_frames, bool) or metrics_frames < 1):
        raise ValueError(f"metrics_frames must be a positive integer or None, got {metrics_frames!r}")
    index = ws.read_index()
    wanted = ws.select_recordings(recordings, index=index)
    report = {"workspace": str(ws.root), "settings": settings.key(), "recordings": [], "frames": [], "failed": 0}
    for rec in wanted:
        rows = index.pairs_of(rec)
        entry = {"id": rec, "pairs": len(rows), "enhanced": 0, "skipped": 0,
                 "sources": {"aligned": sum(1 for r in rows if _source(r) == "aligned"),
                             "thermal": sum(1 for r in rows if _source(r) == "thermal")},
                 "contrast": None, "error": None}
        report["recordings"].append(entry)
        try:
            _enhance_recording(ws, rec, rows, index.recordings[rec], settings, entry, report["frames"],
                               force=force, sample_frames=sample_frames, metrics=metrics,
                               metrics_mode=metrics_mode, metrics_frames=metrics_frames)
            error = ""
        except (GasdbError, ValueError) as exc:
            error = str(exc)
            entry["error"] = error
            report["failed"] += 1
            log.info("enhance %s failed: %s", rec, error)
        ws.set_stage_error(rec, "enhance", error)
    return report


def _enhance_recording(ws, rec, rows, rec_row, settings, entry, frames_out, *, force, sample_frames, metrics,
                       metrics_mode, metrics_frames):
    if not rows:
        return
    source = _pair_source_mix(rows)
    stored = _stored_setting(rec_row) if not force else None
    # without a usable stored setting, outputs already on disk were made with an unknown look: redo them
    redo_all = force or (stored is None and any(r.get("enhanced") for r in rows))
    contrast = None
    if stored is not None:
        if stored["settings"] != settings.key():
            raise WorkspaceError(f"recording {rec} was enhanced with other settings "
                                 f"({_diff(stored['settings'], settings.key())})",
                                 file=ws.root / ws.RECORDINGS, field="enhance_settings",
                                 fix="rerun with the same options, or pass --force to redo the whole recording")
        if stored["contrast"].get("source") != source:
            redo_all = True  # frames were aligned (or un-aligned) since: outputs and setting are stale
        else:
            contrast = RecordingContrast(**stored["contrast"])
    if contrast is None:
        picks = _sample(rows, sample_frames)
        contrast = recording_contrast([_read_source(ws, r) for r in picks], settings, source=source)
        blob = json.dumps({"settings": settings.key(), "contrast": asdict(contrast)}, sort_keys=True,
                          separators=(",", ":"))
        with ws.transaction() as idx:
            idx.recordings[rec]["enhance_settings"] = blob
    entry["contrast"] = asdict(contrast)
    metric_ids = None
    if metrics and metrics_frames is not None:
        metric_ids = {r["pair_id"] for r in _sample(rows, metrics_frames)}
    todo = []
    for r in rows:
        out_path = ws.output_path("enhanced", rec, f"{r['pair_id']}.png")
        stale = r.get("enhanced_source") and r.get("enhanced_source") != _source(r)
        if redo_all or stale or not r.get("enhanced") or not out_path.is_file():
            todo.append(r)
        else:
            entry["skipped"] += 1
    cache: dict = {}
    done: dict[str, tuple[str, str]] = {}

    def flush():
        if not done:
            return
        ws.update_pairs({pid: {"enhanced": rel, "enhanced_source": kind} for pid, (rel, kind) in done.items()})
        done.clear()

    try:
        for r in progress(todo, desc=f"enhance {rec}", unit="frame"):
            frame, valid = _read_source(ws, r)
            out = enhance_frame(frame, contrast, settings, valid=valid, cache=cache)
            out_path = write_image(ws.output_path("enhanced", rec, f"{r['pair_id']}.png"), out, compression=1)
            kind = _source(r)
            item = {"pair_id": r["pair_id"], "recording": rec, "source": kind, "output": ws.rel(out_path)}
            if metrics and (metric_ids is None or r["pair_id"] in metric_ids):
                before = to_uint8(_normalise(frame, contrast.lo, contrast.hi, settings.invert))
                t0 = time.perf_counter()
                scores = visibility_metrics(before, out, mode=metrics_mode).to_dict()
                scores["seconds"] = round(time.perf_counter() - t0, 3)
                item["metrics"] = scores
            frames_out.append(item)
            done[r["pair_id"]] = (ws.rel(out_path), kind)
            entry["enhanced"] += 1
            if len(done) >= _FLUSH_EVERY:
                flush()
    finally:
        flush()


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
            lo, hi = _percentiles([image], (0.1, 99.9))
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
