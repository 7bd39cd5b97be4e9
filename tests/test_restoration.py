"""Tarel–Hautière restoration: conformance with the authors' outputs, medians, properties, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from gasdb_tools import restoration as rs
from gasdb_tools.imaging import read_image
from conftest import c_compiler, shared_data


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


# --------------------------------------------------------------------------------------------
# an independent, straightforward float implementation of visibresto.m (scipy medians, loops)
# --------------------------------------------------------------------------------------------
def _med(x, sv):
    return ndimage.median_filter(x, size=sv, mode="reflect")


def _oracle(img, sv, p=0.95, balance=-1.0, gfactor=1.3, rows=None):
    img = img.astype(np.float64)
    white = fo = None
    if img.ndim == 3 and balance == 0:
        w = img.min(axis=2)
        white = img[w >= np.quantile(w, 0.99, method="hazen")].mean(axis=0)
        white = white / white.max()
        img = img / white
    elif img.ndim == 3 and balance > 0:
        fo = np.stack([_med(img[..., c], sv) for c in range(3)], axis=2)
        fo = (fo / fo.mean(axis=2, keepdims=True)) ** balance
        fo = fo / fo.mean(axis=2, keepdims=True)
        img = img / fo
    w = img if img.ndim == 2 else img.min(axis=2)
    nbo = img if img.ndim == 2 else img.mean(axis=2)
    a = _med(w, sv)
    b = a - _med(np.abs(w - a), sv)
    v = p * np.maximum(np.minimum(w, b), 0)
    r = (img - v) / (1 - v) if img.ndim == 2 else (img - v[..., None]) / (1 - v[..., None])
    if white is not None:
        r = r * white
    if fo is not None:
        r = r * fo
    nbr = r if r.ndim == 2 else r.mean(axis=2)
    h = img.shape[0]
    if rows is None:  # Octave: nbo(2*h/3:h, :) with the fractional start truncated
        rows = [int(np.floor(2 * h / 3 + k)) - 1 for k in range(int(np.floor(h - 2 * h / 3)) + 1)]
    lo, lr = np.log(nbo[rows] + 0.5 / 255), np.log(nbr[rows] + 0.5 / 255)
    g = gfactor * lo.std(ddof=1) / lr.std(ddof=1)
    u = r ** g * np.exp(lo.mean() - g * lr.mean())
    return u / (1 + (1 - 1 / u.max()) * u), v


def _medsmooth_loop(r, factor, smax):
    """The authors' medsmooth, pixel by pixel (MATLAB cropping, 1-based j, k)."""
    sizes = np.minimum(np.floor(factor), smax)
    h, w = r.shape
    out = np.empty_like(r)
    for j in range(1, h + 1):
        for k in range(1, w + 1):
            s = sizes[j - 1, k - 1]
            y0, y1 = max(1, int(np.floor(j - s / 2))), min(h, int(np.floor(j + s / 2)))
            x0, x1 = max(1, int(np.floor(k - s / 2))), min(w, int(np.floor(k + s / 2)))
            out[j - 1, k - 1] = np.median(r[y0 - 1:y1, x0 - 1:x1])
    return out


def _rng_image(seed, shape, levels=None):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), sigma=(3, 3) + ((0,) if len(shape) == 3 else ()))
    x = 0.35 + 0.5 * (smooth - smooth.min()) / (np.ptp(smooth) + 1e-12) + 0.05 * rng.random(shape)
    x = np.clip(x, 0, 1)
    return np.rint(x * levels) / levels if levels else x


