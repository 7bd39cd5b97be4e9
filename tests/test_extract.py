"""The extract stage: offset, pairing, sampling, dedup, resumability, bad input, CLI, real clips."""

import json

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools import extract as extract_mod
from gasdb_tools.cli import main
from gasdb_tools.errors import WorkspaceError
from gasdb_tools.extract import extract_workspace
from gasdb_tools.imaging import read_image
from gasdb_tools.recordings import add_recording
from gasdb_tools.synth import SynthRig, synthesize
from gasdb_tools.video import count_frames, iter_frames, write_video
from gasdb_tools.workspace import PAIR_COLUMNS, Workspace
from tests.conftest import shared_data

SIZE = (160, 128)


class FlashRig(SynthRig):
    """The simulated rig plus a lamp both cameras see, switched at known world times.

    A clap, flash or heat event seen by both cameras is how rigs are synchronised in practice
    (methods §D.3); it gives the motion energies a sharp common feature.
    """

    switches = (1.3, 1.8, 3.1, 3.35, 4.2)

    def _lamp_on(self, t_world):
        return sum(t_world >= s for s in self.switches) % 2 == 1

    def _lamp(self):
        w, h = self.size
        return np.array([[0.08 * w, 0.1 * h], [0.16 * w, 0.1 * h], [0.16 * w, 0.2 * h], [0.08 * w, 0.2 * h]])

    def rgb(self, t_rgb):
        frame = super().rgb(t_rgb)
        if self._lamp_on(t_rgb):
            cv2.fillPoly(frame, [np.round(self._lamp()).astype(np.int32)], (255, 250, 220))
        return frame

    def thermal(self, t_thermal):
        frame, mask = super().thermal(t_thermal)
        if self._lamp_on(t_thermal + self.offset_s):
            pts = cv2.perspectiveTransform(self._lamp()[None], np.linalg.inv(self.homography))[0]
            cv2.fillPoly(frame, [np.round(pts).astype(np.int32)], 250)
        return frame, mask


def _write_rig(folder, rig, seconds):
    write_video(folder / "thermal.mp4", (rig.thermal(k / rig.thermal_fps)[0]
                                         for k in range(int(seconds * rig.thermal_fps))), fps=rig.thermal_fps)
    write_video(folder / "rgb.mp4", (rig.rgb(k / rig.rgb_fps)
                                     for k in range(int((seconds + rig.offset_s) * rig.rgb_fps))), fps=rig.rgb_fps)
    return folder


@pytest.fixture(scope="module")
def flash_recordings(tmp_path_factory):
    """Two 5 s flash-rig recordings, 30/25 and 25/30 fps, with known offsets."""
    root = tmp_path_factory.mktemp("flash")
    recs = {}
    for name, (seed, fps_rgb, fps_th, offset) in {"a": (1, 30.0, 25.0, 0.914), "b": (2, 25.0, 30.0, 0.37)}.items():
        rig = FlashRig(seed=seed, size=SIZE, rgb_fps=fps_rgb, thermal_fps=fps_th, offset_s=offset)
        recs[name] = (_write_rig(root / name, rig, 5.0), rig)
    return recs


def _workspace(tmp_path, recordings, **add_kw):
    ws = Workspace.init(tmp_path / "ws")
    for rec_id, folder in recordings.items():
        add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="sunny",
                      recording_id=rec_id, **add_kw.get(rec_id, {}))
    return ws


def _floats(rows, key):
    return np.array([float(r[key]) for r in rows])


# -- the must-show: offsets and sync ----------------------------------------------------------------
def test_estimated_offset_is_within_one_frame_and_pairs_within_half_a_frame(tmp_path, flash_recordings):
    ws = _workspace(tmp_path, {name: folder for name, (folder, _) in flash_recordings.items()})
    summary = extract_workspace(ws, workers=2)
    assert summary["failed"] == 0 and summary["extracted"] == 2
    for name, (_, rig) in flash_recordings.items():
        faster = 1 / max(rig.rgb_fps, rig.thermal_fps)
        rec = ws.recording(name)
        assert rec["offset_source"] == "estimated" and 0.2 <= float(rec["offset_confidence"]) <= 1
        offset = float(rec["offset_s"])
        assert abs(offset - rig.offset_s) < faster, (name, offset, rig.offset_s)
        pairs = ws.pairs(name)
        t_rgb, t_th, dt = _floats(pairs, "t_rgb"), _floats(pairs, "t_thermal"), _floats(pairs, "dt")
        np.testing.assert_allclose(dt, np.abs(t_rgb - t_th - offset), atol=2e-6)
        assert dt.max() <= 0.5 * faster + 1e-6
        slower_frames = int(5.0 * min(rig.rgb_fps, rig.thermal_fps))
        assert len(pairs) >= slower_frames - int(np.ceil(abs(offset) * 30)) - 2


