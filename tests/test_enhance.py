"""The enhance stage: workspace runs (resume, force, stale, failures), one look per recording, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools import restoration
from gasdb_tools.cli import main
from gasdb_tools.enhance import EnhanceSettings, enhance_frame, enhance_images, enhance_workspace, recording_contrast
from gasdb_tools.imaging import read_image, write_image
from gasdb_tools.synth import SynthRig
from gasdb_tools.workspace import Workspace, make_pair_id

SIZE = (160, 128)  # width, height
SV = 31
SHIFT = np.array([[1.0, 0, 6], [0, 1, 4], [0, 0, 1]])


@pytest.fixture(scope="module")
def rig_frames():
    rig = SynthRig(seed=3, size=SIZE, contrast=24)
    return [(rig.leak_start_s + 0.25 * i, *rig.thermal(rig.leak_start_s + 0.25 * i)) for i in range(6)]


def _add_recording(ws, rec, frames, *, depth=8):
    with ws.transaction() as idx:
        idx.recordings[rec] = {"id": rec, "rgb": f"{rec}/rgb.mp4", "thermal": f"{rec}/thermal.mp4", "scene": "near"}
        for t, frame, _ in frames:
            if depth == 16:
                frame = frame.astype(np.uint16) * 37 + 5000
            pid = make_pair_id(rec, t)
            rel = f"frames/{rec}/thermal/{pid}.png"
            write_image(ws.path(rel), frame)
            idx.pairs[pid] = {"pair_id": pid, "recording": rec, "t_rgb": repr(t), "t_thermal": repr(t), "dt": "0.0",
                              "rgb": f"frames/{rec}/rgb/{pid}.png", "thermal": rel}


def _align(ws, rec):
    """What `gasdb align` leaves: the warped frame and its valid mask."""
    with ws.transaction() as idx:
        for pid, row in idx.pairs.items():
            if row["recording"] != rec:
                continue
            frame = read_image(ws.path(row["thermal"]))
            warped = cv2.warpPerspective(frame, SHIFT, SIZE, flags=cv2.INTER_LINEAR)
            valid = cv2.warpPerspective(np.full(frame.shape, 255, np.uint8), SHIFT, SIZE, flags=cv2.INTER_NEAREST)
            row["aligned"], row["valid"] = f"aligned/{rec}/{pid}.png", f"aligned/{rec}/{pid}_valid.png"
            write_image(ws.path(row["aligned"]), warped)
            write_image(ws.path(row["valid"]), valid)


@pytest.fixture
def ws(tmp_path, rig_frames):
    ws = Workspace.init(tmp_path / "ws")
    _add_recording(ws, "r1", rig_frames)
    return ws


def test_writes_8bit_frames_and_index(ws):
    report = enhance_workspace(ws, sv=SV)
    rec = report["recordings"][0]
    assert (rec["pairs"], rec["enhanced"], rec["skipped"], rec["error"]) == (6, 6, 0, None)
    assert rec["sources"] == {"aligned": 0, "thermal": 6}
    assert report["failed"] == 0 and len(report["frames"]) == 6
    for row in ws.pairs("r1"):
        assert row["enhanced"] == f"enhanced/r1/{row['pair_id']}.png" and row["enhanced_source"] == "thermal"
        out = read_image(ws.path(row["enhanced"]))
        assert out.dtype == np.uint8 and out.shape == (SIZE[1], SIZE[0])
        assert out.std() > 10
    stored = json.loads(ws.recording("r1")["enhance_settings"])
    assert stored["settings"]["sv"] == SV and stored["settings"]["gamma_rows"] == "all"
    assert stored["contrast"] == rec["contrast"]
    from gasdb_tools.status import workspace_status

    assert workspace_status(ws)["recordings"][0]["stages"]["enhance"] == {"done": 6}


def test_resume_skips_done_and_force_redoes(ws):
    enhance_workspace(ws, sv=SV)
    first = {r["pair_id"]: read_image(ws.path(r["enhanced"])) for r in ws.pairs()}
    victim = ws.pairs()[2]
    ws.path(victim["enhanced"]).unlink()
    again = enhance_workspace(ws, sv=SV)
    assert again["recordings"][0]["enhanced"] == 1 and again["recordings"][0]["skipped"] == 5
    assert [f["pair_id"] for f in again["frames"]] == [victim["pair_id"]]
    # the stored per-recording setting is reused: the redone frame is identical to the first run's
    np.testing.assert_array_equal(read_image(ws.path(victim["enhanced"])), first[victim["pair_id"]])
    forced = enhance_workspace(ws, sv=SV, force=True)
    assert forced["recordings"][0]["enhanced"] == 6


def test_changed_settings_fail_the_recording_until_forced(ws, rig_frames):
    _add_recording(ws, "r2", rig_frames[:2])
    enhance_workspace(ws, sv=SV, recordings=["r1"])
    report = enhance_workspace(ws, sv=SV + 2)
    by_id = {r["id"]: r for r in report["recordings"]}
    assert report["failed"] == 1
    assert "sv: 31 then, 33 now" in by_id["r1"]["error"] and "--force" in by_id["r1"]["error"]
    assert by_id["r2"]["error"] is None and by_id["r2"]["enhanced"] == 2  # the others carry on
    assert "other settings" in ws.recording("r1")["enhance_error"]
    report = enhance_workspace(ws, sv=SV + 2, force=True)
    assert report["failed"] == 0 and ws.recording("r1")["enhance_error"] == ""


def test_missing_frame_is_a_recording_failure(ws, rig_frames):
    _add_recording(ws, "r2", rig_frames[:2])
    ws.path(ws.pairs("r2")[0]["thermal"]).unlink()
    report = enhance_workspace(ws, sv=SV)
    by_id = {r["id"]: r for r in report["recordings"]}
    assert "image file not found" in by_id["r2"]["error"]
    assert by_id["r1"]["enhanced"] == 6
    assert "not found" in ws.recording("r2")["enhance_error"]


def test_aligned_frames_are_preferred_and_stale_outputs_redone(ws):
    enhance_workspace(ws, sv=SV)
    _align(ws, "r1")
    report = enhance_workspace(ws, sv=SV)  # no --force: the unaligned outputs are stale
    rec = report["recordings"][0]
    assert rec["enhanced"] == 6 and rec["sources"] == {"aligned": 6, "thermal": 0}
    assert rec["contrast"]["source"] == "aligned"
    for row in ws.pairs("r1"):
        assert row["enhanced_source"] == "aligned"
        out = read_image(ws.path(row["enhanced"]))
        valid = read_image(ws.path(row["valid"])) > 0
        assert not out[~valid].any() and out[valid].std() > 10
    assert all(f["source"] == "aligned" for f in report["frames"])


def test_one_contrast_setting_per_recording(rig_frames):
    """A hot object in one frame changes that frame's own tone map, not the recording's: pixels far
    from it (further than the median window) are identical with the recording's setting."""
    _, frame, _ = rig_frames[3]
    hot = frame.copy()
    hot[10:20, 10:20] = 255
    st = EnhanceSettings(sv=SV)
    contrast = recording_contrast([(f, None) for _, f, _ in rig_frames], st)
    far = np.zeros(frame.shape, bool)
    far[60:, 70:] = True
    a, b = enhance_frame(frame, contrast, st), enhance_frame(hot, contrast, st)
    np.testing.assert_array_equal(a[far], b[far])
    # per-frame Tarel (the authors' tone mapping) shifts the same far pixels
    x, xh = frame / 255.0, hot / 255.0
    pa = restoration.tarel_hautiere(x, sv=SV, gfactor=1.0, gamma_rows="all")
    pb = restoration.tarel_hautiere(xh, sv=SV, gfactor=1.0, gamma_rows="all")
    assert np.abs(pa[far] - pb[far]).max() > 1 / 255