# --------------------------------------------------------------------------------------------
# conformance with the authors' code (outputs of visibresto.m under GNU Octave)
# --------------------------------------------------------------------------------------------
REFERENCES = [
    # reference, input, how to make the input, sv, gfactor, golden (out mean, out std, V mean, V max)
    ("ref_DJI_20230810173411_0001_T_gray_sv51_gf1.png", ("thermal_frames", "DJI_20230810173411_0001_T.JPG"),
     "channel0", 51, 1.0, (0.4145, 0.1487, 0.4222, 0.7339)),
    ("ref_DJI_20230810173412_0002_T_gray_sv51_gf1.png", ("thermal_frames", "DJI_20230810173412_0002_T.JPG"),
     "channel0", 51, 1.0, (0.3818, None, None, None)),
    ("ref_cd13_color_sv19_bneg.png", ("tarel", "chengdu_13_rs.jpg"), "colour", 19, 1.3,
     (0.3982, 0.1646, 0.5219, 0.7227)),
    ("ref_cd13_gray_sv37.png", ("tarel", "chengdu_13_rs.jpg"), "mean", 37, 1.0, (0.3978, 0.1467, 0.5241, 0.7227)),
]


def _input(parts, how):
    rgb = read_image(shared_data(*parts), mode="rgb").astype(np.float64) / 255
    return {"channel0": rgb[..., 0], "colour": rgb, "mean": rgb.mean(axis=2)}[how]


@pytest.mark.realdata
@pytest.mark.parametrize("ref,parts,how,sv,gfactor,golden", REFERENCES, ids=[r[0][4:-4] for r in REFERENCES])
def test_matches_the_authors_outputs(ref, parts, how, sv, gfactor, golden):
    expected = read_image(shared_data("tarel", "reference", ref)).astype(np.float64) / 65535
    x = _input(parts, how).astype(np.float32)
    out, veil = rs.tarel_hautiere(x, sv=sv, p=0.95, balance=-1, smax=1, gfactor=gfactor, return_veil=True)
    assert out.shape == expected.shape
    assert psnr(out, expected) >= 100  # measured: 106.9-107.3 dB (16-bit rounding of the references)
    for value, want in zip((out.mean(), out.std(), veil.mean(), veil.max()), golden):
        if want is not None:
            assert round(float(value), 4) == want


@pytest.mark.realdata
def test_golden_mean_with_global_white_balance():
    x = _input(("tarel", "chengdu_13_rs.jpg"), "colour").astype(np.float32)
    out = rs.tarel_hautiere(x, sv=19, balance=0, gfactor=1.3)
    assert abs(float(out.mean()) - 0.4072) < 1.5e-4  # methods.md A.5 (Octave: 0.4072)


@pytest.mark.realdata
def test_local_white_balance_guard_keeps_output_finite():
    # the authors' code returns all NaN here (0/0 where the three local medians are 0)
    x = _input(("tarel", "chengdu_13_rs.jpg"), "colour").astype(np.float32)
    out = rs.tarel_hautiere(x, sv=19, balance=0.5)
    assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


@pytest.mark.realdata
def test_uint8_median_path_is_bit_exact_on_8bit_thermal():
    x = _input(("thermal_frames", "DJI_20230810173411_0001_T.JPG"), "channel0").astype(np.float32)[:120, :150]
    exact_a = ndimage.median_filter(x, size=51, mode="reflect")  # a corner crop: borders included
    assert np.array_equal(rs.median_filter(x, 51, method="uint8"), exact_a)
    assert np.array_equal(rs.median_filter(x, 51), exact_a)


@pytest.mark.realdata
def test_gray_8bit_frame_equals_the_public_steps_pixel_by_pixel():
    """tarel_hautiere evaluates steps 4-7 once per (W, veil) code pair; the public steps do it per pixel."""
    x = _input(("thermal_frames", "DJI_20230810173412_0002_T.JPG"), "channel0").astype(np.float32)
    out, veil = rs.tarel_hautiere(x, sv=51, gfactor=1.0, return_veil=True)
    rest = rs.restore_visibility(x, sv=51)
    fit = rs.fit_gamma(rest.original_mean, rest.restored_mean, gfactor=1.0)
    steps = rs.tone_map(rs.apply_gamma(rest.restored, fit))
    assert out.dtype == steps.dtype == np.float32
    np.testing.assert_array_equal(veil, rest.veil)
    np.testing.assert_allclose(out, steps, rtol=0, atol=2e-7)  # the fits' sums differ in order only


