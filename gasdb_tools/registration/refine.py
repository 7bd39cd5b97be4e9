"""Fine refinement: Levenberg-Marquardt maximisation of the enhanced correlation coefficient.

Forward-additive Lucas-Kanade [2]_ on edge-feature images, the cost being the ECC [1]_ of each
channel (photometric gain and bias solved in closed form and projected out of the Jacobian), over
one or several frames that share one transform.

References
----------
.. [1] G. D. Evangelidis, E. Z. Psarakis, "Parametric image alignment using enhanced correlation
   coefficient maximization", IEEE TPAMI 30(10):1858-1865, 2008.
   https://doi.org/10.1109/TPAMI.2008.113
.. [2] S. Baker, I. Matthews, "Lucas-Kanade 20 years on: a unifying framework", IJCV 56(3):221-255,
   2004. https://doi.org/10.1023/B:VISI.0000011205.11775.fd
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import cv2
import numpy as np

from gasdb_tools.errors import CalibrationError
from gasdb_tools.registration.features import Level, full_size, level_matrix
from gasdb_tools.registration.geometry import (MODEL_PARAMS, closest_model, image_corners, normalise_matrix,
                                               scale_matrix, transform_points)

__all__ = ["SolverFrame", "premapped", "norm_matrices", "params_to_matrix", "matrix_to_params", "ecc_cost", "perspective_weight",
           "solve_level", "level_cost", "joint_refine"]


class SolverFrame:
    """One frame pair on one pyramid level, ready for the solver: a sample grid of the thermal level.

    The grid is regular (every ``stride``-th pixel, so at most ``max_pixels`` samples) and 2-D,
    because ``cv2.remap`` needs 2-D maps shorter than 32767 px per side.
    """

    def __init__(self, th: Level, rgb: Level, max_pixels: int, *, phase: int = 0):
        w, h = th.size
        stride = max(1, int(math.ceil(math.sqrt(w * h / max_pixels) - 1e-9)))
        self.stride = stride
        # frames solved together take the grid at different offsets, so that together they sample
        # every phase of the pixel grid (one fixed sparse grid biases the alignment of sharp edges)
        self.offset = (phase % stride, (phase // stride) % stride)
        ox, oy = self.offset
        ys, xs = np.mgrid[oy:h:stride, ox:w:stride].astype(np.float32)
        self.nt, self.nr = norm_matrices(th.size, rgb.size)
        self.xn = xs * np.float32(self.nt[0, 0]) + np.float32(self.nt[0, 2])
        self.yn = ys * np.float32(self.nt[1, 1]) + np.float32(self.nt[1, 2])
        self.tvalid = th.valid[oy::stride, ox::stride]
        self.t = [np.ascontiguousarray(c[oy::stride, ox::stride]) for c in th.channels]
        self.th, self.rgb = th, rgb
        self.rgb_valid = None if rgb.valid.all() else rgb.valid.astype(np.float32)
        rw, rh = rgb.size
        self.limits = (np.float32(rw - 1), np.float32(rh - 1))
        self._blocks = {}

    def block_labels(self, grid) -> np.ndarray:
        """Block index (row-major over a ``(rows, cols)`` grid of the thermal frame) of every sample."""
        grid = (int(grid[0]), int(grid[1]))
        if grid not in self._blocks:
            rows, cols = grid
            w, h = self.th.size
            ox, oy = self.offset
            ys, xs = np.mgrid[oy:h:self.stride, ox:w:self.stride]
            self._blocks[grid] = (np.minimum(ys * rows // h, rows - 1) * cols
                                  + np.minimum(xs * cols // w, cols - 1)).astype(np.int32)
        return self._blocks[grid]


def premapped(frame: SolverFrame, matrix_level: np.ndarray) -> SolverFrame:
    """The frame with its thermal samples moved by ``matrix_level`` into the RGB level's coordinates.

    A model solved on the result is an update ``U`` of ``matrix_level``: the sample at thermal
    position ``x`` meets the RGB level at ``U(matrix_level(x))``, and ``U`` maps RGB coordinates to
    RGB coordinates (the frame's source level is the RGB level). Used for per-recording updates of
    a rig calibration.
    """
    out = copy.copy(frame)
    ox, oy = frame.offset
    h, w = frame.tvalid.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([xs.ravel() * frame.stride + ox, ys.ravel() * frame.stride + oy], 1)
    mapped = transform_points(matrix_level, pts)
    nr = frame.nr
    out.xn = (mapped[:, 0] * nr[0, 0] + nr[0, 2]).reshape(h, w).astype(np.float32)
    out.yn = (mapped[:, 1] * nr[1, 1] + nr[1, 2]).reshape(h, w).astype(np.float32)
    out.tvalid = frame.tvalid & np.isfinite(out.xn) & np.isfinite(out.yn)
    out.xn = np.nan_to_num(out.xn, nan=-1e6)
    out.yn = np.nan_to_num(out.yn, nan=-1e6)
    out.nt = nr
    out.th = frame.rgb
    out._blocks = {}
    return out


def norm_matrices(th_size, rgb_size):
    """Coordinate normalisations of both frames: centre each, divide both by half the thermal long side.

    One common scale keeps every model's structure (a translation stays a translation).
    """
    s = max(th_size) / 2.0

    def n(size):
        w, h = size
        return np.array([[1 / s, 0, -(w - 1) / 2 / s], [0, 1 / s, -(h - 1) / 2 / s], [0, 0, 1.0]])
    return n(th_size), n(rgb_size)


def params_to_matrix(p: np.ndarray, model: str) -> np.ndarray:
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


def matrix_to_params(m: np.ndarray, model: str) -> np.ndarray:
    m = m / m[2, 2]
    if model == "translation":
        return np.array([m[0, 2], m[1, 2]])
    if model == "similarity":
        return np.array([(m[0, 0] + m[1, 1]) / 2, (m[1, 0] - m[0, 1]) / 2, m[0, 2], m[1, 2]])
    if model == "affine":
        return m[:2].ravel().copy()
    return m.flat[:8].copy()


def ecc_cost(frames: Sequence[SolverFrame], hns, model: str, *, jacobian: bool = True, blocks=None):
    """ECC cost and Gauss-Newton normal equations over frames and channels.

    ``hns[k]`` is frame k's transform between normalised thermal and normalised RGB coordinates.
    For each channel the photometric gain ``a`` and bias ``b`` of ``t ~ a i + b`` are solved in
    closed form, so the residual sum of squares is ``|t - mean t|^2 (1 - rho^2)``; the Jacobian is
    projected orthogonal to ``[1, i]`` (variable projection), which makes the step the
    Gauss-Newton step of the correlation itself, as in ECC [2]_.

    Returns (cost, per-frame mean rho, JtJ, Jtr, per-frame (valid samples x stride^2)); without
    ``jacobian`` JtJ and Jtr stay zero (a cheaper cost-only evaluation for the line search).
    With ``blocks=(rows, cols)`` (and ``jacobian``) a sixth item holds the same sums split by
    frame and by block of the thermal frame: ``{"cost": (F, B), "jtj": (F, B, k, k), "jtr": (F, B,
    k)}``; each block's cost and normal equations are those of its own samples (the photometric
    gain and bias stay per frame), so the blocks of a frame add up to the frame.
    """
    k_params = MODEL_PARAMS[model]
    jtj = np.zeros((k_params, k_params))
    jtr = np.zeros(k_params)
    cost = 0.0
    rhos, counts = [], []
    parts = None
    if blocks is not None:
        n_blocks = int(blocks[0]) * int(blocks[1])
        parts = {"cost": np.zeros((len(frames), n_blocks)), "jtj": np.zeros((len(frames), n_blocks, k_params, k_params)),
                 "jtr": np.zeros((len(frames), n_blocks, k_params))}
    for f_idx, (fr, hn) in enumerate(zip(frames, hns)):
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
            if parts is not None:
                parts["cost"][f_idx] += len(fr.t) / parts["cost"].shape[1]
            continue
        x, y = xn[ok], yn[ok]
        members = None
        if parts is not None:
            labels = fr.block_labels(blocks)[ok]
            members = [labels == b for b in range(parts["cost"].shape[1])]
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
        stacked = fr.rgb.stacked() if jacobian else [None] * len(fr.t)
        for t_full, chan, both in zip(fr.t, fr.rgb.channels, stacked):
            if jacobian:  # the channel and its gradients in one remap
                sampled = cv2.remap(both, xp, yp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[ok]
                i = np.ascontiguousarray(sampled[:, 0])
            else:
                i = cv2.remap(chan, xp, yp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[ok]
            t = t_full[ok]
            im, tm = float(i.mean(dtype=np.float64)), float(t.mean(dtype=np.float64))
            ic = i - np.float32(im)
            tc = t - np.float32(tm)
            vii, vtt, vit = float(ic @ ic), float(tc @ tc), float(ic @ tc)
            if vii <= 1e-12 or vtt <= 1e-12:
                cost += 1.0
                if parts is not None:
                    parts["cost"][f_idx] += 1.0 / parts["cost"].shape[1]
                continue
            rho = vit / math.sqrt(vii * vtt)
            rho_sum += rho
            cost += (1.0 - rho * rho) * vtt / n
            if not jacobian:
                continue
            a = vit / vii  # photometric gain of t ~ a * i + b
            r = np.float32(a) * ic - tc
            g = np.float32(a) * sr
            jac = (sampled[:, 1] * g)[:, None] * dx + (sampled[:, 2] * g)[:, None] * dy
            # variable projection: the step is orthogonal to [1, i] (gain and bias solved in closed
            # form). With P = I - 11'/n - ic ic'/vii (ic is centred, so P is a projection) the normal
            # equations are J'PJ and J'Pr = J'r (r is centred and orthogonal to ic).
            col = jac.sum(axis=0, dtype=np.float64)
            u = (ic @ jac).astype(np.float64)
            jj = (jac.T @ jac).astype(np.float64) - np.outer(col, col) / n - np.outer(u, u) / vii
            jr = (jac.T @ r).astype(np.float64)
            jtj += jj / n
            jtr += jr / n
            if members is not None:
                jac -= (col / n).astype(np.float32)
                jac -= np.outer(ic, u.astype(np.float32) / np.float32(vii))
                for b, sel in enumerate(members):
                    jb, rb = jac[sel], r[sel]
                    parts["cost"][f_idx, b] += float(rb @ rb) / n
                    parts["jtj"][f_idx, b] += (jb.T @ jb).astype(np.float64) / n
                    parts["jtr"][f_idx, b] += (jb.T @ rb).astype(np.float64) / n
        rhos.append(rho_sum / len(fr.t))
    if parts is not None:
        return cost, rhos, jtj, jtr, counts, parts
    return cost, rhos, jtj, jtr, counts


#: Level px^2 over which residuals of edge maps are taken as correlated (for the perspective prior).
_CORRELATION_AREA = 400.0


def perspective_weight(frames: Sequence[SolverFrame], cost: float, counts, prior_px: float | None) -> float:
    """Weight of the Gaussian prior on a homography's normalised perspective parameters ``h20, h21``.

    MAP with a Gaussian prior on the corner displacement q (full-resolution px) that the
    perspective part adds: minimise ``sum(cost) + sigma^2 / (n_eff prior_px^2) |q|^2``, where
    ``sigma^2`` is the mean squared residual per frame and channel (``cost`` and ``counts`` from
    :func:`ecc_cost`) and ``n_eff`` the number of independent samples per frame: residuals of
    cross-modal edge maps are correlated along whole edge segments, taken as
    ``_CORRELATION_AREA`` level px each. 0 without a prior.
    """
    if not prior_px:
        return 0.0
    n_eff = max(sum(counts) / len(frames) / _CORRELATION_AREA, 1.0)
    px_per_unit = 1.0 / (frames[0].nt[0, 0] * frames[0].th.scale)  # full-resolution px per normalised unit
    sigma2 = cost / max(sum(len(fr.t) for fr in frames), 1)
    return sigma2 / (n_eff * prior_px ** 2) * px_per_unit ** 2


def solve_level(frames: Sequence[SolverFrame], matrix: np.ndarray, model: str, *, max_iter: int, eps_px: float,
                max_corner_move: float, perspective_prior: float | None = None, anchor_px: float | None = None):
    """Levenberg-Marquardt on the summed ECC cost of ``frames`` for one shared full-resolution matrix.

    Each frame carries its own pyramid level (all of one size). With ``perspective_prior`` (px)
    and a homography, the perspective part gets a Gaussian prior: moving the corners by
    ``perspective_prior`` px out of the affine costs as much as one standard deviation of the
    data term (see :func:`register_pair`). With ``anchor_px`` every parameter gets one: moving the
    source frame's corners from where ``matrix`` puts them by ``anchor_px`` (root mean square over
    the four corners) costs as much (a small, regularised update of a known transform). Returns
    (matrix, per-frame rho, iterations).
    """
    fr0 = frames[0]
    nt, nr = fr0.nt, fr0.nr
    size_full = full_size(fr0.th)
    matrix = closest_model(matrix, model, size_full)
    to_full = scale_matrix(1.0 / fr0.rgb.scale) @ np.linalg.inv(nr)
    from_full = nt @ scale_matrix(fr0.th.scale)
    p = matrix_to_params(normalise_matrix(np.linalg.inv(to_full) @ matrix @ np.linalg.inv(from_full)), model)

    def full(pp):
        return normalise_matrix(to_full @ params_to_matrix(pp, model) @ from_full)

    corners_full = image_corners(size_full)
    corners_n = transform_points(from_full, corners_full)
    start_corners = transform_points(matrix, corners_full)
    prior_idx = slice(6, 8)
    cost, rhos, jtj, jtr, counts = ecc_cost(frames, [params_to_matrix(p, model)] * len(frames), model)
    weight = perspective_weight(frames, cost, counts, perspective_prior) if model == "homography" else 0.0

    anchor = None
    if anchor_px:
        # corner displacement (normalised units) is linear in the parameters of every model near p:
        # d = C (p' - p); the prior is w |C (p' - p)|^2 / 4, w per normalised unit^2
        p_start = p.copy()
        c_rows = []
        base_corners = transform_points(params_to_matrix(p, model), corners_n)
        for i in range(p.size):
            e = np.zeros(p.size)
            e[i] = 1e-6
            c_rows.append(((transform_points(params_to_matrix(p + e, model), corners_n) - base_corners) / 1e-6).ravel())
        c_mat = np.array(c_rows).T
        anchor = (perspective_weight(frames, cost, counts, anchor_px) / 4.0 * (c_mat.T @ c_mat), p_start)

    def prior(pp):
        value = weight * float(pp[prior_idx] @ pp[prior_idx]) if weight else 0.0
        if anchor is not None:
            d = pp - anchor[1]
            value += float(d @ anchor[0] @ d)
        return value

    def add_prior(jtj_, jtr_, pp):
        if weight or anchor is not None:
            jtj_ = jtj_.copy()
            jtr_ = jtr_.copy()
        if weight:
            jtj_[prior_idx, prior_idx] += weight * np.eye(2)
            jtr_[prior_idx] += weight * pp[prior_idx]
        if anchor is not None:
            jtj_ += anchor[0]
            jtr_ += anchor[0] @ (pp - anchor[1])
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
            c_try = ecc_cost(frames, [params_to_matrix(p_try, model)] * len(frames), model, jacobian=False)[0]
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
        delta = np.abs(transform_points(params_to_matrix(p_new, model), corners_n)
                       - transform_points(params_to_matrix(p, model), corners_n)).max() / nr[0, 0]
        p = p_new
        cost, rhos, jtj, jtr, _ = ecc_cost(frames, [params_to_matrix(p, model)] * len(frames), model)
        total = cost + prior(p)
        lam = max(lam / 10, 1e-7)
        if delta < eps_px:
            break
    return full(p), rhos, iters


def level_cost(frames: Sequence[SolverFrame], matrix_work: np.ndarray) -> float:
    """Summed ECC cost (what the solver minimises) of a working-coordinate matrix on the frames' level."""
    fr0 = frames[0]
    hn = fr0.nr @ level_matrix(matrix_work, fr0.th, fr0.rgb) @ np.linalg.inv(fr0.nt)
    return ecc_cost(frames, [hn / hn[2, 2]] * len(frames), "homography", jacobian=False)[0]


