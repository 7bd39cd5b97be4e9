"""Pre-annotation on the dense thermal stream: every frame goes through the background model, the
extracted pairs get their masks.

Extraction samples pairs sparsely (``gasdb extract --every 0.5`` keeps one frame in 7 of a 15 fps
camera), but the gas pipeline (:mod:`gasdb_tools.background`) is a per-frame temporal model: its
EMA, running-average background, activity map and hold were tuned on consecutive frames. Fed
pairs 0.5 s apart it sees a different signal (SimGas video 3: IoU 0.49 instead of 0.86). So the
drafts come from the recording's whole thermal video, decoded in one sequential pass at its native
size and rate, and only the masks of the frames that are pairs are kept (:func:`pair_masks`).

Memory stays flat with the length of a recording: frames are consumed one at a time; only the
gas-free lead-in (``lead_in_s`` seconds) is held, to take its median (:func:`prime`).

A pair is matched to the stream frame whose time equals its ``t_thermal`` (the time extraction
recorded from the same decoder, to 1 µs) within ``tolerance``; a pair without such a frame is an
error (:class:`PairTimes`), because it means the video is not the one the pairs came from.
"""

from __future__ import annotations

import bisect
import queue
import threading
from collections import deque
from typing import Iterable, Iterator, NamedTuple

import cv2
import numpy as np
from scipy.special import xlogy

from gasdb_tools.background import GasParams, GasSubtractor, blur, lead_in_background, static_pixels

__all__ = ["TOLERANCE_S", "PairTimes", "Primed", "prime", "pair_masks", "prefetch", "uncertainty", "static_probability",
           "draft_stats"]

#: Largest difference between a pair's recorded time and its stream frame's time (seconds).
TOLERANCE_S = 5e-4


class PairTimes:
    """Which frames of a time-ordered stream are the pairs.

    Parameters
    ----------
    times : sequence of float
        The pairs' times (``t_thermal``), in increasing order.
    tolerance : float
        Largest ``|t_frame - t_pair|`` in seconds.

    Examples
    --------
    >>> clock = PairTimes([0.0, 0.5])
    >>> [clock.match(t) for t in (0.0, 0.25, 0.5)]
    [0, None, 1]
    >>> clock.missing()
    []
    """

    def __init__(self, times, *, tolerance: float = TOLERANCE_S):
        self.times = [float(t) for t in times]
        if any(b <= a for a, b in zip(self.times, self.times[1:])):
            raise ValueError("pair times must be strictly increasing")
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.matched = [False] * len(self.times)

    def match(self, t: float) -> int | None:
        """The index of the pair at stream time ``t``, or None."""
        i = bisect.bisect_left(self.times, t - self.tolerance)
        if i < len(self.times) and abs(self.times[i] - t) <= self.tolerance and not self.matched[i]:
            self.matched[i] = True
            return i
        return None

    def missing(self) -> list[int]:
        """Indices of the pairs no stream frame matched (so far)."""
        return [i for i, m in enumerate(self.matched) if not m]


class Primed(NamedTuple):
    """A stream after its lead-in was read (see :func:`prime`)."""

    background: np.ndarray | None
    static: np.ndarray | None
    frames: Iterator[tuple[float, np.ndarray, np.ndarray]]