@pytest.mark.realdata
def test_paper_veil_order_would_blacken_thermal():
    """The paper's V = max(min(pB, W), 0) sets V = W on ~13 % of a thermal frame; the code's form does not."""
    x = _input(("thermal_frames", "DJI_20230810173411_0001_T.JPG"), "channel0").astype(np.float32)
    _, v = rs.tarel_hautiere(x, sv=51, gfactor=1.0, return_veil=True)
    a = rs.median_filter(x, 51)
    b = a - rs.median_filter(np.abs(x - a), 51)
    paper = np.maximum(np.minimum(0.95 * b, x), 0)
    assert 0.12 < np.mean(paper == x) < 0.14  # methods.md A.3: 12.92 %
    assert np.mean(v >= x) < 0.001


# --------------------------------------------------------------------------------------------
# the pipeline against the straightforward float implementation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["gray", "colour", "colour_global_wb", "colour_local_wb"])
def test_pipeline_matches_float_oracle(case):
    shape = (48, 61) if case == "gray" else (48, 61, 3)
    x = _rng_image(1, shape, levels=255)
    balance = {"gray": -1, "colour": -1, "colour_global_wb": 0, "colour_local_wb": 0.5}[case]
    want, want_v = _oracle(x, 15, balance=balance, gfactor=1.3)
    got, got_v = rs.tarel_hautiere(x, sv=15, balance=balance, median="exact", return_veil=True)
    assert got.dtype == np.float64
    assert psnr(got, want) > 100
    np.testing.assert_allclose(got_v, want_v, atol=1e-12)
    # the fast medians: exact on the 8-bit grid, 12-bit once white balance moves W off it
    fast = rs.tarel_hautiere(x, sv=15, balance=balance)
    assert psnr(fast, want) > (100 if balance < 0 else 60)


def test_off_grid_floats_use_a_12bit_median_close_to_exact():
    x = _rng_image(2, (64, 80))  # arbitrary floats
    want, _ = _oracle(x, 21)
    assert psnr(rs.tarel_hautiere(x, sv=21, median="exact"), want) > 100
    assert psnr(rs.tarel_hautiere(x, sv=21), want) > 60  # auto -> hist12
    assert psnr(rs.tarel_hautiere(x, sv=21, median="uint8"), want) < psnr(rs.tarel_hautiere(x, sv=21), want)


def test_adapted_smoothing_matches_the_authors_loop():
    x = _rng_image(3, (23, 19), levels=255)
    rest = rs.restore_visibility(x, sv=7, smax=4)
    plain = rs.restore_visibility(x, sv=7, smax=1)
    factor = 1 / (1 - plain.veil)
    assert set(np.unique(np.minimum(np.floor(factor), 4))) >= {1, 2}  # several window sizes in play
    np.testing.assert_allclose(rest.restored, _medsmooth_loop(plain.restored, factor, 4), atol=1e-12)


def test_local_white_balance_guard_on_black_border():
    x = _rng_image(4, (40, 50, 3), levels=255)
    x[:, :12] = 0  # a black band wider than the window: all three local medians are 0
    out = rs.tarel_hautiere(x, sv=9, balance=0.5)
    assert np.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# medians
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [255, 765, 4080, 65535])
@pytest.mark.parametrize("sv", [1, 3, 5, 7, 21])
def test_median_filter_exact_on_integer_grids(levels, sv):
    x = _rng_image(5, (37, 45), levels=levels)
    want = ndimage.median_filter(x, size=sv, mode="reflect")
    assert np.array_equal(rs.median_filter(x, sv), want)


