"""Tests of gasdb_tools.calibration: the rig calibration file format, ``calibrate`` and ``align``
over small simulated workspaces, and the two CLI commands."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools import registration as reg
from gasdb_tools.align import align_workspace, annotation_frame
from gasdb_tools.calibration import (
    Calibration,
    calibrate_workspace,
    calibration_path,
    output_matrix,
    read_calibration,
    select_pairs,
    validate_calibration,
    write_calibration,
)
from gasdb_tools.cli import main
from gasdb_tools.errors import CalibrationError, FormatError, WorkspaceError
from gasdb_tools.imaging import read_image, write_image
from gasdb_tools.synth import SynthRig
from gasdb_tools.workspace import Workspace, make_pair_id

SIZE = (320, 256)


def make_workspace(root, recordings, *, pairs=4, rig_name="rig-a", black=False):
    """A workspace with extracted frame pairs of simulated rigs: ``recordings`` maps id -> SynthRig.

    Thermal frames are written as 16-bit PNG (value x 257) so the tests see the bit depth kept.
    """
    ws = Workspace.init(root, rig=rig_name)
    with ws.transaction() as index:
        for rec, rig in recordings.items():
            index.recordings[rec] = {"id": rec, "rgb": f"{rec}/rgb.mp4", "thermal": f"{rec}/thermal.mp4",
                                     "scene": "other", "rig": rig_name, "rgb_size": "%dx%d" % rig.size,
                                     "thermal_size": "%dx%d" % rig.size}
            for k in range(pairs):
                t = 0.6 + 0.7 * k
                pid = make_pair_id(rec, t + rig.offset_s)
                rgb_path = ws.output_path("frames", rec, f"{pid}.png", sub="rgb")
                th_path = ws.output_path("frames", rec, f"{pid}.png", sub="thermal")
                thermal = rig.thermal(t)[0].astype(np.uint16) * 257
                write_image(rgb_path, rig.rgb(t + rig.offset_s))
                write_image(th_path, np.zeros_like(thermal) if black else thermal)
                index.pairs[pid] = {"pair_id": pid, "recording": rec, "t_rgb": t + rig.offset_s, "t_thermal": t,
                                    "dt": 0.0, "rgb": ws.rel(rgb_path), "thermal": ws.rel(th_path)}
    return ws


@pytest.fixture(scope="module")
def rig():
    return SynthRig(seed=12, size=SIZE)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, rig):
    """One rig, two recordings, calibrated once for the module (align tests copy nothing: they run
    on their own workspaces built from this calibration file)."""
    ws = make_workspace(tmp_path_factory.mktemp("cal") / "ws", {"rec1": rig, "rec2": rig})
    report = calibrate_workspace(ws, frames=8)
    report["written"] = json.loads(calibration_path(ws, "rig-a").read_text())
    return ws, report


# ------------------------------------------------------------------------------------------------
# file format
# ------------------------------------------------------------------------------------------------
def _example(**changes) -> Calibration:
    base = dict(rig="rig-a", model="homography", matrix=np.array([[1.01, 0.02, 3.0], [-0.01, 0.99, -4.0],
                                                                   [1e-5, 0, 1.0]]),
                rgb_size=(640, 512), thermal_size=(640, 512), score=0.61, consistent=True,
                residuals={"frames_used": 3}, source_frames=[{"pair_id": "a_00001000"}], created="2026-01-01T00:00:00Z",
                qa_figure="rig-a_qa.png")
    base.update(changes)
    return Calibration(**base)


def test_calibration_file_round_trip(tmp_path):
    cal = _example()
    path = write_calibration(tmp_path / "rig-a.json", cal)
    back = read_calibration(path)
    np.testing.assert_array_equal(back.matrix, cal.matrix)
    assert back.to_dict() == cal.to_dict()
    doc = json.loads(path.read_text())
    assert doc["format"] == "gasdb-rig-calibration" and doc["format_version"] == 1
    assert doc["direction"] == "thermal_px_to_rgb_px" and doc["tool"]["name"] == "gasdb-tools"


@pytest.mark.parametrize("field, value, message", [
    ("format", "other", "expected"),
    ("format_version", 2, "unsupported version"),
    ("model", "projective", "must be one of"),
    ("matrix", [[1, 0], [0, 1]], "3x3"),
    ("matrix", [[1, 0, 0], [0, 1, 0], [0, 0, 0]], "singular"),
    ("matrix", [[1, 0, 0], [0, "x", 0], [0, 0, 1]], "3x3"),
    ("rgb_size", [640.5, 512], "positive integers"),
    ("thermal_size", [640], "positive integers"),
    ("direction", "rgb_px_to_thermal_px", "thermal px to RGB px"),
    ("residuals", [], "JSON object"),
])
def test_validate_calibration_names_the_field(field, value, message):
    doc = _example().to_dict()
    doc[field] = value
    with pytest.raises(FormatError, match=message) as err:
        validate_calibration(doc, file="x.json")
    assert err.value.field == field and err.value.file == "x.json"


def test_validate_calibration_missing_field_and_affine_last_row(tmp_path):
    doc = _example().to_dict()
    del doc["matrix"]
    with pytest.raises(FormatError, match="missing"):
        validate_calibration(doc)
    doc = _example(model="affine").to_dict()
    with pytest.raises(FormatError, match="last row"):
        validate_calibration(doc)
    with pytest.raises(FormatError, match="not found"):
        read_calibration(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FormatError, match="malformed JSON"):
        read_calibration(tmp_path / "bad.json")


def test_output_matrix_pixel_centres():
    np.testing.assert_allclose(output_matrix(np.eye(3), (640, 512), (640, 512)), np.eye(3))
    m = output_matrix(np.eye(3), (1280, 1024), (640, 512))
    # the centre of RGB pixels 0 and 1 (x = 0.5) is output pixel 0
    np.testing.assert_allclose(reg.transform_points(m, [[0.5, 0.5], [1279, 1023]]), [[0, 0], [639.25, 511.25]])


def test_select_pairs_spreads_over_recordings_and_time():
    rows = {"a": [{"pair_id": f"a{i}"} for i in range(10)], "b": [{"pair_id": f"b{i}"} for i in range(3)],
            "c": []}
    picked = [p["pair_id"] for p in select_pairs(rows, 8)]
    # round robin: a gets 5, b all its 3; the centres of equal parts of each recording
    assert picked == ["a1", "a3", "a5", "a7", "a9", "b0", "b1", "b2"]
    assert select_pairs(rows, 8) == select_pairs(rows, 8)
    assert len(select_pairs(rows, 100)) == 13
    with pytest.raises(ValueError, match="frames"):
        select_pairs(rows, 0)


# ------------------------------------------------------------------------------------------------
# calibrate
# ------------------------------------------------------------------------------------------------
def test_calibrate_workspace_writes_an_accurate_calibration(calibrated, rig):
    ws, report = calibrated
    (entry,) = report["rigs"]
    assert entry["rig"] == "rig-a" and not entry["skipped"] and entry["consistent"], entry["warnings"]
    cal = read_calibration(calibration_path(ws, "rig-a"))
    assert cal.model == "homography" and cal.rgb_size == SIZE and cal.thermal_size == SIZE
    assert reg.corner_error(cal.matrix, rig.homography, SIZE) < 0.5
    assert cal.residuals["frames_used"] == 8 and len(cal.source_frames) == 8
    assert {f["recording"] for f in cal.source_frames} == {"rec1", "rec2"}
    assert all(f["used"] and f["corner_deviation_px"] < 1 for f in cal.source_frames)
    assert cal.tool["version"] and cal.created.endswith("Z")
    figure = read_image(calibration_path(ws, "rig-a").parent / cal.qa_figure)
    assert figure.ndim == 3 and figure.shape[0] > 400


def test_calibrate_skips_existing_unless_forced(calibrated, monkeypatch):
    ws, _ = calibrated
    path = calibration_path(ws, "rig-a")
    before = path.read_bytes()
    report = calibrate_workspace(ws, frames=8)
    assert report["rigs"][0]["skipped"] and path.read_bytes() == before
    import gasdb_tools.calibration as calmod

    calls = []
    real = calmod.register_pairs
    monkeypatch.setattr(calmod, "register_pairs", lambda pairs, **kw: calls.append(len(pairs)) or real(pairs, **kw))
    ws.set_blacklist({ws.pairs("rec1")[0]["pair_id"]: "test"})
    try:
        calibrate_workspace(ws, frames=20, model="affine", force=True, figure=False)
    finally:
        ws.set_blacklist({})
    assert calls == [7]  # 8 pairs, one blacklisted
    forced = read_calibration(path)
    assert forced.model == "affine" and forced.model_choice["requested"] == "affine"
    assert "requested" in forced.model_choice["reason"] and forced.residuals["model_choice"] is None


def test_calibrate_records_the_model_choice(calibrated):
    """The report and (as written, before other tests recalibrate it) the file say which model and why."""
    ws, report = calibrated
    (entry,) = report["rigs"]
    cal = validate_calibration(report["written"])
    choice = cal.model_choice
    assert choice["requested"] == "auto" and choice["model"] == cal.model == entry["model"]
    assert choice["folds"] == "quadrants" and set(choice["heldout_error"]) == set(reg.MODELS)  # 2 recordings
    assert choice["reason"] == entry["model_reason"] and "held-out" in choice["reason"]
    assert cal.residuals["model_choice"]["model"] == cal.model and cal.method["model"].startswith("held-out")
    assert entry["model_requested"] == "auto" and entry["distortion_k1"] is None and cal.distortion == {}


def test_calibration_files_without_the_new_fields_still_read(tmp_path):
    doc = _example().to_dict()
    del doc["model_choice"], doc["distortion"]
    cal = validate_calibration(doc)
    assert cal.model_choice == {} and cal.distortion == {} and cal.lens() is None


@pytest.mark.parametrize("value,message", [
    ({"model": "fisheye", "k1": 0.1}, "'radial'"),
    ({"model": "radial", "k1": 0.7}, "k1"),
    ({"model": "radial", "k1": "x"}, "k1"),
    ({"model": "radial", "k1": 0.01, "center": [1, 2]}, "center"),
    ([0.1], "distortion"),
])
def test_validate_calibration_checks_the_distortion(value, message):
    with pytest.raises(FormatError, match=message):
        validate_calibration({**_example().to_dict(), "distortion": value})


def test_a_given_lens_distortion_is_kept_and_used(tmp_path):
    """A rig file that gives k1 (by hand): recalibrating keeps it and registers undistorted frames."""
    from gasdb_tools.registration.distortion import RadialDistortion, undistort_points

    rig = SynthRig(seed=12, size=SIZE)
    lens = RadialDistortion(-0.05, SIZE)
    ys, xs = np.mgrid[0:SIZE[1], 0:SIZE[0]].astype(np.float64)
    u = undistort_points(np.stack([xs.ravel(), ys.ravel()], 1), lens).reshape(SIZE[1], SIZE[0], 2).astype(np.float32)

    class Distorted(SynthRig):
        def thermal(self, t):
            frame, mask = super().thermal(t)
            return cv2.remap(frame, u[..., 0], u[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), mask

    lensed = Distorted(seed=12, size=SIZE)
    ws = make_workspace(tmp_path / "ws", {"rec1": lensed, "rec2": lensed})
    path = calibration_path(ws, "rig-a")
    write_calibration(path, _example(rgb_size=SIZE, thermal_size=SIZE, distortion={"model": "radial", "k1": -0.05}))
    calibrate_workspace(ws, frames=8, force=True, figure=False)
    cal = read_calibration(path)
    assert cal.distortion["k1"] == -0.05 and cal.distortion["source"] == "given" and cal.lens().k1 == -0.05
    corners = reg.image_corners(SIZE)
    mapped = reg.transform_points(cal.matrix, undistort_points(corners, cal.lens()))
    truth = reg.transform_points(rig.homography, undistort_points(corners, lens))
    assert np.hypot(*(mapped - truth).T).mean() < 0.5
    th = lensed.thermal(1.0)[0]
    warped, valid = reg.warp_thermal(th, cal.matrix, SIZE, distortion=cal.lens())
    assert valid.mean() > 0.8


def test_calibrate_black_frames_writes_nothing(tmp_path, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=3, black=True)
    with pytest.raises(CalibrationError, match="rig 'rig-a'.*featureless"):
        calibrate_workspace(ws, frames=3)
    assert not (ws.root / "calibration").exists() or not any((ws.root / "calibration").iterdir())


def test_calibrate_unknown_rig_and_empty_workspace(tmp_path, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=1)
    with pytest.raises(WorkspaceError, match="no recordings use rig 'rig-b'"):
        calibrate_workspace(ws, rig="rig-b")
    empty = Workspace.init(tmp_path / "empty")
    with pytest.raises(WorkspaceError, match="no recordings"):
        calibrate_workspace(empty)
    with pytest.raises(ValueError, match="frames"):
        calibrate_workspace(ws, frames=0)


# ------------------------------------------------------------------------------------------------
# align
# ------------------------------------------------------------------------------------------------
def _copy_calibration(src_ws, dst_ws):
    src = calibration_path(src_ws, "rig-a")
    dst = calibration_path(dst_ws, "rig-a")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def test_align_workspace_outputs_and_index(tmp_path, calibrated, rig):
    """By default the annotation frame is the RGB frame at the camera's native size (no stretching)."""
    ws = make_workspace(tmp_path / "ws", {"rec1": rig, "rec2": rig}, pairs=2)
    _copy_calibration(calibrated[0], ws)
    report = align_workspace(ws)
    assert report["aligned"] == 4 and report["failed"] == 0
    assert [r["size"] for r in report["recordings"]] == [list(SIZE), list(SIZE)]
    cal = read_calibration(calibration_path(ws, "rig-a"))
    truth = output_matrix(rig.homography, SIZE, SIZE)
    for pair in ws.pairs():
        assert pair["aligned"] == f"aligned/{pair['recording']}/{pair['pair_id']}.png"
        assert pair["valid"] == f"aligned/{pair['recording']}/{pair['pair_id']}_valid.png"
        assert len(pair["align_digest"]) == 32 and len(pair["align_inputs"]) == 32
        aligned, valid = read_image(ws.path(pair["aligned"])), read_image(ws.path(pair["valid"]))
        assert aligned.dtype == np.uint16 and aligned.shape == (SIZE[1], SIZE[0])
        assert valid.dtype == np.uint8 and set(np.unique(valid)) <= {0, 255} and (valid == 255).mean() > 0.8
        assert (aligned[valid == 0] == 0).all()
        # the aligned frame is the thermal frame warped by the (accurate) calibration
        thermal = read_image(ws.path(pair["thermal"]))
        expected, exp_valid = reg.warp_thermal(thermal, truth, SIZE)
        both = (valid == 255) & exp_valid
        diff = np.abs(aligned.astype(np.float64) - expected)[both] / 257
        assert np.median(diff) < 1.0
        np.testing.assert_allclose(output_matrix(cal.matrix, SIZE, SIZE), truth, atol=0.6)
    for r in ws.recordings():
        frame = annotation_frame(ws, r)
        assert r["align_error"] == "" and frame.kind == "rgb" and frame.size == SIZE
        np.testing.assert_allclose(frame.matrix, cal.matrix / cal.matrix[2, 2], atol=1e-9)


