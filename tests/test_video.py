"""Video layer: decoding with timestamps, pixel conversions, 16-bit thermal, damaged files, motion energy."""

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasdb_tools.errors import VideoError
from gasdb_tools.video import (MotionMeter, _TimeOrder, count_frames, frame_to_array, iter_av_frames, iter_frames,
                               motion_energy, probe, write_video)
from tests.conftest import shared_data


def _noise(n, shape=(48, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def _raw_count(path) -> int:
    """Frames PyAV's plain decode loop yields: an independent count (no reordering, no checks)."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


# -- timestamps ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", [9.0, 25.0, 30.0, 30000 / 1001])
def test_cfr_timestamps_are_k_over_fps(tmp_path, fps):
    path = tmp_path / "v.mp4"
    write_video(path, _noise(7), fps=fps)
    times = [t for t, _ in iter_av_frames(path)]
    np.testing.assert_allclose(times, np.arange(7) / fps, atol=1e-6)


@pytest.mark.parametrize("suffix,codec", [(".mkv", "ffv1"), (".mp4", "libx264")])
def test_vfr_gaps_and_nonzero_start_are_kept_relative_to_the_stream_start(tmp_path, suffix, codec):
    times = [0.5, 0.533, 0.6, 0.9, 0.95, 1.2]  # starts at 0.5 s, a dropped-frame gap, variable steps
    path = tmp_path / f"v{suffix}"
    frames = _noise(len(times))
    write_video(path, frames, fps=25, codec=codec, times=times)
    got = list(iter_frames(path, gray=True))
    np.testing.assert_allclose([t for t, _ in got], np.array(times) - 0.5, atol=1e-6)
    if codec == "ffv1":  # lossless: every frame comes back in its place
        for (_, image), frame in zip(got, frames):
            np.testing.assert_array_equal(image, frame)


@pytest.mark.parametrize("codec,suffix", [("libx264", ".mp4"), ("mpeg4", ".mp4"), ("ffv1", ".mkv")])
def test_decoder_threads_change_nothing_but_the_threads(tmp_path, codec, suffix):
    """A caller's thread budget (1, 2, FFmpeg's choice) gives the same frames and times; 1 starts no
    decoder thread."""
    import threading

    path = tmp_path / f"v{suffix}"
    write_video(path, _noise(40, shape=(96, 128), seed=5), fps=25, codec=codec)
    runs = {}
    for threads in (True, False, 1, 2, 3):
        before = threading.active_count()
        out, peak = [], 0
        for t, frame in iter_av_frames(path, threads=threads):
            out.append((t, frame_to_array(frame, gray=True)))
            peak = max(peak, threading.active_count())
        runs[threads] = out
        assert peak == before  # FFmpeg's threads are not Python threads: none of ours either
    ref = runs[True]
    for threads, out in runs.items():
        assert [t for t, _ in out] == [t for t, _ in ref], threads
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(out, ref)), threads
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="threads"):
            next(iter_av_frames(path, threads=bad))


def _decoder_threads(path, threads) -> int:
    """Threads of this process while a stream decodes with ``threads`` (Linux: /proc/self/task)."""
    import os

    gen = iter_av_frames(path, threads=threads)
    most = 0
    for _ in gen:
        most = max(most, len(os.listdir("/proc/self/task")))
    return most


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="needs /proc (Linux)")
def test_a_budget_of_one_thread_starts_no_decoder_thread(tmp_path):
    import os

    path = tmp_path / "v.mp4"
    write_video(path, _noise(30, shape=(96, 128), seed=6), fps=25)
    alone = len(os.listdir("/proc/self/task"))
    assert _decoder_threads(path, 1) == alone
    assert _decoder_threads(path, 3) > alone  # frame threads when asked for


def test_time_order_restores_locally_shuffled_timestamps():
    rng = np.random.default_rng(3)
    times = np.arange(200) * 0.04
    shuffled = times.copy()
    for k in range(0, 196, 4):  # packed-B-frame-like local disorder within 4 frames
        shuffled[k:k + 4] = rng.permutation(shuffled[k:k + 4])
    order = _TimeOrder(8)
    out = [t for t, _ in order((t, None) for t in shuffled)]
    np.testing.assert_array_equal(out, times)
    assert order.count == 200 and order.last == times[-1]


def test_time_order_refuses_disorder_beyond_its_window():
    items = [(t, None) for t in [0.0, 0.1, 0.2, 0.3, 0.4, 0.05]]
    with pytest.raises(VideoError, match="out of order by more than 2 frames"):
        list(_TimeOrder(2, "x.avi")(items))


# -- pixels ---------------------------------------------------------------------------------------
def _first_frame(path):
    c = av.open(str(path))
    frame = next(c.decode(video=0))
    return c, frame


@pytest.mark.parametrize("codec,suffix", [("libx264", ".mp4"), ("mjpeg", ".avi"), ("ffv1", ".mkv")])
def test_gray_fast_path_equals_swscale_gray(tmp_path, codec, suffix):
    """The Y-plane path (limited range expanded with a LUT) gives swscale's gray exactly."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), (48, 1))[:, ::4]
    frames = [np.roll(ramp, k, axis=1) for k in range(3)] + _noise(2)
    path = tmp_path / f"g{suffix}"
    write_video(path, frames, fps=10, codec=codec)
    c, frame = _first_frame(path)
    with c:
        np.testing.assert_array_equal(frame_to_array(frame, gray=True), frame.to_ndarray(format="gray"))
    if codec == "ffv1":
        np.testing.assert_array_equal(next(iter_frames(path, gray=True))[1], frames[0])


def test_limited_range_gray_round_trips_through_h264(tmp_path):
    flat = [np.full((32, 48), v, np.uint8) for v in (0, 16, 60, 128, 200, 235, 255)]
    path = tmp_path / "flat.mp4"
    write_video(path, flat, fps=10, crf=0)
    got = [int(np.median(img)) for _, img in iter_frames(path, gray=True)]
    # gray -> limited-range Y -> gray rounds twice: within 1 level, and the ends stay exact
    assert np.abs(np.array(got) - [0, 16, 60, 128, 200, 235, 255]).max() <= 1
    assert got[0] == 0 and got[-1] == 255


def test_colour_frames_come_back_rgb_ordered(tmp_path):
    frame = np.zeros((32, 48, 3), np.uint8)
    frame[:, :16, 0] = 255  # red band
    frame[:, 16:32, 1] = 255  # green band
    frame[:, 32:, 2] = 255  # blue band
    path = tmp_path / "c.mkv"
    write_video(path, [frame] * 2, fps=10, codec="ffv1")  # lossless bgr0
    _, image = next(iter_frames(path))
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, frame)