def test_hist12_median_error_bounded_by_half_a_level():
    x = _rng_image(6, (50, 70)).astype(np.float32)
    want = ndimage.median_filter(x, size=31, mode="reflect")
    step = (x.max() - x.min()) / 4095
    err = np.abs(rs.median_filter(x, 31, method="hist12") - want)
    assert err.max() <= 0.5 * step + 1e-7
    assert np.array_equal(rs.median_filter(x, 31, method="exact"), want)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), lo=st.integers(0, 255), width=st.integers(0, 255), half=st.integers(3, 12),
       shape=st.tuples(st.integers(25, 60), st.integers(25, 60)))
def test_recoded_median_blur_equals_opencv_inside(seed, lo, width, half, shape):
    """The short-search recoding (OpenCV's path) decodes to OpenCV's own median wherever the window is inside."""
    import cv2

    sv = 2 * half + 1
    hi = min(255, lo + width)
    src = np.random.default_rng(seed).integers(lo, hi + 1, shape).astype(np.uint8)
    r = sv // 2
    want = cv2.medianBlur(src, sv)[r:-r, r:-r]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rs, "_median_rows_c", None)
        assert np.array_equal(rs._median_blur(src, sv, recode=True), want)


# -- the C median (gasdb_tools/_median8.c) -----------------------------------------------------
def _c_median():
    if rs._median_rows_c is None:
        pytest.skip("the C median is not built (no C compiler at install): cv2.medianBlur is used instead")
    return rs._median_rows_c


def _opencv_inside(padded, sv):
    import cv2

    r = sv // 2
    if sv == 1:
        return padded.copy()
    return cv2.medianBlur(padded, sv)[r:padded.shape[0] - r, r:padded.shape[1] - r]


def _test_image(seed, shape, kind, lo, hi):
    rng = np.random.default_rng(seed)
    if kind == "noise":  # medians jump between coarse bins from one window to the next
        return rng.integers(lo, hi + 1, shape).astype(np.uint8)
    # a ramp with noise: the median walks across many coarse bins, up and down
    y, x = np.mgrid[:shape[0], :shape[1]]
    ramp = lo + (hi - lo) * (0.5 + 0.5 * np.sin(x / 7.0 + y / 11.0))
    return np.clip(ramp + rng.normal(0, 6, shape), 0, 255).round().astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), half=st.integers(0, 20), kind=st.sampled_from(["noise", "ramp"]),
       lo=st.integers(0, 255), width=st.integers(0, 255), extra=st.tuples(st.integers(0, 40), st.integers(0, 40)),
       band=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_c_median_equals_opencv_on_any_band(seed, half, kind, lo, width, extra, band):
    """Every output row of every band equals OpenCV's median of the same padded image, bit for bit."""
    median_rows = _c_median()
    sv = 2 * half + 1
    padded = _test_image(seed, (sv + extra[0], sv + extra[1]), kind, lo, min(255, lo + width))
    want = _opencv_inside(padded, sv)
    y0, y1 = sorted(round(f * want.shape[0]) for f in band)
    out = np.full((y1 - y0, want.shape[1]), 7, np.uint8)
    median_rows(padded, sv, y0, y1, out)
    np.testing.assert_array_equal(out, want[y0:y1])


@pytest.mark.parametrize("sv", [3, 51, 181])
def test_c_median_equals_opencv_on_a_real_thermal_frame(shared, sv):
    import cv2

    median_rows = _c_median()
    frame = read_image(shared("thermal_frames", "DJI_20230810173411_0001_T.JPG"), mode="gray")
    r = sv // 2
    padded = cv2.copyMakeBorder(frame, r, r, r, r, cv2.BORDER_REFLECT)
    out = np.empty(frame.shape, np.uint8)
    median_rows(padded, sv, 0, frame.shape[0], out)
    np.testing.assert_array_equal(out, _opencv_inside(padded, sv))
    deviation = cv2.copyMakeBorder(cv2.absdiff(frame, out), r, r, r, r, cv2.BORDER_REFLECT)  # the veil's second median
    median_rows(deviation, sv, 0, frame.shape[0], out)
    np.testing.assert_array_equal(out, _opencv_inside(deviation, sv))


