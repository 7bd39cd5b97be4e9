"""Gas background subtraction: building blocks (exact values), the pipeline on simulated and real plumes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data
from gasdb_tools import background as bg
from gasdb_tools.background import gas_masks
from gasdb_tools.coco import mask_bbox
from gasdb_tools.metrics import box_iou, confusion, scores
from gasdb_tools.synth import SynthRig


def _scene(rng, shape=(80, 100)):
    """A smooth, thermal-looking static scene (grey levels 40-200)."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 4)
    return (40 + 160 * (noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


# ------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_blur_keeps_grey_levels_and_returns_float32(dtype):
    frame = np.full((20, 30), 200, dtype)
    frame[10, 15] = 0
    out = bg.blur(frame, ksize=5)
    assert out.dtype == np.float32 and out.shape == frame.shape
    assert out[0, 0] == pytest.approx(200.0) and out[10, 15] < 200 and out.sum() == pytest.approx(frame.sum(), rel=1e-6)
    same = bg.blur(frame, ksize=1)
    assert np.array_equal(same, frame.astype(np.float32)) and not np.shares_memory(same, frame)


def test_lead_in_median_ignores_a_passing_object():
    frames = [np.full((6, 6), 10.0, np.float32) for _ in range(7)]
    for f in frames[:3]:
        f[2:4, 2:4] = 99.0  # present in 3 of 7 frames
    assert np.array_equal(bg.lead_in_background(frames), np.full((6, 6), 10.0))
    even = bg.lead_in_background([np.full((2, 2), v, np.float32) for v in (1, 2, 4, 10)])
    assert np.allclose(even, 3.0)  # mean of the two middle values, as np.median


def test_selective_running_average_rates():
    model = bg.SelectiveRunningAverage(np.zeros((2, 2), np.float32), rate=0.1, foreground_rate=0.01)
    fg = np.array([[True, False], [False, False]])
    out = model.update(np.full((2, 2), 100.0, np.float32), fg)
    assert out[0, 0] == pytest.approx(1.0) and out[1, 1] == pytest.approx(10.0)
    frozen = bg.SelectiveRunningAverage(np.zeros((2, 2), np.float32), rate=0.0)
    assert not frozen.update(np.ones((2, 2), np.float32)).any()


def test_signed_difference_cancels_a_global_offset_but_keeps_local_change():
    rng = np.random.default_rng(0)
    background = rng.normal(100, 5, (64, 64)).astype(np.float32)
    frame = background + 7.5  # NUC step / drift
    frame[10:20, 10:20] -= 12  # a cold plume
    d = bg.signed_difference(frame, background, step=1)
    assert np.allclose(d[40:, 40:], 0, atol=1e-4)
    assert np.allclose(d[10:20, 10:20], -12, atol=1e-4)


def test_signed_difference_excludes_a_plume_covering_most_of_the_frame():
    background = np.zeros((40, 40), np.float32)
    frame = background.copy()
    frame[:, :28] = -10  # plume on 70 % of the frame
    plume = frame < 0
    assert bg.robust_median(frame - background, step=1) == -10  # the naive median is the plume
    d = bg.signed_difference(frame, background, step=1, exclude=plume)
    assert np.allclose(d[:, 30:], 0) and np.allclose(d[:, :28], -10)


def test_temporal_ema_exact_values_and_noise_reduction():
    ema = bg.TemporalEMA(alpha=0.25)
    values = [float(ema.update(np.full((2, 2), v, np.float32))[0, 0]) for v in (8, 0, 0, 4)]
    assert values == pytest.approx([8.0, 6.0, 4.5, 4.375])
    rng = np.random.default_rng(1)
    ema = bg.TemporalEMA(alpha=0.3)
    for _ in range(200):
        out = ema.update(rng.normal(0, 1, (128, 128)).astype(np.float32))
    assert out.std() == pytest.approx(np.sqrt(0.3 / 1.7), rel=0.1)


@pytest.mark.parametrize("sigma", [0.5, 2.0, 10.0])
def test_mad_sigma_matches_gaussian_sigma_and_ignores_outliers(sigma):
    rng = np.random.default_rng(2)
    d = rng.normal(0, sigma, (256, 256)).astype(np.float32)
    d[:13] = 1000  # 5 % outliers
    assert bg.mad_sigma(d, step=2) == pytest.approx(sigma, rel=0.15)
    assert bg.mad_sigma(np.zeros((8, 8)), floor=0.5) == 0.5


def test_threshold_polarity_and_extra():
    d = np.array([[-6, -3, 0, 3, 6]], np.float32)
    assert bg.threshold(d, 1.0, k=4, polarity="both").tolist() == [[True, False, False, False, True]]
    assert bg.threshold(d, 1.0, k=4, polarity="emitting").tolist() == [[False, False, False, False, True]]
    assert bg.threshold(d, 1.0, k=2, polarity="absorbing").tolist() == [[True, True, False, False, False]]
    extra = np.array([[0, 0, 0, 0, 3]], np.float32)
    assert bg.threshold(d, 1.0, k=4, extra=extra).tolist() == [[True, False, False, False, False]]


def test_edge_threshold_is_jitter_times_gradient():
    ramp = np.tile(np.arange(16, dtype=np.float32) * 4.0, (8, 1))  # 4 grey levels per pixel in x
    e = bg.edge_threshold(ramp, jitter=0.5)
    assert np.allclose(e[:, 1:-1], 2.0) and not bg.edge_threshold(np.ones((5, 5)), jitter=1).any()


def test_clean_mask_and_small_blobs():
    m = np.zeros((50, 50), bool)
    m[10:30, 10:30] = True
    m[20, 20] = False  # a pin hole
    m[45, 45] = True  # a speck
    m[2:5, 40:43] = True  # 9 px blob
    out = bg.clean_mask(m, open_size=3, close_size=7, min_area_frac=0.0)
    assert out[20, 20] and not out[45, 45]
    kept = bg.remove_small_blobs(m, min_area=10)
    assert not kept[3, 41] and kept[15, 15]
    assert bg.remove_small_blobs(m, min_area=9)[3, 41]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([np.uint8, np.uint16, np.float32]))
def test_gas_masks_one_bool_mask_per_frame_any_dtype(seed, dtype):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    frames = [rng.integers(0, 200, (24, 20)).astype(dtype) for _ in range(n)]
    masks = list(gas_masks(iter(frames), lead_in=int(rng.integers(0, 15))))
    assert len(masks) == n
    assert all(m.dtype == bool and m.shape == (24, 20) for m in masks)


def test_static_scene_gives_empty_masks():
    rng = np.random.default_rng(3)
    scene = _scene(rng, (96, 128))
    frames = [scene + rng.normal(0, 1.5, scene.shape) for _ in range(40)]
    assert sum(int(m.sum()) for m in gas_masks(frames)) == 0


@pytest.mark.parametrize("polarity, sign", [("emitting", 1), ("absorbing", -1)])
def test_steady_plume_is_not_absorbed_by_the_background(polarity, sign):
    """A plume that sits still for 250 frames (10 s at 25 fps) is still found; MOG2 absorbs it."""
    rng = np.random.default_rng(4)
    scene = _scene(rng)
    frames = []
    for t in range(280):
        f = scene + rng.normal(0, 1.5, scene.shape)
        if t >= 30:
            f[30:55, 40:70] += sign * 8.0
        frames.append(f)
    last = list(gas_masks(frames, polarity=polarity))[-1]
    assert last[30:55, 40:70].mean() > 0.8 and last.sum() < 1.2 * 25 * 30
    never = list(gas_masks(frames, polarity=polarity, foreground_rate=0.0))[-1]  # never learned under gas
    assert never[30:55, 40:70].mean() > 0.9 and never.sum() < 1.2 * 25 * 30
    mog2 = list(gas_masks(frames, method="mog2"))[-1]
    assert mog2[30:55, 40:70].mean() < 0.1  # the generic subtractor lost it


def test_opposite_polarity_is_not_reported_and_does_not_leave_a_ghost():
    rng = np.random.default_rng(5)
    scene = _scene(rng)
    frames = []
    for t in range(120):
        f = scene + rng.normal(0, 1.0, scene.shape)
        if 30 <= t < 70:
            f[10:30, 10:40] += 20  # a warm person stands here for 40 frames, then leaves
        frames.append(f)
    masks = list(gas_masks(frames, polarity="absorbing"))
    assert sum(int(m.sum()) for m in masks) == 0


def test_drift_and_nuc_steps_do_not_light_up_the_frame():
    rng = np.random.default_rng(6)
    scene = _scene(rng)
    frames = [scene + rng.normal(0, 1.0, scene.shape) + 3 * np.sin(t / 10) + (6 if t > 60 else 0)
              for t in range(100)]
    assert max(int(m.sum()) for m in gas_masks(frames)) == 0


@pytest.mark.parametrize("contrast", [8.0, 16.0])
def test_simulated_faint_plume_f_measure(contrast):
    """Exact truth from the rig simulator (lamp, person and spray off): F >= 0.5 at low contrast."""
    rig = SynthRig(seed=7, size=(160, 128), contrast=contrast, polarity="absorbing", distractors=False,
                   sync_lamp=False, leak_start_s=1.2)
    data = [rig.thermal(k / rig.thermal_fps) for k in range(75)]
    masks = list(gas_masks([f for f, _ in data], lead_in=25, polarity="absorbing"))
    cm = sum(confusion(m_true, m) for (_, m_true), m in zip(data[30:], masks[30:]))
    assert scores(cm)["gas"]["f1"] >= 0.5


def test_mog2_and_knn_run_on_uint16():
    rng = np.random.default_rng(8)
    frames = [(rng.normal(30000, 50, (40, 50))).astype(np.uint16) for _ in range(20)]
    frames[-1][10:30, 10:30] += 5000
    for method in ("mog2", "knn"):
        masks = list(gas_masks(frames, method=method, history=50))
        assert len(masks) == 20 and masks[-1][20, 20] and not masks[-1][2, 45]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"method": "vibe"}, ValueError, "method must be one of"),
    ({"lead_in": -1}, ValueError, "lead_in must be"),
    ({"k": 0}, ValueError, "k must be in"),
    ({"polarity": "cold"}, ValueError, "polarity must be one of"),
    ({"blur_ksize": 4}, ValueError, "blur_ksize must be odd"),
    ({"learning_rate": 2}, ValueError, "learning_rate must be in"),
    ({"ema_alpha": 0}, ValueError, "alpha must be in"),
    ({"thresh": 3}, TypeError, "unknown parameter"),
    ({"method": "mog2", "k": 3}, TypeError, "unknown parameter"),
    ({"preset": "boxes"}, ValueError, "preset must be one of"),
    ({"method": "mog2", "preset": "extent"}, ValueError, "presets are parameter sets of the gas pipeline"),
    ({"k_low": 5}, ValueError, "k_low must be at most k"),
    ({"k_low": 0}, ValueError, "k_low must be in"),
    ({"hold": 0}, ValueError, "hold must be an integer"),
    ({"hold": 2.5}, ValueError, "hold must be an integer"),
    ({"activity_ratio": 0}, ValueError, "activity_ratio must be in"),
    ({"activity_rate": 0}, ValueError, "activity_rate must be in"),
    ({"activity_open": 4}, ValueError, "activity_open must be odd"),
    ({"activity_overlap": 1.5}, ValueError, "activity_overlap must be in"),
    ({"ignore_static": "yes"}, ValueError, "ignore_static must be true or false"),
])
def test_bad_parameters_are_named_before_any_frame_is_read(kwargs, error, message):
    def frames():
        raise AssertionError("a frame was read")
        yield  # pragma: no cover

    with pytest.raises(error, match=message):
        gas_masks(frames(), **kwargs)