def test_given_offset_pairs_every_frame_within_half_a_frame_of_the_truth(tmp_path, flash_recordings):
    folder, rig = flash_recordings["b"]  # RGB 25 fps, thermal 30 fps: every RGB frame gets a partner
    ws = _workspace(tmp_path, {"b": folder}, b={"offset_s": rig.offset_s})
    summary = extract_workspace(ws)
    rec = summary["recordings"][0]
    assert rec["offset_source"] == "given" and rec["offset_confidence"] is None
    pairs = ws.pairs("b")
    t_rgb, t_th = _floats(pairs, "t_rgb"), _floats(pairs, "t_thermal")
    assert np.abs(t_rgb - t_th - rig.offset_s).max() <= 0.5 / 30 + 1e-6
    # every RGB frame with a thermal frame within half a thermal period is paired
    rgb_t, th_t = np.arange(int(5.37 * 25)) / 25, np.arange(150) / 30 + rig.offset_s
    gap = np.abs(rgb_t[:, None] - th_t[None, :]).min(axis=1)
    assert (gap < 0.5 / 30 - 1e-6).sum() <= len(pairs) <= (gap <= 0.5 / 30 + 1e-6).sum()
    assert len(pairs) >= 124
    assert np.all(np.diff(t_th) > 0) and np.all(np.diff(t_rgb) > 0)


@pytest.fixture(scope="module")
def synth_recordings(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, synthesize(out, recordings=3, seconds=4.0, seed=0, size=SIZE)


def test_gasdb_synth_recordings_extract_and_sync_within_a_frame(tmp_path, synth_recordings):
    out, listing = synth_recordings
    ws = _workspace(tmp_path, {r["id"]: out / r["dir"] for r in listing})
    summary = extract_workspace(ws, every=0.2, min_confidence=0.0)
    assert summary["failed"] == 0
    for r, res in zip(listing, summary["recordings"]):
        truth = r["truth"]
        faster = 1 / max(truth["rgb_fps"], truth["thermal_fps"])
        assert res["offset_source"] == "estimated" and res["max_abs_dt_s"] <= 0.5 * faster + 1e-6
        assert res["frames_thermal"] == truth["thermal_frames"] and res["frames_rgb"] == truth["rgb_frames"]
        # the rig's sync lamp (and, in the third take, the spray) is seen by both cameras
        assert abs(res["offset_s"] - truth["offset_s"]) < faster, (r["id"], res["offset_s"], truth["offset_s"])


# -- the index and the frames ------------------------------------------------------------------------
def test_pairs_csv_rows_point_at_the_decoded_frames(tmp_path, flash_recordings):
    folder, rig = flash_recordings["a"]
    ws = _workspace(tmp_path, {"a": folder}, a={"offset_s": rig.offset_s})
    extract_workspace(ws, every=1.0)
    pairs = ws.pairs("a")
    header = (ws.root / "pairs.csv").read_text().splitlines()[0].split(",")
    assert header[: len(PAIR_COLUMNS)] == list(PAIR_COLUMNS)
    assert [p["pair_id"] for p in pairs] == [f"a_{int(round(float(p['t_rgb']) * 1000)):08d}" for p in pairs]
    rgb_frames = dict(iter_frames(folder / "rgb.mp4"))
    th_frames = dict(iter_frames(folder / "thermal.mp4", gray=True))
    for p in pairs:
        assert p["rgb"] == f"frames/a/rgb/{p['pair_id']}.png" and p["thermal"] == f"frames/a/thermal/{p['pair_id']}.png"
        rgb, th = read_image(ws.path(p["rgb"])), read_image(ws.path(p["thermal"]))
        assert rgb.shape == (SIZE[1], SIZE[0], 3) and th.shape == (SIZE[1], SIZE[0]) and th.dtype == np.uint8
        t_rgb = min(rgb_frames, key=lambda t: abs(t - float(p["t_rgb"])))
        t_th = min(th_frames, key=lambda t: abs(t - float(p["t_thermal"])))
        np.testing.assert_array_equal(rgb, rgb_frames[t_rgb])
        np.testing.assert_array_equal(th, th_frames[t_th])
    rec = ws.recording("a")
    assert rec["extract_pairs"] == str(len(pairs)) and rec["extract_error"] == ""
    assert json.loads(rec["extract_params"])["every"] == 1.0


def test_every_and_max_pairs_sample_by_time(tmp_path, flash_recordings):
    folder, rig = flash_recordings["a"]
    ws = _workspace(tmp_path, {"a": folder}, a={"offset_s": rig.offset_s})
    extract_workspace(ws, every=0.5)
    t = _floats(ws.pairs("a"), "t_thermal")
    assert len(t) == 10 and np.all(np.diff(t) > 0.5 - 1 / 25) and np.all(np.diff(t) < 0.5 + 1 / 25)
    extract_workspace(ws, max_pairs=4, force=True)
    t = _floats(ws.pairs("a"), "t_thermal")
    assert len(t) == 4 and t[-1] - t[0] > 2.5  # spread over the 5 s overlap, not the first 4 frames


def test_16bit_thermal_frames_keep_their_values(tmp_path):
    rng = np.random.default_rng(0)
    thermal = [(rng.integers(20000, 40000, (48, 64))).astype(np.uint16) for _ in range(10)]
    folder = tmp_path / "rec"
    write_video(folder / "thermal.mkv", thermal, fps=9, codec="ffv1")
    write_video(folder / "rgb.mp4", [np.zeros((48, 64, 3), np.uint8)] * 10, fps=9)
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mkv", scene="other", recording_id="r16",
                  offset_s=0.0)
    extract_workspace(ws)
    pairs = ws.pairs("r16")
    assert len(pairs) == 10
    for k, p in enumerate(pairs):
        image = read_image(ws.path(p["thermal"]))
        assert image.dtype == np.uint16
        np.testing.assert_array_equal(image, thermal[k])


