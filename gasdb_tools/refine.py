"""Learning from corrections: fit a recording's drafts to the frames people corrected, judged on
frames the fit did not see.

``gasdb preannotate WS --refine`` hands this module a recording's thermal stream and its
corrected pairs (edited or approved documents, in thermal coordinates: :class:`Supervision`).
:func:`refine` reads the stream once and fits two things:

**Parameters** of the background model (:class:`~gasdb_tools.background.GasParams`): the preset
(``mask`` / ``extent``), the threshold ``k``, the hysteresis ``k_low``, the polarity, the
smallest blob and the hold (:func:`candidates`, 108 sets). Each set is run over the
``search_window_s`` seconds before every corrected pair, continuing from the current model's
state at the start of the window (:meth:`~gasdb_tools.background.GasSubtractor.fork`), so the
search costs the same for a long recording as for a short one; sets that differ only in their
output stage (smallest blob, hold) share one run.

**Fusion** (:mod:`gasdb_tools.propagate`): a per-pixel logistic model of the background model's
evidence and of the corrected masks carried to the pair by optical flow, fitted on pixels
sampled from the corrected pairs (per pair up to 4000 gas pixels, 4000 background pixels within 8 px
of the gas, where the outline is decided, and 4000 further away; each sample weighted by the
inverse of its stratum's sampling rate, so the fit's objective stays that of every pixel), its probability map smoothed, thresholded and
cleaned like the background model's masks (:func:`fusion_mask`); the threshold is the one whose
drafts of the corrected pairs have the best IoU (:data:`THRESHOLDS`; a fold's on its own training
frames only).

**Judged on held-out frames.** Each candidate is scored by leave-one-out IoU over the corrected
pairs: for every corrected pair, the parameters (or the logistic model) are chosen (fitted) on
the *other* pairs and scored on the whole of it (a second read of the stream, with the drafts'
own smoothing and clean-up; where the other pairs hold no gas to fit on, the current
parameters' mask is scored, as the drafts would then be); the held-out IoU pools those
confusions. The parameter sets the folds chose are scored on runs over the whole stream from
the lead-in, as the drafts are drawn, not on the search's windows: a set that lets the
background model drift over a recording (a low threshold with hysteresis, say) looks good for
4 s after the current model's state and fails on the recording. When fewer than two corrected pairs show gas (0.5 % of their pixels), the two
checkerboard halves (32-pixel blocks) of every corrected pair stand in for frames: leaving out the
one pair with a plume would leave nothing to learn a plume from. The drafts then
come from whichever of *current parameters*, *fitted parameters* and *fusion* has the best
held-out IoU (ties: the simpler one), so a fit that only memorises the corrected frames is not
used. :func:`refined_masks` reads the stream once more and yields the drafts.

**Where the fusion may draw.** A fusion fitted on a few corrected frames has seen the noise of
few gas-free frames; left alone it fires on the noise of the gas-free frames nobody corrected.
Its blobs are therefore kept only where they touch the background model's own mask or a
corrected mask carried to the frame (:func:`fusion_mask` with a seed: the fusion draws the
outline, evidence it was not fitted on says whether there is a plume), in the held-out scoring
as in the drafts. Next to a correction, the carried mask is also blended into the fusion's
probability with a weight decaying with the time to it (:func:`~gasdb_tools.propagate.blend`).

Nothing here reads or writes a workspace (:mod:`gasdb_tools.preannotate` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from gasdb_tools import provenance
from gasdb_tools.background import PRESETS, GasParams, GasSubtractor, TemporalHold, clean_mask, remove_small_blobs
from gasdb_tools.dense import PairTimes, draft_stats, prime, static_probability
from gasdb_tools.propagate import BLEND_TAU_S, FEATURES, WINDOW_S, Carrier, FeatureState, LogisticFusion, blend

__all__ = [
    "SEARCH_WINDOW_S",
    "BLOCK",
    "GAS_PAIR_FRACTION",
    "Supervision",
    "Refinement",
    "candidates",
    "held_out_choice",
    "refine",
    "fusion_mask",
    "refined_masks",
]

#: Seconds of stream each parameter set runs before a corrected pair.
SEARCH_WINDOW_S = 4.0
#: Side of the checkerboard blocks that stand in for frames when fewer than 2 pairs show gas.
BLOCK = 32
#: A corrected pair "shows gas" (counts towards leave-one-pair-out) from this fraction of its pixels.
GAS_PAIR_FRACTION = 0.005
#: Decision thresholds tried on the fusion's drafts (:func:`_second_pass`).
THRESHOLDS = tuple(round(0.2 + 0.05 * j, 2) for j in range(13))
_DEFAULT_THRESHOLD = 0.5
_POS_SAMPLES = 4000
_NEG_SAMPLES = 8000
_RING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))


@dataclass
class Supervision:
    """A recording's corrected pairs in thermal coordinates.

    Attributes
    ----------
    indices : list of int
        Indices of the corrected pairs among the recording's pairs (time order).
    masks : list of (H, W) bool
        Gas, per corrected pair.
    counted : list of (H, W) bool
        Pixels that count (False under ``__ignore__`` shapes and outside the annotation frame).
    ids : list of str
        Their pair ids (for reports).
    """

    indices: list = field(default_factory=list)
    masks: list = field(default_factory=list)
    counted: list = field(default_factory=list)
    ids: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)

    def units(self) -> str:
        """``frames`` (leave-one-pair-out) when at least 2 pairs show gas (:data:`GAS_PAIR_FRACTION`
        of their pixels), else ``blocks``: each pair's two checkerboard halves (one fold each), so
        a lone plume is never held out with nothing left to learn it from."""
        with_gas = sum(1 for m, c in zip(self.masks, self.counted)
                       if np.count_nonzero(m & c) >= GAS_PAIR_FRACTION * max(np.count_nonzero(c), 1))
        return "frames" if with_gas >= 2 else "blocks"


@dataclass
class Refinement:
    """What :func:`refine` found (JSON-ready through :meth:`to_dict`)."""

    base: GasParams
    params: GasParams
    choice: str  # 'base' | 'params' | 'fusion'
    units: str
    pairs: list
    held_out_iou: dict  # {'base': .., 'params': .., 'fusion': ..} (None when not computed)
    fusion: dict | None = None  # LogisticFusion.to_dict()
    window_s: float = WINDOW_S
    note: str = ""

    def to_dict(self) -> dict:
        return {"choice": self.choice, "params": self.params.to_dict(), "changed": self.params.changes(self.base),
                "held_out": {"units": self.units, "pairs": list(self.pairs),
                             "iou": {k: None if v is None else round(float(v), 4) for k, v in self.held_out_iou.items()}},
                "fusion": self.fusion, "carry_window_s": self.window_s, "note": self.note}

    @property
    def key(self) -> str:
        """Digest of everything the drafts depend on."""
        d = self.to_dict()
        return provenance.digest(d["choice"], d["params"], d["fusion"], d["carry_window_s"])


# ----------------------------------------------------------------------------------------------
# the search space
# ----------------------------------------------------------------------------------------------
def candidates(base: GasParams) -> list[GasParams]:
    """The parameter sets tried, ``base`` first.

    Two families: ``base`` with the ``mask`` preset's knobs and ``base`` with the ``extent``
    preset's; in each, ``k`` at 0.75, 1 and 1.5 times ``base.k``, polarity both / emitting /
    absorbing, hysteresis off or ``k_low = 0.6 k`` (``mask`` family; ``extent`` keeps its own),
    the smallest blob at 1x and 4x ``base.min_area_frac``, and hold 1 or 5 frames (``mask``) /
    25 or 10 (``extent``): 108 sets in 27 model runs.

    >>> sets = candidates(GasParams())
    >>> sets[0] == GasParams(), len(sets), len({_core(p) for p in sets})
    (True, 108, 27)
    """
    out = [base]
    extent_keys = PRESETS["extent"].changes()
    mask_family = base.replace(**{k: getattr(PRESETS["mask"], k) for k in extent_keys})
    extent_family = base.replace(**extent_keys)
    ks = sorted({round(0.75 * base.k, 3), float(base.k), round(1.5 * base.k, 3)})
    for family, hysteresis, holds in ((mask_family, (False, True), (1, 5)), (extent_family, (True,), (25, 10))):
        for k in ks:
            for polarity in ("both", "emitting", "absorbing"):
                for grow in hysteresis:
                    if family is extent_family:
                        k_low = min(family.k_low, k)
                    else:
                        k_low = round(0.6 * k, 3) if grow else None
                    for area in (base.min_area_frac, min(4 * base.min_area_frac, 1.0)):
                        for hold in holds:
                            p = family.replace(k=k, polarity=polarity, k_low=k_low, min_area_frac=area, hold=hold)
                            if p not in out:
                                out.append(p)
    return out


def _core(p: GasParams) -> GasParams:
    """The part of a parameter set that drives the model (its output stage reset)."""
    return p.replace(min_area_frac=0.0, hold=1)


# ----------------------------------------------------------------------------------------------
# held-out choice
# ----------------------------------------------------------------------------------------------
def _iou(c) -> float:
    tp, fp, fn = (float(v) for v in c)
    return tp / (tp + fp + fn) if tp + fp + fn > 0 else 1.0


def held_out_choice(conf: np.ndarray) -> tuple[int, float, float]:
    """Leave-one-unit-out choice among candidates.

    Parameters
    ----------
    conf : (C, U, 3) array
        ``tp, fp, fn`` of candidate ``c`` on unit ``u`` (a corrected pair, or a block half).

    Returns
    -------
    best : int
        The candidate with the best IoU over all units (ties: the first).
    held_out : float
        IoU of the pooled confusions, each unit scored with the candidate chosen on the others.
    in_sample : float
        The best candidate's IoU over all units.

    Examples
    --------
    >>> conf = np.array([[[5, 5, 0], [5, 5, 0]], [[9, 0, 1], [0, 9, 9]]], float)
    >>> best, held, seen = held_out_choice(conf)
    >>> best, round(held, 3), round(seen, 3)        # chosen on one pair, candidate 1 fails the other
    (0, 0.179, 0.5)
    """
    conf = np.asarray(conf, np.float64)
    best, chosen = fold_choices(conf)
    score = _iou(conf[best].sum(axis=0))
    if conf.shape[1] < 2:
        return best, score, score
    pooled = sum(conf[c, u] for u, c in enumerate(chosen))
    return best, _iou(pooled), score


def fold_choices(conf: np.ndarray) -> tuple[int, list[int]]:
    """The candidate with the best IoU over all units, and per unit the one chosen on the other
    units (the best over all when there is only one unit); ties: the first.

    >>> fold_choices(np.array([[[5, 5, 0], [5, 5, 0]], [[9, 0, 1], [0, 9, 9]]], float))
    (0, [0, 1])
    """
    conf = np.asarray(conf, np.float64)
    total = conf.sum(axis=1)
    best = int(np.argmax([_iou(c) for c in total]))  # argmax: the first of equals
    if conf.shape[1] < 2:
        return best, [best] * conf.shape[1]
    return best, [int(np.argmax([_iou(c) for c in total - conf[:, u]])) for u in range(conf.shape[1])]


# ----------------------------------------------------------------------------------------------
# pass 1: search and samples
# ----------------------------------------------------------------------------------------------
def _units_of(counted: np.ndarray, units: str) -> list[np.ndarray]:
    if units == "frames":
        return [counted]
    yy, xx = np.indices(counted.shape)
    even = ((yy // BLOCK + xx // BLOCK) % 2) == 0
    return [counted & even, counted & ~even]


def _confusion(pred: np.ndarray, truth: np.ndarray, counted: np.ndarray) -> tuple[int, int, int]:
    p = pred & counted
    t = truth & counted
    tp = np.count_nonzero(p & t)
    return tp, np.count_nonzero(p) - tp, np.count_nonzero(t) - tp


class _Search:
    """The parameter search of pass 1: candidate runs in windows before the corrected pairs."""

    def __init__(self, sets: list[GasParams], times, window_s: float):
        self.sets = sets
        self.cores: dict[GasParams, list[int]] = {}
        for i, p in enumerate(sets):
            self.cores.setdefault(_core(p), []).append(i)
        self.times = np.sort(np.asarray(times, np.float64))
        self.window_s = window_s
        self.running: dict | None = None  # core -> (subtractor, {candidate: TemporalHold})

    def start(self, t: float, base: GasSubtractor) -> None:
        """Before the base model sees the frame at ``t``: start the runs from its state when a
        window begins here, stop them after the last corrected pair of a window."""
        ahead = self.times[self.times >= t - 1e-6]
        if not (ahead.size and ahead[0] - t <= self.window_s + 1e-6):
            self.running = None
        elif self.running is None:
            self.running = {core: (base.fork(core), {i: TemporalHold(frames=self.sets[i].hold) for i in idx})
                            for core, idx in self.cores.items()}

    def step(self, blurred: np.ndarray) -> dict | None:
        """Run every candidate on the frame; ``{candidate index: mask}`` (None outside a window)."""
        if self.running is None:
            return None
        outputs = {}
        for core, (sub, holds) in self.running.items():
            sub.apply(blurred, blurred=True)
            det = sub.detections
            by_area = {}
            for i, hold in holds.items():
                area = int(math.ceil(self.sets[i].min_area_frac * det.size))
                if area not in by_area:
                    by_area[area] = remove_small_blobs(det, min_area=area)
                outputs[i] = hold.update(by_area[area])
        return outputs


def _sample(truth: np.ndarray, counted: np.ndarray, seed: int, units: str):
    """Sampled pixel indices with weights and unit labels (see the module docstring)."""
    rng = np.random.default_rng(seed)
    flat_t = truth.ravel()
    flat_c = counted.ravel()
    unit = np.zeros(flat_t.size, np.int8)
    if units == "blocks":
        yy, xx = np.indices(truth.shape)
        unit = (((yy // BLOCK + xx // BLOCK) % 2) != 0).astype(np.int8).ravel()
    idx, w = [], []
    near = (cv2.dilate(truth.astype(np.uint8), _RING) > 0).ravel() & ~flat_t
    strata = ((flat_t, _POS_SAMPLES), (near, _NEG_SAMPLES // 2), (~flat_t & ~near, _NEG_SAMPLES - _NEG_SAMPLES // 2))
    for stratum, n in strata:
        pool = np.flatnonzero(flat_c & stratum)
        if pool.size == 0:
            continue
        take = pool if pool.size <= n else np.sort(rng.choice(pool, n, replace=False))
        idx.append(take)
        w.append(np.full(take.size, pool.size / take.size))
    idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    w = np.concatenate(w) if w else np.zeros(0)
    return idx, w, flat_t[idx], unit[idx]


def _primed(open_stream, params: GasParams, lead_in_s: float, keep: bool = False):
    sub = GasSubtractor(params=params)
    primed = prime(open_stream(), lead_in_s=lead_in_s, blur_ksize=params.blur_ksize)
    if primed.background is not None:
        sub.set_background(primed.background, static=primed.static)
    return (sub, primed.frames, primed) if keep else (sub, primed.frames)


def fusion_mask(prob: np.ndarray, base: GasParams, threshold: float, seed: np.ndarray | None = None) -> np.ndarray:
    """The fusion's draft: the probability map smoothed (sigma 1 px), thresholded, and cleaned with the
    base parameters' morphology and smallest blob (:func:`~gasdb_tools.background.clean_mask`).

    With ``seed`` (the background model's own mask, or a carried correction), only the blobs that
    touch it are kept (hysteresis on blobs: the fusion draws the outline, the evidence the fusion
    was not fitted on says where a plume is): a fusion fitted on a few corrected frames may fire
    on the noise of the gas-free frames nobody corrected, where the background model sees nothing.

    >>> p = np.zeros((40, 40), np.float32); p[5:15, 5:15] = 0.9; p[25:35, 25:35] = 0.9
    >>> seed = np.zeros((40, 40), bool); seed[8, 8] = True
    >>> m = fusion_mask(p, GasParams(), 0.5, seed=seed)
    >>> bool(m[10, 10]), bool(m[30, 30]), bool(fusion_mask(p, GasParams(), 0.5)[30, 30])
    (True, False, True)
    """
    smooth = cv2.GaussianBlur(np.asarray(prob, np.float32), (0, 0), 1.0)
    mask = clean_mask(smooth > np.float32(threshold), open_size=base.open_size, close_size=base.close_size,
                      min_area_frac=base.min_area_frac)
    if seed is None or not mask.any():
        return mask
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[np.asarray(seed, bool) & mask])] = True
    keep[0] = False
    return keep[labels]


def _seed(base_mask: np.ndarray, carried: np.ndarray | None, near_s: float | None, window_s: float) -> np.ndarray:
    """What a fusion blob must touch to be kept (:func:`fusion_mask`): the background model's mask
    and the corrected masks carried to the frame (brought back to [0, 1], over one half)."""
    if carried is None or near_s is None:
        return base_mask
    return base_mask | (np.asarray(carried, np.float32) * np.float32(1.0 + near_s / window_s) > 0.5)


def refine(open_stream: Callable[[], Iterable], times, supervision: Supervision, *, base: GasParams,
           lead_in_s: float = 1.0, search: bool = True, fusion: bool = True, window_s: float = WINDOW_S,
           search_window_s: float = SEARCH_WINDOW_S, levels=(0.0, 255.0)) -> Refinement:
    """Fit a recording's drafts to its corrected pairs (see the module docstring).

    Reads the stream twice: once to run the parameter search and sample the fusion's training
    pixels, once to score each fold's fusion model on the whole of its held-out pair (with the
    drafts' own smoothing and clean-up). Memory: the model states, the samples and the masks of the
    corrected pairs, not the stream.

    Parameters
    ----------
    open_stream : callable
        Returns a fresh iterator of ``(t, frame)`` over the recording's whole thermal stream.
    times : sequence of float
        All pairs' times, increasing (``supervision.indices`` index them).
    supervision : Supervision
        The corrected pairs (at least one).
    base : GasParams
        The parameters the drafts were made with (the first candidate, and the evidence the
        fusion model reads).
    lead_in_s : float
        Gas-free lead-in, seconds.
    search, fusion : bool
        Fit the parameters / the fusion model.
    window_s : float
        Reach of a carried mask (:class:`~gasdb_tools.propagate.Carrier`).
    search_window_s : float
        Seconds each candidate runs before a corrected pair.
    levels : (float, float)
        Grey levels of the flow image (the recording's stretch).

    Returns
    -------
    Refinement
    """
    if len(supervision) == 0:
        raise ValueError("refining needs at least one corrected pair")
    times = [float(t) for t in times]
    units = supervision.units()
    n_units = len(supervision) if units == "frames" else 2
    sets = candidates(base) if search else [base]
    corrected = {i: k for k, i in enumerate(supervision.indices)}
    search_state = _Search(sets, [times[i] for i in supervision.indices], search_window_s)
    conf = np.zeros((len(sets), n_units, 3), np.int64)
    samples: dict[int, dict] = {}
    clock = PairTimes(times)
    sub, frames = _primed(open_stream, base, lead_in_s)
    state = FeatureState()
    carrier = Carrier([times[i] for i in supervision.indices], window_s=window_s, levels=levels)
    released: list = []
    for t, _, blurred in frames:
        if search:
            search_state.start(t, sub)
        base_mask = sub.apply(blurred, blurred=True)
        outputs = search_state.step(blurred) if search else None
        if fusion:
            state.update(t, sub, blurred)
            released += carrier.step(t, blurred)
        i = clock.match(t)
        if i is None or i not in corrected:
            if fusion and i is not None:
                carrier.pair(i)
            continue
        k = corrected[i]
        truth, counted = supervision.masks[k], supervision.counted[k]
        if truth.shape != base_mask.shape:
            raise ValueError(f"corrected pair {supervision.ids[k]}: mask {truth.shape} does not match the thermal "
                             f"frame {base_mask.shape}")
        for u, um in enumerate(_units_of(counted, units)):
            unit = k if units == "frames" else u
            for c in range(len(sets)):
                conf[c, unit] += _confusion(base_mask if outputs is None else outputs[c], truth, um)
        if fusion:
            idx, w, y, unit = _sample(truth, counted, seed=i, units=units)
            feats = state.maps(sub, blurred, base_mask).reshape(-1, len(FEATURES) - 1)[idx]
            samples[k] = {"idx": idx, "w": w, "y": y, "unit": unit if units == "blocks" else np.full(idx.size, k),
                          "x": feats}
            carrier.pair(i, payload=k, correction=truth.astype(np.float32))
    if fusion:
        released += carrier.finish()
    missing = clock.missing()
    if missing:
        raise ValueError(f"pair time t = {times[missing[0]]:.6f} s has no frame in the thermal stream")
    best, chosen = fold_choices(conf)
    scores = {"base": _iou(conf[0].sum(axis=0)), "params": None, "fusion": None}
    model, folds = None, []
    note = ""
    if fusion:
        for _, payload, carried in released:
            if payload is not None:
                s_ = samples[payload]
                col = np.zeros(s_["idx"].size, np.float32) if carried is None else carried.ravel()[s_["idx"]]
                s_["x"] = np.c_[s_["x"], col]
        model, folds = _fit_fusion(samples, n_units)
        if model is None:
            note = "no fusion model: the corrected pairs need both gas and background pixels"
    # the sets the folds chose, run over the whole stream as the drafts would be (the search ran them
    # in windows, from the current model's state: a set that drifts over a whole recording scores well there)
    runs = sorted(set(chosen) | {best}) if search else []
    if runs or model is not None:
        second = _second_pass(open_stream, times, supervision, base, folds, model, [sets[c] for c in runs],
                              lead_in_s, window_s, levels)
        if runs:
            full = second["params"]
            pooled = sum(full[runs.index(c), u] for u, c in enumerate(chosen))
            scores["params"] = _iou(pooled)
        if model is not None:
            scores["fusion"], model.threshold = second["fusion"]
    choice = "base"
    top = scores["base"]
    if search and scores["params"] is not None and scores["params"] > top + 1e-9:
        choice, top = "params", scores["params"]
    if scores["fusion"] is not None and scores["fusion"] > top + 1e-9:
        choice = "fusion"
    params = sets[best] if choice == "params" else base
    return Refinement(base=base, params=params, choice=choice, units=units, pairs=list(supervision.ids),
                      held_out_iou=scores, fusion=model.to_dict() if model is not None and choice == "fusion" else None,
                      window_s=window_s, note=note)


def _fit_fusion(samples: dict, n_units: int) -> tuple[LogisticFusion | None, list]:
    """The model on every sample, and per unit the model fitted without it (None: not fittable)."""
    if not samples:
        return None, []
    x = np.concatenate([s["x"] for s in samples.values()]).astype(np.float64)
    y = np.concatenate([s["y"] for s in samples.values()]).astype(bool)
    w = np.concatenate([s["w"] for s in samples.values()])
    unit = np.concatenate([s["unit"] for s in samples.values()])

    def fit(keep):
        return LogisticFusion().fit(x[keep], y[keep], w[keep]) if y[keep].any() and not y[keep].all() else None

    folds = [fit(unit != u) for u in range(n_units)]
    return fit(np.ones(len(y), bool)), folds


def _second_pass(open_stream, times, supervision: Supervision, base: GasParams, folds: list, model,
                 param_sets: list, lead_in_s: float, window_s: float, levels) -> dict:
    """The second read of the stream: ``{"fusion": (held-out IoU, threshold) or None, "params": (S, U, 3)
    confusions}``.

    **Parameter sets** (``param_sets``: those the search's folds chose) each run over the whole
    stream from the lead-in, as :func:`refined_masks` runs them, and are scored on every unit.

    **Fusion** (when ``model`` is given): held-out IoU and the final model's threshold, both on the
    drafts' own output.

    Every model (each fold's and the final one) draws the whole corrected pairs with its
    probability map through :func:`fusion_mask` at each of :data:`THRESHOLDS`. A fold's threshold
    is the one with the best IoU on its training units (never the unit it leaves out), which
    it is then scored on; the pooled confusions give the held-out IoU (the base parameters' mask
    where a fold could not be fitted). The final model's threshold is the best over all units.
    Choosing it on the smoothed, cleaned and seeded drafts rather than on sampled pixels removes
    the bias the clean-up adds (a plume drawn too large or too small by a few pixels all round).
    """
    units = supervision.units()
    n_units = len(supervision) if units == "frames" else 2
    models = list(folds) + [model] if model is not None else []
    corrected = {i: k for k, i in enumerate(supervision.indices)}
    clock = PairTimes(times)
    sub, frames, primed = _primed(open_stream, base, lead_in_s, keep=True)
    runs = []
    for p in param_sets:
        run = GasSubtractor(params=p)
        if primed.background is not None:
            run.set_background(primed.background, static=primed.static)
        runs.append(run)
    params_conf = np.zeros((len(runs), n_units, 3), np.int64)
    state = FeatureState()
    carrier = Carrier([times[i] for i in supervision.indices], window_s=window_s, levels=levels)
    conf = np.zeros((len(models), n_units, len(THRESHOLDS), 3), np.int64)
    base_conf = np.zeros((n_units, 3), np.int64)

    def score(items):
        for key, payload, carried in items:
            near = carrier.reach.pop(key, None)
            if payload is None:
                continue
            k, partials, base_mask = payload
            truth, counted = supervision.masks[k], supervision.counted[k]
            seed = _seed(base_mask, carried, near, window_s)
            unit_masks = list(enumerate(_units_of(counted, units)))
            for u, um in unit_masks:
                base_conf[k if units == "frames" else u] += _confusion(base_mask, truth, um)
            for m, partial in partials.items():
                prob = models[m].complete(partial, carried)
                for j, thr in enumerate(THRESHOLDS):
                    pred = fusion_mask(prob, base, thr, seed=seed)
                    for u, um in unit_masks:
                        conf[m, k if units == "frames" else u, j] += _confusion(pred, truth, um)

    for t, _, blurred in frames:
        base_mask = sub.apply(blurred, blurred=True)
        drawn = [run.apply(blurred, blurred=True) for run in runs]
        if not models:
            i = clock.match(t)
            if i is not None and i in corrected:
                _score_runs(params_conf, drawn, supervision, corrected[i], units)
            continue
        state.update(t, sub, blurred)
        score(carrier.step(t, blurred))
        i = clock.match(t)
        if i is None:
            continue
        if i not in corrected:
            carrier.pair(i)
            continue
        k = corrected[i]
        _score_runs(params_conf, drawn, supervision, k, units)
        maps = state.maps(sub, blurred, base_mask)
        flat = maps.reshape(-1, maps.shape[-1])
        partials = {m: mod.partial(flat).reshape(maps.shape[:2]) for m, mod in enumerate(models) if mod is not None}
        carrier.pair(i, payload=(k, partials, base_mask), correction=supervision.masks[k].astype(np.float32))
    if not models:
        return {"fusion": None, "params": params_conf}
    score(carrier.finish())

    def best(c):  # c: (thresholds, 3) -> index of the best IoU (ties: the first)
        return int(np.argmax([_iou(row) for row in c]))

    pooled = np.zeros(3, np.int64)
    for f in range(n_units):
        if folds[f] is None:
            pooled += base_conf[f]
            continue
        training = [u for u in range(n_units) if u != f]
        j = best(conf[f, training].sum(axis=0)) if training else THRESHOLDS.index(_DEFAULT_THRESHOLD)
        pooled += conf[f, f, j]
    return {"fusion": (_iou(pooled), float(THRESHOLDS[best(conf[-1].sum(axis=0))])), "params": params_conf}


def _score_runs(conf: np.ndarray, drawn: list, supervision: Supervision, k: int, units: str) -> None:
    truth, counted = supervision.masks[k], supervision.counted[k]
    for u, um in enumerate(_units_of(counted, units)):
        for r, mask in enumerate(drawn):
            conf[r, k if units == "frames" else u] += _confusion(mask, truth, um)


def disagreement(mask: np.ndarray, other: np.ndarray) -> float:
    """How much a refined draft and the background model's own mask disagree, for ``gasdb suggest``:
    the pixels in one but not the other over their union, the union counted as at least
    :data:`GAS_PAIR_FRACTION` of the frame, so a stray blob in a gas-free frame is a small
    disagreement, not a total one.

    >>> a = np.zeros((100, 100), bool); b = a.copy(); b[:5, :5] = True      # 25 stray pixels
    >>> disagreement(a, b), round(disagreement(b, np.zeros_like(b) | True), 4)
    (0.5, 0.9975)
    """
    mask, other = np.asarray(mask, bool), np.asarray(other, bool)
    union = max(np.count_nonzero(mask | other), GAS_PAIR_FRACTION * mask.size)
    return round(float(np.count_nonzero(mask ^ other)) / float(union), 6) if union else 0.0


# ----------------------------------------------------------------------------------------------
# pass 2: the drafts
# ----------------------------------------------------------------------------------------------
def refined_masks(open_stream: Callable[[], Iterable], times, refinement: Refinement, supervision: Supervision, *,
                  lead_in_s: float = 1.0, levels=(0.0, 255.0),
                  tau_s: float = BLEND_TAU_S) -> Iterator[tuple[int, np.ndarray, dict]]:
    """``(pair index, mask, stats)`` for every pair that is not corrected.

    The masks come from the refinement's choice: the fitted (or current) parameters, or the
    fusion model with the corrected masks carried along the stream (:func:`fusion_mask`). Pairs
    may come out of time order (a pair waits up to ``window_s`` seconds for a correction after
    it). ``stats`` holds ``uncertainty`` (mean entropy near the plume, bits) and ``gas_fraction``;
    fusion adds ``disagreement`` (1 - IoU with the background model's own mask).
    """
    times = [float(t) for t in times]
    corrected = {i: k for k, i in enumerate(supervision.indices)}
    clock = PairTimes(times)
    use_fusion = refinement.choice == "fusion" and refinement.fusion is not None
    params = refinement.base if use_fusion else refinement.params
    sub, frames = _primed(open_stream, params, lead_in_s)
    model = LogisticFusion.from_dict(refinement.fusion) if use_fusion else None
    state = FeatureState() if use_fusion else None
    carrier = Carrier([times[i] for i in supervision.indices], window_s=refinement.window_s,
                      levels=levels) if use_fusion else None

    def finished(items):
        for i, payload, carried in items:
            if payload is None:  # a corrected pair
                continue
            partial, base_mask = payload
            near = carrier.reach.pop(i, None)
            prob = blend(model.complete(partial, carried), carried, near, window_s=refinement.window_s, tau_s=tau_s)
            seed = _seed(base_mask, carried, near, refinement.window_s)
            mask = fusion_mask(prob, params, model.threshold, seed=seed)
            yield i, mask, {**draft_stats(mask, prob), "disagreement": disagreement(mask, base_mask)}

    for t, _, blurred in frames:
        mask = sub.apply(blurred, blurred=True)
        if use_fusion:
            state.update(t, sub, blurred)
            yield from finished(carrier.step(t, blurred))
        i = clock.match(t)
        if i is None:
            continue
        if not use_fusion:
            if i not in corrected:
                yield i, mask, draft_stats(mask, static_probability(sub.evidence(), params))
            continue
        if i in corrected:
            carrier.pair(i, correction=supervision.masks[corrected[i]].astype(np.float32))
        else:
            maps = state.maps(sub, blurred, mask)
            partial = model.partial(maps.reshape(-1, maps.shape[-1])).reshape(maps.shape[:2])
            carrier.pair(i, payload=(partial, mask))
    if use_fusion:
        yield from finished(carrier.finish())
    missing = clock.missing()
    if missing:
        raise ValueError(f"pair time t = {times[missing[0]]:.6f} s has no frame in the thermal stream")
