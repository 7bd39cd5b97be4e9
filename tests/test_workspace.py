import csv

import numpy as np
import pytest

from gasdb_tools.errors import VideoError, WorkspaceError
from gasdb_tools.recordings import add_recording, derive_recording_id
from gasdb_tools.video import write_video
from gasdb_tools.workspace import PAIR_COLUMNS, Workspace, check_id, make_pair_id


@pytest.fixture
def videos(tmp_path):
    frames = [np.full((64, 80), 10 * k, np.uint8) for k in range(5)]
    rgb = tmp_path / "take" / "rgb.mp4"
    thermal = tmp_path / "take" / "thermal.mp4"
    write_video(rgb, [np.dstack([f, f, f]) for f in frames], fps=30)
    write_video(thermal, frames, fps=25)
    return rgb, thermal


def index_bytes(ws):
    return {name: (ws.root / name).read_bytes() for name in (ws.RECORDINGS, ws.PAIRS)}


def test_init_creates_documented_layout(tmp_path):
    ws = Workspace.init(tmp_path / "ws", name="demo")
    assert ws.settings["name"] == "demo"
    assert (ws.root / "recordings.csv").read_text().startswith("id,rgb,thermal,scene,tags,rig")
    assert (ws.root / "pairs.csv").read_text().strip() == ",".join(PAIR_COLUMNS)
    with pytest.raises(WorkspaceError, match="already exists"):
        Workspace.init(tmp_path / "ws")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(WorkspaceError, match="not empty"):
        Workspace.init(tmp_path / "full")
    with pytest.raises(WorkspaceError, match="not a gasdb workspace"):
        Workspace.open(tmp_path / "full")


def test_add_registers_recording_with_hashes_and_probe(tmp_path, videos):
    ws = Workspace.init(tmp_path / "ws")
    row = add_recording(ws, rgb=videos[0], thermal=videos[1], scene="near", tags=("night",))
    assert row["id"] == "take"  # derived from the folder of rgb.mp4
    rec = ws.recording("take")
    assert rec["scene"] == "near" and rec["tags"] == "night"
    assert rec["rgb_fps"] == "30" and rec["thermal_fps"] == "25" and rec["thermal_size"] == "80x64"
    assert len(rec["rgb_sha256"]) == 64


def test_add_refuses_bad_input_and_leaves_index_unchanged(tmp_path, videos):
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=videos[0], thermal=videos[1], scene="near", recording_id="r1")
    before = index_bytes(ws)
    with pytest.raises(VideoError, match="nope.mp4: video file not found"):
        add_recording(ws, rgb=tmp_path / "nope.mp4", thermal=videos[1], scene="near", recording_id="r2")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(VideoError, match="broken.mp4"):
        add_recording(ws, rgb=videos[0], thermal=broken, scene="near", recording_id="r2")
    with pytest.raises(WorkspaceError, match="'r1' is already registered"):
        add_recording(ws, rgb=videos[0], thermal=videos[1], scene="far", recording_id="r1")
    with pytest.raises(WorkspaceError, match="already registered as recording 'r1'"):
        add_recording(ws, rgb=videos[0], thermal=videos[1], scene="far", recording_id="r3")
    with pytest.raises(WorkspaceError, match="unknown scene"):
        add_recording(ws, rgb=videos[0], thermal=videos[1], scene="moon", recording_id="r4")
    with pytest.raises(WorkspaceError, match="invalid recording id"):
        add_recording(ws, rgb=videos[0], thermal=videos[1], scene="far", recording_id="../evil")
    assert index_bytes(ws) == before


def test_transaction_writes_nothing_when_the_block_fails(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    before = index_bytes(ws)
    with pytest.raises(RuntimeError):
        with ws.transaction() as index:
            index.pairs["p"] = {"pair_id": "p", "recording": "r"}
            raise RuntimeError("crash mid-stage")
    assert index_bytes(ws) == before


def test_index_round_trips_unknown_columns_and_floats(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with ws.transaction() as index:
        index.recordings["r"] = {"id": "r", "thermal": "t.mp4"}
        index.pairs["r_00000040"] = {"pair_id": "r_00000040", "recording": "r", "t_rgb": 0.04,
                                     "t_thermal": 1 / 3, "dt": 0.0, "rgb": "a,b.png", "custom": "x"}
    row = ws.pairs()[0]
    assert float(row["t_thermal"]) == 1 / 3  # repr keeps every bit
    assert row["rgb"] == "a,b.png" and row["custom"] == "x"
    with open(ws.root / "pairs.csv", newline="") as fh:
        assert next(csv.reader(fh))[-1] == "custom"


def test_status_counts_stages(tmp_path, videos):
    from gasdb_tools.status import workspace_status

    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=videos[0], thermal=videos[1], scene="far", recording_id="r1")
    with ws.transaction() as index:
        for k in range(3):
            pid = make_pair_id("r1", k * 0.5)
            (ws.root / "frames").mkdir(exist_ok=True)
            (ws.root / "frames" / f"{k}.png").write_bytes(b"x")
            index.pairs[pid] = {"pair_id": pid, "recording": "r1", "thermal": f"frames/{k}.png",
                                "rgb": f"frames/{k}.png"}
        index.recordings["r1"]["enhance_error"] = "boom"
    (row,) = workspace_status(ws)["recordings"]
    assert row["pairs"] == 3 and row["stages"]["extract"] == {"done": 3}
    assert row["stages"]["align"] == {"missing": 3, "note": row["stages"]["align"]["note"]}
    assert "no calibration" in row["stages"]["align"]["note"]
    assert row["stages"]["enhance"]["failed"] == 3 and row["errors"] == {"enhance": "boom"}
    assert row["next"][0] == f"gasdb calibrate {ws.root}"


def test_ids():
    assert make_pair_id("rec", 1.2344) == "rec_00001234"
    assert derive_recording_id(__import__("pathlib").Path("/x/My Take 1/rgb.mp4")) == "My-Take-1"
    for bad in ("", "-x", "a/b", "x" * 65):
        with pytest.raises(WorkspaceError):
            check_id(bad)


def test_select_recordings_and_stage_errors(tmp_path, videos):
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=videos[0], thermal=videos[1], scene="near", recording_id="r1")
    assert ws.select_recordings() == ["r1"] and ws.select_recordings(["r1"]) == ["r1"]
    with pytest.raises(WorkspaceError, match=r"no recording 'r9' \(known: r1\)"):
        ws.select_recordings(["r9"])
    ws.set_stage_error("r1", "align", "frames are black")
    assert ws.recording("r1")["align_error"] == "frames are black"
    ws.set_stage_error("r1", "align", "")
    assert ws.recording("r1")["align_error"] == ""


def test_update_pairs_merges_columns_and_skips_vanished_rows(tmp_path, videos):
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=videos[0], thermal=videos[1], scene="near", recording_id="r1")
    with ws.transaction() as index:
        index.pairs["r1_00000000"] = {"pair_id": "r1_00000000", "recording": "r1", "thermal": "t.png"}
    ws.update_pairs({"r1_00000000": {"aligned": "a.png"}, "gone_00000000": {"aligned": "x.png"}},
                    recording="r1", recording_columns={"align_size": "640x512"})
    (row,) = ws.pairs()
    assert row["aligned"] == "a.png" and row["thermal"] == "t.png"
    assert ws.recording("r1")["align_size"] == "640x512"