@pytest.mark.parametrize("frame, error", [
    (np.zeros((4, 4, 3), np.uint8), ValueError),
    (np.zeros((4, 4), bool), TypeError),
    (np.zeros(4), ValueError),
])
def test_bad_frames(frame, error):
    with pytest.raises(error):
        list(gas_masks([frame]))
    with pytest.raises(ValueError, match="one size"):
        list(gas_masks([np.zeros((8, 8)), np.zeros((9, 8))], lead_in=0))


# ------------------------------------------------------------------------------------------
# the extent preset's building blocks
# ------------------------------------------------------------------------------------------
def test_static_pixels_finds_clipped_and_burned_in_pixels():
    rng = np.random.default_rng(3)
    frames = [rng.normal(100, 2, (20, 30)).astype(np.float32) for _ in range(6)]
    for f in frames:
        f[:5] = 0  # a sky clipped to 0
        f[15:, :4] = 255  # a burned-in overlay
    static = bg.static_pixels(frames)
    assert static[:5].all() and static[15:, :4].all()
    assert static.sum() == 5 * 30 + 5 * 4
    loose = bg.static_pixels(frames, tol=1e6)
    assert loose.all()
    with pytest.raises(ValueError, match="at least 2 frames"):
        bg.static_pixels(frames[:1])
    with pytest.raises(ValueError, match="tol must be in"):
        bg.static_pixels(frames, tol=-1)


