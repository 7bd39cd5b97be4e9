"""Tests of gasdb_tools.registration: geometry helpers, features, warping, single- and multi-frame
registration on exact truth (the rig simulator), on real RoadScene pairs with known warps, and bad input."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasdb_tools import registration as reg
from gasdb_tools.errors import CalibrationError
from gasdb_tools.synth import SynthRig

from conftest import shared_data


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def similarity_about_centre(size, *, scale=1.0, deg=0.0, shift=(0.0, 0.0)):
    w, h = size
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    a = np.deg2rad(deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = rot
    m[:2, 2] = c - rot @ c + np.asarray(shift)
    return m


def random_warp(rng, size, *, scale=0.04, deg=3.0, shift=20.0, jitter=4.0):
    """+-4 % scale, +-3 deg, +-20 px shift about the centre, then +-``jitter`` px per corner (none: a similarity)."""
    corners = reg.image_corners(size)
    base = similarity_about_centre(size, scale=1 + rng.uniform(-scale, scale), deg=rng.uniform(-deg, deg),
                                   shift=rng.uniform(-shift, shift, 2))
    if not jitter:
        return base
    moved = reg.transform_points(base, corners) + rng.uniform(-jitter, jitter, (4, 2))
    return reg.fit_model(corners, moved, "homography")


def synth_pair(seed, size=(640, 512), t=2.0, **kw):
    rig = SynthRig(seed=seed, size=size, **kw)
    return rig, rig.rgb(t + rig.offset_s), rig.thermal(t)[0]


def pseudo_thermal(rgb, matrix, size):
    """A 'thermal' view of an RGB frame: inverted, gamma, blurred, noisy, warped by matrix^-1.

    ``matrix`` maps the pseudo-thermal frame's pixels onto the RGB frame (thermal -> RGB).
    """
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    g = 1 - np.sqrt(g)
    g = cv2.GaussianBlur(g, (0, 0), 1.2)
    warped = cv2.warpPerspective(g, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT)
    noise = np.random.default_rng(0).normal(0, 0.01, warped.shape).astype(np.float32)
    return np.clip((0.2 + 0.6 * warped + noise) * 65535, 0, 65535).astype(np.uint16)


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------
def test_corner_error_exact_values():
    shift = np.array([[1, 0, 3], [0, 1, 4], [0, 0, 1.0]])
    assert reg.corner_error(shift, np.eye(3), (640, 512)) == pytest.approx(5.0)
    scale2 = np.diag([2.0, 2.0, 1.0])  # corners (0,0),(639,0),(639,511),(0,511) move by 0, 639, |(639,511)|, 511
    d = reg.corner_error(scale2, np.eye(3), (640, 512), reduce="none")
    np.testing.assert_allclose(d, [0, 639, np.hypot(639, 511), 511])
    assert reg.corner_error(scale2, np.eye(3), (640, 512), reduce="max") == pytest.approx(np.hypot(639, 511))
    assert reg.corner_error(scale2, np.eye(3), (640, 512)) == pytest.approx(d.mean())
    with pytest.raises(ValueError, match="reduce"):
        reg.corner_error(shift, shift, (10, 10), reduce="median")


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(reg.MODELS), seed=st.integers(0, 2**32 - 1))
def test_fit_model_recovers_its_own_model(model, seed):
    rng = np.random.default_rng(seed)
    size = (640, 512)
    m = similarity_about_centre(size, scale=1 + rng.uniform(-0.1, 0.1), deg=rng.uniform(-10, 10),
                                shift=rng.uniform(-50, 50, 2))
    if model == "translation":
        m[:2, :2] = np.eye(2)
    if model in ("affine", "homography"):
        m[:2, :2] += rng.uniform(-0.05, 0.05, (2, 2))
    if model == "homography":
        m[2, :2] = rng.uniform(-1e-4, 1e-4, 2)
    pts = np.vstack([reg.image_corners(size), rng.uniform(0, 500, (6, 2))])
    fitted = reg.fit_model(pts, reg.transform_points(m, pts), model)
    assert reg.corner_error(fitted, m, size) < 1e-6


def test_fit_model_needs_enough_points():
    with pytest.raises(ValueError, match="at least 4"):
        reg.fit_model([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 0], [0, 1]], "homography")
    with pytest.raises(ValueError, match="model must be one of"):
        reg.fit_model([[0, 0]], [[0, 0]], "projective")


# ------------------------------------------------------------------------------------------------
# warping
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_warp_thermal_integer_shift_copies_pixels_and_keeps_dtype(dtype):
    rng = np.random.default_rng(1)
    top = 255 if dtype == np.uint8 else 60000
    th = (rng.random((40, 50)) * top).astype(dtype)
    m = np.array([[1, 0, 3], [0, 1, -2], [0, 0, 1.0]])  # thermal (x, y) lands at RGB (x + 3, y - 2)
    warped, valid = reg.warp_thermal(th, m, (60, 45))
    assert warped.dtype == th.dtype and warped.shape == (45, 60) and valid.shape == (45, 60)
    if dtype == np.float32:
        # OpenCV's float32 warp kernels compute the bilinear weights in float32 (opencv/opencv#26271):
        # pixels whose footprint touches the constant border (last row/column) come out a few ulps
        # off an exact copy (OpenCV 5.1.0: 14 of 1900 pixels, at most 0.0017 = 18 ulp of the value).
        # Weights off by a few float32 eps move a value by at most that many eps of the largest
        # value, so allow 8 eps * 60000 = 0.057: 30x above 5.1's error, while a half-pixel or
        # one-pixel shift would move these uniform random values by thousands.
        atol = 8 * np.finfo(np.float32).eps * top
        np.testing.assert_allclose(warped[0:38, 3:53], th[2:40, 0:50], rtol=0, atol=atol)
    else:  # integer images go through OpenCV's fixed-point path: an integer shift is an exact copy
        np.testing.assert_array_equal(warped[0:38, 3:53], th[2:40, 0:50])
    expected = np.zeros((45, 60), bool)
    expected[0:38, 3:53] = True
    np.testing.assert_array_equal(valid, expected)
    assert (warped[~valid] == 0).all()


def test_warp_thermal_round_trip_inside_valid_region():
    _, rgb, _ = synth_pair(3, size=(320, 256))
    th = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    m = similarity_about_centre((320, 256), scale=1.03, deg=2.0, shift=(5, -4))
    there, v1 = reg.warp_thermal(th, m, (320, 256), interpolation="cubic")
    back, v2 = reg.warp_thermal(there, np.linalg.inv(m), (320, 256), interpolation="cubic")
    inner = cv2.erode(v2.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert inner.mean() > 0.7
    assert np.median(np.abs(back - th)[inner]) < 1.5


def test_warp_thermal_bad_arguments():
    th = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match="singular"):
        reg.warp_thermal(th, np.zeros((3, 3)), (10, 10))
    with pytest.raises(ValueError, match="3x3"):
        reg.warp_thermal(th, np.eye(4), (10, 10))
    with pytest.raises(ValueError, match="interpolation"):
        reg.warp_thermal(th, np.eye(3), (10, 10), interpolation="lanczos")
    with pytest.raises(TypeError, match="width, height"):
        reg.warp_thermal(th, np.eye(3), 10)


# ------------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------------
def test_edge_features_are_polarity_and_scale_free():
    _, rgb, _ = synth_pair(2, size=(160, 128))
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    f = reg.edge_features(g)
    assert f.dtype == np.float32 and f.shape == g.shape and 0 <= f.min() and f.max() == pytest.approx(1.0)
    np.testing.assert_allclose(reg.edge_features(255 - g), f, atol=1e-4)
    np.testing.assert_allclose(reg.edge_features(g.astype(np.uint16) * 200 + 1000), f, atol=1e-4)


@pytest.mark.parametrize("frame", [np.zeros((64, 80), np.uint8), np.full((64, 80), 1234, np.uint16)],
                         ids=["black", "constant"])
def test_edge_features_featureless_raise(frame):
    with pytest.raises(CalibrationError, match="featureless"):
        reg.edge_features(frame)


def test_edge_features_mask_removes_border_edges():
    img = np.zeros((64, 64), np.uint8)
    img[10:54, 10:54] = 200
    img[30:34, 20:44] = 50
    mask = np.zeros_like(img, bool)
    mask[10:54, 10:54] = True  # the bright square's outline is a border, not content
    f = reg.edge_features(img, mask=mask)
    assert f[10:54, 10:12].max() == 0 and f[30:34, 20:44].max() > 0.5


# ------------------------------------------------------------------------------------------------
# one pair
# ------------------------------------------------------------------------------------------------
def test_register_pair_synth_exact_truth():
    """Acceptance (issue 4, exact truth): median corner error < 0.5 px, max < 1 px at 640x512."""
    errors = []
    for seed in range(5):
        rig, rgb, th = synth_pair(seed, t=1.0 + 0.4 * seed)
        out = reg.register_pair(rgb, th, model="homography")
        assert out.model == "homography" and out.matrix.shape == (3, 3) and out.matrix[2, 2] == 1.0
        assert out.model_choice is None
        assert out.score > 0.5 and out.overlap > 0.8
        errors.append(reg.corner_error(out.matrix, rig.homography, rig.size))
    assert np.median(errors) < 0.5, errors
    assert max(errors) < 1.0, errors


@pytest.mark.parametrize("model", ["translation", "similarity", "affine", "homography"])
def test_register_pair_recovers_each_model_on_pseudo_thermal(model):
    """Polarity-inverted, gamma-changed, blurred 16-bit 'thermal' view with an exact known warp."""
    size = (320, 256)
    _, rgb, _ = synth_pair(11, size=size, distractors=False)
    truth = {
        "translation": similarity_about_centre(size, shift=(9.5, -6.25)),
        "similarity": similarity_about_centre(size, scale=1.03, deg=-2.5, shift=(7, 4)),
        "affine": similarity_about_centre(size, scale=0.98, deg=1.5, shift=(-6, 3)) @ np.array(
            [[1.02, 0.01, 0], [0, 0.99, 0], [0, 0, 1]]),
        "homography": reg.fit_model(reg.image_corners(size), reg.image_corners(size) + [[3, -2], [-8, 5], [4, 7],
                                                                                        [-5, -6]], "homography"),
    }[model]
    th = pseudo_thermal(rgb, truth, size)
    out = reg.register_pair(rgb, th, model=model)
    if model != "homography":
        np.testing.assert_allclose(out.matrix[2], [0, 0, 1], atol=1e-12)
    if model == "translation":
        np.testing.assert_allclose(out.matrix[:2, :2], np.eye(2), atol=1e-12)
    assert reg.corner_error(out.matrix, truth, size) < 0.5


def test_register_pair_different_sizes_and_initial():
    """A 2x larger RGB frame (the nominal FOV ratio is the default start) and an explicit initial."""
    rig, rgb, th = synth_pair(4, size=(320, 256))
    big = cv2.resize(rgb, (640, 512), interpolation=cv2.INTER_LINEAR)
    truth = reg.geometry.resize_matrix((320, 256), (640, 512)) @ rig.homography
    out = reg.register_pair(big, th, model="homography")
    assert reg.corner_error(out.matrix, truth, (320, 256)) < 1.0
    auto = reg.register_pair(big, th)  # translation is no candidate across resolutions
    assert "translation" not in auto.model_choice.heldout and reg.corner_error(auto.matrix, truth, (320, 256)) < 2.0
    out2 = reg.register_pair(rgb, th, initial=rig.homography, search=False, model="homography")
    assert reg.corner_error(out2.matrix, rig.homography, (320, 256)) < 0.6


def test_register_pair_refuses_unrelated_or_black_frames():
    _, rgb, th = synth_pair(5, size=(320, 256))
    noise = np.random.default_rng(0).integers(0, 255, th.shape, dtype=np.uint8)
    with pytest.raises(CalibrationError, match="did not converge"):
        reg.register_pair(rgb, noise)
    with pytest.raises(CalibrationError, match="featureless"):
        reg.register_pair(rgb, np.zeros_like(th))
    with pytest.raises(CalibrationError, match="featureless"):
        reg.register_pair(np.zeros_like(rgb), th)


def test_register_pair_bad_arguments():
    _, rgb, th = synth_pair(5, size=(160, 128))
    with pytest.raises(ValueError, match="model must be one of"):
        reg.register_pair(rgb, th, model="projective")
    with pytest.raises(TypeError, match="unknown option"):
        reg.register_pair(rgb, th, max_rotaton=3)
    with pytest.raises(ValueError, match="image array"):
        reg.register_pair(rgb[0, :, 0], th)
    with pytest.raises(ValueError, match="too small"):
        reg.register_pair(rgb[:20], th)
    with pytest.raises(ValueError, match="NaN"):
        bad = th.astype(np.float32)
        bad[3, 3] = np.nan
        reg.register_pair(rgb, bad)
    with pytest.raises(ValueError, match="thermal_mask"):
        reg.register_pair(rgb, th, thermal_mask=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="perspective_prior"):
        reg.register_pair(rgb, th, perspective_prior=0)


# ------------------------------------------------------------------------------------------------
# many pairs
# ------------------------------------------------------------------------------------------------
def test_register_pairs_synth_rig():
    """Multi-frame: median of corners + joint refinement beats the exact-truth bar with margin."""
    rig = SynthRig(seed=8, size=(640, 512))
    pairs = [(rig.rgb(t + rig.offset_s), rig.thermal(t)[0]) for t in np.linspace(0.5, 5.5, 6)]
    out = reg.register_pairs(pairs)
    assert out.consistent, out.warnings
    assert reg.corner_error(out.matrix, rig.homography, rig.size) < 0.5
    assert reg.corner_error(out.matrix, rig.homography, rig.size, reduce="max") < 1.0
    assert len(out.frames) == 6 and out.used == list(range(6))
    stats = out.stats()
    assert stats["frames_used"] == 6 and stats["corner_deviation_px"]["max"] < 1.0
    assert stats["block_shift_max_px"] is None or stats["block_shift_max_px"] < 1.0
    assert out.block_shifts.shape == (3, 3, 2)


def test_broad_minimum_is_bounded_and_keeps_the_joint_optimum():
    """The flat-cost start of the joint refinement (vertex of a quadratic over a similarity grid)
    moves at most two grid steps, keeps a start it cannot improve, and on a sharp cost (the
    simulated rig) the joint refinement from it reaches the same optimum as from the truth."""
    from gasdb_tools.registration import rig as rigmod
    from gasdb_tools.registration.pair import make_options, prepare
    from gasdb_tools.registration.refine import joint_refine

    rig = SynthRig(seed=8, size=(320, 256))
    preps = [prepare(rig.rgb(t + rig.offset_s), rig.thermal(t)[0], make_options("similarity", {}))
             for t in (1.0, 2.5)]
    corners = reg.image_corners(rig.size)
    truth = reg.fit_model(corners, reg.transform_points(rig.homography, corners), "similarity")
    joint = dict(max_pixels=40_000, max_iter=30, perspective_prior=2.0)
    ref, _ = joint_refine(preps, truth, "similarity", **joint)
    for deg, dx, dy in ((0.6, 2.5, -2.0), (-1.2, -5.0, 2.0)):
        a = np.deg2rad(deg)
        off = ref @ np.array([[np.cos(a), -np.sin(a), dx], [np.sin(a), np.cos(a), dy], [0, 0, 1.0]])
        start = rigmod._broad_minimum(preps, off, "similarity", budget=40_000)
        # two steps of every similarity parameter move the corners by at most 2 * 4 * (1 + 1 + 1) px
        assert reg.corner_error(start, off, rig.size, reduce="max") <= 6 * rigmod._BROAD_STEP_PX + 1e-6
        end, _ = joint_refine(preps, start, "similarity", **joint)
        assert reg.corner_error(end, ref, rig.size) < 0.05
    far = ref @ np.array([[1.0, 0, 40.0], [0, 1.0, 0], [0, 0, 1.0]])  # no minimum within reach: kept
    assert np.allclose(rigmod._broad_minimum(preps, far, "similarity", budget=40_000), far)


def test_register_pairs_flags_a_moved_camera_and_keeps_failures_out():
    """Two set-ups (different homographies) in one calibration are flagged; a black frame is left out."""
    a, b = SynthRig(seed=21, size=(320, 256)), SynthRig(seed=22, size=(320, 256))
    pairs = [(a.rgb(t + a.offset_s), a.thermal(t)[0]) for t in (1.0, 2.0, 3.0)]
    pairs += [(b.rgb(t + b.offset_s), b.thermal(t)[0]) for t in (1.0, 2.0, 3.0)]
    pairs.append((pairs[0][0], np.zeros_like(pairs[0][1])))
    groups = ["a"] * 3 + ["b"] * 3 + ["a"]
    out = reg.register_pairs(pairs, groups=groups, model="affine", refine=False)
    assert not out.consistent
    assert any("disagree" in w or "sits" in w or "outliers" in w for w in out.warnings), out.warnings
    last = out.frames[-1]
    assert not last.used and "featureless" in last.reason and last.matrix is None


def test_register_pairs_errors():
    _, rgb, th = synth_pair(6, size=(160, 128))
    with pytest.raises(CalibrationError, match="sizes"):
        reg.register_pairs([(rgb, th), (rgb, th[:100])])
    with pytest.raises(CalibrationError, match="only 0 of 2"):
        reg.register_pairs([(rgb, np.zeros_like(th))] * 2)
    with pytest.raises(ValueError, match="empty"):
        reg.register_pairs([])
    with pytest.raises(ValueError, match="groups"):
        reg.register_pairs([(rgb, th)], groups=["a", "b"])
    with pytest.raises(TypeError, match="tuple"):
        reg.register_pairs([rgb])


def test_block_residuals_sign_and_size():
    """A transform that is off by (+2, -1) RGB px shows the RGB content displaced by (+2, -1)."""
    rig, rgb, th = synth_pair(9, size=(320, 256), distractors=False)
    off = np.array([[1, 0, -2.0], [0, 1, 1.0], [0, 0, 1]]) @ rig.homography
    shifts = reg.block_residuals(rgb, th, off)
    assert shifts.shape == (3, 3, 2)
    med = np.nanmedian(shifts.reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med, [2.0, -1.0], atol=0.5)
    good = np.hypot(*reg.block_residuals(rgb, th, rig.homography).reshape(-1, 2).T)
    assert np.nanmedian(good) < 0.5 and np.nanmax(good) < 1.5


# ------------------------------------------------------------------------------------------------
# model choice by held-out error
# ------------------------------------------------------------------------------------------------
def test_auto_keeps_the_simplest_model_the_data_support():
    """A similarity truth: auto needs more than a shift, does not need a perspective part, and says
    why; a strong perspective truth: auto needs (and chooses) the homography."""
    size = (320, 256)
    _, rgb, _ = synth_pair(11, size=size, distractors=False)
    sim = similarity_about_centre(size, scale=1.03, deg=-2.5, shift=(7, 4))
    out = reg.register_pair(rgb, pseudo_thermal(rgb, sim, size))
    assert out.model in ("similarity", "affine"), out.model_choice.reason
    assert reg.corner_error(out.matrix, sim, size) < 0.5
    choice = out.model_choice
    assert choice.folds == "quadrants" and choice.n_folds == 4 and set(choice.heldout) == set(reg.MODELS)
    assert choice.heldout["translation"] > choice.heldout[choice.best]  # a shift alone cannot explain it
    assert "held-out" in choice.reason and choice.model in choice.reason
    corners = reg.image_corners(size)
    persp = reg.fit_model(corners, corners + [[9, -6], [-12, 8], [10, 11], [-9, -10]], "homography")
    out = reg.register_pair(rgb, pseudo_thermal(rgb, persp, size))
    assert out.model == "homography", out.model_choice.reason
    assert reg.corner_error(out.matrix, persp, size) < 0.5
    forced = reg.register_pair(rgb, pseudo_thermal(rgb, persp, size), model="affine")
    assert forced.model == "affine" and forced.model_choice is None


def test_select_model_arguments_and_folds():
    from gasdb_tools.registration import pair as pair_mod
    from gasdb_tools.registration.refine import SolverFrame

    rig, rgb, th = synth_pair(3, size=(160, 128), distractors=False)
    prep = pair_mod.prepare(rgb, th, pair_mod.make_options("homography", {}))
    frames = [SolverFrame(prep.th_levels[1], prep.rgb_levels[1], 20_000, phase=k) for k in range(3)]
    by_group = reg.select_model(frames, rig.homography, groups=["a", "b", "c"])
    assert by_group.folds == "frames" and by_group.n_folds == 3 and "group folds" in by_group.reason
    assert reg.select_model(frames, rig.homography).folds == "quadrants"  # one recording: regions left out
    with pytest.raises(ValueError, match="subsequence"):
        reg.select_model(frames, rig.homography, models=["affine", "similarity"])
    with pytest.raises(ValueError, match="one label per frame"):
        reg.select_model(frames, rig.homography, groups=["a"])
    with pytest.raises(ValueError, match="folds"):
        reg.select_model(frames, rig.homography, folds="time")
    with pytest.raises(ValueError, match="model must be one of"):
        reg.register_pair(rgb, th, model="projective")


# ------------------------------------------------------------------------------------------------
# per-recording refinement
# ------------------------------------------------------------------------------------------------
def test_refine_recording_absorbs_a_depth_shift_and_leaves_a_matching_recording_alone():
    """A recording whose scene plane sits elsewhere: its thermal view is shifted by (3, -2) RGB px
    against the rig calibration; the update finds the shift, the frames' edge correlation rises."""
    rig = SynthRig(seed=12, size=(320, 256))
    pairs = [(rig.rgb(t + rig.offset_s), rig.thermal(t)[0]) for t in np.linspace(0.5, 3.5, 5)]
    shift = np.array([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]])
    moved = [(cv2.warpPerspective(a, shift, rig.size, borderMode=cv2.BORDER_REFLECT), b) for a, b in pairs]
    out = reg.refine_recording(moved, rig.homography)
    np.testing.assert_allclose(out.update[:2, 2], [3.0, -2.0], atol=0.25)
    np.testing.assert_allclose(out.update[:2, :2], np.eye(2), atol=1e-12)  # a translation update
    assert reg.corner_error(out.matrix, shift @ rig.homography, rig.size) < 0.3
    assert out.score > out.score_rig + 0.1 and len(out.frame_scores) == 5
    assert out.shift_px[0] == pytest.approx(np.hypot(3, 2), abs=0.3)
    stats = out.stats()
    assert stats["frames"] == 5 and stats["model"] == "translation" and len(stats["block_shift_px"]) == 3
    same = reg.refine_recording(pairs, rig.homography, model="affine")
    assert same.shift_px[1] < 0.5 and same.model == "affine"


