"""``gasdb stats``: counts per recording/scene/split, gas coverage, figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from annotation_fixtures import INVALID_COLS, H, W, label_pair, make_workspace
from gasdb_tools import export, stats
from gasdb_tools.cli import main
from gasdb_tools.imaging import read_image


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws")


def test_pair_coverage_ignores_255():
    mask = np.array([[0, 1, 255], [1, 1, 255]], np.uint8)
    assert stats.pair_coverage(mask) == (3, 4)


def test_counts_per_recording_scene_and_split(ws):
    ids = [p["pair_id"] for p in ws.pairs()]
    labelled = [p["pair_id"] for p in ws.pairs() if p["label"]]
    label_pair(ws, labelled[0], [], flags={"no_leak": True})  # a labelled frame without gas
    ws.set_blacklist({labelled[1]: "water spray"})
    splits = {"train": [p for p in labelled if p.startswith("rec_a")], "test": [p for p in labelled
                                                                             if p.startswith("rec_b")]}
    s = stats.workspace_stats(ws, splits=splits)
    assert s["totals"]["pairs"] == 6 and s["totals"]["labelled"] == 4 and s["totals"]["positive"] == 3
    assert s["totals"]["blacklisted"] == 1
    assert s["recordings"]["rec_a"]["positive"] == 1 and s["recordings"]["rec_b"]["positive"] == 2
    assert s["recordings"]["rec_a"]["scene"] == "sunny"
    assert set(s["scenes"]) == {"sunny", "rainy"} and s["scenes"]["rainy"]["pairs"] == 3
    assert s["splits"]["train"]["pairs"] == 2 and s["splits"]["test"]["positive"] == 2
    assert s["review"] == {"approved": 4}
    # coverage = gas pixels / valid pixels, exactly
    gas = valid = 0
    for pid in labelled:
        m = export.pair_mask(ws, pid)
        gas += int((m == 1).sum())
        valid += int((m != 255).sum())
    assert s["totals"]["gas_pixels"] == gas and s["totals"]["valid_pixels"] == valid
    assert s["totals"]["gas_fraction"] == pytest.approx(gas / valid)
    assert valid == 4 * H * (W - INVALID_COLS)
    positives = [p["coverage"] for p in s["pairs"] if p["positive"]]
    assert s["coverage"]["positive"] == 3 == sum(s["coverage"]["histogram"]["counts"])
    assert s["coverage"]["quantiles"]["q50"] == pytest.approx(float(np.median(positives)))
    assert [p["pair_id"] for p in s["pairs"]] == ids
    json.dumps(s, allow_nan=False)


def test_broken_annotation_is_reported_not_raised(ws):
    pid = [p["pair_id"] for p in ws.pairs() if p["label"]][0]
    ws.path(ws.read_index().pairs[pid]["label"]).write_text("{")
    s = stats.workspace_stats(ws)
    assert list(s["errors"]) == [pid] and "malformed JSON" in s["errors"][pid]
    assert s["totals"]["labelled"] == 3


def test_figures_are_png_files(ws, tmp_path):
    paths = stats.write_figures(stats.workspace_stats(ws), tmp_path / "fig")
    assert [p.name for p in paths] == ["coverage.png", "recordings.png"]
    for p in paths:
        image = read_image(p)
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0


def test_empty_workspace(tmp_path):
    from gasdb_tools.workspace import Workspace

    s = stats.workspace_stats(Workspace.init(tmp_path / "empty"))
    assert s["totals"]["pairs"] == 0 and s["totals"]["gas_fraction"] is None and s["coverage"]["quantiles"] == {}
    assert len(stats.write_figures(s, tmp_path / "fig")) == 2


def test_cli_stats(ws, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["stats", str(ws.root), "--json", "--figures", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["totals"]["labelled"] == 4 and len(data["figures"]) == 2 and "pairs" not in data
    res = runner.invoke(main, ["stats", str(ws.root), "--no-figures"])
    assert res.exit_code == 0 and "rec_a" in res.output and "gas coverage" in res.output
    assert not (ws.root / "stats").exists()
    res = runner.invoke(main, ["stats", str(ws.root)])
    assert (ws.root / "stats" / "coverage.png").is_file()