def test_dedup_never_drops_a_frame_in_which_the_gas_changed(tmp_path):
    rig = SynthRig(seed=3, size=SIZE, rgb_fps=25.0, thermal_fps=25.0, offset_s=0.0, distractors=False, sync_lamp=False,
                   leak_start_s=2.0, contrast=24.0)
    folder = _write_rig(tmp_path / "rec", rig, 5.0)
    ws = _workspace(tmp_path, {"d": folder}, d={"offset_s": 0.0})
    summary = extract_workspace(ws, dedup=True)
    rec = summary["recordings"][0]
    kept = set(np.round(_floats(ws.pairs("d"), "t_thermal"), 3))
    before_leak = [t for t in kept if t < rig.leak_start_s]
    assert len(before_leak) <= 2 and rec["dedup_skipped"] > 40  # a static scene collapses to a frame or two
    assert len(kept) > 10  # the moving plume keeps frames
    last_mask = None
    for k in range(125):
        t = round(k / 25, 3)
        mask = rig.thermal(t)[1]
        if t in kept:
            last_mask = mask
            continue
        union = (mask | last_mask).sum()
        iou = (mask & last_mask).sum() / union if union else 1.0
        assert iou >= 0.7, f"dropped t={t} s although the plume changed (IoU {iou:.2f} with the last kept frame)"