def test_static_clipped_region_does_not_deflate_the_noise_sigma():
    """A sky clipped to 0 (a third of the frame) must not pull the MAD sigma down (IOD-Video)."""
    rng = np.random.default_rng(4)
    noise = [rng.normal(100, 6.0, (90, 120)).astype(np.float32) for _ in range(60)]
    clipped = [f.copy() for f in noise]
    for f in clipped:
        f[:30] = 0
    sigma, fp = {}, {}
    for name, frames, ignore in (("no sky", noise, True), ("ignored", clipped, True), ("counted", clipped, False)):
        sub = bg.GasSubtractor(ignore_static=ignore)
        masks = list(bg._gas_masks(iter(frames), sub, 30))
        sigma[name] = sub.sigma
        fp[name] = sum(int(m.sum()) for m in masks[30:])
    assert sigma["ignored"] == pytest.approx(sigma["no sky"], rel=0.1)
    assert sigma["counted"] < 0.85 * sigma["ignored"]
    assert fp["ignored"] == 0 and fp["counted"] > 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_hysteresis_keeps_exactly_the_weak_components_touching_a_seed(seed):
    rng = np.random.default_rng(seed)
    weak = rng.random((24, 32)) < 0.45
    strong = weak & (rng.random((24, 32)) < 0.05)
    out = bg.hysteresis(strong, weak)
    assert (out <= weak).all() and (strong <= out).all()
    n, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    for j in range(1, n):
        comp = labels == j
        assert out[comp].all() == bool(strong[comp].any())
        assert out[comp].any() == bool(strong[comp].any())
    assert not bg.hysteresis(np.zeros_like(weak), weak).any()
    with pytest.raises(ValueError, match="one shape"):
        bg.hysteresis(strong, weak[:, :5])


