"""Stream sync: offset estimation, pairing by timestamp, time-based sampling, near-duplicate statistic."""

import json
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasdb_tools.extract import DEFAULT_MIN_CONFIDENCE
from gasdb_tools.sync import (DuplicateFilter, TimeSampler, _nan_median, change_statistic, estimate_offset,
                              estimate_offset_colocation, foreground_maps, iter_pairs, pair_by_time, pairing_tolerance,
                              resample_signal, sample_every, stream_period)
from gasdb_tools.video import motion_energy
from tests._motion_scenes import AMBIGUOUS, EVENTS, WALKS, write_scene


def _activity(seed: int, seconds: float = 30.0):
    """A bursty 'motion energy' of a scene, as a function of world time (100 Hz table)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 0.01)
    bursts = np.zeros_like(t)
    for start in rng.uniform(0, seconds, 25):
        bursts += rng.uniform(0.5, 2) * np.exp(-0.5 * ((t - start) / rng.uniform(0.05, 0.4)) ** 2)
    return t, bursts


# -- offset ---------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(offset=st.floats(-4.0, 4.0), seed=st.integers(0, 1000))
def test_offset_of_two_differently_sampled_streams_is_recovered_within_a_frame(offset, seed):
    world_t, act = _activity(seed)
    rng = np.random.default_rng(seed + 1)
    t_th = np.arange(0, 20, 1 / 25)  # thermal clock; thermal frame k shows world time t + 5
    t_rgb = np.arange(0, 20, 1 / 30)  # RGB clock: world time t_rgb + 5 - offset
    e_th = np.interp(t_th + 5, world_t, act) * 3 + rng.normal(0, 0.05, t_th.size)
    e_rgb = np.interp(t_rgb + 5 - offset, world_t, act) + 0.5 + rng.normal(0, 0.05, t_rgb.size)
    est = estimate_offset(t_th, e_th, t_rgb, e_rgb)
    assert abs(est.offset_s - offset) < 1 / 30
    assert est.confidence > 0.5
    assert est.lags_s[0] == -5.0 and est.lags_s[-1] == 5.0


def _estimate(folder):
    """(motion-energy estimate, co-location estimate) of a recording written by ``write_scene``."""
    th = motion_energy(folder / "thermal.mp4", keep_seconds=60)
    rgb = motion_energy(folder / "rgb.mp4", keep_seconds=60)
    return (estimate_offset(th.times, th.energy, rgb.times, rgb.energy),
            estimate_offset_colocation(th.frame_times, th.thumbnails, rgb.frame_times, rgb.thumbnails))


@pytest.mark.parametrize("kind,seed,offset", [(k, s, o) for k in AMBIGUOUS for s, o in ((0, 0.0), (1, 0.7), (2, -1.3))])
def test_ambiguous_motion_never_passes_the_confidence_threshold(tmp_path, kind, seed, offset):
    """A slideshow, a uniform pan or a static scene (real encoded video, 30/25 fps) is refused.

    Their peak correlation alone (the old confidence) is well above the threshold: 0.98
    (slideshow: every 2 s period lines up), 0.77 (pan), 0.35-0.42 (static: the encoder's keyframe
    pulses); what they lack is a peak that beats the other lags. Where things move tells no more:
    a static scene has no foreground, a new slide starts a new shot whose background is itself,
    and a pan leaves only what its compensation misses at the texture's edges (co-location
    confidence measured on 11 seeds each: slideshow <= 0.03, static <= 0.01, pan <= 0.13).
    """
    est, where = _estimate(write_scene(tmp_path, kind, seed=seed, offset_s=offset))
    assert est.peak > DEFAULT_MIN_CONFIDENCE
    assert est.confidence < DEFAULT_MIN_CONFIDENCE, (est.offset_s, est.confidence, est.peak, est.second_peak)
    assert est.confidence == 0.0
    assert where.method == "co-location" and where.confidence < DEFAULT_MIN_CONFIDENCE, where[:3]


@pytest.mark.parametrize("kind,seed,offset", [(k, s, o) for k in EVENTS for s, o in ((0, 0.0), (1, 0.7), (2, -1.3))])
def test_a_flash_clap_or_heat_source_gives_the_offset_at_high_confidence(tmp_path, kind, seed, offset):
    est, where = _estimate(write_scene(tmp_path, kind, seed=seed, offset_s=offset))
    assert abs(est.offset_s - offset) < 1 / 30
    assert est.confidence > 0.35 and est.confidence > 2 * DEFAULT_MIN_CONFIDENCE, est
    assert abs(where.offset_s - offset) < 1 / 30 and where.confidence > 2 * DEFAULT_MIN_CONFIDENCE, where[:3]


@pytest.mark.parametrize("seed,offset", [(0, 0.0), (1, 0.7), (2, -1.3)])
def test_a_steady_walker_is_told_by_where_it_is_not_by_how_much_moves(tmp_path, seed, offset):
    """A blob crossing at a constant speed, the thermal camera jittering on its own: the motion
    energy is flat (refused), the walker's position in the two pictures gives the offset."""
    est, where = _estimate(write_scene(tmp_path, WALKS[0], seed=seed, offset_s=offset))
    assert est.confidence < DEFAULT_MIN_CONFIDENCE
    assert abs(where.offset_s - offset) < 1 / 30, where[:3]
    assert where.confidence > 2 * DEFAULT_MIN_CONFIDENCE and where.second_peak < 0.1, where[:3]


