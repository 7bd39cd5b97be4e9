"""Binary segmentation metrics exactly as the Gas-DB benchmark reports them.

Everything derives from one global 2×2 confusion matrix ``[[TN, FP], [FN, TP]]`` (rows ground truth,
columns prediction), accumulated in **int64** over every pixel of every test image, as the official
RT-CAN ``test.py`` does with scikit-learn's ``confusion_matrix`` [1]_. Gas-DB's "Acc" is the gas-class
**recall** TP / (TP + FN), not pixel accuracy; IoU = TP / (TP + FP + FN); F2 = 5PR / (4P + R) [2]_.
Per-image means are a secondary view only (:func:`per_image_means`).

Zero denominators give ``None`` (JSON ``null``), never NaN.

References
----------
.. [1] logic112358/RT-CAN, ``test.py``: per-image ``sklearn.metrics.confusion_matrix(labels=[0, 1])``
   summed over the test split; recall is printed as "Acc".
.. [2] RT-CAN / Gas-DB paper, Table of RGB-thermal results (Acc, IoU, F2); see
   ``docs/reference-models.md`` §8-9 for the definitions and the published numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion", "confusion_packed", "scores", "ConfusionMatrix", "per_image_means", "box_iou", "CLASSES", "METRICS"]

#: Class names in confusion-matrix order (index 0 = background, 1 = gas).
CLASSES = ("background", "gas")
#: Metric names of each class block in :func:`scores`.
METRICS = ("precision", "recall", "acc", "iou", "f1", "f2")

_INT_KINDS = "biu"


def _as_label_array(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in _INT_KINDS:
        raise TypeError(f"{name} must hold integer class indices (bool or int dtype), got dtype {a.dtype}; "
                        f"threshold or argmax scores first, e.g. {name}.astype(np.uint8)")
    return a


def _is_binary(a: np.ndarray) -> bool:
    """Whether every value of an integer/bool array is 0 or 1 (cheap min/max passes)."""
    if a.dtype == np.bool_:
        return True
    if a.max() > 1:
        return False
    return a.dtype.kind == "u" or a.min() >= 0


def _value_error(name: str, a: np.ndarray, allowed: str) -> ValueError:
    found = np.unique(a)
    bad = [int(v) for v in found if not (0 <= v <= 1)][:8]
    return ValueError(f"{name} has values {bad} outside {allowed}; masks must be class indices "
                      f"(0 background, 1 gas), e.g. map a 0/255 mask with (mask > 0)")


def confusion(gt, pred, *, ignore_index: int | None = 255, valid=None) -> np.ndarray:
    """Count a binary segmentation's 2×2 confusion matrix.

    Parameters
    ----------
    gt : (...) array_like of int or bool
        Ground-truth class indices: 0 background, 1 gas, and ``ignore_index`` for pixels that are
        not scored (Gas-DB masks contain none).
    pred : (...) array_like of int or bool
        Predicted class indices (0 or 1), same shape as ``gt``. Any shape works (one image, a
        batch ``(N, H, W)``, a flat vector); nothing is resized.
    ignore_index : int or None
        Ground-truth value whose pixels are left out of the counts; ``None`` allows only 0 and 1.
    valid : array_like of bool, optional
        Same shape as ``gt``: only pixels where it is true are counted (and checked), e.g. the
        area a model was asked to predict.

    Returns
    -------
    (2, 2) ndarray of int64
        ``[[tn, fp], [fn, tp]]``: rows ground truth, columns prediction (scikit-learn's
        ``confusion_matrix(gt, pred, labels=[0, 1])`` layout). Matrices of several images add up.

    Raises
    ------
    ValueError
        On a shape mismatch or a value outside {0, 1} (or ``ignore_index`` in ``gt``).
    TypeError
        On float or other non-integer arrays.

    Notes
    -----
    Counts are exact integers: ``tp = count(gt & pred)``, ``fn = count(gt) - tp``,
    ``fp = count(pred) - tp``, each count restricted to the scored pixels (``gt != ignore_index``
    and ``valid``) when some are left out: whole-array passes, no copies of the selection. No
    float accumulation is involved, so the totals stay exact beyond 2**24 pixels per class
    (where float32 sums go wrong).

    Examples
    --------
    >>> confusion([[0, 1], [1, 1]], [[0, 1], [0, 1]]).tolist()
    [[1, 0], [1, 2]]
    >>> confusion([0, 1, 255], [1, 1, 1]).tolist()
    [[0, 1], [0, 1]]
    """
    gt = _as_label_array(gt, "gt")
    pred = _as_label_array(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got gt {gt.shape} and pred {pred.shape}; "
                         "predict at the ground truth's size (never resize the ground truth)")
    if ignore_index is not None and int(ignore_index) in (0, 1):
        raise ValueError(f"ignore_index must not be a class index (0 or 1), got {ignore_index}")
    if valid is not None:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_ or valid.shape != gt.shape:
            raise ValueError(f"valid must be a bool array of the shape of gt {gt.shape}, got {valid.dtype} "
                             f"{valid.shape}; e.g. valid = gt_region > 0")
    if gt.size == 0:
        return np.zeros((2, 2), dtype=np.int64)
    if not _is_binary(pred):
        raise _value_error("pred", pred, "{0, 1}")

    keep = valid
    if not _is_binary(gt):  # ignored pixels (or invalid values) present
        scored = gt != ignore_index if ignore_index is not None else np.ones(gt.shape, dtype=bool)
        keep = scored if keep is None else np.logical_and(scored, keep, out=scored)
        if np.logical_and(keep, (gt < 0) | (gt > 1)).any():
            allowed = "{0, 1}" if ignore_index is None else f"{{0, 1, {ignore_index} (ignored)}}"
            raise _value_error("gt", gt[keep], allowed)
        gt = gt == 1
    # gt and pred hold 0/1 where kept, so a bitwise AND is the logical AND
    both = np.bitwise_and(gt, pred)
    if keep is None:
        n = gt.size
        n_gt, n_pred, tp = (int(np.count_nonzero(a)) for a in (gt, pred, both))
    else:
        n = int(np.count_nonzero(keep))
        n_gt, n_pred, tp = (int(np.count_nonzero(np.logical_and(a, keep))) for a in (gt, pred, both))
    return _matrix(n, n_gt, n_pred, tp)


def _matrix(n: int, n_gt: int, n_pred: int, tp: int) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]`` from the scored pixels, gas in the ground truth, gas predicted, and both."""
    fn = n_gt - tp
    fp = n_pred - tp
    return np.array([[n - tp - fn - fp, fp], [fn, tp]], dtype=np.int64)