def prime(timed_frames: Iterable[tuple[float, np.ndarray]], *, lead_in_s: float,
          blur_ksize: int = 5) -> Primed:
    """Read the gas-free lead-in of a stream: its median background, its static pixels, and all frames.

    Parameters
    ----------
    timed_frames : iterable of (float, (H, W) ndarray)
        ``(t, frame)`` in time order (:func:`gasdb_tools.video.iter_frames` with ``gray=True``).
    lead_in_s : float
        Seconds from the first frame taken as gas-free (0 = none: the first frame starts the
        background, as :class:`~gasdb_tools.background.GasSubtractor` does by itself).
    blur_ksize : int
        The subtractors' blur (the lead-in is blurred once, here).

    Returns
    -------
    Primed
        ``background`` (:func:`~gasdb_tools.background.lead_in_background`) and ``static``
        (:func:`~gasdb_tools.background.static_pixels`; None for fewer than 2 frames), both None
        without a lead-in; ``frames`` yields every frame again, lead-in included, as
        ``(t, frame, blurred)``. Only the lead-in is held in memory.

    Examples
    --------
    >>> frames = [(k / 10, np.full((4, 4), k, np.uint8)) for k in range(5)]
    >>> p = prime(frames, lead_in_s=0.25, blur_ksize=1)
    >>> float(p.background[0, 0]), [t for t, _, _ in p.frames]
    (1.0, [0.0, 0.1, 0.2, 0.3, 0.4])
    """
    if not lead_in_s >= 0:
        raise ValueError(f"lead_in_s must be >= 0 seconds, got {lead_in_s!r}")
    it = iter(timed_frames)
    head: list[tuple[float, np.ndarray, np.ndarray]] = []
    rest = None
    if lead_in_s > 0:
        t0 = None
        for t, frame in it:
            t0 = t if t0 is None else t0
            item = (float(t), frame, blur(frame, ksize=blur_ksize))
            if t >= t0 + lead_in_s:
                rest = item
                break
            head.append(item)
    if not head:
        return Primed(None, None, _chain([], rest, it, blur_ksize))
    shapes = {b.shape for _, _, b in head}
    if len(shapes) > 1:
        raise ValueError(f"all frames of a recording must have one size; the lead-in mixes {sorted(shapes)}")
    blurred = [b for _, _, b in head]
    background = lead_in_background(blurred)
    static = static_pixels(blurred) if len(blurred) > 1 else None
    del blurred
    return Primed(background, static, _chain(head, rest, it, blur_ksize))


def _chain(head, rest, it, blur_ksize):
    head = deque(head)
    while head:
        yield head.popleft()
    if rest is not None:
        yield rest
    for t, frame in it:
        yield float(t), frame, blur(frame, ksize=blur_ksize)