def test_refine_recording_prior_holds_the_update_without_structure():
    """Frames without common structure (thermal noise): the prior keeps the rig matrix."""
    rig = SynthRig(seed=12, size=(320, 256))
    rng = np.random.default_rng(0)
    noise = [(rig.rgb(t), cv2.GaussianBlur(rng.random((256, 320)).astype(np.float32), (0, 0), 4))
             for t in (1.0, 2.0)]
    out = reg.refine_recording(noise, rig.homography, prior_px=0.5)
    assert out.shift_px[1] < 1.0


def test_refine_recording_bad_arguments():
    rig, rgb, th = synth_pair(6, size=(160, 128))
    with pytest.raises(ValueError, match="model"):
        reg.refine_recording([(rgb, th)], rig.homography, model="homography")
    with pytest.raises(ValueError, match="prior_px"):
        reg.refine_recording([(rgb, th)], rig.homography, prior_px=0)
    with pytest.raises(CalibrationError, match="no frame pairs"):
        reg.refine_recording([], rig.homography)
    with pytest.raises(CalibrationError, match="differs in size"):
        reg.refine_recording([(rgb, th), (rgb, th[:100])], rig.homography)
    with pytest.raises(ValueError, match="3x3"):
        reg.refine_recording([(rgb, th)], np.eye(2))