# -- resumability ----------------------------------------------------------------------------------
def test_rerun_skips_and_force_redoes_keeping_later_stages_of_unchanged_pairs(tmp_path, flash_recordings):
    folder, rig = flash_recordings["a"]
    ws = _workspace(tmp_path, {"a": folder}, a={"offset_s": rig.offset_s})
    extract_workspace(ws, every=1.0)
    first = ws.pairs("a")
    stamps = {p["pair_id"]: ws.path(p["thermal"]).stat().st_mtime_ns for p in first}
    again = extract_workspace(ws, every=1.0)
    assert again["recordings"][0]["status"] == "skipped" and again["pairs_written"] == 0
    assert {p["pair_id"]: ws.path(p["thermal"]).stat().st_mtime_ns for p in ws.pairs("a")} == stamps
    with ws.transaction() as index:  # a later stage's output for every pair
        for p in index.pairs.values():
            p["aligned"] = f"aligned/a/{p['pair_id']}.png"
    redo = extract_workspace(ws, every=1.0, force=True)
    assert redo["recordings"][0]["status"] == "extracted" and redo["pairs_written"] == len(first)
    assert [p["pair_id"] for p in ws.pairs("a")] == [p["pair_id"] for p in first]
    assert all(p["aligned"] for p in ws.pairs("a"))  # same frames: the alignment still holds
    extract_workspace(ws, every=0.5, force=True)
    after = ws.pairs("a")
    same = {p["pair_id"] for p in first}
    assert all(bool(p.get("aligned")) == (p["pair_id"] in same) for p in after)
    assert len(list((ws.root / "frames" / "a" / "rgb").glob("*.png"))) == len(after)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, flash_recordings, monkeypatch):
    folder, rig = flash_recordings["b"]
    ws = _workspace(tmp_path, {"b": folder}, b={"offset_s": rig.offset_s})
    calls = {"n": 0}
    submit = extract_mod._RecordingJob._submit

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] > 2 * 25:  # after 25 pairs
            raise KeyboardInterrupt
        return submit(self, *args)

    monkeypatch.setattr(extract_mod._RecordingJob, "_submit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_workspace(ws, every=0.1, checkpoint=10)
    partial = ws.pairs("b")
    assert len(partial) == 20 and ws.recording("b")["extract_pairs"] == ""  # two checkpoints, not finished
    for p in partial:  # every indexed pair's frames are complete
        assert read_image(ws.path(p["rgb"])).shape == (SIZE[1], SIZE[0], 3)
    monkeypatch.setattr(extract_mod._RecordingJob, "_submit", submit)
    resumed = extract_workspace(ws, every=0.1, checkpoint=10)["recordings"][0]
    assert resumed["status"] == "extracted" and resumed["written"] == resumed["pairs"] - 20
    clean = _workspace(tmp_path / "clean", {"b": folder}, b={"offset_s": rig.offset_s})
    extract_workspace(clean, every=0.1)
    assert [p["pair_id"] for p in ws.pairs("b")] == [p["pair_id"] for p in clean.pairs("b")]


# -- the offset estimated in the writing pass ------------------------------------------------------
def _pairs_and_bytes(ws, rec):
    rows = [{k: v for k, v in p.items()} for p in ws.pairs(rec)]
    files = {p["pair_id"]: (ws.path(p["rgb"]).read_bytes(), ws.path(p["thermal"]).read_bytes()) for p in rows}
    return rows, files


def test_one_decoding_pass_gives_the_pairs_and_bytes_of_two(tmp_path, flash_recordings, monkeypatch):
    """With every frame kept, the offset is estimated from the writing pass (each stream decoded
    once): same offset, same pairs, same bytes, same digests as a separate estimation pass."""
    results = {}
    for name, ratio in (("one", extract_mod.ONE_PASS_MAX_RATE_RATIO), ("two", 0.0)):
        monkeypatch.setattr(extract_mod, "ONE_PASS_MAX_RATE_RATIO", ratio)
        decodes = []
        real = extract_mod.video.iter_av_frames
        monkeypatch.setattr(extract_mod.video, "iter_av_frames", lambda p, **kw: decodes.append(p) or real(p, **kw))
        ws = _workspace(tmp_path / name, {n: f for n, (f, _) in flash_recordings.items()})
        summary = extract_workspace(ws, workers=2)
        assert summary["failed"] == 0
        monkeypatch.setattr(extract_mod.video, "iter_av_frames", real)
        results[name] = (summary, {rec: _pairs_and_bytes(ws, rec) for rec in ("a", "b")}, decodes, ws)
    one, two = results["one"], results["two"]
    assert len(one[2]) == 4 and len(two[2]) == 8  # each stream decoded once, instead of twice
    for r1, r2 in zip(one[0]["recordings"], two[0]["recordings"]):
        for key in ("offset_s", "offset_confidence", "pairs", "frames_rgb", "frames_thermal", "unpaired_thermal",
                    "max_abs_dt_s"):
            assert r1[key] == r2[key], key
    assert one[1] == two[1]
    assert not (one[3].root / "frames" / "a" / ".staging").exists()
    for rec in ("a", "b"):
        rows = one[3].pairs(rec)
        assert len(list((one[3].root / "frames" / rec / "rgb").glob("*.png"))) == len(rows)


def test_an_interrupted_one_pass_extraction_resumes_without_encoding_again(tmp_path, flash_recordings, monkeypatch):
    folder, _ = flash_recordings["b"]
    ws = _workspace(tmp_path, {"b": folder})
    calls = {"n": 0}
    submit = extract_mod._RecordingJob._submit

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] > 100:
            raise KeyboardInterrupt
        return submit(self, *args)

    monkeypatch.setattr(extract_mod._RecordingJob, "_submit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_workspace(ws)
    staged = list((ws.root / "frames" / "b" / ".staging").rglob("*.png"))
    assert len(staged) == 100 and not ws.pairs("b")
    calls["n"] = -10_000
    res = extract_workspace(ws)["recordings"][0]
    frames = res["frames_rgb"] + res["frames_thermal"]
    assert res["status"] == "extracted" and calls["n"] == -10_000 + frames - 100  # the staged 100 are reused
    clean = _workspace(tmp_path / "clean", {"b": folder})
    extract_workspace(clean)
    assert _pairs_and_bytes(ws, "b") == _pairs_and_bytes(clean, "b")
    assert not (ws.root / "frames" / "b" / ".staging").exists()


def test_a_refused_estimate_leaves_no_staged_frames(tmp_path, flash_recordings):
    folder, _ = flash_recordings["a"]
    ws = _workspace(tmp_path, {"a": folder})
    res = extract_workspace(ws, min_confidence=0.999)["recordings"][0]
    assert res["status"] == "failed" and "unreliable" in res["error"]
    assert not (ws.root / "frames" / "a" / ".staging").exists() and not ws.pairs("a")


# -- bad input -------------------------------------------------------------------------------------
def _copy_rec(src, dst):
    dst.mkdir(parents=True)
    for name in ("rgb.mp4", "thermal.mp4"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_bad_recordings_fail_cleanly_and_the_others_are_extracted(tmp_path, flash_recordings):
    good, rig = flash_recordings["a"]
    folders = {"good": good}
    for name in ("truncated", "empty", "apart"):
        folders[name] = _copy_rec(good, tmp_path / name)
    # distinct content for the duplicate check of `gasdb add`: re-encode the RGB of the copies
    for k, name in enumerate(("truncated", "empty", "apart")):
        write_video(folders[name] / "rgb.mp4", (rig.rgb(j / 30) for j in range(60 + k)), fps=30)
    ws = _workspace(tmp_path, folders, apart={"offset_s": 100.0}, good={"offset_s": rig.offset_s},
                    truncated={"offset_s": 0.0}, empty={"offset_s": 0.0})
    # damage two files after registration: a cut (MKV stops silently there) and a stream without frames
    data = (folders["truncated"] / "thermal.mp4").read_bytes()
    write_video(folders["truncated"] / "t.mkv", (f for _, f in iter_frames(good / "thermal.mp4", gray=True)), fps=25)
    cut = (folders["truncated"] / "t.mkv").read_bytes()
    (folders["truncated"] / "thermal.mp4").write_bytes(cut[: len(cut) // 2])
    with av.open(str(folders["empty"] / "thermal.mp4"), mode="w", format="avi") as c:
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "yuvj420p"
        c.start_encoding()
    summary = extract_workspace(ws, every=0.5)
    status = {r["id"]: r for r in summary["recordings"]}
    assert status["good"]["status"] == "extracted" and status["good"]["pairs"] == 10
    assert "truncated or damaged" in status["truncated"]["error"]
    assert "no decodable frame" in status["empty"]["error"]
    assert "do not overlap" in status["apart"]["error"] and "offset" in status["apart"]["error"]
    assert summary["failed"] == 3
    index = ws.read_index()
    assert {p["recording"] for p in index.pairs.values()} == {"good"}
    for name in ("truncated", "empty", "apart"):
        assert index.recordings[name]["extract_error"] and index.recordings[name]["extract_pairs"] == ""
        assert not list((ws.root / "frames" / name).rglob("*.png"))
    assert ws.recordings()[1]["extract_error"].startswith(str(folders["truncated"] / "thermal.mp4"))
    # the file is repaired: a plain rerun retries the failed recording only
    (folders["truncated"] / "thermal.mp4").write_bytes(data)
    rerun = {r["id"]: r["status"] for r in extract_workspace(ws, every=0.5)["recordings"]}
    assert rerun == {"good": "skipped", "truncated": "extracted", "empty": "failed", "apart": "failed"}
    assert ws.recording("truncated")["extract_error"] == ""


def test_unreliable_offset_estimates_are_refused_with_the_estimate(tmp_path, flash_recordings):
    folder, _ = flash_recordings["a"]
    ws = _workspace(tmp_path, {"a": folder})
    res = extract_workspace(ws, min_confidence=0.999)["recordings"][0]
    assert res["status"] == "failed" and "unreliable" in res["error"] and "--offset" in res["error"]
    assert not ws.pairs("a")
    with pytest.raises(WorkspaceError, match="no recording .nope."):
        extract_workspace(ws, recordings=["nope"])
    with pytest.raises(ValueError, match="every"):
        extract_workspace(ws, every=0)


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_extract_json_and_exit_codes(tmp_path, flash_recordings):
    folder, rig = flash_recordings["a"]
    ws = _workspace(tmp_path, {"a": folder})
    runner = CliRunner()
    result = runner.invoke(main, ["extract", str(ws.root), "--every", "1", "--offset", str(rig.offset_s), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["extracted"] == 1 and summary["recordings"][0]["offset_source"] == "given"
    result = runner.invoke(main, ["extract", str(ws.root), "--offset", "100", "--force"])
    assert result.exit_code == 1 and "a: extract failed" in result.output and "do not overlap" in result.output
    assert runner.invoke(main, ["extract", str(ws.root), "--every", "0"]).exit_code == 2
    assert runner.invoke(main, ["extract", str(ws.root), "--recording", "zz"]).exit_code == 1


# -- real clips ------------------------------------------------------------------------------------
REAL = [("gasvid", "MOV_1467_short.mp4", 2.0), ("iod_video", "001_wild_static_vague.avi", None),
        ("simgas", "simgasvid1.mp4", 0.5)]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("folder,name,every", REAL)
def test_real_clip_paired_with_itself(tmp_path, folder, name, every):
    """Real clips are single-stream: a clip registered as both cameras must sync at exactly 0 s."""
    path = shared_data(folder, name)
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=path, thermal=path, scene="other", recording_id="real", allow_same=True)
    res = extract_workspace(ws, every=every)["recordings"][0]
    assert res["status"] == "extracted", res["error"]
    assert res["offset_s"] == 0.0 and res["offset_confidence"] > 0.99 and ws.recording("real")["offset_s"] == "0.0"
    decoded = count_frames(path)
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == decoded == res["frames_thermal"] == res["frames_rgb"]
    pairs = ws.pairs("real")
    t_rgb, t_th = _floats(pairs, "t_rgb"), _floats(pairs, "t_thermal")
    assert np.all(np.diff(t_th) > 0) and np.array_equal(t_rgb, t_th) and _floats(pairs, "dt").max() == 0
    if every is None:
        assert len(pairs) == decoded


@pytest.mark.realdata
@pytest.mark.parametrize("folder,name,every", REAL)
def test_real_clip_as_a_thermal_camera_alone(tmp_path, folder, name, every):
    """GasVid, IOD-Video and SimGas are thermal-only: one "pair" per sampled thermal frame, no offset."""
    path = shared_data(folder, name)
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, thermal=path, scene="other", recording_id="real")
    res = extract_workspace(ws, every=every)["recordings"][0]
    assert res["status"] == "extracted", res["error"]
    assert res["frames_rgb"] == 0 and res["offset_s"] is None and res["max_abs_dt_s"] is None
    pairs = ws.pairs("real")
    t_th = _floats(pairs, "t_thermal")
    assert np.all(np.diff(t_th) > 0) and all(p["rgb"] == "" and p["t_rgb"] == "" for p in pairs)
    assert [p["pair_id"] for p in pairs] == [f"real_{round(t * 1000):08d}" for t in t_th]
    if every is None:
        assert len(pairs) == res["frames_thermal"] == count_frames(path)
    else:  # one pair per cell of the fixed time grid
        cells = np.floor((t_th - t_th[0]) / every + 1e-6)
        assert np.array_equal(cells, np.arange(len(cells)))
    for p in pairs[:3]:
        assert (ws.root / p["thermal"]).is_file() and len(p["extract_digest"]) == 32


@pytest.mark.realdata
@pytest.mark.slow
def test_real_footage_offset_against_a_retimed_copy(tmp_path):
    """GasVid vs a 10 fps, contrast-changed copy that starts 1.3 s later: offset -1.3 s within a frame."""
    path = shared_data("gasvid", "MOV_1467_short.mp4")
    source = [(t, img) for t, img in iter_frames(path, gray=True) if t < 17.0]
    times = np.array([t for t, _ in source])
    copy = []
    for k in range(150):
        nearest = int(np.argmin(np.abs(times - (1.3 + k / 10))))
        copy.append(np.clip(0.7 * source[nearest][1] + 40, 0, 255).astype(np.uint8))
    write_video(tmp_path / "copy.mp4", copy, fps=10)
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=tmp_path / "copy.mp4", thermal=path, scene="other", recording_id="g")
    res = extract_workspace(ws, max_pairs=10)["recordings"][0]
    assert res["status"] == "extracted", res["error"]
    assert abs(res["offset_s"] - (-1.3)) < 1 / 15
    assert res["pairs"] == 10