def prefetch(items: Iterable, *, depth: int = 8) -> Iterator:
    """Iterate ``items`` in a background thread, ``depth`` items ahead (decoding overlaps the model).

    PyAV and OpenCV release the GIL, so on two cores the decoder and the background model run side
    by side. At most ``depth`` items are held. An exception in the thread is raised here; closing
    the returned generator stops the thread.

    >>> list(prefetch(range(5)))
    [0, 1, 2, 3, 4]
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth!r}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, done))
        except BaseException as exc:  # handed to the consumer
            q.put((exc, None))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="gasdb-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            exc, item = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def pair_masks(timed_frames: Iterable[tuple[float, np.ndarray]], times, *, subtractor,
               lead_in_s: float = 1.0, tolerance: float = TOLERANCE_S, stats: bool = False) -> Iterator[tuple]:
    """``(pair index, mask)`` for every pair, in time order, from every frame of a stream.

    Parameters
    ----------
    timed_frames : iterable of (float, (H, W) ndarray)
        The whole thermal stream, in time order.
    times : sequence of float
        The pairs' times (strictly increasing).
    subtractor : GasSubtractor or OpenCVSubtractor
        A fresh subtractor; every frame goes through its ``apply``. A
        :class:`~gasdb_tools.background.GasSubtractor` starts from the median of the first
        ``lead_in_s`` seconds (:func:`prime`).
    lead_in_s : float
        Gas-free lead-in in seconds (gas subtractor only).
    tolerance : float
        See :class:`PairTimes`.
    stats : bool
        Also yield :func:`draft_stats` of each pair (uncertainty from the gas subtractor's evidence).

    Yields
    ------
    (int, (H, W) ndarray of bool), or (int, mask, dict) with ``stats``

    Raises
    ------
    ValueError
        A pair time with no frame of the stream (``t_thermal`` and the video disagree), frames of
        different sizes, bad arguments.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> frames = [(k / 10, rng.normal(100, 1, (40, 50)).astype(np.float32)) for k in range(40)]
    >>> for t, f in frames[20:]:
    ...     f[10:30, 10:30] += 15                     # a warm plume from t = 2 s
    >>> out = dict(pair_masks(frames, [0.5, 3.0], subtractor=GasSubtractor(), lead_in_s=1.0))
    >>> bool(out[0].any()), bool(out[1][20, 20])
    (False, True)
    """
    clock = PairTimes(times, tolerance=tolerance)
    if isinstance(subtractor, GasSubtractor):
        primed = prime(timed_frames, lead_in_s=lead_in_s, blur_ksize=subtractor.blur_ksize)
        if primed.background is not None:
            subtractor.set_background(primed.background, static=primed.static)
        stream = ((t, subtractor.apply(b, blurred=True)) for t, _, b in primed.frames)
    else:
        stream = ((float(t), subtractor.apply(f)) for t, f in timed_frames)
    gas = isinstance(subtractor, GasSubtractor)
    last = None
    for t, mask in stream:
        last = t
        i = clock.match(t)
        if i is None:
            continue
        if stats:
            prob = static_probability(subtractor.evidence(), subtractor.params) if gas else None
            yield i, mask, draft_stats(mask, prob)
        else:
            yield i, mask
    missing = clock.missing()
    if missing:
        i = missing[0]
        raise ValueError(f"{len(missing)} pair time(s) have no frame in the thermal stream, the first "
                         f"t = {clock.times[i]:.6f} s (the stream ends at {last if last is not None else 0:.6f} s)")


# ----------------------------------------------------------------------------------------------
# numbers about a draft, for `gasdb suggest`
# ----------------------------------------------------------------------------------------------
def uncertainty(prob: np.ndarray, *, near: np.ndarray | None = None) -> float:
    """Mean binary entropy (bits) of per-pixel gas probabilities; only pixels ``near`` count (all by default).

    >>> uncertainty(np.array([[0.5, 0.0]])), uncertainty(np.array([[0.5, 0.0]]), near=np.array([[False, True]]))
    (0.5, 0.0)
    """
    p = np.clip(np.asarray(prob, np.float32), 0.0, 1.0)
    h = -(xlogy(p, p) + xlogy(1 - p, 1 - p)) * np.float32(1 / np.log(2))
    if near is not None:
        h = np.where(near, h, 0)
    return float(h.mean())


def static_probability(evidence: np.ndarray, params: GasParams) -> np.ndarray:
    """A soft version of the k-sigma test: ``sigmoid(2 (e - k))`` of the evidence in the drafts' polarity.

    >>> float(static_probability(np.array([4.0]), GasParams())[0])
    0.5
    """
    e = np.asarray(evidence, np.float32)
    e = e if params.polarity == "emitting" else (-e if params.polarity == "absorbing" else np.abs(e))
    return 1.0 / (1.0 + np.exp(np.clip(-2.0 * (e - np.float32(params.k)), -30, 30)))


_NEAR = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (31, 31))


def draft_stats(mask: np.ndarray, prob: np.ndarray | None, other: np.ndarray | None = None) -> dict:
    """What ``gasdb suggest`` reads from a draft: ``uncertainty`` (:func:`uncertainty` within 15 px of
    the drafted plume), ``gas_fraction``, and ``disagreement`` = 1 - IoU with ``other`` (another
    method's mask of the same frame) when given.

    >>> m = np.zeros((8, 8), bool); m[2:4, 2:4] = True
    >>> draft_stats(m, np.where(m, 0.5, 0.0), other=np.zeros((8, 8), bool))
    {'uncertainty': 0.0625, 'gas_fraction': 0.0625, 'disagreement': 1.0}
    """
    mask = np.asarray(mask, bool)
    out = {}
    if prob is not None:
        near = cv2.dilate(mask.view(np.uint8), _NEAR) > 0
        out["uncertainty"] = round(uncertainty(prob, near=near), 6)
    out["gas_fraction"] = round(float(mask.mean()), 6)
    if other is not None:
        union = np.count_nonzero(mask | other)
        out["disagreement"] = round(1.0 - float(np.count_nonzero(mask & other)) / float(union), 6) if union else 0.0
    return out