def joint_refine(preps, matrix: np.ndarray, model: str, *, max_pixels: int, max_iter: int,
                 perspective_prior: float | None, max_corner_move: float | None = None, coarse: bool = True):
    """Refine one matrix over several prepared frames on the two finest levels; keep it if the cost drops.

    ``preps`` are prepared frame pairs of one size (``th_levels``, ``rgb_levels``, ``prescale``,
    ``thermal_size``, as :func:`gasdb_tools.registration.pair.prepare` makes them) and ``matrix``
    maps original thermal px to original RGB px. With ``coarse`` the half-resolution level is
    solved first (for a start that may be a pixel or more off). Returns ``(matrix, refined)``: the
    start is kept when the refinement's level-0 cost is clearly (0.1 %) worse (a safety net
    against divergence).
    """
    pre = preps[0].prescale  # all frames have one size, so one prescale
    th_w, th_h = preps[0].thermal_size
    limit = max_corner_move if max_corner_move is not None else 0.05 * math.hypot(th_w, th_h) * pre[0, 0]
    n_levels = min(len(p.th_levels) for p in preps)
    m = pre @ matrix
    for lev in range(min(1 if coarse else 0, n_levels - 1), -1, -1):
        frames = [SolverFrame(p.th_levels[lev], p.rgb_levels[lev], max_pixels, phase=k) for k, p in enumerate(preps)]
        m, _, _ = solve_level(frames, m, model, max_iter=max_iter, eps_px=0.01, max_corner_move=limit,
                              perspective_prior=perspective_prior)
    start = closest_model(pre @ matrix, model, full_size(frames[0].th))
    if level_cost(frames, m) <= 1.001 * level_cost(frames, start):
        return normalise_matrix(np.linalg.inv(pre) @ m), True
    return normalise_matrix(np.linalg.inv(pre) @ start), False
