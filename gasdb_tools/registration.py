"""Targetless RGB-thermal registration: align the edges both cameras see.

A fixed two-camera rig without a heated calibration target can still be calibrated, because the
outlines of ordinary objects (buildings, poles, vehicles, the horizon) show in both modalities,
with unrelated intensities and often opposite polarity. This module estimates the transform that
maps **thermal pixel coordinates to RGB pixel coordinates** (a 3x3 float64 matrix) from such
edges, following HeatNet's idea of targetless calibration [1]_ and the measurements in
``docs/methods.md`` section B:

1. **Features** (:func:`edge_features`): Gaussian blur, gradient magnitude, divided by its 99th
   percentile, clipped to 1, square root: polarity-free and insensitive to the intensity mapping.
   The fine solver aligns two channels, that strength times the doubled-angle gradient direction
   (``f cos 2theta``, ``f sin 2theta``), so edges only match edges of the same direction.
2. **Coarse global search**: on a ~160 px pyramid level, a grid of rotations x scales around the
   nominal transform, the translation of each candidate by Hanning-windowed phase correlation
   [3]_ (smoothed peak, sub-pixel), scored by masked normalised cross-correlation (NCC); the best
   8 are re-checked one level finer, so start errors of tens of pixels and several degrees
   converge.
3. **Fine, coarse to fine**: forward-additive Lucas-Kanade [4]_ (Levenberg-Marquardt) on the
   feature pyramid maximising the enhanced correlation coefficient (ECC) [2]_ with valid-pixel masks on both sides (per channel the
   photometric gain and bias are solved in closed form and projected out of the Jacobian, so the
   least-squares cost is ``|t|^2 (1 - rho^2)``), with a line search along the Gauss-Newton step
   (large cross-modal residuals make plain Gauss-Newton under-step). Affine on the coarse levels,
   the requested model on the finest; a homography's perspective part gets a weak prior, scaled
   by the data's own residual, because cross-modal edges barely determine it.
4. **Many frames of one rig** (:func:`register_pairs`): per-frame estimates, the **median of the
   projected corners**, then a joint refinement of one transform over all frames (one gain and
   bias per frame), with per-frame and per-block residuals and a flag when they disagree
   (parallax, a camera that moved).

Measured (``benchmarks/bench_registration.py``): exact truth (the rig simulator, 640x512) 0.17 px
median corner error for single pairs, 0.2 px from 20 pairs; 40 real RoadScene pairs with random
known warps 2.4 px median, 6.4 px max (raw-intensity ECC: 23 px median); about 0.3 s per 640x512
pair on 2 shared cores.

Every function takes arrays and returns arrays or small immutable records; nothing here reads
files or prints. Problems with the data (a black or featureless frame, images of the wrong size,
a search that does not converge) raise :class:`gasdb_tools.errors.CalibrationError`, never a
silently wrong matrix.

References
----------
.. [1] J. Vertens, J. Zuern, W. Burgard, "HeatNet: Bridging the day-night domain gap in semantic
   segmentation with thermal images", IEEE/RSJ IROS 2020.
.. [2] G. D. Evangelidis, E. Z. Psarakis, "Parametric image alignment using enhanced correlation
   coefficient maximization", IEEE TPAMI 30(10):1858-1865, 2008.
   https://doi.org/10.1109/TPAMI.2008.113
.. [3] C. D. Kuglin, D. C. Hines, "The phase correlation image alignment method", Proc. IEEE
   Int. Conf. on Cybernetics and Society, 1975, pp. 163-165.
.. [4] S. Baker, I. Matthews, "Lucas-Kanade 20 years on: a unifying framework", IJCV 56(3):221-255,
   2004. https://doi.org/10.1023/B:VISI.0000011205.11775.fd
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np

from gasdb_tools.errors import CalibrationError

__all__ = [
    "MODELS",
    "FEATURES",
    "Registration",
    "FrameResidual",
    "RigRegistration",
    "register_pair",
    "register_pairs",
    "edge_features",
    "warp_thermal",
    "corner_error",
    "transform_points",
    "image_corners",
    "default_initial",
    "fit_model",
    "block_residuals",
    "feature_correlation",
]

#: Transform models, from the most constrained to the most general.
MODELS = ("translation", "similarity", "affine", "homography")
_NPARAMS = {"translation": 2, "similarity": 4, "affine": 6, "homography": 8}


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Registration:
    """The result of registering one RGB-thermal pair.

    Attributes
    ----------
    matrix : (3, 3) float64 ndarray
        Maps thermal pixel coordinates ``(x, y, 1)`` to RGB pixel coordinates (normalised so that
        ``matrix[2, 2] == 1``).
    model : str
        One of :data:`MODELS`.
    score : float
        Final ECC score: the normalised cross-correlation in [-1, 1] of the thermal edge features
        and the RGB edge features warped into the thermal frame, at full resolution, over the
        valid overlap. Good cross-modal alignments score about 0.3-0.8; unrelated images about 0.
    overlap : float
        Fraction of the thermal frame that lands inside the RGB frame.
    edge_density : (float, float)
        Fraction of (RGB, thermal) pixels with a clear edge (feature > 0.5).
    iterations : int
        Gauss-Newton iterations, all levels together.
    coarse_score : float
        NCC of the best coarse-search candidate (on the coarse level).
    """

    matrix: np.ndarray
    model: str
    score: float
    overlap: float
    edge_density: tuple
    iterations: int
    coarse_score: float

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Registration(model={self.model!r}, score={self.score:.3f}, overlap={self.overlap:.2f}, "
                f"matrix={np.array2string(self.matrix, precision=4, suppress_small=True)})")


@dataclass(frozen=True)
class FrameResidual:
    """QA of one frame pair against the combined rig transform.

    Attributes
    ----------
    index : int
        Position of the pair in the input sequence.
    used : bool
        Whether the frame took part in the combination.
    reason : str
        Why it was left out ('' when used).
    score : float
        ECC score of the frame at its own estimate (NaN when registration failed).
    score_combined : float
        ECC score of the frame at the combined transform (NaN when it could not be computed).
    corner_deviation : float
        Mean distance (thermal corners, RGB px) between the frame's own estimate and the combined
        transform (NaN when registration failed).
    block_shifts : (rows, cols, 2) float64 ndarray or None
        Local residual shift (dx, dy) in RGB px per block of the thermal frame at the combined
        transform, NaN where a block has too few edges.
    matrix : (3, 3) ndarray or None
        The frame's own estimate.
    """

    index: int
    used: bool
    reason: str
    score: float
    score_combined: float
    corner_deviation: float
    block_shifts: np.ndarray | None
    matrix: np.ndarray | None


@dataclass(frozen=True)
class RigRegistration:
    """One transform for a fixed rig, estimated from many frame pairs, with its residuals.

    Attributes
    ----------
    matrix : (3, 3) float64 ndarray
        Thermal pixel -> RGB pixel.
    model : str
        One of :data:`MODELS`.
    score : float
        Mean ECC score of the used frames at ``matrix``.
    frames : tuple of FrameResidual
        One per input pair, in input order.
    block_shifts : (rows, cols, 2) float64 ndarray
        Median over used frames of the per-block residual shifts (RGB px; NaN: no edges there).
    consistent : bool
        False when the residuals disagree (frames far from each other, or blocks with large
        residual shifts: parallax or a camera that moved between recordings); see ``warnings``.
    warnings : tuple of str
        Human-readable reasons behind ``consistent = False`` (and other remarks).
    refined : bool
        Whether the joint multi-frame refinement was applied.
    rgb_size, thermal_size : (int, int)
        (width, height) of the RGB and thermal frames.
    """

    matrix: np.ndarray
    model: str
    score: float
    frames: tuple
    block_shifts: np.ndarray
    consistent: bool
    warnings: tuple
    refined: bool
    rgb_size: tuple
    thermal_size: tuple

    @property
    def used(self) -> list[int]:
        """Indices of the frames that took part in the combination."""
        return [f.index for f in self.frames if f.used]

    def stats(self) -> dict:
        """Residual statistics as a JSON-ready dict (what a calibration file stores)."""
        used = [f for f in self.frames if f.used]
        dev = np.array([f.corner_deviation for f in used], np.float64)
        sc = np.array([f.score_combined for f in used], np.float64)
        mags = np.hypot(self.block_shifts[..., 0], self.block_shifts[..., 1])
        finite = mags[np.isfinite(mags)]

        def summary(values):
            values = values[np.isfinite(values)]
            if values.size == 0:
                return None
            return {"median": _r(np.median(values)), "p90": _r(np.percentile(values, 90)),
                    "max": _r(np.max(values)), "min": _r(np.min(values))}

        return {
            "frames_total": len(self.frames),
            "frames_used": len(used),
            "score_mean": _r(self.score),
            "score": summary(sc),
            "corner_deviation_px": summary(dev),
            "block_shift_px": [[[_r(v) if np.isfinite(v) else None for v in cell] for cell in row]
                               for row in self.block_shifts],
            "block_shift_max_px": _r(finite.max()) if finite.size else None,
            "consistent": bool(self.consistent),
            "warnings": list(self.warnings),
            "refined": bool(self.refined),
        }


def _r(value, ndigits=4):
    return None if value is None or not np.isfinite(value) else round(float(value), ndigits)


# ------------------------------------------------------------------------------------------------
# geometry helpers
# ------------------------------------------------------------------------------------------------
def image_corners(size) -> np.ndarray:
    """The four corner pixel centres of a ``(width, height)`` image, (4, 2) float64.

    Order: top-left, top-right, bottom-right, bottom-left; the bottom-right corner is
    ``(width - 1, height - 1)``.

    >>> image_corners((640, 512)).tolist()
    [[0.0, 0.0], [639.0, 0.0], [639.0, 511.0], [0.0, 511.0]]
    """
    w, h = _check_size(size, "size")
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def transform_points(matrix, points) -> np.ndarray:
    """Apply a 3x3 projective ``matrix`` to (N, 2) points; returns (N, 2) float64.

    >>> transform_points(np.diag([2.0, 3.0, 1.0]), [[1, 1], [2, 0]]).tolist()
    [[2.0, 3.0], [4.0, 0.0]]
    """
    m = _check_matrix(matrix)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    hom = pts @ m[:, :2].T + m[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return hom[:, :2] / hom[:, 2:3]


def corner_error(H_est, H_true, size, *, reduce: str = "mean"):
    """Corner error between two thermal->RGB transforms (the usual "MACE" metric).

    The four corner pixels of the thermal image (``size`` = its ``(width, height)``; see
    :func:`image_corners`) are mapped by both matrices, and the Euclidean distances (RGB px)
    between the two projections are reduced.

    Parameters
    ----------
    H_est, H_true : (3, 3) array_like
        Estimated and true thermal->RGB matrices.
    size : (int, int)
        (width, height) of the thermal image.
    reduce : {'mean', 'max', 'none'}
        ``mean`` (the mean corner error), ``max`` (the worst corner) or ``none`` (the 4 distances).

    Returns
    -------
    float or (4,) ndarray

    Examples
    --------
    >>> shift = np.array([[1, 0, 3], [0, 1, 4], [0, 0, 1]], float)
    >>> corner_error(shift, np.eye(3), (640, 512))
    5.0
    """
    if reduce not in ("mean", "max", "none"):
        raise ValueError(f"reduce must be 'mean', 'max' or 'none', got {reduce!r}")
    corners = image_corners(size)
    d = np.hypot(*(transform_points(H_est, corners) - transform_points(H_true, corners)).T)
    if reduce == "none":
        return d
    return float(d.mean() if reduce == "mean" else d.max())


def fit_model(src, dst, model: str) -> np.ndarray:
    """Least-squares transform of a model mapping ``src`` points onto ``dst`` points, as 3x3.

    With 4 points and ``model='homography'`` this is the exact 4-point homography.

    Parameters
    ----------
    src, dst : (N, 2) array_like
        Corresponding points (N >= 1 for translation, 2 for similarity, 3 for affine, 4 for
        homography).
    model : str
        One of :data:`MODELS`.

    Examples
    --------
    >>> src = [[0, 0], [10, 0], [10, 10], [0, 10]]
    >>> dst = [[1, 2], [11, 2], [11, 12], [1, 12]]
    >>> fit_model(src, dst, "translation").round(6).tolist()
    [[1.0, 0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]]
    """
    _check_model(model)
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst need the same shape, got {src.shape} and {dst.shape}")
    n = len(src)
    need = {"translation": 1, "similarity": 2, "affine": 3, "homography": 4}[model]
    if n < need:
        raise ValueError(f"a {model} needs at least {need} point pairs, got {n}")
    out = np.eye(3)
    if model == "translation":
        out[:2, 2] = (dst - src).mean(axis=0)
        return out
    if model == "homography":
        return _homography_dlt(src, dst)
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones(n), np.zeros(n)
    if model == "similarity":
        a = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
        p, *_ = np.linalg.lstsq(a, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
        out[:2] = [[p[0], -p[1], p[2]], [p[1], p[0], p[3]]]
        return out
    a = np.stack([x, y, one], 1)
    px, *_ = np.linalg.lstsq(a, dst[:, 0], rcond=None)
    py, *_ = np.linalg.lstsq(a, dst[:, 1], rcond=None)
    out[0], out[1] = px, py
    return out


def _homography_dlt(src, dst) -> np.ndarray:
    """Normalised DLT homography (Hartley), exact for 4 points in general position."""
    def norm(p):
        c = p.mean(axis=0)
        s = math.sqrt(2) / max(np.sqrt(((p - c) ** 2).sum(axis=1)).mean(), 1e-12)
        return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])

    ts, td = norm(src), norm(dst)
    s = src @ ts[:2, :2].T + ts[:2, 2]
    d = dst @ td[:2, :2].T + td[:2, 2]
    rows = []
    for (x, y), (u, v) in zip(s, d):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    h = vt[-1].reshape(3, 3)
    return _normalise(np.linalg.inv(td) @ h @ ts)


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    if not np.isfinite(m).all() or abs(m[2, 2]) < 1e-12:
        raise CalibrationError("degenerate transform (not finite or h33 = 0)",
                               fix="check the input frames; they may show no common structure")
    return m / m[2, 2]


def _project(matrix: np.ndarray, model: str, size) -> np.ndarray:
    """The closest ``model`` transform to ``matrix`` (least squares on a 5x5 grid of points)."""
    if model == "homography":
        return _normalise(matrix)
    w, h = size
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5))
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    return fit_model(pts, transform_points(matrix, pts), model)


def _scale(fx: float, fy: float | None = None) -> np.ndarray:
    return np.diag([fx, fx if fy is None else fy, 1.0])


def _resize_matrix(src_size, dst_size) -> np.ndarray:
    """Pixel-centre mapping of an image of ``src_size`` resized to ``dst_size`` (cv2.resize convention)."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


