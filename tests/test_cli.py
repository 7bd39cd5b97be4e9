"""CLI conventions common to every command: help with an example, exit codes, errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools.cli import COMMANDS, main
from gasdb_tools.video import write_video


def test_top_level_help_lists_every_stage_in_pipeline_order():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    positions = [result.output.index(f"  {name} ") for name in COMMANDS]
    assert positions == sorted(positions)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_an_example_and_a_true_summary(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    command = main.get_command(None, name)
    assert command.get_short_help_str(limit=200).rstrip(".") == COMMANDS[name][2].rstrip(".")


def test_unknown_command_and_bad_option_are_usage_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["frobnicate"]).exit_code == 2
    assert runner.invoke(main, ["status", str(tmp_path / "missing")]).exit_code == 2


def test_init_add_status_flow(tmp_path):
    frames = [np.full((64, 80), 20 * k, np.uint8) for k in range(4)]
    write_video(tmp_path / "rgb.mp4", [np.dstack([f] * 3) for f in frames], fps=30)
    write_video(tmp_path / "th.mp4", frames, fps=9)
    runner = CliRunner()
    ws = str(tmp_path / "ws")
    assert runner.invoke(main, ["init", ws]).exit_code == 0
    r = runner.invoke(main, ["add", ws, "--rgb", str(tmp_path / "rgb.mp4"), "--thermal", str(tmp_path / "th.mp4"),
                             "--scene", "overlook", "--id", "t1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["thermal_fps"] == "9"
    r = runner.invoke(main, ["add", ws, "--rgb", str(tmp_path / "rgb.mp4"), "--thermal", str(tmp_path / "th.mp4"),
                             "--scene", "overlook", "--id", "t1"])
    assert r.exit_code == 1 and "already registered" in r.output
    r = runner.invoke(main, ["add", ws, "--rgb", str(tmp_path / "rgb.mp4"), "--thermal", str(tmp_path / "th.mp4"),
                             "--scene", "volcano"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["status", ws, "--json"])
    assert r.exit_code == 0
    (rec,) = json.loads(r.output)["recordings"]
    assert rec["id"] == "t1" and rec["pairs"] == 0
    r = runner.invoke(main, ["status", ws])
    assert "t1" in r.output and "gasdb extract" in r.output


def test_synth_cli_rejects_bad_size(tmp_path):
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--size", "big"])
    assert r.exit_code == 2 and "WIDTHxHEIGHT" in r.output


def test_key_value_options_parse_json_values_and_reject_bad_items():
    import click

    from gasdb_tools.cli._common import key_values

    assert key_values(None, None, ["k=4", "lead-in=0.5", "name=abc", "flag=true"]) == {
        "k": 4, "lead_in": 0.5, "name": "abc", "flag": True}
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        key_values(None, None, ["novalue"])


def test_add_a_folder_says_how_to_pack_an_image_sequence(tmp_path):
    """An image sequence is a folder: the usage error gives the lossless packing command, and a
    16-bit sequence packed that way extracts to the very same pixels."""
    import shutil
    import subprocess

    import cv2

    from gasdb_tools.workspace import Workspace

    seq = tmp_path / "seq"
    seq.mkdir()
    frames = [(np.random.default_rng(k).random((24, 32)) * 60000).astype(np.uint16) for k in range(10)]
    for k, a in enumerate(frames):
        cv2.imwrite(str(seq / f"{k:04d}.png"), a)
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(tmp_path / "ws")]).exit_code == 0
    res = runner.invoke(main, ["add", str(tmp_path / "ws"), "--thermal", str(seq), "--scene", "far"])
    assert res.exit_code == 2 and "is a folder" in res.output and "-c:v ffv1" in res.output
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    if shutil.which(imageio_ffmpeg.get_ffmpeg_exe()) is None:
        pytest.skip("no ffmpeg binary")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-framerate", "25", "-pattern_type", "glob",
                    "-i", f"{seq}/*.png", "-c:v", "ffv1", str(tmp_path / "seq.mkv")], check=True)
    assert runner.invoke(main, ["add", str(tmp_path / "ws"), "--thermal", str(tmp_path / "seq.mkv"),
                                "--scene", "far"]).exit_code == 0
    assert runner.invoke(main, ["extract", str(tmp_path / "ws"), "--every", "0.04"]).exit_code == 0
    ws = Workspace.open(tmp_path / "ws")
    got = [cv2.imread(str(ws.path(p["thermal"])), cv2.IMREAD_UNCHANGED) for p in ws.pairs()]
    assert len(got) == 10 and all(np.array_equal(a, b) for a, b in zip(got, frames))