def _blob_frames(times, centres, *, seed, size=(80, 64), radius=3.0, invert=False, jitter=0):
    """Small gray frames: a fixed texture with a bright blob at ``centres(t)`` (None: no blob)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = cv2.GaussianBlur(np.random.default_rng(99).random((h, w)).astype(np.float32), (0, 0), 2.0)
    base = 100 + 30 * (base - base.mean()) / base.std()
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in times:
        img = base.copy()
        for c in centres(t):
            img += 80 * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * radius ** 2))
        if jitter:
            img = np.roll(img, int(rng.integers(-jitter, jitter + 1)), axis=0)
        img += rng.normal(0, 2, img.shape)
        frames.append(255 - img if invert else img)
    return np.stack(frames).astype(np.float32)


@settings(max_examples=10, deadline=None)
@given(period=st.floats(0.5, 2.0), offset=st.floats(-2, 2), seed=st.integers(0, 1000))
def test_periodic_motion_is_not_trusted_by_colocation_either(period, offset, seed):
    """A blob swinging back and forth (a pendulum, a fan): the same places recur every period."""
    t_th, t_rgb = np.arange(0, 8, 1 / 25), np.arange(0, 8, 1 / 30)

    def swing(t):
        return [(40 + 25 * math.sin(2 * math.pi * t / period), 32)]

    th = _blob_frames(t_th, swing, seed=seed, invert=True)
    rgb = _blob_frames(t_rgb, lambda t: swing(t - offset), seed=seed + 1)
    where = estimate_offset_colocation(t_th, th, t_rgb, rgb, max_lag_s=3.0)
    assert where.confidence < DEFAULT_MIN_CONFIDENCE, where[:3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motion_only_one_camera_sees_is_not_trusted(seed):
    """A plume drifting where only the thermal camera sees it, a walker the RGB camera sees
    elsewhere: no place moves in both, so no offset is trusted (a gas recording's worst case)."""
    t_th, t_rgb = np.arange(0, 10, 1 / 25), np.arange(0, 10, 1 / 30)
    rng = np.random.default_rng(seed)
    wander = np.cumsum(rng.normal(0, 0.6, (400, 2)), axis=0)
    th = _blob_frames(t_th, lambda t: [(20 + wander[int(t * 25) % 400, 0] % 30, 15 + wander[int(t * 25) % 400, 1] % 15)],
                      seed=seed, radius=5.0, invert=True)
    rgb = _blob_frames(t_rgb, lambda t: [(5 + 7 * t, 50)], seed=seed + 1)
    where = estimate_offset_colocation(t_th, th, t_rgb, rgb)
    assert where.confidence < DEFAULT_MIN_CONFIDENCE, where[:3]


def test_foreground_maps_find_the_mover_not_the_pan_nor_a_cut():
    """A blob on a texture the camera pans over at 1 px/frame: the map peaks on the blob, is quiet
    elsewhere, and a frame whose whole picture changed (a cut) has an empty map."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((64, 200)).astype(np.float32), (0, 0), 2.0)
    tex = 100 + 30 * (tex - tex.mean()) / tex.std()
    yy, xx = np.mgrid[0:64, 0:80]
    times, frames = np.arange(40) / 10, []
    for k in range(40):
        img = tex[:, k:k + 80].copy() + 80 * np.exp(-((xx - (10 + 1.5 * k)) ** 2 + (yy - 30) ** 2) / 8.0)
        frames.append(img + rng.normal(0, 1, img.shape))
    frames[25] = rng.random((64, 80)) * 255  # a cut
    maps = foreground_maps(times, np.stack(frames).astype(np.float32))
    assert maps.shape == (40, 32, 40) and maps.dtype == np.float32
    assert not maps[25].any()
    for k in (5, 15, 35):
        y, x = np.unravel_index(np.argmax(maps[k]), maps[k].shape)
        assert abs(2 * x - (10 + 1.5 * k)) <= 3 and abs(2 * y - 30) <= 3, (k, x, y)
        far = np.abs(np.arange(40) * 2 - (10 + 1.5 * k)) > 12
        assert maps[k][:, far].max() < 0.1 * maps[k].max()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 17), holes=st.floats(0, 1), seed=st.integers(0, 1000))
def test_nan_median_is_numpys(n, holes, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 5))
    x[rng.random(x.shape) < holes] = np.nan
    median, count = _nan_median(x)
    assert np.array_equal(count, np.isfinite(x).sum(axis=0))
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        assert np.allclose(median, np.nanmedian(x, axis=0), equal_nan=True)


def test_few_measured_samples_bound_the_independent_samples():
    """Resampled to 100 Hz, 7 measured samples are still 7: a correlation on them is not trusted."""
    t = np.arange(7) * 0.3
    e = np.array([0.0, 1.0, 0.2, 3.0, 0.5, 0.1, 2.0])
    est = estimate_offset(t, e, t + 0.0, e * 2 + 1, max_lag_s=1.0)
    assert est.offset_s == pytest.approx(0.0, abs=0.01) and est.peak == pytest.approx(1.0)
    assert est.independent_samples <= 7


def test_colocation_arguments_are_checked():
    t = np.arange(5) / 10
    frames = np.zeros((5, 8, 8), np.float32)
    with pytest.raises(ValueError, match="stacks of one size"):
        estimate_offset_colocation(t, frames, t, np.zeros((5, 8, 6), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        foreground_maps(t[:4], frames)
    with pytest.raises(ValueError, match="max_lag_s"):
        estimate_offset_colocation(t, frames, t, frames, max_lag_s=0)
    est = estimate_offset_colocation(t, frames, t, frames)  # nothing moves: no estimate
    assert math.isnan(est.offset_s) and est.confidence == 0.0 and est.method == "co-location"


@settings(max_examples=30, deadline=None)
@given(period=st.floats(0.3, 2.5), duty=st.floats(0.05, 0.5), phase=st.floats(0, 1), offset=st.floats(-3, 3),
       seed=st.integers(0, 10_000))
def test_periodic_motion_is_never_trusted(period, duty, phase, offset, seed):
    """Any periodic motion (here a noisy pulse train seen by both cameras, 25 and 30 fps) is refused."""
    rng = np.random.default_rng(seed)
    t_th, t_rgb = np.arange(0, 20, 1 / 25), np.arange(0, 20, 1 / 30)

    def pulses(t):
        return (((t / period + phase) % 1.0) < duty).astype(float)

    e_th = pulses(t_th) + rng.normal(0, 0.1, t_th.size)
    e_rgb = 2 * pulses(t_rgb - offset) + 1 + rng.normal(0, 0.1, t_rgb.size)
    est = estimate_offset(t_th, e_th, t_rgb, e_rgb)
    assert est.confidence < DEFAULT_MIN_CONFIDENCE, est


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_unrelated_noise_is_never_trusted(seed):
    rng = np.random.default_rng(seed)
    t_th, t_rgb = np.arange(0, 20, 1 / 25), np.arange(0, 20, 1 / 30)
    est = estimate_offset(t_th, rng.normal(size=t_th.size), t_rgb, rng.normal(size=t_rgb.size))
    assert est.confidence < DEFAULT_MIN_CONFIDENCE, est


def test_identical_signals_are_certain_and_the_evidence_is_reported():
    t, act = _activity(3, seconds=20.0)
    est = estimate_offset(t, act, t, act)
    assert est.offset_s == 0.0 and est.confidence == 1.0 and est.peak == pytest.approx(1.0)
    assert est.second_peak < 0.9 and est.independent_samples > 10
    assert -1 <= est.periodicity <= est.second_peak + 1e-9  # the autocorrelation's rival is the cross-correlation's


def test_correlation_curve_matches_a_direct_pearson_at_each_lag():
    rng = np.random.default_rng(0)
    t_a = np.arange(0, 12, 0.04)
    t_b = np.arange(0, 9, 1 / 30)
    e_a, e_b = rng.random(t_a.size), rng.random(t_b.size)
    est = estimate_offset(t_a, e_a, t_b, e_b, max_lag_s=2.0, min_overlap=0.3)
    ia0, a = resample_signal(t_a, e_a)
    jb0, b = resample_signal(t_b, e_b)
    for k in (0, 37, 100, 200, 333, 400):
        lag = int(round(est.lags_s[k] * 100))
        # thermal grid index i meets rgb grid index j with (jb0 + j) - (ia0 + i) = lag
        i = np.arange(a.size)
        j = i + lag + ia0 - jb0
        ok = (j >= 0) & (j < b.size)
        expected = np.corrcoef(a[i[ok]], b[j[ok]])[0, 1]
        assert est.correlation[k] == pytest.approx(expected, abs=1e-9)


def test_flat_signal_or_no_overlap_gives_no_estimate():
    t = np.arange(0, 10, 0.04)
    est = estimate_offset(t, np.ones_like(t), t, np.sin(t))
    assert math.isnan(est.offset_s) and est.confidence == 0.0
    short = np.arange(0, 0.5, 0.04)
    est = estimate_offset(short, np.sin(7 * short), t, np.sin(t))  # 0.5 s cannot overlap 1 s anywhere
    assert math.isnan(est.offset_s)


def test_offset_arguments_are_checked():
    t = np.arange(10.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        estimate_offset(t[:1], t[:1], t, t)
    with pytest.raises(ValueError, match="non-decreasing"):
        estimate_offset(t[::-1], t, t, t)
    with pytest.raises(ValueError, match="max_lag_s"):
        estimate_offset(t, t, t, t, max_lag_s=0)
    with pytest.raises(ValueError, match="kappa"):
        estimate_offset(t, t, t, t, kappa=-1)


def test_resample_signal_interpolates_on_the_grid():
    first, values = resample_signal([0.013, 0.05, 0.101], [1.0, 2.0, 4.0], rate_hz=100)
    assert first == 2
    np.testing.assert_allclose(values, np.interp(np.arange(2, 11) / 100, [0.013, 0.05, 0.101], [1, 2, 4]))


# -- pairing --------------------------------------------------------------------------------------
def _reference_pairs(t_rgb, t_th, offset, tol):
    """Brute force: each thermal frame's nearest RGB frame within tol; an RGB frame goes to the closer."""
    best = {}
    for i, t in enumerate(t_th):
        u = t + offset
        j = int(np.argmin(np.abs(t_rgb - u)))
        if abs(t_rgb[j] - u) <= tol and (j not in best or abs(t_rgb[j] - u) < best[j][1]):
            best[j] = (i, abs(t_rgb[j] - u))
    return sorted((i, j) for j, (i, _) in best.items())


def _stream(rng, fps, seconds, jitter, drop):
    t = np.arange(0, seconds, 1 / fps) + rng.uniform(-jitter, jitter, int(np.ceil(seconds * fps)))[: int(np.ceil(
        seconds * fps - 1e-9))]
    t = np.sort(t[rng.random(t.size) >= drop])
    return t + rng.uniform(0, 0.1)


@settings(max_examples=60, deadline=None)
@given(fps_rgb=st.sampled_from([9.0, 15.0, 25.0, 30.0, 29.97]), fps_th=st.sampled_from([9.0, 25.0, 30.0, 50.0]),
       offset=st.floats(-2.0, 2.0), jitter=st.floats(0, 0.004), drop=st.floats(0, 0.2), seed=st.integers(0, 10**6))
def test_pairs_are_unique_mutual_nearest_and_within_half_the_faster_period(fps_rgb, fps_th, offset, jitter, drop,
                                                                          seed):
    rng = np.random.default_rng(seed)
    t_rgb = _stream(rng, fps_rgb, 4.0, jitter, drop)
    t_th = _stream(rng, fps_th, 4.0, jitter, drop)
    tol = pairing_tolerance(1 / fps_rgb, 1 / fps_th)
    p = pair_by_time(t_rgb, t_th, offset_s=offset, tolerance=tol)
    assert sorted(zip(p.thermal_index.tolist(), p.rgb_index.tolist())) == _reference_pairs(t_rgb, t_th, offset, tol)
    assert np.all(np.abs(p.dt) <= tol + 1e-12)
    np.testing.assert_allclose(p.dt, t_rgb[p.rgb_index] - t_th[p.thermal_index] - offset)
    assert len(set(p.rgb_index.tolist())) == p.rgb_index.size
    assert np.all(np.diff(p.thermal_index) > 0) and np.all(np.diff(p.rgb_index) > 0)  # time order, no repeats


def test_cfr_streams_pair_every_frame_of_the_slower_one():
    t_rgb, t_th = np.arange(300) / 30, np.arange(250) / 25
    p = pair_by_time(t_rgb, t_th, offset_s=0.0)
    assert p.thermal_index.tolist() == list(range(250))
    assert np.abs(p.dt).max() <= 0.5 / 30


def test_non_overlapping_streams_give_no_pairs():
    p = pair_by_time(np.arange(30) / 30, np.arange(25) / 25, offset_s=5.0)
    assert p.rgb_index.size == 0 and p.thermal_index.size == 0


def test_iter_pairs_is_lazy_and_passes_payloads_through():
    consumed = []

    def rgb():
        for k in range(1000):
            consumed.append(k)
            yield k / 30, f"rgb{k}"

    pairs = iter_pairs(rgb(), ((k / 25, f"th{k}") for k in range(3)), offset_s=0.1, tolerance=0.5 / 30)
    got = [(p.rgb, p.thermal) for p in pairs]
    assert got == [("rgb3", "th0"), ("rgb4", "th1"), ("rgb5", "th2")]
    assert len(consumed) < 10  # stopped reading RGB right after the thermal stream ended


def test_pairing_arguments_are_checked():
    with pytest.raises(ValueError, match="non-decreasing"):
        pair_by_time([0.0, 0.2, 0.1], [0.0, 0.1])
    with pytest.raises(ValueError, match="two distinct timestamps"):
        stream_period([1.0, 1.0])
    assert stream_period([0, 0.04, 0.08, 0.2, 0.24]) == pytest.approx(0.04)  # a dropped frame does not count


# -- sampling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", [9.0, 25.0, 30.0])
def test_every_samples_sources_of_any_rate_alike(fps):
    times = np.arange(0, 10, 1 / fps)
    kept = times[sample_every(times, 0.5)]
    assert kept.size == 20
    grid = np.arange(20) * 0.5
    assert np.all(kept >= grid - 1e-6) and np.all(kept - grid < 1 / fps)  # first frame at/after each grid point


def test_sampling_grid_does_not_drift_and_skips_gaps():
    times = np.concatenate([np.arange(0, 3, 0.04), np.arange(5.02, 8, 0.04)])  # a 2 s gap
    kept = times[sample_every(times, 1.0)]
    np.testing.assert_allclose(kept, [0, 1, 2, 5.02, 6.02, 7.02], atol=1e-6)
    s = TimeSampler(None)
    assert all(s.take(t) for t in times)
    with pytest.raises(ValueError, match="every_s"):
        TimeSampler(-1)


# -- near-duplicates ------------------------------------------------------------------------------
def _scene(rng, shape=(256, 320)):
    return cv2.GaussianBlur(rng.normal(120, 30, shape).astype(np.float32), (0, 0), 4)


def _noisy(base, rng, sigma=1.5):
    return np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)