# ------------------------------------------------------------------------------------------------
# lens distortion
# ------------------------------------------------------------------------------------------------
def test_distortion_points_round_trip_and_corner_movement():
    lens = reg.RadialDistortion(-0.08, (320, 256))
    pts = np.array([[0, 0], [319, 255], [160.5, 20], [159.5, 127.5]])
    np.testing.assert_allclose(reg.distortion.undistort_points(reg.distortion.distort_points(pts, lens), lens), pts,
                               atol=1e-4)
    moved = reg.distortion.undistort_points(pts[:1], lens) - pts[:1]
    assert np.hypot(*moved[0]) == pytest.approx(0.08 * lens.radius)  # r = 1 at a corner: k1 R px
    with pytest.raises(ValueError, match="k1"):
        reg.RadialDistortion(0.6, (320, 256))


@pytest.mark.slow
def test_estimate_distortion_recovers_k1_and_refuses_it_when_absent():
    rig = SynthRig(seed=12, size=(320, 256))
    lens = reg.RadialDistortion(-0.06, rig.size)
    ys, xs = np.mgrid[0:256, 0:320].astype(np.float64)
    u = reg.distortion.undistort_points(np.stack([xs.ravel(), ys.ravel()], 1), lens).astype(np.float32)
    mx, my = u[:, 0].reshape(256, 320), u[:, 1].reshape(256, 320)
    clean = [(rig.rgb(t + rig.offset_s), rig.thermal(t)[0]) for t in np.linspace(0.5, 3.5, 5)]
    lensed = [(a, cv2.remap(b, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)) for a, b in clean]
    est = reg.estimate_distortion(lensed, model="homography")
    assert est.distortion is not None and abs(est.distortion.k1 + 0.06) < 0.01, est.reason
    corners = reg.image_corners(rig.size)
    mapped = reg.transform_points(est.registration.matrix, reg.distortion.undistort_points(corners, est.distortion))
    truth = reg.transform_points(rig.homography, reg.distortion.undistort_points(corners, lens))
    assert np.hypot(*(mapped - truth).T).mean() < 0.6
    none = reg.estimate_distortion(clean, model="homography", steps=5)
    assert none.distortion is None and "do not constrain" in none.reason and abs(none.k1_best) < 0.03


