"""``gasdb remove``: unregister a recording without losing anything a person made."""

from __future__ import annotations

import json

from _release_ws import add_thermal_only, build_workspace
from click.testing import CliRunner

from gasdb_tools.cli import main
from gasdb_tools.splits import split_workspace


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_remove_moves_every_output_and_drops_the_rows(tmp_path):
    ws = build_workspace(tmp_path / "ws", recordings=2, pairs_per=3, blacklist={(1, 0): "water spray"})
    pids = [p["pair_id"] for p in ws.pairs("rec01")]
    (ws.root / "calibration" / "recordings").mkdir(parents=True)
    (ws.root / "calibration" / "recordings" / "rec01.json").write_text("{}")
    split_workspace(ws, ratios="0.5,0.5", seed=0)
    before = {k: v for k, v in _files(ws.root).items() if "/rec01/" in f"/{k}" or k.endswith("rec01.json")}
    row = dict(ws.recording("rec01"))
    runner = CliRunner()

    res = runner.invoke(main, ["remove", str(ws.root), "rec01"])
    assert res.exit_code == 1 and "1 edited and 1 approved" in res.output and "--force" in res.output
    assert [r["id"] for r in ws.recordings()] == ["rec00", "rec01"]  # refused: nothing changed
    assert all((ws.root / a / "rec01").is_dir() for a in ("frames", "aligned", "labels"))

    res = runner.invoke(main, ["remove", str(ws.root), "rec01", "--force", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["id"] == "rec01" and out["pairs"] == 3 and out["moved_to"] == "removed/rec01"
    assert out["review"] == {"pending": 1, "edited": 1, "approved": 1, "recheck": 0, "unlabelled": 0}
    assert out["stale_splits"] == ["default"]
    assert [r["id"] for r in ws.recordings()] == ["rec00"] and not set(pids) & {p["pair_id"] for p in ws.pairs()}
    assert ws.blacklist() == {}
    after = _files(ws.root / "removed" / "rec01")
    assert json.loads(after.pop("recording.json")) == row
    moved = {k.replace("calibration.json", "calibration/recordings/rec01.json", 1): v for k, v in after.items()}
    moved = {(k if k.startswith("calibration") else f"{k.split('/', 1)[0]}/rec01/{k.split('/', 1)[1]}"): v
             for k, v in moved.items()}
    assert moved == before  # every byte kept, nothing deleted
    assert not any((ws.root / a / "rec01").exists() for a in ("frames", "aligned", "labels"))
    res = runner.invoke(main, ["status", str(ws.root), "--json"])
    assert res.exit_code == 0 and [r["id"] for r in json.loads(res.stdout)["recordings"]] == ["rec00"]


def test_remove_twice_keeps_both_copies_and_untouched_drafts_need_no_force(tmp_path):
    ws = build_workspace(tmp_path / "ws", recordings=1, pairs_per=1)
    add_thermal_only(ws, "th00", pairs=2)  # untouched drafts only
    runner = CliRunner()
    res = runner.invoke(main, ["remove", str(ws.root), "th00"])
    assert res.exit_code == 0, res.output
    assert "removed recording th00 (2 pairs: 2 pending, 0 edited, 0 approved)" in res.output
    add_thermal_only(ws, "th00", pairs=1)
    res = runner.invoke(main, ["remove", str(ws.root), "th00", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["moved_to"] == "removed/th00-2"
    assert len(list((ws.root / "removed" / "th00" / "labels").glob("*.json"))) == 2
    assert len(list((ws.root / "removed" / "th00-2" / "labels").glob("*.json"))) == 1


def test_remove_refuses_unknown_and_path_like_ids(tmp_path):
    ws = build_workspace(tmp_path / "ws", recordings=1, pairs_per=1)
    runner = CliRunner()
    res = runner.invoke(main, ["remove", str(ws.root), "nope"])
    assert res.exit_code == 1 and "known: rec00" in res.output
    res = runner.invoke(main, ["remove", str(ws.root), "../rec00"])
    assert res.exit_code == 1 and not (ws.root / "removed").exists()
    assert [r["id"] for r in ws.recordings()] == ["rec00"]