def test_windows_past_the_c_median_limit_fall_back_to_opencv():
    """sv > 181 would overflow the C median's 16-bit counts: OpenCV's median takes those."""
    import cv2

    x = _rng_image(21, (200, 210), levels=255)
    q = (x * 255).round().astype(np.uint8)
    want = _opencv_inside(cv2.copyMakeBorder(q, 91, 91, 91, 91, cv2.BORDER_REFLECT), 183)
    np.testing.assert_array_equal((rs.median_filter(x, 183) * 255).round(), want)


@pytest.mark.parametrize("call, message", [
    (lambda f, a, o: f(a, 4, 0, 10, o), "sv must be odd"),
    (lambda f, a, o: f(a, 183, 0, 10, o), "between 1 and 181"),
    (lambda f, a, o: f(a.astype(np.uint16), 5, 0, 10, o), "uint8"),
    (lambda f, a, o: f(a[0], 5, 0, 10, o), "2-D"),
    (lambda f, a, o: f(a, 5, 0, 10, o[:, :-1]), "columns"),
    (lambda f, a, o: f(a, 5, 0, 11, o), "outside the output"),
    (lambda f, a, o: f(a, 5, 3, 2, o), "outside the output"),
    (lambda f, a, o: f(a[:, ::2], 5, 0, 10, o), "contiguous"),
    (lambda f, a, o: f(a[::-1], 5, 0, 10, o), "top to bottom"),
    (lambda f, a, o: f(a, 5, 0, 10, o.astype(np.int8)), "uint8"),
])
def test_c_median_rejects_bad_arguments(call, message):
    median_rows = _c_median()
    padded = np.zeros((14, 24), np.uint8)  # sv 5: 10 x 20 outputs
    out = np.zeros((10, 20), np.uint8)
    with pytest.raises((ValueError, TypeError, BufferError), match=message):
        call(median_rows, padded, out)


def test_c_median_is_built_where_a_c_compiler_is():
    """`make install` builds it when the machine has a C compiler: a silent build failure shows here."""
    if c_compiler() is None:
        pytest.skip("no C compiler on this machine: the OpenCV median is the expected one")
    assert rs._median_rows_c is not None, (
        "gasdb_tools/_median8.c was not built although a C compiler is present; reinstall "
        "(`make install`, or `pip install -e .`) and read the compiler's messages")


def test_tarel_hautiere_is_identical_with_the_c_and_the_opencv_median(shared, monkeypatch):
    frame = read_image(shared("thermal_frames", "DJI_20230810173411_0001_T.JPG"), mode="gray").astype(np.float32) / 255
    _c_median()
    with_c, veil_c = rs.tarel_hautiere(frame, sv=51, gfactor=1.0, return_veil=True)
    monkeypatch.setattr(rs, "_median_rows_c", None)
    with_opencv, veil_opencv = rs.tarel_hautiere(frame, sv=51, gfactor=1.0, return_veil=True)
    np.testing.assert_array_equal(with_c, with_opencv)
    np.testing.assert_array_equal(veil_c, veil_opencv)


def test_rank_codes_bounds_every_inside_median():
    x = (_rng_image(12, (70, 90), levels=255) * 255).round().astype(np.uint8)
    codes = rs._rank_codes(x, 21)
    assert codes is not None
    encode, decode = codes
    assert np.all(np.diff(encode.astype(int)) >= 0)  # non-decreasing: medians commute with it
    lo, hi = int(decode[encode[0]]), int(decode[encode[-1]])
    assert np.array_equal(decode[encode[lo:hi + 1]], np.arange(lo, hi + 1))  # one-to-one on [lo, hi]
    inside = ndimage.median_filter(x, size=21)[10:-10, 10:-10]
    assert lo <= inside.min() and inside.max() <= hi


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(3, 30), w=st.integers(3, 30), half=st.integers(0, 8), seed=st.integers(0, 2**16),
       levels=st.sampled_from([255, 510, 765, 65535]))
