"""Blind contrast-enhancement assessment: Hautière's e, r̄ and σ (visible edges at 5 %).

Given an image before (``original``) and after (``restored``) a contrast restoration, the
descriptors of Hautière et al. [1]_ are

* ``e = (n_r - n_o) / n_o``: the rate of new visible edges (``n_o``, ``n_r`` = visible-edge pixels
  of the original and restored images);
* ``r̄ = exp(sum over the restored image's visible edges of log(|∇R| / |∇I|) / n_r)``: the geometric
  mean ratio of Sobel gradient norms (non-finite logs are dropped, the divisor stays ``n_r``);
* ``σ``: the fraction of saturated pixels.

Good restorations have ``e > 0``, ``r̄ > 1`` and ``σ`` near 0. ``e`` explodes on frames with few
edges (thermal), so ``n_o`` and ``n_r`` are always reported with it.

Visible edges follow Köhler's segmentation as in the IFSTTAR MATLAB code (2011): 7×7 windows at a
step of 4 over the symmetrically padded image; in each window, for every integer threshold ``s``
between the window's rounded min and max (clamped to 1..256), every 4-connected pair ``(x, y)``
separated by ``s`` has the Weber-like contrast ``min(|s - I_x| / max(s, I_x), |s - I_y| / max(s, I_y))``;
``s0`` maximises the mean contrast ``C(s)``; if ``2 C(s0) > 5 %`` the pairs ``s0`` separates are
visible edges.

Two modes:

``compat`` (default, for comparison with published figures) reproduces the original code,
including its bugs: (1) its separation test reads the morphological min/max arrays one row and
one column away from the pair whose contrast it computes (and the max of a different neighbour,
as Octave's ``imdilate`` reflects the structuring element); (2) its σ counts pixels equal to 0 or
256, i.e. only black ones in an 8-bit image, including pixels already black in the original.

``fixed`` tests the pair it measures and counts pixels newly black *or* white (0 or 255 in the
restored image but not in the original).

Everything is vectorised numpy; the thresholds of each window are evaluated together and the
contrast sums are accumulated pair by pair in the original's order, so ``compat`` matches the
MATLAB code run under GNU Octave exactly (see the tests).

References
----------
.. [1] N. Hautière, J.-P. Tarel, D. Aubert, É. Dumont, "Blind contrast enhancement assessment by
   gradient ratioing at visible edges", Image Analysis & Stereology 27(2):87-95, 2008.
   :doi:`10.5566/ias.v27.p87-95`
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

__all__ = ["MODES", "VisibilityScores", "to_gray255", "visible_edges", "visibility_metrics"]

#: ``compat`` reproduces the IFSTTAR code with its bugs; ``fixed`` is the intended method.
MODES = ("compat", "fixed")

_S = 7  # window size
_STEP = 4  # round(S / 2)
_THRESHOLD = 2.5 / 100  # C(s0) must exceed percentage/2 = 2.5 % (i.e. 2 C > 5 %)
_CHUNK = 2048  # windows per vectorised chunk
_NS = 257  # thresholds 0..256

# the 36 horizontal ("g") and 36 vertical ("h") pairs of a window, in the original's loop order
_A, _B = np.meshgrid(np.arange(1, _S), np.arange(1, _S), indexing="ij")
_A, _B = _A.ravel(), _B.ravel()
_PIX = _A * _S + _B
_PIX_G = _PIX - 1  # left neighbour
_PIX_H = _PIX - _S  # upper neighbour


@dataclass(frozen=True)
class VisibilityScores:
    """Hautière's descriptors for one (original, restored) pair.

    Attributes
    ----------
    e : float
        Rate of new visible edges ``(n_r - n_o) / n_o`` (NaN when ``n_o == 0``).
    r : float
        Geometric mean ratio of gradient norms at the restored image's visible edges (NaN when ``n_r == 0``).
    sigma : float
        Saturated fraction as the mode defines it (``compat``: pixels equal to 0 in the restored
        image; ``fixed``: same as ``sigma_new``).
    sigma_new : float
        Fraction of pixels that are 0 or 255 in the restored image but not in the original.
    n_o, n_r : int
        Visible-edge pixel counts of the original and restored images.
    mode : str
        ``compat`` or ``fixed``.
    """

    e: float
    r: float
    sigma: float
    sigma_new: float
    n_o: int
    n_r: int
    mode: str

    def to_dict(self) -> dict:
        """JSON-ready dict (non-finite numbers become ``None``)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def to_gray255(image, *, name: str = "image") -> np.ndarray:
    """An image as a float64 gray array on the 0-255 scale, the way the original code reads it.

    uint8 is taken as is; uint16 is scaled by 255/65535 and rounded; floats are taken as [0, 1]
    and rounded to 8 bits. Colour (H, W, 3) is converted with MATLAB's ``rgb2gray`` weights on the
    8-bit values and rounded.
    """
    a = np.asarray(image)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or a.dtype in (np.uint8, np.uint16)):
        raise TypeError(f"{name} must be uint8, uint16 or float in [0, 1], got dtype {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"{name} must be gray (H, W) or RGB (H, W, 3), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"float {name} must lie in [0, 1], got [{a.min():.4g}, {a.max():.4g}]; "
                             "pass uint8 or divide by 255")
        a = np.rint(a.astype(np.float64) * 255)
    elif a.dtype == np.uint16:
        a = np.rint(a.astype(np.float64) * (255 / 65535))
    else:
        a = a.astype(np.float64)
    if a.ndim == 3:
        w = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
        a = np.rint(a @ w)
    if min(a.shape) < 2:
        raise ValueError(f"{name} must be at least 2×2 pixels, got shape {a.shape}")
    return a