# ------------------------------------------------------------------------------------------------
# real pairs
# ------------------------------------------------------------------------------------------------
def _roadscene_trials(n_trials=40, seed=0, *, kind="similarity"):
    """The 40 RoadScene pairs, the infrared image warped by a random known warp.

    ``kind='similarity'``: +-4 % scale, +-3 deg, +-20 px shift (the issue's protocol);
    ``'homography'``: the same plus +-4 px per corner.
    """
    root = shared_data("rgbt_pairs", "roadscene")
    names = sorted(os.listdir(root / "visible"))
    assert len(names) >= 40
    rng = np.random.default_rng(seed)
    for k in range(n_trials):
        name = names[k % len(names)]
        rgb = cv2.cvtColor(cv2.imread(str(root / "visible" / name)), cv2.COLOR_BGR2RGB)
        ir = cv2.imread(str(root / "infrared" / name), cv2.IMREAD_GRAYSCALE)
        size = (ir.shape[1], ir.shape[0])
        warp = random_warp(rng, size, jitter=4.0 if kind == "homography" else 0.0)  # infrared px -> warped px
        warped = cv2.warpPerspective(ir, warp, size, flags=cv2.INTER_LINEAR)
        valid = cv2.warpPerspective(np.full_like(ir, 255), warp, size, flags=cv2.INTER_LINEAR) == 255
        truth = np.linalg.inv(warp)
        yield rgb, ir, warped, valid, warp, truth / truth[2, 2], size