def _plume(shape, centre, radius, contrast):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return -contrast * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * radius**2))


def _dhash(image):
    small = cv2.resize(image, (9, 8), interpolation=cv2.INTER_AREA)
    return (small[:, 1:] > small[:, :-1]).ravel()


def test_change_statistic_separates_noise_from_a_moved_faint_plume():
    rng = np.random.default_rng(0)
    base = _scene(rng)
    a = _noisy(base + _plume(base.shape, (120, 150), 14, 8), rng)
    same = _noisy(base + _plume(base.shape, (120, 150), 14, 8), rng)
    moved = _noisy(base + _plume(base.shape, (150, 140), 14, 8), rng)
    noise_only = change_statistic(a, same)
    assert 2.0 < noise_only < 4.0  # ~2.8: the 99.5th percentile of a half-normal
    assert change_statistic(a, moved) > 3 * noise_only
    assert change_statistic(a, a) == 0.0
    brighter = np.clip(a.astype(int) + 12, 0, 255).astype(np.uint8)  # drift / gain step: not a change
    assert change_statistic(a, brighter) < 4.0
    # the fixed-rig pitfall (methods §D.4): a global hash cannot see the moved plume
    assert (_dhash(a) != _dhash(moved)).sum() <= 2


def test_duplicate_filter_keeps_plume_changes_and_accumulates_slow_ones():
    rng = np.random.default_rng(1)
    base = _scene(rng)
    flt = DuplicateFilter(threshold=4.0)
    frames = [_noisy(base, rng) for _ in range(5)]  # a static scene: only the first is new
    assert [flt.keep(f) for f in frames] == [True, False, False, False, False]
    assert flt.keep(_noisy(base + _plume(base.shape, (160, 120), 12, 10), rng))  # a plume appears
    # a plume darkening by 0.4 grey levels per frame: each step is noise-sized, the sum is not
    kept = [flt.keep(_noisy(base + _plume(base.shape, (160, 120), 12, 10 + 0.4 * k), rng)) for k in range(1, 30)]
    assert any(kept) and not all(kept)
    assert flt.last_statistic >= 0