def test_bgr_order_is_the_same_conversion_reversed(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    write_video(tmp_path / "c.mp4", frames, fps=10)
    for _, frame in iter_av_frames(tmp_path / "c.mp4"):
        rgb = frame_to_array(frame)
        np.testing.assert_array_equal(frame_to_array(frame, channel_order="bgr"), rgb[:, :, ::-1])
    with pytest.raises(ValueError, match="channel_order"):
        frame_to_array(frame, channel_order="rbg")


def test_16bit_thermal_is_kept_exactly(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 65536, (40, 56), dtype=np.uint16) for _ in range(3)]
    path = tmp_path / "radiometric.mkv"
    write_video(path, frames, fps=9, codec="ffv1")
    got = [img for _, img in iter_frames(path, gray=True)]
    assert all(g.dtype == np.uint16 for g in got)
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g, f)
    eight = next(iter_frames(path, gray=True, keep_16bit=False))[1]
    assert eight.dtype == np.uint8
    assert np.abs(eight.astype(int) - (frames[0] >> 8).astype(int)).max() <= 1


def test_write_video_refuses_16bit_without_a_lossless_codec(tmp_path):
    with pytest.raises(ValueError, match="ffv1"):
        write_video(tmp_path / "x.mp4", [np.zeros((16, 16), np.uint16)], fps=5)
    assert not list(tmp_path.iterdir())


# -- damaged and empty input ------------------------------------------------------------------
@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".mkv", "ffv1"), (".avi", "mjpeg")])
def test_truncated_video_is_an_error_not_a_short_recording(tmp_path, suffix, codec):
    path = tmp_path / f"v{suffix}"
    write_video(path, _noise(30), fps=10, codec=codec)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated or damaged") as info:
        count_frames(cut)
    assert info.value.file == str(cut) and "remux" in info.value.fix


def test_truncated_mp4_cannot_be_opened(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, _noise(10), fps=10)
    (tmp_path / "cut.mp4").write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(VideoError, match="cannot open"):
        list(iter_av_frames(tmp_path / "cut.mp4"))


def test_stream_without_frames_and_non_video_files(tmp_path):
    empty = tmp_path / "empty.avi"  # a video stream with a header and no frames
    with av.open(str(empty), mode="w") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuvj420p"
        c.start_encoding()
    with pytest.raises(VideoError, match="no decodable frame"):
        count_frames(empty)
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="cannot open"):
        count_frames(tmp_path / "notes.mp4")
    with pytest.raises(VideoError, match="not found"):
        count_frames(tmp_path / "missing.mp4")


