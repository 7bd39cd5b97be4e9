"""The index written as a stream (:func:`gasdb_tools.stages.apply_streaming`,
:meth:`Workspace.rewrite_pairs`) gives the bytes the in-memory transaction gives, for any
sequence of index changes; its memory does not grow with the index; it falls back to the
in-memory route on a hand-edited (unsorted) file."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gasdb_tools.errors import WorkspaceError
from gasdb_tools.stages import IndexOps, apply_ops, apply_streaming
from gasdb_tools.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
RECS = ("a", "b", "c")


def _workspace(root: Path, rows) -> Workspace:
    ws = Workspace.init(root)
    with ws.transaction() as index:
        for rec in RECS:
            index.recordings[rec] = {"id": rec, "thermal": f"{rec}.mp4"}
        for pid, rec, extra in rows:
            index.pairs[pid] = {"pair_id": pid, "recording": rec, **extra}
    return ws


pair_ids = st.builds(lambda r, ms: f"{r}_{ms:08d}", st.sampled_from(RECS), st.integers(0, 40))
values = st.one_of(st.text("xy,\" é\n", max_size=4), st.floats(allow_nan=False, allow_infinity=False), st.none())
paths = st.sampled_from(("", "labels/a/x.json", "aligned/b/y z.png"))
columns = st.lists(st.one_of(st.tuples(st.sampled_from(("label", "aligned")), paths),
                             st.tuples(st.sampled_from(("extract_digest", "t_thermal", "zz_note")), values)),
                   max_size=3).map(dict)
def _ops(**kw) -> IndexOps:
    ops = IndexOps(**kw)
    if ops.create:  # rows a stage creates carry their ids (as extract's do)
        for pid, cols in ops.pairs.items():
            cols.update(pair_id=pid, recording=pid.split("_")[0])
    return ops


ops_strategy = st.builds(
    _ops,
    pairs=st.dictionaries(pair_ids, columns, max_size=6),
    recording=st.dictionaries(st.sampled_from(RECS + ("gone",)), st.dictionaries(st.sampled_from(("x_done", "tags")),
                                                                                  st.text("ab", max_size=2),
                                                                                  max_size=2), max_size=2),
    drop_pairs_of=st.dictionaries(st.sampled_from(RECS), st.one_of(st.none(), st.sets(pair_ids, max_size=4)),
                                  max_size=2),
    create=st.booleans(),
    new_pairs_defaults=st.dictionaries(pair_ids, columns, max_size=3),
)
start_rows = st.lists(st.tuples(pair_ids, columns), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=start_rows, batches=st.lists(st.lists(ops_strategy, max_size=4), min_size=1, max_size=3))
def test_streamed_index_changes_write_the_bytes_of_the_in_memory_transaction(tmp_path_factory, rows, batches):
    tmp = tmp_path_factory.mktemp("ix")
    start = {pid: (pid.split("_")[0], extra) for pid, extra in rows}
    a = _workspace(tmp / "a", [(pid, rec, extra) for pid, (rec, extra) in start.items()])
    b = Workspace(shutil.copytree(a.root, tmp / "b"))
    for batch in batches:
        apply_streaming(a, copy.deepcopy(batch))
        with b.transaction() as index:
            for ops in copy.deepcopy(batch):
                apply_ops(index, ops)
    for name in (Workspace.PAIRS, Workspace.RECORDINGS):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name
    assert not [p for p in a.root.iterdir() if p.name.endswith(".tmp")]


def test_a_hand_sorted_file_falls_back_to_the_in_memory_route_and_a_bad_row_is_named(tmp_path):
    ws = _workspace(tmp_path / "ws", [("a_00000001", "a", {}), ("a_00000002", "a", {})])
    path = ws.root / Workspace.PAIRS
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[2] + lines[1])  # rows swapped by hand
    apply_streaming(ws, [IndexOps(pairs={"a_00000001": {"label": "x"}})])
    assert [r["pair_id"] for r in ws.iter_pairs()] == ["a_00000001", "a_00000002"]  # sorted again
    assert ws.read_index().pairs["a_00000001"]["label"] == "x"
    path.write_text(path.read_text().replace("a_00000002,a,", "a_00000002,nobody,"))
    with pytest.raises(WorkspaceError, match=r"pairs.csv: line 3, column recording: .*'nobody'"):
        apply_streaming(ws, [IndexOps(pairs={"a_00000001": {"label": "y"}})])
    with pytest.raises(WorkspaceError, match=r"line 3, column recording"):
        list(ws.iter_pairs())


_RSS = r"""
import resource, sys
sys.path.insert(0, {root!r})
from gasdb_tools.stages import IndexOps, apply_streaming
from gasdb_tools.workspace import Workspace
ws = Workspace({ws!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for k in range(3):
    apply_streaming(ws, [IndexOps(pairs={{"r_00000001": {{"label": "x%d" % k}}}}, recording={{"r": {{"tags": "t"}}}})])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_commit_does_not_hold_the_index_in_memory(tmp_path):
    """Committing one row to an index of 60,000 pairs (about 12 MB of CSV; 100+ MB as dicts)
    raises the peak RSS of the committing process by less than 8 MiB."""
    ws = Workspace.init(tmp_path / "ws")
    with ws.transaction() as index:
        index.recordings["r"] = {"id": "r", "thermal": "r.mp4"}
    path = ws.root / Workspace.PAIRS
    with open(path, "a", encoding="utf-8") as fh:
        for k in range(60_000):
            fh.write(f"r_{k:08d},r,{k * 0.04!r},{k * 0.04!r},0.0,frames/r/rgb/r_{k:08d}.png,"
                     f"frames/r/thermal/r_{k:08d}.png\n")
    out = subprocess.run([sys.executable, "-c", _RSS.format(root=str(ROOT), ws=str(ws.root))], capture_output=True,
                         text=True, check=True)
    assert float(out.stdout.strip()) < 8, out.stdout
    index = ws.read_index()
    assert len(index.pairs) == 60_000 and index.pairs["r_00000001"]["label"] == "x2"