def test_duplicate_filter_decides_per_pair_on_either_stream():
    rng = np.random.default_rng(2)
    th, rgb = _scene(rng), _scene(rng, (128, 160))
    flt = DuplicateFilter()
    assert flt.keep(_noisy(th, rng), _noisy(rgb, rng))
    assert not flt.keep(_noisy(th, rng), _noisy(rgb, rng))
    moved_rgb = rgb.copy()
    moved_rgb[40:80, 60:90] += 60  # something moved in the RGB view only
    assert flt.keep(_noisy(th, rng), _noisy(moved_rgb, rng))
    with pytest.raises(ValueError, match="2-D"):
        flt.keep(np.zeros((8, 8, 3)))


def test_change_statistic_arguments_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        change_statistic(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="percentile"):
        change_statistic(np.zeros((4, 4)), np.zeros((4, 4)), percentile=10)


@pytest.mark.parametrize("kind,offset", [("walk", 0.7), ("slideshow", 0.7), ("flash", -1.3)])
def test_extract_takes_where_things_move_only_when_the_motion_energy_cannot_tell(tmp_path, kind, offset):
    """Through ``gasdb extract``: the flash by its motion energy, the steady walker by where it is,
    the slideshow by neither (refused, the message naming the evidence and the fix)."""
    from click.testing import CliRunner

    from gasdb_tools.cli import main
    from gasdb_tools.recordings import add_recording
    from gasdb_tools.workspace import Workspace

    folder = write_scene(tmp_path / "rec", kind, seed=3, offset_s=offset)
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="other", recording_id="r")
    result = CliRunner().invoke(main, ["extract", str(ws.root), "--json"])
    (r,) = json.loads(result.stdout)["recordings"]
    if kind == "slideshow":
        assert result.exit_code == 1 and r["status"] == "failed", r
        assert "unreliable" in r["error"] and "--offset" in r["error"], r
        return
    assert result.exit_code == 0 and r["status"] == "extracted", r
    assert abs(r["offset_s"] - offset) < 1 / 30 and r["offset_confidence"] > DEFAULT_MIN_CONFIDENCE, r
    # the index names the evidence the offset came from
    assert r["offset_source"] == ws.recording("r")["offset_source"] == \
        {"walk": "estimated-colocation", "flash": "estimated"}[kind], r