def test_align_size_keeps_the_aspect_ratio_when_only_the_width_is_given(tmp_path, calibrated, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=1)
    _copy_calibration(calibrated[0], ws)
    report = align_workspace(ws, size=(160, None))
    assert report["recordings"][0]["size"] == [160, 128]
    assert read_image(ws.path(ws.pairs()[0]["aligned"])).shape == (128, 160)
    assert align_workspace(ws)["skipped"] == 1  # a rerun keeps the size the recording asked for


def test_align_is_resumable_and_follows_the_calibration(tmp_path, calibrated, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=2)
    _copy_calibration(calibrated[0], ws)
    assert align_workspace(ws)["aligned"] == 2
    again = align_workspace(ws)
    assert again["aligned"] == 0 and again["skipped"] == 2
    assert align_workspace(ws, force=True)["aligned"] == 2
    assert align_workspace(ws, size=(160, 128))["aligned"] == 2  # another size: redone
    assert read_image(ws.path(ws.pairs()[0]["aligned"])).shape == (128, 160)
    assert align_workspace(ws)["skipped"] == 2
    cal = read_calibration(calibration_path(ws, "rig-a"))
    shifted = Calibration(**{**cal.__dict__, "matrix": np.array([[1, 0, 1.0], [0, 1, 0], [0, 0, 1]]) @ cal.matrix})
    write_calibration(calibration_path(ws, "rig-a"), shifted)
    assert align_workspace(ws)["aligned"] == 2  # a new calibration: redone, at the size last asked for
    assert read_image(ws.path(ws.pairs()[0]["aligned"])).shape == (128, 160)
    write_calibration(calibration_path(ws, "rig-a"), Calibration(**{**shifted.__dict__, "created": "later"}))
    assert align_workspace(ws)["skipped"] == 2  # the same geometry in a rewritten file: nothing to redo