def test_median_filter_property_equals_scipy(h, w, half, seed, levels):
    sv = min(2 * half + 1, h if h % 2 else h - 1, w if w % 2 else w - 1)
    x = np.random.default_rng(seed).integers(0, levels + 1, (h, w)) / levels
    assert np.array_equal(rs.median_filter(x, sv), ndimage.median_filter(x, size=sv, mode="reflect"))


# --------------------------------------------------------------------------------------------
# gamma rows and tone mapping
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,start,stop", [(512, 340, 511), (300, 199, 300), (480, 319, 480), (2, 0, 1), (1, 0, 1)])
def test_bottom_third_rows_follow_octave(h, start, stop):
    assert rs.reference_rows(h) == slice(start, stop)


def test_gamma_rows_choices_change_the_fit():
    x = _rng_image(7, (60, 40), levels=255)
    x[:20] *= 0.5  # darker top: fitting on all rows sees it, the bottom third does not
    a = rs.tarel_hautiere(x, sv=9, gamma_rows="bottom_third")
    b = rs.tarel_hautiere(x, sv=9, gamma_rows="all")
    c = rs.tarel_hautiere(x, sv=9, gamma_rows=slice(39, 60))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, c)
    want, _ = _oracle(x, 9, rows=list(range(60)))
    assert psnr(b, want) > 100


def test_tone_map_maps_peak_to_one_and_clips():
    u = np.array([0.0, 0.5, 2.0, 3.0], np.float32)
    np.testing.assert_allclose(rs.tone_map(u), [0, 0.5 / (1 + 0.5 * (1 - 1 / 3)), 2 / (1 + 2 * (2 / 3)), 1], rtol=1e-6)
    assert rs.tone_map(u, peak=2.0)[-1] == 1.0
    assert not rs.tone_map(np.zeros(3, np.float32)).any()


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------
_images = st.tuples(st.integers(8, 28), st.integers(8, 28), st.integers(0, 2**16), st.booleans())


@settings(max_examples=30, deadline=None)
@given(spec=_images, half=st.integers(1, 3), p=st.floats(0.05, 0.99), gfactor=st.floats(0.5, 2.0),
       rows=st.sampled_from(["bottom_third", "all"]))
def test_output_in_unit_range_and_shape_kept(spec, half, p, gfactor, rows):
    h, w, seed, colour = spec
    shape = (h, w, 3) if colour else (h, w)
    x = np.random.default_rng(seed).random(shape).astype(np.float32)
    out = rs.tarel_hautiere(x, sv=2 * half + 1, p=p, gfactor=gfactor, gamma_rows=rows)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@settings(max_examples=20, deadline=None)
@given(spec=_images, balance=st.sampled_from([-1.0, 0.0, 0.5]), quantised=st.booleans())
def test_gray_equals_three_equal_channels(spec, balance, quantised):
    h, w, seed, _ = spec
    g = np.random.default_rng(seed).random((h, w))
    if quantised:
        g = np.rint(g * 255) / 255
    gray = rs.tarel_hautiere(g, sv=5, balance=balance)
    colour = rs.tarel_hautiere(np.repeat(g[:, :, None], 3, axis=2), sv=5, balance=balance)
    for c in range(3):
        np.testing.assert_allclose(colour[..., c], gray, atol=1e-12)


def test_trailing_channel_of_one_and_dtypes():
    x = _rng_image(8, (20, 24), levels=255)
    assert rs.tarel_hautiere(x[:, :, None], sv=5).shape == (20, 24, 1)
    assert rs.tarel_hautiere(x.astype(np.float16), sv=5).dtype == np.float32
    out, v = rs.tarel_hautiere(x, sv=5, p=0.8, return_veil=True)
    assert v.shape == x.shape and (v <= 0.8 * x + 1e-12).all() and (v >= 0).all()


