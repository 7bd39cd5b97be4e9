"""Geometry of thermal->RGB transforms: models, corners, point mapping, fitting, argument checks.

A transform is a 3x3 float64 matrix mapping thermal pixel coordinates ``(x, y, 1)`` to RGB pixel
coordinates; ``(0, 0)`` is the centre of the top-left pixel.
"""

from __future__ import annotations

import math

import numpy as np

from gasdb_tools.errors import CalibrationError

__all__ = [
    "MODELS",
    "MODEL_PARAMS",
    "MODEL_CHOICES",
    "image_corners",
    "transform_points",
    "corner_error",
    "fit_model",
    "default_initial",
    "normalise_matrix",
    "closest_model",
    "scale_matrix",
    "resize_matrix",
    "is_convex_quad",
    "local_scale",
    "check_model",
    "check_size",
    "check_matrix",
]


#: Transform models, from the most constrained to the most general.
MODELS = ("translation", "similarity", "affine", "homography")
MODEL_PARAMS = {"translation": 2, "similarity": 4, "affine": 6, "homography": 8}
#: What ``model=`` accepts: one of :data:`MODELS`, or ``'auto'`` (chosen by held-out error).
MODEL_CHOICES = ("auto",) + MODELS

def image_corners(size) -> np.ndarray:
    """The four corner pixel centres of a ``(width, height)`` image, (4, 2) float64.

    Order: top-left, top-right, bottom-right, bottom-left; the bottom-right corner is
    ``(width - 1, height - 1)``.

    >>> image_corners((640, 512)).tolist()
    [[0.0, 0.0], [639.0, 0.0], [639.0, 511.0], [0.0, 511.0]]
    """
    w, h = check_size(size, "size")
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def transform_points(matrix, points) -> np.ndarray:
    """Apply a 3x3 projective ``matrix`` to (N, 2) points; returns (N, 2) float64.

    >>> transform_points(np.diag([2.0, 3.0, 1.0]), [[1, 1], [2, 0]]).tolist()
    [[2.0, 3.0], [4.0, 0.0]]
    """
    m = check_matrix(matrix)
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
    check_model(model)
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
    return normalise_matrix(np.linalg.inv(td) @ h @ ts)


def normalise_matrix(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    if not np.isfinite(m).all() or abs(m[2, 2]) < 1e-12:
        raise CalibrationError("degenerate transform (not finite or h33 = 0)",
                               fix="check the input frames; they may show no common structure")
    return m / m[2, 2]


def closest_model(matrix: np.ndarray, model: str, size) -> np.ndarray:
    """The closest ``model`` transform to ``matrix`` (least squares on a 5x5 grid of points)."""
    if model == "homography":
        return normalise_matrix(matrix)
    w, h = size
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5))
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    return fit_model(pts, transform_points(matrix, pts), model)


def scale_matrix(fx: float, fy: float | None = None) -> np.ndarray:
    return np.diag([fx, fx if fy is None else fy, 1.0])


def resize_matrix(src_size, dst_size) -> np.ndarray:
    """Pixel-centre mapping of an image of ``src_size`` resized to ``dst_size`` (cv2.resize convention)."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def check_model(model) -> str:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return model


def check_size(size, name) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be (width, height), got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"{name} must be positive (width, height), got {size!r}")
    return w, h


def check_matrix(matrix, name="matrix") -> np.ndarray:
    m = np.asarray(matrix, np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0, 0, 1]])
    if m.shape != (3, 3):
        raise ValueError(f"{name} must be a 3x3 (or 2x3 affine) matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} has non-finite entries")
    return m


def default_initial(rgb_size, th_size) -> np.ndarray:
    """Nominal transform when nothing is known: both cameras see the same field of view."""
    return resize_matrix(th_size, rgb_size)


def is_convex_quad(quad: np.ndarray) -> bool:
    if not np.isfinite(quad).all():
        return False
    crosses = []
    for i in range(4):
        a, b, c = quad[i], quad[(i + 1) % 4], quad[(i + 2) % 4]
        crosses.append((b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]))
    return all(c > 0 for c in crosses)


def local_scale(matrix, th_size) -> float:
    """Mean linear scale of ``matrix`` at the thermal centre (RGB px per thermal px)."""
    w, h = th_size
    c = np.array([[(w - 1) / 2, (h - 1) / 2]])
    p = transform_points(matrix, np.vstack([c, c + [1, 0], c + [0, 1]]))
    return float((np.hypot(*(p[1] - p[0])) + np.hypot(*(p[2] - p[0]))) / 2)