def _pair_bounds(img: np.ndarray, mode: str):
    """Per pixel: (gmin, gmax, hmin, hmax), the values the separation test compares with ``s``.

    ``fixed``: min/max of the pixel and its left (g) or upper (h) neighbour. ``compat``: the
    original's ``imerode``/``imdilate(..., 'full')`` cropped one row and column off, i.e. at
    pixel ``(i, j)``: min of ``(i-1, j-1), (i-1, j-2)``, max of ``(i-1, j-1), (i-1, j)`` (g) and
    min of ``(i-1, j-1), (i-2, j-1)``, max of ``(i-1, j-1), (i, j-1)`` (h), symmetric borders.
    Both are returned symmetric-padded by the window size, like the original.
    """
    nl, nc = img.shape
    if mode == "fixed":
        e = np.pad(img, 1, mode="symmetric")
        c, left, up = e[1:-1, 1:-1], e[1:-1, :-2], e[:-2, 1:-1]
        gmin, gmax = np.minimum(c, left), np.maximum(c, left)
        hmin, hmax = np.minimum(c, up), np.maximum(c, up)
    else:
        e = np.pad(img, 3, mode="symmetric")

        def at(dy, dx):  # img(i + dy, j + dx), symmetric beyond the border
            return e[3 + dy:3 + dy + nl, 3 + dx:3 + dx + nc]

        gmin = np.minimum(at(-1, -1), at(-1, -2))
        gmax = np.maximum(at(-1, -1), at(-1, 0))
        hmin = np.minimum(at(-1, -1), at(-2, -1))
        hmax = np.maximum(at(-1, -1), at(0, -1))
    return tuple(np.pad(a, _S, mode="symmetric") for a in (gmin, gmax, hmin, hmax))