def test_invert_shows_an_absorbing_plume_bright(rig_frames):
    _, frame, mask = rig_frames[4]
    assert mask.sum() > 100
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~mask
    plain, inverted = EnhanceSettings(sv=SV), EnhanceSettings(sv=SV, invert=True)
    out_p = enhance_frame(frame, recording_contrast([(frame, None)], plain), plain).astype(float)
    out_i = enhance_frame(frame, recording_contrast([(frame, None)], inverted), inverted).astype(float)
    assert out_p[mask].mean() < out_p[ring].mean()  # absorbing: darker than around it
    assert out_i[mask].mean() - out_i[ring].mean() > 10  # inverted: clearly brighter


def test_16bit_frames(tmp_path, rig_frames):
    ws = Workspace.init(tmp_path / "ws16")
    _add_recording(ws, "r1", rig_frames[:3], depth=16)
    report = enhance_workspace(ws, sv=SV)
    c = report["recordings"][0]["contrast"]
    assert c["depth"] == 16 and 5000 <= c["lo"] < c["hi"] <= 5000 + 37 * 255
    out = read_image(ws.path(ws.pairs()[0]["enhanced"]))
    assert out.dtype == np.uint8 and out.std() > 10


def test_metrics_per_frame(ws):
    report = enhance_workspace(ws, sv=SV, metrics=True, metrics_frames=2, metrics_mode="fixed")
    scored = [f for f in report["frames"] if "metrics" in f]
    assert len(scored) == 2
    for f in scored:
        m = f["metrics"]
        assert set(m) >= {"e", "r", "sigma", "sigma_new", "n_o", "n_r", "mode", "seconds"}
        assert m["mode"] == "fixed" and m["n_r"] > 0 and m["r"] > 1
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize("kwargs,words", [
    ({"sv": 30}, "sv must be an odd"), ({"p": 1.5}, "p must lie"), ({"gfactor": -1}, "gfactor"),
    ({"gamma_rows": "top"}, "gamma_rows"), ({"metrics_mode": "x"}, "metrics_mode"),
    ({"sample_frames": 0}, "sample_frames"),
])
def test_bad_settings_fail_before_any_work(ws, kwargs, words):
    with pytest.raises(ValueError, match=None) as info:
        enhance_workspace(ws, **{"sv": SV, **kwargs})
    assert words in str(info.value)
    assert not (ws.root / "enhanced").exists()


