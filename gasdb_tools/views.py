"""The one per-recording contrast stretch: how a recording's thermal frames become 8-bit for people.

Radiometric cameras write 16-bit frames that use a sliver of 0-65535; people (LabelMe, the
review app), the Gas-DB layout's 8-bit thermal channel and Tarel–Hautière's input all need them
in 8 bits or in [0, 1]. One linear stretch per recording, ``lo -> 0`` and ``hi -> 255``, keeps a
sequence from flickering and makes a recording look the same everywhere: :mod:`~gasdb_tools.enhance`
normalises its input with it, :mod:`~gasdb_tools.preannotate` shows it when there is no enhanced
frame, and :mod:`~gasdb_tools.export` writes it into the Gas-DB layout.

* 8-bit frames are shown as they are (``lo, hi = 0, 255``).
* 16-bit frames: ``lo, hi`` are the 0.5 and 99.5 percentiles (exact, by histogram) of the valid
  pixels of up to 16 frames spread over the recording, in the frames people annotate (aligned
  when the recording is aligned).

The stretch is stored in recordings.csv (``view_stretch``, JSON) with its recipe (the digests of
the sampled frames): when those frames change, it is computed again, and everything made with it
shows as stale (:mod:`gasdb_tools.provenance`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from gasdb_tools import provenance
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.imaging import read_image, to_uint8
from gasdb_tools.workspace import Workspace, is_thermal_only

__all__ = [
    "PERCENTILES",
    "SAMPLE_FRAMES",
    "Stretch",
    "exact_percentiles",
    "fit_stretch",
    "apply_stretch",
    "source_kind",
    "source_digest",
    "read_source",
    "sample_rows",
    "recorded_stretch",
    "recording_stretch",
]

#: Percentiles of a recording's valid 16-bit pixels mapped to 0 and 255.
PERCENTILES = (0.5, 99.5)
#: Frames sampled per recording (evenly spaced in time).
SAMPLE_FRAMES = 16


@dataclass(frozen=True)
class Stretch:
    """A per-recording linear stretch ``lo -> 0``, ``hi -> 255`` of frames of ``depth`` bits."""

    lo: float
    hi: float
    depth: int

    def to_dict(self) -> dict:
        return asdict(self)


def exact_percentiles(values, pcts) -> list[float]:
    """Exact percentiles (numpy's ``linear`` method) of non-negative integer values, by histogram.

    >>> exact_percentiles([np.array([0, 10, 20, 30], np.uint16)], (0, 50, 100))
    [0.0, 15.0, 30.0]
    """
    values = [np.asarray(v).ravel() for v in values]
    top = max(int(v.max()) for v in values if v.size) + 1
    counts = sum(np.bincount(v, minlength=top) for v in values)
    cdf = np.cumsum(counts)
    total = int(cdf[-1])
    out = []
    for pct in pcts:
        pos = pct / 100 * (total - 1)
        lo_i, frac = int(math.floor(pos)), pos - math.floor(pos)
        a = int(np.searchsorted(cdf, lo_i + 1))
        b = int(np.searchsorted(cdf, min(lo_i + 2, total)))
        out.append(float(a + frac * (b - a)))
    return out


def fit_stretch(samples, *, percentiles=PERCENTILES) -> Stretch:
    """The stretch of sample frames ``[(frame, valid or None), ...]`` (see the module docstring).

    >>> fit_stretch([(np.arange(1000, 2000, dtype=np.uint16).reshape(10, 100), None)])
    Stretch(lo=1004.995, hi=1994.005, depth=16)
    >>> fit_stretch([(np.zeros((4, 4), np.uint8), None)])
    Stretch(lo=0.0, hi=255.0, depth=8)
    """
    samples = list(samples)
    if not samples:
        raise ValueError("need at least one sample frame to fit a stretch")
    if all(f.dtype == np.uint8 for f, _ in samples):
        return Stretch(0.0, 255.0, 8)
    values = [(f if v is None else f[v]).astype(np.uint16, copy=False) for f, v in samples]
    values = [v for v in values if v.size]
    if not values:
        return Stretch(0.0, 65535.0, 16)
    lo, hi = exact_percentiles(values, percentiles)
    if not hi > lo:  # a flat recording: one grey level is all there is
        lo, hi = (lo, lo + 1.0)
    return Stretch(lo, hi, 16)


def apply_stretch(frame: np.ndarray, stretch: Stretch) -> np.ndarray:
    """The 8-bit view of one frame (``frame`` unchanged when it is already 8-bit and the stretch is 0-255)."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8 and stretch.lo == 0.0 and stretch.hi == 255.0:
        return frame
    return to_uint8(frame, lo=stretch.lo, hi=stretch.hi)


# ----------------------------------------------------------------------------------------------
# a recording's frames in the workspace
# ----------------------------------------------------------------------------------------------
def source_kind(rec: dict, pair: dict) -> str:
    """Which thermal frame of a pair is shown to people: ``aligned`` (warped into the RGB frame) when
    the pair has one, else ``thermal`` (the extracted frame; the annotation frame of a thermal camera
    alone)."""
    return "aligned" if pair.get("aligned") and not is_thermal_only(rec) else "thermal"


def source_digest(pair: dict, kind: str) -> str:
    """The provenance digest of a pair's ``kind`` frame (``align_digest`` or ``extract_digest``)."""
    return pair.get("align_digest" if kind == "aligned" else "extract_digest", "")


def read_source(ws: Workspace, pair: dict, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(frame, valid or None)`` of a pair's ``kind`` thermal frame, as a single-channel array."""
    rel = pair.get(kind) or ""
    if not rel:
        raise WorkspaceError(f"pair {pair['pair_id']} has no {kind} frame", file=ws.root / ws.PAIRS,
                             field=f"{pair['pair_id']}.{kind}",
                             fix="rerun `gasdb extract`" if kind == "thermal" else "rerun `gasdb align`")
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


def sample_rows(rows: list, n: int = SAMPLE_FRAMES) -> list:
    """Up to ``n`` rows evenly spaced over ``rows`` (in their order), always the first and last."""
    if not rows:
        return []
    idx = np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int))
    return [rows[i] for i in idx]