def test_activity_map_is_an_ema_of_frame_differences():
    act = bg.ActivityMap(rate=0.25)
    values = [0.0, 8.0, 8.0, 0.0, 4.0]
    out, expected, state, prev = [], [], 0.0, None
    for v in values:
        out.append(float(act.update(np.full((2, 3), v, np.float32))[1, 2]))
        if prev is not None:
            state = 0.75 * state + 0.25 * abs(v - prev)
        expected.append(state)
        prev = v
    assert out == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="differs"):
        act.update(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="rate must be in"):
        bg.ActivityMap(rate=0)


def test_active_regions_keep_broad_flicker_and_drop_edges_and_specks():
    act = np.full((60, 80), 1.0, np.float32)
    act[10:40, 10:40] = 6.0  # a plume's turbulent area
    act[50:52, :] = 6.0  # a shimmering edge, 2 px wide
    act[5:8, 60:63] = 6.0  # a speck
    regions = bg.active_regions(act, ratio=2.5, open_size=5, min_area_frac=0.01, step=1)
    assert regions[25, 25] and not regions[51, 40] and not regions[6, 61]
    assert not bg.active_regions(act, ratio=7.0, step=1).any()
    static = np.zeros(act.shape, bool)
    static[:, :70] = True  # the median of the rest (1.0) is used, not of everything
    assert bg.active_regions(act, ratio=2.5, open_size=5, min_area_frac=0.01, step=1, exclude=static)[25, 25]
    with pytest.raises(ValueError, match="ratio must be in"):
        bg.active_regions(act, ratio=0)


def test_keep_blobs_in_uses_the_share_of_each_blob():
    mask = np.zeros((10, 30), bool)
    mask[2:8, 2:8] = True  # 36 px, 12 in the region
    mask[2:8, 20:26] = True  # 36 px, none in it
    region = np.zeros_like(mask)
    region[:, :4] = True
    assert bg.keep_blobs_in(mask, region, min_overlap=0.3)[:, :10].sum() == 36
    assert not bg.keep_blobs_in(mask, region, min_overlap=0.34).any()
    assert not bg.keep_blobs_in(mask, region, min_overlap=0.3)[:, 10:].any()
    assert not bg.keep_blobs_in(np.zeros_like(mask), region).any()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(0, 2**9 - 1), min_size=1, max_size=15))