def test_constant_image_is_finite():
    out = rs.tarel_hautiere(np.full((16, 16), 0.6), sv=5)
    assert np.isfinite(out).all()
    assert not rs.tarel_hautiere(np.zeros((16, 16)), sv=5).any()


def test_default_sv_is_the_authors_demo_rule():
    assert rs.default_sv((512, 640)) == 51
    assert rs.default_sv((512, 640, 3)) == 25
    assert rs.default_sv((20, 400)) == 19  # capped to fit
    assert rs.tarel_hautiere(_rng_image(9, (30, 40), levels=255)).shape == (30, 40)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image,exc,words", [
    (np.zeros((0, 5)), ValueError, "empty"),
    (np.full((8, 8), np.nan), ValueError, "NaN"),
    (np.full((8, 8), np.inf), ValueError, "nan_to_num"),
    (np.zeros((8, 8), np.uint8), TypeError, "/ 255"),
    (np.zeros((8, 8), np.uint16), TypeError, "/ 65535"),
    (np.zeros((8, 8), bool), TypeError, "float"),
    (np.full((8, 8), 2.0), ValueError, "[0, 1]"),
    (np.zeros((8, 8, 4)), ValueError, "alpha"),
    (np.zeros(8), ValueError, "(H, W)"),
])
def test_bad_images(image, exc, words):
    with pytest.raises(exc, match=None) as info:
        rs.tarel_hautiere(image, sv=3)
    assert words in str(info.value)
    assert "image" in str(info.value)


@pytest.mark.parametrize("kwargs,exc,words", [
    ({"sv": 4}, ValueError, "use 3 or 5"),
    ({"sv": 31}, ValueError, "larger than the image"),
    ({"sv": 0}, ValueError, ">= 1"),
    ({"sv": 5.0}, TypeError, "odd integer"),
    ({"p": 1.0}, ValueError, "p (restoration strength)"),
    ({"p": 0}, ValueError, "between 0 and 1"),
    ({"smax": 0}, ValueError, "smax"),
    ({"gfactor": 0}, ValueError, "gfactor"),
    ({"gamma_rows": "top"}, ValueError, "gamma_rows"),
    ({"gamma_rows": slice(50, 60)}, ValueError, "selects no row"),
    ({"median": "fast"}, ValueError, "median must be one of"),
    ({"balance": float("nan")}, ValueError, "balance"),
])
def test_bad_arguments(kwargs, exc, words):
    x = np.full((20, 30), 0.5)
    with pytest.raises(exc) as info:
        rs.tarel_hautiere(x, **{"sv": 5, **kwargs})
    assert words in str(info.value)


def test_median_filter_rejects_colour():
    with pytest.raises(ValueError, match="gray"):
        rs.median_filter(np.zeros((9, 9, 3)), 3)


@pytest.mark.parametrize("levels", [255, 4080])
def test_threaded_bands_equal_serial(levels):
    import cv2

    x = _rng_image(10, (420, 330), levels=levels)  # big enough to be split over threads
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(max(2, threads))
        banded = rs.median_filter(x, 41)
        cv2.setNumThreads(1)
        serial = rs.median_filter(x, 41)
    finally:
        cv2.setNumThreads(threads)
    np.testing.assert_array_equal(banded, serial)


