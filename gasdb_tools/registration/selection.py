"""Choosing the transform model by held-out error: frames (or regions) left out, not the fit's own residual.

A more general model always fits the data it was fitted on at least as well, so the fit's own
residual cannot choose between translation, similarity, affine and homography. Cross-validation
can: each model is fitted with one fold of the data left out and scored on that fold. With
three or more recordings (``groups``) the folds are the recordings (they show different scenes,
so parameters that only absorb one scene's parallax do not carry over to the others); otherwise
the quadrants of the thermal frame, left out in every frame at once (a model must extrapolate to
a quarter of the view it has not seen, which is what the corners of a calibration need; frames of
one recording show nearly the same scene, so leaving a frame out would test little). The choice
follows the one-standard-error rule [1]_: the simplest model whose held-out error is within one
standard error of the best model's.

The fits are Gauss-Newton steps on the ECC cost of :mod:`gasdb_tools.registration.refine`: the
cost of every frame (or block) is linearised once around each model's fit on all the data, so a
fold's fit is one small linear solve (the usual approximate leave-one-out, as in the
infinitesimal jackknife), and its held-out error is that quadratic evaluated on the left-out part.

References
----------
.. [1] T. Hastie, R. Tibshirani, J. Friedman, "The Elements of Statistical Learning", 2nd ed.,
   Springer 2009, section 7.10 (cross-validation, the one-standard-error rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gasdb_tools.registration.features import level_matrix
from gasdb_tools.registration.geometry import MODELS, check_model, normalise_matrix, scale_matrix
from gasdb_tools.registration.refine import SolverFrame, ecc_cost, perspective_weight

__all__ = ["ModelChoice", "select_model", "FOLDS"]

#: How the data are split for cross-validation.
FOLDS = ("frames", "quadrants")


@dataclass(frozen=True)
class ModelChoice:
    """The evidence behind a model choice (:func:`select_model`).

    Attributes
    ----------
    model : str
        The chosen model.
    best : str
        The model with the lowest held-out error (the chosen one is simpler or equal).
    matrices : dict
        Model -> its (3, 3) transform fitted on all the data (the coordinates the frames were
        prepared in; see :func:`select_model`).
    heldout : dict
        Model -> held-out error: the ECC cost (``(1 - rho^2)`` times the feature variance,
        summed over channels) on the left-out folds, summed over folds.
    heldout_se : dict
        Model -> standard error of its held-out error's difference to ``best`` (0 for ``best``).
    folds : str
        ``'frames'`` (one frame left out at a time) or ``'quadrants'`` (one quarter of the thermal
        frame, in every frame at once).
    n_folds : int
        Number of folds.
    reason : str
        The choice in words.
    """

    model: str
    best: str
    matrices: dict
    heldout: dict
    heldout_se: dict
    folds: str
    n_folds: int
    reason: str

    def to_dict(self) -> dict:
        """JSON-ready summary (what a calibration file records)."""
        return {"model": self.model, "best": self.best, "folds": self.folds, "n_folds": self.n_folds,
                "heldout_error": {m: _r(v) for m, v in self.heldout.items()},
                "heldout_se": {m: _r(v) for m, v in self.heldout_se.items()}, "reason": self.reason}


def _r(value):
    return round(float(value), 7) if np.isfinite(value) else None


def _subspace(model: str):
    """``(p_fixed, S)``: the model's matrices are ``p = p_fixed + S theta`` in the 8 homography parameters.

    The parameters are ``H.flat[:8]`` of the normalised matrix (``H[2, 2] = 1``); every model is an
    affine subspace of them (the normalisation keeps a translation a translation).
    """
    eye = np.eye(8)
    if model == "homography":
        return np.zeros(8), eye
    if model == "affine":
        return np.zeros(8), eye[:, :6]
    if model == "similarity":
        a = eye[:, 0] + eye[:, 4]
        b = eye[:, 3] - eye[:, 1]
        return np.zeros(8), np.stack([a, b, eye[:, 2], eye[:, 5]], 1)
    p_fixed = eye[:, 0] + eye[:, 4]
    return p_fixed, np.stack([eye[:, 2], eye[:, 5]], 1)


def _step(p_centre, jtj, jtr, model, weight=0.0):
    """Gauss-Newton minimiser of ``|r + J (p - p_centre)|^2 + weight |p[6:8]|^2`` over the model's subspace."""
    p_fixed, s = _subspace(model)
    d0 = p_fixed - p_centre
    a = jtj.copy()
    b = jtr + jtj @ d0
    if weight and model == "homography":
        a[6:8, 6:8] += weight * np.eye(2)
        b[6:8] += weight * p_fixed[6:8]
    a = s.T @ a @ s
    a = a + 1e-9 * max(float(np.trace(a)), 1e-12) * np.eye(a.shape[0])
    theta = np.linalg.solve(a, -s.T @ b)
    return p_fixed + s @ theta


