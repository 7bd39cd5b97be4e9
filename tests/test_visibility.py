"""Hautière's e, r̄, σ: exact agreement with the IFSTTAR code (run under GNU Octave), modes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data
from gasdb_tools.imaging import read_image
from gasdb_tools.visibility import to_gray255, visibility_metrics, visible_edges


def _random_pair():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (23, 30)).astype(np.uint8)
    b = np.clip(a.astype(int) * 2 - 100, 0, 255).astype(np.uint8)
    return a, b


def test_compat_matches_octave_on_a_random_pair():
    """Known answer: the original Gradient_Ratioing_Edge.m + functionContrastAt5PerCent.m run under
    GNU Octave 7.3 / octave-image 2.14 on this pair printed e, r, ns, n_r, n_o as below."""
    a, b = _random_pair()
    s = visibility_metrics(a, b, mode="compat")
    assert (s.n_r, s.n_o) == (425, 158)
    assert s.e == pytest.approx(1.6898734177, abs=1e-9)
    assert s.r == pytest.approx(1.4439684870, abs=1e-9)
    assert s.sigma == pytest.approx(0.2057971014, abs=1e-9)


@pytest.mark.realdata
def test_compat_matches_octave_on_a_thermal_crop():
    """Octave known answer on DJI thermal 0001 rows 100-163, cols 200-279, before vs the authors'
    restoration (reference PNG rounded to 8 bits): e 0.2481076535, r 2.8597175978, n_r 1484, n_o 1189."""
    before = read_image(shared_data("thermal_frames", "DJI_20230810173411_0001_T.JPG"))[..., 0]
    ref = read_image(shared_data("tarel", "reference", "ref_DJI_20230810173411_0001_T_gray_sv51_gf1.png"))
    after = np.rint(ref.astype(np.float64) / 65535 * 255).astype(np.uint8)
    s = visibility_metrics(before[100:164, 200:280], after[100:164, 200:280], mode="compat")
    assert (s.n_r, s.n_o) == (1484, 1189)
    assert s.e == pytest.approx(0.2481076535, abs=1e-9)
    assert s.r == pytest.approx(2.8597175978, abs=1e-9)
    assert s.sigma == 0


@pytest.mark.slow
@pytest.mark.realdata
def test_full_thermal_frame_matches_methods_table():
    """methods.md A.7: DJI 0001 vs the authors' output, compat | fixed: e 0.39 | 1.20, r 2.64 | 2.83."""
    before = read_image(shared_data("thermal_frames", "DJI_20230810173411_0001_T.JPG"))[..., 0]
    ref = read_image(shared_data("tarel", "reference", "ref_DJI_20230810173411_0001_T_gray_sv51_gf1.png"))
    after = np.rint(ref.astype(np.float64) / 65535 * 255).astype(np.uint8)
    compat = visibility_metrics(before, after, mode="compat")
    fixed = visibility_metrics(before, after, mode="fixed")
    assert (round(compat.e, 2), round(compat.r, 2)) == (0.39, 2.64)
    assert (round(fixed.e, 2), round(fixed.r, 2)) == (1.20, 2.83)
    assert compat.sigma < 0.0005


def test_step_edge_fixed_and_compat():
    img = np.zeros((16, 16), np.uint8)
    img[:, 8:] = 200
    fixed = visible_edges(img, mode="fixed")
    ys, xs = np.nonzero(fixed)
    # the pair (col 7, col 8) is separated by s = 1..199, C(1) = 199/200 > 2.5 %; row 0 is never a pair's pixel
    assert set(xs.tolist()) == {7, 8} and set(ys.tolist()) == set(range(1, 16)) and fixed.sum() == 30
    compat = visible_edges(img, mode="compat")
    # the shifted separation test also accepts the flat pair (col 8, col 9): the original's bug (1)
    assert set(np.nonzero(compat)[1].tolist()) == {7, 8, 9}


