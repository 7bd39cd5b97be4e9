"""One transform for a fixed rig from many frame pairs: median of corners, joint refinement, QA."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from gasdb_tools.errors import CalibrationError
from gasdb_tools.registration.features import full_size, masked_ncc, warp_features
from gasdb_tools.registration.geometry import (MODELS, check_matrix, closest_model, corner_error, default_initial,
                                               fit_model, image_corners, local_scale, normalise_matrix,
                                               transform_points)
from gasdb_tools.registration.pair import estimate_prepared, finish, make_options, prepare
from gasdb_tools.registration.refine import SolverFrame, joint_refine, level_cost
from gasdb_tools.registration.selection import ModelChoice, select_model
from gasdb_tools.registration.residuals import block_shifts

__all__ = ["FrameResidual", "RigRegistration", "register_pairs"]


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
        Mean distance (thermal corners, RGB px) between the frame's own estimate, brought to the
        result's model (its closest transform of that model), and the combined transform (NaN
        when registration failed).
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
    model_choice : ModelChoice or None
        With ``model='auto'``: the held-out evidence behind ``model``.
    group_apart : dict
        Group label -> corner distance (RGB px) between the median transform of its frames and
        that of the other frames (with ``groups``; groups of fewer than 2 frames are skipped).
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
    model_choice: ModelChoice | None = None
    group_apart: dict = field(default_factory=dict)

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
            "group_apart_px": {k: _r(v) for k, v in sorted(self.group_apart.items())},
            "model_choice": self.model_choice.to_dict() if self.model_choice is not None else None,
        }


def _r(value, ndigits=4):
    return None if value is None or not np.isfinite(value) else round(float(value), ndigits)


def register_pairs(pairs: Iterable, *, model: str = "auto", initial=None, refine: bool = True,
                   groups: Sequence | None = None, min_frames: int = 3, outlier_px: float = 3.0,
                   max_deviation_px: float = 4.0, max_group_px: float = 3.0, max_block_px: float = 2.0,
                   **options) -> RigRegistration:
    """One transform for a fixed rig from many RGB-thermal frame pairs (methods.md B.1 step 4).

    1. Each pair is registered on its own (:func:`register_pair`); pairs that fail (featureless,
       no convergence, low score) are left out with the reason.
    2. The four projected thermal corners of the remaining estimates are combined by their
       **median** and the model fitted to the median corners; frames further than
       ``max(outlier_px, 3 x median deviation)`` from it are dropped and the median retaken.
    3. With ``refine``, one transform is refined **jointly** over all used frames (one photometric
       gain and bias per frame and channel) on the two finest pyramid levels, from the median.
       The joint result is kept only when it raises the summed ECC score. When the per-frame
       estimates scatter (median deviation above ``FLAT_SCATTER_PX``: few shared edges, a flat
       joint cost), the refinement starts from the broad minimum of the joint cost near the
       median (:func:`_broad_minimum`) and samples every pixel.
    4. QA: per frame, its own estimate's corner deviation from the result and its score at the
       result; per 3x3 block of the thermal frame, the median over frames of the local residual
       shift (:func:`block_residuals`, +-12 px, clear matches only) where a third of the frames
       have one. ``consistent`` is False, with a reason in ``warnings``, when the per-frame
       estimates disagree (median deviation above ``max_deviation_px``), a quarter of the frames
       are outliers, a ``groups`` member (e.g. a recording) lies more than ``max_group_px`` from
       the other frames, or a block is off by more than ``max_block_px`` (parallax, distortion).

    Parameters
    ----------
    pairs : iterable of (rgb, thermal) or (rgb, thermal, thermal_mask)
        Frame pairs of one rig set-up, all RGB frames of one size and all thermal frames of one
        size (a thermal mask marks its valid pixels, e.g. of a warped or cropped frame). Spread
        them over recordings, times of day and scenes (10-30 pairs).
        Memory: about 15 MB per 640x512 pair is held until the end.
    model : str
        ``'auto'`` (default: the per-frame estimates are homographies, then every model is fitted
        with recordings (``groups``, three or more) or quadrants of the view left out and the
        simplest within one standard error of the best is kept; see ``model_choice``) or one of
        :data:`MODELS`.
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
    max_deviation_px, max_group_px, max_block_px : float
        Thresholds of the consistency flag (RGB px; calibrated on real aligned pairs, see
        ``calibration/README.md``).
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
    opts = make_options(model, options)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty; pass a list of (rgb, thermal) frame pairs")
    if groups is not None:
        groups = list(groups)
        if len(groups) != len(pairs):
            raise ValueError(f"groups needs one label per pair: got {len(groups)} labels for {len(pairs)} pairs")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    fit = "homography" if opts.model == "auto" else opts.model
    rgb_size = th_size = None
    prepared, per_frame, reasons = [], [], []
    for k, pair in enumerate(pairs):
        rgb, thermal, mask = _unpack(pair, k)
        rs, ts = (rgb.shape[1], rgb.shape[0]), (thermal.shape[1], thermal.shape[0])
        if rgb_size is None:
            rgb_size, th_size = rs, ts
        elif rs != rgb_size or ts != th_size:
            raise CalibrationError(f"frame pair {k} has sizes RGB {rs[0]}x{rs[1]} / thermal {ts[0]}x{ts[1]}, but "
                                   f"pair 0 has RGB {rgb_size[0]}x{rgb_size[1]} / thermal {th_size[0]}x{th_size[1]}",
                                   field=f"pairs[{k}]", fix="calibrate each camera set-up (image sizes) separately")
        try:
            prep = prepare(rgb, thermal, opts, thermal_mask=mask)
            init, frame_opts = _start(prep, initial, per_frame, opts)
            # with a joint refinement to follow, the frame's own estimate stops one level short of
            # full resolution: it only seeds the median and the QA
            m, iters, coarse = estimate_prepared(prep, init, frame_opts, fit, finest=1 if refine else 0)
            reg = finish(prep, normalise_matrix(np.linalg.inv(prep.prescale) @ m), m, opts, iters, coarse, model=fit)
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
        return fit_model(corners, np.median(np.stack([proj[k] for k in keys]), axis=0), fit)

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
    used_preps = [prepared[k] for k in used]
    # the joint steps share one budget of samples (each frame keeps at least 5,000)
    budget = max(5000, min(opts.max_pixels, _JOINT_SAMPLES // len(used_preps)))
    # scattered per-frame estimates: a flat joint cost, whose broad minimum the median may miss
    # (:func:`_broad_minimum`); there every pixel counts (on a flat cost the sampling grid moves the optimum)
    flat = refine and np.median([dev[k] for k in used]) > FLAT_SCATTER_PX
    if flat:
        budget = max(budget, used_preps[0].thermal_size[0] * used_preps[0].thermal_size[1])
    joint = dict(max_pixels=budget, max_iter=opts.max_iter, perspective_prior=opts.perspective_prior)
    choice = None
    chosen = fit
    if opts.model == "auto":
        lev = min(1, min(len(p.th_levels) for p in used_preps) - 1)
        pre = used_preps[0].prescale
        frames_lev = [SolverFrame(p.th_levels[lev], p.rgb_levels[lev], budget, phase=k) for k, p in enumerate(used_preps)]
        choice = select_model(frames_lev, pre @ combined, perspective_prior=opts.perspective_prior,
                              groups=[groups[k] for k in used] if groups is not None else None,
                              models=[m for m in MODELS if m != "translation" or np.allclose(pre, np.eye(3))])
        chosen = choice.model
        combined = normalise_matrix(np.linalg.inv(pre) @ choice.matrices[chosen])
    if flat:
        combined = _broad_minimum(used_preps, combined, chosen, budget=budget)
    if refine:  # from the choice's half-resolution fit straight to full resolution; the median needs both levels
        combined, refined = joint_refine(used_preps, combined, chosen, **joint)
    # QA
    frames, shifts, scores = [], [], []
    scale = local_scale(combined, th_size)
    for k in range(len(pairs)):
        reg, prep = per_frame[k], prepared[k]
        if reg is None:
            frames.append(FrameResidual(k, False, reasons[k], float("nan"), float("nan"), float("nan"), None, None))
            continue
        m_work = prep.prescale @ combined
        th0, rgb0 = prep.th_levels[0], prep.rgb_levels[0]
        warped, valid = warp_features(rgb0, m_work, th0.size)
        score = masked_ncc(th0.feat, warped, valid & th0.valid)
        block = block_shifts(th0, rgb0, m_work, radius=BLOCK_RADIUS, min_peak=BLOCK_MIN_PEAK,
                             weak_peak=BLOCK_WEAK_PEAK) * scale
        frames.append(FrameResidual(k, k in used, reasons[k], reg.score, score,
                                    corner_error(closest_model(reg.matrix, chosen, th_size), combined, th_size), block,
                                    reg.matrix))
        if k in used:
            shifts.append(block)
            scores.append(score)
    stack = np.stack(shifts)
    finite = np.isfinite(stack[..., 0])
    block_median = np.full(stack.shape[1:], np.nan)
    need = max(3, -(-len(used) // 3))  # a block needs a clear match in a third of the frames (and 3)
    if len(used) < 3:
        need = len(used)
    for i in range(stack.shape[1]):
        for j in range(stack.shape[2]):
            sel = finite[:, i, j]
            if sel.sum() >= need:
                block_median[i, j] = np.median(stack[sel, i, j], axis=0)
    warnings_ = []
    devs = np.array([frames[k].corner_deviation for k in used])
    if len(used) >= 2 and np.median(devs) > max_deviation_px:
        warnings_.append(f"per-frame estimates disagree: median corner deviation {np.median(devs):.2f} px "
                         f"(limit {max_deviation_px} px); the camera may have moved, or the frames show "
                         "too little common structure")
    n_out = len(ok) - len(used)
    if n_out > 0.25 * len(ok):
        warnings_.append(f"{n_out} of {len(ok)} registered frames are outliers: the rig may have changed "
                         "between recordings")
    group_apart = {}
    if groups is not None:
        labels = sorted({str(groups[k]) for k in used})
        for label in labels if len(labels) > 1 else []:
            members = [k for k in used if str(groups[k]) == label]
            others = [k for k in used if str(groups[k]) != label]
            if len(members) < 2 or len(others) < 2:
                continue
            # the group against the others (not against all, which it pulls towards itself)
            group_apart[label] = corner_error(combine(members), combine(others), th_size)
            if group_apart[label] > max_group_px:
                warnings_.append(f"group {label!r} ({len(members)} frames) alone gives a transform "
                                 f"{group_apart[label]:.2f} px from the other frames' (limit {max_group_px} px): "
                                 "that camera set-up differs (calibrate it as its own rig)")
    mags = np.hypot(block_median[..., 0], block_median[..., 1])
    if np.isfinite(mags).any() and np.nanmax(mags) > max_block_px:
        i, j = np.unravel_index(int(np.nanargmax(mags)), mags.shape)
        warnings_.append(f"block residuals disagree: block (row {i}, col {j}) is off by {mags[i, j]:.2f} px "
                         f"(limit {max_block_px} px): parallax of near objects or lens distortion")
    consistent = not warnings_
    if len(ok) < len(pairs):
        warnings_.append(f"{len(pairs) - len(ok)} of {len(pairs)} frame pairs did not register")
    return RigRegistration(matrix=combined, model=chosen, score=float(np.mean(scores)), frames=tuple(frames),
                           block_shifts=block_median, consistent=consistent, warnings=tuple(warnings_),
                           refined=refined, rgb_size=tuple(rgb_size), thermal_size=tuple(th_size),
                           model_choice=choice, group_apart=group_apart)


#: Smallest NCC peak of a block's match for its residual shift to count in the QA.
BLOCK_MIN_PEAK = 0.4
#: Below this NCC peak a block's match must also lead every match more than 3 px away by 0.02: on the
#: simulated rig (an exact homography) a faint repeated texture matched 11 px off at 0.42 against a
#: rival at 0.41, while the real parallax matches of the RoadScene test peak at 0.6-0.9.
BLOCK_WEAK_PEAK = 0.5
#: Search radius (thermal px) of the block residuals in the QA: parallax of 11 px (a plane at 3 m
#: against one at 20 m, 5 cm baseline, f = 770 px) must still be found.
BLOCK_RADIUS = 12

#: Registered frames after which the others start from their consensus with a narrower search.
_CONSENSUS_FRAMES = 3


#: Samples per pyramid level that the joint refinement and the model choice spread over the frames.
_JOINT_SAMPLES = 200_000


#: Median corner deviation (px) of the per-frame estimates from their median above which the joint
#: cost is taken as flat (:func:`_broad_minimum`; well-textured frames agree within a few tenths).
FLAT_SCATTER_PX = 1.0
#: Step (px of corner motion) of the similarity grid of :func:`_broad_minimum`.
_BROAD_STEP_PX = 4.0


def _broad_minimum(preps, combined, model, *, budget):
    """Start of the joint refinement on a flat cost: the vertex of a quadratic fitted to the joint cost
    on a 3^4 similarity grid about the median (shift, rotation and scale of the thermal frame about
    its centre, each moving the corners by ``_BROAD_STEP_PX``), on the half-resolution level.

    On real cross-modal frames with few shared edges (the TNO ``Duine`` sequence: dunes and a
    track) the per-frame estimates scatter by 1-3 px and the joint ECC cost is flat to 0.1 % over
    a few pixels, with shallow local minima whose positions move with encoder noise and with the
    warp of the frames. A quadratic fitted over a grid wider than those ripples finds the broad
    minimum they sit in (response-surface fitting, the coarse-scale analogue of the Gauss-Newton
    model); the joint refinement then only descends into the nearest ripple. The grid costs 81
    cost evaluations (no Jacobians). The median is kept when the fit has no minimum or its vertex
    lies beyond two grid steps.
    """
    pre = preps[0].prescale
    lev = min(1, min(len(p.th_levels) for p in preps) - 1)
    frames = [SolverFrame(p.th_levels[lev], p.rgb_levels[lev], budget, phase=k) for k, p in enumerate(preps)]
    size = full_size(frames[0].th)
    th_w, th_h = size
    half_diag = 0.5 * float(np.hypot(th_w, th_h))
    step = _BROAD_STEP_PX * pre[0, 0]
    centre = np.array([[1.0, 0, (th_w - 1) / 2], [0, 1.0, (th_h - 1) / 2], [0, 0, 1.0]])
    m0 = closest_model(pre @ combined, model, size)

    def moved(q):
        dx, dy, rot, sc = np.asarray(q) * step
        a, k = rot / half_diag, 1.0 + sc / half_diag
        r = np.array([[k * np.cos(a), -k * np.sin(a), dx], [k * np.sin(a), k * np.cos(a), dy], [0, 0, 1.0]])
        return m0 @ centre @ r @ np.linalg.inv(centre)

    qs = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=4)))
    costs = np.array([level_cost(frames, moved(q)) for q in qs])
    iu = np.triu_indices(4)
    design = np.column_stack([np.ones(len(qs)), qs, qs[:, iu[0]] * qs[:, iu[1]]])
    coef = np.linalg.lstsq(design, costs, rcond=None)[0]
    hess = np.zeros((4, 4))
    hess[iu] = coef[5:]
    hess = hess + hess.T  # diagonal doubled: d2/dq2 of c q^2 is 2c
    try:
        if np.linalg.eigvalsh(hess).min() <= 0:
            return combined
        q = -np.linalg.solve(hess, coef[1:5])
    except np.linalg.LinAlgError:
        return combined
    if not np.all(np.isfinite(q)) or np.abs(q).max() > 2.0:
        return combined
    return normalise_matrix(np.linalg.inv(pre) @ closest_model(moved(q), model, size))


def _start(prep, initial, done, opts):
    """Start transform and options of the next frame's search.

    The first frames search the full rotation x scale grid around ``initial`` (or the nominal
    transform). Once ``_CONSENSUS_FRAMES`` frames have registered, the rest start from the median
    of their corners with a +-1 degree x +-2 % grid (shifts of any size are still found by phase
    correlation): a frame from a camera that moved further ends up an outlier, which is flagged.
    """
    base = (check_matrix(initial, "initial") if initial is not None
            else default_initial(prep.rgb_size, prep.thermal_size))
    regs = [r for r in done if r is not None]
    if len(regs) < _CONSENSUS_FRAMES or not opts.search:
        return base, opts
    corners = image_corners(prep.thermal_size)
    median = np.median(np.stack([transform_points(r.matrix, corners) for r in regs]), axis=0)
    narrow = dataclasses.replace(opts, max_rotation=min(opts.max_rotation, 1.0), max_scale=min(opts.max_scale, 0.02))
    return fit_model(corners, median, "homography"), narrow


def _unpack(pair, k):
    """``(rgb, thermal, thermal_mask or None)`` of one item of ``pairs``."""
    try:
        items = tuple(pair)
    except TypeError:
        items = ()
    if len(items) not in (2, 3):
        raise TypeError(f"pairs[{k}] must be an (rgb, thermal) or (rgb, thermal, thermal_mask) tuple of arrays")
    rgb, thermal = np.asarray(items[0]), np.asarray(items[1])
    return rgb, thermal, (items[2] if len(items) == 3 else None)