def select_model(frames: Sequence[SolverFrame], matrix, *, models: Sequence[str] = MODELS, folds: str | None = None,
                 groups: Sequence | None = None, grid=(2, 2), perspective_prior: float | None = 2.0) -> ModelChoice:
    """Fit every model on the frames and choose one by its held-out error (module docstring).

    Parameters
    ----------
    frames : sequence of SolverFrame
        The frame pairs on one pyramid level (all of one size).
    matrix : (3, 3) array_like
        Thermal -> RGB transform (full-resolution working coordinates of the frames' pyramids)
        around which every model is fitted, e.g. the joint homography estimate.
    models : sequence of str
        Candidates, from the simplest to the most general (a subsequence of :data:`MODELS`).
    folds : {'frames', 'quadrants'}, optional
        ``'frames'``: leave frames out (with ``groups``, all frames of a group at once);
        ``'quadrants'``: leave a quarter of the view out, in every frame at once. Default:
        ``'frames'`` when ``groups`` has three or more labels, else ``'quadrants'``: frames of one
        recording show nearly the same scene, so leaving one out tests little.
    groups : sequence, optional
        A label per frame (its recording); frames with one label form one fold.
    grid : (int, int)
        Blocks of the thermal frame for ``'quadrants'`` (2 x 2: its quadrants).
    perspective_prior : float or None
        The homography candidate's prior on its perspective part (px at the corners; see
        :func:`gasdb_tools.registration.register_pair`), the same in every fold.

    Returns
    -------
    ModelChoice
    """
    models = [check_model(m) for m in models]
    if not models or [m for m in MODELS if m in models] != list(models):
        raise ValueError(f"models must be a non-empty subsequence of {MODELS}, got {models!r}")
    if not frames:
        raise ValueError("frames is empty")
    if groups is not None:
        groups = [str(g) for g in groups]
        if len(groups) != len(frames):
            raise ValueError(f"groups needs one label per frame: got {len(groups)} for {len(frames)} frames")
    labels = sorted(set(groups)) if groups is not None else None
    if folds is None:
        folds = "frames" if labels is not None and len(labels) >= 3 else "quadrants"
    if folds not in FOLDS:
        raise ValueError(f"folds must be one of {FOLDS}, got {folds!r}")
    if folds == "frames" and (len(frames) < 2 or (labels is not None and len(labels) < 2)):
        raise ValueError("folds='frames' needs at least 2 frames (2 groups with groups)")
    fr0 = frames[0]
    to_norm = fr0.nr @ scale_matrix(fr0.rgb.scale)
    from_norm = np.linalg.inv(fr0.nt @ scale_matrix(fr0.th.scale))

    def normalised(m):
        return normalise_matrix(fr0.nr @ level_matrix(m, fr0.th, fr0.rgb) @ np.linalg.inv(fr0.nt))

    def full(p):
        h = np.append(p, 1.0).reshape(3, 3)
        return normalise_matrix(np.linalg.inv(to_norm) @ h @ np.linalg.inv(from_norm))

    def units(p):
        """Per-unit (cost, JtJ, Jtr) linearised at homography parameters p."""
        hn = np.append(p, 1.0).reshape(3, 3)
        parts = ecc_cost(frames, [hn] * len(frames), "homography", blocks=grid)[5]
        if folds == "quadrants":  # one unit per quadrant, over every frame
            return parts["cost"].sum(0), parts["jtj"].sum(0), parts["jtr"].sum(0)
        cost, jtj, jtr = parts["cost"].sum(1), parts["jtj"].sum(1), parts["jtr"].sum(1)
        if labels is None:
            return cost, jtj, jtr
        member = [np.array([g == label for g in groups]) for label in labels]
        return (np.array([cost[m].sum(0) for m in member]), np.array([jtj[m].sum(0) for m in member]),
                np.array([jtr[m].sum(0) for m in member]))

    p0 = normalised(np.asarray(matrix, np.float64)).flat[:8].copy()
    hn0 = np.append(p0, 1.0).reshape(3, 3)
    cost0, _, _, _, counts = ecc_cost(frames, [hn0] * len(frames), "homography", jacobian=False)
    weight = perspective_weight(frames, cost0, counts, perspective_prior)
    base = units(p0)
    fitted, heldout_folds = {}, {}
    for model in models:
        w = weight if model == "homography" else 0.0
        p_m = _step(p0, base[1].sum(0), base[2].sum(0), model, w)
        cost, jtj, jtr = units(p_m)  # linearise again at the model's own fit
        p_m = _step(p_m, jtj.sum(0), jtr.sum(0), model, w)
        cost, jtj, jtr = units(p_m)
        fitted[model] = p_m
        errors = []
        for k in range(cost.shape[0]):
            keep = np.arange(cost.shape[0]) != k
            p_k = _step(p_m, jtj[keep].sum(0), jtr[keep].sum(0), model, w)
            d = p_k - p_m
            errors.append(float(cost[k] + 2.0 * jtr[k] @ d + d @ jtj[k] @ d))
        heldout_folds[model] = np.array(errors)
    total = {m: float(e.sum()) for m, e in heldout_folds.items()}
    best = min(models, key=lambda m: total[m])
    se = {}
    for m in models:
        diff = heldout_folds[m] - heldout_folds[best]
        se[m] = float(np.std(diff, ddof=1) * np.sqrt(diff.size)) if diff.size > 1 else 0.0
    chosen = next(m for m in models if total[m] - total[best] <= se[m])
    n_folds = len(heldout_folds[best])
    unit = "quadrant" if folds == "quadrants" else ("frame" if labels is None else "group")
    parts = []
    for m in models:
        if m == best:
            parts.append(f"{m} {total[m]:.5f} (lowest)")
        else:
            parts.append(f"{m} {total[m]:.5f} ({total[m] - total[best]:+.5f} +- {se[m]:.5f})")
    if chosen == best:
        why = f"{chosen} has the lowest held-out error"
        simpler = [m for m in models[:models.index(chosen)]]
        if simpler:
            why += f"; {', '.join(simpler)} {'is' if len(simpler) == 1 else 'are'} worse by more than one standard error"
    else:
        why = (f"{chosen} is within one standard error of the lowest held-out error ({best}); "
               "the simpler model is kept")
    reason = f"{why} (held-out ECC error over {n_folds} {unit} folds: {'; '.join(parts)})"
    return ModelChoice(model=chosen, best=best, matrices={m: full(p) for m, p in fitted.items()},
                       heldout=total, heldout_se=se, folds=folds, n_folds=n_folds, reason=reason)