def test_temporal_hold_is_the_union_of_the_last_n_masks(n, codes):
    masks = [np.array([(c >> i) & 1 for i in range(9)], bool).reshape(3, 3) for c in codes]
    hold = bg.TemporalHold(frames=n)
    for t, m in enumerate(masks):
        expected = np.logical_or.reduce(masks[max(0, t - n + 1):t + 1])
        assert (hold.update(m) == expected).all()


def test_extent_preset_drops_a_slow_shadow_and_keeps_a_flickering_plume():
    """The activity test: a cloud shadow creeping over the ground vs turbulent gas."""
    rng = np.random.default_rng(6)
    frames = []
    for t in range(90):
        f = rng.normal(80, 1.0, (96, 128)).astype(np.float32)
        if t >= 30:
            f[60:90, 10:60] -= min(t - 30, 20) * 0.6  # shadow: darkens by 12 levels over 20 frames, then stays
            f[15:45, 70:120] += 8 + 6 * rng.standard_normal((30, 50)).astype(np.float32)  # puffs
        frames.append(f)
    plain = list(gas_masks(frames, lead_in=30))
    extent = list(gas_masks(frames, lead_in=30, preset="extent"))
    assert plain[-1][75, 35] and plain[-1][30, 95]  # the default preset sees both
    assert extent[-1][30, 95] and not extent[-1][60:90, 10:60].any()
    explicit = list(gas_masks(frames, lead_in=30, **bg.PRESETS["extent"].changes()))
    assert all((a == b).all() for a, b in zip(explicit, extent))
    instance = list(gas_masks(frames, lead_in=30, preset=bg.PRESETS["extent"]))  # presets are GasParams
    assert all((a == b).all() for a, b in zip(instance, extent))
    overridden = list(gas_masks(frames, lead_in=30, preset="extent", activity_ratio=None))
    assert overridden[-1][75, 35]  # params override the preset


# ------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------
def _decode(path, *, mean_rgb=False):
    from gasdb_tools.video import iter_frames

    if mean_rgb:
        return [img.mean(axis=2) for _, img in iter_frames(path, gray=False)]
    return [img for _, img in iter_frames(path, gray=True)]


@pytest.mark.slow
@pytest.mark.realdata
def test_simgas_per_video_iou():
    """SimGas (LangGas): per-video IoU (one confusion matrix per video), mean over the 11 videos >= 0.65."""
    folder = shared_data("simgas")
    ious = {}
    for video in sorted(folder.glob("simgasvid*.mp4")):
        truth = [m > 20 for m in _decode(folder / video.name.replace("simgasvid", "smoke_only"), mean_rgb=True)]
        frames = _decode(video, mean_rgb=True)
        assert len(frames) == len(truth)
        cm = np.zeros((2, 2), np.int64)
        for gt, pred in zip(truth, gas_masks(frames)):
            cm += confusion(gt, pred)
        ious[video.name] = scores(cm)["gas"]["iou"]
    assert len(ious) == 11
    assert np.mean(list(ious.values())) >= 0.65, ious


@pytest.mark.slow
@pytest.mark.realdata
def test_iod_real_leak_box_overlap():
    """IOD-Video real leak (faint, 8-bit MJPEG, swaying vegetation, cloud shadows on the hills).

    The issue's criterion: the bounding box of the predicted mask overlaps the annotated gas box
    with IoU > 0.3 in at least 70 % of the annotated frames. The ``extent`` preset meets it
    (measured 94 %); the default ``mask`` preset finds the plume in the box but also flags slow
    terrain changes, which stretch the bounding box (measured 12 %).
    """
    folder = shared_data("iod_video")
    boxes = json.loads((folder / "001_wild_static_vague.boxes.json").read_text())["boxes"]
    frames = _decode(folder / "001_wild_static_vague.avi")

    def overlap(masks):
        hits, inside = [], []
        for frame_no, x1, y1, x2, y2 in boxes:
            m = masks[int(frame_no) - 1]
            box = np.zeros(m.shape, bool)
            box[int(max(y1, 0)):int(y2) + 1, int(max(x1, 0)):int(x2) + 1] = True
            inside.append(bool((m & box).any()))
            x, y, w, h = mask_bbox(m)  # an empty mask: a zero-area box, IoU 0
            hits.append(box_iou((x, y, x + w, y + h), (x1, y1, x2, y2)) > 0.3)
        return np.mean(hits), np.mean(inside)

    extent_hit, extent_inside = overlap(list(gas_masks(frames, preset="extent")))
    mask_hit, mask_inside = overlap(list(gas_masks(frames)))
    assert extent_hit >= 0.70  # measured 0.942
    assert extent_inside >= 0.95  # measured 0.990
    assert mask_inside >= 0.80  # measured 0.859: the default preset finds the plume too ...
    assert mask_hit < extent_hit  # ... but its false alarms elsewhere stretch the bounding box


