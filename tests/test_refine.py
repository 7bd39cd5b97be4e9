"""Learning from corrections: preannotate --refine, propagation, the fusion model, gasdb suggest."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gasdb_tools import labelme_format, review
from gasdb_tools.background import GasParams
from gasdb_tools.cli import main
from gasdb_tools.metrics import confusion, scores
from gasdb_tools.polygons import mask_to_shapes
from gasdb_tools.preannotate import preannotate_workspace
from gasdb_tools.propagate import FEATURES, Carrier, LogisticFusion, blend, carry
from gasdb_tools.refine import candidates, disagreement, fusion_mask, held_out_choice
from gasdb_tools.status import workspace_status
from gasdb_tools.suggest import Candidate, rank, suggest_workspace
from test_preannotate import N_FRAMES, _draft_mask, _make_workspace


def _correct(ws, pid, mask, *, approve=False):
    """What an annotator does in LabelMe: redraw the gas (exact mask shapes), maybe tick approved."""
    path = review.label_path(ws, ws.read_index().pairs[pid])
    doc = labelme_format.read(path)
    doc["shapes"] = mask_to_shapes(mask, mode="mask", min_area=0)
    if approve:
        doc["flags"]["approved"] = True
    labelme_format.write(doc, path)


def _pending_iou(ws, truth, corrected):
    cm = np.zeros((2, 2), np.int64)
    for pid in truth:
        if pid not in corrected:
            cm += confusion(truth[pid], _draft_mask(ws, pid))
    return scores(cm)["gas"]["iou"]


# ------------------------------------------------------------------------------------------
# the whole loop on the simulated rig
# ------------------------------------------------------------------------------------------
def test_refine_learns_from_corrections_and_records_the_fit(tmp_path):
    ws, truth = _make_workspace(tmp_path, contrast=10.0)
    preannotate_workspace(ws)
    pids = sorted(truth)
    gas = [p for p in pids if truth[p].any()]
    keys = [gas[3], gas[len(gas) // 2], gas[-3]]
    static = _pending_iou(ws, truth, keys)
    for k in keys:
        _correct(ws, k, truth[k], approve=k == keys[0])
    report = preannotate_workspace(ws, refine=True)
    rec = report["recordings"][0]
    refined = rec["refined"]
    assert report["refine"] and rec["written"] == N_FRAMES - 3 and rec["kept_edited"] == 3
    assert refined["held_out"]["units"] == "frames" and refined["held_out"]["pairs"] == keys
    assert set(refined["held_out"]["iou"]) == {"base", "params", "fusion"}
    assert refined["choice"] in ("params", "fusion")  # the corrections taught it something
    best = max(v for v in refined["held_out"]["iou"].values() if v is not None)
    assert refined["held_out"]["iou"][refined["choice"]] == best
    after = _pending_iou(ws, truth, keys)
    assert after > static + 0.05, (static, after)
    doc = labelme_format.read(review.label_path(ws, ws.read_index().pairs[pids[-1]]))
    assert doc["gasdb"]["preannot"]["refined"] == refined and doc["gasdb"]["review"]["status"] == "pending"
    assert "uncertainty" in doc["gasdb"]["preannot"]["stats"]
    status = workspace_status(ws)["recordings"][0]["stages"]["preannotate"]
    assert status.get("done") == N_FRAMES and not status.get("stale")  # the refined recipe is the expected one
    again = preannotate_workspace(ws, refine=True)  # same corrections, same fit: nothing to rewrite
    assert again["written"] == 0 and again["recordings"][0]["refined"] == refined


def test_refine_without_corrections_keeps_plain_drafts(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    report = preannotate_workspace(ws, refine=True)
    assert report["written"] == 0
    assert "no corrected pairs" in report["recordings"][0]["refined"]["note"]


def test_one_corrected_pair_is_judged_on_its_checkerboard_halves(tmp_path):
    ws, truth = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    pid = [p for p in sorted(truth) if truth[p].any()][10]
    _correct(ws, pid, truth[pid])
    refined = preannotate_workspace(ws, refine=True, search=False)["recordings"][0]["refined"]
    assert refined["held_out"]["units"] == "blocks" and refined["held_out"]["iou"]["params"] is None


def test_flagged_ambiguous_and_excluded_corrections_are_not_learnt_from(tmp_path):
    ws, truth = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    gas = [p for p in sorted(truth) if truth[p].any()]
    for pid, flag in ((gas[2], "ambiguous"), (gas[5], "water_spray"), (gas[8], "too_faint")):
        path = review.label_path(ws, ws.read_index().pairs[pid])
        doc = labelme_format.read(path)
        doc["shapes"] = mask_to_shapes(truth[pid], mode="mask", min_area=0)
        doc["flags"][flag] = True
        labelme_format.write(doc, path)
    report = preannotate_workspace(ws, refine=True)
    assert "no corrected pairs" in report["recordings"][0]["refined"]["note"]


def _corrupt_to(ws, pid, kind, truth):
    """Put a document into one of the states an annotator or reviewer can leave it in."""
    path = review.label_path(ws, ws.read_index().pairs[pid])
    if kind == "edited":
        _correct(ws, pid, truth)
    elif kind == "approved":
        review.approve(ws, [pid], by="ana")
    elif kind == "rejected":
        _correct(ws, pid, truth)
        review.reject(ws, [pid], by="bob", note="edge")
    elif kind == "flag":
        doc = labelme_format.read(path)
        doc["flags"]["no_leak"] = True
        labelme_format.write(doc, path)
    return path


@pytest.fixture(scope="module")
def drafted(tmp_path_factory):
    ws, truth = _make_workspace(tmp_path_factory.mktemp("drafted"), n_frames=30)
    preannotate_workspace(ws)
    return ws, truth


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: each example runs refine
@given(kinds=st.lists(st.sampled_from(["untouched", "edited", "approved", "rejected", "flag"]), min_size=30,
                      max_size=30))
def test_refine_never_touches_annotator_work_and_is_reproducible(drafted, tmp_path_factory, kinds):
    """Property: whatever mix of edited, approved, rejected and flagged documents, --refine rewrites only
    untouched drafts, and two runs on the same workspace give the same fit and the same files."""
    ws0, truth = drafted
    root = tmp_path_factory.mktemp("case") / "ws"
    shutil.copytree(ws0.root, root)
    shutil.copy2(ws0.read_index().recordings["rec1"]["thermal"], root.parent / "thermal.mkv")
    from gasdb_tools.workspace import Workspace

    ws = Workspace(root)
    with ws.transaction() as idx:
        idx.recordings["rec1"]["thermal"] = str(root.parent / "thermal.mkv")
    pids = sorted(truth)
    for pid, kind in zip(pids, kinds):
        if kind != "untouched":
            _corrupt_to(ws, pid, kind, truth[pid])
    before = review.read_states(ws)  # redrawing a draft exactly as it was is no edit: it stays a draft
    touched = {pid: review.label_path(ws, ws.read_index().pairs[pid]).read_bytes() for pid in pids
               if not before[pid].untouched}
    assert all(before[p].status != "pending" or before[p].untouched or kind == "rejected"
               for p, kind in zip(pids, kinds))
    twin = root.parent / "twin"
    shutil.copytree(root, twin)
    first = preannotate_workspace(ws, refine=True, search=False)
    for pid, data in touched.items():
        assert review.label_path(ws, ws.read_index().pairs[pid]).read_bytes() == data, pid
    states = review.read_states(ws)
    assert all(states[p].untouched for p in pids if p not in touched)
    second = preannotate_workspace(Workspace(twin), refine=True, search=False)
    assert first["recordings"][0].get("refined") == second["recordings"][0].get("refined")
    for pid in pids:
        a = review.label_path(ws, ws.read_index().pairs[pid])
        b = twin / a.relative_to(root)
        if pid not in touched:  # imagePath is absolute and differs between the copies; the rest must not
            da, db = labelme_format.read(a), labelme_format.read(b)
            da.pop("imagePath"), db.pop("imagePath")
            assert da == db, pid


def test_cli_refine_json_and_usage_errors(tmp_path):
    ws, truth = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    gas = [p for p in sorted(truth) if truth[p].any()]
    for pid in (gas[4], gas[-4]):
        _correct(ws, pid, truth[pid])
    runner = CliRunner()
    result = runner.invoke(main, ["preannotate", str(ws.root), "--refine", "--no-search", "--carry", "1.5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    refined = report["recordings"][0]["refined"]
    assert refined["carry_window_s"] == 1.5 and refined["held_out"]["iou"]["params"] is None
    result = runner.invoke(main, ["preannotate", str(ws.root), "--refine"])
    assert result.exit_code == 0 and "held-out IoU over 2 corrected pair(s) (frames)" in result.output
    assert runner.invoke(main, ["preannotate", str(ws.root), "--no-search"]).exit_code == 2
    result = runner.invoke(main, ["preannotate", str(ws.root), "--refine", "--method", "mog2"])
    assert result.exit_code == 2 and "refine fits the gas pipeline" in result.output


# ------------------------------------------------------------------------------------------
# the pieces
# ------------------------------------------------------------------------------------------
def test_held_out_choice_is_leave_one_out():
    # candidate 1 is perfect on unit 0 and useless on unit 1; candidate 0 is mediocre on both
    conf = np.array([[[6, 2, 2], [6, 2, 2]], [[10, 0, 0], [0, 10, 10]]], float)
    best, held, seen = held_out_choice(conf)
    # held out unit 0: chosen on unit 1 -> candidate 0 -> (6, 2, 2); held out unit 1: chosen on unit 0 -> 1 -> (0, 10, 10)
    assert best == 0 and seen == pytest.approx(12 / 20) and held == pytest.approx(6 / 30)
    assert held_out_choice(conf[:, :1])[1] == pytest.approx(1.0)  # one unit: in-sample (callers split it)


def test_candidates_start_with_the_base_and_cover_every_fitted_knob():
    base = GasParams(k=5.0, polarity="absorbing")
    sets = candidates(base)
    assert sets[0] == base and len(set(sets)) == len(sets)
    assert {p.k for p in sets} == {3.75, 5.0, 7.5} and {p.polarity for p in sets} == {"both", "emitting", "absorbing"}
    assert {p.hold for p in sets} == {1, 5, 10, 25} and {p.k_low for p in sets} >= {None, 2.25, 2.5}
    assert {p.activity_ratio for p in sets} == {None, 2.5} and {p.min_area_frac for p in sets} == {0.0005, 0.002}


def test_logistic_fusion_weights_and_threshold():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    y = 2 * x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=4000) > 1.0
    model = LogisticFusion().fit(x, y)
    assert model.coef[0] > 0 > model.coef[1] and abs(model.coef[2]) < 0.2 * model.coef[0]
    assert (model.predict(x) == y).mean() > 0.95
    again = LogisticFusion.from_dict(json.loads(json.dumps(model.to_dict())))
    assert np.allclose(again.proba(x), model.proba(x), atol=1e-4)
    assert np.allclose(model.complete(model.partial(x[:, :2]), x[:, 2]), model.proba(x), atol=1e-5)
    # a sample weight of 3 is three samples
    w = rng.integers(1, 4, size=300)
    a = LogisticFusion(l2=0).fit(x[:300], y[:300], w)
    b = LogisticFusion(l2=0).fit(np.repeat(x[:300], w, axis=0), np.repeat(y[:300], w))
    assert np.allclose(a.coef, b.coef, atol=1e-3)
    with pytest.raises(ValueError, match="both gas and background"):
        LogisticFusion().fit(x, np.zeros(len(x), bool))
    assert len(model.to_dict()["features"]) == len(FEATURES)


def test_carried_masks_follow_the_scene_motion():
    """A textured scene and a mask moving 2 px right per frame: the carried mask moves with them."""
    rng = np.random.default_rng(1)
    texture = (rng.random((120, 200)) * 255).astype(np.float32)
    import cv2

    texture = cv2.GaussianBlur(texture, (0, 0), 2)
    mask = np.zeros((96, 128), np.float32)
    mask[30:60, 30:60] = 1
    carrier = Carrier([0.0], window_s=1.0, levels=(float(texture.min()), float(texture.max())))
    out = []
    for k in range(6):
        frame = texture[10:106, 40 - 2 * k:168 - 2 * k]  # the scene slides right by 2 px per frame
        out += carrier.step(k / 10, frame)
        carrier.pair(k, correction=mask if k == 0 else None)
    out += carrier.finish()
    carried = {key: c for key, _, c in out}
    assert carried[0] is None
    m5 = carried[5] / carried[5].max()
    cols = np.flatnonzero(m5[45] > 0.5)
    assert abs(cols.mean() - (44.5 + 10)) < 2.0  # 5 frames x 2 px to the right
    assert 0.6 < carried[5].max() < 0.7  # weight 1 / (1 + 0.5 / 1.0)


def test_carry_pulls_along_the_flow():
    m = np.zeros((5, 5), np.float32)
    m[2, 2] = 1
    flow = np.zeros((5, 5, 2), np.float32)
    flow[..., 1] = -1  # every pixel comes from the row above
    assert carry(m, flow)[3, 2] == 1 and carry(m, flow)[2, 2] == 0


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 10.0), st.floats(0.05, 3.0), st.integers(0, 2**31 - 1))
def test_blend_moves_from_the_carried_mask_to_the_fusion_with_time(near_s, tau_s, seed):
    rng = np.random.default_rng(seed)
    prob = rng.random((6, 7)).astype(np.float32)
    mask = rng.random((6, 7)) > 0.5
    carried = mask.astype(np.float32) / np.float32(1.0 + near_s / 2.0)  # as Carrier releases it
    out = blend(prob, carried, near_s, window_s=2.0, tau_s=tau_s)
    lam = np.exp(-near_s / tau_s)
    assert out.dtype == np.float32 and ((out >= 0) & (out <= 1)).all()
    np.testing.assert_allclose(out, (1 - lam) * prob + lam * mask, atol=1e-5)
    assert (blend(prob, None, None) == prob).all() and (blend(prob, carried, near_s, tau_s=0.0) == prob).all()


def test_fusion_blobs_are_kept_only_where_a_seed_touches_them():
    prob = np.zeros((60, 80), np.float32)
    prob[10:25, 10:30] = 0.95  # the plume, where the background model also fires
    prob[40:52, 50:70] = 0.95  # the fusion alone: noise of a frame nobody corrected
    seed = np.zeros(prob.shape, bool)
    seed[15, 15] = True
    free = fusion_mask(prob, GasParams(), 0.5)
    kept = fusion_mask(prob, GasParams(), 0.5, seed=seed)
    assert free[45, 60] and not kept[45, 60]
    assert (kept == (free & (np.indices(prob.shape)[0] < 30))).all()  # the plume keeps its whole outline
    assert not fusion_mask(prob, GasParams(), 0.5, seed=np.zeros_like(seed)).any()


def test_disagreement_of_a_stray_blob_is_small_and_of_a_missed_plume_total():
    empty = np.zeros((240, 320), bool)
    blob = empty.copy()
    blob[100:106, 100:107] = True  # 42 pixels in a gas-free frame
    plume = empty.copy()
    plume[50:110, 60:160] = True
    assert disagreement(empty, empty) == 0.0
    assert disagreement(empty, blob) == pytest.approx(42 / (0.005 * 240 * 320))
    assert disagreement(empty, plume) == 1.0 and disagreement(plume, empty) == 1.0
    half = empty.copy()
    half[50:110, 60:110] = True
    assert disagreement(half, plume) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------
# gasdb suggest
# ------------------------------------------------------------------------------------------
def test_rank_prefers_unsure_drafts_far_from_corrections_and_is_deterministic():
    cands = [Candidate(f"r_{k:02d}", "r", float(k), uncertainty=0.5 if k == 7 else 0.05) for k in range(20)]
    first = [c.pair_id for c in rank(cands, {"r": [0.0]}, 5)]
    again = [c.pair_id for c in rank(list(reversed(cands)), {"r": [0.0]}, 5)]
    assert first == again and first[0] == "r_07"
    assert len(set(first)) == 5 and "r_00" not in first
    with pytest.raises(ValueError, match="n must be"):
        rank(cands, {}, -1)


def test_suggest_lists_pending_pairs_only_and_the_cli_prints_them(tmp_path):
    ws, truth = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    pids = sorted(truth)
    _correct(ws, pids[20], truth[pids[20]])
    path = review.label_path(ws, ws.read_index().pairs[pids[30]])
    doc = labelme_format.read(path)
    doc["flags"]["water_spray"] = True  # excluded: edited, and not to be corrected either
    labelme_format.write(doc, path)
    report = suggest_workspace(ws, 8)
    chosen = [s["pair_id"] for s in report["suggestions"]]
    assert len(chosen) == 8 and pids[20] not in chosen and pids[30] not in chosen
    assert report["corrected"] == 1 and report["pending"] == N_FRAMES - 2 and report["without_stats"] == 0
    assert chosen == [s["pair_id"] for s in suggest_workspace(ws, 8)["suggestions"]]
    assert all(abs(s["t"] - float(ws.read_index().pairs[pids[20]]["t_thermal"])) > 0.25 for s in report["suggestions"][:2])
    result = CliRunner().invoke(main, ["suggest", str(ws.root), "-n", "3", "--json"])
    assert result.exit_code == 0 and [s["pair_id"] for s in json.loads(result.output)["suggestions"]] == chosen[:3]
    result = CliRunner().invoke(main, ["suggest", str(ws.root), "-n", "3"])
    assert result.exit_code == 0 and chosen[0] in result.output and "--refine" in result.output
    assert CliRunner().invoke(main, ["suggest", str(ws.root), "--recording", "nope"]).exit_code == 1
    assert CliRunner().invoke(main, ["suggest", str(ws.root), "-n", "-2"]).exit_code == 2


# ------------------------------------------------------------------------------------------
# the search's choices are scored as the drafts are drawn; the fusion's samples
# ------------------------------------------------------------------------------------------
def _rig_stream(n_frames=40, fps=10.0):
    from gasdb_tools.synth import SynthRig

    rig = SynthRig(seed=3, size=(160, 128), contrast=12.0, polarity="emitting", distractors=False, sync_lamp=False,
                   leak_start_s=1.5)
    frames, masks = zip(*(rig.thermal(k / fps) for k in range(n_frames)))
    times = [k / fps for k in range(n_frames)]
    return (lambda: iter(zip(times, frames))), times, list(masks)


def test_search_choices_are_scored_over_the_whole_stream_as_the_drafts_are_drawn():
    """The second pass runs each parameter set from the lead-in over the whole stream: its masks of
    the corrected pairs are exactly those refined_masks draws with that set (the search's windowed
    runs, forked from the current model's state, are only used to choose)."""
    from gasdb_tools.refine import Refinement, Supervision, _second_pass, refined_masks

    open_stream, times, masks = _rig_stream()
    keys = [22, 30, 37]
    sup = Supervision(indices=keys, masks=[masks[i] for i in keys], counted=[np.ones_like(masks[i]) for i in keys],
                      ids=[f"p{i}" for i in keys])
    base = GasParams()
    sets = [base, base.replace(k=3.0, k_low=1.8, hold=5), base.replace(polarity="absorbing")]
    second = _second_pass(open_stream, times, sup, base, [], None, sets, 1.0, 2.0, (0.0, 255.0))
    assert second["fusion"] is None and second["params"].shape == (3, 3, 3)
    for s, p in enumerate(sets):
        plain = Refinement(base=base, params=p, choice="params", units="frames", pairs=[], held_out_iou={})
        drawn = {i: m for i, m, _ in refined_masks(open_stream, times, plain, Supervision())}
        for u, i in enumerate(keys):
            tp = int(np.count_nonzero(drawn[i] & masks[i]))
            expected = [tp, int(np.count_nonzero(drawn[i])) - tp, int(np.count_nonzero(masks[i])) - tp]
            assert second["params"][s, u].tolist() == expected, (p, i)
    assert second["params"][2, :, 0].sum() < second["params"][0, :, 0].sum()  # the wrong polarity misses the plume


def test_refine_reports_the_whole_stream_score_of_the_search():
    from gasdb_tools.refine import Supervision, refine

    open_stream, times, masks = _rig_stream()
    keys = [22, 30, 37]
    sup = Supervision(indices=keys, masks=[masks[i] for i in keys], counted=[np.ones_like(masks[i]) for i in keys],
                      ids=[f"p{i}" for i in keys])
    a = refine(open_stream, times, sup, base=GasParams(), fusion=False)
    b = refine(open_stream, times, sup, base=GasParams(), fusion=False)
    assert a.to_dict() == b.to_dict() and a.held_out_iou["params"] is not None and a.held_out_iou["fusion"] is None
    assert 0 < a.held_out_iou["params"] <= 1 and a.choice in ("base", "params")


def test_fusion_samples_are_stratified_by_distance_to_the_plume_and_weighted_back():
    from gasdb_tools.refine import _sample

    truth = np.zeros((240, 320), bool)
    truth[100:140, 150:200] = True
    counted = np.ones_like(truth)
    counted[:, :10] = False
    idx, w, y, unit = _sample(truth, counted, seed=1, units="frames")
    assert np.all(counted.ravel()[idx]) and len(set(idx.tolist())) == len(idx)
    # the weights give back every stratum's size: the fit's objective is that of all counted pixels
    assert w[y].sum() == pytest.approx(np.count_nonzero(truth & counted))
    assert w[~y].sum() == pytest.approx(np.count_nonzero(~truth & counted))
    ring = (cv2.dilate(truth.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))) > 0) & ~truth
    near = ring.ravel()[idx] & ~y
    # every background pixel within 8 px of the plume is sampled (fewer than half the 8000), the rest thinned
    assert near.sum() == np.count_nonzero(ring & counted) and (~y).sum() == near.sum() + 4000
    assert np.array_equal(_sample(truth, counted, seed=1, units="frames")[0], idx)


def test_corrections_that_agree_with_the_static_drafts_keep_them(tmp_path):
    """The fallback: when nothing beats the current parameters on the held-out corrected pairs
    (here the annotator approved three drafts as they were), the pending drafts stay the static ones."""
    ws, truth = _make_workspace(tmp_path, contrast=10.0)
    preannotate_workspace(ws)
    pids = sorted(truth)
    static = {pid: _draft_mask(ws, pid) for pid in pids}
    gas = [p for p in pids if static[p].any()]
    keys = [gas[2], gas[len(gas) // 2], gas[-2]]
    review.approve(ws, keys, by="ana")
    report = preannotate_workspace(ws, refine=True)
    refined = report["recordings"][0]["refined"]
    iou = refined["held_out"]["iou"]  # the drafts as drawn vs their LabelMe shapes: not quite 1
    assert refined["choice"] == "base" and iou["base"] > 0.98 and iou["base"] >= max(iou.values()), iou
    assert all(np.array_equal(_draft_mask(ws, pid), static[pid]) for pid in pids)