# -- motion energy ---------------------------------------------------------------------------------
def _blob_frames(xs, shape=(64, 160)):
    frames = []
    for x in xs:
        f = np.full(shape, 60, np.uint8)
        cv2.circle(f, (int(x), shape[0] // 2), 20, 220, -1)
        frames.append(f)
    return frames


def test_motion_energy_follows_motion_per_second_and_ignores_global_level(tmp_path):
    xs = [30, 30, 30, 40, 50, 60, 80, 90, 90]  # still, moving at 100 px/s, still
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9]  # a dropped frame between 0.5 and 0.7
    frames = _blob_frames(xs)
    frames[1] = (frames[1].astype(int) + 30).astype(np.uint8)  # a global level change (thermal NUC, gain)
    path = tmp_path / "blob.mkv"
    write_video(path, frames, fps=10, codec="ffv1", times=times)
    me = motion_energy(path, size=(160, 64))
    np.testing.assert_allclose(me.frame_times, times, atol=1e-6)
    np.testing.assert_allclose(me.times, (np.array(times[1:]) + times[:-1]) / 2, atol=1e-6)
    e = me.energy
    assert e[0] < 1e-6 and e[1] < 1e-6 and e[-1] < 1e-6  # level change and stillness are not motion
    assert e[2:7].min() > 0
    # the interval with the dropped frame moved twice as far in twice the time: about the same rate
    # (a disk of radius 20 moved by d changes ~4*r*d pixels while d << 2r)
    assert abs(e[5] - e[4]) < 0.1 * e[4]


def test_motion_meter_fed_frame_by_frame_equals_motion_energy(tmp_path):
    """The writing pass of `extract` measures the energy with MotionMeter: the numbers must be the
    ones motion_energy gives (colour with chroma planes, and gaps)."""
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(12)]
    times = [0.0, 0.04, 0.08, 0.2, 0.24, 0.28, 0.32, 0.36, 0.5, 0.54, 0.58, 0.62]
    write_video(tmp_path / "c.mkv", frames, fps=25, times=times)
    meter = MotionMeter()
    for t, frame in iter_av_frames(tmp_path / "c.mkv"):
        meter.add(t, frame)
    got, want = meter.result(), motion_energy(tmp_path / "c.mkv")
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert got.energy.size == 11 and got.energy.min() > 0


def test_motion_energy_keeps_the_small_luma_of_the_first_seconds(tmp_path):
    """The thumbnails the co-location offset estimate uses: the 80x64 area-averaged luma of the
    frames in the first ``keep_seconds``, exactly (uint16), the same fed frame by frame."""
    frames = [np.kron(np.arange(64 * 80, dtype=np.uint8).reshape(64, 80) + 3 * k, np.ones((2, 2), np.uint8))
              for k in range(10)]
    write_video(tmp_path / "g.mkv", frames, fps=10, codec="ffv1")
    me = motion_energy(tmp_path / "g.mkv", keep_seconds=0.45)
    assert me.thumbnails.shape == (5, 64, 80) and me.thumbnails.dtype == np.uint16
    np.testing.assert_array_equal(me.thumbnails, np.stack(frames[:5])[:, ::2, ::2])
    meter = MotionMeter(keep_seconds=0.45)
    for t, frame in iter_av_frames(tmp_path / "g.mkv"):
        meter.add(t, frame)
    np.testing.assert_array_equal(meter.result().thumbnails, me.thumbnails)
    assert motion_energy(tmp_path / "g.mkv").thumbnails is None


# -- real clips -------------------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [("gasvid", "MOV_1467_short.mp4"), ("iod_video", "001_wild_static_vague.avi"),
                                   ("simgas", "simgasvid1.mp4")])
def test_real_clips_decode_every_frame_in_time_order(parts):
    path = shared_data(*parts)
    times = np.array([t for t, _ in iter_av_frames(path)])
    assert times.size == _raw_count(path)
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)
    info = probe(path)
    assert abs(times.size - info.frames_declared) <= 1 or info.frames_declared == 0
    assert abs(np.median(np.diff(times)) - 1 / info.fps) < 1e-3


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_change_is_the_mean_deviation_from_the_median_of_the_difference(h, w, seed):
    """The motion energy's per-plane change equals its definition with ``np.median`` bit for bit
    (odd and even sizes; the offset estimate depends on these values)."""
    from gasdb_tools.video import _change

    rng = np.random.default_rng(seed)
    a, b = (rng.integers(0, 256, (h, w)).astype(np.float32) for _ in range(2))
    d = b - a
    assert _change(a, b) == float(np.abs(d - np.median(d)).mean())
    assert _change(a, a + 7) == 0.0  # a global level change is not motion
