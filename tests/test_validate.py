"""``gasdb validate``: every kind of problem is found, with file, field and fix; a clean workspace passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from annotation_fixtures import H, W, gas_polygon, label_pair, make_workspace
from gasdb_tools import labelme_format as lf
from gasdb_tools import validate as v
from gasdb_tools.cli import main
from gasdb_tools.imaging import write_image


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws")


def _labelled(ws):
    return [p["pair_id"] for p in ws.pairs() if p["label"]]


def _checks(problems):
    return sorted({p.check for p in problems})


def test_clean_workspace_has_no_problems(ws):
    assert v.validate_workspace(ws) == []


# ------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------
def test_self_intersection_known_cases():
    assert not v.polygon_self_intersects([[0, 0], [10, 0], [10, 10], [0, 10]])
    assert v.polygon_self_intersects([[0, 0], [10, 10], [10, 0], [0, 10]])  # bow tie
    assert not v.polygon_self_intersects([[0, 0], [10, 0], [5, 5], [10, 10], [0, 10]])  # concave is fine
    assert v.polygon_self_intersects([[0, 0], [10, 0], [10, 10], [5, 0], [0, 10]])  # vertex touches an edge
    assert not v.polygon_self_intersects([[0, 0], [0, 0], [10, 0], [10, 10]])  # repeated vertex ignored
    assert v.polygon_area([[0, 0], [4, 0], [4, 3]]) == pytest.approx(6.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 40), st.integers(0, 2**32 - 1))
def test_star_shaped_polygons_never_self_intersect_and_scrambled_often_do(n, seed):
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    gaps = np.diff(np.r_[angles, angles[0] + 2 * np.pi])
    if len(np.unique(angles)) < n or gaps.max() >= np.pi:
        return  # star-shaped about the centre (hence simple) only when every angular gap is < 180 deg
    radii = rng.uniform(5, 20, n)
    pts = np.c_[50 + radii * np.cos(angles), 50 + radii * np.sin(angles)]
    assert not v.polygon_self_intersects(pts)
    # the same polygon walked backwards or from another vertex
    assert not v.polygon_self_intersects(pts[::-1])
    assert not v.polygon_self_intersects(np.roll(pts, 3, axis=0))


def test_blocked_search_matches_unblocked():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = rng.uniform(0, 100, (int(rng.integers(4, 60)), 2))
        assert v.polygon_self_intersects(pts, block=7) == v.polygon_self_intersects(pts, block=1000)


# ------------------------------------------------------------------------------------------
# one kind of problem at a time
# ------------------------------------------------------------------------------------------
def _only(problems, check):
    assert [p.check for p in problems] == [check], [str(p) for p in problems]
    p = problems[0]
    assert p.file and p.message and p.fix
    return p


def test_malformed_json(ws):
    pid = _labelled(ws)[0]
    path = ws.path(ws.read_index().pairs[pid]["label"])
    path.write_text('{"shapes": [}')
    p = _only(v.validate_workspace(ws), "json")
    assert p.file == str(path) and p.field.startswith("line 1") and p.pair_id == pid


def test_schema_problem_names_the_field(ws):
    pid = _labelled(ws)[0]
    path = ws.path(ws.read_index().pairs[pid]["label"])
    doc = json.loads(path.read_text())
    doc["shapes"][0]["points"] = doc["shapes"][0]["points"][:2]
    path.write_text(json.dumps(doc))
    p = _only(v.validate_workspace(ws), "schema")
    assert p.field == "shapes[0].points" and "needs >= 3" in p.message


def test_missing_image_names_resolved_path_and_fallback(ws):
    pid = _labelled(ws)[0]
    row = ws.read_index().pairs[pid]
    ws.path(row["enhanced"]).unlink()
    p = _only(v.validate_workspace(ws), "image")
    assert "also tried" in p.message and p.field == "imagePath"


def test_moved_image_found_by_basename_is_reported(ws):
    pid = _labelled(ws)[0]
    row = ws.read_index().pairs[pid]
    label = ws.path(row["label"])
    write_image(label.parent / f"{pid}.png", np.zeros((H, W), np.uint8))
    doc = lf.read(label)
    lf.write(dict(doc, imagePath=f"gone/{pid}.png"), label)
    p = _only(v.validate_workspace(ws), "image")
    assert "found by name" in p.message


def test_16_bit_image_is_reported(ws):
    pid = _labelled(ws)[0]
    row = ws.read_index().pairs[pid]
    write_image(ws.path(row["enhanced"]), np.zeros((H, W), np.uint16))
    p = _only(v.validate_workspace(ws), "image")
    assert "16-bit" in p.message and "enhanced" in p.fix


def test_size_mismatch_with_image_and_with_frame(ws):
    pid = _labelled(ws)[0]
    path = ws.path(ws.read_index().pairs[pid]["label"])
    lf.write(dict(lf.read(path), imageWidth=W + 1), path)
    problems = v.validate_workspace(ws)
    assert _checks(problems) == ["size"] and len(problems) == 2  # vs the image and vs the aligned frame
    assert {p.field for p in problems} == {"imageHeight"}


def test_points_outside_degenerate_and_self_intersecting(ws):
    pid = _labelled(ws)[0]
    label_pair(ws, pid, [
        lf.make_shape([[10, 10], [W + 3, 10], [20, 30]]),  # outside
        lf.make_shape([[5, 5], [10, 10], [15, 15]]),  # collinear
        lf.make_shape([[5, 5], [30, 30], [30, 5], [5, 30]]),  # bow tie
        lf.make_shape([[5, 5], [5, 20]], shape_type="rectangle"),  # zero width
        lf.make_shape([[5, 5], [5, 5]], shape_type="circle"),
        lf.make_shape([[1, 1], [2, 2]], shape_type="mask", mask=np.zeros((2, 2), bool)),
    ])
    problems = v.validate_workspace(ws)
    by_field = {(p.check, p.field) for p in problems}
    assert ("points", "shapes[0].points[1]") in by_field
    assert ("degenerate", "shapes[1].points") in by_field
    assert ("self-intersection", "shapes[2].points") in by_field
    assert {("degenerate", f"shapes[{i}].points") for i in (3, 4, 5)} <= by_field
    assert len(problems) == 6


def test_points_on_the_last_pixel_are_inside():
    doc = lf.new_document("a.png", H, W, shapes=[lf.make_shape([[0, 0], [W - 1, 0], [W - 1, H - 1]])])
    assert v.validate_document(doc) == []


def test_unknown_label(ws):
    pid = _labelled(ws)[0]
    label_pair(ws, pid, [lf.make_shape(gas_polygon(0)), lf.make_shape(gas_polygon(1), label="steam")])
    p = _only(v.validate_workspace(ws), "label")
    assert p.field == "shapes[1].label" and "'gas'" in p.fix
    # with a label list that has it, it is fine
    assert v.validate_workspace(ws, class_names=["__ignore__", "_background_", "gas", "steam"]) == []


def test_empty_annotation_on_frame_marked_as_gas(ws):
    rec_a, rec_b = [p for p in _labelled(ws) if p.startswith("rec_a")], [p for p in _labelled(ws)
                                                                          if p.startswith("rec_b")]
    label_pair(ws, rec_a[0], [])  # rec_a is tagged "leak"
    label_pair(ws, rec_b[0], [])  # rec_b is not: an empty frame is allowed
    label_pair(ws, rec_b[1], [], flags={"gas": True})  # but a frame flagged gas is not
    problems = v.validate_workspace(ws)
    assert sorted((p.check, p.pair_id) for p in problems) == [("empty-gas", rec_a[0]), ("empty-gas", rec_b[1])]
    # ticking no_leak or blacklisting clears it
    label_pair(ws, rec_a[0], [], flags={"no_leak": True})
    ws.set_blacklist({rec_b[1]: "water spray"})
    assert v.validate_workspace(ws) == []
    # an __ignore__-only annotation has no gas either
    label_pair(ws, rec_a[0], [lf.make_shape(gas_polygon(0), label="__ignore__")])
    assert [p.check for p in v.validate_workspace(ws)] == ["empty-gas"]


def test_marked_as_gas_rules():
    doc = {"flags": {}}
    assert not v.marked_as_gas(doc)
    assert v.marked_as_gas({"flags": {"leak": True}})
    assert v.marked_as_gas(doc, {"tags": "near;leak"}) and v.marked_as_gas(doc, {"has_gas": "true"})
    assert not v.marked_as_gas({"flags": {"no_leak": True, "gas": True}}, {"tags": "leak"})


def test_pairs_missing_a_modality_and_label_files(ws):
    ids = [p["pair_id"] for p in ws.pairs()]
    with ws.transaction() as index:
        index.pairs[ids[0]]["thermal"] = ""
        index.pairs[ids[1]]["label"] = "labels/rec_a/gone.json"
    ws.path(ws.read_index().pairs[ids[3]]["rgb"]).unlink()
    problems = v.validate_workspace(ws)
    got = sorted(((p.check, p.pair_id, p.field) for p in problems), key=str)
    assert ("modality", ids[0], f"{ids[0]}.thermal") in got
    assert ("modality", ids[3], f"{ids[3]}.rgb") in got
    assert ("label-file", ids[1], None) in got
    orphan = [p for p in problems if p.check == "label-file" and p.pair_id is None]
    assert len(orphan) == 1 and orphan[0].file.endswith(f"{ids[1]}.json")


def test_problems_serialise(ws):
    pid = _labelled(ws)[0]
    ws.path(ws.read_index().pairs[pid]["label"]).write_text("nope")
    (p,) = v.validate_workspace(ws)
    d = p.to_dict()
    assert set(d) == {"check", "message", "file", "field", "fix", "pair_id"}
    assert str(p).startswith(p.file) and "->" in str(p)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def test_cli_validate_exit_codes_and_json(ws):
    runner = CliRunner()
    res = runner.invoke(main, ["validate", str(ws.root)])
    assert res.exit_code == 0 and "0 problems" in res.output
    pid = _labelled(ws)[0]
    label_pair(ws, pid, [lf.make_shape(gas_polygon(0), label="steam")])
    res = runner.invoke(main, ["validate", str(ws.root), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["pairs"] == 6
    assert [(p["check"], p["field"], p["pair_id"]) for p in report["problems"]] == [("label", "shapes[0].label", pid)]
    res = runner.invoke(main, ["validate", str(ws.root)])
    assert res.exit_code == 1 and "[label]" in res.output and "shapes[0].label" in res.output
    assert runner.invoke(main, ["validate", str(ws.root / "nope")]).exit_code == 2
