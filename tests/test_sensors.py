"""Gas-sensor streams: the CSV reader, nearest readings, what is reported, and `gasdb add --sensors`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gasdb_tools.errors import FormatError
from gasdb_tools.recordings import add_recording
from gasdb_tools.sensors import SensorStream, attach_report, nearest, pair_columns, read_sensor_csv
from gasdb_tools.video import write_video
from gasdb_tools.workspace import Workspace


def _csv(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reader_keeps_channels_in_header_order_and_applies_the_offset(tmp_path):
    path = _csv(tmp_path, "MQ2,t,MQ135\n560,0.0,284\n565,0.5,290\n\n570,1.0,295\n")
    s = read_sensor_csv(path, offset_s=2.0)
    assert s.channels == ("MQ2", "MQ135")
    assert s.times.tolist() == [2.0, 2.5, 3.0] and s.values[:, 1].tolist() == [284.0, 290.0, 295.0]
    assert s.period == 0.5


@pytest.mark.parametrize("text, where, words", [
    ("time,MQ2\n0,1\n", "line 1", "no 't' column"),
    ("t\n0\n", "line 1", "named channel"),
    ("t,a,a\n0,1,2\n", "line 1", "used twice"),
    ("t,a\n0,1\n0.5,x\n", "line 3, column a", "'x' is not a number"),
    ("t,a\n0,1\n0,2\n", "line 3, column t", "does not increase"),
    ("t,a\n0,1,3\n", "line 2", "3 fields"),
    ("t,a\n0,inf\n", "line 2", "not finite"),
    ("t,a\n", None, "no readings"),
])
def test_reader_names_file_line_and_column(tmp_path, text, where, words):
    path = _csv(tmp_path, text)
    with pytest.raises(FormatError, match=words) as info:
        read_sensor_csv(path)
    assert info.value.file == str(path) and info.value.field == where


def test_reader_refuses_latin1(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes("t,d\u00e9bit\n0,1\n".encode("latin-1"))
    with pytest.raises(FormatError, match="not UTF-8"):
        read_sensor_csv(path)


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=30, unique=True),
       st.lists(st.floats(-10, 110, allow_nan=False), min_size=1, max_size=20))
def test_nearest_is_the_nearest_reading_within_max_dt(sensor_times, frame_times):
    t = np.sort(np.asarray(sensor_times))
    s = SensorStream(("a",), t, t[:, None])
    idx, dt = nearest(s, frame_times, max_dt=2.0)
    for k, d, q in zip(idx, dt, frame_times):
        best = np.abs(t - q).min()
        assert d == pytest.approx(best)
        assert (k >= 0) == (best <= 2.0)
        if k >= 0:
            assert abs(t[k] - q) == pytest.approx(best)


def test_readings_outside_the_video_are_reported_not_attached():
    s = SensorStream(("a", "b"), np.array([-2.0, 0.0, 1.0, 2.0, 9.0]), np.arange(10.0).reshape(5, 2))
    pairs = [{"pair_id": "r_00000000", "t_thermal": "0.1"}, {"pair_id": "r_00005000", "t_thermal": "5.0"}]
    report = attach_report(s, [0.1, 5.0], (0.0, 6.0), max_dt=1.0)
    assert report["readings_before_video"] == 1 and report["readings_after_video"] == 1
    assert report["pairs_with_reading"] == 1 and report["pairs_without_reading"] == 1
    cols = pair_columns(s, pairs, max_dt=1.0)
    assert cols["r_00000000"] == {"sensor_t": "0.0", "sensor_dt": "0.1", "sensor:a": "2.0", "sensor:b": "3.0"}
    assert cols["r_00005000"] == {"sensor_t": "", "sensor_dt": "", "sensor:a": "", "sensor:b": ""}


def test_add_records_the_stream_and_refuses_a_bad_one(tmp_path):
    video = tmp_path / "t.mp4"
    write_video(video, [np.full((32, 32), 10 * k, np.uint8) for k in range(5)], fps=10)
    ws = Workspace.init(tmp_path / "ws")
    good = _csv(tmp_path, "t,MQ2,MQ135\n0,1,2\n0.2,3,4\n")
    row = add_recording(ws, thermal=video, scene="near", recording_id="r1", sensors=good, sensor_offset_s=0.5)
    assert row["sensor_channels"] == "MQ2;MQ135" and row["sensor_offset_s"] == "0.5" and len(row["sensors_sha256"]) == 64
    bad = _csv(tmp_path, "t,MQ2\n0,x\n", "bad.csv")
    before = (ws.root / "recordings.csv").read_bytes()
    with pytest.raises(FormatError, match="'x' is not a number"):
        add_recording(ws, thermal=video, scene="near", recording_id="r2", sensors=bad)
    assert (ws.root / "recordings.csv").read_bytes() == before


def test_extract_attaches_readings_and_reports_the_rest(tmp_path):
    """A thermal recording with a sensor log: every pair gets its nearest reading with |dt|; readings
    outside the video are reported in the summary and recordings.csv, not attached."""
    import json as _json

    from click.testing import CliRunner

    from gasdb_tools.cli import main

    video = tmp_path / "t.mp4"
    write_video(video, [np.full((32, 32), 8 * k, np.uint8) for k in range(20)], fps=10)  # 0.0 .. 1.9 s
    log = _csv(tmp_path, "t,MQ2,MQ135\n" + "".join(f"{t / 4:.2f},{100 + t},{200 + t}\n" for t in range(-4, 12)))
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, thermal=video, scene="near", recording_id="r1", sensors=log)
    result = CliRunner().invoke(main, ["extract", str(ws.root), "--every", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    report = _json.loads(result.output)["recordings"][0]["sensors"]
    assert report["readings_before_video"] == 4 and report["readings_after_video"] == 4
    assert report["pairs_without_reading"] == 0 and report["channels"] == ["MQ2", "MQ135"]
    for pair in ws.pairs():
        t = float(pair["t_thermal"])
        k = int(round(t * 4))  # readings every 0.25 s from t = -1.0
        assert float(pair["sensor_t"]) == k / 4 and float(pair["sensor_dt"]) == pytest.approx(abs(t - k / 4))
        assert float(pair["sensor:MQ2"]) == 100 + k and float(pair["sensor:MQ135"]) == 200 + k
    assert _json.loads(ws.recording("r1")["sensor_report"]) == report


def test_a_recording_with_sensors_goes_through_release_with_its_readings(tmp_path):
    import json as _json

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from gasdb_tools.cli import main
    from gasdb_tools.data import GasDBDataset

    runner = CliRunner()
    ws = Workspace.init(tmp_path / "ws")
    for j, rec in enumerate(("a", "b")):
        video = tmp_path / f"{rec}.mp4"
        write_video(video, [np.full((48, 64), 10 + 9 * k + j, np.uint8) for k in range(12)], fps=6)
        log = _csv(tmp_path, "t,CH4_ppm\n" + "".join(f"{t / 2:.1f},{t * 10}\n" for t in range(0, 5)), f"{rec}.csv")
        add_recording(ws, thermal=video, scene="near", recording_id=rec, sensors=log if rec == "a" else None)
    for command in (["extract", "--every", "0.5"], ["preannotate", "--lead-in", "0"], ["split", "--ratios", "0.5,0.5"]):
        result = runner.invoke(main, [command[0], str(ws.root), *command[1:]])
        assert result.exit_code == 0, result.output
    out = tmp_path / "rel"
    result = runner.invoke(main, ["release", str(ws.root), str(out), "--version", "1.0.0"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["verify", str(out)]).exit_code == 0
    seen = {}
    for split in ("train", "test"):
        for sample in GasDBDataset(out / "gasdb.h5", split, arrays=("mask",)):
            seen[sample["meta"]["pair_id"]] = sample["meta"]["sensors"]
    pairs = {p["pair_id"]: p for p in ws.pairs()}
    for pid, text in seen.items():
        if pairs[pid]["recording"] == "b":
            assert text == ""
        else:  # readings every 0.5 s up to 2.0 s; the video runs to 1.83 s, pairs every 0.5 s
            got = _json.loads(text)
            assert got["CH4_ppm"] == float(pairs[pid]["sensor:CH4_ppm"]) and got["dt"] == float(pairs[pid]["sensor_dt"])
    table = pq.read_table(out / "hf" / "data").to_pydict()
    assert dict(zip(table["pair_id"], table["sensors"])) == seen
    sheet = (out / "DATASHEET.md").read_text(encoding="utf-8")
    assert "Gas sensors logged beside the cameras" in sheet and "a: CH4_ppm" in sheet
    report = _json.loads(ws.recording("a")["sensor_report"])
    assert report["readings_after_video"] == 1  # the 2.0 s reading: after the last frame, reported not attached
