"""Workspace integrity end to end: hand-edited index rows, encodings, full and read-only disks,
concurrent commands, and staleness after a recalibration (the integrity issue's must-show items).

The disk cases mount small tmpfs file systems and need root (``mount``); they skip with the
reason elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools import labelme_format, review
from gasdb_tools.align import annotation_frame
from gasdb_tools.cli import main
from gasdb_tools.recordings import add_recording
from gasdb_tools.status import workspace_status
from gasdb_tools.synth import synthesize
from gasdb_tools.video import write_video
from gasdb_tools.workspace import Workspace, make_pair_id


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def take(tmp_path_factory):
    """One short simulated take (RGB + thermal, 160x128) shared by the module's tests."""
    out = tmp_path_factory.mktemp("synth")
    listing = synthesize(out, recordings=1, seconds=2.0, size=(160, 128), seed=4)
    return out / listing[0]["dir"], listing[0]["truth"]


def _extracted(tmp_path, take, *, every=0.25) -> Workspace:
    folder, truth = take
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="near", recording_id="rec1",
                  offset_s=truth["offset_s"])
    result = CliRunner().invoke(main, ["extract", str(ws.root), "--every", str(every)])
    assert result.exit_code == 0, result.output
    return ws


def _index_bytes(ws):
    return {n: (ws.root / n).read_bytes() for n in (ws.RECORDINGS, ws.PAIRS, ws.BLACKLIST)}


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name)


# ------------------------------------------------------------------------------------------------
# hand-edited index rows and encodings
# ------------------------------------------------------------------------------------------------
BAD_ROWS = [  # (file, line to append or edit, expected text)
    ("recordings.csv", "../../x,,t.mp4,near,,default,,,,,", "invalid recording id '../../x'"),
    ("recordings.csv", "a b,,t.mp4,near,,default,,,,,", "invalid recording id 'a b'"),
    ("recordings.csv", "ok,,t.mp4,near,,../rig,,,,,", "invalid rig name '../rig'"),
    ("recordings.csv", "rec1,,t.mp4,near,,default,,,,,", "recording 'rec1' is listed twice"),
    ("recordings.csv", "x,\"a\",\"b\",near,,default,,,,,,,,,,,,,,,,,,,,,,extra", "more fields than the header"),
    ("pairs.csv", "../evil_00000000,rec1,0,0,0,,frames/x.png", "invalid pair id '../evil_00000000'"),
    ("pairs.csv", "p_00000000,ghost,0,0,0,,frames/x.png", "recording 'ghost', which recordings.csv does not list"),
    ("pairs.csv", "p_00000000,../rec,0,0,0,,frames/x.png", "invalid recording id '../rec'"),
    ("pairs.csv", "p_00000000,rec1,0,0,0,/etc/passwd,frames/x.png", "'/etc/passwd' is not a plain path"),
    ("pairs.csv", "p_00000000,rec1,0,0,0,,frames/../../../x.png", "is not a plain path"),
    ("pairs.csv", "p_00000000,rec1,0,0,0,,\"frames/a\x07.png\"", "is not a plain path"),
    ("blacklist.csv", "../x_00000000,why", "invalid pair id '../x_00000000'"),
]


@pytest.mark.parametrize("name, line, expected", BAD_ROWS, ids=[f"{n}:{e[:30]}" for n, _, e in BAD_ROWS])
def test_hand_edited_rows_are_named_and_nothing_is_written(tmp_path, take, name, line, expected):
    ws = _extracted(tmp_path, take)
    path = ws.root / name
    text = path.read_text(encoding="utf-8")
    if name == "pairs.csv":  # keep the header's columns: pad the row to the header's width
        width = len(text.splitlines()[0].split(","))
        line = line + "," * max(0, width - len(line.split(",")))
    path.write_text(text + line + "\n", encoding="utf-8")
    before = _index_bytes(ws)
    frames_before = sorted(str(p) for p in (ws.root / "frames").rglob("*"))
    runner = CliRunner()
    commands = ([["status"], ["blacklist"], ["split"]] if name == "blacklist.csv" else  # who reads the blacklist
                [["status"], ["extract", "--force"], ["align"], ["blacklist"], ["review", "--counts"], ["review"]])
    for command in commands:
        result = runner.invoke(main, [command[0], str(ws.root), *command[1:]])
        assert result.exit_code == 1, (command, result.output)
        first = result.output.strip().splitlines()[-1]
        assert first.startswith(f"Error: {path}: line ") and expected in first, first
        assert "Traceback" not in result.output
    assert _index_bytes(ws) == before
    assert sorted(str(p) for p in (ws.root / "frames").rglob("*")) == frames_before
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("evil*"))


