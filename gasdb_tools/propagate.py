"""Drafts between corrected frames: corrected masks carried by the plume's motion, combined with the
background model's evidence by a per-recording logistic model.

A person's correction of one frame says a lot about its neighbours: where the plume was, and how
the background model's evidence relates to what the person calls gas in this scene (how faint an
edge still counts, which sign, what a warm passer-by looks like). Two pieces use it:

**Carrying** (:class:`Carrier`). The corrected masks are carried along the thermal stream by its
apparent motion: dense optical flow (DIS, Kroeger et al. [1]_) between consecutive frames, at half
resolution, chained frame by frame; forwards from each corrected pair and backwards from the next
one, up to ``window_s`` seconds (a drifting plume changes shape within seconds, so a mask carried
further says little). A pair between two corrections gets both, weighted by their closeness in
time: the gas analogue of CVAT's interpolation between keyframes, but following the plume instead
of moving polygon vertices on straight lines.

**Fusion** (:class:`FeatureState`, :class:`LogisticFusion`). Per pixel, :data:`FEATURES` (the
background model's smoothed signed difference in noise sigmas at several scales, split by sign;
the raw frame difference; the background's level and its product with the difference, since a
plume's contrast depends on the temperature behind it; the recent maximum of the difference;
flicker; the threshold allowance on the scene's edges; the background model's own mask, so the
fusion can always fall back on it; the carried masks) go through
a logistic model fitted on the corrected frames (L2-regularised Newton/IRLS). Its decision
threshold is chosen to maximise IoU on those frames (by :mod:`gasdb_tools.refine` on the finished
drafts of those frames). :mod:`gasdb_tools.refine` fits it and judges
it by held-out IoU.

References
----------
.. [1] T. Kroeger, R. Timofte, D. Dai, L. Van Gool, "Fast Optical Flow using Dense Inverse Search",
   ECCV 2016, doi:10.1007/978-3-319-46493-0_29.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from gasdb_tools.background import ActivityMap, GasSubtractor

__all__ = [
    "FEATURES",
    "WINDOW_S",
    "flow_image",
    "BLEND_TAU_S",
    "carry",
    "Carrier",
    "blend",
    "FeatureState",
    "LogisticFusion",
]

#: The per-pixel features of :class:`FeatureState`, in column order.
FEATURES = (
    "pos", "pos_s1", "pos_s2", "pos_s4", "pos_s8", "pos_max9",
    "neg", "neg_s1", "neg_s2", "neg_s4", "neg_s8", "neg_max9",
    "raw_pos", "raw_pos_s2", "raw_neg", "raw_neg_s2",
    "level", "level_s4", "pos_s2_level", "neg_s2_level",
    "recent", "recent_s2", "flicker", "edge", "detected", "detected_s2", "carried",
)

#: Default reach of a carried mask, in seconds.
WINDOW_S = 2.0
#: Decay time (seconds) of a carried mask's weight in a pending pair's draft (:func:`blend`).
BLEND_TAU_S = 0.5


# ----------------------------------------------------------------------------------------------
# carrying masks along the stream
# ----------------------------------------------------------------------------------------------
def flow_image(blurred: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The 8-bit image the optical flow runs on (``lo -> 0``, ``hi -> 255``), at half size when both
    sides are at least 48 pixels."""
    scale = 255.0 / max(hi - lo, 1e-6)
    img = cv2.convertScaleAbs(np.asarray(blurred, np.float32), alpha=scale, beta=-lo * scale)
    if min(img.shape) < 48:
        return img
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


