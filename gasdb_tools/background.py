"""Background subtraction for gas plumes in thermal video (the engine of ``gasdb preannotate``).

A gas plume in a thermal (LWIR/MWIR) frame is a faint, semi-transparent, drifting region a few grey
levels brighter (emitting: the gas is warmer than the scene behind it) or darker (absorbing: colder)
than the background. Generic background subtractors miss it: their thresholds sit above the plume's
contrast, and their adaptive models absorb a steady plume within seconds (``docs/methods.md`` §C.1).

:func:`gas_masks` runs the gas pipeline (``docs/methods.md`` §C.2) over the frames of one recording
and yields one boolean mask per frame::

    f   = GaussianBlur(frame) as float32
    bg  = median of a gas-free lead-in               (else: the first frame)
    d   = f - bg;  d -= median(d)                    # drift and NUC/FFC offsets
    ds  = (1 - a) * ds + a * d                       # temporal EMA of the signed difference
    s   = 1.4826 * median(|ds|)                      # robust (MAD) noise sigma
    t   = k * s + jitter * |grad bg0|                # k-sigma, raised on the scene's strong edges
    m   = ds > t (emitting) | ds < -t (absorbing) | |ds| > t (both)
    bg  = selective running average: rate r outside any change, r_fg (<< r) inside it
    m   = close(open(m)); drop blobs below a fraction of the frame

The medians and the MAD leave out the previous frame's changed pixels, and the pixels that never
changed during the lead-in (a clipped sky, burned-in text), so they stay right when a plume fills
most of the frame or a third of it is saturated.

Three optional stages, off by default and switched on together by the ``extent`` preset
(:data:`PRESETS`), draw the region a faint real plume occupies rather than what one frame shows::

    m   = components of |ds| > k_low * s that touch m       # hysteresis: the plume's faint edges
    A   = (1 - r_a) * A + r_a * |f - f_prev|                 # activity: turbulent gas flickers
    m   = blobs of m at least 20 % inside open(A > c * median(A))   # not shadows, not edge shimmer
    out = m_t | m_(t-1) | ... | m_(t-hold+1)                # the plume's recent extent

Each step is a small public function or class (:func:`blur`, :func:`lead_in_background`,
:func:`static_pixels`, :class:`SelectiveRunningAverage`, :func:`signed_difference`,
:class:`TemporalEMA`, :func:`mad_sigma`, :func:`edge_threshold`, :func:`threshold`,
:func:`clean_mask`, :func:`remove_small_blobs`, :func:`hysteresis`, :class:`ActivityMap`,
:func:`active_regions`, :func:`keep_blobs_in`, :class:`TemporalHold`), composed by
:class:`GasSubtractor`. OpenCV's MOG2 and KNN stay available (``method="mog2"|"knn"``) for
ordinary moving objects.

References
----------
.. [1] Z. Zivkovic, "Improved adaptive Gaussian mixture model for background subtraction",
   ICPR 2004, doi:10.1109/ICPR.2004.1333992 (MOG2).
.. [2] Z. Zivkovic and F. van der Heijden, "Efficient adaptive density estimation per image pixel
   for the task of background subtraction", Pattern Recognit. Lett. 27(7), 2006,
   doi:10.1016/j.patrec.2005.11.005 (KNN).
.. [3] P. L. Rosin, "Thresholding for change detection", ICCV 1998, doi:10.1109/ICCV.1998.710786
   (robust noise estimates for change masks).
.. [4] ViBe-Gases, J. Infrared Millim. Waves 43, 2024 (delaying background updates inside the gas
   region so that a steady plume is not absorbed).
.. [5] W. Guo, Y. Du, S. Du, "LangGas: Introducing Language in Selective Zero-Shot Background
   Subtraction for Semi-Transparent Gas Leak Detection", arXiv:2503.02910 (SimGas; per-video IoU).
.. [6] J. Canny, "A Computational Approach to Edge Detection", IEEE TPAMI 8(6), 1986,
   doi:10.1109/TPAMI.1986.4767851 (hysteresis thresholding).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, fields
from typing import Iterable, Iterator, Mapping

import cv2
import numpy as np

__all__ = [
    "METHODS",
    "POLARITIES",
    "DEFAULTS",
    "PRESETS",
    "GasParams",
    "DEFAULT_LEAD_IN",
    "preset",
    "method_params",
    "OPENCV_DEFAULTS",
    "preset_params",
    "blur",
    "lead_in_background",
    "static_pixels",
    "SelectiveRunningAverage",
    "robust_median",
    "signed_difference",
    "TemporalEMA",
    "mad_sigma",
    "edge_threshold",
    "threshold",
    "remove_small_blobs",
    "clean_mask",
    "hysteresis",
    "ActivityMap",
    "active_regions",
    "keep_blobs_in",
    "TemporalHold",
    "GasSubtractor",
    "OpenCVSubtractor",
    "gas_masks",
]

#: Background subtraction methods known to :func:`gas_masks`.
METHODS = ("gas", "mog2", "knn")

#: Plume polarities: ``emitting`` = brighter than the background, ``absorbing`` = darker.
POLARITIES = ("emitting", "absorbing", "both")

#: Default parameters of ``method="mog2"`` / ``"knn"`` (:class:`OpenCVSubtractor`).
OPENCV_DEFAULTS = {
    "history": 500,
    "var_threshold": None,
    "blur_ksize": 5,
    "open_size": 3,
    "close_size": 7,
    "min_area_frac": 0.0005,
}


# -- argument checks ---------------------------------------------------------------------------------
def _check_frame(frame, *, name: str = "frame") -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"{name} must be a 2-D thermal frame (H x W), got shape {frame.shape}; "
                         "convert colour frames with gasdb_tools.imaging.to_gray first")
    if frame.dtype == bool or not (np.issubdtype(frame.dtype, np.integer) or np.issubdtype(frame.dtype, np.floating)):
        raise TypeError(f"{name} must hold uint8, uint16 or float pixels, got {frame.dtype}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError(f"{name} is too small ({frame.shape}); need at least 2 x 2 pixels")
    return frame


def _check_odd(value, *, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an odd integer >= 1, got {value!r}")
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd (a kernel has a centre pixel), got {value}; use {value + 1}")
    return int(value)


def _check_range(value, *, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (lo < v if lo_open else lo <= v) or not v <= hi or np.isnan(v):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
    return v


def _check_step(step) -> int:
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    return int(step)


def _as_u8(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask.view(np.uint8) if mask.dtype == bool else (mask != 0).astype(np.uint8)


# -- parameter sets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GasParams:
    """One parameter set of the gas pipeline (:class:`GasSubtractor`), checked when it is made.

    Every knob of the pipeline is a field; :data:`PRESETS` holds the named sets as instances, and
    ``gasdb preannotate --refine`` fits one per recording (:mod:`gasdb_tools.refine`). Instances are
    immutable: :meth:`replace` makes a changed copy (checked again), :meth:`to_dict` /
    :meth:`from_dict` give the JSON form recorded in a draft's provenance.

    Attributes
    ----------
    blur_ksize : int
        Gaussian blur kernel (odd; 1 = none).
    learning_rate : float
        Per-frame rate of the selective running average where nothing changed (0 = fixed background).
    foreground_rate : float
        Per-frame rate under changed pixels (small, so a steady plume is not absorbed but a slow
        change of the scene is learned within ``1 / foreground_rate`` frames).
    ema_alpha : float
        Temporal smoothing weight of the newest difference, in (0, 1] (1 = none).
    k : float
        Threshold in robust noise sigmas (> 0).
    min_sigma : float
        Floor of the noise sigma, in grey levels.
    edge_guard : float
        Assumed jitter in pixels: the threshold is raised by ``edge_guard * |grad bg|`` (0 = off).
    polarity : {'emitting', 'absorbing', 'both'}
        Which sign of difference counts as gas.
    open_size, close_size : int
        Morphology kernel sizes (odd; 1 = skip).
    min_area_frac : float
        Smallest blob kept, as a fraction of the frame.
    stats_step : int
        Subsampling step of the medians (1 = exact).
    ignore_static : bool
        Leave pixels constant over the lead-in out of the statistics.
    k_low : float or None
        Hysteresis: grow detections through pixels above ``k_low`` sigmas (at most ``k``; None = off).
    activity_ratio : float or None
        Keep only blobs in broad flickering areas (None = off).
    activity_rate, activity_open, activity_min_area_frac, activity_overlap
        The activity map's per-frame rate, the opening size and smallest area of its regions, and
        the share of a blob that must lie in one.
    hold : int
        Union of the last ``hold`` masks, in frames of the stream the subtractor is fed (1 = off).
        ``gasdb preannotate`` feeds every frame of the thermal video, so ``hold=25`` is one second
        at 25 frames/s whatever the pairs' spacing.

    Examples
    --------
    >>> GasParams().k, PRESETS["extent"].hold, GasParams().replace(k=5).k
    (4.0, 25, 5.0)
    >>> GasParams(k=0)
    Traceback (most recent call last):
    ...
    ValueError: k must be in (0.0, inf], got 0
    """

    blur_ksize: int = 5
    learning_rate: float = 0.02
    foreground_rate: float = 0.002
    ema_alpha: float = 0.3
    k: float = 4.0
    min_sigma: float = 0.5
    edge_guard: float = 0.3
    polarity: str = "both"
    open_size: int = 3
    close_size: int = 7
    min_area_frac: float = 0.0005
    stats_step: int = 4
    ignore_static: bool = True
    k_low: float | None = None
    activity_ratio: float | None = None
    activity_rate: float = 0.1
    activity_open: int = 7
    activity_min_area_frac: float = 0.01
    activity_overlap: float = 0.2
    hold: int = 1

    def __post_init__(self):
        put = object.__setattr__
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, got {self.polarity!r}")
        for name in ("blur_ksize", "open_size", "close_size", "activity_open"):
            put(self, name, _check_odd(getattr(self, name), name=name))
        for name, lo, hi, lo_open in (("learning_rate", 0.0, 1.0, False), ("foreground_rate", 0.0, 1.0, False),
                                      ("ema_alpha", 0.0, 1.0, True), ("k", 0.0, np.inf, True),
                                      ("min_sigma", 0.0, np.inf, False), ("edge_guard", 0.0, np.inf, False),
                                      ("min_area_frac", 0.0, 1.0, False), ("activity_rate", 0.0, 1.0, True),
                                      ("activity_min_area_frac", 0.0, 1.0, False),
                                      ("activity_overlap", 0.0, 1.0, False)):
            put(self, name, _check_range(getattr(self, name), name=name, lo=lo, hi=hi, lo_open=lo_open))
        put(self, "stats_step", _check_step(self.stats_step))
        if not isinstance(self.ignore_static, (bool, np.bool_)):
            raise ValueError(f"ignore_static must be true or false, got {self.ignore_static!r}")
        put(self, "ignore_static", bool(self.ignore_static))
        if self.k_low is not None:
            k_low = _check_range(self.k_low, name="k_low", lo=0.0, hi=np.inf, lo_open=True)
            if k_low > self.k:
                raise ValueError(f"k_low must be at most k ({self.k:g}): it is the lower hysteresis threshold, "
                                 f"got {self.k_low!r}")
            put(self, "k_low", k_low)
        if self.activity_ratio is not None:
            put(self, "activity_ratio", _check_range(self.activity_ratio, name="activity_ratio", lo=0.0, hi=np.inf,
                                                     lo_open=True))
        if not isinstance(self.hold, (int, np.integer)) or isinstance(self.hold, bool) or self.hold < 1:
            raise ValueError(f"hold must be an integer number of frames >= 1, got {self.hold!r}")
        put(self, "hold", int(self.hold))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The knobs, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes) -> "GasParams":
        """A copy with ``changes`` (checked); an unknown knob raises TypeError naming the known ones."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"unknown parameter(s) {unknown} of the gas pipeline; known: {sorted(self.names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The knobs as a JSON-ready dict."""
        return {name: getattr(self, name) for name in self.names()}

    @classmethod
    def from_dict(cls, data) -> "GasParams":
        """The inverse of :meth:`to_dict` (missing knobs take their defaults; unknown ones raise TypeError)."""
        return cls().replace(**dict(data))

    def changes(self, base: "GasParams | None" = None) -> dict:
        """The knobs whose value differs from ``base`` (default: the defaults).

        >>> PRESETS["extent"].changes()["k_low"]
        2.5
        """
        base = base or GasParams()
        return {k: v for k, v in self.to_dict().items() if getattr(base, k) != v}


#: Named parameter sets of the gas pipeline (``gas_masks(..., preset=...)``, ``gasdb preannotate
#: --preset``), as :class:`GasParams` instances. ``mask`` (the defaults): the plume as it shows in
#: each frame, for pixel masks such as Gas-DB's (SimGas mean IoU 0.78). ``extent``: the region the
#: plume has filled over the last ``hold`` frames, grown to its faint edges (``k_low``) and kept only
#: where the scene flickers the way turbulent gas does (``activity_ratio``), for box annotations and
#: faint real plumes in cluttered scenes (IOD-Video box overlap 94 %; it drops a plume that stands
#: still). Measured in ``benchmarks/bench_background.py``.
PRESETS = {
    "mask": GasParams(),
    "extent": GasParams(k_low=2.5, activity_ratio=2.5, activity_open=7, activity_min_area_frac=0.01,
                        activity_overlap=0.2, hold=25),
}

#: Default frames of the gas-free lead-in of :func:`gas_masks` (``lead_in``).
DEFAULT_LEAD_IN = 30

#: Default parameters of the gas pipeline as a plain dict: :class:`GasParams`'s defaults plus
#: :func:`gas_masks`'s ``lead_in``. Measured in ``benchmarks/bench_background.py``.
DEFAULTS = {"lead_in": DEFAULT_LEAD_IN, **GasParams().to_dict()}


# -- building blocks ---------------------------------------------------------------------------------
def blur(frame: np.ndarray, *, ksize: int = 5) -> np.ndarray:
    """Gaussian blur of a thermal frame, returned as float32 in the frame's own grey levels.

    Parameters
    ----------
    frame : (H, W) ndarray of uint8, uint16 or float
        One thermal frame (raw counts or 8-bit video grey levels; the scale is kept).
    ksize : int
        Odd kernel size (``1`` = no blur). 5 lowers per-pixel sensor noise about 3x.

    Returns
    -------
    (H, W) ndarray of float32
        A new array (never a view of ``frame``).

    Examples
    --------
    >>> blur(np.full((4, 5), 7, np.uint16)).dtype.name, float(blur(np.full((4, 5), 7, np.uint16))[2, 2])
    ('float32', 7.0)
    """
    frame = _check_frame(frame)
    ksize = _check_odd(ksize, name="ksize")
    f = frame.astype(np.float32)  # always a copy
    if ksize == 1:
        return f
    return cv2.GaussianBlur(f, (ksize, ksize), 0, borderType=cv2.BORDER_REPLICATE)


def lead_in_background(frames) -> np.ndarray:
    """Per-pixel median of a gas-free lead-in: the background of a static camera.

    Parameters
    ----------
    frames : sequence of (H, W) ndarray, or (N, H, W) ndarray
        (Blurred) frames recorded before the leak starts.

    Returns
    -------
    (H, W) ndarray of float32

    Notes
    -----
    The median ignores anything present in fewer than half the frames (a person walking
    through), which a mean would smear into the background.

    Examples
    --------
    >>> lead_in_background([np.full((2, 2), v, np.float32) for v in (1, 9, 3)]).tolist()
    [[3.0, 3.0], [3.0, 3.0]]
    """
    stack = np.array(frames, dtype=np.float32)  # a copy: sorted in place below
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"frames must be a non-empty stack of 2-D frames (N x H x W), got shape {stack.shape}")
    n = stack.shape[0]
    if n == 1:
        return stack[0]
    stack.sort(axis=0)  # 2-3x faster than np.median(axis=0) for a short stack of large frames
    if n % 2:
        return stack[n // 2]
    return (stack[n // 2 - 1] + stack[n // 2]) * np.float32(0.5)


def static_pixels(frames, *, tol: float = 0.0) -> np.ndarray:
    """Pixels that did not change at all over a lead-in: clipped sky, burned-in text, letterbox bars.

    Such pixels carry no information on the sensor's noise or drift; left in, a saturated sky
    (exactly 0 in every frame) pulls the median offset and the MAD noise sigma down, and the
    textured rest of the scene then crosses the threshold. :class:`GasSubtractor` leaves them
    out of its statistics (they are still searched for gas).

    Parameters
    ----------
    frames : sequence of (H, W) ndarray, or (N, H, W) ndarray
        The (blurred) lead-in frames, at least 2.
    tol : float
        Largest max-min range over the frames still counted as static (0 = exactly constant).

    Returns
    -------
    (H, W) ndarray of bool

    Examples
    --------
    >>> a = np.array([[0, 5], [9, 9]], np.float32); b = np.array([[0, 6], [9, 8]], np.float32)
    >>> static_pixels([a, b]).tolist()
    [[True, False], [True, False]]
    """
    stack = np.asarray(frames, dtype=np.float32)
    if stack.ndim != 3 or stack.shape[0] < 2:
        raise ValueError(f"frames must be a stack of at least 2 frames (N x H x W), got shape {stack.shape}")
    tol = _check_range(tol, name="tol", lo=0.0, hi=np.inf)
    return (stack.max(axis=0) - stack.min(axis=0)) <= np.float32(tol)


class SelectiveRunningAverage:
    """Running-average background that (almost) never learns what is in front of it.

    ``bg <- (1 - r) * bg + r * f`` where nothing changed, and the same with a much smaller
    ``foreground_rate`` where something did. A steady plume is therefore not absorbed (the idea of
    ViBe-Gases [4]_), while a slow change of the scene itself (sun, clouds, automatic gain) is
    still learned eventually instead of staying foreground for ever.

    Parameters
    ----------
    background : (H, W) ndarray
        The initial background (a lead-in median, or the first blurred frame). Copied.
    rate : float
        Learning rate in [0, 1] outside the foreground; 0 keeps the background fixed there.
    foreground_rate : float
        Learning rate in [0, 1] under the foreground (0 = never update there).

    Examples
    --------
    >>> model = SelectiveRunningAverage(np.zeros((2, 2), np.float32), rate=0.5)
    >>> model.update(np.full((2, 2), 10, np.float32), np.array([[True, False], [False, False]])).tolist()
    [[0.0, 5.0], [5.0, 5.0]]
    """

    def __init__(self, background: np.ndarray, *, rate: float = 0.02, foreground_rate: float = 0.0):
        background = _check_frame(background, name="background")
        self.rate = _check_range(rate, name="rate", lo=0.0, hi=1.0)
        self.foreground_rate = _check_range(foreground_rate, name="foreground_rate", lo=0.0, hi=1.0)
        self.background = background.astype(np.float32)

    def update(self, frame: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
        """Blend ``frame`` into the background (at ``foreground_rate`` where ``foreground``); returns it."""
        frame = np.asarray(frame, dtype=np.float32)
        if frame.shape != self.background.shape:
            raise ValueError(f"frame shape {frame.shape} differs from the background's {self.background.shape}")
        if foreground is None:
            if self.rate > 0:
                cv2.accumulateWeighted(frame, self.background, self.rate)
            return self.background
        if np.shape(foreground) != frame.shape:
            raise ValueError(f"foreground shape {np.shape(foreground)} differs from the frame's {frame.shape}")
        fg = _as_u8(foreground)
        if self.rate > 0:
            cv2.accumulateWeighted(frame, self.background, self.rate, mask=1 - fg)
        if self.foreground_rate > 0:
            cv2.accumulateWeighted(frame, self.background, self.foreground_rate, mask=fg)
        return self.background


def _sample(values: np.ndarray, step: int, exclude: np.ndarray | None) -> np.ndarray:
    """Every ``step``-th row and column of ``values``, without the pixels where ``exclude`` is true.

    Falls back to the whole subsample when fewer than 5 % of it would remain.
    """
    sample = values[::step, ::step]
    if exclude is None:
        return sample
    if np.shape(exclude) != values.shape:
        raise ValueError(f"exclude has shape {np.shape(exclude)}, the values {values.shape}")
    kept = sample[~np.asarray(exclude, dtype=bool)[::step, ::step]]
    return kept if kept.size and kept.size >= 0.05 * sample.size else sample


def robust_median(values: np.ndarray, *, step: int = 4, exclude: np.ndarray | None = None) -> float:
    """Median of a 2-D array estimated on every ``step``-th row and column (a 1/step² subsample).

    Pixels where ``exclude`` is true (e.g. the previous gas mask) are left out, unless fewer than
    5 % of the subsample would remain.

    >>> robust_median(np.arange(16.0).reshape(4, 4), step=1)
    7.5
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D, got shape {values.shape}")
    return float(np.median(_sample(values, _check_step(step), exclude)))


def signed_difference(frame: np.ndarray, background: np.ndarray, *, step: int = 4,
                      exclude: np.ndarray | None = None) -> np.ndarray:
    """``frame - background`` minus its global median (cancels drift and NUC/FFC offsets).

    A microbolometer's output drifts and jumps at each flat-field correction: the whole frame moves
    by a few grey levels at once. Subtracting the difference's median removes that shared offset
    and keeps the plume's local signal.

    Parameters
    ----------
    frame, background : (H, W) ndarray of float32
    step : int
        Subsampling step for the median (1 = exact; 4 = every 16th pixel, about 10x faster).
    exclude : (H, W) ndarray of bool, optional
        Pixels left out of the median (the previous frame's changed pixels), so that a plume
        covering much of the frame does not shift the offset.

    Returns
    -------
    (H, W) ndarray of float32

    Examples
    --------
    >>> bg = np.zeros((4, 4), np.float32)
    >>> f = bg + 3; f[0, 0] = 10           # a global offset of 3 and one changed pixel
    >>> signed_difference(f, bg, step=1)[[0, 1], [0, 1]].tolist()
    [7.0, 0.0]
    """
    frame = np.asarray(frame, dtype=np.float32)
    background = np.asarray(background, dtype=np.float32)
    if frame.shape != background.shape or frame.ndim != 2:
        raise ValueError(f"frame {frame.shape} and background {background.shape} must be 2-D and of one shape")
    d = cv2.subtract(frame, background)
    med = robust_median(d, step=step, exclude=exclude)
    if med != 0.0:
        d -= np.float32(med)
    return d


class TemporalEMA:
    """Exponential moving average over time: ``s <- (1 - alpha) * s + alpha * d``.

    Averaging the signed difference over a few frames lowers white noise by
    ``sqrt((2 - alpha) / alpha)`` (2.4x at alpha 0.3) while a drifting plume, which changes
    slowly, keeps its contrast: the largest single gain of the gas pipeline (``docs/methods.md``
    §C.2: F 0.22 -> 0.59 at contrast 8).

    Parameters
    ----------
    alpha : float
        Weight of the newest frame, in (0, 1]; 1 turns smoothing off.

    Examples
    --------
    >>> ema = TemporalEMA(alpha=0.5)
    >>> [float(ema.update(np.full((1, 1), v, np.float32))[0, 0]) for v in (4, 0, 0)]
    [4.0, 2.0, 1.0]
    """

    def __init__(self, *, alpha: float = 0.3):
        self.alpha = _check_range(alpha, name="alpha", lo=0.0, hi=1.0, lo_open=True)
        self.state: np.ndarray | None = None

    def update(self, value: np.ndarray) -> np.ndarray:
        """Add one frame; returns the smoothed frame (the internal state: do not modify it)."""
        value = np.asarray(value, dtype=np.float32)
        if self.state is None:
            self.state = value.copy()
        elif value.shape != self.state.shape:
            raise ValueError(f"value shape {value.shape} differs from the earlier {self.state.shape}")
        elif self.alpha == 1.0:
            self.state[...] = value
        else:
            cv2.accumulateWeighted(value, self.state, self.alpha)
        return self.state


def mad_sigma(values: np.ndarray, *, step: int = 4, floor: float = 0.0, exclude: np.ndarray | None = None) -> float:
    """Robust noise sigma ``1.4826 * median(|x|)`` of a zero-median difference image.

    The median absolute deviation ignores the plume while it covers a minority of the pixels,
    unlike the standard deviation [3]_; leaving out the previous frame's changed pixels
    (``exclude``) keeps it right when the plume fills most of the frame. 1.4826 makes it equal
    the standard deviation for Gaussian noise.

    Parameters
    ----------
    values : (H, W) ndarray
        A signed difference whose median is about 0 (see :func:`signed_difference`).
    step : int
        Subsampling step for the median.
    floor : float
        Lower bound of the result: compressed or quantised video can have a MAD of exactly 0.
    exclude : (H, W) ndarray of bool, optional
        Pixels left out (unless fewer than 5 % of the subsample would remain).

    Examples
    --------
    >>> noise = np.random.default_rng(0).normal(0, 2.0, (256, 256))
    >>> round(mad_sigma(noise, step=1), 1)
    2.0
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D, got shape {values.shape}")
    return max(1.4826 * float(np.median(np.abs(_sample(values, _check_step(step), exclude)))), float(floor))


def edge_threshold(background: np.ndarray, *, jitter: float = 0.3) -> np.ndarray:
    """Extra threshold on strong edges: ``jitter * |grad background|``, in grey levels.

    A sub-pixel shake of the camera, or vegetation swaying, changes a pixel on an edge by about
    the displacement times the local gradient (``docs/methods.md`` §C.1, jitter). Adding that to
    the k-sigma threshold keeps edges from lighting up, while flat areas, where a plume shows
    best, keep the plain threshold.

    Parameters
    ----------
    background : (H, W) ndarray
        The (blurred) background.
    jitter : float
        Assumed displacement in pixels (>= 0).

    Returns
    -------
    (H, W) ndarray of float32

    Examples
    --------
    >>> ramp = np.tile(np.arange(8, dtype=np.float32) * 10, (5, 1))   # gradient 10 per pixel
    >>> float(edge_threshold(ramp, jitter=0.5)[2, 4])
    5.0
    """
    background = np.asarray(background, dtype=np.float32)
    if background.ndim != 2:
        raise ValueError(f"background must be 2-D, got shape {background.shape}")
    jitter = _check_range(jitter, name="jitter", lo=0.0, hi=np.inf)
    gx = cv2.Sobel(background, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(background, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=cv2.BORDER_REPLICATE)
    edges = cv2.magnitude(gx, gy)
    edges *= np.float32(jitter)
    return edges


def threshold(diff: np.ndarray, sigma: float, *, k: float = 4.0, polarity: str = "both",
              extra: np.ndarray | None = None) -> np.ndarray:
    """k-sigma threshold of a signed difference, aware of the plume's polarity.

    Parameters
    ----------
    diff : (H, W) ndarray of float32
        Signed (smoothed) difference to the background.
    sigma : float
        Noise sigma (see :func:`mad_sigma`).
    k : float
        Threshold in units of sigma (3-4; higher = fewer false alarms).
    polarity : {'emitting', 'absorbing', 'both'}
        ``emitting`` keeps pixels brighter than the background, ``absorbing`` darker ones, ``both``
        either. Knowing the sign halves the false positives from noise.
    extra : (H, W) ndarray, optional
        A per-pixel amount added to the threshold (see :func:`edge_threshold`).

    Returns
    -------
    (H, W) ndarray of bool

    Examples
    --------
    >>> d = np.array([[-5.0, -1.0, 1.0, 5.0]], np.float32)
    >>> threshold(d, 1.0, k=4).tolist(), threshold(d, 1.0, k=4, polarity="absorbing").tolist()
    ([[True, False, False, True]], [[True, False, False, False]])
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    k = _check_range(k, name="k", lo=0.0, hi=np.inf, lo_open=True)
    diff = np.asarray(diff, dtype=np.float32)
    t = np.float32(k * float(sigma))
    if extra is not None:
        extra = np.asarray(extra, dtype=np.float32)
        if extra.shape != diff.shape:
            raise ValueError(f"extra has shape {extra.shape}, the difference {diff.shape}")
        t = extra + t
    if polarity == "emitting":
        return diff > t
    if polarity == "absorbing":
        return diff < -t
    return np.abs(diff) > t


def remove_small_blobs(mask: np.ndarray, *, min_area: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_area`` pixels; returns a bool mask.

    >>> m = np.zeros((5, 5), bool); m[0, 0] = True; m[2:5, 2:5] = True
    >>> remove_small_blobs(m, min_area=2).sum()
    np.int64(9)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    m8 = _as_u8(mask)
    if min_area <= 1 or not m8.any():
        return m8.astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


_KERNELS: dict[int, np.ndarray] = {}


def _kernel(size: int) -> np.ndarray:
    if size not in _KERNELS:
        _KERNELS[size] = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return _KERNELS[size]


def clean_mask(mask: np.ndarray, *, open_size: int = 3, close_size: int = 7,
               min_area_frac: float = 0.0005) -> np.ndarray:
    """Morphological clean-up: open (removes speckle), close (fills the plume), drop small blobs.

    Parameters
    ----------
    mask : (H, W) ndarray of bool
    open_size, close_size : int
        Odd sizes of the elliptical structuring elements (1 = skip that step).
    min_area_frac : float
        Blobs smaller than this fraction of the frame are dropped (0.0005 = 164 px at 640x512).

    Returns
    -------
    (H, W) ndarray of bool

    Examples
    --------
    >>> m = np.zeros((40, 40), bool); m[10:30, 10:30] = True; m[15, 15] = False; m[2, 2] = True
    >>> out = clean_mask(m, min_area_frac=0.01)
    >>> bool(out[15, 15]), bool(out[2, 2])       # hole filled, speck removed
    (True, False)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    open_size = _check_odd(open_size, name="open_size")
    close_size = _check_odd(close_size, name="close_size")
    min_area_frac = _check_range(min_area_frac, name="min_area_frac", lo=0.0, hi=1.0)
    m8 = _as_u8(mask)
    if open_size > 1:
        m8 = cv2.morphologyEx(m8, cv2.MORPH_OPEN, _kernel(open_size))
    if close_size > 1:
        m8 = cv2.morphologyEx(m8, cv2.MORPH_CLOSE, _kernel(close_size))
    return remove_small_blobs(m8, min_area=int(np.ceil(min_area_frac * mask.size)))


def hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The 8-connected components of ``weak`` that contain a ``strong`` pixel (Canny's hysteresis [6]_).

    A semi-transparent plume is strongest at its core and fades into the noise at its edges: seeds
    at a high threshold (few false alarms) grown through a low one recover the faint extent
    without admitting isolated noise. ``strong`` pixels outside ``weak`` are kept as well.

    Examples
    --------
    >>> weak = np.array([[1, 1, 0, 1, 1]], bool); strong = np.array([[0, 1, 0, 0, 0]], bool)
    >>> hysteresis(strong, weak).astype(int).tolist()
    [[1, 1, 0, 0, 0]]
    """
    strong = np.asarray(strong, dtype=bool)
    weak = np.asarray(weak, dtype=bool)
    if strong.shape != weak.shape or strong.ndim != 2:
        raise ValueError(f"strong {strong.shape} and weak {weak.shape} must be 2-D masks of one shape")
    if not strong.any():
        return strong.copy()
    grown = weak | strong
    n, labels = cv2.connectedComponents(_as_u8(grown), connectivity=8)
    seeded = np.zeros(n, bool)
    seeded[labels[strong]] = True
    seeded[0] = False
    return seeded[labels]


class ActivityMap:
    """How much each pixel has been flickering lately: an EMA of ``|f_t - f_(t-1)|``.

    Turbulent gas keeps changing the pixels it covers from frame to frame, for as long as it is
    there; a cloud shadow or a slow warming of the ground changes the background just as much
    but slowly, and barely registers here. :func:`active_regions` turns this map into the places
    where something flickers over an area (not just along an edge).

    Parameters
    ----------
    rate : float
        Weight of the newest frame difference, in (0, 1] (0.1: about the last 10 frames).

    Examples
    --------
    >>> act = ActivityMap(rate=0.5)
    >>> [float(act.update(np.full((1, 1), v, np.float32))[0, 0]) for v in (0, 4, 4, 0)]
    [0.0, 2.0, 1.0, 2.5]
    """

    def __init__(self, *, rate: float = 0.1):
        self.rate = _check_range(rate, name="rate", lo=0.0, hi=1.0, lo_open=True)
        self.state: np.ndarray | None = None
        self._previous: np.ndarray | None = None

    def update(self, frame: np.ndarray) -> np.ndarray:
        """Add the next (blurred) frame; returns the activity map (internal state: do not modify)."""
        frame = np.asarray(frame, dtype=np.float32)
        if self._previous is None:
            self.state = np.zeros_like(frame)
        elif frame.shape != self._previous.shape:
            raise ValueError(f"frame shape {frame.shape} differs from the earlier {self._previous.shape}")
        else:
            cv2.accumulateWeighted(cv2.absdiff(frame, self._previous), self.state, self.rate)
        self._previous = frame.copy()
        return self.state


def active_regions(activity: np.ndarray, *, ratio: float = 2.5, open_size: int = 7, min_area_frac: float = 0.01,
                   step: int = 4, exclude: np.ndarray | None = None) -> np.ndarray:
    """Areas that flicker well above the frame's typical level (see :class:`ActivityMap`).

    ``activity > ratio * median(activity)``, opened with an ellipse of ``open_size`` pixels so that
    activity along thin edges (vegetation swaying, a shimmering pole) disappears while a plume's
    broad turbulent region stays, then components under ``min_area_frac`` of the frame dropped.

    Parameters
    ----------
    activity : (H, W) ndarray
    ratio : float
        Threshold in multiples of the frame's median activity (> 0).
    open_size : int
        Odd opening size in pixels (1 = none).
    min_area_frac : float
        Smallest region kept, as a fraction of the frame.
    step : int
        Subsampling step of the median.
    exclude : (H, W) ndarray of bool, optional
        Pixels left out of the median (static pixels, see :func:`static_pixels`).

    Returns
    -------
    (H, W) ndarray of bool

    Examples
    --------
    >>> act = np.full((40, 40), 1.0, np.float32); act[5:25, 5:25] = 9; act[30:32, :] = 9
    >>> r = active_regions(act, ratio=3, open_size=5, min_area_frac=0.05, step=1)
    >>> bool(r[15, 15]), bool(r[31, 20])          # the broad region stays, the thin line goes
    (True, False)
    """
    activity = np.asarray(activity, dtype=np.float32)
    if activity.ndim != 2:
        raise ValueError(f"activity must be 2-D, got shape {activity.shape}")
    ratio = _check_range(ratio, name="ratio", lo=0.0, hi=np.inf, lo_open=True)
    open_size = _check_odd(open_size, name="open_size")
    min_area_frac = _check_range(min_area_frac, name="min_area_frac", lo=0.0, hi=1.0)
    level = max(robust_median(activity, step=step, exclude=exclude), 1e-6)
    m8 = _as_u8(activity > np.float32(ratio * level))
    if open_size > 1:
        m8 = cv2.morphologyEx(m8, cv2.MORPH_OPEN, _kernel(open_size))
    return remove_small_blobs(m8, min_area=int(np.ceil(min_area_frac * activity.size)))


def keep_blobs_in(mask: np.ndarray, region: np.ndarray, *, min_overlap: float = 0.2) -> np.ndarray:
    """Keep the 8-connected blobs of ``mask`` that lie at least ``min_overlap`` inside ``region``.

    Examples
    --------
    >>> mask = np.zeros((6, 12), bool); mask[1:5, 1:5] = True; mask[1:5, 7:11] = True
    >>> region = np.zeros((6, 12), bool); region[:, :3] = True
    >>> kept = keep_blobs_in(mask, region, min_overlap=0.25)
    >>> int(kept[:, :6].sum()), int(kept[:, 6:].sum())
    (16, 0)
    """
    mask = np.asarray(mask, dtype=bool)
    region = np.asarray(region, dtype=bool)
    if mask.shape != region.shape or mask.ndim != 2:
        raise ValueError(f"mask {mask.shape} and region {region.shape} must be 2-D and of one shape")
    min_overlap = _check_range(min_overlap, name="min_overlap", lo=0.0, hi=1.0)
    if not mask.any():
        return mask.copy()
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_as_u8(mask), connectivity=8)
    inside = np.bincount(labels[region], minlength=n)
    keep = inside >= min_overlap * stats[:, cv2.CC_STAT_AREA]
    keep[0] = False
    return keep[labels]


class TemporalHold:
    """Union of the last ``frames`` masks: the region a drifting plume has filled lately.

    Box annotations of gas (IOD-Video's, for one) mark where the plume is, including the parts
    too faint to show in any single frame; holding each detection for a moment draws that
    extent. ``frames=1`` passes masks through unchanged.

    Examples
    --------
    >>> hold = TemporalHold(frames=2)
    >>> [hold.update(np.array([[v]], bool)).tolist() for v in (1, 0, 0)]
    [[[True]], [[True]], [[False]]]
    """

    def __init__(self, *, frames: int = 1):
        if not isinstance(frames, (int, np.integer)) or isinstance(frames, bool) or frames < 1:
            raise ValueError(f"hold must be an integer number of frames >= 1, got {frames!r}")
        self.frames = int(frames)
        self._t = 0
        self._last_seen: np.ndarray | None = None  # frame index at which each pixel was last detected

    def update(self, mask: np.ndarray) -> np.ndarray:
        """Add the next mask; returns the union of it and the ``frames - 1`` before it."""
        mask = np.asarray(mask, dtype=bool)
        if self.frames == 1:
            return mask
        if self._last_seen is None:
            self._last_seen = np.full(mask.shape, -self.frames, np.int64)
        elif mask.shape != self._last_seen.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the earlier {self._last_seen.shape}")
        self._last_seen[mask] = self._t
        out = self._last_seen > self._t - self.frames
        self._t += 1
        return out


# -- the pipelines ------------------------------------------------------------------------------------
class GasSubtractor:
    """The gas pipeline (``docs/methods.md`` §C.2) as a stateful per-frame subtractor.

    Parameters
    ----------
    background : (H, W) ndarray, optional
        Initial background in blurred grey levels (a lead-in median). Without it the first frame
        given to :meth:`apply` becomes the background.
    params : GasParams, optional
        The parameter set (:data:`PRESETS`, or one fitted by ``--refine``).
    **knobs
        Or the fields of :class:`GasParams` as keywords (``k=5, polarity="absorbing"``), the
        others at their defaults. How they act: ``k``-sigma threshold of the smoothed signed
        difference (raised by ``edge_guard`` on strong edges), ``polarity`` keeps one sign
        (changes of the other sign are still kept out of the background model), ``k_low``
        grows detections to the plume's faint edges (:func:`hysteresis`), ``activity_ratio``
        keeps only blobs in broad flickering areas (:class:`ActivityMap`,
        :func:`active_regions`, :func:`keep_blobs_in`: rejects cloud shadows and edge shimmer,
        but also a plume that does not move), ``hold`` returns the union of the last ``hold``
        masks (:class:`TemporalHold`; the background model sees each frame's own detections).

    Attributes
    ----------
    params : GasParams
        The parameter set in use (its knobs are also attributes: ``sub.k``, ``sub.polarity``...).
    detections : (H, W) ndarray of bool or None
        The last frame's blobs before the output stage (``min_area_frac``, ``hold``): that stage
        never feeds back into the model, so other output settings can be applied to these.
    sigma : float or None
        Noise sigma used for the last frame.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> frames = [100 + rng.normal(0, 1.0, (64, 80)) for _ in range(20)]
    >>> for f in frames[10:]:
    ...     f[20:40, 30:50] += 12            # a warm plume appears
    >>> sub = GasSubtractor(background=lead_in_background([blur(f) for f in frames[:10]]))
    >>> masks = [sub.apply(f) for f in frames[10:]]
    >>> bool(masks[-1][30, 40]), bool(masks[-1][5, 5])
    (True, False)
    """

    def __init__(self, *, background: np.ndarray | None = None, params: GasParams | None = None, **knobs):
        if params is not None and knobs:
            raise TypeError(f"give either params or keyword knobs, not both (got {sorted(knobs)})")
        if params is None:
            unknown = sorted(set(knobs) - set(GasParams.names()))
            if unknown:
                raise TypeError(f"unknown parameter(s) {unknown} of the gas pipeline; known: "
                                f"{sorted(GasParams.names())}")
            params = GasParams(**knobs)
        elif not isinstance(params, GasParams):
            raise TypeError(f"params must be a GasParams, got {type(params).__name__}")
        self.params = params
        for name, value in params.to_dict().items():
            setattr(self, name, value)
        self.activity = ActivityMap(rate=self.activity_rate) if self.activity_ratio is not None else None
        self.hold = TemporalHold(frames=params.hold)
        self.ema = TemporalEMA(alpha=params.ema_alpha)
        self.model: SelectiveRunningAverage | None = None
        self._static: np.ndarray | None = None
        if background is not None:
            self.set_background(background)
        self.sigma: float | None = None
        self._diff: np.ndarray | None = None  # last frame's smoothed signed difference
        self.detections: np.ndarray | None = None
        self._changed: np.ndarray | None = None  # last frame's significant change (either sign)
        self._edges: np.ndarray | None = None

    @property
    def background(self) -> np.ndarray | None:
        """The current background (blurred grey levels), or None before the first frame."""
        return None if self.model is None else self.model.background

    def set_background(self, background: np.ndarray, *, static: np.ndarray | None = None) -> None:
        """(Re)start the background model from ``background`` (blurred grey levels).

        ``static``: pixels that never changed over the lead-in (:func:`static_pixels`), left out of
        the statistics when ``ignore_static`` is on.
        """
        self.model = SelectiveRunningAverage(background, rate=self.learning_rate,
                                             foreground_rate=self.foreground_rate)
        self._edges = None
        if static is not None:
            static = np.asarray(static, dtype=bool)
            if static.shape != self.model.background.shape:
                raise ValueError(f"static has shape {static.shape}, the background {self.model.background.shape}")
        self._static = static if self.ignore_static and static is not None and static.any() else None

    def apply(self, frame: np.ndarray, *, blurred: bool = False) -> np.ndarray:
        """Process the next frame in time order; returns its (H, W) bool gas mask.

        ``blurred=True`` says ``frame`` already went through :func:`blur` with this ``blur_ksize``.
        """
        f = np.asarray(frame, dtype=np.float32) if blurred else blur(frame, ksize=self.blur_ksize)
        if self.model is None:
            self.set_background(f)
        elif f.shape != self.model.background.shape:
            raise ValueError(f"frame shape {f.shape} differs from the earlier frames' {self.model.background.shape}; "
                             "all frames of a recording must have one size")
        exclude = self._changed
        if self._static is not None:
            exclude = self._static if exclude is None else exclude | self._static
        d = signed_difference(f, self.model.background, step=self.stats_step, exclude=exclude)
        ds = self.ema.update(d)
        self.sigma = mad_sigma(ds, step=self.stats_step, floor=self.min_sigma, exclude=exclude)
        if self.edge_guard > 0 and self._edges is None:
            # edges of the initial background: the scene's own edges, not those a slowly absorbed plume leaves
            self._edges = edge_threshold(self.model.background, jitter=self.edge_guard)
        # any significant change, of either sign, is kept out of the background and the statistics
        changed = threshold(ds, self.sigma, k=self.k, polarity="both", extra=self._edges)
        raw = changed
        if self.k_low is not None:
            raw = hysteresis(changed, threshold(ds, self.sigma, k=self.k_low, polarity="both", extra=self._edges))
        if self.polarity != "both":
            raw = raw & ((ds > 0) if self.polarity == "emitting" else (ds < 0))
        mask = clean_mask(raw, open_size=self.open_size, close_size=self.close_size, min_area_frac=0.0)
        if self.activity is not None:
            active = active_regions(self.activity.update(f), ratio=self.activity_ratio, open_size=self.activity_open,
                                    min_area_frac=self.activity_min_area_frac, step=self.stats_step,
                                    exclude=self._static)
            mask = keep_blobs_in(mask, active, min_overlap=self.activity_overlap)
        changed |= mask
        self.model.update(f, changed)
        self._changed = changed
        self._diff = ds
        self.detections = mask
        # the output stage (smallest blob, hold) never feeds back into the model
        return self.hold.update(remove_small_blobs(mask, min_area=int(np.ceil(self.min_area_frac * mask.size))))

    def fork(self, params: GasParams) -> "GasSubtractor":
        """A new subtractor with ``params`` that continues from this one's state.

        The background model, the smoothed difference and the last changed pixels are copied;
        the activity map too when both use one (else it starts afresh), the hold starts empty.
        ``blur_ksize`` must be the same (the state is in blurred grey levels).

        >>> sub = GasSubtractor(); _ = sub.apply(np.full((8, 8), 5, np.uint8))
        >>> other = sub.fork(sub.params.replace(k=6))
        >>> other.k, bool((other.background == sub.background).all()), other.background is sub.background
        (6.0, True, False)
        """
        if params.blur_ksize != self.blur_ksize:
            raise ValueError(f"a fork must keep blur_ksize {self.blur_ksize}, got {params.blur_ksize}")
        out = GasSubtractor(params=params)
        if self.model is not None:
            out.set_background(self.model.background.copy())
            out._static = self._static if out.ignore_static else None
        if self.ema.state is not None:
            out.ema.state = self.ema.state.copy()
        out.sigma = self.sigma
        out._changed = None if self._changed is None else self._changed.copy()
        if params.edge_guard == self.edge_guard and self._edges is not None:
            out._edges = self._edges
        if out.activity is not None and self.activity is not None and self.activity.state is not None:
            out.activity.state = self.activity.state.copy()
            out.activity._previous = self.activity._previous.copy()
        return out

    def zscore(self) -> np.ndarray:
        """The last frame's smoothed signed difference in noise sigmas, ``ds / sigma`` (no allowance for
        edges: see :meth:`evidence`); a new array each call."""
        if self._diff is None:
            raise RuntimeError("no frame processed yet: call apply() first")
        return self._diff * np.float32(1.0 / self.sigma)

    def edge_allowance(self) -> np.ndarray | None:
        """The extra threshold on the scene's strong edges, in noise sigmas (None when ``edge_guard`` is 0)."""
        if self._edges is None or self.sigma is None:
            return None
        return self._edges * np.float32(1.0 / self.sigma)

    def evidence(self) -> np.ndarray:
        """The last frame's signed change in noise sigmas, edge-aware: ``ds / (sigma + edges / k)``.

        ``|evidence| > k`` is exactly the k-sigma test of :meth:`apply` (before hysteresis and
        morphology); positive = warmer than the background. A new array each call.

        Raises
        ------
        RuntimeError
            Before the first frame.
        """
        if self._diff is None:
            raise RuntimeError("no frame processed yet: call apply() first")
        scale = np.float32(self.sigma)
        if self._edges is not None:
            return self._diff / (self._edges * np.float32(1.0 / self.k) + scale)
        return self._diff * np.float32(1.0 / scale)


class OpenCVSubtractor:
    """OpenCV's MOG2 [1]_ or KNN [2]_ with the same blur and clean-up as the gas pipeline.

    For ordinary moving objects (people, vehicles); on faint plumes MOG2 scores F 0.19-0.35
    against the gas pipeline's 0.85-0.91 (``docs/methods.md`` §C.3). Frames that are not uint8 are mapped to uint8 with one linear
    stretch fixed on the first frame (0.5 / 99.5 percentiles), so the whole recording shares it.

    Parameters
    ----------
    method : {'mog2', 'knn'}
    history : int
        Frames in the model's history.
    var_threshold : float, optional
        MOG2's ``varThreshold`` (default 16) or KNN's ``dist2Threshold`` (default 400).
    blur_ksize, open_size, close_size, min_area_frac
        As for :class:`GasSubtractor`.
    """

    def __init__(self, method: str = "mog2", *, history: int = OPENCV_DEFAULTS["history"],
                 var_threshold: float | None = OPENCV_DEFAULTS["var_threshold"],
                 blur_ksize: int = OPENCV_DEFAULTS["blur_ksize"], open_size: int = OPENCV_DEFAULTS["open_size"],
                 close_size: int = OPENCV_DEFAULTS["close_size"],
                 min_area_frac: float = OPENCV_DEFAULTS["min_area_frac"]):
        if method not in ("mog2", "knn"):
            raise ValueError(f"method must be 'mog2' or 'knn' here, got {method!r}")
        if not isinstance(history, (int, np.integer)) or isinstance(history, bool) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got {history!r}")
        self.method = method
        self.blur_ksize = _check_odd(blur_ksize, name="blur_ksize")
        self.open_size = _check_odd(open_size, name="open_size")
        self.close_size = _check_odd(close_size, name="close_size")
        self.min_area_frac = _check_range(min_area_frac, name="min_area_frac", lo=0.0, hi=1.0)
        if var_threshold is not None:
            var_threshold = _check_range(var_threshold, name="var_threshold", lo=0.0, hi=np.inf, lo_open=True)
        if method == "mog2":
            self.model = cv2.createBackgroundSubtractorMOG2(
                history=int(history), varThreshold=16.0 if var_threshold is None else var_threshold,
                detectShadows=False)
        else:
            self.model = cv2.createBackgroundSubtractorKNN(
                history=int(history), dist2Threshold=400.0 if var_threshold is None else var_threshold,
                detectShadows=False)
        self._stretch: tuple[float, float] | None = None

    def _to_uint8(self, frame: np.ndarray) -> np.ndarray:
        if frame.dtype == np.uint8:
            return frame
        if self._stretch is None:
            lo, hi = np.percentile(frame[::4, ::4], (0.5, 99.5))
            self._stretch = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        lo, hi = self._stretch
        return cv2.convertScaleAbs(frame.astype(np.float32), alpha=255.0 / (hi - lo), beta=-lo * 255.0 / (hi - lo))

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Process the next frame; returns its (H, W) bool foreground mask."""
        frame = self._to_uint8(_check_frame(frame))
        if self.blur_ksize > 1:
            frame = cv2.GaussianBlur(frame, (self.blur_ksize, self.blur_ksize), 0)
        fg = self.model.apply(frame)
        return clean_mask(fg > 127, open_size=self.open_size, close_size=self.close_size,
                          min_area_frac=self.min_area_frac)


def preset(name: "str | GasParams | None") -> GasParams:
    """The :class:`GasParams` of a named preset (:data:`PRESETS`); a GasParams passes through; None = ``mask``.

    >>> preset("extent").hold, preset(None) == PRESETS["mask"]
    (25, True)
    """
    if name is None:
        return PRESETS["mask"]
    if isinstance(name, GasParams):
        return name
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
    return PRESETS[name]


def preset_params(preset: str | None, *, method: str = "gas") -> dict:
    """The knobs a named preset sets differently from the defaults, as a dict; ``{}`` for None.

    Raises
    ------
    ValueError
        An unknown preset, or a preset asked of a method other than ``gas``.

    Examples
    --------
    >>> preset_params("extent")["hold"], preset_params(None)
    (25, {})
    """
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    if method != "gas":
        raise ValueError(f"presets are parameter sets of the gas pipeline, not of method {method!r}")
    return PRESETS[preset].changes()


def gas_masks(frames: Iterable[np.ndarray], *, method: str = "gas", preset: "str | GasParams | None" = None,
              **params) -> Iterator[np.ndarray]:
    """One boolean gas mask per thermal frame, in the order given (time order).

    Parameters
    ----------
    frames : iterable of (H, W) ndarray of uint8, uint16 or float
        The thermal frames of one recording, in time order, from a fixed camera.
    method : {'gas', 'mog2', 'knn'}
        ``gas`` (default): the gas pipeline of :class:`GasSubtractor`. ``mog2``/``knn``: OpenCV's
        generic subtractors (:class:`OpenCVSubtractor`), for ordinary moving objects.
    preset : {'mask', 'extent'} or GasParams, optional
        A named parameter set of the gas pipeline (:data:`PRESETS`) or a :class:`GasParams`;
        ``params`` override it. None = ``mask`` (the defaults).
    **params
        Knobs of the chosen method (:class:`GasParams` fields / :data:`OPENCV_DEFAULTS`). For
        ``gas`` also ``lead_in`` (int, default :data:`DEFAULT_LEAD_IN`): the first ``lead_in``
        frames are taken as gas-free and their median is the initial background (0 = start from
        the first frame; a lead-in that does hold gas costs recall where the plume stays put
        until the background learns it at ``foreground_rate``).

    Yields
    ------
    (H, W) ndarray of bool
        True where gas was detected. The lead-in frames get masks too (against the lead-in
        background), so there is exactly one mask per input frame.

    Raises
    ------
    ValueError, TypeError
        Unknown method or parameter, bad value, or a frame that is not 2-D numeric. Parameters
        are checked before any frame is read.

    Notes
    -----
    Frames are consumed lazily; only the lead-in is held in memory. Measured (SimGas per-video
    IoU, a real leak, simulated faint plumes, speed against MOG2) in
    ``benchmarks/bench_background.py``; generic subtractors find far less of a faint plume
    (``docs/methods.md`` §C.3).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> frames = [rng.normal(50, 1.0, (48, 64)).astype(np.float32) for _ in range(40)]
    >>> for f in frames[30:]:
    ...     f[10:30, 20:44] -= 10            # a cold (absorbing) plume appears at frame 30
    >>> masks = list(gas_masks(frames, lead_in=20, polarity="absorbing"))
    >>> len(masks), bool(masks[5].any()), bool(masks[-1][20, 30])
    (40, False, True)
    """
    params = dict(params)
    lead_in = params.pop("lead_in", DEFAULT_LEAD_IN) if method == "gas" else None
    settings = method_params(method, params, preset)
    if method in ("mog2", "knn"):
        return _opencv_masks(frames, OpenCVSubtractor(method, **params))
    if not isinstance(lead_in, (int, np.integer)) or isinstance(lead_in, bool) or lead_in < 0:
        raise ValueError(f"lead_in must be an integer number of frames >= 0, got {lead_in!r}")
    return _gas_masks(frames, GasSubtractor(params=settings), int(lead_in))


def method_params(method: str, params: Mapping, preset_name: "str | GasParams | None" = None):
    """The checked settings of a background ``method``: a :class:`GasParams` (the preset with
    ``params`` on top) for ``gas``, the full keyword dict of :class:`OpenCVSubtractor` for
    ``mog2``/``knn``.

    Raises ValueError for an unknown method, a preset with an OpenCV method or a bad value, and
    TypeError for an unknown parameter.

    >>> method_params("gas", {"k": 5.0}, "extent").k
    5.0
    >>> method_params("mog2", {"history": 50})["history"]
    50
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("mog2", "knn"):
        if preset_name is not None:
            raise ValueError(f"presets are parameter sets of the gas pipeline, not of method {method!r}")
        unknown = sorted(set(params) - set(OPENCV_DEFAULTS))
        if unknown:
            raise TypeError(f"unknown parameter(s) {unknown} for method {method!r}; known: {sorted(OPENCV_DEFAULTS)}")
        full = {**OPENCV_DEFAULTS, **params}
        OpenCVSubtractor(method, **full)  # checks every knob
        return full
    unknown = sorted(set(params) - set(GasParams.names()))
    if unknown:
        raise TypeError(f"unknown parameter(s) {unknown} for method {method!r}; known: {sorted(DEFAULTS)}")
    return preset(preset_name).replace(**params)


def _opencv_masks(frames, sub: OpenCVSubtractor) -> Iterator[np.ndarray]:
    for frame in frames:
        yield sub.apply(frame)


def _gas_masks(frames, sub: GasSubtractor, lead_in: int) -> Iterator[np.ndarray]:
    it = iter(frames)
    head = [blur(f, ksize=sub.blur_ksize) for f in itertools.islice(it, lead_in)]
    if head:
        shapes = {h.shape for h in head}
        if len(shapes) > 1:
            raise ValueError(f"all frames of a recording must have one size; the lead-in mixes {sorted(shapes)}")
        sub.set_background(lead_in_background(head), static=static_pixels(head) if len(head) > 1 else None)
        for f in head:
            yield sub.apply(f, blurred=True)
        del head
    for frame in it:
        yield sub.apply(frame)
