"""Radial distortion of the thermal lens: one coefficient, estimated from the rig's frames or given.

Thermal lenses (short focal lengths, germanium optics) often show barrel distortion that a
homography cannot take out: straight edges bow, and the misalignment grows towards the corners.
The model here is the first radial term about the frame centre: an observed (distorted) thermal
pixel ``d`` comes from the undistorted position

    u = c + (d - c) (1 + k1 r^2),   r = |d - c| / R,

with ``c`` the frame centre and ``R`` half its diagonal (so ``r = 1`` at the corners and a corner
moves by ``k1 R`` px). ``k1 < 0`` is barrel distortion. A rig calibration with distortion maps
*undistorted* thermal px to RGB px: ``x_rgb = H u(d)``.

:func:`estimate_distortion` searches ``k1`` by registering the rig's frames with the thermal
frames undistorted, and keeps it only when the frames constrain it: the frames' edge correlation
must rise by more than two standard errors of the per-frame change (a paired comparison with
``k1 = 0``). It registers the frames once per candidate, so it is opt-in
(``gasdb calibrate --distortion estimate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gasdb_tools.registration.geometry import check_size

__all__ = ["RadialDistortion", "undistort_points", "distort_points", "undistort_thermal", "distortion_maps",
           "estimate_distortion", "DistortionEstimate"]


@dataclass(frozen=True)
class RadialDistortion:
    """One-coefficient radial distortion of a ``size = (width, height)`` thermal frame (module docstring)."""

    k1: float
    size: tuple

    def __post_init__(self):
        check_size(self.size, "size")
        if not np.isfinite(self.k1) or abs(self.k1) >= 0.5:
            raise ValueError(f"k1 must be a finite number with |k1| < 0.5, got {self.k1!r}")

    @property
    def centre(self) -> np.ndarray:
        w, h = self.size
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0])

    @property
    def radius(self) -> float:
        w, h = self.size
        return 0.5 * float(np.hypot(w - 1, h - 1))

    def to_dict(self) -> dict:
        """The calibration file's ``distortion`` entry."""
        return {"model": "radial", "k1": float(self.k1), "center": [float(v) for v in self.centre],
                "radius": self.radius}


def undistort_points(points, distortion: RadialDistortion) -> np.ndarray:
    """Observed (distorted) thermal px -> undistorted px, (N, 2) float64."""
    d = np.asarray(points, np.float64).reshape(-1, 2)
    c = distortion.centre
    r2 = (((d - c) / distortion.radius) ** 2).sum(axis=1, keepdims=True)
    return c + (d - c) * (1.0 + distortion.k1 * r2)


def distort_points(points, distortion: RadialDistortion, *, iterations: int = 8) -> np.ndarray:
    """Undistorted px -> observed (distorted) thermal px, (N, 2) float64 (fixed-point iteration)."""
    u = np.asarray(points, np.float64).reshape(-1, 2)
    c = distortion.centre
    d = u.copy()
    for _ in range(iterations):
        r2 = (((d - c) / distortion.radius) ** 2).sum(axis=1, keepdims=True)
        d = c + (u - c) / (1.0 + distortion.k1 * r2)
    return d