def confusion_packed(gt, pred, *, n_pixels: int, ignore=None) -> np.ndarray:
    """:func:`confusion` of two 0/1 masks given as packed bits (one bit a pixel, 1 = gas).

    ``gt``, ``pred`` and ``ignore`` (bits of the pixels left out) are uint8 arrays of one shape in
    one packing (e.g. :func:`numpy.packbits` along rows, or
    :func:`gasdb_tools.submission.pack_bits`) whose padding bits are 0; ``n_pixels`` is the number
    of pixels they pack. The counts are those of :func:`confusion` on the unpacked masks
    (``ignore_index`` where ``ignore`` is set), by popcounts over an eighth of the bytes.

    Examples
    --------
    >>> g, p = np.packbits([[0, 1], [1, 1]], axis=1), np.packbits([[0, 1], [0, 1]], axis=1)
    >>> confusion_packed(g, p, n_pixels=4).tolist()
    [[1, 0], [1, 2]]
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.dtype != np.uint8 or pred.dtype != np.uint8 or gt.shape != pred.shape:
        raise ValueError(f"gt and pred must be packed uint8 arrays of one shape, got gt {gt.dtype} {gt.shape} "
                         f"and pred {pred.dtype} {pred.shape}")
    both = np.bitwise_and(gt, pred)
    if ignore is not None:
        ignore = np.asarray(ignore)
        if ignore.dtype != np.uint8 or ignore.shape != gt.shape:
            raise ValueError(f"ignore must be packed uint8 of the shape of gt {gt.shape}, got {ignore.dtype} "
                             f"{ignore.shape}")
        kept = np.invert(ignore)
        gt, pred, both = (np.bitwise_and(a, kept) for a in (gt, pred, both))
        n_pixels -= _popcount(ignore)
    return _matrix(int(n_pixels), _popcount(gt), _popcount(pred), _popcount(both))


def _popcount(bits: np.ndarray) -> int:
    """Set bits in a uint8 array (counted per 64-bit word where the rows allow: 3x fewer elements to sum)."""
    if bits.flags.c_contiguous and bits.size % 8 == 0:
        bits = bits.reshape(-1).view(np.uint64)
    return int(np.bitwise_count(bits).sum(dtype=np.uint64))


def _ratio(num: int, den: int):
    return num / den if den else None


def _class_scores(tp: int, fp: int, fn: int) -> dict:
    """precision/recall/IoU/F1/F2 of one class treated as the positive class."""
    recall = _ratio(tp, tp + fn)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "acc": recall,
        "iou": _ratio(tp, tp + fp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "f2": _ratio(5 * tp, 5 * tp + 4 * fn + fp),
    }


def _check_cm(cm) -> np.ndarray:
    arr = np.asarray(cm)
    if arr.shape != (2, 2):
        raise ValueError(f"cm must be a 2x2 confusion matrix [[tn, fp], [fn, tp]], got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"cm must hold whole counts, got {arr.tolist()}")
    elif arr.dtype.kind not in _INT_KINDS:
        raise TypeError(f"cm must hold integer counts, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError(f"cm counts must be >= 0, got {arr.tolist()}")
    return arr


def scores(cm) -> dict:
    """All Gas-DB metrics of a 2×2 confusion matrix.

    Parameters
    ----------
    cm : (2, 2) array_like of int
        ``[[tn, fp], [fn, tp]]`` as returned by :func:`confusion` (float arrays holding whole
        numbers, like RT-CAN's float64 total, are accepted).

    Returns
    -------
    dict
        ``tn, fp, fn, tp, n_pixels`` (ints); ``gas`` and ``background``: each a dict with

        - ``precision`` = TP / (TP + FP)
        - ``recall`` = TP / (TP + FN)
        - ``acc`` = the same value as ``recall``: Gas-DB's "Acc" **is the recall**, not pixel accuracy
        - ``iou`` = TP / (TP + FP + FN)
        - ``f1`` = 2TP / (2TP + FP + FN) (= 2PR / (P + R), the Dice score)
        - ``f2`` = 5TP / (5TP + 4FN + FP) (= 5PR / (4P + R), β = 2)

        where for ``background`` the roles swap (its TP is TN). ``mean``: the mean of the two
        classes for each metric (mIoU = ``mean["iou"]``), over the classes where it is defined.
        ``pixel_accuracy`` = (TP + TN) / N, labelled as such. Any zero denominator gives ``None``.

    Notes
    -----
    F-scores use the count form, so they are 0 (not undefined) when TP = 0 but FP or FN > 0,
    as in scikit-learn >= 1.3 and torchmetrics; they are ``None`` only when the class is absent
    from both ground truth and prediction. RT-CAN's class mean replaces NaN with 0; ours skips it.

    Examples
    --------
    >>> s = scores([[90, 2], [3, 5]])
    >>> round(s["gas"]["iou"], 4), round(s["gas"]["acc"], 4), s["pixel_accuracy"]
    (0.5, 0.625, 0.95)
    """
    arr = _check_cm(cm)
    (tn, fp), (fn, tp) = ([int(v) for v in row] for row in arr)
    n = tn + fp + fn + tp
    gas = _class_scores(tp, fp, fn)
    background = _class_scores(tn, fn, fp)
    mean = {}
    for key in METRICS:
        vals = [v for v in (background[key], gas[key]) if v is not None]
        mean[key] = sum(vals) / len(vals) if vals else None
    return {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "n_pixels": n, "gas": gas, "background": background,
            "mean": mean, "pixel_accuracy": _ratio(tp + tn, n)}


def per_image_means(cms) -> dict:
    """Per-image mean of every metric (a secondary view; Gas-DB reports the global one).

    Parameters
    ----------
    cms : (N, 2, 2) array_like of int
        One confusion matrix per image.

    Returns
    -------
    dict
        ``n_images`` and, for ``gas``, ``background`` and ``mean``, each metric's mean over the
        images where it is defined, with ``n_defined`` per metric. An image with no gas in the
        ground truth and none predicted has an undefined gas IoU and is excluded from that mean
        (not counted as 0 or 1). ``None`` when no image defines the metric.
    """
    arr = np.asarray(cms)
    if arr.ndim != 3 or arr.shape[1:] != (2, 2):
        raise ValueError(f"cms must have shape (N, 2, 2) (one confusion matrix per image), got {arr.shape}")
    per = [scores(cm) for cm in arr]
    out: dict = {"n_images": len(per)}
    for block in ("gas", "background", "mean"):
        means, defined = {}, {}
        for key in METRICS:
            vals = [s[block][key] for s in per if s[block][key] is not None]
            defined[key] = len(vals)
            means[key] = sum(vals) / len(vals) if vals else None
        out[block] = {**means, "n_defined": defined}
    return out


class ConfusionMatrix:
    """Accumulates one global int64 confusion matrix over images or batches.

    The result does not depend on the order of the updates or on how pixels are batched.
    Two accumulators (e.g. from data-parallel workers) combine with :meth:`merge`.

    Parameters
    ----------
    ignore_index : int or None
        Passed to :func:`confusion`.

    Examples
    --------
    >>> m = ConfusionMatrix()
    >>> _ = m.update([0, 1, 1], [0, 1, 0])
    >>> _ = m.update([1, 0], [1, 1])
    >>> m.matrix.tolist(), m.compute()["gas"]["iou"]
    ([[1, 1], [1, 2]], 0.5)
    """

    def __init__(self, *, ignore_index: int | None = 255):
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Zero the counts."""
        self._cm = np.zeros((2, 2), dtype=np.int64)
        self.n_updates = 0

    def update(self, gt, pred) -> np.ndarray:
        """Add the counts of ``gt`` vs ``pred`` (any matching shapes); returns this update's matrix."""
        cm = confusion(gt, pred, ignore_index=self.ignore_index)
        self._cm += cm
        self.n_updates += 1
        return cm

    def add(self, cm) -> None:
        """Add a precomputed 2×2 confusion matrix."""
        arr = _check_cm(cm)
        self._cm += arr.astype(np.int64)
        self.n_updates += 1

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts into this one; returns ``self``."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge another ConfusionMatrix, got {type(other).__name__}")
        self._cm += other._cm
        self.n_updates += other.n_updates
        return self

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the accumulated ``[[tn, fp], [fn, tp]]`` (int64)."""
        return self._cm.copy()

    def compute(self) -> dict:
        """:func:`scores` of the accumulated matrix."""
        return scores(self._cm)

    def __repr__(self) -> str:
        (tn, fp), (fn, tp) = self._cm.tolist()
        return f"ConfusionMatrix(tn={tn}, fp={fp}, fn={fn}, tp={tp}, n_updates={self.n_updates})"


def box_iou(a, b) -> float:
    """IoU of two axis-aligned boxes ``(x1, y1, x2, y2)`` (0 when they do not overlap or are empty).

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    """
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
