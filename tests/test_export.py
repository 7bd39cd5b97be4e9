"""Export stage on a tiny hand-built workspace: pair masks, masks/COCO/Gas-DB exports, blacklist, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from annotation_fixtures import INVALID_COLS, gas_polygon, label_pair, make_workspace
from gasdb_tools import export, gasdb_layout
from gasdb_tools import labelme_format as lf
from gasdb_tools.cli import main
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.imaging import read_image


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws")


def _labelled(ws):
    return [p["pair_id"] for p in ws.pairs() if p["label"]]


def test_pair_mask_is_the_rasterised_label_with_invalid_pixels_ignored(ws):
    row = ws.pairs()[0]
    mask = export.pair_mask(ws, row)
    doc = lf.read(ws.path(row["label"]))
    expected = lf.rasterize(doc)
    expected[:, :INVALID_COLS] = 255
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 1, 255}
    np.testing.assert_array_equal(export.pair_mask(ws, row["pair_id"]), mask)  # by id too


def test_unlabelled_pair_raises_unless_background_is_asked_for(ws):
    row = [p for p in ws.pairs() if not p["label"]][0]
    with pytest.raises(FormatError, match="no LabelMe annotation") as err:
        export.pair_mask(ws, row)
    assert err.value.field == "label" and err.value.fix
    bg = export.pair_mask(ws, row, unlabelled="background")
    assert (bg[:, INVALID_COLS:] == 0).all() and (bg[:, :INVALID_COLS] == 255).all()
    with pytest.raises(ValueError, match="unlabelled"):
        export.pair_mask(ws, row, unlabelled="skip")
    with pytest.raises(WorkspaceError, match="no pair"):
        export.pair_mask(ws, "nope")


def test_pair_mask_rejects_size_mismatch_and_unknown_labels(ws):
    pid = _labelled(ws)[0]
    row = ws.read_index().pairs[pid]
    doc = lf.read(ws.path(row["label"]))
    lf.write(dict(doc, imageHeight=40), ws.path(row["label"]))
    with pytest.raises(FormatError, match="aligned frame"):
        export.pair_mask(ws, pid)
    label_pair(ws, pid, [lf.make_shape(gas_polygon(0), label="steam")])
    with pytest.raises(FormatError, match="steam") as err:
        export.pair_mask(ws, pid)
    assert err.value.field == "shapes[0].label"


def test_export_masks_writes_labelled_non_blacklisted_pairs(ws, tmp_path):
    black = _labelled(ws)[1]
    ws.set_blacklist({black: "water spray"})
    paths = export.export_masks(ws, tmp_path / "masks")
    assert [p.stem for p in paths] == [p for p in _labelled(ws) if p != black]
    for p in paths:
        np.testing.assert_array_equal(read_image(p), export.pair_mask(ws, p.stem))
    # naming a blacklisted pair explicitly exports it
    assert [p.stem for p in export.export_masks(ws, tmp_path / "one", pairs=[black])] == [black]
    with pytest.raises(WorkspaceError):
        export.export_masks(ws, tmp_path / "x", pairs=["nope"])


def test_export_checks_every_pair_before_writing(ws, tmp_path):
    bad = _labelled(ws)[-1]
    ws.path(ws.read_index().pairs[bad]["label"]).write_text("{not json")
    for func, out in ((export.export_masks, tmp_path / "m"), (export.export_coco, tmp_path / "c.json"),
                      (export.export_gasdb, tmp_path / "g")):
        with pytest.raises(FormatError, match="malformed JSON"):
            func(ws, out)
        assert not out.exists()


def test_export_gasdb_layout_splits_by_recording_and_records_the_blacklist(ws, tmp_path):
    black = _labelled(ws)[0]
    ws.set_blacklist({black: "gas too weak"})
    info = export.export_gasdb(ws, tmp_path / "g")
    out = tmp_path / "g"
    names = info["names"]
    assert sorted(names) == _labelled(ws)  # blacklisted labelled pairs are written too
    assert sorted(names.values()) == [f"{i:05d}" for i in range(1, 5)]
    train, test = gasdb_layout.read_split(out, "train"), gasdb_layout.read_split(out, "test")
    assert names[black] not in train + test
    assert (out / "blacklist.txt").read_text() == f"{names[black]}\n"
    assert info["blacklisted"] == {names[black]: "gas too weak"}
    # no recording on both sides
    rec_of = {names[p]: ws.read_index().pairs[p]["recording"] for p in names}
    assert not {rec_of[n] for n in train} & {rec_of[n] for n in test}
    assert train and test
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert {r["name"]: r["blacklist_reason"] for r in rows}[names[black]] == "gas too weak"
    assert all(r["split"] in ("train", "test", "") for r in rows)
    # every line of every list ends with a newline
    for f in ("train.txt", "test.txt", "blacklist.txt"):
        text = (out / f).read_text()
        assert text == "" or (text.endswith("\n") and all(line == line.strip() for line in text.splitlines()))


def test_export_gasdb_samples_hold_rgb_thermal_and_class_indices(ws, tmp_path):
    info = export.export_gasdb(ws, tmp_path / "g")
    for pid, name in info["names"].items():
        row = ws.read_index().pairs[pid]
        rgb, thermal, label = gasdb_layout.read_sample(tmp_path / "g", name)
        np.testing.assert_array_equal(rgb, read_image(ws.path(row["rgb"])))
        expected = export.pair_mask(ws, pid)
        expected[expected == 255] = 0  # the official loader expects 0/1
        np.testing.assert_array_equal(label, expected)
        # 16-bit thermal mapped to 8 bits with one monotonic stretch per recording
        raw = read_image(ws.path(row["aligned"])).ravel()
        order = np.argsort(raw, kind="stable")
        assert (np.diff(thermal.ravel()[order].astype(int)) >= 0).all()
        assert thermal.max() - thermal.min() > 200
    assert info["ignored_pixels"] == 4 * 48 * INVALID_COLS
    kept = export.export_gasdb(ws, tmp_path / "g255", ignore_value=255)
    assert kept["names"] == info["names"]
    assert (read_image(tmp_path / "g255" / "labels" / "00001.png")[:, :INVALID_COLS] == 255).all()


def test_export_gasdb_explicit_splits_and_names(ws, tmp_path):
    ids = _labelled(ws)
    names = {pid: f"{665 + i:05d}" for i, pid in enumerate(ids)}
    info = export.export_gasdb(ws, tmp_path / "g", splits={"train": ids[:3], "test": ids[3:]}, names=names)
    assert (tmp_path / "g" / "train.txt").read_text() == "00665\n00666\n00667\n"
    assert (tmp_path / "g" / "test.txt").read_text() == "00668\n"
    assert info["splits"] == {"test": 1, "train": 3}
    with pytest.raises(ValueError, match="more than one split"):
        export.export_gasdb(ws, tmp_path / "x", splits={"train": ids, "test": ids[:1]})
    with pytest.raises(ValueError, match="names has no entry"):
        export.export_gasdb(ws, tmp_path / "x", splits={"train": ids}, names={ids[0]: "00001"})
    with pytest.raises(ValueError, match="same Gas-DB name"):
        export.export_gasdb(ws, tmp_path / "x", splits={"train": ids[:2]}, names={ids[0]: "00001", ids[1]: "00001"})
    with pytest.raises(FormatError, match="no LabelMe annotation"):
        unlabelled = [p["pair_id"] for p in ws.pairs() if not p["label"]]
        export.export_gasdb(ws, tmp_path / "x", splits={"train": unlabelled})


def test_exports_are_deterministic(ws, tmp_path):
    export.export_gasdb(ws, tmp_path / "a")
    export.export_gasdb(ws, tmp_path / "b")
    for f in sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def test_cli_export_all_formats(ws, tmp_path):
    runner = CliRunner()
    for fmt, out in (("masks", tmp_path / "m"), ("coco", tmp_path / "c.json"), ("gasdb", tmp_path / "g")):
        res = runner.invoke(main, ["export", str(ws.root), "--format", fmt, str(out), "--json"])
        assert res.exit_code == 0, res.output
        result = json.loads(res.stdout)
        assert result["format"] == fmt
    assert json.loads(runner.invoke(main, ["export", str(ws.root), "--format", "coco", str(tmp_path / "c.json"),
                                           "--json", "--overwrite"]).stdout)["images"] == 4
    res = runner.invoke(main, ["export", str(ws.root), "--format", "masks", str(tmp_path / "m")])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(main, ["export", str(ws.root), "--format", "tiff", str(tmp_path / "t")])
    assert res.exit_code == 2
    ws.path(ws.pairs()[0]["label"]).write_text("[]")
    res = runner.invoke(main, ["export", str(ws.root), "--format", "masks", str(tmp_path / "m2")])
    assert res.exit_code == 1 and "JSON object" in res.output


def test_cli_blacklist_add_list_remove(ws):
    runner = CliRunner()
    pid = _labelled(ws)[0]
    res = runner.invoke(main, ["blacklist", str(ws.root), pid, "--reason", "water spray"])
    assert res.exit_code == 0, res.output
    assert ws.blacklist() == {pid: "water spray"}
    res = runner.invoke(main, ["blacklist", str(ws.root), "--json"])
    assert json.loads(res.stdout)["blacklist"] == {pid: "water spray"}
    assert runner.invoke(main, ["blacklist", str(ws.root), pid]).exit_code == 2  # no reason
    res = runner.invoke(main, ["blacklist", str(ws.root), pid[:-1], "--reason", "x"])
    assert res.exit_code == 2 and "did you mean" in res.output
    assert runner.invoke(main, ["blacklist", str(ws.root), pid, "--remove"]).exit_code == 0
    assert ws.blacklist() == {}
    assert runner.invoke(main, ["blacklist", str(ws.root), pid, "--remove"]).exit_code == 2
    assert "empty" in runner.invoke(main, ["blacklist", str(ws.root)]).output
