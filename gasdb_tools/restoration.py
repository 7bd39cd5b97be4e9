"""Tarel–Hautière fast visibility restoration, exactly as the authors' code does it, and fast.

The method [1]_ removes an additive "veil" (fog, or the large-scale shading of a thermal frame)
from a single gray or colour image: the veil is bounded by the image's local minimum over the
colour channels ``W`` and by a local median minus a local median absolute deviation, then the
scene is recovered with Koschmieder's law, ``R = (I - V) / (1 - V)``, and brought back to a
pleasant range by a gamma fitted on reference rows and a tone mapping.

The specification is the authors' MATLAB ``visibresto.m`` (2009, corrected 18/08 and 29/09/2010),
not the printed equations; the differences matter (see Notes of :func:`tarel_hautiere`). The
large-window medians are the cost; :func:`median_filter` computes them as exact 8-bit medians on
reflect-padded input, bit-exact for images on the 8-bit grid, and exact on finer integer grids (or
to 12 bits on arbitrary floats) by threshold decomposition. The 8-bit median is the project's C
module ``_median8`` [2]_ when it was built at install (it tracks each window's median from the
previous one instead of searching for it: 1.86× as fast as ``cv2.medianBlur`` on a thermal
frame), else OpenCV's, with identical results. Medians of large images are split into bands of rows over
OpenCV's thread count (``cv2.setNumThreads(1)`` keeps them serial), the calling thread taking the
first band; the veil's two medians, each with the work that follows it, run in bands cut where
the threads' CPU times balanced on the last frame of the same size. On the 8-bit grid the veil is
an exact integer, and a gray frame's remaining steps are evaluated once per pair (value, veil)
present instead of once per pixel.

On a 640×512 thermal frame (sv = 51) the two medians are about three quarters of the CPU time;
``benchmarks/bench_restoration.py`` reports the CPU time along the longest chain of threaded work
next to the wall time.

References
----------
.. [1] J.-P. Tarel, N. Hautière, "Fast visibility restoration from a single color or gray level
   image", IEEE ICCV 2009, pp. 2201-2208. :doi:`10.1109/ICCV.2009.5459251`
.. [2] S. Perreault, P. Hébert, "Median filtering in constant time", IEEE Transactions on Image
   Processing 16(9), 2007, pp. 2389-2394. :doi:`10.1109/TIP.2007.902329`
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np

try:  # the C median (gasdb_tools/_median8.c), built at install when a C compiler is present
    from gasdb_tools._median8 import median_rows as _median_rows_c
except ImportError:  # not built: cv2.medianBlur gives the same medians, more slowly
    _median_rows_c = None


_LOCAL = threading.local()


def _scratch(name: str, shape, dtype) -> np.ndarray:
    """This thread's reusable array ``name`` of ``shape`` and ``dtype`` (contents undefined).

    Freshly allocated megabytes are not free: glibc returns freed memory to the kernel, and
    touching a new allocation page-faults it back in (on a busy 2-core machine about as much time
    as the non-median steps of a restoration). The hot loops here keep their large temporaries in
    per-thread arrays instead; an array is reused while name, shape and dtype stay the same. Never
    return one to a caller.
    """
    store = _LOCAL.__dict__
    array = store.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
        array = store[name] = np.empty(shape, dtype)
    return array


__all__ = [
    "MEDIAN_METHODS",
    "GAMMA_ROWS",
    "Restoration",
    "GammaFit",
    "default_sv",
    "median_filter",
    "restore_visibility",
    "fit_gamma",
    "apply_gamma",
    "tone_map",
    "tarel_hautiere",
    "reference_rows",
]

#: Median back ends: ``auto`` picks the fastest exact one for the data (see :func:`median_filter`).
MEDIAN_METHODS = ("auto", "uint8", "hist12", "exact")
#: Named choices of the rows the final gamma is fitted on (a ``slice`` of rows is also accepted).
GAMMA_ROWS = ("bottom_third", "all")

_HIST_LEVELS = 4095  # 12-bit quantisation for off-grid floats (method "hist12")
_GRID_DENOMINATORS = tuple(255 * n for n in range(1, 17)) + (65535,)
_GRID_TOL = 0.02  # in units of the grid step
_STRIP_ROWS = 96  # output rows per strip of the multi-level median
_PARALLEL_PIXELS = 1 << 17  # split medians of images at least this big over threads
_C_MAX_SV = 181  # the C median's counts are 16-bit: sv * sv <= 32767
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_BYTES = np.arange(256)
_CPUS = os.cpu_count() or 1  # os.cpu_count() reads /sys on every call
_SPLITS: dict = {}  # key -> cuts that balanced the threads on the last call (see _balanced_bands)


class Restoration(NamedTuple):
    """Output of :func:`restore_visibility`: the scene before the final gamma and tone mapping.

    Attributes
    ----------
    restored : ndarray, (H, W) or (H, W, 3)
        ``R = (I - V) / (1 - V)`` (white balance undone, adaptive smoothing applied).
    veil : ndarray, (H, W)
        The inferred atmospheric veil ``V``.
    original_mean : ndarray, (H, W)
        Mean over channels of the (white-balanced) input, ``nbo`` in the authors' code.
    restored_mean : ndarray, (H, W)
        Mean over channels of ``restored``, ``nbr`` in the authors' code.
    """

    restored: np.ndarray
    veil: np.ndarray
    original_mean: np.ndarray
    restored_mean: np.ndarray


class GammaFit(NamedTuple):
    """Final gamma ``U = scale * R ** power`` (see :func:`fit_gamma`)."""

    power: float
    scale: float


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------
def _check_image(image, *, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray):
        image = np.asarray(image)
    if image.dtype == bool or not np.issubdtype(image.dtype, np.floating):
        hint = {np.dtype(np.uint8): "image.astype(np.float32) / 255",
                np.dtype(np.uint16): "image.astype(np.float32) / 65535"}.get(image.dtype,
                                                                              "image.astype(np.float32)")
        raise TypeError(f"{name} must be a float array with values in [0, 1], got dtype {image.dtype}; "
                        f"convert it first, e.g. {hint}")
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape}); pass a non-empty H×W or H×W×3 image")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{name} must be gray (H, W) or colour (H, W, 3), got shape {image.shape}; "
                         "drop an alpha channel with image[..., :3]")
    dtype = np.float64 if image.dtype == np.float64 else np.float32
    image = image.astype(dtype, copy=False)
    lo, hi = float(image.min()), float(image.max())  # NaN propagates through min/max
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(image)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values; replace them first "
                         "(e.g. np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0))")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1], got [{lo:.6g}, {hi:.6g}]; scale the image "
                         "(e.g. divide 8-bit values by 255) or clip it with np.clip(image, 0, 1)")
    return image


def default_sv(shape) -> int:
    """The authors' demo window: ``2*floor(max(H, W)/25) + 1`` for gray, ``/50`` for colour.

    Capped at the largest odd size that fits the image (51 for a 640×512 gray frame).

    >>> default_sv((512, 640)), default_sv((300, 450, 3))
    (51, 19)
    """
    h, w = int(shape[0]), int(shape[1])
    colour = len(shape) == 3 and shape[2] == 3
    sv = 2 * (max(h, w) // (50 if colour else 25)) + 1
    cap = min(h, w) if min(h, w) % 2 else min(h, w) - 1
    return max(1, min(sv, cap))


def _check_sv(sv, shape) -> int:
    if sv is None:
        return default_sv(shape)
    if isinstance(sv, bool) or not isinstance(sv, (int, np.integer)):
        raise TypeError(f"sv must be an odd integer (the median window size in pixels), got {sv!r}")
    sv = int(sv)
    h, w = int(shape[0]), int(shape[1])
    if sv < 1:
        raise ValueError(f"sv must be an odd integer >= 1, got {sv}")
    if sv % 2 == 0:
        raise ValueError(f"sv must be odd so the median window is centred, got {sv}; use {sv - 1} or {sv + 1}")
    if sv > min(h, w):
        fit = min(h, w) if min(h, w) % 2 else min(h, w) - 1
        raise ValueError(f"sv={sv} is larger than the image ({h}×{w}); use an odd sv <= {fit}, "
                         f"e.g. sv=None for the authors' default ({default_sv(shape)})")
    return sv


def _check_method(median: str) -> str:
    if median not in MEDIAN_METHODS:
        raise ValueError(f"median must be one of {MEDIAN_METHODS}, got {median!r}")
    return median


# ----------------------------------------------------------------------------------------------
# medians with mirrored borders
# ----------------------------------------------------------------------------------------------
def _pad(a: np.ndarray, r: int) -> np.ndarray:
    # BORDER_REFLECT (fedcba|abcdef) == MATLAB 'symmetric' == scipy 'reflect'
    return cv2.copyMakeBorder(a, r, r, r, r, cv2.BORDER_REFLECT) if r else a


def _workers(pixels: int) -> int:
    """Threads for one median: OpenCV's thread count (``cv2.setNumThreads``), at most 4, for big images."""
    return max(1, min(4, cv2.getNumThreads(), _CPUS)) if pixels >= _PARALLEL_PIXELS else 1