def _windows(padded: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(padded, (_S, _S))
    return view[(_S + ys)[:, None], (_S + xs)[None, :]].reshape(-1, _S * _S)


def visible_edges(image, *, mode: str = "compat") -> np.ndarray:
    """Visible edges at 5 % contrast (Köhler's segmentation as in Hautière's code).

    Parameters
    ----------
    image : (H, W) or (H, W, 3) ndarray
        uint8, uint16 or float in [0, 1] (see :func:`to_gray255`).
    mode : {'compat', 'fixed'}
        See the module docstring.

    Returns
    -------
    (H, W) bool ndarray
        True at visible-edge pixels.

    Examples
    --------
    >>> img = np.zeros((16, 16), np.uint8); img[:, 8:] = 200
    >>> edges = visible_edges(img, mode="fixed")
    >>> sorted(set(np.nonzero(edges)[1].tolist()))
    [7, 8]
    """
    return _visible_edges(to_gray255(image), _check_mode(mode))


def _visible_edges(img: np.ndarray, mode: str) -> np.ndarray:
    nl, nc = img.shape
    pad = np.pad(img, _S, mode="symmetric")
    bounds = _pair_bounds(img, mode)
    ys, xs = np.arange(0, nl, _STEP), np.arange(0, nc, _STEP)
    win = _windows(pad, ys, xs)  # (n, 49)
    gmin, gmax, hmin, hmax = (_windows(b, ys, xs) for b in bounds)
    # per pair: the two values and the separation bounds, in loop order
    va, vg, vh = win[:, _PIX], win[:, _PIX_G], win[:, _PIX_H]
    lo_g, hi_g, lo_h, hi_h = gmin[:, _PIX], gmax[:, _PIX], hmin[:, _PIX], hmax[:, _PIX]
    smin = np.clip(np.floor(win.min(axis=1) + 0.5), 1, 256).astype(np.int64)  # MATLAB round, values >= 0
    smax = np.clip(np.floor(win.max(axis=1) + 0.5), 1, 256).astype(np.int64)
    s0 = np.zeros(win.shape[0], np.int64)
    passed = np.zeros(win.shape[0], bool)
    for c0 in range(0, win.shape[0], _CHUNK):
        sl = slice(c0, c0 + _CHUNK)
        sums_g, count_g = _contrast_sums(smin[sl], smax[sl], va[sl], vg[sl], lo_g[sl], hi_g[sl])
        sums_h, count_h = _contrast_sums(smin[sl], smax[sl], va[sl], vh[sl], lo_h[sl], hi_h[sl])
        count = count_g + count_h
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(count > 0, (1.0 / count) * (sums_g + sums_h), 0.0)  # the original's arithmetic
        arg = np.argmax(c, axis=1)  # first maximum, like MATLAB's max
        s0[sl] = arg
        passed[sl] = c[np.arange(c.shape[0]), arg] > _THRESHOLD
    # pixels of the pairs separated at s0, for the windows that pass
    p = np.flatnonzero(passed)
    t = s0[p, None].astype(np.float64)
    sep_g = (lo_g[p] <= t) & (hi_g[p] > t)
    sep_h = (lo_h[p] <= t) & (hi_h[p] > t)
    marks = np.zeros((p.size, _S * _S), bool)
    for k in range(_PIX.size):
        marks[:, _PIX[k]] |= sep_g[:, k] | sep_h[:, k]
        marks[:, _PIX_G[k]] |= sep_g[:, k]
        marks[:, _PIX_H[k]] |= sep_h[:, k]
    mask = np.zeros((nl + 2 * _S, nc + 2 * _S), bool)
    wy, wx = np.divmod(p, xs.size)
    marks = marks.reshape(-1, _S, _S)
    off = np.arange(_S)
    for py in (0, 1):  # windows two steps apart (8 px) do not overlap: OR them in four batches
        for px in (0, 1):
            sel = (wy % 2 == py) & (wx % 2 == px)
            rows = (_S + ys[wy[sel]])[:, None, None] + off[None, :, None]
            cols = (_S + xs[wx[sel]])[:, None, None] + off[None, None, :]
            mask[rows, cols] |= marks[sel]
    return mask[_S:_S + nl, _S:_S + nc]


def _weber_table() -> np.ndarray:
    """``T[v, s] = |s - v| / max(s, v)`` for integer v, s in 0..256 (the original's arithmetic)."""
    v = np.arange(_NS, dtype=np.float64)[:, None]
    t = np.arange(_NS, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.abs(t - v) / np.maximum(t, v)).ravel()


_WEBER = _weber_table()


def _contrast_sums(smin, smax, va, vb, lo, hi):
    """Per window and threshold ``s`` (0..256): the sum of pair contrasts and the pair count.

    Each pair is separated by the integer thresholds ``lo <= s < hi`` inside the window's range
    ``[smin, smax]``; only those (window, pair, s) cells are generated (a ragged expansion), and
    ``np.bincount`` adds them per (window, s) in pair order, the order of the original's loop.
    """
    n = va.shape[0]
    start = np.maximum(smin[:, None], np.ceil(lo).astype(np.int64))
    stop = np.minimum(smax[:, None], np.ceil(hi).astype(np.int64) - 1)
    length = np.maximum(stop - start + 1, 0)
    # pair-major order: for one (window, s) cell the contributions arrive in pair order
    length, start = length.T.ravel(), start.T.ravel()
    run = np.flatnonzero(length)
    length, start = length[run], start[run]
    a = (va.T.ravel()[run] * _NS).astype(np.int64)
    b = (vb.T.ravel()[run] * _NS).astype(np.int64)
    window = run % n
    ends = np.cumsum(length)
    rep = np.repeat(np.arange(run.size), length)
    s = np.arange(ends[-1] if ends.size else 0, dtype=np.int64)
    s += np.repeat(start - (ends - length), length)
    contrast = np.minimum(_WEBER[a[rep] + s], _WEBER[b[rep] + s])
    cells = np.repeat(window * _NS, length) + s
    sums = np.bincount(cells, weights=contrast, minlength=n * _NS).reshape(n, _NS)
    count = np.bincount(cells, minlength=n * _NS).reshape(n, _NS)
    return sums, count


def _sobel_norm(img: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(gx * gx + gy * gy)


def visibility_metrics(original, restored, *, mode: str = "compat") -> VisibilityScores:
    """Hautière's e, r̄ and σ of a restoration (see the module docstring).

    Parameters
    ----------
    original, restored : (H, W) or (H, W, 3) ndarray
        Before and after, same size; uint8, uint16 or float in [0, 1] (compared on the 0-255 scale).
    mode : {'compat', 'fixed'}
        ``compat`` (default) reproduces the IFSTTAR MATLAB code and its bugs, for comparison with
        the literature; ``fixed`` uses the intended pairs and counts newly saturated pixels.

    Returns
    -------
    VisibilityScores

    Examples
    --------
    Four blocks: a strong and a weak edge; fog (``0.2 I + 180``) hides the weak one.

    >>> scene = np.full((32, 32), 100.0); scene[:, 16:] = 110; scene[:16, :16] = 50; scene[:16, 16:] = 200
    >>> foggy = (0.2 * scene + 180).astype(np.uint8)
    >>> s = visibility_metrics(foggy, scene.astype(np.uint8), mode="fixed")
    >>> s.n_o, s.n_r, round(s.e, 3), round(s.r, 3)
    (61, 119, 0.951, 5.0)
    """
    mode = _check_mode(mode)
    img_o = to_gray255(original, name="original")
    img_r = to_gray255(restored, name="restored")
    if img_o.shape != img_r.shape:
        raise ValueError(f"original and restored must have the same size, got {img_o.shape} and {img_r.shape}")
    edges_o = _visible_edges(img_o, mode)
    edges_r = _visible_edges(img_r, mode)
    n_o, n_r = int(edges_o.sum()), int(edges_r.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = _sobel_norm(img_r)[edges_r] / _sobel_norm(img_o)[edges_r]
        logs = np.log(ratio)
    logs = logs[np.isfinite(logs)]
    r = math.exp(float(logs.sum()) / n_r) if n_r else math.nan
    e = (n_r - n_o) / n_o if n_o else math.nan
    sat_o = (img_o == 0) | (img_o == 255)
    sat_r = (img_r == 0) | (img_r == 255)
    sigma_new = float(np.count_nonzero(sat_r & ~sat_o)) / img_r.size
    sigma = float(np.count_nonzero((img_r == 256) | (img_r == 0))) / img_r.size if mode == "compat" else sigma_new
    return VisibilityScores(e=float(e), r=float(r), sigma=sigma, sigma_new=sigma_new, n_o=n_o, n_r=n_r, mode=mode)
