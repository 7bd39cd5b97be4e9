"""Splits: grouping by recording, ratio bounds, determinism, the random protocol's leak, the leakage audit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from _release_ws import build_workspace
from gasdb_tools.cli import main
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.splits import (
    LeakySplitWarning,
    _greedy_assign,
    Split,
    assign_groups,
    check_split,
    frame_signature,
    load_split,
    make_split,
    near_duplicates,
    parse_ratios,
    split_workspace,
)


def _rows(sizes, scenes=None, gas=None):
    """One metadata row per pair: recording r has sizes[r] pairs."""
    rows = []
    for r, n in enumerate(sizes):
        for k in range(n):
            rows.append({"pair_id": f"r{r:03d}_{k:05d}", "recording": f"r{r:03d}",
                         "scene": scenes[r] if scenes else "sunny", "has_gas": gas[r] if gas else True})
    return rows


# -- ratios ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, val, expected", [
    ("0.8,0.2", None, {"train": 0.8, "test": 0.2}),
    ("0.8, 0.2", 0.1, {"train": 0.7, "val": 0.1, "test": 0.2}),
    ("0.6,0.2,0.2", None, {"train": 0.6, "val": 0.2, "test": 0.2}),
    ([0.5, 0.5], None, {"train": 0.5, "test": 0.5}),
])
def test_parse_ratios(text, val, expected):
    got = parse_ratios(text, val=val)
    assert list(got) == list(expected)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("text, val, match", [
    ("0.8,0.3", None, "sum to 1"),
    ("0.8", None, "2 values"),
    ("a,b", None, "comma-separated"),
    ("1.0,0.0", None, "ratio > 0"),
    ("0.8,0.2", 0.8, "val must be"),
    ("0.6,0.2,0.2", 0.1, "not both"),
    ("nan,0.5", None, "finite"),
])
def test_parse_ratios_rejects(text, val, match):
    with pytest.raises(ValueError, match=match):
        parse_ratios(text, val=val)


# -- group assignment bounds -------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=3, max_size=30),
       ratios=st.sampled_from(["0.8,0.2", "0.7,0.3", "0.5,0.5", "0.7,0.1,0.2", "0.6,0.2,0.2"]),
       seed=st.integers(0, 2**16))
def test_video_split_within_one_recording_of_target(sizes, ratios, seed):
    split = make_split(_rows(sizes), method="video", ratios=ratios, seed=seed)
    ratio = parse_ratios(ratios)
    total, biggest = sum(sizes), max(sizes)
    # one recording; with three splits and few recordings, filling every split can cost a second one
    bound = biggest if len(ratio) == 2 or len(sizes) >= 10 else 2 * biggest
    for name, ids in split.pairs.items():
        assert ids  # no split left empty
        assert abs(len(ids) - ratio[name] * total) <= bound + 1e-9
    assert not split.leaks
    assert sorted(p for ids in split.pairs.values() for p in ids) == sorted(r["pair_id"] for r in _rows(sizes))


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=4, max_size=30), n_scenes=st.integers(1, 4),
       seed=st.integers(0, 2**16), three=st.booleans())
def test_stratified_split_bounds(sizes, n_scenes, seed, three):
    scenes = [f"s{i % n_scenes}" for i in range(len(sizes))]
    gas = [i % 3 != 0 for i in range(len(sizes))]
    ratios = "0.7,0.1,0.2" if three else "0.8,0.2"
    split = make_split(_rows(sizes, scenes, gas), method="scene-stratified", ratios=ratios, seed=seed)
    ratio = parse_ratios(ratios)
    total, biggest = sum(sizes), max(sizes)
    plain = make_split(_rows(sizes, scenes, gas), method="video", ratios=ratios, seed=seed)
    # the overall fractions may drift to max(2 points, the best plain split's deviation), no further
    assert split.balance["max_deviation"] <= max(plain.balance["max_deviation"], 0.02) + 1e-6
    for name, ids in split.pairs.items():
        over = len(ids) - ratio[name] * total
        assert over <= biggest + 1e-9  # never more than one recording above target (2 % of N < one here)
        assert -over <= (2 if three else 1) * biggest + 1e-9
    assert not split.leaks


def test_stratified_spreads_each_stratum_where_video_may_not():
    # two scenes x five equal recordings, 80/20: each scene gets exactly one test recording
    sizes, scenes = [10] * 10, ["sunny"] * 5 + ["rainy"] * 5
    for seed in range(20):
        split = make_split(_rows(sizes, scenes), method="scene-stratified", ratios="0.8,0.2", seed=seed)
        assert split.summary["test"]["scenes"] == {"rainy": 10, "sunny": 10}
        assert split.stratify == ("scene", "has_gas")


def test_greedy_baseline_known_answer_and_errors():
    # the former assign_groups, kept as the search's starting point and the property tests' baseline
    assert _greedy_assign({"a": 5, "b": 3, "c": 2}, {"train": 0.8, "test": 0.2}, ["a", "b", "c"]) == {
        "a": "train", "b": "train", "c": "test"}
    # 2 strata x 5 equal groups: without strata the first stratum can end with no test group
    sizes = {f"g{i}": 1 for i in range(10)}
    order = list(sizes)
    strata = {g: i // 5 for i, g in enumerate(order)}
    plain = _greedy_assign(sizes, {"train": 0.8, "test": 0.2}, order)
    strat = _greedy_assign(sizes, {"train": 0.8, "test": 0.2}, order, strata=strata)
    assert [plain[g] for g in order[:5]].count("test") == 0
    assert [strat[g] for g in order[:5]].count("test") == 1 and [strat[g] for g in order[5:]].count("test") == 1
    with pytest.raises(ValueError, match="every group"):
        _greedy_assign({"a": 1}, {"train": 1.0}, ["a", "b"])


def test_assign_groups_known_answer_and_errors():
    # 8 + 2 is the only way to 80/20 here; the greedy order a, b, c gives it too
    assert assign_groups({"a": 5, "b": 3, "c": 2}, {"train": 0.8, "test": 0.2}) == {
        "a": "train", "b": "train", "c": "test"}
    with pytest.raises(ValueError, match="stratum for every group"):
        assign_groups({"a": 1, "b": 2}, {"train": 0.5, "test": 0.5}, strata={"a": "x"})
    with pytest.raises(ValueError, match="empty"):
        assign_groups({}, {"train": 0.5, "test": 0.5})


# -- make_split behaviour ---------------------------------------------------------------------------
def test_same_seed_same_split_other_seed_other_split():
    rows = _rows([5, 7, 3, 9, 4, 6, 8, 2, 5, 5])
    a = make_split(rows, seed=7).to_dict()
    b = make_split(list(reversed(rows)), seed=7).to_dict()  # input order does not matter
    assert a == b
    others = {tuple(make_split(rows, seed=s).groups["test"]) for s in range(10)}
    assert len(others) > 1


def test_random_split_warns_and_leaks():
    rows = _rows([20, 20, 20])
    with pytest.warns(LeakySplitWarning, match="leak-free"):
        split = make_split(rows, method="random", ratios="0.8,0.2", seed=0)
    assert [len(split.pairs[s]) for s in ("train", "test")] == [48, 12]  # exact to one frame
    assert split.leaks and split.group_key is None
    assert split.to_dict()["leaks_across_splits"] is True


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"method": "kfold"}, ValueError, "method must be"),
    ({"seed": -1}, TypeError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"ratios": "0.7,0.1,0.2"}, ValueError, "at least 3 recordings"),
])
def test_make_split_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_split(_rows([3, 3]), **kwargs)


def test_make_split_rejects_bad_rows():
    with pytest.raises(ValueError, match="appears twice"):
        make_split([{"pair_id": "a", "recording": "r"}] * 2)
    with pytest.raises(ValueError, match="recording"):
        make_split([{"pair_id": "a"}])
    with pytest.raises(ValueError, match="empty"):
        make_split([])


def test_split_dict_round_trip_and_bad_file():
    split = make_split(_rows([4, 5, 6, 7]), seed=3)
    again = Split.from_dict(split.to_dict(name="x"))
    assert again.pairs == split.pairs and again.groups == split.groups and again.method == "video"
    with pytest.raises(FormatError, match="gasdb-split"):
        Split.from_dict({"format": "other"})
    with pytest.raises(FormatError, match="malformed"):
        Split.from_dict({"format": "gasdb-split", "splits": {"train": {}}})


# -- the leakage audit on arrays ---------------------------------------------------------------------
def test_signature_cancels_offset_and_gain_but_sees_local_change():
    rng = np.random.default_rng(0)
    base = (rng.random((128, 160)) * 200).astype(np.float32)
    sig = frame_signature(base.astype(np.uint8))
    brighter = frame_signature(np.clip(base * 1.2 + 20, 0, 255).astype(np.uint8))  # AGC gain + offset
    assert np.abs(sig - brighter).max() < 0.1
    moved = base.copy()
    moved[40:80, 60:110] = 255  # a blob: 20 % of the frame changed
    found = near_duplicates([sig], [brighter, frame_signature(moved.astype(np.uint8))])
    assert [(i, j) for i, j, _ in found] == [(0, 0)]
    assert frame_signature(base.astype(np.uint16) * 257).shape == (64, 80)


def test_near_duplicates_matches_brute_force():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(20, 64, 80)).astype(np.float32)
    noisy = base + rng.normal(scale=0.1, size=base.shape).astype(np.float32)
    noisy[::3] += rng.normal(scale=2, size=noisy[::3].shape).astype(np.float32)  # every 3rd really differs
    a, b = np.clip(base, -4, 4), np.clip(noisy, -4, 4)
    got = near_duplicates(a, b, tol=0.5, outlier_fraction=0.01)
    k = int(0.01 * 64 * 80)
    brute = sorted((i, j) for i in range(20) for j in range(20)
                   if np.count_nonzero(np.abs(a[i] - b[j]) > 0.5) <= k)
    assert [(i, j) for i, j, _ in got] == brute
    assert {i for i, _ in brute} == {i for i in range(20) if i % 3}
    same = near_duplicates(a[:4].repeat(2, axis=0), None, same=True)
    assert [(i, j) for i, j, _ in same] == [(0, 1), (2, 3), (4, 5), (6, 7)]


def test_near_duplicates_rejects_bad_arguments():
    with pytest.raises(ValueError, match="differ in size"):
        near_duplicates(np.zeros((1, 4, 4)), np.zeros((1, 5, 5)))
    with pytest.raises(ValueError, match="tol"):
        near_duplicates(np.zeros((1, 4)), np.zeros((1, 4)), tol=0)
    with pytest.raises(ValueError, match="shape"):
        frame_signature(np.zeros((4, 4, 2)))


# -- on a workspace --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("splits") / "ws", recordings=6, pairs_per=[4, 5, 3, 6, 4, 5],
                           gas=[True, True, False, True, False, True], blacklist={(0, 3): "water spray"},
                           unlabelled=[(1, 4)], step_s=0.04)


def test_video_split_on_workspace(ws, tmp_path):
    path, split = split_workspace(ws, method="video", ratios="0.8,0.2", seed=5, name="v")
    data = load_split(ws, "v")
    groups = [set(data.groups[s]) for s in data.groups]
    assert not set.intersection(*groups)  # zero recordings shared
    rec_of = {p["pair_id"]: p["recording"] for p in ws.pairs()}
    for s, ids in data.pairs.items():
        assert {rec_of[p] for p in ids} == set(data.groups[s])
    excluded = data.excluded
    assert list(excluded["blacklisted"].values()) == ["water spray"]
    assert len(excluded["unlabelled"]) == 1
    total = sum(len(v) for v in data.pairs.values())
    assert total == 27 - 2
    assert abs(len(data.pairs["test"]) - 0.2 * total) <= 6
    first = path.read_bytes()
    path2, _ = split_workspace(ws, method="video", ratios="0.8,0.2", seed=5, name="v")  # same seed: no-op
    assert path2.read_bytes() == first
    assert check_split(ws, "v").ok


def test_split_file_is_byte_identical_across_workspaces(tmp_path):
    files = []
    for k in range(2):
        w = build_workspace(tmp_path / f"w{k}", recordings=4, pairs_per=2, size=(64, 64))
        path, _ = split_workspace(w, method="scene-stratified", ratios="0.5,0.5", seed=11)
        files.append(path.read_bytes())
    assert files[0] == files[1]


def test_different_split_needs_force(ws):
    split_workspace(ws, seed=1, name="f")
    with pytest.raises(WorkspaceError, match="different split"):
        split_workspace(ws, seed=2, name="f")
    split_workspace(ws, seed=2, name="f", force=True)
    assert load_split(ws, "f").seed == 2
    with pytest.raises(WorkspaceError, match="no split named"):
        load_split(ws, "nope")


def test_check_flags_random_split_neighbours(ws):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakySplitWarning)
        split_workspace(ws, method="random", ratios="0.5,0.5", seed=0, name="r")
    report = check_split(ws, "r")
    assert not report.ok
    assert report.shared_groups  # recordings in both splits
    assert report.near_identical  # frames 40 ms apart on both sides
    rec_of = {p["pair_id"]: p["recording"] for p in ws.pairs()}
    for d in report.near_identical:
        assert d["split_a"] != d["split_b"]
        assert rec_of[d["a"]] == rec_of[d["b"]]  # neighbours of one recording, not the fixed background


def test_check_reports_identical_frames_and_missing_pairs(tmp_path):
    w = build_workspace(tmp_path / "w", recordings=3, pairs_per=2, size=(64, 64))
    split_workspace(w, seed=0)
    data = load_split(w, "default")
    a, b = data.pairs["train"][0], data.pairs["test"][0]
    rows = {p["pair_id"]: p for p in w.pairs()}
    for col in ("rgb", "aligned"):  # pair b now shows exactly the frames of pair a
        w.path(rows[b][col]).write_bytes(w.path(rows[a][col]).read_bytes())
    report = check_split(w)
    assert [(d["a"], d["b"]) for d in report.identical] == [tuple(sorted((a, b)))]
    near = {(d["a"], d["b"]) for d in report.near_identical}
    assert tuple(sorted((a, b))) not in near  # identical pairs are not listed twice
    assert all(b in pair for pair in near)  # a's neighbours now look like b too
    with w.transaction() as index:
        del index.pairs[data.pairs["train"][1]]
    assert check_split(w).missing == [data.pairs["train"][1]]


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_split_and_check(ws):
    runner = CliRunner()
    res = runner.invoke(main, ["split", str(ws.root), "--ratios", "0.8,0.2", "--val", "0.1", "--seed", "2",
                               "--name", "cli", "--json"])
    assert res.exit_code == 0, res.output
    assert '"val"' in res.stdout and '"leaks_across_splits": false' in res.stdout
    res = runner.invoke(main, ["split", str(ws.root), "--check", "--name", "cli"])
    assert res.exit_code == 0 and "ok" in res.output
    res = runner.invoke(main, ["split", str(ws.root), "--strategy", "random", "--name", "cli-r", "--seed", "0"])
    assert res.exit_code == 0
    assert "THIS SPLIT LEAKS" in res.stderr
    res = runner.invoke(main, ["split", str(ws.root), "--check", "--name", "cli-r"])
    assert res.exit_code == 1 and "LEAKS" in res.output and "near-identical" in res.output
    res = runner.invoke(main, ["split", str(ws.root), "--ratios", "0.9,0.2"])
    assert res.exit_code == 2 and "sum to 1" in res.output
    res = runner.invoke(main, ["split", str(ws.root), "--check", "--name", "absent"])
    assert res.exit_code == 1 and "no split named" in res.output


def test_check_audits_a_thermal_camera_alone_and_names_missing_pairs(tmp_path):
    """A workspace with a thermal-only recording is audited (black RGB, as the release packs it);
    a split whose pairs went missing is not called leaky, and the CLI says what to do."""
    from _release_ws import add_thermal_only

    w = build_workspace(tmp_path / "w", recordings=3, pairs_per=2, size=(64, 64))
    add_thermal_only(w, "th00", pairs=3, size=(64, 64))
    split_workspace(w, seed=0)
    report = check_split(w)
    assert report.ok and report.pairs == 9
    res = CliRunner().invoke(main, ["split", str(w.root), "--check"])
    assert res.exit_code == 0 and res.output.rstrip().endswith(": ok"), res.output
    gone = load_split(w, "default").pairs["train"][0]
    with w.transaction() as index:
        del index.pairs[gone]
    res = CliRunner().invoke(main, ["split", str(w.root), "--check"])
    assert res.exit_code == 1 and "LEAKS" not in res.output and "1 pair(s) missing" in res.output
    assert f"gasdb split {w.root} --force" in res.output