def test_sigma_compat_counts_only_black_and_old_saturation():
    before = np.full((20, 20), 128, np.uint8)
    before[:5] = 0  # already black
    after = before.copy()
    after[5:7] = 255  # newly white
    after[7:8] = 0  # newly black
    compat = visibility_metrics(before, after, mode="compat")
    fixed = visibility_metrics(before, after, mode="fixed")
    assert compat.sigma == pytest.approx(6 * 20 / 400)  # rows 0-4 and 7 (black only, old ones too)
    assert fixed.sigma == fixed.sigma_new == pytest.approx(3 * 20 / 400)  # rows 5-7 (new, black or white)


def test_no_edges_gives_nan_and_json_none():
    flat = np.full((12, 12), 90, np.uint8)
    s = visibility_metrics(flat, flat)
    assert (s.n_o, s.n_r) == (0, 0) and math.isnan(s.e) and math.isnan(s.r)
    d = s.to_dict()
    assert d["e"] is None and d["r"] is None and d["mode"] == "compat"


@settings(max_examples=15, deadline=None)
@given(h=st.integers(8, 24), w=st.integers(8, 24), seed=st.integers(0, 2**16),
       mode=st.sampled_from(["compat", "fixed"]))
def test_identical_images_score_neutral(h, w, seed, mode):
    img = np.random.default_rng(seed).integers(0, 256, (h, w)).astype(np.uint8)
    s = visibility_metrics(img, img, mode=mode)
    assert s.n_o == s.n_r > 0
    assert s.e == 0 and s.r == 1.0 and s.sigma_new == 0


@settings(max_examples=15, deadline=None)
@given(h=st.integers(8, 20), w=st.integers(8, 20), seed=st.integers(0, 2**16))
def test_edges_are_a_subset_of_pair_pixels_with_differences(h, w, seed):
    img = np.random.default_rng(seed).integers(0, 4, (h, w)).astype(np.uint8) * 60
    edges = visible_edges(img, mode="fixed")
    # a visible-edge pixel differs from at least one 4-neighbour (fixed mode marks separated pairs only)
    p = np.pad(img.astype(int), 1, mode="symmetric")
    c = p[1:-1, 1:-1]
    differs = (c != p[:-2, 1:-1]) | (c != p[2:, 1:-1]) | (c != p[1:-1, :-2]) | (c != p[1:-1, 2:])
    assert not (edges & ~differs).any()


def test_inputs_are_converted_like_the_original():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    np.testing.assert_array_equal(to_gray255(rgb), np.full((4, 4), 76.0))  # round(0.2989 * 255)
    np.testing.assert_array_equal(to_gray255(np.full((3, 3), 0.5)), np.full((3, 3), 128.0))
    np.testing.assert_array_equal(to_gray255(np.full((3, 3), 65535, np.uint16)), np.full((3, 3), 255.0))
    a, b = _random_pair()
    assert visibility_metrics(a / 255.0, b / 255.0) == visibility_metrics(a, b)


@pytest.mark.parametrize("before,after,exc,words", [
    (np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), ValueError, "same size"),
    (np.zeros((8, 8), np.int32), np.zeros((8, 8), np.uint8), TypeError, "original must be uint8"),
    (np.zeros((8, 8)), np.full((8, 8), 3.0), ValueError, "restored must lie in [0, 1]"),
    (np.zeros((0, 8), np.uint8), np.zeros((0, 8), np.uint8), ValueError, "empty"),
    (np.zeros((1, 8), np.uint8), np.zeros((1, 8), np.uint8), ValueError, "at least 2×2"),
    (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 4), np.uint8), ValueError, "gray (H, W) or RGB"),
    (np.full((8, 8), np.nan), np.zeros((8, 8)), ValueError, "NaN"),
])
def test_bad_inputs(before, after, exc, words):
    with pytest.raises(exc) as info:
        visibility_metrics(before, after)
    assert words in str(info.value)


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        visibility_metrics(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), mode="paper")
