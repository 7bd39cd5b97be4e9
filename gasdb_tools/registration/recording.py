"""Per-recording refinement: a small, regularised update of the rig calibration for one recording.

One homography per rig is exact for one depth plane only (two cameras side by side see near and
far objects shifted by ``f b / Z``: 5 cm baseline, f = 770 px, 3 m vs 20 m -> about 11 px), and
the plane that matters, where the leak is, differs between recordings. :func:`refine_recording`
keeps the rig matrix ``H`` and estimates, from the recording's own frame pairs, an update ``U``
(RGB px -> RGB px, translation by default: a change of the dominant depth plane shifts the
thermal view along the baseline) so that the recording is aligned with ``U @ H``. A Gaussian prior
holds ``U`` near the identity (``prior_px`` of corner movement costs one standard deviation of
the data term), so frames with little structure leave the rig matrix as it is.

It returns what a QA figure and a provenance record need: the update, the corner shift it
makes, the edge correlation of every frame before and after, and the block residuals before and
after (:func:`gasdb_tools.registration.block_residuals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from gasdb_tools.errors import CalibrationError
from gasdb_tools.registration.features import level_matrix, masked_ncc, warp_features
from gasdb_tools.registration.geometry import (check_matrix, image_corners, local_scale, normalise_matrix,
                                               transform_points)
from gasdb_tools.registration.pair import make_options, prepare
from gasdb_tools.registration.refine import SolverFrame, premapped, solve_level
from gasdb_tools.registration.residuals import block_shifts

__all__ = ["RecordingRefinement", "refine_recording", "UPDATE_MODELS"]

#: Models of the update ``U``.
UPDATE_MODELS = ("translation", "similarity", "affine")


@dataclass(frozen=True)
class RecordingRefinement:
    """The result of :func:`refine_recording`.

    Attributes
    ----------
    update : (3, 3) float64 ndarray
        ``U``: RGB px -> RGB px, near the identity.
    matrix : (3, 3) float64 ndarray
        ``U @ rig_matrix``: the recording's thermal px -> RGB px.
    rig_matrix : (3, 3) float64 ndarray
        The rig calibration it started from.
    model : str
        Model of ``U`` (one of :data:`UPDATE_MODELS`).
    prior_px : float
        The prior's width (px of corner movement).
    shift_px : (float, float)
        Mean and largest distance (RGB px) by which ``U`` moves the four thermal corners.
    score_rig, score : float
        Mean edge correlation of the frames at ``rig_matrix`` and at ``matrix``.
    frame_scores : tuple of (float, float)
        Per frame pair: (score at ``rig_matrix``, score at ``matrix``).
    block_shifts_rig, block_shifts : (3, 3, 2) float64 ndarray
        Median over frames of the per-block residual shift (RGB px; NaN: no clear match) at
        ``rig_matrix`` and at ``matrix``.
    best_frame : int
        Index of the frame with the highest score at ``matrix`` (for a QA figure).
    rgb_size, thermal_size : (int, int)
    """

    update: np.ndarray
    matrix: np.ndarray
    rig_matrix: np.ndarray
    model: str
    prior_px: float
    shift_px: tuple
    score_rig: float
    score: float
    frame_scores: tuple
    block_shifts_rig: np.ndarray
    block_shifts: np.ndarray
    best_frame: int
    rgb_size: tuple
    thermal_size: tuple

    def stats(self) -> dict:
        """JSON-ready record (provenance)."""
        def r(v):
            return None if v is None or not np.isfinite(v) else round(float(v), 4)

        def blocks(b):
            return [[[r(v) for v in cell] for cell in row] for row in b]

        return {"model": self.model, "prior_px": r(self.prior_px),
                "update": [[float(v) for v in row] for row in self.update],
                "shift_px": {"mean": r(self.shift_px[0]), "max": r(self.shift_px[1])},
                "score_rig": r(self.score_rig), "score": r(self.score),
                "frame_scores": [[r(a), r(b)] for a, b in self.frame_scores],
                "block_shift_rig_px": blocks(self.block_shifts_rig), "block_shift_px": blocks(self.block_shifts),
                "frames": len(self.frame_scores)}


def refine_recording(pairs: Iterable, rig_matrix, *, model: str = "translation", prior_px: float = 2.0,
                     max_update_px: float = 20.0, **options) -> RecordingRefinement:
    """Refine a rig calibration for one recording: ``U @ rig_matrix`` with a small, regularised ``U``.

    ``U`` is solved jointly over the recording's frame pairs by the rig solver (pyramid ECC,
    Levenberg-Marquardt, one photometric gain and bias per frame) on the half-resolution level
    and then at full resolution, with each thermal sample first moved by ``rig_matrix`` so that
    ``U`` maps RGB px to RGB px. The prior makes a corner movement of ``prior_px`` (root mean
    square over the corners) cost one standard deviation of the data term: with clear structure
    the frames decide, without it ``U`` stays near the identity.

    Parameters
    ----------
    pairs : iterable of (rgb, thermal) or (rgb, thermal, thermal_mask)
        Frame pairs of one recording (5-20, spread over it), all of one size each.
    rig_matrix : (3, 3) array_like
        The rig calibration (thermal px -> RGB px).
    model : {'translation', 'similarity', 'affine'}
        Model of the update.
    prior_px : float
        Width of the Gaussian prior on the update (px of corner movement).
    max_update_px : float
        The solver never moves a corner further than this.
    **options
        ``sigma``, ``features``, ``max_pixels``, ``max_iter``, ``min_side`` of
        :func:`gasdb_tools.registration.register_pair`.

    Returns
    -------
    RecordingRefinement

    Raises
    ------
    CalibrationError
        No frame pair, frames of different sizes, or featureless frames.
    """
    if model not in UPDATE_MODELS:
        raise ValueError(f"model must be one of {UPDATE_MODELS}, got {model!r}")
    if not prior_px > 0:
        raise ValueError(f"prior_px must be > 0, got {prior_px!r}")
    if not max_update_px > 0:
        raise ValueError(f"max_update_px must be > 0, got {max_update_px!r}")
    rig = normalise_matrix(check_matrix(rig_matrix, "rig_matrix"))
    opts = make_options("homography", options)
    preps = []
    for k, pair in enumerate(pairs):
        items = tuple(pair)
        if len(items) not in (2, 3):
            raise TypeError(f"pairs[{k}] must be an (rgb, thermal) or (rgb, thermal, thermal_mask) tuple of arrays")
        prep = prepare(items[0], items[1], opts, thermal_mask=items[2] if len(items) == 3 else None)
        if preps and (prep.rgb_size != preps[0].rgb_size or prep.thermal_size != preps[0].thermal_size):
            raise CalibrationError(f"frame pair {k} differs in size from pair 0", field=f"pairs[{k}]",
                                   fix="refine each recording (one camera set-up) on its own")
        for levels in (prep.th_levels, prep.rgb_levels):
            del levels[2:]
        preps.append(prep)
    if not preps:
        raise CalibrationError("no frame pairs to refine on", fix="pass the recording's (rgb, thermal) frame pairs")
    pre = preps[0].prescale
    update_work = np.eye(3)
    budget = max(5000, min(opts.max_pixels, 200_000 // len(preps)))
    for lev in range(min(1, min(len(p.th_levels) for p in preps) - 1), -1, -1):
        frames = []
        for k, prep in enumerate(preps):
            fr = SolverFrame(prep.th_levels[lev], prep.rgb_levels[lev], budget, phase=k)
            frames.append(premapped(fr, level_matrix(pre @ rig, fr.th, fr.rgb)))
        update_work, _, _ = solve_level(frames, update_work, model, max_iter=opts.max_iter, eps_px=0.01,
                                        max_corner_move=max_update_px * pre[0, 0], anchor_px=prior_px * pre[0, 0])
    update = normalise_matrix(np.linalg.inv(pre) @ update_work @ pre)
    matrix = normalise_matrix(update @ rig)
    corners = image_corners(preps[0].thermal_size)
    moved = np.hypot(*(transform_points(matrix, corners) - transform_points(rig, corners)).T)
    scores, blocks_rig, blocks = [], [], []
    scale = local_scale(matrix, preps[0].thermal_size)
    for prep in preps:
        th0, rgb0 = prep.th_levels[0], prep.rgb_levels[0]
        pair_scores = []
        for m, out in ((rig, blocks_rig), (matrix, blocks)):
            m_work = pre @ m
            warped, valid = warp_features(rgb0, m_work, th0.size)
            pair_scores.append(masked_ncc(th0.feat, warped, valid & th0.valid))
            out.append(block_shifts(th0, rgb0, m_work, min_peak=0.4) * scale)
        scores.append(tuple(pair_scores))
    sc = np.array(scores)
    return RecordingRefinement(
        update=update, matrix=matrix, rig_matrix=rig, model=model, prior_px=float(prior_px),
        shift_px=(float(moved.mean()), float(moved.max())), score_rig=float(sc[:, 0].mean()),
        score=float(sc[:, 1].mean()), frame_scores=tuple((float(a), float(b)) for a, b in scores),
        block_shifts_rig=_block_median(blocks_rig), block_shifts=_block_median(blocks),
        best_frame=int(np.argmax(sc[:, 1])), rgb_size=preps[0].rgb_size, thermal_size=preps[0].thermal_size)


def _block_median(stack_list) -> np.ndarray:
    stack = np.stack(stack_list)
    out = np.full(stack.shape[1:], np.nan)
    finite = np.isfinite(stack[..., 0])
    for i in range(stack.shape[1]):
        for j in range(stack.shape[2]):
            sel = finite[:, i, j]
            if sel.any():
                out[i, j] = np.median(stack[sel, i, j], axis=0)
    return out