# ------------------------------------------------------------------------------------------
# GasParams: the typed parameter set
# ------------------------------------------------------------------------------------------
def test_gas_params_round_trip_and_presets_are_instances():
    assert isinstance(bg.PRESETS["extent"], bg.GasParams) and bg.PRESETS["mask"] == bg.GasParams()
    p = bg.PRESETS["extent"].replace(k=5.5, polarity="absorbing")
    assert bg.GasParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert p.changes() == {**bg.PRESETS["extent"].changes(), "k": 5.5, "polarity": "absorbing"}
    assert bg.DEFAULTS == {"lead_in": bg.DEFAULT_LEAD_IN, **bg.GasParams().to_dict()}
    assert bg.preset("extent") is bg.PRESETS["extent"] and bg.preset(p) is p


@pytest.mark.parametrize("change, message", [
    ({"k": 0}, "k must be in"), ({"k_low": 5.0}, "k_low must be at most k"), ({"blur_ksize": 4}, "must be odd"),
    ({"polarity": "warm"}, "polarity must be one of"), ({"hold": 0}, "hold must be"),
    ({"ignore_static": "yes"}, "ignore_static"), ({"learning_rate": 1.5}, "learning_rate must be in"),
])
def test_gas_params_refuse_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        bg.GasParams().replace(**change)


def test_gas_params_unknown_knob_names_the_known_ones():
    with pytest.raises(TypeError, match="unknown parameter.*'kk'.*known"):
        bg.GasParams().replace(kk=3)
    with pytest.raises(TypeError, match="either params or keyword knobs"):
        bg.GasSubtractor(params=bg.GasParams(), k=3)


@settings(max_examples=25, deadline=None)
@given(k=st.floats(1.0, 8.0), hold=st.integers(1, 6), polarity=st.sampled_from(bg.POLARITIES))
def test_params_object_and_keywords_give_the_same_masks(k, hold, polarity):
    rng = np.random.default_rng(5)
    frames = [rng.normal(100, 1.0, (24, 32)).astype(np.float32) for _ in range(12)]
    for f in frames[6:]:
        f[5:15, 5:20] += 9
    p = bg.GasParams(k=k, hold=hold, polarity=polarity)
    a = bg.GasSubtractor(params=p)
    b = bg.GasSubtractor(k=k, hold=hold, polarity=polarity)
    for f in frames:
        assert np.array_equal(a.apply(f), b.apply(f))


def test_evidence_is_the_k_sigma_test_and_fork_continues_the_state():
    rng = np.random.default_rng(2)
    frames = [rng.normal(50, 1.0, (40, 48)).astype(np.float32) for _ in range(30)]
    for f in frames[20:]:
        f[10:30, 10:30] += 8
    sub = bg.GasSubtractor(edge_guard=0.0, open_size=1, close_size=1, min_area_frac=0.0)
    for f in frames[:25]:
        mask = sub.apply(f)
    e = sub.evidence()
    assert np.array_equal(mask, np.abs(e) > sub.k)  # no morphology, no hysteresis: exactly the test
    assert e[20, 20] > sub.k and abs(float(np.median(e))) < 1.0
    twin = sub.fork(sub.params)
    for f in frames[25:]:
        assert np.array_equal(twin.apply(f), sub.apply(f))  # a fork with the same parameters is the same model
    stricter = sub.fork(sub.params.replace(k=50.0))
    assert not stricter.apply(frames[-1]).any()
    with pytest.raises(ValueError, match="blur_ksize"):
        sub.fork(sub.params.replace(blur_ksize=3))