def test_align_missing_calibration_fails_that_recording_only(tmp_path, calibrated, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig, "rec2": rig}, pairs=1)
    _copy_calibration(calibrated[0], ws)
    with ws.transaction() as index:
        index.recordings["rec2"]["rig"] = "rig-b"
    report = align_workspace(ws)
    by_id = {r["id"]: r for r in report["recordings"]}
    assert report["failed"] == 1 and by_id["rec1"]["aligned"] == 1
    assert "no calibration for rig 'rig-b'" in by_id["rec2"]["error"]
    recs = {r["id"]: r for r in ws.recordings()}
    assert "gasdb calibrate" in recs["rec2"]["align_error"] and recs["rec1"]["align_error"] == ""
    assert annotation_frame(ws, recs["rec2"]) is None
    assert ws.pairs("rec2")[0].get("aligned", "") == ""


def test_align_rejects_frames_of_another_size(tmp_path, calibrated):
    other = SynthRig(seed=3, size=(256, 192))
    ws = make_workspace(tmp_path / "ws", {"rec1": other}, pairs=1)
    _copy_calibration(calibrated[0], ws)
    report = align_workspace(ws)
    assert report["failed"] == 1 and "256x192" in report["recordings"][0]["error"]
    with pytest.raises(ValueError, match="size"):
        align_workspace(ws, size=(8, 8))


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["calibrate", "align"])
def test_cli_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_cli_calibrate_and_align(tmp_path, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=3)
    runner = CliRunner()
    result = runner.invoke(main, ["calibrate", str(ws.root), "--frames", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["rigs"][0]["rig"] == "rig-a" and out["rigs"][0]["frames_used"] == 3
    result = runner.invoke(main, ["calibrate", str(ws.root)])
    assert result.exit_code == 0 and "--force" in result.output
    result = runner.invoke(main, ["align", str(ws.root), "--size", "160x128"])
    assert result.exit_code == 0 and "3 frames aligned" in result.output and "160x128" in result.output
    result = runner.invoke(main, ["align", str(ws.root), "--size", "big"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output


def test_cli_failures_exit_1(tmp_path, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=1)
    result = CliRunner().invoke(main, ["align", str(ws.root)])
    assert result.exit_code == 1 and "no calibration for rig 'rig-a'" in result.output
    black = make_workspace(tmp_path / "black", {"rec1": rig}, pairs=2, black=True)
    result = CliRunner().invoke(main, ["calibrate", str(black.root)])
    assert result.exit_code == 1 and "featureless" in result.output


def test_readme_example_is_a_valid_calibration():
    """calibration/README.md documents the format with an example; it must stay valid."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "calibration" / "README.md").read_text(encoding="utf-8")
    example = text.split("```json", 1)[1].split("```", 1)[0]
    cal = validate_calibration(json.loads(example), file="calibration/README.md")
    assert cal.model == "homography" and cal.rgb_size == (640, 512)
    assert set(json.loads(example)) == set(cal.to_dict())  # the example shows every key the writer writes


# ------------------------------------------------------------------------------------------------
# thermal-only recordings, staleness of a calibration, per-recording refinement
# ------------------------------------------------------------------------------------------------
def test_calibrate_leaves_thermal_only_recordings_out(tmp_path, rig):
    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=3)
    with ws.transaction() as index:  # rec1 becomes a thermal camera alone
        index.recordings["rec1"]["rgb"] = ""
    report = calibrate_workspace(ws, frames=3)
    assert report["rigs"] == [] and "nothing to calibrate" in report["note"]
    result = CliRunner().invoke(main, ["calibrate", str(ws.root)])
    assert result.exit_code == 0 and "nothing to calibrate" in result.output
    from gasdb_tools.status import workspace_status

    (row,) = workspace_status(ws)["recordings"]
    assert row["calibration"] == {"rig": "n/a", "refinement": "n/a"} and row["stages"]["align"] == {"n/a": 3,
                                                                                                     "note": row["stages"]["align"]["note"]}


def test_a_calibration_is_stale_once_its_frames_change(tmp_path, calibrated):
    from gasdb_tools.calibration import calibration_state
    from gasdb_tools.status import workspace_status

    ws, _ = calibrated
    cal = read_calibration(calibration_path(ws, "rig-a"))
    assert calibration_state(ws, cal) == ("done", "")
    used = next(f["pair_id"] for f in cal.source_frames if f["used"])
    with ws.transaction() as index:
        index.pairs[used]["extract_digest"] = "0" * 32  # its frames were extracted again, differently
    cal = Calibration(**{**cal.__dict__, "source_frames": [{**f, "extract_digest": "f" * 32} if f["pair_id"] == used
                                                           else f for f in cal.source_frames]})
    state, why = calibration_state(ws, cal)
    assert state == "stale" and used in why
    write_calibration(calibration_path(ws, "rig-a"), cal)
    row = workspace_status(ws)["recordings"][0]
    assert row["calibration"]["rig"] == "stale" and f"gasdb calibrate {ws.root} --force" in row["next"]
    with ws.transaction() as index:
        index.pairs[used]["extract_digest"] = "f" * 32
    assert calibration_state(ws, read_calibration(calibration_path(ws, "rig-a")))[0] == "done"


def test_per_recording_refinement_absorbs_a_recordings_shift_and_align_uses_it(tmp_path, rig):
    """rec2 sees the scene 3 px right and 2 px up of the rig (another depth plane): its refinement
    recovers that shift, align warps with it, and a recalibration of the rig makes it stale."""
    from gasdb_tools.align import expected_geometry
    from gasdb_tools.calibration import current_refinement, refine_recordings
    from gasdb_tools.status import workspace_status

    shift = np.array([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]])
    moved = SynthRig(seed=12, size=SIZE, rig_homography=shift @ rig.homography)
    ws = make_workspace(tmp_path / "ws", {"rec1": rig, "rec2": moved}, pairs=6)
    with ws.transaction() as index:  # the rig is calibrated on rec1 alone
        index.recordings["rec2"]["rig"] = "elsewhere"
    calibrate_workspace(ws, frames=6, rig="rig-a", figure=False)
    with ws.transaction() as index:
        index.recordings["rec2"]["rig"] = "rig-a"
    cal = read_calibration(calibration_path(ws, "rig-a"))
    report = refine_recordings(ws, recordings=["rec2"], frames=6)
    (entry,) = report["recordings"]
    assert entry["error"] is None and entry["score"] >= entry["score_rig"]
    refined, state = current_refinement(ws, ws.recording("rec2"), cal)
    assert state == "current"
    truth = shift @ rig.homography
    rig_err = reg.corner_error(cal.matrix, truth, SIZE)
    ref_err = reg.corner_error(refined, truth, SIZE)
    assert rig_err > 3 and ref_err < 0.5, (rig_err, ref_err)
    np.testing.assert_allclose(expected_geometry(ws, ws.recording("rec2")).matrix, refined / refined[2, 2], atol=1e-9)
    assert (ws.root / "calibration" / "recordings" / "rec2_qa.png").is_file()
    # a recalibration of the rig: the refinement is kept on disk but not used, and status says what to run
    write_calibration(calibration_path(ws, "rig-a"),
                      Calibration(**{**cal.__dict__, "matrix": np.array([[1, 0, 0.5], [0, 1, 0], [0, 0, 1]]) @ cal.matrix}))
    cal2 = read_calibration(calibration_path(ws, "rig-a"))
    assert current_refinement(ws, ws.recording("rec2"), cal2) == (None, "stale")
    rec2 = next(r for r in workspace_status(ws)["recordings"] if r["id"] == "rec2")
    assert rec2["calibration"]["refinement"] == "stale"
    assert any("--per-recording --recording rec2" in c for c in rec2["next"])


def test_align_warps_through_the_rig_files_lens_distortion(tmp_path, calibrated, rig):
    from gasdb_tools.registration import RadialDistortion

    ws = make_workspace(tmp_path / "ws", {"rec1": rig}, pairs=1)
    _copy_calibration(calibrated[0], ws)
    cal = read_calibration(calibration_path(ws, "rig-a"))
    lens = RadialDistortion(-0.05, tuple(cal.thermal_size))
    write_calibration(calibration_path(ws, "rig-a"),
                      Calibration(**{**cal.__dict__, "distortion": {**lens.to_dict(), "source": "given"}}))
    align_workspace(ws)
    frame = annotation_frame(ws, ws.recording("rec1"))
    assert frame.lens_k1 == -0.05
    pair = ws.pairs()[0]
    expected, _ = reg.warp_thermal(read_image(ws.path(pair["thermal"])), frame.matrix, frame.size, distortion=lens)
    np.testing.assert_array_equal(read_image(ws.path(pair["aligned"])), expected)
    write_calibration(calibration_path(ws, "rig-a"), cal)  # the distortion removed: every pair is stale
    assert align_workspace(ws)["aligned"] == 1