def test_unknown_recording(ws):
    with pytest.raises(Exception, match="no recording 'nope'"):
        enhance_workspace(ws, sv=SV, recordings=["nope"])


# --------------------------------------------------------------------------------------------
# loose images
# --------------------------------------------------------------------------------------------
def test_enhance_images(tmp_path, rig_frames):
    gray = tmp_path / "in" / "a.png"
    write_image(gray, rig_frames[0][1])
    colour = tmp_path / "in" / "b.png"
    write_image(colour, np.dstack([rig_frames[1][1], rig_frames[2][1], rig_frames[3][1]]))
    report = enhance_images([gray, colour], tmp_path / "out", metrics=True)
    a, b = read_image(tmp_path / "out" / "a.png"), read_image(tmp_path / "out" / "b.png")
    assert a.shape == (128, 160) and b.shape == (128, 160, 3) and a.dtype == b.dtype == np.uint8
    assert [i["sv"] for i in report["images"]] == [13, 7]  # the authors' rule for 160 px gray / colour
    assert report["images"][0]["metrics"]["n_r"] > 0
    again = enhance_images([gray], tmp_path / "out")
    assert again["images"][0]["skipped"]


def test_enhance_images_errors(tmp_path):
    with pytest.raises(Exception, match="image file not found"):
        enhance_images([tmp_path / "missing.png"], tmp_path / "out")
    (tmp_path / "x").mkdir()
    for d in ("x", "y"):
        (tmp_path / d).mkdir(exist_ok=True)
        write_image(tmp_path / d / "same.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="both write same.png"):
        enhance_images([tmp_path / "x" / "same.png", tmp_path / "y" / "same.png"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_workspace_json_and_resume(ws):
    runner = CliRunner()
    res = runner.invoke(main, ["enhance", str(ws.root), "--sv", str(SV), "--invert", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["settings"]["invert"] is True and report["recordings"][0]["enhanced"] == 6
    res = runner.invoke(main, ["enhance", str(ws.root), "--sv", str(SV), "--invert"])
    assert res.exit_code == 0 and "0 enhanced, 6 already done" in res.output
    res = runner.invoke(main, ["enhance", str(ws.root), "--sv", str(SV)])
    assert res.exit_code == 1 and "other settings" in res.output


def test_cli_images(tmp_path, rig_frames):
    img = tmp_path / "f.png"
    write_image(img, rig_frames[0][1])
    runner = CliRunner()
    res = runner.invoke(main, ["enhance", str(img), "-o", str(tmp_path / "out"), "--sv", "21"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "f.png").is_file()


@pytest.mark.parametrize("args,words", [
    (["{img}"], "-o DIR"),
    (["{dir}"], "not a workspace"),
    (["{ws}", "-o", "{dir}"], "loose images"),
    (["{ws}", "--sv", "30"], "sv must be an odd"),
    (["{img}", "-o", "{dir}", "--sv", "301"], "larger than the image"),
])
def test_cli_usage_errors(ws, tmp_path, rig_frames, args, words):
    img = tmp_path / "f.png"
    write_image(img, rig_frames[0][1])
    (tmp_path / "plain").mkdir()
    subs = {"{img}": str(img), "{dir}": str(tmp_path / "plain"), "{ws}": str(ws.root)}
    res = CliRunner().invoke(main, ["enhance", *[subs.get(a, a) for a in args]])
    assert res.exit_code == 2, res.output
    assert words in res.output


def test_cli_help():
    res = CliRunner().invoke(main, ["enhance", "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "--invert" in res.output


def test_enhance_images_stretches_16bit(tmp_path, rig_frames):
    frame = rig_frames[0][1]
    write_image(tmp_path / "t8.png", frame)
    write_image(tmp_path / "t16.png", frame.astype(np.uint16) * 3 + 20000)  # a sliver of the 16-bit range
    enhance_images([tmp_path / "t8.png", tmp_path / "t16.png"], tmp_path / "out")
    a, b = read_image(tmp_path / "out" / "t8.png"), read_image(tmp_path / "out" / "t16.png")
    assert b.dtype == np.uint8 and b.std() > 10
    assert np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1] > 0.9