def carry(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Pull a soft mask through a flow field: ``out(x) = mask(x + flow(x))`` (bilinear, 0 outside).

    ``flow`` may be smaller than ``mask`` (half-size flow): it is resized and scaled.

    >>> m = np.zeros((4, 6), np.float32); m[:, 2] = 1
    >>> f = np.zeros((4, 6, 2), np.float32); f[..., 0] = 1        # every pixel looks one to the right
    >>> carry(m, f)[0].tolist()
    [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    """
    mask = np.asarray(mask, np.float32)
    h, w = mask.shape
    flow = np.asarray(flow, np.float32)
    if flow.shape[:2] != (h, w):
        sx, sy = w / flow.shape[1], h / flow.shape[0]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * np.array([sx, sy], np.float32)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


class Carrier:
    """Corrected masks carried forwards and backwards along a stream (see the module docstring).

    Feed every frame in time order to :meth:`step`, then register the frame with :meth:`pair` when
    it is a pair (with its corrected mask when it is a corrected one). Pairs come back from
    :meth:`step` and :meth:`finish` once nothing more can reach them (``window_s`` seconds later)
    as ``(key, payload, carried)``: ``carried`` is the closeness-weighted mean of the masks carried
    from the nearest corrected pair before and after it, times the larger weight
    ``1 / (1 + dt / window_s)``, or None when no correction is within reach. A corrected pair gets
    the masks of its neighbours, never its own. Optical flow is computed only within ``window_s``
    of a correction; held in memory: the flows of the last ``window_s`` seconds (half size) and the
    pairs waiting for a correction that may still come.

    Parameters
    ----------
    correction_times : iterable of float
        Times of the corrected pairs (to know where flow is needed).
    window_s : float
        Reach of a carried mask, in seconds.
    levels : (float, float)
        Grey levels mapped to 0 and 255 for the flow image (:func:`flow_image`).

    Examples
    --------
    >>> m = np.zeros((8, 8), np.float32); m[2:6, 2:6] = 1
    >>> c = Carrier([0.2], window_s=1.0)
    >>> out = []
    >>> for k in range(5):
    ...     out += c.step(k / 10, np.zeros((8, 8), np.float32))
    ...     c.pair(k, correction=m if k == 2 else None)
    >>> out += c.finish()
    >>> [(key, None if carried is None else round(float(carried[3, 3]), 2)) for key, _, carried in out]
    [(0, 0.83), (1, 0.91), (2, None), (3, 0.91), (4, 0.83)]
    """

    def __init__(self, correction_times, *, window_s: float = WINDOW_S, levels=(0.0, 255.0)):
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
        self.window_s = float(window_s)
        self.times = np.sort(np.asarray(list(correction_times), np.float64))
        self.levels = (float(levels[0]), float(levels[1]))
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._prev_img = None
        self._t = None
        self._forward: tuple[float, np.ndarray] | None = None  # (time of its correction, carried mask)
        self._flows: deque = deque()  # (t, flow from the previous frame to the frame at t)
        self._waiting: deque = deque()  # [t, key, payload, forward (dt, mask) or None, backward or None]
        #: ``{key: seconds to the nearest correction that reached it}`` for the pairs released with a mask
        self.reach: dict = {}

    def _near_correction(self, t: float) -> bool:
        i = int(np.searchsorted(self.times, t))
        return any(0 <= j < len(self.times) and abs(t - self.times[j]) <= self.window_s + 1e-6 for j in (i - 1, i))

    def step(self, t: float, blurred: np.ndarray) -> list:
        """Advance to the frame at ``t``; returns the pairs now complete."""
        t = float(t)
        flow = None
        if self._near_correction(t):
            img = flow_image(blurred, *self.levels)
            if self._prev_img is not None:  # previous frame -> this one (DIS needs 12 pixels)
                flow = (self._dis.calc(self._prev_img, img, None) if max(img.shape) >= 12
                        else np.zeros((*img.shape, 2), np.float32))
            self._prev_img = img
        else:
            self._prev_img = None
        if self._forward is not None:
            t0, m = self._forward
            # pulled forwards along the reversed flow (one flow per step; accurate for small motions)
            self._forward = None if flow is None or t - t0 > self.window_s else (t0, carry(m, -flow))
        if flow is not None:
            self._flows.append((t, flow))
        while self._flows and t - self._flows[0][0] > self.window_s:
            self._flows.popleft()
        self._t = t
        return self._release(t)

    def pair(self, key, payload=None, *, correction: np.ndarray | None = None) -> None:
        """Register the frame just given to :meth:`step` as a pair (``correction``: its corrected mask)."""
        if self._t is None:
            raise RuntimeError("call step() with the pair's frame first")
        t = self._t
        forward = (t - self._forward[0], self._forward[1]) if self._forward is not None else None
        self._waiting.append([t, key, payload, forward, None])
        if correction is not None:
            correction = np.asarray(correction, np.float32)
            self._backfill(t, correction)
            self._forward = (t, correction)

    def finish(self) -> list:
        """Every pair still waiting, with what reached it (call after the last frame)."""
        return self._release(np.inf)

    def _backfill(self, t_corr: float, mask: np.ndarray) -> None:
        """Carry the correction at ``t_corr`` backwards to the waiting pairs within reach."""
        targets = sorted((w for w in self._waiting if w[0] < t_corr and w[4] is None
                          and t_corr - w[0] <= self.window_s), key=lambda w: -w[0])
        flows = list(self._flows)
        j = len(flows) - 1
        for w in targets:
            while j >= 0 and flows[j][0] > w[0] + 1e-9:  # undo the motion after the target's frame
                mask = carry(mask, flows[j][1])
                j -= 1
            w[4] = (t_corr - w[0], mask)

    def _release(self, now: float) -> list:
        out = []
        while self._waiting and now - self._waiting[0][0] > self.window_s:
            t, key, payload, forward, backward = self._waiting.popleft()
            parts = [(1.0 / (1.0 + dt / self.window_s), m) for dt, m in (forward or (0, None), backward or (0, None))
                     if m is not None and dt > 0]
            carried = None
            if parts:
                total = sum(a for a, _ in parts)
                carried = sum(a * m for a, m in parts) * np.float32(max(a for a, _ in parts) / total)
                near = min(dt for dt, m in (forward or (0, None), backward or (0, None)) if m is not None and dt > 0)
                self.reach[key] = float(near)
            out.append((key, payload, carried))
        return out


def blend(prob: np.ndarray, carried: np.ndarray | None, near_s: float | None, *, window_s: float = WINDOW_S,
          tau_s: float = BLEND_TAU_S) -> np.ndarray:
    """A pending pair's gas probability pulled towards the corrected masks carried to it.

    ``carried`` is what :class:`Carrier` releases (the closeness-weighted mean of the carried
    masks, times ``1 / (1 + near_s / window_s)``); it is brought back to [0, 1] and mixed in with
    the weight ``exp(-near_s / tau_s)``: a pair next to a correction mostly keeps the person's
    outline, moved by the flow, a pair a few ``tau_s`` away keeps the fusion's. The decay is a
    prior, not a fit: between sparse corrections no corrected pair is close enough to another to
    measure it on.

    >>> p = np.array([0.0, 0.5, 1.0], np.float32); c = np.array([1.0, 1.0, 0.0], np.float32) * 0.8
    >>> [round(float(v), 3) for v in blend(p, c, 0.5, window_s=2.0, tau_s=0.5)]   # weight exp(-1)
    [0.368, 0.684, 0.632]
    >>> blend(p, None, None).tolist() == p.tolist()
    True
    """
    prob = np.asarray(prob, np.float32)
    if carried is None or near_s is None or not tau_s > 0:
        return prob
    soft = np.clip(np.asarray(carried, np.float32) * np.float32(1.0 + near_s / window_s), 0.0, 1.0)
    lam = np.float32(np.exp(-float(near_s) / float(tau_s)))
    return (1 - lam) * prob + lam * soft


# ----------------------------------------------------------------------------------------------
# per-pixel features of a frame
# ----------------------------------------------------------------------------------------------
_DILATE9 = np.ones((9, 9), np.uint8)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


class FeatureState:
    """The state behind :data:`FEATURES`, updated on every frame of the stream.

    Call :meth:`update` after the subtractor's ``apply`` on every frame; :meth:`maps` gives the
    (H, W, F) features of the current frame. ``recent`` decays with a half-life of
    ``recent_half_life_s`` seconds (time-based, so it means the same at any frame rate).

    Parameters
    ----------
    recent_half_life_s : float
        Half-life of the recent maximum of ``|evidence|``.
    flicker_rate : float
        Per-frame rate of the flicker map (:class:`~gasdb_tools.background.ActivityMap`).
    """

    def __init__(self, *, recent_half_life_s: float = 0.25, flicker_rate: float = 0.1):
        if not recent_half_life_s > 0:
            raise ValueError(f"recent_half_life_s must be > 0, got {recent_half_life_s!r}")
        self.half_life = float(recent_half_life_s)
        self.activity = ActivityMap(rate=flicker_rate)
        self.recent = None
        self._t = None
        self._level = None  # (centre, scale) of the recording's background, fixed at the first frame

    def update(self, t: float, sub: GasSubtractor, blurred: np.ndarray) -> None:
        """Take in the frame at ``t`` (after ``sub.apply``)."""
        e = np.abs(sub.zscore())
        if self.recent is None:
            self.recent = e
        else:
            decay = np.float32(0.5 ** (max(float(t) - self._t, 0.0) / self.half_life))
            self.recent = np.maximum(e, self.recent * decay)
        self._t = float(t)
        self.activity.update(blurred)
        if self._level is None:
            bg = sub.background
            centre = float(np.median(bg[::4, ::4]))
            scale = 1.4826 * float(np.median(np.abs(bg[::4, ::4] - centre)))
            self._level = (centre, max(scale, 1.0))

    def maps(self, sub: GasSubtractor, blurred: np.ndarray, detected: np.ndarray) -> np.ndarray:
        """The (H, W, len(FEATURES) - 1) float32 features of the current frame, all but ``carried``
        (which comes later, from :class:`Carrier`); ``detected`` is the background model's mask."""
        e = sub.zscore()
        raw = (np.asarray(blurred, np.float32) - sub.background) * np.float32(1.0 / sub.sigma)
        centre, scale = self._level
        level = (sub.background - np.float32(centre)) * np.float32(1.0 / scale)
        out = []
        for signed in (e, -e):
            pos = np.maximum(signed, 0)
            s2 = _blur(pos, 2)
            out += [pos, _blur(pos, 1), s2, _blur(pos, 4), _blur(pos, 8), cv2.dilate(s2, _DILATE9)]
        pos_s2, neg_s2 = out[2], out[8]
        for signed in (raw, -raw):
            pos = np.maximum(signed, 0)
            out += [pos, _blur(pos, 2)]
        out += [level, _blur(level, 4), pos_s2 * level, neg_s2 * level]
        out += [self.recent, _blur(self.recent, 2), self.activity.state * np.float32(1.0 / sub.sigma)]
        edge = sub.edge_allowance()
        out.append(np.zeros_like(e) if edge is None else edge)
        detected = np.asarray(detected, np.float32)
        out += [detected, _blur(detected, 2)]
        return np.stack(out, axis=-1)


# ----------------------------------------------------------------------------------------------
# the logistic model
# ----------------------------------------------------------------------------------------------
class LogisticFusion:
    """L2-regularised logistic regression on standardised features, with an IoU-maximising threshold.

    Parameters
    ----------
    l2 : float
        Ridge penalty on the (standardised) weights, per sample weight unit.

    Attributes
    ----------
    mean, scale, coef, intercept, threshold
        Set by :meth:`fit`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 2)); y = x[:, 0] + 0.1 * rng.normal(size=2000) > 0.5
    >>> model = LogisticFusion().fit(x, y)
    >>> float((model.predict(x) == y).mean()) > 0.95
    True
    """

    def __init__(self, *, l2: float = 1e-3):
        if not l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}")
        self.l2 = float(l2)
        self.mean = self.scale = self.coef = None
        self.intercept = 0.0
        self.threshold = 0.5

    def fit(self, x, y, weight=None, *, iterations: int = 30) -> "LogisticFusion":
        """Fit on samples ``x`` (N, F), labels ``y`` (N,) of bool and optional sample weights."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, bool)
        w = np.ones(len(y)) if weight is None else np.asarray(weight, np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(w) != len(y):
            raise ValueError(f"x must be (N, F) with N = len(y) = len(weight); got {x.shape}, {y.shape}, {w.shape}")
        if not y.any() or y.all():
            raise ValueError("need both gas and background samples to fit")
        total = w.sum()
        self.mean = (w[:, None] * x).sum(0) / total
        self.scale = np.sqrt((w[:, None] * (x - self.mean) ** 2).sum(0) / total)
        self.scale[self.scale < 1e-9] = 1.0
        z = np.c_[(x - self.mean) / self.scale, np.ones(len(x))]
        beta = np.zeros(z.shape[1])
        penalty = np.full(z.shape[1], self.l2 * total)
        penalty[-1] = 0.0
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -30, 30)))
            grad = z.T @ (w * (p - y)) + penalty * beta
            hess = (z * (w * np.maximum(p * (1 - p), 1e-9))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            beta -= step
            if np.abs(step).max() < 1e-7:
                break
        self.coef, self.intercept = beta[:-1], float(beta[-1])
        self.threshold = self._best_threshold(self.proba(x), y, w)
        return self

    @staticmethod
    def _best_threshold(p, y, w) -> float:
        best, best_t = -1.0, 0.5
        for t in np.linspace(0.2, 0.8, 25):
            pred = p > t
            tp = float(w[pred & y].sum())
            union = float(w[pred | y].sum())
            iou = tp / union if union else 0.0
            if iou > best + 1e-12:
                best, best_t = iou, float(t)
        return best_t

    def proba(self, x) -> np.ndarray:
        """Probability of gas per sample (rows of ``x``; any leading shape with features last)."""
        x = np.asarray(x, np.float32)
        z = (x - self.mean.astype(np.float32)) / self.scale.astype(np.float32)
        s = z @ self.coef.astype(np.float32) + np.float32(self.intercept)
        return 1.0 / (1.0 + np.exp(-np.clip(s, -30, 30)))

    def predict(self, x) -> np.ndarray:
        """Gas (bool) per sample."""
        return self.proba(x) > self.threshold

    def partial(self, x) -> np.ndarray:
        """The logit without the last feature's term (``x`` lacks that column): see :meth:`complete`."""
        x = np.asarray(x, np.float32)
        z = (x - self.mean[:-1].astype(np.float32)) / self.scale[:-1].astype(np.float32)
        return z @ self.coef[:-1].astype(np.float32) + np.float32(self.intercept)

    def complete(self, partial: np.ndarray, last: np.ndarray | None) -> np.ndarray:
        """Probability of gas from :meth:`partial` and the last feature (None = 0)."""
        last = np.zeros_like(partial) if last is None else np.asarray(last, np.float32)
        s = partial + (last - np.float32(self.mean[-1])) * np.float32(self.coef[-1] / self.scale[-1])
        return 1.0 / (1.0 + np.exp(-np.clip(s, -30, 30)))

    def to_dict(self) -> dict:
        """The fitted model as JSON-ready numbers (its provenance)."""
        return {"features": list(FEATURES), "mean": [round(float(v), 6) for v in self.mean],
                "scale": [round(float(v), 6) for v in self.scale], "coef": [round(float(v), 6) for v in self.coef],
                "intercept": round(self.intercept, 6), "threshold": round(self.threshold, 4), "l2": self.l2}

    @classmethod
    def from_dict(cls, data) -> "LogisticFusion":
        model = cls(l2=float(data.get("l2", 1e-3)))
        model.mean = np.asarray(data["mean"], np.float64)
        model.scale = np.asarray(data["scale"], np.float64)
        model.coef = np.asarray(data["coef"], np.float64)
        model.intercept = float(data["intercept"])
        model.threshold = float(data["threshold"])
        return model