def test_a_utf8_bom_is_read_and_latin1_is_refused_clearly(tmp_path, take):
    ws = _extracted(tmp_path, take)
    for name in ("recordings.csv", "pairs.csv", "blacklist.csv"):
        path = ws.root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Excel's "CSV UTF-8"
    result = CliRunner().invoke(main, ["status", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["recordings"][0]["id"] == "rec1"
    path = ws.root / "recordings.csv"
    path.write_bytes(path.read_bytes()[3:].replace(b"near", "prés".encode("latin-1")))
    result = CliRunner().invoke(main, ["status", str(ws.root)])
    assert result.exit_code == 1
    assert f"Error: {path}: line 2: not UTF-8 text (byte 0xe9 on line 2) -> save the file as UTF-8" in result.output


# ------------------------------------------------------------------------------------------------
# full and read-only disks
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs mounted at tmp_path/disk (skips without the right to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return ballast


def test_full_disk_ends_with_one_line_keeps_the_index_valid_and_resumes(small_disk, take):
    folder, truth = take
    ws = Workspace.init(small_disk / "ws")
    add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="near", recording_id="rec1",
                  offset_s=truth["offset_s"])
    ballast = _fill(small_disk)
    ballast.write_bytes(b"\0" * (ballast.stat().st_size - 200_000))  # room for a few frames, not all
    result = CliRunner().invoke(main, ["extract", str(ws.root), "--every", "0.05"])
    assert result.exit_code == 1, result.output
    assert "No space left on device -> free disk space" in result.output and "Traceback" not in result.output
    ws.read_index()  # still valid
    assert _leftovers(small_disk) == []
    ballast.unlink()
    result = CliRunner().invoke(main, ["extract", str(ws.root), "--every", "0.05"])
    assert result.exit_code == 0, result.output
    assert ws.recording("rec1")["extract_error"] == "" and len(ws.pairs()) >= 30
    _fill(small_disk)
    before = _index_bytes(ws)
    result = CliRunner().invoke(main, ["add", str(ws.root), "--thermal", str(folder / "thermal.mp4"),
                                       "--scene", "far", "--id", "again"])
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert _index_bytes(ws) == before and _leftovers(small_disk) == []


def test_read_only_workspace_reads_and_refuses_writes_in_one_line(small_disk, take, tmp_path):
    folder, truth = take
    ws = Workspace.init(small_disk / "ws")
    add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="near", recording_id="rec1",
                  offset_s=truth["offset_s"])
    assert CliRunner().invoke(main, ["extract", str(ws.root), "--every", "0.5"]).exit_code == 0
    before = _index_bytes(ws)
    done = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
    runner = CliRunner()
    assert runner.invoke(main, ["status", str(ws.root)]).exit_code == 0
    assert runner.invoke(main, ["validate", str(ws.root), "--json"]).exit_code in (0, 1)
    for command in (["extract", "--force"], ["blacklist", ws.pairs()[0]["pair_id"], "--reason", "x"],
                    ["add", "--thermal", str(folder / "thermal.mp4"), "--scene", "far", "--id", "r2"]):
        result = runner.invoke(main, [command[0], str(ws.root), *command[1:]])
        assert result.exit_code == 1, (command, result.output)
        assert "Read-only file system" in result.output and "Traceback" not in result.output
    assert _index_bytes(ws) == before


# ------------------------------------------------------------------------------------------------
# concurrent commands
# ------------------------------------------------------------------------------------------------
def test_twenty_parallel_blacklist_calls_keep_twenty_entries(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    write_video(tmp_path / "t.mp4", [np.full((32, 32), 10 * k, np.uint8) for k in range(5)], fps=10)
    add_recording(ws, thermal=tmp_path / "t.mp4", scene="near", recording_id="r")
    ids = [make_pair_id("r", k / 10) for k in range(20)]
    with ws.transaction() as index:
        for pid in ids:
            index.pairs[pid] = {"pair_id": pid, "recording": "r", "thermal": f"frames/{pid}.png"}
    procs = [subprocess.Popen([sys.executable, "-m", "gasdb_tools", "blacklist", str(ws.root), pid, "--reason",
                               f"reason {k}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k, pid in enumerate(ids)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert ws.blacklist() == {pid: f"reason {k}" for k, pid in enumerate(ids)}


# ------------------------------------------------------------------------------------------------
# staleness after a recalibration
# ------------------------------------------------------------------------------------------------
def _run(*args):
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_recalibration_makes_exactly_the_downstream_outputs_stale_and_reruns_redo_them(tmp_path, take):
    ws = _extracted(tmp_path, take, every=0.2)
    root = str(ws.root)
    n = len(ws.pairs())
    _run("calibrate", root, "--model", "homography")
    for stage in ("align", "enhance", "preannotate"):
        _run(stage, root)
    status = workspace_status(ws)["recordings"][0]["stages"]
    assert all(status[s] == {"done": n} for s in ("extract", "align", "enhance", "preannotate")), status
    # an annotator edits one document and approves another
    pids = sorted(p["pair_id"] for p in ws.pairs())
    edited, approved = pids[3], pids[5]
    poly = [[20.5, 30.25], [90.0, 25.0], [100.75, 70.5], [30.0, 80.0]]
    old_frame = annotation_frame(ws, ws.recording("rec1"))
    for pid, flag in ((edited, False), (approved, True)):
        path = review.label_path(ws, ws.read_index().pairs[pid])
        doc = labelme_format.read(path)
        doc["shapes"] = [labelme_format.make_shape(poly)]
        doc["flags"]["approved"] = flag
        labelme_format.write(doc, path)
    # recalibrate with another model: align, enhance and preannotate are stale, nothing else
    _run("calibrate", root, "--model", "affine", "--force")
    status = workspace_status(ws)["recordings"][0]["stages"]
    assert status["extract"] == {"done": n}
    assert status["align"] == {"stale": n}
    report = _run("align", root)
    assert report["aligned"] == n and report["skipped"] == 0
    status = workspace_status(ws)["recordings"][0]["stages"]
    assert status["align"] == {"done": n} and status["enhance"].get("stale") == n
    assert status["preannotate"].get("stale") == n  # untouched drafts and the two documents
    assert _run("enhance", root)["recordings"][0]["enhanced"] == n
    report = _run("preannotate", root)
    assert report["written"] == n - 2 and report["reprojected"] == 2
    status = workspace_status(ws)["recordings"][0]
    assert all(status["stages"][s] == {"done": n} for s in ("extract", "align", "enhance", "preannotate"))
    assert status["review"]["recheck"] == 2 and status["review"]["approved"] == 0
    # the annotator's vertices are the old ones mapped through the change of transform
    new_frame = annotation_frame(ws, ws.recording("rec1"))
    change = new_frame.matrix @ np.linalg.inv(old_frame.matrix)
    mapped = np.c_[poly, np.ones(4)] @ change.T
    for pid in (edited, approved):
        doc = labelme_format.read(review.label_path(ws, ws.read_index().pairs[pid]))
        np.testing.assert_allclose(doc["shapes"][0]["points"], mapped[:, :2] / mapped[:, 2:], atol=0.01)
        assert doc["gasdb"]["reprojections"][-1]["to"] == new_frame.key
    # plain reruns now do nothing
    assert _run("align", root)["aligned"] == 0
    assert _run("enhance", root)["recordings"][0]["enhanced"] == 0
    again = _run("preannotate", root)
    assert again["written"] == 0 and again["reprojected"] == 0
    problems = _run_validate(root)
    assert {p["check"] for p in problems} == {"stale"} and len(problems) == 2  # the two documents to recheck
    _run("review", root, "--approve", edited, approved)
    assert _run_validate(root) == []


def _run_validate(root):
    result = CliRunner().invoke(main, ["validate", root, "--json"])
    return json.loads(result.output)["problems"]


def test_a_file_changed_behind_gasdbs_back_is_a_mismatch(tmp_path, take):
    ws = _extracted(tmp_path, take, every=0.5)
    pair = ws.pairs()[0]
    frame = ws.path(pair["thermal"])
    from gasdb_tools.imaging import read_image, write_image

    image = read_image(frame)
    write_image(frame, 255 - image)
    problems = [p for p in _run_validate(str(ws.root)) if p["check"] == "mismatch"]
    assert len(problems) == 1 and problems[0]["pair_id"] == pair["pair_id"]
    assert problems[0]["fix"] == f"gasdb extract {ws.root} --recording rec1 --force"
    assert os.fspath(frame) in problems[0]["message"]
