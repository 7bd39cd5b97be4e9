"""End to end on real paired recordings: the TNO visual + thermal sequences (see tests/_tno.py).

Each sequence is packed as two videos (RGB 5 fps, thermal 10 fps, thermal starting 0.2 s later),
once as it is and once with the thermal stream warped by a known transform W (Duine also in
other packings: other rates and offsets). ``gasdb extract`` must find the offset within one frame
period at a confidence above the threshold (Duine only from where the walker is: see below);
``gasdb calibrate`` must recover W: calibration(warped) @ W equals
calibration(unwarped) within 1.5 px (mean corner error; TNO's own registration is approximate,
so the score is this consistency), with the consistency flag down.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools import registration as reg
from gasdb_tools.cli import main
from gasdb_tools.extract import DEFAULT_MIN_CONFIDENCE
from gasdb_tools.recordings import add_recording
from gasdb_tools.workspace import Workspace
from tests import _tno
from tests.conftest import shared_data

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def tno_workspace(tmp_path_factory):
    root = shared_data("tno_sequences")
    tmp = tmp_path_factory.mktemp("tno")
    warp = _tno.known_warp()
    ws = Workspace.init(tmp / "ws")
    for name in _tno.SEQUENCES:
        short = name.split("_")[0].lower()
        for warped in (False, True):
            rec = short + ("-warped" if warped else "")
            folder = _tno.pack_sequence(root, name, tmp / rec, warp=warp if warped else None)
            add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="other",
                          recording_id=rec, rig=rec)  # TNO registered each sequence on its own: a rig each
    runner = CliRunner()
    result = runner.invoke(main, ["extract", str(ws.root), "--json"])
    extract = {r["id"]: r for r in json.loads(result.stdout)["recordings"]}
    return ws, warp, result.exit_code, extract, runner


def test_extract_finds_the_offset(tno_workspace):
    ws, _, code, extract, runner = tno_workspace
    assert code == 0
    # Tree: a person walks through and the camera pans, a burst of motion both cameras see (motion
    # energy). Duine shares no motion event between the streams: the person walks at a constant
    # speed, the camera's one shake precedes the thermal stream, and the thermal camera's own
    # +-2 px vertical jitter is absent from the visual stream, so every 1-D motion signal (raw
    # energy, the energy left after removing each stream's global shift, the global-shift
    # trajectory, the residual's 99th percentile) peaks at a wrong lag (about -0.8 s) and is
    # refused; where the walker is in each picture tells the offset (co-location)
    for rec in ("tree", "tree-warped", "duine", "duine-warped"):
        r = extract[rec]
        assert r["status"] == "extracted", r
        assert abs(r["offset_s"] - _tno.OFFSET_S) < 1 / _tno.SCENE_FPS, r
        assert r["offset_confidence"] > DEFAULT_MIN_CONFIDENCE
        # Duine's offset can only come from co-location, and the index says so
        assert ws.recording(rec)["offset_source"] == ("estimated-colocation" if rec.startswith("duine")
                                                      else "estimated")
    for rec, frames in (("tree", 9), ("duine", 11)):
        assert len(ws.pairs(rec)) == len(ws.pairs(rec + "-warped")) == frames  # the RGB frames that meet one


# (thermal first id, step), (rgb first id, step): thermal 10, 5 or 3.3 fps against RGB 10, 5 or 3.3 fps;
# the thermal stream starting 0.1-0.5 s after the RGB one or 0.1-0.3 s before it; RGB faster than 1.5x the
# thermal rate takes extract's two-pass route, the others the one-pass route
PACKINGS = [((0, 1), (3, 2)), ((0, 2), (1, 1)), ((5, 1), (0, 3)), ((1, 3), (0, 1)), ((0, 1), (0, 2))]


@pytest.mark.parametrize("name", _tno.SEQUENCES)
@pytest.mark.parametrize("thermal_ids,rgb_ids", PACKINGS)
def test_extract_finds_the_offset_in_other_packings(tmp_path, name, thermal_ids, rgb_ids):
    """Each sequence through ``extract`` with the thermal stream warped (Duine: the walker, no
    shared motion event, by co-location; Tree by its motion energy or, with few frames, co-location)."""
    folder = _tno.pack_sequence(shared_data("tno_sequences"), name, tmp_path / "rec",
                                warp=_tno.known_warp(), thermal_ids=thermal_ids, rgb_ids=rgb_ids)
    ws = Workspace.init(tmp_path / "ws")
    add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="other", recording_id="d")
    result = CliRunner().invoke(main, ["extract", str(ws.root), "--json"])
    (r,) = json.loads(result.stdout)["recordings"]
    assert result.exit_code == 0 and r["status"] == "extracted", r
    truth = _tno.packed_offset(thermal_ids, rgb_ids)
    assert abs(r["offset_s"] - truth) < 1 / _tno.SCENE_FPS, (r["offset_s"], truth)  # the faster stream's period
    assert r["offset_confidence"] > DEFAULT_MIN_CONFIDENCE


@pytest.fixture(scope="module")
def auto_calibration(tno_workspace):
    ws, _, _, _, runner = tno_workspace
    result = runner.invoke(main, ["calibrate", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    return {r["rig"]: r for r in json.loads(result.stdout)["rigs"]}


def test_calibrate_keeps_the_flag_down_and_says_why(auto_calibration):
    cal = auto_calibration
    assert all(r["consistent"] for r in cal.values()), {k: r["warnings"] for k, r in cal.items()}
    for rig, r in cal.items():
        assert r["model"] in reg.MODELS and "held-out" in r["model_reason"] and "quadrant" in r["model_reason"]
        assert r["model_requested"] == "auto"


@pytest.mark.parametrize("seq", ["tree", "duine"])
def test_calibrate_recovers_the_known_warp(tno_workspace, auto_calibration, seq):
    """calibration(warped) @ W = calibration(unwarped), both with the model chosen for the warped
    recording (the warp needs a rotation and a scale that the pre-registered pair alone may not).

    Duine's frames share few edges (edge correlation 0.15-0.17): its joint cost is flat to 0.1 %
    over a few pixels, and before the flat-cost start of the joint refinement (the vertex of a
    quadratic over a similarity grid, every pixel sampled) the result moved by up to 3.3 px with
    the encoder's rounding (libx264 output differs by a few grey levels between runs)."""
    ws, warp, _, _, runner = tno_workspace
    warped = auto_calibration[seq + "-warped"]
    again = runner.invoke(main, ["calibrate", str(ws.root), "--rig", seq, "--model", warped["model"], "--force",
                                 "--json"])
    assert again.exit_code == 0, again.output
    (plain,) = json.loads(again.stdout)["rigs"]
    assert plain["consistent"], plain["warnings"]
    err = reg.corner_error(np.array(warped["matrix"]) @ warp, np.array(plain["matrix"]), _tno.SIZE)
    assert err < 1.5, (seq, warped["model"], err)
