"""Registering one RGB-thermal pair: coarse search, then coarse-to-fine ECC refinement."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gasdb_tools.errors import CalibrationError
from gasdb_tools.registration.coarse import phase_candidates, similarity_grid
from gasdb_tools.registration.features import (FEATURES, check_image, check_mask, edge_density, feature_pyramid,
                                               full_size, gray32, masked_ncc, n_levels, warp_features)
from gasdb_tools.registration.geometry import (MODEL_CHOICES, MODELS, check_matrix, default_initial, image_corners,
                                               is_convex_quad, normalise_matrix, resize_matrix, transform_points)
from gasdb_tools.registration.refine import SolverFrame, joint_refine, solve_level
from gasdb_tools.registration.selection import ModelChoice, select_model

__all__ = ["Registration", "register_pair", "Options", "Prepared", "make_options", "prepare", "register_prepared",
           "estimate_prepared", "finish", "schedule"]


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
    model_choice : ModelChoice or None
        With ``model='auto'``: the held-out evidence behind ``model``
        (:func:`gasdb_tools.registration.selection.select_model`).
    """

    matrix: np.ndarray
    model: str
    score: float
    overlap: float
    edge_density: tuple
    iterations: int
    coarse_score: float
    model_choice: ModelChoice | None = None

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Registration(model={self.model!r}, score={self.score:.3f}, overlap={self.overlap:.2f}, "
                f"matrix={np.array2string(self.matrix, precision=4, suppress_small=True)})")


@dataclass(frozen=True)
class Options:
    """The knobs of :func:`register_pair` (see its docstring), checked once."""

    model: str = "auto"
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
        if self.model not in MODEL_CHOICES:
            raise ValueError(f"model must be one of {MODEL_CHOICES}, got {self.model!r}")
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
class Prepared:
    rgb_levels: list
    th_levels: list
    rgb_size: tuple
    thermal_size: tuple
    prescale: np.ndarray  # original rgb px -> working rgb px


