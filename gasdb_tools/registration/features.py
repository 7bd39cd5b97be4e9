"""Modality-independent edge features, their pyramids, and masked correlation of feature maps.

Edge strength ``f = sqrt(min(|grad(G_sigma * I)| / p99, 1))`` (methods.md B.1) is polarity-free
and insensitive to the intensity mapping of either camera; the solver aligns ``f`` times the
doubled-angle gradient direction (``f cos 2theta``, ``f sin 2theta``), so edges only match edges
of the same direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from gasdb_tools.errors import CalibrationError
from gasdb_tools.registration.geometry import check_matrix, scale_matrix

__all__ = [
    "FEATURES",
    "edge_features",
    "feature_correlation",
    "Level",
    "feature_maps",
    "feature_pyramid",
    "n_levels",
    "masked_ncc",
    "warp_features",
    "level_matrix",
    "full_size",
    "edge_density",
    "check_image",
    "check_mask",
    "gray32",
]


def check_image(image, name) -> np.ndarray:
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


def check_mask(mask, shape, name) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"{name} must have the image's shape {tuple(shape[:2])}, got {mask.shape}")
    return mask.astype(bool)


def gray32(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        else:
            image = image[:, :, :3].astype(np.float32)
            return np.ascontiguousarray(image @ np.array([0.299, 0.587, 0.114], np.float32))
    return np.ascontiguousarray(image, dtype=np.float32)


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
    image = check_image(image, "image")
    mask = check_mask(mask, image.shape, "mask")
    f, _ = feature_maps(gray32(image), sigma=sigma, mask=mask, percentile=percentile, name="image")
    return f


def feature_maps(gray: np.ndarray, *, sigma: float, mask, percentile: float = 99.0, name: str = "image",
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


@dataclass
class Level:
    """One pyramid level of one image: edge features, the solver's channels, valid mask."""

    scale: float  # level px = scale * full-res px (pyrDown: exact, no half-pixel offset)
    feat: np.ndarray  # edge magnitude features (coarse search, scores, QA)
    valid: np.ndarray  # bool, eroded valid region of the features
    channels: list = field(default_factory=list)  # what the solver aligns
    _grads: list | None = None
    _stacked: list | None = None

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

    def stacked(self) -> list:
        """Every channel with its gradients as one (H, W, 3) float32 image ``[c, gx, gy]`` (one remap each)."""
        if self._stacked is None:
            self._stacked = [np.ascontiguousarray(np.dstack([c, gx, gy]))
                             for c, (gx, gy) in zip(self.channels, self.grads())]
        return self._stacked


#: Feature kinds the solver can align.
FEATURES = ("orientation", "magnitude")


def feature_pyramid(gray: np.ndarray, mask, *, levels: int, sigma: float, name: str,
                    features: str = "orientation") -> list[Level]:
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
            f, valid, (c2, s2) = feature_maps(img, sigma=s, mask=m, name=name, orientation=True)
            channels = [np.ascontiguousarray(f * c2), np.ascontiguousarray(f * s2)]
        else:
            f, valid = feature_maps(img, sigma=s, mask=m, name=name)
            channels = [f]
        if valid is None:
            valid = np.ones(f.shape, bool)
        out.append(Level(scale=0.5 ** lev, feat=f, valid=valid, channels=channels))
    return out


def n_levels(size, min_side: int) -> int:
    n = 1
    w, h = size
    while min(w, h) / 2 ** n >= min_side:
        n += 1
    return n


def masked_ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    """Normalised cross-correlation of two float32 images over the ``valid`` pixels (-1 below 32 pixels).

    Means in float64, then dot products of the centred, masked float32 images: no copies of the
    valid pixels.
    """
    m = valid.reshape(-1).view(np.uint8).astype(np.float32) if valid.dtype == bool else \
        valid.reshape(-1).astype(np.float32)
    n = float(m.sum(dtype=np.float64))
    if n < 32:
        return -1.0
    x = a.reshape(-1)
    y = b.reshape(-1)
    x = (x - np.float32(float(m @ x) / n)) * m
    y = (y - np.float32(float(m @ y) / n)) * m
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else 0.0


def warp_features(level_img: Level, matrix_level: np.ndarray, size):
    """Sample level_img's features at matrix_level(x) for every pixel x of a ``size`` grid."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(level_img.feat, matrix_level, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.warpPerspective(level_img.valid.astype(np.uint8) * 255, matrix_level, size, flags=flags,
                                borderMode=cv2.BORDER_CONSTANT) == 255
    return warped, valid


def level_matrix(matrix, th: Level, rgb: Level) -> np.ndarray:
    """Full-resolution thermal->RGB matrix expressed between two pyramid levels."""
    return scale_matrix(rgb.scale) @ matrix @ scale_matrix(1.0 / th.scale)


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
    rgb = check_image(rgb, "rgb")
    thermal = check_image(thermal, "thermal")
    m = check_matrix(matrix)
    r = feature_pyramid(gray32(rgb), check_mask(rgb_mask, rgb.shape, "rgb_mask"), levels=1, sigma=sigma, name="rgb")[0]
    t = feature_pyramid(gray32(thermal), check_mask(thermal_mask, thermal.shape, "thermal_mask"), levels=1,
                        sigma=sigma, name="thermal")[0]
    warped, valid = warp_features(r, m, t.size)
    return masked_ncc(t.feat, warped, valid & t.valid)


def full_size(level: Level):
    w, h = level.size
    return int(round(w / level.scale)), int(round(h / level.scale))


def edge_density(level: Level) -> float:
    v = level.valid
    return float((level.feat[v] > 0.5).mean()) if v.any() else 0.0
