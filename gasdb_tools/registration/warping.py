"""Warping a thermal frame into the RGB frame, with its valid-pixel mask."""

from __future__ import annotations

import cv2
import numpy as np

from gasdb_tools.registration.geometry import check_matrix, check_size

__all__ = ["warp_thermal"]


_INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def warp_thermal(thermal, matrix, size, *, interpolation: str = "linear", fill=0, distortion=None):
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
    distortion : RadialDistortion, optional
        Radial distortion of the thermal lens (:mod:`gasdb_tools.registration.distortion`):
        ``matrix`` then maps *undistorted* thermal px, and each output pixel samples the thermal
        frame at the distorted position (one ``cv2.remap``).
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
    m = check_matrix(matrix)
    w, h = check_size(size, "size")
    if interpolation not in _INTERP:
        raise ValueError(f"interpolation must be one of {tuple(_INTERP)}, got {interpolation!r}")
    try:
        inv = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        raise ValueError("matrix is singular; it cannot map the thermal frame") from None
    src = thermal
    if src.dtype == bool:
        src = src.astype(np.uint8)
    th_h, th_w = thermal.shape[:2]
    if distortion is not None:
        from gasdb_tools.registration.distortion import distortion_maps

        if tuple(distortion.size) != (th_w, th_h):
            raise ValueError(f"the distortion is for {distortion.size[0]}x{distortion.size[1]} frames, "
                             f"the thermal frame is {th_w}x{th_h}")
        mx, my = distortion_maps(distortion, inv, (w, h))
        warped = cv2.remap(src, mx, my, _INTERP[interpolation], borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        valid = (mx >= 0) & (mx <= th_w - 1) & (my >= 0) & (my <= th_h - 1)
    else:
        warped = cv2.warpPerspective(src, inv, (w, h), flags=_INTERP[interpolation] | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # valid: every bilinear neighbour of the source point is a thermal pixel, i.e. the source point
        # lies in [0, w - 1] x [0, h - 1] (to OpenCV's 1/32 px interpolation grid)
        ones = np.full((th_h, th_w), 255, np.uint8)
        valid = cv2.warpPerspective(ones, inv, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0) == 255
    if warped.ndim == 2 and thermal.ndim == 3:
        warped = warped[:, :, None]
    warped = warped.astype(thermal.dtype, copy=False)
    warped[~valid] = fill
    return warped, valid
