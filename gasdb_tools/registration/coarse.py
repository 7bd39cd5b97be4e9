"""Coarse global search: a rotation x scale grid, each candidate's shift by phase correlation [1]_.

References
----------
.. [1] C. D. Kuglin, D. C. Hines, "The phase correlation image alignment method", Proc. IEEE
   Int. Conf. on Cybernetics and Society, 1975, pp. 163-165.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from gasdb_tools.registration.features import Level, level_matrix
from gasdb_tools.registration.geometry import scale_matrix

__all__ = ["similarity_grid", "phase_shift", "ncc_channels", "phase_candidates"]


def similarity_grid(initial: np.ndarray, th_size, *, max_rotation: float, max_scale: float,
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


def phase_shift(templates, images, valid, window) -> tuple[float, float]:
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


def ncc_channels(templates, images, valid) -> float:
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


def phase_candidates(th: Level, rgb: Level, candidates, *, keep_unshifted: int = 0,
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
    back, to = scale_matrix(1.0 / rgb.scale), scale_matrix(th.scale)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    r_valid = rgb.valid.astype(np.uint8) * 255

    def warp(m):
        ims = [cv2.warpPerspective(c, m, (w, h), flags=flags) for c in r_ch]
        return ims, (cv2.warpPerspective(r_valid, m, (w, h), flags=flags) == 255) & th.valid

    results = []
    for k, full in enumerate(candidates):
        cand = level_matrix(full, th, rgb)
        ims, valid = warp(cand)
        if valid.sum() < 0.2 * w * h:
            continue
        dx, dy = phase_shift(t_ch, ims, valid, window)
        # images(x) ~ templates(x - d), so templates(x) ~ warped(x + d)
        shifted = cand @ np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])
        ims2, valid2 = warp(shifted)
        results.append((ncc_channels(t_ch, ims2, valid2), back @ shifted @ to))
        if k < keep_unshifted:
            results.append((ncc_channels(t_ch, ims, valid), full))
    results.sort(key=lambda r: -r[0])
    return results