def test_two_bands_run_by_one_worker_equal_serial(monkeypatch):
    """Band results must not live in a worker's reused buffers: one worker may run every band."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    x = _rng_image(13, (420, 330), levels=255).astype(np.float32)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        serial = rs.tarel_hautiere(x, sv=41, gfactor=1.0)
    finally:
        cv2.setNumThreads(threads)
    one_worker = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(rs, "_workers", lambda pixels: 2)
    monkeypatch.setattr(rs, "_pool", lambda n: one_worker)
    try:
        np.testing.assert_array_equal(rs.tarel_hautiere(x, sv=41, gfactor=1.0), serial)
    finally:
        one_worker.shutdown()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_medians_work_in_a_forked_child():
    """A forked child (e.g. a DataLoader worker) gets its own thread pool instead of hanging."""
    import os
    import time

    import cv2

    x = _rng_image(11, (420, 330), levels=255)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(max(2, threads))
    try:
        want = rs.median_filter(x, 31)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os._exit(0 if np.array_equal(rs.median_filter(x, 31), want) else 3)
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the median hung in a forked child")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        cv2.setNumThreads(threads)


@pytest.mark.parametrize("bands", [2, 3, 4])
def test_bands_narrower_than_the_window_equal_serial(monkeypatch, bands):
    """Bands of rows narrower than the window still see the mirrored halo right."""
    x = _rng_image(14, (60, 30), levels=255).astype(np.float32)
    want_out, want_veil = rs.tarel_hautiere(x, sv=21, gfactor=1.0, return_veil=True)  # one band: too small to split
    want_rest = rs.restore_visibility(x, sv=21)
    monkeypatch.setattr(rs, "_workers", lambda pixels: bands)
    out, veil = rs.tarel_hautiere(x, sv=21, gfactor=1.0, return_veil=True)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(veil, want_veil)
    np.testing.assert_array_equal(rs.restore_visibility(x, sv=21).restored, want_rest.restored)


def test_balanced_bands_move_the_cut_towards_the_costlier_band(monkeypatch):
    """The next call gives less width to the band that took more CPU time (half a step, clamped)."""
    monkeypatch.setattr(rs, "_SPLITS", {})
    data = np.random.default_rng(0).random(400_000)

    def work(a0, a1):  # the left half costs three times as much per column
        for _ in range(3 if a0 == 0 else 1):
            np.sort(data[: (a1 - a0) * 400])
        return a0, a1

    assert rs._balanced_bands(("test",), 1000, 2, work) == [(0, 500), (500, 1000)]
    (cut_key, cuts), = rs._SPLITS.items()
    assert cut_key[0] == "test" and cuts[0] == 0 and cuts[2] == 1000
    cut = cuts[1]
    assert 250 <= cut < 460  # balanced would be near 250; half a step from 500, at most a quarter band away
    results = rs._balanced_bands(("test",), 1000, 2, work)
    assert results == [(0, cut), (cut, 1000)]


def test_bands_the_pool_has_not_started_run_on_the_calling_thread(monkeypatch):
    """A pool whose only thread is busy elsewhere: the caller runs every band itself instead of waiting."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    x = _rng_image(15, (120, 90), levels=255).astype(np.float32)
    serial = rs.tarel_hautiere(x, sv=21, gfactor=1.0)
    busy = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    busy.submit(release.wait, 30)  # occupies the pool's thread
    monkeypatch.setattr(rs, "_workers", lambda pixels: 2)
    monkeypatch.setattr(rs, "_pool", lambda n: busy)
    try:
        start = time.monotonic()
        out = rs.tarel_hautiere(x, sv=21, gfactor=1.0)
        assert time.monotonic() - start < 20  # did not wait for the busy thread
    finally:
        release.set()
        busy.shutdown()
    np.testing.assert_array_equal(out, serial)


def test_thread_count_changing_between_frames_keeps_outputs(monkeypatch):
    """Cuts balanced for one thread count are not reused for another (frames of one size)."""
    x = _rng_image(16, (80, 64), levels=255).astype(np.float32)
    want = rs.tarel_hautiere(x, sv=15, gfactor=1.0)
    for bands in (2, 4, 3, 2, 4):
        monkeypatch.setattr(rs, "_workers", lambda pixels, n=bands: n)
        np.testing.assert_array_equal(rs.tarel_hautiere(x, sv=15, gfactor=1.0), want)