def prepare(rgb, thermal, opts: Options, *, rgb_mask=None, thermal_mask=None) -> Prepared:
    rgb = check_image(rgb, "rgb")
    thermal = check_image(thermal, "thermal")
    rgb_mask = check_mask(rgb_mask, rgb.shape, "rgb_mask")
    thermal_mask = check_mask(thermal_mask, thermal.shape, "thermal_mask")
    rgb_size = (rgb.shape[1], rgb.shape[0])
    th_size = (thermal.shape[1], thermal.shape[0])
    g_rgb = gray32(rgb)
    prescale = np.eye(3)
    ratio = max(rgb_size[0] / th_size[0], rgb_size[1] / th_size[1])
    if ratio > 1.5:  # a much larger RGB frame: bring it to about the thermal resolution first
        if opts.model == "translation":  # (auto never chooses it here: the similarity grid needs scale)
            raise ValueError(f"model='translation' needs frames of about one resolution, got RGB "
                             f"{rgb_size[0]}x{rgb_size[1]} and thermal {th_size[0]}x{th_size[1]}; "
                             "use model='similarity' or larger")
        k = int(round(ratio))
        new = (rgb_size[0] // k, rgb_size[1] // k)  # crop to a multiple of k: an exact, isotropic k-fold mean
        g_rgb = cv2.resize(g_rgb[:new[1] * k, :new[0] * k], new, interpolation=cv2.INTER_AREA)
        if rgb_mask is not None:
            rgb_mask = cv2.resize(rgb_mask[:new[1] * k, :new[0] * k].astype(np.uint8), new,
                                  interpolation=cv2.INTER_NEAREST) > 0
        prescale = resize_matrix((new[0] * k, new[1] * k), new)
    levels = min(n_levels(th_size, opts.min_side), 6)
    th_levels = feature_pyramid(gray32(thermal), thermal_mask, levels=levels, sigma=opts.sigma, name="thermal frame",
                                features=opts.features)
    rgb_levels = feature_pyramid(g_rgb, rgb_mask, levels=levels, sigma=opts.sigma, name="RGB frame",
                                 features=opts.features)
    return Prepared(rgb_levels, th_levels, rgb_size, th_size, prescale)


def schedule(model: str, lev: int) -> str:
    """Model used on pyramid level ``lev`` (0 = finest) when the final model is ``model``.

    A homography is estimated on the finest level only, from an affine fitted on the coarser
    ones: its perspective part is weakly determined by cross-modal edges, so it must not steer
    the coarse levels.
    """
    if model == "homography" and lev > 0:
        return "affine"
    return model


def register_pair(rgb, thermal, *, model: str = "auto", initial=None, rgb_mask=None, thermal_mask=None,
                  **options) -> Registration:
    """Register one RGB-thermal pair: the matrix mapping thermal pixels onto RGB pixels.

    Edge features of both frames (methods.md B.1) are aligned in three steps:

    1. a coarse global search around ``initial``: a grid of rotations x scales, the translation of
       each candidate by Hanning-windowed phase correlation [3]_ on a ~160 px pyramid level,
       scored by NCC; the best 8 are checked one level finer and the best 3 kept;
    2. each of the 3 refined on that level by Levenberg-Marquardt maximisation of the enhanced
       correlation coefficient [2]_ (affine), the best kept;
    3. coarse to fine down to full resolution, the requested model on the finest level. With
       ``model='auto'`` (the default) a homography is estimated to half resolution, then every
       model is fitted with each quadrant of the thermal frame left out in turn and the simplest
       whose held-out error is within one standard error of the best is kept
       (:func:`gasdb_tools.registration.select_model`) and refined at full resolution; the
       evidence is in ``model_choice``.

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
    model : {'auto', 'translation', 'similarity', 'affine', 'homography'}
        Transform model of the result; ``'auto'`` chooses by held-out error (step 3).
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
    >>> from gasdb_tools.registration import corner_error
    >>> from gasdb_tools.synth import SynthRig
    >>> rig = SynthRig(seed=3, size=(320, 256), distractors=False)
    >>> reg = register_pair(rig.rgb(2.0), rig.thermal(2.0 - rig.offset_s)[0])
    >>> bool(corner_error(reg.matrix, rig.homography, (320, 256)) < 1.0)
    True
    """
    opts = make_options(model, options)
    prep = prepare(rgb, thermal, opts, rgb_mask=rgb_mask, thermal_mask=thermal_mask)
    init = (check_matrix(initial, "initial") if initial is not None
            else default_initial(prep.rgb_size, prep.thermal_size))
    return register_prepared(prep, init, opts)


def make_options(model, options: dict) -> Options:
    known = {f for f in Options.__dataclass_fields__ if f != "model"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return Options(model=model, **options)


def register_prepared(prep: Prepared, initial: np.ndarray, opts: Options) -> Registration:
    """Register a prepared pair (:func:`register_pair`'s steps after the feature pyramids)."""
    fit = "homography" if opts.model == "auto" else opts.model
    # with model='auto' the full-resolution solve comes after the choice (joint_refine below)
    m, iters, coarse_score = estimate_prepared(prep, initial, opts, fit, finest=1 if opts.model == "auto" else 0)
    choice = None
    if opts.model == "auto":
        lev = min(1, len(prep.th_levels) - 1)
        choice = select_model([SolverFrame(prep.th_levels[lev], prep.rgb_levels[lev], opts.max_pixels)], m,
                              perspective_prior=opts.perspective_prior,
                              models=[mod for mod in MODELS if mod != "translation" or _same_resolution(prep)])
        start = normalise_matrix(np.linalg.inv(prep.prescale) @ choice.matrices[choice.model])
        # the choice's fit is a Gauss-Newton solution on the half-resolution level: on to full resolution
        matrix, _ = joint_refine([prep], start, choice.model, max_pixels=opts.max_pixels, max_iter=opts.max_iter,
                                 perspective_prior=opts.perspective_prior, coarse=False)
        m = prep.prescale @ matrix
    matrix = normalise_matrix(np.linalg.inv(prep.prescale) @ m)
    return finish(prep, matrix, m, opts, iters, coarse_score, model=choice.model if choice else fit, choice=choice)


def _same_resolution(prep: Prepared) -> bool:
    return bool(np.allclose(prep.prescale, np.eye(3)))


def estimate_prepared(prep: Prepared, initial: np.ndarray, opts: Options, model: str, *, finest: int = 0):
    """Coarse search and coarse-to-fine refinement of one model; ``(working matrix, iterations, coarse score)``.

    ``finest`` is the finest pyramid level solved (0: full resolution).
    """
    th_levels, rgb_levels = prep.th_levels, prep.rgb_levels
    n = len(th_levels)
    init_work = prep.prescale @ initial
    # coarse search on the level whose long side is nearest 160 px, checked one level finer
    lc = min(range(n), key=lambda i: abs(max(th_levels[i].size) - 160))
    lb = max(lc - 1, min(finest, lc))
    coarse_score = float("nan")
    candidates = [init_work]
    if opts.search:
        grid = similarity_grid(init_work, full_size(th_levels[0]), max_rotation=opts.max_rotation,
                               max_scale=opts.max_scale, rotation_step=opts.rotation_step,
                               scale_step=opts.scale_step)
        found = phase_candidates(th_levels[lc], rgb_levels[lc], [init_work] + grid, keep_unshifted=1)
        if not found:
            raise CalibrationError("the thermal and RGB frames do not overlap under the initial transform",
                                   fix="pass an initial matrix that maps the thermal frame roughly onto the RGB frame")
        found = phase_candidates(th_levels[lb], rgb_levels[lb], [m for _, m in found[:8]],
                                 orientation=opts.features == "orientation")
        coarse_score = found[0][0]
        candidates = [m for _, m in found[:3]]
    th_w, th_h = prep.thermal_size
    max_move = 0.25 * math.hypot(th_w, th_h) * prep.prescale[0, 0]
    solve = dict(max_corner_move=max_move, perspective_prior=opts.perspective_prior)
    # refine every candidate briefly on level lb, continue with the best, then on to full resolution
    best = None
    iters = 0
    fr = SolverFrame(th_levels[lb], rgb_levels[lb], opts.max_pixels)
    model_lb = schedule(model, lb - finest)
    for cand in candidates:
        m, rho, it = solve_level([fr], cand, model_lb, max_iter=min(opts.max_iter, 6), eps_px=0.05, **solve)
        iters += it
        if best is None or rho[0] > best[1]:
            best = (m, rho[0])
    m, rho, it = solve_level([fr], best[0], model_lb, max_iter=opts.max_iter, eps_px=0.02, **solve)
    iters += it
    for lev in range(lb - 1, finest - 1, -1):
        fr = SolverFrame(th_levels[lev], rgb_levels[lev], opts.max_pixels)
        m, rho, it = solve_level([fr], m, schedule(model, lev - finest), max_iter=opts.max_iter, eps_px=0.02, **solve)
        iters += it
    return m, iters, coarse_score


def finish(prep: Prepared, matrix, matrix_work, opts: Options, iters, coarse_score, *, model: str,
           choice=None) -> Registration:
    """Score the result at full resolution and refuse one that did not converge."""
    th0, rgb0 = prep.th_levels[0], prep.rgb_levels[0]
    warped, valid = warp_features(rgb0, matrix_work, th0.size)
    overlap = float((valid & th0.valid).mean())
    score = masked_ncc(th0.feat, warped, valid & th0.valid)
    density = (edge_density(rgb0), edge_density(th0))
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
    if not is_convex_quad(corners):
        raise CalibrationError("registration did not converge: the transform folds the thermal frame",
                               fix="pick frames with more common structure, or use model='affine'")
    return Registration(matrix=matrix, model=model, score=float(score), overlap=overlap, edge_density=density,
                        iterations=int(iters), coarse_score=float(coarse_score), model_choice=choice)
