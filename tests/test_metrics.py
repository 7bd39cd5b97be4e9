"""gasdb_tools.metrics: exact confusion counts and Gas-DB's metric definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gasdb_tools.metrics import METRICS, ConfusionMatrix, confusion, per_image_means, scores

# --------------------------------------------------------------------------- hand-computed matrices

GT = np.array([[0, 0, 1, 1],
               [0, 1, 1, 0],
               [0, 0, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 0],
                 [0, 1, 1, 1],
                 [0, 0, 0, 1]], dtype=np.uint8)
# Counted by hand: TP = (0,2),(1,1),(1,2) = 3; FN = (0,3) = 1; FP = (0,1),(1,3),(2,3) = 3; TN = 12 - 7 = 5.
HAND = [[5, 3], [1, 3]]


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int64, np.int32, np.uint16])
def test_confusion_hand_computed(dtype):
    cm = confusion(GT.astype(dtype), PRED.astype(dtype))
    assert cm.dtype == np.int64 and cm.shape == (2, 2)
    assert cm.tolist() == HAND


def test_confusion_ignore_index_excludes_pixels():
    gt = GT.copy()
    gt[0, 1] = 255  # was an FP
    gt[0, 3] = 255  # was an FN
    assert confusion(gt, PRED).tolist() == [[5, 2], [0, 3]]
    with pytest.raises(ValueError, match=r"gt has values \[255\]"):
        confusion(gt, PRED, ignore_index=None)
    assert confusion(np.where(gt == 255, 7, gt), PRED, ignore_index=7).tolist() == [[5, 2], [0, 3]]


def test_confusion_valid_mask_leaves_pixels_out():
    valid = np.ones(GT.shape, bool)
    valid[0, 1] = valid[0, 3] = False  # an FP and an FN
    assert confusion(GT, PRED, valid=valid).tolist() == [[5, 2], [0, 3]]
    gt = GT.copy()
    gt[2, 0] = 255  # ignored as well: was a TN
    assert confusion(gt, PRED, valid=valid).tolist() == [[4, 2], [0, 3]]
    gt[0, 1] = 9  # a bad value where nothing is counted is not looked at
    assert confusion(gt, PRED, valid=valid).tolist() == [[4, 2], [0, 3]]
    with pytest.raises(ValueError, match=r"gt has values \[9\]"):
        confusion(gt, PRED)
    assert confusion(GT, PRED, valid=np.zeros(GT.shape, bool)).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="valid must be a bool array"):
        confusion(GT, PRED, valid=valid[:2])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), ignore=st.floats(0, 0.5), drop=st.floats(0, 0.5))
def test_confusion_masked_equals_selecting_pixels_first(seed, ignore, drop):
    rng = np.random.default_rng(seed)
    gt = (rng.random((17, 23)) < 0.4).astype(np.uint8)
    gt[rng.random(gt.shape) < ignore] = 255
    pred = (rng.random(gt.shape) < 0.5).astype(np.uint8)
    valid = rng.random(gt.shape) >= drop
    keep = valid & (gt != 255)
    want = confusion(gt[keep], pred[keep], ignore_index=None)
    assert confusion(gt, pred, valid=valid).tolist() == want.tolist()


def test_confusion_accepts_batches_and_lists():
    batch_gt = np.stack([GT, GT[::-1]])
    batch_pred = np.stack([PRED, PRED[::-1]])
    assert confusion(batch_gt, batch_pred).tolist() == [[10, 6], [2, 6]]
    assert confusion(GT.tolist(), PRED.tolist()).tolist() == HAND
    assert confusion(np.zeros((0, 4)).astype(np.uint8), np.zeros((0, 4), np.uint8)).tolist() == [[0, 0], [0, 0]]


def test_hand_computed_scores():
    s = scores(HAND)
    assert (s["tn"], s["fp"], s["fn"], s["tp"], s["n_pixels"]) == (5, 3, 1, 3, 12)
    gas, bg = s["gas"], s["background"]
    assert gas["precision"] == pytest.approx(3 / 6)
    assert gas["recall"] == gas["acc"] == pytest.approx(3 / 4)
    assert gas["iou"] == pytest.approx(3 / 7)
    assert gas["f1"] == pytest.approx(2 * 0.5 * 0.75 / 1.25)
    assert gas["f2"] == pytest.approx(5 * 0.5 * 0.75 / (4 * 0.5 + 0.75))
    assert bg["precision"] == pytest.approx(5 / 6)  # TN / (TN + FN)
    assert bg["recall"] == pytest.approx(5 / 8)  # TN / (TN + FP)
    assert bg["iou"] == pytest.approx(5 / 9)
    assert s["mean"]["iou"] == pytest.approx((3 / 7 + 5 / 9) / 2)
    assert s["pixel_accuracy"] == pytest.approx(8 / 12)
    assert s["pixel_accuracy"] != gas["acc"]  # Gas-DB's "Acc" is the recall, not pixel accuracy


def test_zero_denominators_are_none_and_json_safe():
    s = scores([[10, 0], [0, 0]])  # no gas anywhere
    assert s["gas"] == {k: None for k in METRICS}
    assert s["background"]["iou"] == 1.0
    assert s["mean"]["iou"] == 1.0  # the mean over the classes where it is defined
    empty = scores(np.zeros((2, 2), np.int64))
    assert empty["pixel_accuracy"] is None and empty["mean"]["iou"] is None
    json.dumps(empty, allow_nan=False)
    # TP = 0 but FN > 0: precision undefined, recall/IoU/F-scores are a defined 0.
    s = scores([[10, 0], [4, 0]])
    assert s["gas"]["precision"] is None
    assert s["gas"]["recall"] == s["gas"]["iou"] == s["gas"]["f1"] == s["gas"]["f2"] == 0.0


def test_counts_stay_exact_past_float32():
    # 2**24 + 1 gas pixels: a float32 sum would round it to 2**24.
    n = (1 << 24) + 1
    gt = np.ones(n, np.uint8)
    pred = np.ones(n, np.uint8)
    pred[0] = 0
    cm = confusion(gt, pred)
    assert cm.tolist() == [[0, 0], [1, n - 1]]
    assert int(np.float32(n - 1) + np.float32(1)) != n  # the trap this avoids
    assert scores(cm)["tp"] == n - 1


# --------------------------------------------------------------------------- the paper's numbers

# RT-CAN paper, RGB-thermal rows: (Acc = recall, IoU, reported F2, implied precision, F1) in percent
# (reference-models.md §9).
PAPER_ROWS = {
    "MFNet": (59.3935, 37.1752, 57.2015, 49.8435, 54.2011),
    "FEANet": (63.1716, 50.8582, 64.8070, 72.2929, 67.4252),
    "RTFNet": (67.5185, 50.9560, 67.5155, 67.5036, 67.5111),
    "EAEFNet": (74.5951, 53.4445, 72.5394, 65.3369, 69.6597),
    "RT-CAN R50": (76.3404, 54.4604, 73.8993, 65.5190, 70.5170),
}


@pytest.mark.parametrize("model", sorted(PAPER_ROWS))
def test_paper_rows_f2_from_one_global_matrix(model):
    acc, iou, f2_reported, p_table, f1_table = PAPER_ROWS[model]
    r, i = acc / 100, iou / 100
    p = 1 / (1 / i - 1 / r + 1)  # 1/IoU = 1/R + 1/P - 1
    assert 100 * p == pytest.approx(p_table, abs=0.01)
    tp = 10**9
    cm = [[5 * 10**9, round(tp * (1 / p - 1))], [round(tp * (1 / r - 1)), tp]]
    s = scores(cm)["gas"]
    assert 100 * s["acc"] == pytest.approx(acc, abs=0.01)
    assert 100 * s["iou"] == pytest.approx(iou, abs=0.01)
    assert 100 * s["precision"] == pytest.approx(p_table, abs=0.01)
    assert 100 * s["f2"] == pytest.approx(f2_reported, abs=0.01)
    assert 100 * s["f1"] == pytest.approx(f1_table, abs=0.01)


# --------------------------------------------------------------------------- reference libraries

def _random_masks(seed, shape=(7, 48, 40)):
    rng = np.random.default_rng(seed)
    gt = (rng.random(shape) < rng.uniform(0.05, 0.6)).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.8, gt, 1 - gt).astype(np.uint8)
    return gt, pred


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_confusion_matrix(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gt, pred = _random_masks(seed)
    total = sum(sklearn_metrics.confusion_matrix(g.ravel(), p.ravel(), labels=[0, 1]) for g, p in zip(gt, pred))
    assert confusion(gt, pred).tolist() == total.tolist()
    s = scores(total)["gas"]
    assert s["precision"] == pytest.approx(sklearn_metrics.precision_score(gt.ravel(), pred.ravel()))
    assert s["recall"] == pytest.approx(sklearn_metrics.recall_score(gt.ravel(), pred.ravel()))
    assert s["iou"] == pytest.approx(sklearn_metrics.jaccard_score(gt.ravel(), pred.ravel()))
    assert s["f2"] == pytest.approx(sklearn_metrics.fbeta_score(gt.ravel(), pred.ravel(), beta=2))


@pytest.mark.parametrize("seed", range(3))
def test_matches_torchmetrics_binary_metrics(seed):
    pytest.importorskip("torchmetrics")
    import torch
    from torchmetrics.classification import (BinaryConfusionMatrix, BinaryFBetaScore, BinaryF1Score,
                                             BinaryJaccardIndex, BinaryPrecision, BinaryRecall)

    gt, pred = _random_masks(seed)
    ours = ConfusionMatrix()
    tm = {"cm": BinaryConfusionMatrix(), "iou": BinaryJaccardIndex(), "f2": BinaryFBetaScore(beta=2.0),
          "f1": BinaryF1Score(), "precision": BinaryPrecision(), "recall": BinaryRecall()}
    for g, p in zip(gt, pred):  # both accumulate globally over the images
        ours.update(g, p)
        for metric in tm.values():
            metric.update(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(g.astype(np.int64)))
    assert ours.matrix.tolist() == tm["cm"].compute().tolist()
    s = ours.compute()["gas"]
    for key in ("iou", "f2", "f1", "precision", "recall"):
        assert s[key] == pytest.approx(float(tm[key].compute()), abs=1e-6), key


# --------------------------------------------------------------------------- bad inputs

def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="same shape"):
        confusion(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8))
    with pytest.raises(TypeError, match="pred must hold integer class indices"):
        confusion(np.zeros(3, np.uint8), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"pred has values \[2\]"):
        confusion(np.zeros(3, np.uint8), np.array([0, 1, 2], np.uint8))
    with pytest.raises(ValueError, match=r"pred has values \[-1\]"):
        confusion(np.zeros(3, np.int8), np.array([0, 1, -1], np.int8))
    with pytest.raises(ValueError, match=r"gt has values \[3\]"):
        confusion(np.array([0, 3, 255], np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="ignore_index must not be a class"):
        confusion(np.zeros(3, np.uint8), np.zeros(3, np.uint8), ignore_index=1)
    with pytest.raises(ValueError, match="2x2"):
        scores(np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        scores([[1, -1], [0, 0]])
    with pytest.raises(ValueError, match="whole counts"):
        scores([[1.5, 0], [0, 0]])
    with pytest.raises(ValueError, match="one confusion matrix per image"):
        per_image_means(np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="merge another ConfusionMatrix"):
        ConfusionMatrix().merge([[1, 0], [0, 1]])


def test_float_total_like_rtcan_is_accepted():
    assert scores(np.array(HAND, dtype=np.float64)) == scores(HAND)


# --------------------------------------------------------------------------- accumulator, per-image means

def test_accumulator_update_reset_merge_add():
    a, b = ConfusionMatrix(), ConfusionMatrix()
    assert a.update(GT, PRED).tolist() == HAND
    b.update(GT[::-1], PRED[::-1])
    b.add(np.array(HAND))
    assert a.merge(b) is a
    assert a.matrix.tolist() == [[15, 9], [3, 9]] and a.n_updates == 3
    assert a.compute() == scores([[15, 9], [3, 9]])
    a.reset()
    assert a.matrix.tolist() == [[0, 0], [0, 0]] and a.n_updates == 0
    assert "tn=0" in repr(a)


def test_per_image_means_exclude_undefined_iou():
    cms = np.array([[[6, 2], [0, 2]],    # gas IoU 2/4
                    [[10, 0], [0, 0]],   # no gas in GT or prediction: undefined, excluded
                    [[4, 0], [3, 3]]])   # gas IoU 3/6
    m = per_image_means(cms)
    assert m["n_images"] == 3
    assert m["gas"]["iou"] == pytest.approx(0.5)
    assert m["gas"]["n_defined"]["iou"] == 2
    assert m["background"]["n_defined"]["iou"] == 3
    # The per-image mean differs from the global value Gas-DB reports.
    assert scores(cms.sum(axis=0))["gas"]["iou"] == pytest.approx(5 / 10)
    assert m["gas"]["precision"] == pytest.approx((0.5 + 1.0) / 2)


# --------------------------------------------------------------------------- properties

masks = hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 12), st.integers(1, 12)),
                   elements=st.integers(0, 1))


@settings(max_examples=60, deadline=None)
@given(masks, st.data())
def test_accumulation_is_order_and_batch_independent(gt, data):
    pred = data.draw(hnp.arrays(np.uint8, gt.shape, elements=st.integers(0, 1)))
    whole = confusion(gt, pred)
    order = data.draw(st.permutations(range(len(gt))))
    acc = ConfusionMatrix()
    for k in order:
        acc.update(gt[k], pred[k])
    assert acc.matrix.tolist() == whole.tolist()
    # Split the flattened pixels at arbitrary points into two accumulators and merge them.
    flat_gt, flat_pred = gt.ravel(), pred.ravel()
    cut = data.draw(st.integers(0, flat_gt.size))
    left, right = ConfusionMatrix(), ConfusionMatrix()
    left.update(flat_gt[:cut], flat_pred[:cut])
    right.update(flat_gt[cut:], flat_pred[cut:])
    assert left.merge(right).matrix.tolist() == whole.tolist()
    assert int(whole.sum()) == gt.size


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**12), min_size=4, max_size=4))
def test_scores_lie_in_unit_interval_or_none(counts):
    s = scores(np.array(counts, dtype=np.int64).reshape(2, 2))
    for block in ("gas", "background", "mean"):
        for key in METRICS:
            v = s[block][key]
            assert v is None or 0.0 <= v <= 1.0
    assert s["gas"]["acc"] == s["gas"]["recall"]
    v = s["pixel_accuracy"]
    assert v is None or 0.0 <= v <= 1.0
    json.dumps(s, allow_nan=False)


def test_box_iou():
    from gasdb_tools.metrics import box_iou

    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == 50 / 150
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
