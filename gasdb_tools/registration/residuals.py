"""Residual QA: the local misalignment a transform leaves, per block of the thermal frame."""

from __future__ import annotations

import cv2
import numpy as np

from gasdb_tools.registration.features import Level, check_image, feature_pyramid, gray32, warp_features
from gasdb_tools.registration.geometry import check_matrix

__all__ = ["block_residuals", "block_shifts"]


def block_shifts(th: Level, rgb: Level, matrix_level: np.ndarray, *, grid=(3, 3), radius: int = 6,
                 min_edges: float = 0.02, min_peak: float = 0.2, weak_peak: float = 0.0,
                 min_margin: float = 0.02) -> np.ndarray:
    """Local residual shift per block of the thermal frame (level px).

    NaN where a block has too few edges, no peak of at least ``min_peak`` inside the search window,
    or a weak and ambiguous one: a peak under ``weak_peak`` with a rival match more than 3 px away
    within ``min_margin`` (NCC) of it (faint repeated structure, which a wide search window finds).
    """
    w, h = th.size
    warped, valid = warp_features(rgb, matrix_level, (w, h))
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
            if peak < min_peak or px in (0, res.shape[1] - 1) or py in (0, res.shape[0] - 1):
                continue  # no clear peak inside the search window
            if peak < weak_peak:
                rival = res.copy()
                cv2.circle(rival, (px, py), 3, -1.0, -1)
                if peak - float(rival.max()) < min_margin:
                    continue
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
    rgb = check_image(rgb, "rgb")
    thermal = check_image(thermal, "thermal")
    m = check_matrix(matrix)
    r = feature_pyramid(gray32(rgb), None, levels=1, sigma=sigma, name="RGB frame")[0]
    t = feature_pyramid(gray32(thermal), None, levels=1, sigma=sigma, name="thermal frame")[0]
    return block_shifts(t, r, m, grid=tuple(grid), radius=radius)