# ------------------------------------------------------------------------------------------------
# argument checks
# ------------------------------------------------------------------------------------------------
def _check_model(model) -> str:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return model


def _check_size(size, name) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be (width, height), got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"{name} must be positive (width, height), got {size!r}")
    return w, h


def _check_matrix(matrix, name="matrix") -> np.ndarray:
    m = np.asarray(matrix, np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0, 0, 1]])
    if m.shape != (3, 3):
        raise ValueError(f"{name} must be a 3x3 (or 2x3 affine) matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} has non-finite entries")
    return m


def _check_image(image, name) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        pass
    elif image.ndim != 2:
        raise ValueError(f"{name} must be an HxW or HxWx3 image array, got shape {image.shape}")
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"{name} must hold uint8, uint16 or float pixels, got {image.dtype}")
    if min(image.shape[:2]) < 32:
        raise ValueError(f"{name} is too small to register ({image.shape[1]}x{image.shape[0]}); "
                         "need at least 32 px on each side")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError(f"{name} has NaN or infinite pixels; replace them and pass a {name}_mask")
    return image


def _check_mask(mask, shape, name) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"{name} must have the image's shape {tuple(shape[:2])}, got {mask.shape}")
    return mask.astype(bool)


def _gray32(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        else:
            image = image[:, :, :3].astype(np.float32)
            return np.ascontiguousarray(image @ np.array([0.299, 0.587, 0.114], np.float32))
    return np.ascontiguousarray(image, dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------------
def edge_features(image, *, sigma: float = 1.5, mask=None, percentile: float = 99.0) -> np.ndarray:
    """Modality-independent edge map: blur, gradient magnitude, robust normalisation, sqrt.

    ``f = sqrt(min(|grad(G_sigma * I)| / p, 1))`` with ``p`` the ``percentile`` of the gradient
    magnitude over the valid pixels. The sign of an edge (bright-to-dark or the reverse) and the
    intensity mapping of the camera do not matter, which is what makes RGB and thermal edges
    comparable; the square root evens out strong and weak edges (methods.md B.1).

    Parameters
    ----------
    image : (H, W) or (H, W, 3) ndarray
        uint8, uint16 or float; colour is converted to luma first.
    sigma : float
        Gaussian blur (px) before the gradient.
    mask : (H, W) bool ndarray, optional
        Valid pixels. Features within ``2 sigma + 2`` px of an invalid pixel are set to 0, so a
        black border of a warped frame does not create edges.
    percentile : float
        Normalisation percentile.

    Returns
    -------
    (H, W) float32 ndarray in [0, 1]

    Raises
    ------
    CalibrationError
        When the image has no edges at all (black, constant, or flat over 99 % of its pixels).

    Examples
    --------
    >>> img = np.zeros((64, 64), np.uint8); img[16:48, 16:48] = 200
    >>> f = edge_features(img)
    >>> float(f.max()), float(f[32, 32])
    (1.0, 0.0)
    """
    image = _check_image(image, "image")
    mask = _check_mask(mask, image.shape, "mask")
    f, _ = _features(_gray32(image), sigma=sigma, mask=mask, percentile=percentile, name="image")
    return f


def _features(gray: np.ndarray, *, sigma: float, mask, percentile: float = 99.0, name: str = "image",
              orientation: bool = False):
    """(features, valid[, (cos 2theta, sin 2theta)]) of a float32 gray image.

    ``valid`` is the eroded mask (or None without a mask). With ``orientation`` the doubled-angle
    unit vector of the gradient direction is returned too (polarity-free: theta and theta + pi
    give the same vector).
    """
    if sigma > 0:
        blurred = cv2.GaussianBlur(gray, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    else:
        blurred = gray
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    mag = cv2.magnitude(gx, gy)
    valid = None
    if mask is not None:
        r = int(math.ceil(2 * sigma)) + 2
        valid = cv2.erode(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8),
                          borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)
        mag[~valid] = 0
        values = mag[valid]
    else:
        values = mag.ravel()
    if values.size < 64:
        raise CalibrationError(f"the {name} has too few valid pixels to register",
                               fix="pass a larger image or a less restrictive mask")
    p = float(np.percentile(values, percentile))
    if not p > 1e-6 * max(float(np.abs(gray).max()), 1.0):
        raise CalibrationError(f"the {name} is featureless (black, constant, or without edges on "
                               f"{100 - percentile:.0f} % of its pixels)",
                               fix="pick frames that show structure (buildings, poles, horizon) in both cameras")
    f = np.sqrt(np.minimum(mag * np.float32(1.0 / p), np.float32(1.0)))
    if not orientation:
        return f, valid
    inv = 1.0 / np.maximum(mag * mag, np.float32(1e-20))
    cos2 = (gx * gx - gy * gy) * inv
    sin2 = (2 * gx * gy) * inv
    return f, valid, (cos2, sin2)


# ------------------------------------------------------------------------------------------------
# pyramids
# ------------------------------------------------------------------------------------------------
@dataclass
class _Level:
    """One pyramid level of one image: edge features, the solver's channels, valid mask."""

    scale: float  # level px = scale * full-res px (pyrDown: exact, no half-pixel offset)
    feat: np.ndarray  # edge magnitude features (coarse search, scores, QA)
    valid: np.ndarray  # bool, eroded valid region of the features
    channels: list = field(default_factory=list)  # what the solver aligns
    _grads: list | None = None

    @property
    def size(self):
        return self.feat.shape[1], self.feat.shape[0]

    def grads(self) -> list:
        """Central-difference gradients (gx, gy) of every channel, computed once."""
        if self._grads is None:
            self._grads = [(cv2.Sobel(c, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT),
                            cv2.Sobel(c, cv2.CV_32F, 0, 1, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT))
                           for c in self.channels]
        return self._grads


#: Feature kinds the solver can align.
FEATURES = ("orientation", "magnitude")


def _pyramid(gray: np.ndarray, mask, *, levels: int, sigma: float, name: str,
             features: str = "orientation") -> list[_Level]:
    """Feature pyramid (level 0 = full resolution) of a float32 gray image.

    ``features='orientation'`` gives the solver two channels, ``f cos 2theta`` and ``f sin 2theta``
    (edge strength times the doubled-angle edge direction): edges only match edges of the same
    direction, which makes the cost sharper than with the magnitude ``f`` alone.
    """
    out = []
    img = gray
    m = mask
    for lev in range(levels):
        if lev > 0:
            img = cv2.pyrDown(img)
            if m is not None:
                m = cv2.resize(m.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        s = sigma if lev == 0 else max(1.0, sigma * 0.75)
        if features == "orientation":
            f, valid, (c2, s2) = _features(img, sigma=s, mask=m, name=name, orientation=True)
            channels = [np.ascontiguousarray(f * c2), np.ascontiguousarray(f * s2)]
        else:
            f, valid = _features(img, sigma=s, mask=m, name=name)
            channels = [f]
        if valid is None:
            valid = np.ones(f.shape, bool)
        out.append(_Level(scale=0.5 ** lev, feat=f, valid=valid, channels=channels))
    return out


def _n_levels(size, min_side: int) -> int:
    n = 1
    w, h = size
    while min(w, h) / 2 ** n >= min_side:
        n += 1
    return n


# ------------------------------------------------------------------------------------------------
# correlation helpers
# ------------------------------------------------------------------------------------------------
def _ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    n = int(valid.sum())
    if n < 32:
        return -1.0
    x = a[valid].astype(np.float64)
    y = b[valid].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else 0.0


def _warp_to(level_img: _Level, matrix_level: np.ndarray, size):
    """Sample level_img's features at matrix_level(x) for every pixel x of a ``size`` grid."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(level_img.feat, matrix_level, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.warpPerspective(level_img.valid.astype(np.uint8) * 255, matrix_level, size, flags=flags,
                                borderMode=cv2.BORDER_CONSTANT) == 255
    return warped, valid


def _level_matrix(matrix, th: _Level, rgb: _Level) -> np.ndarray:
    """Full-resolution thermal->RGB matrix expressed between two pyramid levels."""
    return _scale(rgb.scale) @ matrix @ _scale(1.0 / th.scale)


def feature_correlation(rgb, thermal, matrix, *, sigma: float = 1.5, rgb_mask=None, thermal_mask=None) -> float:
    """ECC score of a transform: NCC of thermal edge features and warped RGB edge features.

    Parameters
    ----------
    rgb, thermal : ndarray
        The two frames (any size; colour becomes luma).
    matrix : (3, 3) array_like
        Thermal -> RGB pixel transform.
    sigma : float
        Feature blur (see :func:`edge_features`).
    rgb_mask, thermal_mask : bool ndarray, optional
        Valid pixels.

    Returns
    -------
    float in [-1, 1]
    """
    rgb = _check_image(rgb, "rgb")
    thermal = _check_image(thermal, "thermal")
    m = _check_matrix(matrix)
    r = _pyramid(_gray32(rgb), _check_mask(rgb_mask, rgb.shape, "rgb_mask"), levels=1, sigma=sigma, name="rgb")[0]
    t = _pyramid(_gray32(thermal), _check_mask(thermal_mask, thermal.shape, "thermal_mask"), levels=1,
                 sigma=sigma, name="thermal")[0]
    warped, valid = _warp_to(r, m, t.size)
    return _ncc(t.feat, warped, valid & t.valid)


# ------------------------------------------------------------------------------------------------
# coarse global search
# ------------------------------------------------------------------------------------------------
def _similarity_grid(initial: np.ndarray, th_size, *, max_rotation: float, max_scale: float,
                     rotation_step: float, scale_step: float) -> list[np.ndarray]:
    """Candidates ``initial @ S`` for S a grid of rotations x scales about the thermal frame centre."""
    w, h = th_size
    c = np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1.0]])
    c_inv = np.linalg.inv(c)
    n_rot = int(round(max_rotation / rotation_step)) if rotation_step > 0 else 0
    n_sc = int(round(max_scale / scale_step)) if scale_step > 0 else 0
    out = []
    for s in 1.0 + np.arange(-n_sc, n_sc + 1) * scale_step:
        for a in np.deg2rad(np.arange(-n_rot, n_rot + 1) * rotation_step):
            rot = np.array([[s * math.cos(a), -s * math.sin(a), 0], [s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]])
            out.append(initial @ c @ rot @ c_inv)
    return out


def _phase_shift(templates, images, valid, window) -> tuple[float, float]:
    """Translation d with ``images(x) ~ templates(x - d)`` by phase correlation over channels.

    The cross-power spectra of all channels are summed and whitened [3]_; the correlation surface
    is smoothed a little (sigma 0.7 px) before the peak is taken, which is more robust than the raw
    peak on cross-modal edge maps, and refined to sub-pixel by a parabola through the neighbours.
    """
    h, w = valid.shape
    cross = None
    for t, i in zip(templates, images):
        a = np.where(valid, t - t[valid].mean(), 0).astype(np.float32) * window
        b = np.where(valid, i - i[valid].mean(), 0).astype(np.float32) * window
        c = np.fft.rfft2(b) * np.conj(np.fft.rfft2(a))
        cross = c if cross is None else cross + c
    cross /= np.abs(cross) + 1e-12
    surf = np.fft.fftshift(np.fft.irfft2(cross, s=(h, w))).astype(np.float32)
    surf = cv2.GaussianBlur(surf, (0, 0), 0.7)
    iy, ix = np.unravel_index(int(np.argmax(surf)), surf.shape)

    def vertex(lo, mid, hi):
        den = lo - 2 * mid + hi
        return 0.5 * (lo - hi) / den if den < 0 else 0.0

    dx = ix + (vertex(surf[iy, ix - 1], surf[iy, ix], surf[iy, ix + 1]) if 0 < ix < w - 1 else 0.0)
    dy = iy + (vertex(surf[iy - 1, ix], surf[iy, ix], surf[iy + 1, ix]) if 0 < iy < h - 1 else 0.0)
    return float(dx - w // 2), float(dy - h // 2)


def _ncc_channels(templates, images, valid) -> float:
    """NCC of several channels at once (covariances and variances summed over channels).

    Masked sums by dot products over the flattened arrays: no copies of the valid pixels.
    """
    m = valid.reshape(-1).astype(np.float32)
    n = float(m.sum())
    if n < 32:
        return -1.0
    num = den_t = den_i = 0.0
    for t, i in zip(templates, images):
        t = t.reshape(-1)
        i = i.reshape(-1)
        mi = m * i
        st, si = float(m @ t), float(mi.sum())
        num += float(mi @ t) - st * si / n
        den_t += float(m @ (t * t)) - st * st / n
        den_i += float(mi @ i) - si * si / n
    den = math.sqrt(max(den_t, 0.0) * max(den_i, 0.0))
    return num / den if den > 0 else 0.0


def _phase_candidates(th: _Level, rgb: _Level, candidates, *, keep_unshifted: int = 0,
                      orientation: bool = False):
    """Translation of each candidate by phase correlation on one pyramid level, scored by NCC.

    ``candidates`` are full-resolution thermal->RGB matrices; the first ``keep_unshifted`` of them
    are also scored as they are (in case phase correlation fails). With ``orientation`` the
    solver's channels (edge direction) are used, else the edge magnitude. Returns (ncc,
    full-resolution matrix) pairs, best first.
    """
    w, h = th.size
    t_ch = th.channels if orientation else [th.feat]
    r_ch = rgb.channels if orientation else [rgb.feat]
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    back, to = _scale(1.0 / rgb.scale), _scale(th.scale)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    r_valid = rgb.valid.astype(np.uint8) * 255

    def warp(m):
        ims = [cv2.warpPerspective(c, m, (w, h), flags=flags) for c in r_ch]
        return ims, (cv2.warpPerspective(r_valid, m, (w, h), flags=flags) == 255) & th.valid

    results = []
    for k, full in enumerate(candidates):
        cand = _level_matrix(full, th, rgb)
        ims, valid = warp(cand)
        if valid.sum() < 0.2 * w * h:
            continue
        dx, dy = _phase_shift(t_ch, ims, valid, window)
        # images(x) ~ templates(x - d), so templates(x) ~ warped(x + d)
        shifted = cand @ np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])
        ims2, valid2 = warp(shifted)
        results.append((_ncc_channels(t_ch, ims2, valid2), back @ shifted @ to))
        if k < keep_unshifted:
            results.append((_ncc_channels(t_ch, ims, valid), full))
    results.sort(key=lambda r: -r[0])
    return results


# ------------------------------------------------------------------------------------------------
# Gauss-Newton ECC on feature images
# ------------------------------------------------------------------------------------------------
class _Frame:
    """One frame pair on one pyramid level, ready for the solver: a sample grid of the thermal level.

    The grid is regular (every ``stride``-th pixel, so at most ``max_pixels`` samples) and 2-D,
    because ``cv2.remap`` needs 2-D maps shorter than 32767 px per side.
    """

    def __init__(self, th: _Level, rgb: _Level, max_pixels: int):
        w, h = th.size
        stride = max(1, int(math.ceil(math.sqrt(w * h / max_pixels) - 1e-9)))
        self.stride = stride
        ys, xs = np.mgrid[0:h:stride, 0:w:stride].astype(np.float32)
        self.nt, self.nr = _norm_matrices(th.size, rgb.size)
        self.xn = xs * np.float32(self.nt[0, 0]) + np.float32(self.nt[0, 2])
        self.yn = ys * np.float32(self.nt[1, 1]) + np.float32(self.nt[1, 2])
        self.tvalid = th.valid[::stride, ::stride]
        self.t = [np.ascontiguousarray(c[::stride, ::stride]) for c in th.channels]
        self.th, self.rgb = th, rgb
        self.grads = rgb.grads()
        self.rgb_valid = None if rgb.valid.all() else rgb.valid.astype(np.float32)
        rw, rh = rgb.size
        self.limits = (np.float32(rw - 1), np.float32(rh - 1))


def _norm_matrices(th_size, rgb_size):
    """Coordinate normalisations of both frames: centre each, divide both by half the thermal long side.

    One common scale keeps every model's structure (a translation stays a translation).
    """
    s = max(th_size) / 2.0

    def n(size):
        w, h = size
        return np.array([[1 / s, 0, -(w - 1) / 2 / s], [0, 1 / s, -(h - 1) / 2 / s], [0, 0, 1.0]])
    return n(th_size), n(rgb_size)


def _params_to_matrix(p: np.ndarray, model: str) -> np.ndarray:
    m = np.eye(3)
    if model == "translation":
        m[0, 2], m[1, 2] = p
    elif model == "similarity":
        a, b, tx, ty = p
        m[:2] = [[a, -b, tx], [b, a, ty]]
    elif model == "affine":
        m[:2] = p.reshape(2, 3)
    else:
        m.flat[:8] = p
    return m


def _matrix_to_params(m: np.ndarray, model: str) -> np.ndarray:
    m = m / m[2, 2]
    if model == "translation":
        return np.array([m[0, 2], m[1, 2]])
    if model == "similarity":
        return np.array([(m[0, 0] + m[1, 1]) / 2, (m[1, 0] - m[0, 1]) / 2, m[0, 2], m[1, 2]])
    if model == "affine":
        return m[:2].ravel().copy()
    return m.flat[:8].copy()


def _evaluate(frames: Sequence[_Frame], hns, model: str, *, jacobian: bool = True):
    """ECC cost and Gauss-Newton normal equations over frames and channels.

    ``hns[k]`` is frame k's transform between normalised thermal and normalised RGB coordinates.
    For each channel the photometric gain ``a`` and bias ``b`` of ``t ~ a i + b`` are solved in
    closed form, so the residual sum of squares is ``|t - mean t|^2 (1 - rho^2)``; the Jacobian is
    projected orthogonal to ``[1, i]`` (variable projection), which makes the step the
    Gauss-Newton step of the correlation itself, as in ECC [2]_.

    Returns (cost, per-frame mean rho, JtJ, Jtr, per-frame (valid samples x stride^2)); without
    ``jacobian`` JtJ and Jtr stay zero (a cheaper cost-only evaluation for the line search).
    """
    k_params = _NPARAMS[model]
    jtj = np.zeros((k_params, k_params))
    jtr = np.zeros(k_params)
    cost = 0.0
    rhos, counts = [], []
    for fr, hn in zip(frames, hns):
        h = hn.astype(np.float32)
        xn, yn = fr.xn, fr.yn
        if model == "homography":
            d = h[2, 0] * xn + h[2, 1] * yn + h[2, 2]
            inv_d = np.float32(1.0) / d
            xpn = (h[0, 0] * xn + h[0, 1] * yn + h[0, 2]) * inv_d
            ypn = (h[1, 0] * xn + h[1, 1] * yn + h[1, 2]) * inv_d
        else:
            xpn = h[0, 0] * xn + h[0, 1] * yn + h[0, 2]
            ypn = h[1, 0] * xn + h[1, 1] * yn + h[1, 2]
        sr = np.float32(1.0 / fr.nr[0, 0])
        xp = (xpn - np.float32(fr.nr[0, 2])) * sr
        yp = (ypn - np.float32(fr.nr[1, 2])) * sr
        lim_x, lim_y = fr.limits
        ok = fr.tvalid & (xp >= 0) & (xp <= lim_x) & (yp >= 0) & (yp <= lim_y)
        if model == "homography":
            ok &= d > 0
        if fr.rgb_valid is not None:
            ok &= cv2.remap(fr.rgb_valid, xp, yp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) > 0.999
        n = int(np.count_nonzero(ok))
        counts.append(n * fr.stride ** 2)
        if n < 64:
            rhos.append(-1.0)
            cost += len(fr.t)
            continue
        x, y = xn[ok], yn[ok]
        dx = dy = None
        # geometric Jacobian: d(x', y') (normalised rgb) / d params, shared by all channels
        if not jacobian:
            pass
        elif model == "translation":
            dx = np.zeros((n, 2), np.float32)
            dx[:, 0] = 1
            dy = np.zeros((n, 2), np.float32)
            dy[:, 1] = 1
        elif model == "similarity":
            one, zero = np.ones(n, np.float32), np.zeros(n, np.float32)
            dx = np.stack([x, -y, one, zero], 1)
            dy = np.stack([y, x, zero, one], 1)
        elif model == "affine":
            one, zero = np.ones(n, np.float32), np.zeros(n, np.float32)
            dx = np.stack([x, y, one, zero, zero, zero], 1)
            dy = np.stack([zero, zero, zero, x, y, one], 1)
        else:
            idv = inv_d[ok]
            xq, yq = xpn[ok], ypn[ok]
            zero = np.zeros(n, np.float32)
            xi, yi = x * idv, y * idv
            dx = np.stack([xi, yi, idv, zero, zero, zero, -xi * xq, -yi * xq], 1)
            dy = np.stack([zero, zero, zero, xi, yi, idv, -xi * yq, -yi * yq], 1)
        rho_sum = 0.0
        for t_full, chan, (gxi, gyi) in zip(fr.t, fr.rgb.channels, fr.grads):
            i = cv2.remap(chan, xp, yp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[ok]
            t = t_full[ok]
            im, tm = float(i.mean(dtype=np.float64)), float(t.mean(dtype=np.float64))
            ic = i - np.float32(im)
            tc = t - np.float32(tm)
            vii, vtt, vit = float(ic @ ic), float(tc @ tc), float(ic @ tc)
            if vii <= 1e-12 or vtt <= 1e-12:
                cost += 1.0
                continue
            rho = vit / math.sqrt(vii * vtt)
            rho_sum += rho
            cost += (1.0 - rho * rho) * vtt / n
            if not jacobian:
                continue
            a = vit / vii  # photometric gain of t ~ a * i + b
            r = np.float32(a) * ic - tc
            g = np.float32(a) * sr
            gx = cv2.remap(gxi, xp, yp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[ok] * g
            gy = cv2.remap(gyi, xp, yp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[ok] * g
            jac = gx[:, None] * dx + gy[:, None] * dy
            jac -= jac.mean(axis=0)
            jac -= np.outer(ic, (ic @ jac) / np.float32(vii))
            jtj += (jac.T @ jac).astype(np.float64) / n
            jtr += (jac.T @ r).astype(np.float64) / n
        rhos.append(rho_sum / len(fr.t))
    return cost, rhos, jtj, jtr, counts


#: Level px^2 over which residuals of edge maps are taken as correlated (for the perspective prior).
_CORRELATION_AREA = 400.0


def _solve_level(frames: Sequence[_Frame], matrix: np.ndarray, model: str, *, max_iter: int, eps_px: float,
                 max_corner_move: float, perspective_prior: float | None = None):
    """Levenberg-Marquardt on the summed ECC cost of ``frames`` for one shared full-resolution matrix.

    Each frame carries its own pyramid level (all of one size). With ``perspective_prior`` (px)
    and a homography, the perspective part gets a Gaussian prior: moving the corners by
    ``perspective_prior`` px out of the affine costs as much as one standard deviation of the
    data term (see :func:`register_pair`). Returns (matrix, per-frame rho, iterations).
    """
    fr0 = frames[0]
    nt, nr = fr0.nt, fr0.nr
    full_size = _full_size(fr0.th)
    matrix = _project(matrix, model, full_size)
    to_full = _scale(1.0 / fr0.rgb.scale) @ np.linalg.inv(nr)
    from_full = nt @ _scale(fr0.th.scale)
    p = _matrix_to_params(_normalise(np.linalg.inv(to_full) @ matrix @ np.linalg.inv(from_full)), model)

    def full(pp):
        return _normalise(to_full @ _params_to_matrix(pp, model) @ from_full)

    corners_full = image_corners(full_size)
    corners_n = transform_points(from_full, corners_full)
    start_corners = transform_points(matrix, corners_full)
    prior_idx = slice(6, 8)
    cost, rhos, jtj, jtr, counts = _evaluate(frames, [_params_to_matrix(p, model)] * len(frames), model)
    weight = 0.0
    if perspective_prior and model == "homography":
        # MAP with a Gaussian prior on the corner displacement q (full-resolution px) that the
        # perspective part adds: minimise sum(cost) + sigma^2 / (n_eff prior^2) |q|^2, where sigma^2 is
        # the mean squared residual per frame and channel and n_eff the number of independent samples
        # per frame: residuals of cross-modal edge maps are correlated along whole edge segments,
        # taken as _CORRELATION_AREA level px each.
        n_eff = max(sum(counts) / len(frames) / _CORRELATION_AREA, 1.0)
        px_per_unit = max(full_size) / 2.0
        sigma2 = cost / max(sum(len(fr.t) for fr in frames), 1)
        weight = sigma2 / (n_eff * perspective_prior ** 2) * px_per_unit ** 2

    def prior(pp):
        return weight * float(pp[prior_idx] @ pp[prior_idx]) if weight else 0.0

    def add_prior(jtj_, jtr_, pp):
        if weight:
            jtj_ = jtj_.copy()
            jtr_ = jtr_.copy()
            jtj_[prior_idx, prior_idx] += weight * np.eye(2)
            jtr_[prior_idx] += weight * pp[prior_idx]
        return jtj_, jtr_

    total = cost + prior(p)
    lam = 1e-4
    iters = 0
    for iters in range(1, max_iter + 1):
        a_mat, b_vec = add_prior(jtj, jtr, p)
        diag = np.diag(a_mat).copy()
        diag[diag <= 0] = 1e-12
        try:
            step = np.linalg.solve(a_mat + lam * np.diag(diag), -b_vec)
        except np.linalg.LinAlgError:
            break
        # Gauss-Newton under-steps when the residual stays large (cross-modal data never matches
        # exactly), so try multiples of the step along its line and keep the best (cost only)
        best_alpha, best_total = None, total
        for alpha in (1.0, 2.0, 4.0, 8.0):
            p_try = p + alpha * step
            try:
                moved = np.abs(transform_points(full(p_try), corners_full) - start_corners).max()
            except CalibrationError:
                break
            if not np.isfinite(moved) or moved > max_corner_move:
                break
            c_try = _evaluate(frames, [_params_to_matrix(p_try, model)] * len(frames), model, jacobian=False)[0]
            t_try = c_try + prior(p_try)
            if t_try < best_total:
                best_alpha, best_total = alpha, t_try
            else:
                break
        if best_alpha is None:
            lam *= 10
            if lam > 1e6:
                break
            continue
        p_new = p + best_alpha * step
        # how far this step moves the corners, in level px
        delta = np.abs(transform_points(_params_to_matrix(p_new, model), corners_n)
                       - transform_points(_params_to_matrix(p, model), corners_n)).max() / nr[0, 0]
        p = p_new
        cost, rhos, jtj, jtr, _ = _evaluate(frames, [_params_to_matrix(p, model)] * len(frames), model)
        total = cost + prior(p)
        lam = max(lam / 10, 1e-7)
        if delta < eps_px:
            break
    return full(p), rhos, iters


def _full_size(level: _Level):
    w, h = level.size
    return int(round(w / level.scale)), int(round(h / level.scale))


# ------------------------------------------------------------------------------------------------
# public: one pair
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    """The knobs of :func:`register_pair` (see its docstring), checked once."""

    model: str = "homography"
    search: bool = True
    max_rotation: float = 4.0
    max_scale: float = 0.06
    rotation_step: float = 1.0
    scale_step: float = 0.02
    sigma: float = 1.5
    features: str = "orientation"
    perspective_prior: float | None = 2.0
    min_score: float = 0.15
    min_overlap: float = 0.3
    max_pixels: int = 40_000
    max_iter: int = 30
    min_side: int = 40

    def __post_init__(self):
        _check_model(self.model)
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        for name in ("max_rotation", "max_scale", "rotation_step", "scale_step"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma!r}")
        if self.perspective_prior is not None and not self.perspective_prior > 0:
            raise ValueError(f"perspective_prior must be > 0 px or None, got {self.perspective_prior!r}")
        if self.max_pixels < 1000 or self.max_iter < 1 or self.min_side < 16:
            raise ValueError("need max_pixels >= 1000, max_iter >= 1 and min_side >= 16")


@dataclass
class _Prepared:
    rgb_levels: list
    th_levels: list
    rgb_size: tuple
    thermal_size: tuple
    prescale: np.ndarray  # original rgb px -> working rgb px


def _prepare(rgb, thermal, opts: _Options, *, rgb_mask=None, thermal_mask=None) -> _Prepared:
    rgb = _check_image(rgb, "rgb")
    thermal = _check_image(thermal, "thermal")
    rgb_mask = _check_mask(rgb_mask, rgb.shape, "rgb_mask")
    thermal_mask = _check_mask(thermal_mask, thermal.shape, "thermal_mask")
    rgb_size = (rgb.shape[1], rgb.shape[0])
    th_size = (thermal.shape[1], thermal.shape[0])
    g_rgb = _gray32(rgb)
    prescale = np.eye(3)
    ratio = max(rgb_size[0] / th_size[0], rgb_size[1] / th_size[1])
    if ratio > 1.5:  # a much larger RGB frame: bring it to about the thermal resolution first
        if opts.model == "translation":
            raise ValueError(f"model='translation' needs frames of about one resolution, got RGB "
                             f"{rgb_size[0]}x{rgb_size[1]} and thermal {th_size[0]}x{th_size[1]}; "
                             "use model='similarity' or larger")
        k = int(round(ratio))
        new = (rgb_size[0] // k, rgb_size[1] // k)  # crop to a multiple of k: an exact, isotropic k-fold mean
        g_rgb = cv2.resize(g_rgb[:new[1] * k, :new[0] * k], new, interpolation=cv2.INTER_AREA)
        if rgb_mask is not None:
            rgb_mask = cv2.resize(rgb_mask[:new[1] * k, :new[0] * k].astype(np.uint8), new,
                                  interpolation=cv2.INTER_NEAREST) > 0
        prescale = _resize_matrix((new[0] * k, new[1] * k), new)
    levels = min(_n_levels(th_size, opts.min_side), 6)
    th_levels = _pyramid(_gray32(thermal), thermal_mask, levels=levels, sigma=opts.sigma, name="thermal frame",
                         features=opts.features)
    rgb_levels = _pyramid(g_rgb, rgb_mask, levels=levels, sigma=opts.sigma, name="RGB frame",
                          features=opts.features)
    return _Prepared(rgb_levels, th_levels, rgb_size, th_size, prescale)


def default_initial(rgb_size, th_size) -> np.ndarray:
    """Nominal thermal -> RGB transform when nothing is known: both cameras see the same field of view.

    The thermal frame (``th_size`` = (width, height)) scaled onto the RGB frame (``rgb_size``),
    pixel centres on pixel centres (the ``cv2.resize`` convention).

    >>> default_initial((640, 512), (320, 256)).tolist()
    [[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]]
    """
    return _resize_matrix(th_size, rgb_size)


def _edge_density(level: _Level) -> float:
    v = level.valid
    return float((level.feat[v] > 0.5).mean()) if v.any() else 0.0


def _schedule(model: str, lev: int) -> str:
    """Model used on pyramid level ``lev`` (0 = finest) when the final model is ``model``.

    A homography is estimated on the finest level only, from an affine fitted on the coarser
    ones: its perspective part is weakly determined by cross-modal edges, so it must not steer
    the coarse levels.
    """
    if model == "homography" and lev > 0:
        return "affine"
    return model


def register_pair(rgb, thermal, *, model: str = "homography", initial=None, rgb_mask=None, thermal_mask=None,
                  **options) -> Registration:
    """Register one RGB-thermal pair: the matrix mapping thermal pixels onto RGB pixels.

    Edge features of both frames (methods.md B.1) are aligned in three steps:

    1. a coarse global search around ``initial``: a grid of rotations x scales, the translation of
       each candidate by Hanning-windowed phase correlation [3]_ on a ~160 px pyramid level,
       scored by NCC; the best 8 are checked one level finer and the best 3 kept;
    2. each of the 3 refined on that level by Levenberg-Marquardt maximisation of the enhanced
       correlation coefficient [2]_ (affine), the best kept;
    3. coarse to fine down to full resolution, the requested model on the finest level.

    The solver aligns **edge-direction features** (``features='orientation'``): the edge
    strength ``f`` of :func:`edge_features` times the doubled-angle direction of the gradient
    (``f cos 2theta``, ``f sin 2theta``), polarity-free like ``f`` but matching edges only to edges
    of the same direction. With a homography, a weak Gaussian prior on its perspective part
    (``perspective_prior`` px at the corners, scaled by the data's own residual) keeps the
    weakly-determined perspective terms from drifting on cross-modal data, while clean data
    overrides it.

    Parameters
    ----------
    rgb : (H, W, 3) or (H, W) ndarray
        The RGB frame (uint8, uint16 or float; colour becomes luma).
    thermal : (h, w) ndarray
        The thermal frame, any bit depth.
    model : {'translation', 'similarity', 'affine', 'homography'}
        Transform model of the result.
    initial : (3, 3) array_like, optional
        Approximate thermal->RGB transform to start from. Default: both cameras see the same
        field of view (the thermal frame stretched onto the RGB frame). Pass one when the fields
        of view differ by more than the coarse grid covers (e.g. frames of different aspect ratio).
    rgb_mask, thermal_mask : (H, W) bool ndarray, optional
        Valid pixels of each frame (e.g. not the black border of a warped frame).
    **options
        Keyword-only knobs, with defaults:

        ``search=True``
            run the coarse global search around ``initial`` (False: refine ``initial`` only);
        ``max_rotation=4.0``, ``rotation_step=1.0``
            rotation range (+- degrees) and step of the coarse grid;
        ``max_scale=0.06``, ``scale_step=0.02``
            relative scale range (+-) and step of the coarse grid;
        ``sigma=1.5``
            feature blur (px) at full resolution;
        ``features='orientation'``
            ``'orientation'`` (edge strength x direction, 2 channels) or ``'magnitude'``;
        ``perspective_prior=2.0``
            prior width (px at the corners) of a homography's perspective part; None: no prior;
        ``min_score=0.15``
            smallest acceptable final ECC score (edge-magnitude NCC at full resolution);
        ``min_overlap=0.3``
            smallest acceptable fraction of the thermal frame mapped into the RGB frame;
        ``max_pixels=40000``
            samples per level for the solver (a regular sub-grid on fine levels: the speed knob);
        ``max_iter=30``
            iterations per level;
        ``min_side=40``
            short side of the coarsest pyramid level.

    Returns
    -------
    Registration

    Raises
    ------
    CalibrationError
        Featureless or black frames, no overlap, or a final score below ``min_score`` (it did not
        converge on common structure), or a transform that folds the frame.
    ValueError, TypeError
        Malformed arguments (array shapes or types, unknown model or option).

    Notes
    -----
    The coarse grid covers +-4 degrees and +-6 % scale by default, so ``initial`` must be right to
    about that much; shifts of any size are found by phase correlation. Rigs whose cameras differ
    more should pass ``initial`` (e.g. from the lens focal lengths) or widen the grid.

    Examples
    --------
    >>> from gasdb_tools.synth import SynthRig
    >>> rig = SynthRig(seed=3, size=(320, 256), distractors=False)
    >>> reg = register_pair(rig.rgb(2.0), rig.thermal(2.0 - rig.offset_s)[0])
    >>> bool(corner_error(reg.matrix, rig.homography, (320, 256)) < 1.0)
    True
    """
    opts = _make_options(model, options)
    prep = _prepare(rgb, thermal, opts, rgb_mask=rgb_mask, thermal_mask=thermal_mask)
    init = (_check_matrix(initial, "initial") if initial is not None
            else default_initial(prep.rgb_size, prep.thermal_size))
    return _register_prepared(prep, init, opts)


def _make_options(model, options: dict) -> _Options:
    known = {f for f in _Options.__dataclass_fields__ if f != "model"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return _Options(model=model, **options)


def _register_prepared(prep: _Prepared, initial: np.ndarray, opts: _Options) -> Registration:
    th_levels, rgb_levels = prep.th_levels, prep.rgb_levels
    n = len(th_levels)
    init_work = prep.prescale @ initial
    # coarse search on the level whose long side is nearest 160 px, checked one level finer
    lc = min(range(n), key=lambda i: abs(max(th_levels[i].size) - 160))
    lb = max(lc - 1, 0)
    coarse_score = float("nan")
    candidates = [init_work]
    if opts.search:
        grid = _similarity_grid(init_work, _full_size(th_levels[0]), max_rotation=opts.max_rotation,
                                max_scale=opts.max_scale, rotation_step=opts.rotation_step,
                                scale_step=opts.scale_step)
        found = _phase_candidates(th_levels[lc], rgb_levels[lc], [init_work] + grid, keep_unshifted=1)
        if not found:
            raise CalibrationError("the thermal and RGB frames do not overlap under the initial transform",
                                   fix="pass an initial matrix that maps the thermal frame roughly onto the RGB frame")
        found = _phase_candidates(th_levels[lb], rgb_levels[lb], [m for _, m in found[:8]],
                                  orientation=opts.features == "orientation")
        coarse_score = found[0][0]
        candidates = [m for _, m in found[:3]]
    th_w, th_h = prep.thermal_size
    max_move = 0.25 * math.hypot(th_w, th_h) * prep.prescale[0, 0]
    solve = dict(max_corner_move=max_move, perspective_prior=opts.perspective_prior)
    # refine every candidate briefly on level lb, continue with the best, then on to full resolution
    best = None
    iters = 0
    fr = _Frame(th_levels[lb], rgb_levels[lb], opts.max_pixels)
    model_lb = _schedule(opts.model, lb)
    for cand in candidates:
        m, rho, it = _solve_level([fr], cand, model_lb, max_iter=min(opts.max_iter, 10), eps_px=0.05, **solve)
        iters += it
        if best is None or rho[0] > best[1]:
            best = (m, rho[0])
    m, rho, it = _solve_level([fr], best[0], model_lb, max_iter=opts.max_iter, eps_px=0.02, **solve)
    iters += it
    for lev in range(lb - 1, -1, -1):
        fr = _Frame(th_levels[lev], rgb_levels[lev], opts.max_pixels)
        m, rho, it = _solve_level([fr], m, _schedule(opts.model, lev), max_iter=opts.max_iter, eps_px=0.02, **solve)
        iters += it
    matrix = _normalise(np.linalg.inv(prep.prescale) @ m)
    return _finish(prep, matrix, m, opts, iters, coarse_score)


def _finish(prep: _Prepared, matrix, matrix_work, opts: _Options, iters, coarse_score) -> Registration:
    """Score the result at full resolution and refuse one that did not converge."""
    th0, rgb0 = prep.th_levels[0], prep.rgb_levels[0]
    warped, valid = _warp_to(rgb0, matrix_work, th0.size)
    overlap = float((valid & th0.valid).mean())
    score = _ncc(th0.feat, warped, valid & th0.valid)
    density = (_edge_density(rgb0), _edge_density(th0))
    if overlap < opts.min_overlap:
        raise CalibrationError(f"registration did not converge: only {overlap:.0%} of the thermal frame lands in "
                               f"the RGB frame (need {opts.min_overlap:.0%})",
                               fix="pass an initial matrix closer to the truth, or frames with more common structure")
    if not score >= opts.min_score:
        raise CalibrationError(f"registration did not converge: edge correlation {score:.3f} is below "
                               f"min_score {opts.min_score}",
                               fix="pick frames where the same objects show in both cameras (or lower min_score "
                                   "if you have checked the result)")
    corners = transform_points(matrix, image_corners(prep.thermal_size))
    if not _convex_same_orientation(corners):
        raise CalibrationError("registration did not converge: the transform folds the thermal frame",
                               fix="pick frames with more common structure, or use model='affine'")
    return Registration(matrix=matrix, model=opts.model, score=float(score), overlap=overlap, edge_density=density,
                        iterations=int(iters), coarse_score=float(coarse_score))


def _convex_same_orientation(quad: np.ndarray) -> bool:
    if not np.isfinite(quad).all():
        return False
    crosses = []
    for i in range(4):
        a, b, c = quad[i], quad[(i + 1) % 4], quad[(i + 2) % 4]
        crosses.append((b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]))
    return all(c > 0 for c in crosses)


# ------------------------------------------------------------------------------------------------
# warping
# ------------------------------------------------------------------------------------------------
_INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def warp_thermal(thermal, matrix, size, *, interpolation: str = "linear", fill=0):
    """Warp a thermal frame into the RGB frame.

    Parameters
    ----------
    thermal : (h, w) or (h, w, C) ndarray
        The thermal frame; its dtype (uint8, uint16, float32) is kept.
    matrix : (3, 3) array_like
        Thermal pixel -> output pixel transform (for an output of another size than the RGB
        frame, compose the resize first; see :func:`gasdb_tools.calibration.output_matrix`).
    size : (int, int)
        Output (width, height).
    interpolation : {'linear', 'nearest', 'cubic'}
        Resampling.
    fill : number
        Value of invalid output pixels.

    Returns
    -------
    warped : (H, W[, C]) ndarray, the input dtype
    valid : (H, W) bool ndarray
        True where the output pixel is interpolated from thermal pixels only (inside the frame).

    Examples
    --------
    >>> th = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    >>> warped, valid = warp_thermal(th, np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1.]]), (4, 3))
    >>> warped[0].tolist(), valid[0].tolist()
    ([0, 0, 1000, 2000], [False, True, True, True])
    """
    thermal = np.asarray(thermal)
    if thermal.ndim not in (2, 3) or thermal.size == 0:
        raise ValueError(f"thermal must be an HxW (or HxWxC) image, got shape {thermal.shape}")
    m = _check_matrix(matrix)
    w, h = _check_size(size, "size")
    if interpolation not in _INTERP:
        raise ValueError(f"interpolation must be one of {tuple(_INTERP)}, got {interpolation!r}")
    try:
        inv = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        raise ValueError("matrix is singular; it cannot map the thermal frame") from None
    src = thermal
    if src.dtype == bool:
        src = src.astype(np.uint8)
    warped = cv2.warpPerspective(src, inv, (w, h), flags=_INTERP[interpolation] | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if warped.ndim == 2 and thermal.ndim == 3:
        warped = warped[:, :, None]
    # valid: every bilinear neighbour of the source point is a thermal pixel, i.e. the source point
    # lies in [0, w - 1] x [0, h - 1] (to OpenCV's 1/32 px interpolation grid)
    th_h, th_w = thermal.shape[:2]
    ones = np.full((th_h, th_w), 255, np.uint8)
    valid = cv2.warpPerspective(ones, inv, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0) == 255
    warped = warped.astype(thermal.dtype, copy=False)
    warped[~valid] = fill
    return warped, valid


# ------------------------------------------------------------------------------------------------
# QA: block residuals
# ------------------------------------------------------------------------------------------------
def _block_shifts_prepared(th: _Level, rgb: _Level, matrix_level: np.ndarray, *, grid=(3, 3), radius: int = 6,
                           min_edges: float = 0.02) -> np.ndarray:
    """Local residual shift per block of the thermal frame (level px), NaN where there are no edges."""
    w, h = th.size
    warped, valid = _warp_to(rgb, matrix_level, (w, h))
    rows, cols = grid
    out = np.full((rows, cols, 2), np.nan)
    r = radius
    ok_all = valid & th.valid
    for i in range(rows):
        for j in range(cols):
            y0, y1 = i * h // rows, (i + 1) * h // rows
            x0, x1 = j * w // cols, (j + 1) * w // cols
            # template: the thermal block without its rim; search: the warped RGB block with the rim
            ty0, ty1, tx0, tx1 = y0 + r, y1 - r, x0 + r, x1 - r
            if ty1 - ty0 < 8 or tx1 - tx0 < 8:
                continue
            # shrink the block to a rectangle inside the valid overlap (the frame's border); keep it
            # only if at least half of it is left
            area = (y1 - y0) * (x1 - x0)
            y0, y1, x0, x1 = _valid_rectangle(ok_all, y0, y1, x0, x1)
            ty0, ty1, tx0, tx1 = y0 + r, y1 - r, x0 + r, x1 - r
            if ty1 - ty0 < 12 or tx1 - tx0 < 12 or (y1 - y0) * (x1 - x0) < 0.5 * area:
                continue
            tmpl = th.feat[ty0:ty1, tx0:tx1]
            if (tmpl > 0.5).mean() < min_edges or tmpl.std() < 1e-3:
                continue
            search = warped[y0:y1, x0:x1]
            res = cv2.matchTemplate(search, tmpl, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (px, py) = cv2.minMaxLoc(res)
            if peak < 0.2 or px in (0, res.shape[1] - 1) or py in (0, res.shape[0] - 1):
                continue  # no clear peak inside the search window
            dx, dy = float(px), float(py)
            if 0 < px < res.shape[1] - 1:
                l, c, rr = res[py, px - 1], res[py, px], res[py, px + 1]
                den = l - 2 * c + rr
                dx += 0.5 * (l - rr) / den if den < 0 else 0.0
            if 0 < py < res.shape[0] - 1:
                u, c, dd = res[py - 1, px], res[py, px], res[py + 1, px]
                den = u - 2 * c + dd
                dy += 0.5 * (u - dd) / den if den < 0 else 0.0
            # template at offset r is the zero shift; the RGB content sits at +(dx - r, dy - r)
            out[i, j] = (dx - r, dy - r)
    return out


def _valid_rectangle(ok: np.ndarray, y0: int, y1: int, x0: int, x1: int):
    """Trim the side with the most invalid pixels until the rectangle is all valid (or empty)."""
    while y1 - y0 > 0 and x1 - x0 > 0:
        sides = (np.count_nonzero(~ok[y0, x0:x1]), np.count_nonzero(~ok[y1 - 1, x0:x1]),
                 np.count_nonzero(~ok[y0:y1, x0]), np.count_nonzero(~ok[y0:y1, x1 - 1]))
        worst = int(np.argmax(sides))
        if sides[worst] == 0:
            break
        if worst == 0:
            y0 += 1
        elif worst == 1:
            y1 -= 1
        elif worst == 2:
            x0 += 1
        else:
            x1 -= 1
    return y0, y1, x0, x1


def block_residuals(rgb, thermal, matrix, *, grid=(3, 3), radius: int = 6, sigma: float = 1.5) -> np.ndarray:
    """Local misalignment left by ``matrix``, per block of the thermal frame (methods.md B.1 QA).

    For each block of a ``grid`` over the thermal frame, the thermal edge features are matched
    (normalised cross-correlation over +-``radius`` px, sub-pixel parabola peak) against the RGB
    edge features warped into the thermal frame.

    Returns
    -------
    (rows, cols, 2) float64 ndarray
        The shift (dx, dy), in thermal px, by which the warped RGB content is displaced from the
        thermal content in each block; NaN where a block has too few edges or no clear peak.
        Zero everywhere means the transform fits the whole frame; a pattern (e.g. growing towards
        the bottom) shows parallax.
    """
    rgb = _check_image(rgb, "rgb")
    thermal = _check_image(thermal, "thermal")
    m = _check_matrix(matrix)
    r = _pyramid(_gray32(rgb), None, levels=1, sigma=sigma, name="RGB frame")[0]
    t = _pyramid(_gray32(thermal), None, levels=1, sigma=sigma, name="thermal frame")[0]
    return _block_shifts_prepared(t, r, m, grid=tuple(grid), radius=radius)


# ------------------------------------------------------------------------------------------------
# public: many pairs of one rig
# ------------------------------------------------------------------------------------------------
def register_pairs(pairs: Iterable, *, model: str = "homography", initial=None, refine: bool = True,
                   groups: Sequence | None = None, min_frames: int = 3, outlier_px: float = 3.0,
                   max_deviation_px: float = 4.0, max_block_px: float = 3.0, **options) -> RigRegistration:
    """One transform for a fixed rig from many RGB-thermal frame pairs (methods.md B.1 step 4).

    1. Each pair is registered on its own (:func:`register_pair`); pairs that fail (featureless,
       no convergence, low score) are left out with the reason.
    2. The four projected thermal corners of the remaining estimates are combined by their
       **median** and the model fitted to the median corners; frames further than
       ``max(outlier_px, 3 x median deviation)`` from it are dropped and the median retaken.
    3. With ``refine``, one transform is refined **jointly** over all used frames (one photometric
       gain and bias per frame and channel) on the two finest pyramid levels, from the median.
       The joint result is kept only when it raises the summed ECC score.
    4. QA: per frame, its own estimate's corner deviation from the result and its score at the
       result; per 3x3 block of the thermal frame, the median over frames of the local residual
       shift (:func:`block_residuals`). ``consistent`` is False, with a reason in ``warnings``,
       when the per-frame estimates disagree (median deviation above ``max_deviation_px``), many
       frames are outliers, a ``groups`` member (e.g. a recording) sits apart from the others, or
       a block is off by more than ``max_block_px`` (parallax, a camera that moved).

    Parameters
    ----------
    pairs : iterable of (rgb, thermal)
        Frame pairs of one rig set-up, all RGB frames of one size and all thermal frames of one
        size. Spread them over recordings, times of day and scenes (10-30 pairs).
        Memory: about 15 MB per 640x512 pair is held until the end.
    model : str
        One of :data:`MODELS`.
    initial : (3, 3) array_like, optional
        Approximate transform (see :func:`register_pair`).
    refine : bool
        Joint refinement after the median.
    groups : sequence, optional
        One label per pair (e.g. its recording id) to check that no group sits apart.
    min_frames : int
        Fewer usable frames raise :class:`CalibrationError` (1 accepts a single frame).
    outlier_px : float
        Floor of the outlier threshold on a frame's corner deviation from the median (RGB px).
    max_deviation_px, max_block_px : float
        Thresholds of the consistency flag (RGB px).
    **options
        Knobs of :func:`register_pair` (``min_score``, ``max_rotation``, ``sigma``, ...).

    Returns
    -------
    RigRegistration

    Raises
    ------
    CalibrationError
        Frames of different sizes, or fewer than ``min_frames`` usable frames (the message lists
        why each pair failed).

    Examples
    --------
    >>> from gasdb_tools.synth import SynthRig
    >>> rig = SynthRig(seed=5, size=(320, 256), distractors=False)
    >>> pairs = [(rig.rgb(t + rig.offset_s), rig.thermal(t)[0]) for t in (1.0, 2.0, 3.0)]
    >>> rr = register_pairs(pairs)
    >>> bool(corner_error(rr.matrix, rig.homography, (320, 256)) < 0.5), rr.consistent
    (True, True)
    """
    opts = _make_options(model, options)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty; pass a list of (rgb, thermal) frame pairs")
    if groups is not None:
        groups = list(groups)
        if len(groups) != len(pairs):
            raise ValueError(f"groups needs one label per pair: got {len(groups)} labels for {len(pairs)} pairs")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    rgb_size = th_size = None
    prepared, per_frame, reasons = [], [], []
    for k, pair in enumerate(pairs):
        try:
            rgb, thermal = pair
        except (TypeError, ValueError):
            raise TypeError(f"pairs[{k}] must be an (rgb, thermal) tuple of arrays") from None
        rgb, thermal = np.asarray(rgb), np.asarray(thermal)
        rs, ts = (rgb.shape[1], rgb.shape[0]), (thermal.shape[1], thermal.shape[0])
        if rgb_size is None:
            rgb_size, th_size = rs, ts
        elif rs != rgb_size or ts != th_size:
            raise CalibrationError(f"frame pair {k} has sizes RGB {rs[0]}x{rs[1]} / thermal {ts[0]}x{ts[1]}, but "
                                   f"pair 0 has RGB {rgb_size[0]}x{rgb_size[1]} / thermal {th_size[0]}x{th_size[1]}",
                                   field=f"pairs[{k}]", fix="calibrate each camera set-up (image sizes) separately")
        try:
            prep = _prepare(rgb, thermal, opts)
            init = (_check_matrix(initial, "initial") if initial is not None
                    else default_initial(prep.rgb_size, prep.thermal_size))
            reg = _register_prepared(prep, init, opts)
        except CalibrationError as exc:
            prepared.append(None)
            per_frame.append(None)
            reasons.append(exc.message)
            continue
        for levels in (prep.th_levels, prep.rgb_levels):  # keep what the joint refinement needs
            del levels[2:]
        prepared.append(prep)
        per_frame.append(reg)
        reasons.append("")
    ok = [k for k, r in enumerate(per_frame) if r is not None]
    if len(ok) < min_frames:
        detail = "; ".join(f"pair {k}: {reasons[k]}" for k in range(len(pairs)) if reasons[k])
        raise CalibrationError(f"only {len(ok)} of {len(pairs)} frame pairs registered (need {min_frames})"
                               + (f" ({detail[:800]})" if detail else ""),
                               fix="pick more frames that show the same structure in both cameras")
    corners = image_corners(th_size)
    proj = {k: transform_points(per_frame[k].matrix, corners) for k in ok}

    def combine(keys):
        return fit_model(corners, np.median(np.stack([proj[k] for k in keys]), axis=0), model)

    combined = combine(ok)
    dev = {k: corner_error(per_frame[k].matrix, combined, th_size) for k in ok}
    thresh = max(outlier_px, 3.0 * float(np.median(list(dev.values()))))
    used = [k for k in ok if dev[k] <= thresh]
    if len(used) < min_frames:
        used = list(ok)
    for k in ok:
        if k not in used:
            reasons[k] = f"outlier: {dev[k]:.1f} px from the median of the frames (limit {thresh:.1f} px)"
    combined = combine(used)
    refined = False
    if refine:
        combined, refined = _joint_refine([prepared[k] for k in used], combined, opts)
    # QA
    frames, shifts, scores = [], [], []
    scale = _local_scale(combined, th_size)
    for k in range(len(pairs)):
        reg, prep = per_frame[k], prepared[k]
        if reg is None:
            frames.append(FrameResidual(k, False, reasons[k], float("nan"), float("nan"), float("nan"), None, None))
            continue
        m_work = prep.prescale @ combined
        th0, rgb0 = prep.th_levels[0], prep.rgb_levels[0]
        warped, valid = _warp_to(rgb0, m_work, th0.size)
        score = _ncc(th0.feat, warped, valid & th0.valid)
        block = _block_shifts_prepared(th0, rgb0, m_work) * scale
        frames.append(FrameResidual(k, k in used, reasons[k], reg.score, score,
                                    corner_error(reg.matrix, combined, th_size), block, reg.matrix))
        if k in used:
            shifts.append(block)
            scores.append(score)
    stack = np.stack(shifts)
    finite = np.isfinite(stack[..., 0])
    block_median = np.full(stack.shape[1:], np.nan)
    for i in range(stack.shape[1]):
        for j in range(stack.shape[2]):
            sel = finite[:, i, j]
            if sel.sum() >= max(1, len(used) // 3):  # a block needs edges in a third of the frames
                block_median[i, j] = np.median(stack[sel, i, j], axis=0)
    warnings_ = []
    consistent = True
    devs = np.array([frames[k].corner_deviation for k in used])
    if len(used) >= 2 and np.median(devs) > max_deviation_px:
        consistent = False
        warnings_.append(f"per-frame estimates disagree: median corner deviation {np.median(devs):.2f} px "
                         f"(limit {max_deviation_px} px); the camera may have moved, or the frames show "
                         "too little common structure")
    n_out = len(ok) - len(used)
    if n_out > 0.25 * len(ok):
        consistent = False
        warnings_.append(f"{n_out} of {len(ok)} registered frames are outliers: the rig may have changed "
                         "between recordings")
    if groups is not None:
        labels = sorted({str(groups[k]) for k in ok})
        if len(labels) > 1:
            for label in labels:
                members = [k for k in ok if str(groups[k]) == label]
                apart = corner_error(combine(members), combined, th_size)
                if apart > max_deviation_px:
                    consistent = False
                    warnings_.append(f"group {label!r} ({len(members)} frames) alone gives a transform {apart:.2f} px "
                                     "from the result: that camera set-up differs (calibrate it as its own rig)")
    mags = np.hypot(block_median[..., 0], block_median[..., 1])
    if np.isfinite(mags).any() and np.nanmax(mags) > max_block_px:
        consistent = False
        i, j = np.unravel_index(int(np.nanargmax(mags)), mags.shape)
        warnings_.append(f"block residuals disagree: block (row {i}, col {j}) is off by {mags[i, j]:.2f} px "
                         f"(limit {max_block_px} px): parallax of near objects or lens distortion")
    if len(ok) < len(pairs):
        warnings_.append(f"{len(pairs) - len(ok)} of {len(pairs)} frame pairs did not register")
    return RigRegistration(matrix=combined, model=model, score=float(np.mean(scores)), frames=tuple(frames),
                           block_shifts=block_median, consistent=consistent, warnings=tuple(warnings_),
                           refined=refined, rgb_size=tuple(rgb_size), thermal_size=tuple(th_size))


def _local_scale(matrix, th_size) -> float:
    """Mean linear scale of ``matrix`` at the thermal centre (RGB px per thermal px)."""
    w, h = th_size
    c = np.array([[(w - 1) / 2, (h - 1) / 2]])
    p = transform_points(matrix, np.vstack([c, c + [1, 0], c + [0, 1]]))
    return float((np.hypot(*(p[1] - p[0])) + np.hypot(*(p[2] - p[0]))) / 2)


def _joint_refine(preps: list, matrix: np.ndarray, opts: _Options):
    """Refine one matrix over several frames on the two finest levels; keep it if the cost drops."""
    pre = preps[0].prescale  # all frames have one size, so one prescale
    th_w, th_h = preps[0].thermal_size
    limit = 0.05 * math.hypot(th_w, th_h) * pre[0, 0]
    n_levels = min(len(p.th_levels) for p in preps)
    m = pre @ matrix
    for lev in range(min(1, n_levels - 1), -1, -1):
        frames = [_Frame(p.th_levels[lev], p.rgb_levels[lev], opts.max_pixels) for p in preps]
        m, _, _ = _solve_level(frames, m, opts.model, max_iter=opts.max_iter, eps_px=0.01, max_corner_move=limit,
                               perspective_prior=opts.perspective_prior)
    # frames now holds level 0: keep the result unless its data cost there is clearly (0.1 %) worse
    # than the start's (a safety net against divergence; equal costs are within solver tolerance)
    if _level_cost(frames, m) <= 1.001 * _level_cost(frames, pre @ matrix):
        return _normalise(np.linalg.inv(pre) @ m), True
    return matrix, False


def _level_cost(frames: Sequence[_Frame], matrix_work: np.ndarray) -> float:
    """Summed ECC cost (what the solver minimises) of a working-coordinate matrix on the frames' level."""
    fr0 = frames[0]
    hn = fr0.nr @ _level_matrix(matrix_work, fr0.th, fr0.rgb) @ np.linalg.inv(fr0.nt)
    return _evaluate(frames, [hn / hn[2, 2]] * len(frames), "homography", jacobian=False)[0]