@pytest.mark.slow
@pytest.mark.realdata
def test_roadscene_known_warps_default_settings_and_composition():
    """40 real RoadScene pairs, each infrared image warped by a random known similarity.

    Default settings (model='auto'): mean corner error median < 2 px, max < 6 px. Composition
    (the estimate must not depend on the start): register(rgb, warp(ir)) composed with the warp
    against register(rgb, ir) with the same model, median < 1 px, max < 3 px. Negative control:
    OpenCV's findTransformECC on the raw intensities, same pairs: median > 15 px (when it raises,
    its start, the identity, counts).
    """
    ours, comp, raw, models = [], [], [], []
    for rgb, ir, warped, valid, warp, truth, size in _roadscene_trials():
        init = reg.corner_error(np.eye(3), truth, size)
        assert 3 < init < 60
        out = reg.register_pair(rgb, warped, thermal_mask=valid)
        ours.append(reg.corner_error(out.matrix, truth, size))
        models.append(out.model)
        plain = reg.register_pair(rgb, ir, model=out.model)
        comp.append(reg.corner_error(out.matrix @ warp, plain.matrix, size))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        try:  # template: RGB; input: the warped infrared with its valid mask; warp: RGB px -> thermal px
            _, w = cv2.findTransformECC(gray, warped.astype(np.float32), np.eye(3, dtype=np.float32),
                                        cv2.MOTION_HOMOGRAPHY,
                                        (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5),
                                        valid.astype(np.uint8), 5)
            raw.append(reg.corner_error(np.linalg.inv(w.astype(np.float64)), truth, size))
        except (cv2.error, np.linalg.LinAlgError):
            raw.append(init)
    ours, comp, raw = np.array(ours), np.array(comp), np.array(raw)
    assert np.median(ours) < 2.0 and ours.max() < 6.0, (np.round(np.sort(ours), 2), models)
    assert np.median(comp) < 1.0 and comp.max() < 3.0, np.round(np.sort(comp), 2)
    assert np.median(raw) > 15.0, np.round(np.sort(raw), 1)
    assert "translation" not in models  # a rotation and a scale are always there to find