def distortion_maps(distortion: RadialDistortion, grid_to_undistorted=None, out_size=None):
    """``cv2.remap`` maps that sample the observed thermal frame at the distorted position of each output pixel.

    Without arguments the output is the undistorted frame on the thermal grid. ``grid_to_undistorted``
    (3x3) maps output px to undistorted thermal px (e.g. the inverse of a calibration matrix) for
    an output of ``out_size``.
    """
    w, h = out_size if out_size is not None else distortion.size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    if grid_to_undistorted is not None:
        m = np.asarray(grid_to_undistorted, np.float64)
        hom = pts @ m[:, :2].T + m[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            pts = hom[:, :2] / hom[:, 2:3]
    d = distort_points(pts, distortion)
    return d[:, 0].reshape(h, w).astype(np.float32), d[:, 1].reshape(h, w).astype(np.float32)


def undistort_thermal(thermal, distortion: RadialDistortion):
    """The thermal frame undistorted on its own grid, and its valid mask (pixels sampled from inside)."""
    thermal = np.asarray(thermal)
    h, w = thermal.shape[:2]
    if (w, h) != tuple(distortion.size):
        raise ValueError(f"the distortion is for {distortion.size[0]}x{distortion.size[1]} frames, got {w}x{h}")
    mx, my = distortion_maps(distortion)
    src = thermal.astype(np.float32) if thermal.dtype not in (np.uint8, np.uint16, np.float32) else thermal
    out = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return out.astype(thermal.dtype, copy=False), valid


@dataclass(frozen=True)
class DistortionEstimate:
    """The result of :func:`estimate_distortion`.

    Attributes
    ----------
    distortion : RadialDistortion or None
        The kept distortion (None when the frames do not constrain it).
    registration : RigRegistration
        The rig registration with the thermal frames undistorted by ``distortion`` (or as they are).
    k1_best : float
        The best coefficient found, kept or not.
    candidates : dict
        ``k1 -> mean edge correlation`` of every candidate tried.
    gain, gain_se : float
        Mean per-frame change of the edge correlation at ``k1_best`` against ``k1 = 0``, and its
        standard error.
    reason : str
    """

    distortion: RadialDistortion | None
    registration: object
    k1_best: float
    candidates: dict
    gain: float
    gain_se: float
    reason: str

    def to_dict(self) -> dict:
        return {"k1_best": round(self.k1_best, 6), "kept": self.distortion is not None,
                "candidates": {f"{k:+.4f}": round(v, 6) for k, v in sorted(self.candidates.items())},
                "gain": round(self.gain, 6), "gain_se": round(self.gain_se, 6), "reason": self.reason}


def estimate_distortion(pairs, *, k1_range: float = 0.12, steps: int = 7, **register_options) -> DistortionEstimate:
    """Estimate the thermal lens's ``k1`` jointly with the rig transform (module docstring).

    For each ``k1`` of ``steps`` values in ``[-k1_range, k1_range]`` (0 included) the thermal frames
    are undistorted and registered (:func:`gasdb_tools.registration.register_pairs` with
    ``register_options``); the mean edge correlation of the used frames at the result scores the
    candidate, a parabola through the best three refines it (registered once more), and the
    paired per-frame comparison with ``k1 = 0`` decides whether it is kept.
    """
    from gasdb_tools.registration.rig import register_pairs

    if steps < 3 or steps % 2 == 0:
        raise ValueError(f"steps must be an odd number >= 3, got {steps}")
    if not 0 < k1_range < 0.5:
        raise ValueError(f"k1_range must be in (0, 0.5), got {k1_range}")
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError("pairs is empty")
    h, w = np.asarray(pairs[0][1]).shape[:2]

    def run(k1):
        if k1 == 0:
            return register_pairs(pairs, **register_options)
        dist = RadialDistortion(float(k1), (w, h))
        undistorted = []
        for item in pairs:
            th, valid = undistort_thermal(item[1], dist)
            if len(item) == 3 and item[2] is not None:
                valid &= undistort_thermal(np.asarray(item[2], np.uint8) * 255, dist)[0] == 255
            undistorted.append((item[0], th, valid))
        return register_pairs(undistorted, **register_options)

    results = {}
    for k1 in np.linspace(-k1_range, k1_range, steps):
        k1 = round(float(k1), 6)
        results[k1] = run(k1)
    ks = sorted(results)
    scores = {k: results[k].score for k in ks}
    i = int(np.argmax([scores[k] for k in ks]))
    best = ks[i]
    if 0 < i < len(ks) - 1:
        y0, y1, y2 = (scores[ks[j]] for j in (i - 1, i, i + 1))
        den = y0 - 2 * y1 + y2
        if den < 0:
            refined = round(best + 0.5 * (y0 - y2) / den * (ks[1] - ks[0]), 6)
            if refined not in results:
                results[refined] = run(refined)
                scores[refined] = results[refined].score
            if scores[refined] > scores[best]:
                best = refined
    base, top = results[0.0], results[best]
    both = [(a.score_combined, b.score_combined) for a, b in zip(base.frames, top.frames)
            if a.used and b.used and np.isfinite(a.score_combined) and np.isfinite(b.score_combined)]
    diff = np.array([b - a for a, b in both])
    gain = float(diff.mean()) if diff.size else 0.0
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("inf")
    if best != 0.0 and diff.size >= 2 and gain > 2 * se:
        reason = (f"k1 = {best:+.4f} raises the frames' edge correlation by {gain:.4f} "
                  f"(+- {se:.4f} over {diff.size} frames)")
        return DistortionEstimate(RadialDistortion(best, (w, h)), top, best, scores, gain, se, reason)
    reason = (f"the frames do not constrain the distortion: the best k1 = {best:+.4f} changes the edge "
              f"correlation by {gain:+.4f} (+- {se:.4f} over {diff.size} frames), not more than two "
              "standard errors; k1 = 0 kept")
    return DistortionEstimate(None, base, best, scores, gain, se, reason)
