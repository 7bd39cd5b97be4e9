"""The preannotate stage: LabelMe drafts, provenance, resumability, never overwriting edits; gasdb label."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import shared_data

from gasdb_tools import background as bg
from gasdb_tools import labelme_format
from gasdb_tools.cli import main
from gasdb_tools.cli import preannotate_cmds
from gasdb_tools.imaging import read_image, write_image
from gasdb_tools.metrics import confusion, scores
from gasdb_tools import review
from gasdb_tools.align import Geometry
from gasdb_tools.preannotate import preannotate_workspace
from gasdb_tools.review import content_hash
from gasdb_tools.synth import SynthRig
from gasdb_tools.fsutil import sha256_file
from gasdb_tools.video import write_video
from gasdb_tools.workspace import Workspace, make_pair_id

SIZE = (160, 128)  # (width, height)
FPS = 10.0
N_FRAMES = 40


def _make_workspace(tmp_path, *, aligned=False, sixteen_bit=False, contrast=24.0, polarity="emitting", every=1,
                    n_frames=N_FRAMES):
    """A workspace with one recording of the simulated rig: its thermal video (lossless FFV1, 10 fps)
    and every ``every``-th frame extracted as a pair (written directly, as ``gasdb extract`` would).

    With ``aligned`` the thermal frames are also written as 'aligned' frames with a valid mask
    whose left 8 columns are invalid (the rig's homography is the identity here: the test checks
    the bookkeeping, registration has its own tests).
    """
    ws = Workspace.init(tmp_path / "ws")
    rig = SynthRig(seed=3, size=SIZE, contrast=contrast, polarity=polarity, distractors=False, sync_lamp=False,
                   leak_start_s=1.5)
    frames, masks = [], []
    for k in range(n_frames):
        frame, mask = rig.thermal(k / FPS)
        frames.append(frame.astype(np.uint16) * 64 + 1000 if sixteen_bit else frame)
        masks.append(mask)
    video_path = tmp_path / "thermal.mkv"
    write_video(video_path, frames, fps=FPS, codec="ffv1")
    truth, rows = {}, {}
    for k in range(0, n_frames, every):
        t = k / FPS
        frame = frames[k]
        pid = make_pair_id("rec1", t + 0.5)
        th = ws.output_path("frames", "rec1", f"{pid}.png", sub="thermal")
        rgb = ws.output_path("frames", "rec1", f"{pid}.png", sub="rgb")
        write_image(th, frame)
        write_image(rgb, np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
        row = {"pair_id": pid, "recording": "rec1", "t_rgb": repr(t + 0.5), "t_thermal": repr(t), "dt": "0.0",
               "rgb": ws.rel(rgb), "thermal": ws.rel(th)}
        if aligned:
            al = ws.output_path("aligned", "rec1", f"{pid}.png")
            valid = np.full(frame.shape, 255, np.uint8)
            valid[:, :8] = 0
            write_image(al, np.where(valid > 0, frame, 0).astype(frame.dtype))
            write_image(ws.output_path("aligned", "rec1", f"{pid}_valid.png"), valid)
            row["aligned"] = ws.rel(al)
            row["valid"] = ws.rel(ws.output_path("aligned", "rec1", f"{pid}_valid.png"))
        rows[pid] = row
        truth[pid] = masks[k]
    with ws.transaction() as index:
        index.recordings["rec1"] = {"id": "rec1", "rgb": "rgb.mp4", "thermal": str(video_path), "scene": "near",
                                    "tags": "leak", "thermal_sha256": sha256_file(video_path),
                                    "thermal_size": f"{SIZE[0]}x{SIZE[1]}"}
        index.pairs.update(rows)
    if aligned:
        _set_geometry(ws, Geometry("rgb", SIZE, _VALID_FROM_8))
    return ws, truth


#: A thermal-to-frame transform under which the frame's left 8 columns come from outside the thermal view.
_VALID_FROM_8 = np.array([[1.0, 0.0, 8.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _states(ws):
    return review.read_states(ws)


def _read_back_counts(ws):
    """Review counts from the documents on disk (what the report counts without reading them back)."""
    ids = sorted(ws.read_index().pairs)
    return review.counts(review.read_states(ws, pairs=ids), ids)


def _draft_mask(ws, pid):
    row = ws.read_index().pairs[pid]
    doc = labelme_format.read(ws.path(row["label"]))
    return labelme_format.rasterize(doc) == 1


def test_drafts_are_written_with_provenance_and_find_the_plume(tmp_path):
    ws, truth = _make_workspace(tmp_path)
    report = preannotate_workspace(ws)
    assert report["failed"] == 0 and report["written"] == N_FRAMES
    rec = report["recordings"][0]
    assert rec["frame"] == "thermal" and rec["written"] == N_FRAMES
    index = ws.read_index()
    states = _states(ws)
    cm = np.zeros((2, 2), np.int64)
    for pid, row in index.pairs.items():
        assert row["label"] == f"labels/rec1/{pid}.json" and states[pid].status == "pending"
        assert states[pid].untouched and row["preannotate_inputs"] == states[pid].draft_inputs
        doc = labelme_format.read(ws.path(row["label"]))
        meta = doc["gasdb"]
        assert meta["pair_id"] == pid and meta["frame"] == "thermal" and meta["review"]["status"] == "pending"
        assert meta["preannot"]["method"] == "gas" and meta["preannot"]["content_sha256"] == content_hash(doc)
        assert meta["preannot"]["params"]["lead_in_s"] == 1.0 and "k" in meta["preannot"]["params"]
        assert doc["imageData"] is None and (doc["imageHeight"], doc["imageWidth"]) == (SIZE[1], SIZE[0])
        assert all(s["label"] == "gas" and s["shape_type"] == "polygon" for s in doc["shapes"])
        # 8-bit source frames: LabelMe opens the frame itself (relative path from the JSON's folder)
        image, tried = labelme_format.image_file(doc, ws.path(row["label"]))
        assert image.resolve() == ws.path(row["thermal"]).resolve()
        cm += confusion(truth[pid], _draft_mask(ws, pid))
    gas = scores(cm)["gas"]
    assert gas["iou"] > 0.5, gas  # an emitting plume of contrast 24 on a simulated scene: drafts to correct


def test_lead_in_frames_are_gas_free_drafts(tmp_path):
    ws, truth = _make_workspace(tmp_path)
    preannotate_workspace(ws, lead_in_s=1.0)
    pids = sorted(truth)
    early = [pid for pid in pids[:10] if not truth[pid].any()]
    assert early
    assert sum(int(_draft_mask(ws, pid).sum()) for pid in early) == 0


def test_edits_are_never_overwritten_with_or_without_force(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    index = ws.read_index()
    pids = sorted(index.pairs)
    edited_pid, flagged_pid, untouched_pid = pids[20], pids[25], pids[30]
    # an annotator redraws one frame's shapes ...
    path = ws.path(index.pairs[edited_pid]["label"])
    doc = labelme_format.read(path)
    doc["shapes"] = [labelme_format.make_shape([[10, 10], [60, 10], [60, 40], [10, 40]])]
    labelme_format.write(doc, path)
    edited_bytes = path.read_bytes()
    # ... and only ticks a flag on another
    path2 = ws.path(index.pairs[flagged_pid]["label"])
    doc2 = labelme_format.read(path2)
    doc2["flags"]["no_leak"] = True
    labelme_format.write(doc2, path2)
    flagged_bytes = path2.read_bytes()
    untouched = ws.path(index.pairs[untouched_pid]["label"])
    untouched_bytes = untouched.read_bytes()

    rerun = preannotate_workspace(ws)  # resumable: nothing to do
    assert rerun["written"] == 0 and rerun["kept_edited"] == 2
    assert rerun["review"] == _read_back_counts(ws) == {"pending": N_FRAMES - 2, "edited": 2, "approved": 0,
                                                         "recheck": 0, "unlabelled": 0}
    assert rerun["recordings"][0]["skipped"] == N_FRAMES - 2
    forced = preannotate_workspace(ws, force=True, k=3.0)  # replaces untouched drafts only
    assert forced["written"] == N_FRAMES - 2 and forced["kept_edited"] == 2
    assert forced["review"] == _read_back_counts(ws)
    assert path.read_bytes() == edited_bytes and path2.read_bytes() == flagged_bytes
    redone = labelme_format.read(untouched)
    assert redone["gasdb"]["preannot"]["params"]["k"] == 3.0 and untouched.read_bytes() != untouched_bytes
    states = _states(ws)
    assert states[edited_pid].status == "edited" and states[flagged_pid].status == "edited"
    assert states[untouched_pid].status == "pending"


def test_review_status_and_unknown_files_protect_drafts(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    index = ws.read_index()
    pids = sorted(index.pairs)
    # approved by ticking the flag (LabelMe), a status written in the JSON, a foreign file, a broken file
    paths = [ws.path(index.pairs[p]["label"]) for p in pids[1:5]]
    doc = labelme_format.read(paths[0])
    doc["flags"]["approved"] = True
    labelme_format.write(doc, paths[0])
    doc = labelme_format.read(paths[1])
    doc["gasdb"]["review"]["status"] = "edited"
    labelme_format.write(doc, paths[1])
    labelme_format.write(labelme_format.new_document("x.png", SIZE[1], SIZE[0]), paths[2])
    paths[3].write_text("{not json")
    before = {p: p.read_bytes() for p in paths}
    report = preannotate_workspace(ws, force=True)
    assert report["kept_edited"] == 4
    assert all(p.read_bytes() == b for p, b in before.items())
    states = _states(ws)
    assert [states[p].status for p in pids[1:5]] == ["approved", "edited", "edited", "edited"]
    assert states[pids[4]].error  # unreadable: reported, never overwritten


@pytest.mark.parametrize("change", ["description", "shape_flag", "annotator", "note"])
def test_force_keeps_every_kind_of_annotator_edit(tmp_path, change):
    """Descriptions, per-shape flags and review fields are edits too: --force replaces none of them."""
    ws, truth = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    pid = next(p for p in sorted(truth) if truth[p].any() and labelme_format.read(
        ws.path(ws.read_index().pairs[p]["label"]))["shapes"])
    path = ws.path(ws.read_index().pairs[pid]["label"])
    doc = labelme_format.read(path)
    if change == "description":
        doc["shapes"][0]["description"] = "faint edge, unsure"
    elif change == "shape_flag":
        doc["shapes"][0]["flags"] = {"occluded": True}
    elif change == "annotator":
        doc["gasdb"]["review"]["annotator"] = "ana"
    else:
        doc["gasdb"]["review"]["note"] = "check the left edge"
    labelme_format.write(doc, path)
    before = path.read_bytes()
    report = preannotate_workspace(ws, force=True, k=3.0)
    assert report["kept_edited"] == 1 and path.read_bytes() == before
    assert _states(ws)[pid].status == "edited"


def test_a_save_between_planning_and_writing_is_never_lost(tmp_path, monkeypatch):
    """Compare-and-swap: 50 runs, each with an annotator save injected just before the draft is written."""
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    pids = sorted(ws.read_index().pairs)
    real_write = review.write_document
    saved = {}

    def save_then_write(ws_, path, doc, *, expected):
        pid = doc["gasdb"]["pair_id"]
        if pid == target and pid not in saved:  # the annotator's autosave lands first
            mine = labelme_format.read(path) if path.exists() else labelme_format.new_document(
                "x.png", SIZE[1], SIZE[0])
            mine["shapes"] = [labelme_format.make_shape([[5, 5], [30, 5], [30, 25]])]
            labelme_format.write(mine, path)
            saved[pid] = path.read_bytes()
        return real_write(ws_, path, doc, expected=expected)

    monkeypatch.setattr(review, "write_document", save_then_write)
    lost = 0
    for run in range(50):
        target = pids[run % len(pids)]
        if run >= len(pids):  # its document is annotator work by now: start again from no file at all
            ws.path(ws.read_index().pairs[target]["label"]).unlink()
        saved.clear()
        report = preannotate_workspace(ws, force=True, k=4.0 + 0.01 * run)
        path = ws.path(ws.read_index().pairs[target]["label"])
        assert target in saved and report["changed_meanwhile"] == 1
        lost += path.read_bytes() != saved[target]
    assert lost == 0


def test_recalibration_reprojects_edited_documents_exactly(tmp_path):
    """A new geometry re-projects an annotator's shapes through the change of transform (< 0.01 px)."""
    ws, _ = _make_workspace(tmp_path, aligned=True)
    old = Geometry("rgb", SIZE, np.eye(3))
    _set_geometry(ws, old)
    preannotate_workspace(ws)
    pids = sorted(ws.read_index().pairs)
    edited, approved, untouched = pids[20], pids[21], pids[22]
    poly = [[20.25, 30.5], [80.0, 28.0], [90.5, 70.75], [25.0, 75.0]]
    for pid, flag in ((edited, False), (approved, True)):
        path = ws.path(ws.read_index().pairs[pid]["label"])
        doc = labelme_format.read(path)
        doc["shapes"] = [labelme_format.make_shape(poly)]
        doc["flags"]["approved"] = flag
        labelme_format.write(doc, path)
    new = Geometry("rgb", SIZE, np.array([[1.01, 0.02, 3.5], [-0.015, 0.99, -2.25], [0.0, 0.0, 1.0]]))
    _set_geometry(ws, new)
    report = preannotate_workspace(ws)
    assert report["reprojected"] == 2
    assert report["review"] == _read_back_counts(ws) and report["review"]["recheck"] == 2
    change = new.matrix @ np.linalg.inv(old.matrix)
    expected = np.c_[poly, np.ones(4)] @ change.T
    states = _states(ws)
    for pid in (edited, approved):
        path = ws.path(ws.read_index().pairs[pid]["label"])
        doc = labelme_format.read(path)
        np.testing.assert_allclose(doc["shapes"][0]["points"], expected[:, :2] / expected[:, 2:], atol=0.01)
        assert doc["gasdb"]["geometry"]["key"] == new.key and doc["gasdb"]["reprojections"][0]["from"] == old.key
        assert (path.parent / ".history").is_dir()
        assert states[pid].recheck and states[pid].status == "edited"  # approval withdrawn until re-checked
    assert states[untouched].untouched and states[untouched].geometry == new.key  # drafts are simply redone
    assert preannotate_workspace(ws)["reprojected"] == 0  # idempotent