def _pool(n: int) -> ThreadPoolExecutor:
    """A shared pool of ``n`` threads (a new one in a forked child, whose copy has no threads)."""
    global _POOL, _POOL_PID
    if _POOL is None or _POOL_PID != os.getpid() or _POOL._max_workers < n:
        _POOL, _POOL_PID = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gasdb-median"), os.getpid()
    return _POOL


def _rank_codes(src: np.ndarray, sv: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Look-up tables ``(encode, decode)`` that make OpenCV's median search short, or None.

    Every median of ``src`` lies in ``[lo, hi]``, its minimum and maximum; when those span more
    than 208 values, the bounds are tightened to the ``h``-th smallest and the ``h``-th largest
    value of ``src`` (``h = (sv² + 1) / 2``): every ``sv × sv`` window inside ``src`` holds ``h``
    values on either side of its median. ``encode`` maps ``y = clip(x, lo, hi) - lo`` to codes
    whose coarse bin (``code >> 4``) and fine bin (``code & 15``), the two scans of OpenCV's
    search, stay short where ``y`` is small: the first ``k`` coarse bins hold 4 values each, the
    others 16, with ``k`` as large as fits ``[lo, hi]`` (for medians of deviations ``|W - A|``,
    mostly below 20, this beat every uniform bin width, and a few 4-value bins do as well as many).
    Strictly increasing on ``[lo, hi]``, so the median of the codes decodes to the exact median.
    None when the bounds span 241 values or more from 0 (no gain).
    """
    lo, hi = (int(v) for v in cv2.minMaxLoc(src)[:2])
    if hi - lo >= 208:  # fewer than four 4-value bins fit: a histogram pass is worth it
        hist = cv2.calcHist([src], [0], None, [256], [0, 256]).ravel()
        h = (sv * sv + 1) // 2
        lo = int(np.searchsorted(np.cumsum(hist), h))
        hi = 255 - int(np.searchsorted(np.cumsum(hist[::-1]), h))
    return _codes_for_bounds(lo, hi)


@functools.lru_cache(maxsize=1024)
def _codes_for_bounds(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The tables of :func:`_rank_codes` for medians known to lie in ``[lo, hi]`` (cached: read only)."""
    span = hi - lo + 1
    if lo == 0 and span > 240:
        return None
    f = 4
    k = min(16, (256 - span) // (16 - f))  # k f + 16 (16 - k) >= span
    y = np.arange(span)
    table = np.where(y < k * f, 16 * (y // f) + y % f, 16 * k + (y - k * f)).astype(np.uint8)
    encode = table[np.clip(_BYTES, lo, hi) - lo]
    decode = np.zeros(256, np.int64)
    decode[table] = np.arange(lo, hi + 1)
    decode = np.maximum.accumulate(decode).astype(np.uint8)  # codes never produced: kept non-decreasing
    encode.flags.writeable = decode.flags.writeable = False
    return encode, decode


def _median_blur(src: np.ndarray, sv: int, recode: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Medians of the ``sv × sv`` windows lying inside the uint8 image ``src`` (into ``out`` if given).

    The output is ``sv - 1`` rows and columns smaller than ``src``. Computed by the C median
    (``_median8``) when it is built; else by ``cv2.medianBlur``, which replicates the edges for
    the windows that reach past them (those medians are dropped). OpenCV's constant-time
    median (Perreault–Hébert) finds each median by scanning a 16-bin coarse histogram, then 16
    fine bins, from the bottom: its cost grows with the median's code (3 ms for an all-zero
    640×512 frame, 7.5 ms for a thermal one). With ``recode`` the values are first recoded by
    :func:`_rank_codes`: worth its two look-ups and a histogram for deviations ``|W - A|``, whose
    medians are small (about 15 % faster there), not for the frame itself. The C median tracks
    each median from the previous window's instead of searching for it, and needs no recoding.
    """
    r = sv // 2
    if _median_rows_c is not None and sv <= _C_MAX_SV:
        if out is None:
            out = np.empty((src.shape[0] - 2 * r, src.shape[1] - 2 * r), np.uint8)
        _median_rows_c(np.ascontiguousarray(src), sv, 0, out.shape[0], out)
        return out
    codes = _rank_codes(src, sv) if recode and sv > 5 else None  # sv <= 5: sorting networks, no search
    if codes is None:
        med = cv2.medianBlur(src, sv)[r:src.shape[0] - r, r:src.shape[1] - r]
    else:
        encode, decode = codes
        med = cv2.LUT(cv2.medianBlur(cv2.LUT(src, encode), sv)[r:src.shape[0] - r, r:src.shape[1] - r], decode)
    if out is None:
        return med
    out[...] = med
    return out


def _median_rows(padded: np.ndarray, sv: int, y0: int, y1: int, out: np.ndarray, recode: bool = False) -> None:
    """Output rows ``[y0, y1)`` of the ``sv × sv`` median of an already padded uint8 image, into ``out``.

    ``padded`` has ``sv - 1`` more rows and columns than the output; ``out`` is the band's
    ``(y1 - y0, W)`` block. The C median reads only the rows the band's windows cover and computes
    no other output, so bands of rows on threads share an image without recomputed halos (OpenCV's
    median, the fallback, computes ``sv - 1`` extra rows per band: about 10 % for two bands).
    """
    _median_blur(padded[y0:y1 + sv - 1], sv, recode, out=out)


def _banded(h: int, w: int, work) -> list:
    """``work(y0, y1)`` for bands of rows ``[y0, y1)`` of an ``h × w`` image, on threads.

    One band per worker (:func:`_workers`); the C median, OpenCV and numpy release the GIL, so the
    bands run at once.
    """
    return _run_bands(_cuts(h, _workers(h * w)), work)


def _cuts(size: int, n: int) -> list:
    """``n + 1`` cuts splitting ``range(size)`` into ``n`` near-equal bands."""
    return [(k * size + n // 2) // n for k in range(n + 1)]


def _balanced_bands(key: tuple, size: int, n: int, work) -> list:
    """:func:`_run_bands` over ``n`` bands of ``range(size)``, cut where the last call with this ``key`` balanced.

    A band's cost depends on its content (OpenCV's median search grows with the median), so equal
    widths leave one thread waiting for the other. Each band's CPU time is measured, and the next
    call with the same ``key`` (image size, window, ...) cuts where those costs, spread evenly over
    each band, would have been equal: frames of one sequence differ little. Half a step at a time,
    at most a quarter of a band from the equal split. The cuts only decide who computes what: the
    output does not depend on them.
    """
    even = _cuts(size, n)
    if n == 1:
        return _run_bands(even, work)
    key = key + (size, n)
    cuts = _SPLITS.get(key, even)
    spent = {}

    def timed(a0, a1):
        start = time.thread_time()
        try:
            return work(a0, a1)
        finally:
            spent[a0] = time.thread_time() - start

    out = _run_bands(cuts, timed)
    costs = [spent[a0] for a0 in cuts[:-1]]
    total = sum(costs)
    if min(costs) > 0:  # plain Python: a few bands, and numpy's overhead would be most of the cost
        new, done, k = [0], 0.0, 0
        for j in range(1, n):  # where the cumulative cost, linear inside each band, reaches j / n of it
            while done + costs[k] < total * j / n:
                done += costs[k]
                k += 1
            x = cuts[k] + (total * j / n - done) / costs[k] * (cuts[k + 1] - cuts[k])
            x = (x + cuts[j]) / 2  # half a step
            new.append(round(min(max(x, even[j] - size / n / 4), even[j] + size / n / 4)))
        new.append(size)
        if all(b > a for a, b in zip(new, new[1:])):
            _SPLITS[key] = new
    return out


def _run_bands(cuts: list, work) -> list:
    """``[work(cuts[k], cuts[k + 1]) for k ...]``: the calling thread runs the first band, the pool the others.

    A band the pool has not started by the time the calling thread is free (on a busy machine the
    other cores may be taken) is run by the calling thread instead of waited for.
    """
    bands = list(zip(cuts[:-1], cuts[1:]))
    if len(bands) == 1:
        return [work(*bands[0])]
    futures = [_pool(len(bands) - 1).submit(work, a0, a1) for a0, a1 in bands[1:]]
    try:
        results = [work(*bands[0])]
    except BaseException:
        for future in futures:
            if not future.cancel():
                future.exception()  # wait: no band may still be writing once this call has returned
        raise
    for future, band in zip(futures, bands[1:]):
        results.append(work(*band) if future.cancel() else future.result())
    return results


def _median_u8_padded(qpad: np.ndarray, sv: int, h: int, w: int, recode: bool = False) -> np.ndarray:
    """8-bit median of an already reflect-padded image, cropped to ``h × w`` (bands of rows on threads)."""
    out = np.empty((h, w), np.uint8)
    qpad = np.ascontiguousarray(qpad)

    def work(y0, y1):
        _median_rows(qpad, sv, y0, y1, out[y0:y1], recode)

    _banded(h, w, work)
    return out


def _median_u8(q: np.ndarray, sv: int, recode: bool = False) -> np.ndarray:
    """Exact median of a uint8 image, reflect borders (:func:`_median_rows` on a padded copy)."""
    return _median_u8_padded(_pad(q, sv // 2), sv, *q.shape, recode)


def _median_int(q: np.ndarray, sv: int, span: int, recode: bool = False) -> np.ndarray:
    """Exact median of an integer image with values in ``[0, span]``, reflect borders.

    ``span <= 255`` is one 8-bit median. Larger spans use threshold decomposition: for any
    non-decreasing map ``f``, ``median(f(q)) = f(median(q))`` (the median of an odd window is an
    order statistic). A first 8-bit median of the coarse codes ``q >> k`` gives ``m >> k``
    exactly, hence the 256-level group ``G = m >> 8`` of every output pixel; then
    ``m = 256 G + median(clip(q - 256 G, 0, 255))``, an 8-bit median computed, strip by strip,
    only over the columns whose pixels fall in group ``G`` (plus the window's halo). On smooth
    frames that is one coarse pass plus about two passes' worth of area.
    """
    if sv == 1:
        return q.copy()
    if span <= 255:
        return _median_u8(q.astype(np.uint8, copy=False), sv, recode)
    q = q.astype(np.uint16, copy=False)
    r = sv // 2
    h, w = q.shape
    if sv <= 5:  # OpenCV's small-kernel median takes uint16 directly
        return cv2.medianBlur(_pad(q, r), sv)[r:r + h, r:r + w].astype(np.int32)
    shift = max(0, math.ceil(math.log2((span + 1) / 256)))
    qpad = _pad(q, r)
    coarse = _median_u8_padded((qpad >> np.uint16(shift)).astype(np.uint8), sv, h, w)
    group = coarse.astype(np.int32) >> (8 - shift)
    out = np.empty((h, w), np.int32)

    def strip(y0):
        y1 = min(h, y0 + _STRIP_ROWS)
        gs = group[y0:y1]
        for g in np.unique(gs):
            sel_cols = (gs == g).any(axis=0)
            for x0, x1 in _runs(sel_cols, 2 * r):
                block = cv2.subtract(qpad[y0:y1 + 2 * r, x0:x1 + 2 * r], int(g) << 8)  # saturates at 0
                np.minimum(block, 255, out=block)
                med = _median_blur(block.astype(np.uint8), sv, recode)
                sel = gs[:, x0:x1] == g
                out[y0:y1, x0:x1][sel] = (int(g) << 8) + med[sel].astype(np.int32)

    starts = range(0, h, _STRIP_ROWS)
    n = _workers(h * w)
    if n == 1:
        for y0 in starts:
            strip(y0)
    else:  # strips write disjoint rows of ``out``
        list(_pool(n).map(strip, starts))
    return out


def _runs(flags: np.ndarray, gap: int):
    """``[x0, x1)`` runs of true flags, merging runs separated by at most ``gap`` false ones."""
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]])) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _grid(x: np.ndarray, denominators=_GRID_DENOMINATORS) -> int | None:
    """The first N of ``denominators`` (255, 510, ..., 4080, 65535) with ``x * N`` integral, or None.

    Integral means within ``_GRID_TOL`` of a grid step: values computed as ``k / N`` in any
    precision pass.
    """
    flat = x.reshape(-1)
    sample = flat[:: max(1, flat.size // 4096)]
    for n in denominators:
        t = sample * n
        if np.abs(t - np.rint(t)).max() <= _GRID_TOL:
            t = flat * n
            t -= np.rint(t)
            if max(-float(t.min()), float(t.max())) <= _GRID_TOL:
                return n
    return None


def _quantise(x: np.ndarray, method: str):
    """Integer codes of ``x``: ``(q, span, decode)`` with ``decode(q) ≈ x`` (exact on a grid).

    ``decode`` maps codes (and medians of codes) back to values; ``span`` is ``q.max()``;
    ``decode.exact`` tells whether ``x`` lies on the grid (``uint8`` also rounds values off it).
    """
    dtype = x.dtype
    if x.dtype == np.float32 and method != "hist12":
        # the common case, 8-bit data as float32. Rounding 255 x + 0.5 - tol and 255 x - 0.5 + tol
        # (OpenCV rounds to nearest, |.| is harmless for x >= 0) gives the same integer k exactly
        # when |255 x - k| <= tol: two passes instead of rounding, then measuring the residue
        hi = cv2.convertScaleAbs(x, alpha=255.0, beta=0.5 - _GRID_TOL)
        on_grid = cv2.norm(hi, cv2.convertScaleAbs(x, alpha=255.0, beta=_GRID_TOL - 0.5), cv2.NORM_INF) == 0
        if on_grid:
            return hi, int(hi.max()), _Decode(0, 255, None, dtype, True)
        if method == "uint8":  # |x * 255| rounded to nearest even, as np.rint
            q = cv2.convertScaleAbs(x, alpha=255.0)
            return q, int(q.max()), _Decode(0, 255, None, dtype, False)
    n = None if method == "hist12" else _grid(x, (255,) if method == "uint8" else _GRID_DENOMINATORS)
    if n is not None or method == "uint8":
        exact = n is not None
        n = n or 255
        q = np.rint(x * n)
        qmin = int(q.min()) if n != 255 else 0
        if qmin:
            q -= qmin
        span = int(q.max())
        q = q.astype(np.uint8 if span <= 255 else np.uint16)
        return q, span, _Decode(qmin, n, None, dtype, exact)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.zeros(x.shape, np.uint8), 0, _Decode(lo, None, 1.0, dtype)
    step = (hi - lo) / _HIST_LEVELS
    q = np.rint((x - lo) * (1.0 / step)).astype(np.uint16)
    return q, _HIST_LEVELS, _Decode(lo, None, step, dtype)


class _Decode:
    """Codes -> values: ``(base + q) / n`` on a grid ``k/n`` (bit-exact), else ``base + q * step``."""

    def __init__(self, base, n, step, dtype, exact=False):
        self.base, self.n, self.dtype, self.exact = base, n, dtype, exact
        self.step = 1.0 / n if n else step

    def __call__(self, q: np.ndarray) -> np.ndarray:
        if self.n:  # a look-up table: values identical to (base + q) / n, computed once per code
            return np.take(((np.arange(int(q.max()) + 1) + self.base) / self.n).astype(self.dtype), q)
        return (self.base + q * self.step).astype(self.dtype)

    def difference(self, q: np.ndarray) -> np.ndarray:
        if self.n:
            return np.take((np.arange(int(q.max()) + 1) / self.n).astype(self.dtype), q)
        return (q * self.step).astype(self.dtype)


def _median_exact(x: np.ndarray, sv: int) -> np.ndarray:
    if sv == 1:
        return x.copy()
    if sv <= 5 and x.dtype == np.float32:
        r = sv // 2
        return cv2.medianBlur(_pad(x, r), sv)[r:r + x.shape[0], r:r + x.shape[1]]
    from scipy import ndimage

    return ndimage.median_filter(x, size=sv, mode="reflect")


def median_filter(image: np.ndarray, sv: int, *, method: str = "auto") -> np.ndarray:
    """Square median filter with mirrored borders (MATLAB ``medfilt2(..., 'symmetric')``).

    Parameters
    ----------
    image : (H, W) float ndarray
        Values in [0, 1].
    sv : int
        Odd window size, at most ``min(H, W)``.
    method : {'auto', 'uint8', 'hist12', 'exact'}
        ``uint8``: round to 1/255 and take the constant-time 8-bit median (the C module, or
        OpenCV's; bit-exact when the image is on the 8-bit grid; error up to 0.5/255 otherwise).
        ``hist12``: quantise the image's own value range to 4095 levels and take an exact median of
        those codes by threshold decomposition into 8-bit medians (error up to 0.5/4095 of the
        range). ``exact``:
        ``scipy.ndimage.median_filter`` in float (slow: seconds per frame). ``auto``: exact and
        fast when the values lie on a grid ``k/N`` (N = 255·n for n ≤ 16, e.g. 765 for the mean of
        three 8-bit channels, or 65535), else ``hist12``.

    Returns
    -------
    (H, W) ndarray, same float dtype as ``image``.

    Examples
    --------
    >>> x = np.random.default_rng(0).integers(0, 256, (40, 50)) / 255.0
    >>> from scipy import ndimage
    >>> bool(np.array_equal(median_filter(x, 9), ndimage.median_filter(x, 9, mode="reflect")))
    True
    """
    x = _check_image(image)
    if x.ndim != 2:
        raise ValueError(f"median_filter takes a gray (H, W) image, got shape {x.shape}; filter channels one by one")
    sv = _check_sv(sv, x.shape)
    return _median(x, sv, _check_method(method))


def _median(x: np.ndarray, sv: int, method: str) -> np.ndarray:
    if method == "exact":
        return _median_exact(x, sv)
    q, span, decode = _quantise(x, method)
    return decode(_median_int(q, sv, span))


class _VeilCodes(NamedTuple):
    """The veil on integer codes: ``W = (base + q) / n`` and ``max(min(W, B), 0) = c / n`` exactly."""

    q: np.ndarray
    c: np.ndarray
    base: int
    n: int

    def veil(self, p: float, dtype) -> np.ndarray:
        """``V = p * c / n``, each value computed once in float64 and rounded to ``dtype``."""
        table = (p * (np.arange(int(self.c.max()) + 1) / self.n)).astype(dtype)
        if self.c.dtype == np.uint8:
            return cv2.LUT(self.c, np.pad(table, (0, 256 - table.size)))
        return np.take(table, self.c)


def _veil_codes_u8(q: np.ndarray, sv: int, per_band=None, c: np.ndarray | None = None):
    """``c = max(min(q, A - M), 0)`` for 8-bit codes ``q``: ``A = median(q)``, ``M = median(|q - A|)``.

    Each median runs in bands of rows (:func:`_balanced_bands`), the calling thread taking the
    first; the second waits for the whole of ``A`` (its windows reach into the next band).
    ``per_band(y0, y1, c_band)``, when given, runs in each band's thread right after it. ``c``: an
    array of the shape of ``q`` to fill (else a new one). Returns ``(c, [per_band results])``.
    """
    h, w = q.shape
    c = np.empty_like(q) if c is None else c
    if sv == 1:  # A = q, M = 0
        c[...] = q
        return c, [per_band(0, h, c)] if per_band else []
    r = sv // 2
    n = _workers(h * w)
    qpad = cv2.copyMakeBorder(q, r, r, r, r, cv2.BORDER_REFLECT,
                              dst=_scratch("veil.qpad", (h + 2 * r, w + 2 * r), np.uint8))
    aq = _scratch("veil.a", q.shape, np.uint8)

    def first(y0, y1):
        _median_rows(qpad, sv, y0, y1, aq[y0:y1])

    _balanced_bands(("median", h, w, sv), h, n, first)

    def second(y0, y1):  # |q - A| over the band and its halo, mirrored where the halo leaves the image
        a0, a1 = max(0, y0 - r), min(h, y1 + r)
        dpad = cv2.copyMakeBorder(cv2.absdiff(q[a0:a1], aq[a0:a1]), r - (y0 - a0), y1 + r - a1, r, r,
                                  cv2.BORDER_REFLECT, dst=_scratch("veil.dpad", (y1 - y0 + 2 * r, w + 2 * r), np.uint8))
        m = _scratch("veil.m", (y1 - y0, w), np.uint8)
        _median_rows(dpad, sv, 0, y1 - y0, m, recode=True)
        c[y0:y1] = cv2.min(q[y0:y1], cv2.subtract(aq[y0:y1], m))  # saturating: max(., 0)
        return per_band(y0, y1, c[y0:y1]) if per_band else None

    return c, _balanced_bands(("deviation median", h, w, sv, per_band is None), h, n, second)


def _veil(w: np.ndarray, sv: int, p: float, method: str, quantised=None):
    """The authors' veil ``V = p * max(min(W, B), 0)``, ``B = A - median(|W - A|)``, ``A = median(W)``.

    Returns ``(V, None)``, or ``(None, codes)`` (:class:`_VeilCodes`) when ``W`` lies on a grid
    ``k/n``: then both medians and ``min(W, B)`` are exact integers and ``V`` is left to the caller.
    ``quantised``: :func:`_quantise` of ``w`` when the caller already has it.
    """
    if method == "exact":
        a = _median_exact(w, sv)
        mad = _median_exact(np.abs(w - a), sv)
    else:
        q, span, decode = quantised or _quantise(w, method)
        if decode.exact and q.dtype == np.uint8 and decode.base == 0:
            return None, _VeilCodes(q, _veil_codes_u8(q, sv)[0], 0, decode.n)
        aq = _median_int(q, sv, span)
        if q.dtype == np.uint8 and aq.dtype == np.uint8:
            d = cv2.absdiff(q, aq)
        else:
            d = np.abs(q.astype(np.int32) - aq)
        dspan = int(d.max())
        mq = _median_int(d.astype(np.uint8 if dspan <= 255 else np.uint16, copy=False), sv, dspan, recode=True)
        if decode.exact:
            c = np.minimum(q.astype(np.int32), aq.astype(np.int32) - mq) + decode.base
            np.maximum(c, 0, out=c)
            return None, _VeilCodes(q, c.astype(np.uint8 if int(c.max()) <= 255 else np.uint16), decode.base, decode.n)
        a, mad = decode(aq), decode.difference(mq)
    # the authors' code: V = p * max(min(W, B), 0) (the paper's max(min(p B, W), 0) blackens thermal frames)
    v = np.minimum(w, a - mad)
    np.maximum(v, 0, out=v)
    v *= w.dtype.type(p)
    return v, None


# ----------------------------------------------------------------------------------------------
# the authors' steps
# ----------------------------------------------------------------------------------------------
def _white_balance(image, balance: float, sv: int, method: str):
    """Return (balanced image, per-pixel or global white to multiply back, or None)."""
    if image.ndim == 2 or balance < 0:
        return image, None
    dt = image.dtype
    if balance == 0:  # global: mean colour of the 1 % clearest pixels (min over channels)
        w = np.minimum(np.minimum(image[..., 0], image[..., 1]), image[..., 2])
        ival = np.quantile(w, 0.99, method="hazen")  # MATLAB/Octave default: p(k) = (k - 0.5)/n
        white = image[w >= ival].astype(np.float64).mean(axis=0)
        if not white.max() > 0:
            white = np.ones(3)
        white = np.maximum(white / white.max(), 1 / 255)  # guard: a channel with no light
        white = white.astype(dt)
        return image / white, white
    # local: fo_c = (median_c / mean_c median)^balance, renormalised over channels
    fo = np.stack([_median(np.ascontiguousarray(image[..., c]), sv, method) for c in range(3)], axis=2)
    mean = fo.mean(axis=2, keepdims=True)
    dark = mean[..., 0] <= 0  # all three medians 0 (black borders): 0/0 in the authors' code
    with np.errstate(divide="ignore", invalid="ignore"):
        fo = (np.maximum(fo, np.asarray(0.5 / 255, dt)) / np.where(mean > 0, mean, 1)) ** dt.type(balance)
    fo /= fo.mean(axis=2, keepdims=True)
    fo[dark] = 1
    return image / fo, fo


def _smooth_adapted(r: np.ndarray, factor: np.ndarray, smax: int) -> np.ndarray:
    """The authors' ``medsmooth``: per-pixel median over a window of ``min(floor(factor), smax)``.

    MATLAB crops rows ``floor(j - s/2) .. floor(j + s/2)`` (1-based ``j``), clipped at the border:
    0-based rows ``i - ceil(s/2) .. i + floor(s/2)``, an ``(s + 1)``-square window; an even count
    takes the mean of the two middle values. Vectorised with one pass per distinct size.
    """
    sizes = np.minimum(np.floor(factor), smax).astype(np.int64)
    out = r.copy()
    chans = [r] if r.ndim == 2 else [r[..., c] for c in range(r.shape[2])]
    for s in np.unique(sizes):
        s = int(s)
        ys, xs = np.nonzero(sizes == s)
        before, after = -(-s // 2), s // 2
        for c, ch in enumerate(chans):
            padded = np.pad(ch.astype(np.float64), ((before, after), (before, after)), constant_values=np.nan)
            win = np.lib.stride_tricks.sliding_window_view(padded, (s + 1, s + 1))
            res = np.empty(ys.size, np.float64)
            for k0 in range(0, ys.size, 65536):
                v = win[ys[k0:k0 + 65536], xs[k0:k0 + 65536]].reshape(-1, (s + 1) ** 2)
                v = np.sort(v, axis=1)  # NaN (outside the image) sorts last
                cnt = np.count_nonzero(~np.isnan(v), axis=1)
                idx = np.arange(v.shape[0])
                res[k0:k0 + 65536] = 0.5 * (v[idx, (cnt - 1) // 2] + v[idx, cnt // 2])
            if r.ndim == 2:
                out[ys, xs] = res
            else:
                out[ys, xs, c] = res
    return out


def _check_args(image, sv, p, smax, balance, median):
    image = _check_image(image)
    sv = _check_sv(sv, image.shape)
    method = _check_method(median)
    if isinstance(p, bool) or not (0.0 < float(p) < 1.0):
        raise ValueError(f"p (restoration strength) must lie strictly between 0 and 1, got {p!r}; 0.95 is usual")
    if isinstance(smax, bool) or not isinstance(smax, (int, np.integer)) or smax < 1:
        raise ValueError(f"smax must be an integer >= 1 (1 = no adapted smoothing), got {smax!r}")
    if not math.isfinite(float(balance)):
        raise ValueError(f"balance must be a finite number (< 0 none, 0 global, > 0 local), got {balance!r}")
    return image, sv, method


def _koschmieder(image: np.ndarray, v: np.ndarray):
    """``R = (I - V) / (1 - V)``, as ``(I - V) * factor``; returns ``(R, factor)``."""
    factor = 1 / (1 - v)
    if image.ndim == v.ndim:
        return (image - v) * factor, factor
    return (image - v[..., None]) * factor[..., None], factor


def _restore(image, sv, p, balance, smax, method, *, quantised=None):
    """Steps 1-5 (:func:`restore_visibility`); ``quantised``: :func:`_quantise` of a gray ``image``."""
    balanced, white = _white_balance(image, float(balance), sv, method)
    if balanced.ndim == 2:
        w = nbo = balanced
    else:
        w = np.minimum(np.minimum(balanced[..., 0], balanced[..., 1]), balanced[..., 2])
        nbo = balanced.mean(axis=2)
    v, codes = _veil(np.ascontiguousarray(w), sv, p, method, quantised if balanced.ndim == 2 else None)
    if codes is not None:
        v = codes.veil(p, w.dtype)
    r, factor = _koschmieder(balanced, v)
    if white is not None:
        r *= white
    if smax != 1:
        r = _smooth_adapted(r, factor, int(smax)).astype(image.dtype)
    nbr = r if r.ndim == 2 else r.mean(axis=2)
    return Restoration(r, v, nbo, nbr)


def restore_visibility(image: np.ndarray, *, sv: int | None = None, p: float = 0.95, balance: float = -1.0,
                       smax: int = 1, median: str = "auto") -> Restoration:
    """Steps 1-5 of Tarel–Hautière: white balance, veil, inverse Koschmieder law, adapted smoothing.

    See :func:`tarel_hautiere` for the parameters; the final gamma and tone mapping are left out
    so that a sequence can share one contrast setting (:func:`fit_gamma`, :func:`tone_map`).

    Returns
    -------
    Restoration
        ``restored`` (R), ``veil`` (V), ``original_mean`` (nbo) and ``restored_mean`` (nbr).
    """
    image, sv, method = _check_args(image, sv, p, smax, balance, median)
    return _restore(image, sv, p, balance, smax, method)


def reference_rows(height: int, gamma_rows="bottom_third") -> slice:
    """Rows the final gamma is fitted on, as a slice.

    ``bottom_third`` reproduces the authors' ``nbo(2*dimy/3:dimy, :)`` as GNU Octave runs it: the
    fractional start ``2H/3`` makes a range ``2H/3, 2H/3 + 1, ... <= H`` whose indices Octave
    truncates, i.e. 0-based rows ``floor(2H/3) - 1 ... floor(2H/3) - 1 + floor(H/3)`` (340-510 for
    H = 512, 199-299 for H = 300); ``all`` is every row; a ``slice`` is used as given.

    >>> reference_rows(512), reference_rows(300), reference_rows(10, "all")
    (slice(340, 511, None), slice(199, 300, None), slice(0, 10, None))
    """
    if isinstance(gamma_rows, slice):
        rows = range(height)[gamma_rows]
        if len(rows) == 0:
            raise ValueError(f"gamma_rows={gamma_rows!r} selects no row of an image {height} rows high")
        return gamma_rows
    if gamma_rows == "all":
        return slice(0, height)
    if gamma_rows == "bottom_third":
        start = max((2 * height) // 3 - 1, 0)
        return slice(start, min(height, start + height // 3 + 1))
    raise ValueError(f"gamma_rows must be 'bottom_third', 'all' or a slice of rows, got {gamma_rows!r}")


def fit_gamma(original_mean, restored_mean, *, gfactor: float = 1.3, rows="bottom_third",
              mask: np.ndarray | None = None) -> GammaFit:
    """Fit the final gamma so the restored image's log-statistics match the original's.

    ``lo = log(nbo + 0.5/255)``, ``lr = log(nbr + 0.5/255)`` over the reference rows;
    ``power = gfactor * std(lo) / std(lr)`` (sample std, N - 1) and
    ``scale = exp(mean(lo) - power * mean(lr))``, so ``U = scale * R ** power``.

    Parameters
    ----------
    original_mean, restored_mean : ndarray or sequence of ndarrays
        ``nbo`` and ``nbr`` of one image, or lists of them (pooled, for one setting per sequence).
    gfactor : float
        Extra gamma factor (authors' default 1.3; 1.0 in their gray demo).
    rows : {'bottom_third', 'all'} or slice
        Reference rows (see :func:`reference_rows`).
    mask : bool ndarray, optional
        Only pixels where ``mask`` is true count (e.g. the valid area of a warped frame).
    """
    _check_gfactor(gfactor)
    nbos = original_mean if isinstance(original_mean, (list, tuple)) else [original_mean]
    nbrs = restored_mean if isinstance(restored_mean, (list, tuple)) else [restored_mean]
    masks = mask if isinstance(mask, (list, tuple)) else [mask] * len(nbos)
    lo_parts, lr_parts = [], []
    for nbo, nbr, m in zip(nbos, nbrs, masks):
        sel = reference_rows(nbo.shape[0], rows)
        o, r = nbo[sel], nbr[sel]
        if m is not None:
            o, r = o[m[sel]], r[m[sel]]
        lo_parts.append(np.log(o.astype(np.float64).ravel() + 0.5 / 255))
        lr_parts.append(np.log(r.astype(np.float64).ravel() + 0.5 / 255))
    return _gamma_from_logs(np.concatenate(lo_parts), np.concatenate(lr_parts), gfactor)


def _check_gfactor(gfactor) -> None:
    if not (isinstance(gfactor, (int, float, np.floating, np.integer)) and not isinstance(gfactor, bool)
            and math.isfinite(gfactor) and gfactor > 0):
        raise ValueError(f"gfactor must be a positive number, got {gfactor!r}; 1.0 keeps the original contrast")


def _gamma_from_logs(lo: np.ndarray, lr: np.ndarray, gfactor: float, weights: np.ndarray | None = None) -> GammaFit:
    """The gamma of :func:`fit_gamma` from ``lo`` and ``lr``, each value counted ``weights`` times."""
    if weights is None:
        weights = np.ones(lo.size)
    n = float(weights.sum())
    if n == 0:
        raise ValueError("no reference pixel to fit the gamma on; check rows= and mask=")
    # sums, not BLAS dot products: OpenBLAS may wake its threads for them (milliseconds on a busy machine)
    mo, mr = float((weights * lo).sum()) / n, float((weights * lr).sum()) / n
    so = math.sqrt(float((weights * (lo - mo) ** 2).sum()) / (n - 1)) if n > 1 else 0.0  # sample std (N - 1)
    sr = math.sqrt(float((weights * (lr - mr) ** 2).sum()) / (n - 1)) if n > 1 else 0.0
    power = gfactor * so / sr if sr > 0 and math.isfinite(sr) else float(gfactor)  # flat rows: no contrast to match
    return GammaFit(float(power), float(math.exp(mo - power * mr)))


def apply_gamma(restored: np.ndarray, fit: GammaFit) -> np.ndarray:
    """``U = scale * R ** power`` (R clipped at 0 first; negative R only arises with white balance)."""
    r = np.maximum(restored, 0)
    u = cv2.pow(r, fit.power) if r.dtype == np.float32 else r ** fit.power
    u *= r.dtype.type(fit.scale)
    return u


def tone_map(u: np.ndarray, *, peak: float | None = None) -> np.ndarray:
    """The authors' final tone mapping ``U / (1 + (1 - 1/m) U)``, mapping [0, m] onto [0, 1].

    ``m = max(U)`` by default (per image, the authors' choice); a fixed ``peak`` gives one
    setting for a sequence (values above it are clipped to 1). Output is clipped to [0, 1].
    """
    m = float(u.max()) if peak is None else float(peak)
    if not m > 0:
        return np.zeros_like(u)
    out = u / (1 + u * u.dtype.type(1 - 1 / m))
    np.clip(out, 0, 1, out=out)
    return out


def tarel_hautiere(image: np.ndarray, *, sv: int | None = None, p: float = 0.95, balance: float = -1.0,
                   smax: int = 1, gfactor: float = 1.3, gamma_rows="bottom_third", median: str = "auto",
                   return_veil: bool = False):
    """Fast visibility restoration of a gray or colour image (Tarel & Hautière, ICCV 2009).

    Follows the authors' ``visibresto.m``: (1) optional white balance; (2) ``W = min_c I``;
    (3) ``A = median_sv(W)``, ``B = A - median_sv(|W - A|)``, veil ``V = p * max(min(W, B), 0)``;
    (4) ``R = (I - V) / (1 - V)``; (5) adapted median smoothing when ``smax != 1``; (6) gamma
    ``U = R**g * exp(mean(lo) - g mean(lr))`` with ``g = gfactor * std(lo)/std(lr)`` fitted on
    reference rows; (7) tone mapping ``U / (1 + (1 - 1/max U) U)``. Every median mirrors borders.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) float ndarray
        Values in [0, 1] (gray, or RGB). float64 stays float64; other floats compute in float32.
    sv : int, optional
        Odd median window, the largest size of an object assumed white (or, on thermal frames, the
        smallest structure treated as veil: pick it above the plume width). Default: the authors'
        demo rule, :func:`default_sv` (51 for a 640×512 gray frame, 25 for a 640-wide colour one).
    p : float
        Restoration strength in (0, 1); default 0.95.
    balance : float
        Colour only: < 0 no white balance (default), 0 global, > 0 local with this exponent
        (0.5 a good start, 0.1 strong, 1.0 removes most colour). Ignored for gray images.
    smax : int
        Largest adapted-smoothing window; 1 (default) turns the smoothing off.
    gfactor : float
        Extra factor on the fitted gamma (authors' default 1.3; their gray demo uses 1.0).
    gamma_rows : {'bottom_third', 'all'} or slice
        Rows the gamma is fitted on. ``bottom_third`` (default) is the authors' road-scene choice
        and reproduces their outputs; for thermal gas frames, where the bottom of the image has no
        special meaning, ``all`` anchors the brightness on the whole frame (the ``gasdb enhance``
        stage uses ``all``).
    median : {'auto', 'uint8', 'hist12', 'exact'}
        Median back end (:func:`median_filter`). ``auto`` is exact on 8-bit (and finer integer)
        grids and 12-bit accurate on other floats.
    return_veil : bool
        Also return the veil ``V``.

    Returns
    -------
    out : ndarray, same shape as ``image``, values in [0, 1]
    veil : (H, W) ndarray
        Only with ``return_veil=True``.

    Raises
    ------
    TypeError
        ``image`` is not a float array (convert 8-bit images with ``/ 255``), or ``sv`` is not an int.
    ValueError
        Empty image, NaN/inf or values outside [0, 1], wrong shape, ``sv`` even or larger than the
        image, ``p`` outside (0, 1), ``smax < 1``, ``gfactor <= 0``, unknown ``gamma_rows``/``median``.

    Notes
    -----
    The authors' code and paper differ in the veil: the paper's ``max(min(p B, W), 0)`` sets
    ``V = W`` (black output) wherever ``p B > W``, 12.9 % of a DJI thermal frame against 0.01 %
    for the code's ``p max(min(W, B), 0)`` used here. For ``H = 512`` the bottom-third rows start
    at the fractional row 341.33, which Octave truncates (see :func:`reference_rows`). The authors'
    local white balance divides 0 by 0 where all three local medians are 0 (black borders: an all-NaN
    output); here those pixels get a neutral white, and medians of 0 in one channel are floored at
    0.5/255. Agreement with the authors' outputs run under Octave: >= 60 dB PSNR (see the tests).

    References
    ----------
    .. [1] J.-P. Tarel, N. Hautière, "Fast visibility restoration from a single color or gray level
       image", ICCV 2009. :doi:`10.1109/ICCV.2009.5459251`

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> foggy = 0.5 + 0.3 * rng.random((64, 80))
    >>> out = tarel_hautiere(foggy, sv=21, gfactor=1.0)
    >>> out.shape, bool(0 <= out.min() and out.max() <= 1), float(out.std()) > float(foggy.std())
    ((64, 80), True, True)
    """
    keep_axis = getattr(image, "ndim", 0) == 3 and image.shape[2] == 1
    x, sv, method = _check_args(image, sv, p, smax, balance, median)
    quantised = None
    if x.ndim == 2 and smax == 1 and method != "exact":
        quantised = _quantise(x, method)
        q, _, decode = quantised
        if decode.exact and q.dtype == np.uint8 and decode.base == 0:
            out, c = _tarel_codes(q, decode.n, np.empty(x.shape, x.dtype), sv=sv, p=p, gfactor=gfactor,
                                  gamma_rows=gamma_rows)
            veil = _VeilCodes(q, c, 0, decode.n).veil(p, x.dtype) if return_veil else None
            out = out[:, :, None] if keep_axis else out
            return (out, veil) if return_veil else out
    rest = _restore(x, sv, p, balance, smax, method, quantised=quantised)
    fit = fit_gamma(rest.original_mean, rest.restored_mean, gfactor=gfactor, rows=gamma_rows)
    out = tone_map(apply_gamma(rest.restored, fit))
    if keep_axis:
        out = out[:, :, None]
    return (out, rest.veil) if return_veil else out


def _tarel_codes(q: np.ndarray, n: int, out: np.ndarray, *, sv: int, p: float, gfactor: float, gamma_rows):
    """All seven steps for a gray image with 8-bit codes ``q`` (``I = q / n``) into ``out``; ``(out, c)``.

    ``I = q / n`` and ``V = p c / n`` (:func:`_veil_codes_u8`), so ``R``, the gamma fit (each pair
    weighted by its count in the reference rows), ``U`` and the tone-mapped output are functions
    of the pair ``(q, c)``: evaluated once per pair present, with the same functions
    (:func:`_koschmieder`, :func:`apply_gamma`, :func:`tone_map`) and in the same precision as
    :func:`restore_visibility` and :func:`fit_gamma` pixel by pixel, then looked up. The pairs are
    counted in the second median's threads, and the look-up runs in bands too.
    """
    _check_gfactor(gfactor)
    h, w = q.shape
    dtype = out.dtype
    rows = reference_rows(h, gamma_rows)
    ranges = [0, 256, 0, 256]

    ref_rows = range(h)[rows]

    def count_pairs(y0, y1, c_band):  # returns new arrays: one thread may run several bands
        qb = q[y0:y1]
        if ref_rows.step == 1:  # the band's reference rows, and the others: one pass over the band
            lo = min(max(ref_rows.start, y0), y1) - y0
            hi = max(min(ref_rows.stop, y1) - y0, lo)
            refs, elsewhere = [slice(lo, hi)], [slice(0, lo), slice(hi, y1 - y0)]
        else:  # any other slice of rows: pairs are present if in the band at all
            refs, elsewhere = [np.array([k - y0 for k in ref_rows if y0 <= k < y1], np.intp)], [slice(0, y1 - y0)]
        ref = np.zeros((256, 256), np.float32)
        other = _scratch("th.pairs", (256, 256), np.float32)  # only used inside this band
        other.fill(0)
        for hist, parts in ((ref, refs), (other, elsewhere)):
            for part in parts:
                block = qb[part]
                if len(block):
                    cv2.calcHist([block, c_band[part]], [0, 1], None, [256, 256], ranges, hist=hist, accumulate=True)
        # counts >= 0, so a count is 0 iff all its bits are
        return ref, cv2.compare(cv2.bitwise_or(ref.view(np.int32), other.view(np.int32)), 0, cv2.CMP_NE)

    c, counts = _veil_codes_u8(q, sv, count_pairs, c=_scratch("th.c", q.shape, np.uint8))
    present = functools.reduce(cv2.bitwise_or, [band for _, band in counts])
    points = cv2.findNonZero(present).reshape(-1, 2)  # (c, q), row by row
    pairs = (points[:, 1].astype(np.int64) << 8) | points[:, 0]  # 256 q + c, increasing
    refs = functools.reduce(cv2.add, [ref for ref, _ in counts])  # counts in the reference rows (exact in float32)
    weights = refs.ravel()[pairs].astype(np.float64)
    levels = np.arange(256) / n  # I and V take at most 256 values each: computed once per value
    i = levels.astype(dtype)[pairs >> 8]
    v = (p * levels).astype(dtype)[pairs & 255]
    r, _ = _koschmieder(i, v)
    lo = np.log(levels.astype(dtype).astype(np.float64) + 0.5 / 255)[pairs >> 8]
    lr = np.log(r.astype(np.float64) + 0.5 / 255)
    fit = _gamma_from_logs(lo, lr, gfactor, weights)
    table = _scratch("th.table", (65536,), dtype)  # only the pairs present are ever looked up
    table[pairs] = tone_map(apply_gamma(r, fit))

    def look_up(y0, y1):  # bands of rows: each writes a contiguous part of ``out`` in place
        index = _pair_index(q[y0:y1], c[y0:y1], _scratch("th.index", (y1 - y0, w, 2), np.uint8))
        np.take(table, index, out=out[y0:y1], mode="wrap")  # indices < 65536: "wrap" skips the clipping

    _banded(h, w, look_up)
    return out, c


def _pair_index(q: np.ndarray, c: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``256 q + c`` as uint16 (one interleaving pass into ``pairs``, (H, W, 2) uint8, on little-endian
    machines)."""
    if sys.byteorder == "little":
        return cv2.merge([c, q], dst=pairs).view(np.uint16).reshape(q.shape)
    return (q.astype(np.uint16) << 8) | c