def _roadscene_rig():
    """The 40 RoadScene pairs as one rig: centre-cropped to a common size (the dataset aligned them)."""
    root = shared_data("rgbt_pairs", "roadscene")
    raw = [(cv2.cvtColor(cv2.imread(str(root / "visible" / n)), cv2.COLOR_BGR2RGB),
            cv2.imread(str(root / "infrared" / n), cv2.IMREAD_GRAYSCALE)) for n in sorted(os.listdir(root / "visible"))]
    h, w = min(a.shape[0] for a, _ in raw), min(a.shape[1] for a, _ in raw)

    def crop(img):
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])

    return [(crop(a), crop(b)) for a, b in raw], (w, h)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("case", ["aligned", "moved", "near object"])
def test_consistency_flag_on_a_real_rig(case):
    """The flag is calibrated on real aligned pairs: 40 RoadScene pairs as one rig in 4 recordings
    of 10 stay consistent; half of them from a camera turned by 0.8 deg and shifted by 4 px, or a
    near object over a quarter of the thermal view shifted by 11 px (the issue's parallax: 5 cm
    baseline, f = 770 px, 3 m against 20 m), are flagged."""
    pairs, size = _roadscene_rig()
    groups = [f"rec{k // 10}" for k in range(len(pairs))]
    if case == "moved":
        moved = similarity_about_centre(size, deg=0.8, shift=(4, 0))
        pairs = [(a, cv2.warpPerspective(b, moved, size, borderMode=cv2.BORDER_REPLICATE) if k >= 20 else b)
                 for k, (a, b) in enumerate(pairs)]
    elif case == "near object":
        w, h = size

        def near(th):
            out = th.copy()
            out[h // 2:, : w // 2] = np.roll(th, 11, axis=1)[h // 2:, : w // 2]
            return out

        pairs = [(a, near(b)) for a, b in pairs]
    out = reg.register_pairs(pairs, groups=groups)
    if case == "aligned":
        assert out.consistent, out.warnings
        assert max(out.group_apart.values()) < 1.5 and np.nanmax(np.hypot(*out.block_shifts.reshape(-1, 2).T)) < 1.5
    elif case == "moved":
        assert not out.consistent and any("group" in w for w in out.warnings), out.warnings
    else:
        assert not out.consistent and any("block" in w for w in out.warnings), out.warnings


@pytest.mark.realdata
def test_mfnet_smoke():
    """Two real MFNet frames (RGB + thermal in one 4-channel PNG, already aligned by the dataset)."""
    from gasdb_tools.imaging import read_image

    root = shared_data("mfnet")
    for name in ("01234N.png", "01477D.png"):
        rgbt = read_image(root / name)
        out = reg.register_pair(rgbt[..., :3], rgbt[..., 3])
        assert out.score > 0.15
        assert reg.corner_error(out.matrix, np.eye(3), (640, 480)) < 10