def _set_geometry(ws, geometry):
    import json as _json

    with ws.transaction() as idx:
        idx.recordings["rec1"]["align_geometry"] = _json.dumps(geometry.to_dict())


def test_aligned_frames_16_bit_view_and_valid_mask(tmp_path):
    ws, truth = _make_workspace(tmp_path, aligned=True, sixteen_bit=True)
    report = preannotate_workspace(ws)
    assert report["recordings"][0]["frame"] == "aligned"
    index = ws.read_index()
    any_gas = False
    for pid, row in index.pairs.items():
        path = ws.path(row["label"])
        doc = labelme_format.read(path)
        assert doc["gasdb"]["frame"] == "aligned"
        image, _ = labelme_format.image_file(doc, path)
        assert image.parent == ws.root / "labels" / "rec1" / "images"
        view = read_image(image)
        assert view.dtype == np.uint8 and view.shape == (SIZE[1], SIZE[0])
        mask = _draft_mask(ws, pid)
        assert not mask[:, :8].any()  # invalid (outside the aligned thermal image) is never gas
        any_gas |= bool(mask.any())
    assert any_gas


def test_thermal_drafts_are_redone_once_aligned(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    index = ws.read_index()
    with ws.transaction() as idx:  # align the pairs afterwards (identity warp)
        for pid, row in idx.pairs.items():
            row["aligned"] = row["thermal"]
    _set_geometry(ws, Geometry("rgb", SIZE, np.eye(3)))
    report = preannotate_workspace(ws)
    assert report["written"] == len(index.pairs)
    doc = labelme_format.read(ws.path(ws.read_index().pairs[sorted(index.pairs)[0]]["label"]))
    assert doc["gasdb"]["frame"] == "aligned"


def test_enhanced_frame_is_what_the_annotator_sees(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    with ws.transaction() as idx:
        for pid, row in idx.pairs.items():
            out = ws.output_path("enhanced", "rec1", f"{pid}.png")
            write_image(out, np.full((SIZE[1], SIZE[0]), 128, np.uint8))
            row["enhanced"] = ws.rel(out)
            row["enhanced_source"] = "thermal"
    preannotate_workspace(ws)
    row = ws.read_index().pairs[sorted(ws.read_index().pairs)[0]]
    path = ws.path(row["label"])
    doc = labelme_format.read(path)
    assert doc["imagePath"] == f"../../enhanced/rec1/{row['pair_id']}.png"
    assert labelme_format.image_file(doc, path)[0].is_file()


def test_flagged_frames_are_excluded_as_long_as_the_flag_is_ticked(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    pid = sorted(ws.read_index().pairs)[12]
    path = ws.path(ws.read_index().pairs[pid]["label"])
    doc = labelme_format.read(path)
    doc["flags"]["water_spray"] = True
    labelme_format.write(doc, path)
    assert "water spray" in review.exclusions(ws)[pid]
    c = review.counts(_states(ws))
    assert (c["edited"], c["pending"]) == (1, N_FRAMES - 1)
    doc["flags"]["water_spray"] = False
    labelme_format.write(doc, path)
    assert pid not in review.exclusions(ws)


def test_per_recording_failure_is_recorded_and_others_carry_on(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    with ws.transaction() as idx:
        idx.recordings["rec2"] = {"id": "rec2", "rgb": "x.mp4", "thermal": "y.mp4", "scene": "far"}
        idx.pairs["rec2_00000000"] = {"pair_id": "rec2_00000000", "recording": "rec2", "t_rgb": "0.0",
                                      "t_thermal": "0.0", "dt": "0.0", "rgb": "frames/rec2/rgb/a.png",
                                      "thermal": "frames/rec2/thermal/missing.png"}
    report = preannotate_workspace(ws)
    assert report["failed"] == 1 and report["written"] == N_FRAMES
    recs = ws.read_index().recordings
    assert "image file not found" in recs["rec2"]["preannotate_error"] and recs["rec1"]["preannotate_error"] == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "vibe"}, "method must be one of"),
    ({"lead_in": 10}, "lead_in_s"),
    ({"k": -1}, "k must be in"),
    ({"polarity": "hot"}, "polarity must be one of"),
    ({"mode": "brush"}, "mode must be one of"),
    ({"bogus": 1}, "unknown parameter"),
    ({"preset": "boxes"}, "preset must be one of"),
    ({"method": "mog2", "preset": "extent"}, "presets are parameter sets"),
    ({"preset": "extent", "hold": 0}, "hold must be"),
])
def test_bad_options_fail_before_writing(tmp_path, kwargs, message):
    ws, _ = _make_workspace(tmp_path)
    with pytest.raises((ValueError, TypeError), match=message):
        preannotate_workspace(ws, **kwargs)
    assert not (ws.root / "labels").exists()


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def test_cli_preannotate_json_and_exit_codes(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["preannotate", str(ws.root), "--polarity", "emitting", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["written"] == N_FRAMES and report["params"]["polarity"] == "emitting"
    result = runner.invoke(main, ["preannotate", str(ws.root), "--polarity", "emitting"])
    assert result.exit_code == 0 and "0 written" in result.output and f"{N_FRAMES} up to date" in result.output
    result = runner.invoke(main, ["preannotate", str(ws.root), "--polarity", "absorbing"])  # other parameters
    assert result.exit_code == 0 and f"{N_FRAMES} written" in result.output
    result = runner.invoke(main, ["preannotate", str(ws.root), "--param", "k=nope"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["preannotate", str(ws.root), "--recording", "nope"])
    assert result.exit_code == 1 and "no recording 'nope'" in result.output


def test_cli_preset_is_applied_overridable_and_recorded(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    result = CliRunner().invoke(main, ["preannotate", str(ws.root), "--preset", "extent", "--param", "hold=3",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["preset"] == "extent" and report["written"] == N_FRAMES
    assert report["params"]["hold"] == 3
    assert report["params"]["activity_ratio"] == bg.PRESETS["extent"].activity_ratio
    doc = labelme_format.read(ws.path(next(iter(ws.read_index().pairs.values()))["label"]))
    assert doc["gasdb"]["preannot"]["preset"] == "extent" and doc["gasdb"]["preannot"]["params"]["hold"] == 3
    result = CliRunner().invoke(main, ["preannotate", str(ws.root), "--preset", "boxes"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["preannotate", str(ws.root), "--method", "knn", "--preset", "extent"])
    assert result.exit_code == 2 and "presets are parameter sets" in result.output


def test_cli_preset_choices_are_the_library_presets():
    from gasdb_tools.cli.preannotate_cmds import preannotate

    option = next(p for p in preannotate.params if p.name == "preset")
    assert tuple(option.type.choices) == tuple(bg.PRESETS)


def test_labelme_command_line(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    config = tmp_path / "labelme.yaml"
    config.write_text("auto_save: true\n")
    cmd = preannotate_cmds.labelme_command(ws, "rec1", config=config, executable="labelme")
    assert cmd[0] == "labelme"
    assert cmd[1] == str(ws.root / "frames" / "rec1" / "thermal")  # the folder of the images the drafts show
    assert cmd[cmd.index("--output") + 1] == str(ws.root / "labels" / "rec1")
    assert cmd[cmd.index("--config") + 1] == str(config)
    assert "--nodata" not in cmd  # removed in LabelMe 7: the config carries store_data / auto_save


def test_label_without_labelme_says_how_to_install(tmp_path, monkeypatch):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    monkeypatch.setattr(preannotate_cmds, "_find_labelme", lambda: None)
    result = CliRunner().invoke(main, ["label", str(ws.root)])
    assert result.exit_code == 1
    assert "pip install 'gasdb-tools[label]'" in result.output


def test_label_runs_the_app_and_refreshes_review(tmp_path, monkeypatch):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    pid = sorted(ws.read_index().pairs)[15]
    calls = []

    def fake_run(cmd, check=False):
        calls.append(cmd)
        path = ws.path(ws.read_index().pairs[pid]["label"])  # the "annotator" edits one frame
        doc = labelme_format.read(path)
        doc["shapes"] = [labelme_format.make_shape([[5, 5], [30, 5], [30, 20]])]
        labelme_format.write(doc, path)

        class Done:
            returncode = 0
        return Done()

    monkeypatch.setattr(preannotate_cmds, "_find_labelme", lambda: sys.executable)
    monkeypatch.setattr(preannotate_cmds.subprocess, "run", fake_run)
    result = CliRunner().invoke(main, ["label", str(ws.root), "--recording", "rec1"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0][0] == sys.executable
    assert _states(ws)[pid].status == "edited"
    assert "1 edited" in result.output


def test_recording_polarity_is_used_unless_given(tmp_path):
    ws, _ = _make_workspace(tmp_path, polarity="absorbing")
    with ws.transaction() as idx:
        idx.recordings["rec1"]["tags"] = "leak;absorbing"
    report = preannotate_workspace(ws)
    assert report["recordings"][0]["polarity"] == "absorbing"
    doc = labelme_format.read(ws.path(ws.read_index().pairs[sorted(ws.read_index().pairs)[-1]]["label"]))
    assert doc["gasdb"]["preannot"]["params"]["polarity"] == "absorbing"
    report = preannotate_workspace(ws, force=True, polarity="both")
    assert report["recordings"][0]["polarity"] == "both"


@pytest.mark.parametrize("mode", ["polygon", "mask"])
def test_labelme_reads_drafts_and_an_unchanged_save_keeps_them_drafts(tmp_path, mode):
    """Round trip through LabelMe's own reader and writer (the app's save path, without Qt)."""
    lf = pytest.importorskip("labelme._label_file")
    utils = pytest.importorskip("labelme.utils")
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws, mode=mode)
    row = ws.read_index().pairs[sorted(ws.read_index().pairs)[-1]]
    path = ws.path(row["label"])
    data = lf.read_label_file(str(path))  # finds the image, checks its size
    assert data.image_path == labelme_format.read(path)["imagePath"] and data.shapes
    shapes = []
    for s in data.shapes:  # as labelme's app.save_labels / _shape_to_dict write them
        d = dict(s["other_data"])
        d.update(label=s["label"], points=[(float(x), float(y)) for x, y in s["points"]], group_id=s["group_id"],
                 description=s["description"], shape_type=s["shape_type"], flags=s["flags"],
                 mask=None if s["mask"] is None else utils.img_arr_to_b64(s["mask"].astype(np.uint8)))
        shapes.append(d)
    lf.write_label_file(str(path), shapes=shapes, image_path=data.image_path, image_height=SIZE[1],
                        image_width=SIZE[0], other_data=data.other_data, flags=data.flags)
    assert _states(ws)[row["pair_id"]].untouched
    shapes[0]["points"][0] = (shapes[0]["points"][0][0] + 1.0, shapes[0]["points"][0][1])
    lf.write_label_file(str(path), shapes=shapes, image_path=data.image_path, image_height=SIZE[1],
                        image_width=SIZE[0], other_data=data.other_data, flags=data.flags)
    assert _states(ws)[row["pair_id"]].status == "edited"


def test_generic_method_and_mask_mode(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    report = preannotate_workspace(ws, method="mog2", mode="mask", history=20)
    assert report["written"] == N_FRAMES and report["params"]["history"] == 20 and "lead_in_s" not in report["params"]
    docs = [labelme_format.read(ws.path(r["label"])) for r in ws.read_index().pairs.values()]
    assert {d["gasdb"]["preannot"]["method"] for d in docs} == {"mog2"}
    assert {s["shape_type"] for d in docs for s in d["shapes"]} <= {"mask"}


# ------------------------------------------------------------------------------------------
# the dense thermal stream
# ------------------------------------------------------------------------------------------
def test_drafts_do_not_depend_on_how_sparsely_pairs_were_extracted(tmp_path):
    """Every frame of the video goes through the model: a pair's draft is the same whether the
    pairs were extracted at every frame or every 4th."""
    dense_ws, _ = _make_workspace(tmp_path / "a")
    sparse_ws, truth = _make_workspace(tmp_path / "b", every=4)
    preannotate_workspace(dense_ws)
    report = preannotate_workspace(sparse_ws)
    assert report["recordings"][0]["frames_decoded"] == N_FRAMES and report["written"] == N_FRAMES // 4
    assert any(truth[p].any() for p in truth)
    for pid in truth:
        assert np.array_equal(_draft_mask(sparse_ws, pid), _draft_mask(dense_ws, pid)), pid


def test_thermal_stream_keeps_to_its_thread_budget(tmp_path):
    """One thread: decoded in the caller's thread (a recording keeps one core busy, --jobs N uses N
    cores); more: decoded ahead beside the model. The frames are the same."""
    import threading

    from gasdb_tools.preannotate import thermal_stream

    ws, _ = _make_workspace(tmp_path)
    rec = ws.read_index().recordings["rec1"]
    runs = {}
    for threads in (1, 2, None):
        before = threading.active_count()
        out, peak = [], 0
        for t, frame in thermal_stream(ws, rec, threads=threads):
            out.append((t, frame))
            peak = max(peak, threading.active_count())
        runs[threads] = out
        assert (peak == before) == (threads == 1), threads
    assert len(runs[1]) == N_FRAMES
    for threads in (2, None):
        assert [t for t, _ in runs[threads]] == [t for t, _ in runs[1]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[threads], runs[1]))
    with pytest.raises(ValueError, match="threads"):
        thermal_stream(ws, rec, threads=0)


def test_recipe_names_the_video_the_pair_times_and_the_geometry(tmp_path):
    from gasdb_tools.status import workspace_status

    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    pre = workspace_status(ws)["recordings"][0]["stages"]["preannotate"]
    assert pre.get("done") == N_FRAMES and not pre.get("stale")
    doc = labelme_format.read(ws.path(next(iter(ws.read_index().pairs.values()))["label"]))
    assert doc["gasdb"]["preannot"]["thermal_sha256"] == ws.read_index().recordings["rec1"]["thermal_sha256"]
    assert doc["gasdb"]["preannot"]["stream"] == "thermal video, every frame"
    with ws.transaction() as idx:  # the recording now points at another video: every draft is stale
        idx.recordings["rec1"]["thermal_sha256"] = "0" * 64
    assert workspace_status(ws)["recordings"][0]["stages"]["preannotate"].get("stale") == N_FRAMES
    assert preannotate_workspace(ws)["written"] == N_FRAMES
    with ws.transaction() as idx:  # a pair's time changes (re-extracted): stale again
        pid = sorted(idx.pairs)[3]
        idx.pairs[pid]["t_thermal"] = repr(3 / FPS + 1e-6)
    assert workspace_status(ws)["recordings"][0]["stages"]["preannotate"].get("stale") == N_FRAMES


def test_a_missing_video_fails_the_recording_and_says_where(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    Path(ws.read_index().recordings["rec1"]["thermal"]).unlink()
    report = preannotate_workspace(ws)
    assert report["failed"] == 1 and report["written"] == 0
    error = report["recordings"][0]["error"]
    assert "thermal video not found" in error and "thermal.mkv" in error and "put the video back" in error
    assert not (ws.root / "labels").exists()


def test_another_video_than_the_pairs_came_from_is_refused(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    video = Path(ws.read_index().recordings["rec1"]["thermal"])
    frames = [np.full((SIZE[1], SIZE[0]), 40 + k, np.uint8) for k in range(N_FRAMES)]
    write_video(video, frames, fps=FPS, codec="ffv1")
    report = preannotate_workspace(ws)
    assert report["failed"] == 1 and "differs from the extracted frame" in report["recordings"][0]["error"]
    assert "gasdb extract --force" in report["recordings"][0]["error"]


def test_masks_are_made_at_native_size_and_warped_into_the_annotation_frame(tmp_path):
    """An annotation frame twice the thermal size (a 640x512 RGB camera over a 320x256 thermal one):
    the model runs on the thermal frames, the draft is the mask warped by the geometry."""
    from gasdb_tools import dense
    from gasdb_tools.background import GasSubtractor
    from gasdb_tools.video import iter_frames

    ws, truth = _make_workspace(tmp_path, aligned=True)
    scale = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    big = (SIZE[0] * 2, SIZE[1] * 2)
    _set_geometry(ws, Geometry("rgb", big, scale))
    preannotate_workspace(ws)
    index = ws.read_index()
    rows = sorted(index.pairs.values(), key=lambda r: float(r["t_thermal"]))
    native = dict(dense.pair_masks(iter_frames(index.recordings["rec1"]["thermal"], gray=True),
                                   [float(r["t_thermal"]) for r in rows], subtractor=GasSubtractor(params=bg.GasParams(
                                       polarity="both")), lead_in_s=1.0))
    checked = 0
    for i, r in enumerate(rows):
        draft = _draft_mask(ws, r["pair_id"])
        assert draft.shape == (big[1], big[0])
        if native[i].sum() < 200:
            continue
        up = cv2.resize(native[i].astype(np.uint8), big, interpolation=cv2.INTER_NEAREST).astype(bool)
        assert (draft & up).sum() / (draft | up).sum() > 0.9  # polygons of the upsampled native mask
        checked += 1
    assert checked >= 5


def test_memory_stays_flat_with_recording_length():
    """pair_masks holds the lead-in and the model's state, never the stream."""
    import tracemalloc

    from gasdb_tools import dense
    from gasdb_tools.background import GasSubtractor

    def stream(n):
        rng = np.random.default_rng(0)
        for k in range(n):
            yield k / 25, rng.normal(100, 1, (120, 160)).astype(np.float32)

    peaks = []
    for n in (100, 800):
        tracemalloc.start()
        for _ in dense.pair_masks(stream(n), [k / 25 for k in range(0, n, 13)], subtractor=GasSubtractor(),
                                  lead_in_s=1.0):
            pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0], peaks  # 8x the frames, about the same peak
    assert peaks[1] < 0.2 * 800 * 120 * 160 * 4  # far less than the 800 frames (the 1 s lead-in is held)


# ------------------------------------------------------------------------------------------
# the README's workflow on real recordings, through the CLI
# ------------------------------------------------------------------------------------------
def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_simgas_sparse_pairs_reach_the_dense_iou(tmp_path):
    """extract --every 0.5 then preannotate: SimGas video 3's drafts score within 0.02 of the model run
    on every frame (0.49 before the dense stream)."""
    from gasdb_tools.background import gas_masks
    from gasdb_tools.video import iter_frames

    folder = shared_data("simgas")
    ws = tmp_path / "ws"
    _cli("init", ws)
    _cli("add", ws, "--thermal", folder / "simgasvid3.mp4", "--scene", "near")
    _cli("extract", ws, "--every", "0.5")
    _cli("preannotate", ws)
    truth = {round(t, 6): img.mean(axis=2) > 20 for t, img in iter_frames(folder / "smoke_only3.mp4")}
    frames = list(iter_frames(folder / "simgasvid3.mp4", gray=True))
    lead = sum(1 for t, _ in frames if t < 1.0)
    dense_cm = np.zeros((2, 2), np.int64)
    for (t, _), m in zip(frames, gas_masks([f for _, f in frames], lead_in=lead)):
        dense_cm += confusion(truth[round(t, 6)], m)
    wsp = Workspace(ws)
    cm = np.zeros((2, 2), np.int64)
    pairs = wsp.read_index().pairs
    assert len(pairs) == 61
    for row in pairs.values():
        t = min(truth, key=lambda k: abs(k - float(row["t_thermal"])))
        cm += confusion(truth[t], _draft_mask(wsp, row["pair_id"]))
    dense_iou, sparse_iou = scores(dense_cm)["gas"]["iou"], scores(cm)["gas"]["iou"]
    assert dense_iou > 0.84 and abs(sparse_iou - dense_iou) <= 0.02, (sparse_iou, dense_iou)


def test_cli_iod_video_extent_preset_finds_the_box_on_sparse_pairs(tmp_path):
    from gasdb_tools.coco import mask_bbox
    from gasdb_tools.metrics import box_iou
    from gasdb_tools.video import iter_av_frames

    folder = shared_data("iod_video")
    ws = tmp_path / "ws"
    _cli("init", ws)
    _cli("add", ws, "--thermal", folder / "001_wild_static_vague.avi", "--scene", "far")
    _cli("extract", ws, "--every", "0.5")
    _cli("preannotate", ws, "--preset", "extent")
    boxes = {int(b[0]): b[1:] for b in json.loads((folder / "001_wild_static_vague.boxes.json").read_text())["boxes"]}
    times = [t for t, _ in iter_av_frames(folder / "001_wild_static_vague.avi")]
    wsp = Workspace(ws)
    hits = []
    for row in wsp.read_index().pairs.values():
        frame_no = int(np.argmin([abs(t - float(row["t_thermal"])) for t in times])) + 1
        x, y, w, h = mask_bbox(_draft_mask(wsp, row["pair_id"]))
        hits.append(box_iou((x, y, x + w, y + h), boxes[frame_no]) > 0.3)
    assert len(hits) == 25 and np.mean(hits) >= 0.9, np.mean(hits)


@pytest.mark.parametrize("k1", [0.0, 0.08])
def test_masks_go_to_the_annotation_frame_and_back_through_the_lens(k1):
    """A thermal-frame mask warped into a lens-distorted annotation frame and back lands on itself
    (nearest neighbour, so only the blob's rim may move by a pixel)."""
    from gasdb_tools.align import Geometry
    from gasdb_tools.preannotate import _to_thermal_frame, to_annotation_frame

    matrix = np.array([[1.6, 0.02, 12.0], [-0.01, 1.55, 8.0], [0, 0, 1.0]])
    geometry = Geometry("rgb", (560, 420), matrix, lens_k1=k1)
    mask = np.zeros((240, 320), bool)
    mask[40:120, 30:150] = True  # away from the centre, where the lens moves pixels most
    mask[150:220, 200:300] = True
    framed = to_annotation_frame(mask, geometry)
    back = _to_thermal_frame(framed, geometry, (320, 240))
    assert np.count_nonzero(back ^ mask) <= 0.02 * np.count_nonzero(mask)
    if k1:  # the lens is really used: the plain homography puts the blobs elsewhere
        plain = to_annotation_frame(mask, Geometry("rgb", (560, 420), matrix))
        assert np.count_nonzero(plain ^ framed) > 0.05 * np.count_nonzero(framed)