def _recipe(samples: list, kinds: list) -> str:
    return provenance.recipe("view_stretch", *[source_digest(p, k) or p["pair_id"] for p, k in zip(samples, kinds)],
                             params={"percentiles": list(PERCENTILES), "frames": SAMPLE_FRAMES, "kinds": kinds})


def recorded_stretch(rec: dict, rows: list) -> Stretch | None:
    """The recording's stored stretch when its recipe still holds for ``rows``, else None (no file is read)."""
    if not all(r.get("thermal") for r in rows):  # (no copy of a long recording's rows when all have one)
        rows = [r for r in rows if r.get("thermal")]
    samples = sample_rows(rows)
    recipe = _recipe(samples, [source_kind(rec, p) for p in samples])
    try:
        stored = json.loads(rec.get("view_stretch") or "null")
        if isinstance(stored, dict) and stored.get("inputs") == recipe:
            return Stretch(float(stored["lo"]), float(stored["hi"]), int(stored["depth"]))
    except (ValueError, KeyError, TypeError):
        pass
    return None


def recording_stretch(ws: Workspace, rec: dict, rows: list) -> tuple[Stretch, dict | None]:
    """The recording's stretch, and the ``recordings.csv`` columns to store when it was (re)computed.

    ``rows`` are the recording's pairs in time order. The stored ``view_stretch`` is reused while
    its recipe holds (the same sampled frames); otherwise the frames are read and the stretch fitted
    again, and ``{"view_stretch": ...}`` is returned for the caller to commit (None when reused).
    Read-only callers (export, release) just ignore it.
    """
    if not all(r.get("thermal") for r in rows):  # (no copy of a long recording's rows when all have one)
        rows = [r for r in rows if r.get("thermal")]
    if not rows:
        raise WorkspaceError(f"recording {rec['id']} has no extracted frames", file=ws.root / ws.PAIRS,
                             fix="run `gasdb extract` first")
    known = recorded_stretch(rec, rows)
    if known is not None:
        return known, None
    samples = sample_rows(rows)
    kinds = [source_kind(rec, p) for p in samples]
    recipe = _recipe(samples, kinds)
    stretch = fit_stretch(read_source(ws, p, k) for p, k in zip(samples, kinds))
    return stretch, {"view_stretch": json.dumps({**stretch.to_dict(), "inputs": recipe}, sort_keys=True)}
