"""Leak-free train/val/test splits and a leakage audit (the ``gasdb split`` stage).

Gas-DB was split 80/20 at random over frames cut from 19 videos, so neighbouring frames of one
video sit on both sides and test scores measure memory rather than generalisation. Here the unit
of splitting is the **recording** (formats.md §7): every pair of one recording lands in one split.

The module has two layers:

* pure functions over pair metadata (``pair_id``, ``recording``, ``scene``, ``has_gas``):
  :func:`parse_ratios`, :func:`make_split` (strategies ``video``, ``scene-stratified``,
  ``random``), :func:`frame_signature` and :func:`near_duplicates` (the frame-level audit);
* the stage over a workspace: :func:`split_workspace` writes ``WS/splits/<name>.json``,
  :func:`load_split` reads it back and :func:`check_split` audits it.

Split files are deterministic: the same workspace, strategy, ratios and seed give a
byte-identical file (sorted keys and ids, no timestamps).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from gasdb_tools import __version__
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.fsutil import dumps_json, read_json, write_json

__all__ = [
    "METHODS",
    "SPLIT_NAMES",
    "LeakySplitWarning",
    "Split",
    "LeakReport",
    "parse_ratios",
    "make_split",
    "assign_groups",
    "frame_signature",
    "near_duplicates",
    "split_metadata",
    "split_workspace",
    "split_path",
    "load_split",
    "check_split",
    "FrameAudit",
]

#: Split strategies: recording-grouped (default), recording-grouped and stratified, frame-level (leaks).
METHODS = ("video", "scene-stratified", "random")
#: Split names, in the order they are filled and written.
SPLIT_NAMES = ("train", "val", "test")
_FORMAT = "gasdb-split"
_FORMAT_VERSION = 1
_GAS_LABEL = "gas"


class LeakySplitWarning(UserWarning):
    """A split puts frames of one recording on both sides (the paper's frame-level protocol)."""


# ---------------------------------------------------------------------------------------------
# pure part: ratios and assignment
# ---------------------------------------------------------------------------------------------
def parse_ratios(ratios, *, val: float | None = None) -> dict[str, float]:
    """Turn ``"0.8,0.2"`` (train, test) or ``"0.7,0.1,0.2"`` (train, val, test) into a dict.

    Parameters
    ----------
    ratios : str or sequence of float
        Two values (train, test) or three (train, val, test); they must sum to 1.
    val : float, optional
        A validation fraction of the whole, taken out of train (``0.8,0.2`` with ``val=0.1``
        gives train 0.7, val 0.1, test 0.2). Only with two ratios.

    Returns
    -------
    dict
        ``{"train": ..., ["val": ...,] "test": ...}``, every value > 0, summing to 1.

    Examples
    --------
    >>> parse_ratios("0.8,0.2")
    {'train': 0.8, 'test': 0.2}
    >>> parse_ratios("0.8,0.2", val=0.1)
    {'train': 0.7, 'val': 0.1, 'test': 0.2}
    """
    if isinstance(ratios, str):
        try:
            values = [float(v) for v in ratios.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise ValueError(f"ratios must be comma-separated numbers like '0.8,0.2', got {ratios!r}") from None
    else:
        values = [float(v) for v in ratios]
    if len(values) not in (2, 3):
        raise ValueError(f"ratios needs 2 values (train,test) or 3 (train,val,test), got {len(values)}: {ratios!r}")
    if len(values) == 3 and val is not None:
        raise ValueError("give val either as the middle of three ratios or with val=, not both")
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"ratios must be finite numbers, got {ratios!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {'+'.join(f'{v:g}' for v in values)} = {sum(values):g}; "
                         "e.g. '0.8,0.2'")
    if len(values) == 2:
        train, test = values
        out = {"train": train}
        if val is not None:
            if not (0 < val < train):
                raise ValueError(f"val must be > 0 and smaller than the train ratio {train:g}, got {val:g}")
            out = {"train": round(train - val, 12), "val": float(val)}
        out["test"] = test
    else:
        out = dict(zip(SPLIT_NAMES, values))
    bad = [k for k, v in out.items() if not v > 0]
    if bad:
        raise ValueError(f"every split needs a ratio > 0, got {out}; drop the split or raise its ratio")
    return out


def assign_groups(sizes: Mapping[str, int], ratios: Mapping[str, float], order: Sequence[str], *,
                  strata: Mapping[str, object] | None = None) -> dict[str, str]:
    """Assign whole groups to splits so each split's item count is within one group of its target.

    Groups are taken in ``order``. Without ``strata`` each goes to the split whose deficit
    (target count minus count so far) is largest, ties going to the split listed first in
    ``ratios``; when only as many groups are left as splits without one, each such split gets
    one, so no split stays empty. With ``strata`` (group -> stratum key) it goes, among the splits still below
    their overall target, to the one furthest below its target *within the group's stratum*
    (ties: the larger overall deficit), so every stratum is spread over the splits in proportion.

    Parameters
    ----------
    sizes : mapping
        Group id -> number of items (pairs) in it.
    ratios : mapping
        Split name -> fraction (summing to 1), e.g. from :func:`parse_ratios`.
    order : sequence of str
        The group ids in the order to assign them (a seeded permutation).
    strata : mapping, optional
        Group id -> stratum key (any hashable), for stratified assignment.

    Returns
    -------
    dict
        Group id -> split name.

    Notes
    -----
    Guarantee, with ``m`` the largest group size: no split ends above its target by more than
    ``m`` (a split only receives a group while it is below target: without strata because the
    largest deficit is >= 0, the deficits summing to the items still unassigned; with strata by
    construction). Without strata no split ends more than ``m`` below target either (a split left
    short would need every other split to have received its last group with a larger deficit,
    leaving all deficits positive, against their zero sum). With two splits the same follows
    from the zero sum; with strata and three splits a split can end up to ``2 m`` short.

    Examples
    --------
    >>> assign_groups({"a": 5, "b": 3, "c": 2}, {"train": 0.8, "test": 0.2}, ["a", "b", "c"])
    {'a': 'train', 'b': 'train', 'c': 'test'}
    """
    if set(order) != set(sizes) or len(order) != len(sizes):
        raise ValueError("order must list every group of sizes exactly once")
    if strata is not None and set(strata) < set(sizes):
        raise ValueError("strata must give a stratum for every group")
    total = sum(int(v) for v in sizes.values())
    names = list(ratios)
    count = dict.fromkeys(names, 0)
    s_total: dict = defaultdict(int)
    s_count: dict = defaultdict(lambda: dict.fromkeys(names, 0))
    if strata is not None:
        for g in sizes:
            s_total[strata[g]] += int(sizes[g])
    out = {}
    filled = set()
    for left, g in zip(range(len(order), 0, -1), order):
        glob = {s: round(ratios[s] * total - count[s], 9) for s in names}
        empty = [s for s in names if s not in filled]
        if len(empty) >= left:  # as many groups left as empty splits: give each split one
            best = max(empty, key=lambda s: (glob[s], -names.index(s)))
        elif strata is None:
            best = max(names, key=lambda s: (glob[s], -names.index(s)))
        else:
            key = strata[g]
            local = {s: round(ratios[s] * s_total[key] - s_count[key][s], 9) for s in names}
            eligible = [s for s in names if glob[s] > 0] or names
            best = max(eligible, key=lambda s: (local[s], glob[s], -names.index(s)))
        if strata is not None:
            s_count[strata[g]][best] += int(sizes[g])
        filled.add(best)
        out[g] = best
        count[best] += int(sizes[g])
    return out


@dataclass(frozen=True)
class Split:
    """A split of pairs: which pairs (and which recordings) each split holds, and how it was made.

    ``pairs`` and ``groups`` map split name -> sorted ids. ``summary`` holds per-split counts
    (pairs, recordings, positive pairs, scenes). Use :meth:`to_dict` for the JSON file.
    """

    method: str
    seed: int
    ratios: dict
    pairs: dict
    groups: dict
    summary: dict
    group_key: str | None = "recording"
    stratify: tuple = ()
    excluded: dict = field(default_factory=dict)

    @property
    def leaks(self) -> bool:
        """True when a recording appears in more than one split."""
        seen = Counter(g for gs in self.groups.values() for g in gs)
        return any(n > 1 for n in seen.values())

    def split_of(self) -> dict[str, str]:
        """Pair id -> split name."""
        return {p: s for s, ps in self.pairs.items() for p in ps}

    def to_dict(self, *, name: str = "default") -> dict:
        """The JSON document of ``WS/splits/<name>.json`` (deterministic, no timestamps)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "name": name,
            "generator": f"gasdb-tools {__version__}",
            "method": self.method,
            "seed": int(self.seed),
            "ratios": dict(self.ratios),
            "group_key": self.group_key,
            "stratify": list(self.stratify),
            "leaks_across_splits": self.leaks,
            "splits": {s: {"groups": list(self.groups[s]), "pairs": list(self.pairs[s]), **self.summary[s]}
                       for s in self.pairs},
            "excluded": {k: dict(sorted(v.items())) for k, v in sorted(self.excluded.items())},
        }

    @classmethod
    def from_dict(cls, doc: Mapping, *, file=None) -> "Split":
        """Rebuild a :class:`Split` from its JSON document, checking the fields it needs."""
        if not isinstance(doc, Mapping) or doc.get("format") != _FORMAT:
            raise FormatError("not a gasdb split file (format is not 'gasdb-split')", file=file, field="format",
                              fix="make it with `gasdb split WS`")
        try:
            splits = doc["splits"]
            pairs = {s: list(v["pairs"]) for s, v in splits.items()}
            groups = {s: list(v["groups"]) for s, v in splits.items()}
            summary = {s: {k: v for k, v in body.items() if k not in ("pairs", "groups")} for s, body in splits.items()}
            return cls(method=doc["method"], seed=int(doc["seed"]), ratios=dict(doc["ratios"]), pairs=pairs,
                       groups=groups, summary=summary, group_key=doc.get("group_key"),
                       stratify=tuple(doc.get("stratify", ())), excluded=dict(doc.get("excluded", {})))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise FormatError(f"split file is missing or has a malformed field ({exc})", file=file,
                              fix="rebuild it with `gasdb split WS --force`") from None


def _check_pairs(pairs: Sequence[Mapping]) -> list[dict]:
    rows, seen = [], set()
    for i, p in enumerate(pairs):
        if not isinstance(p, Mapping):
            raise TypeError(f"pairs[{i}] must be a mapping with pair_id and recording, got {type(p).__name__}")
        pid, rec = p.get("pair_id"), p.get("recording")
        if not pid or not rec:
            raise ValueError(f"pairs[{i}] needs non-empty 'pair_id' and 'recording', got {dict(p)!r}")
        if pid in seen:
            raise ValueError(f"pair id {pid!r} appears twice in pairs; pair ids must be unique")
        seen.add(pid)
        rows.append({"pair_id": str(pid), "recording": str(rec), "scene": str(p.get("scene") or ""),
                     "has_gas": bool(p.get("has_gas", False))})
    return sorted(rows, key=lambda r: r["pair_id"])


def _summary(rows: list[dict]) -> dict:
    return {
        "n_pairs": len(rows),
        "n_groups": len({r["recording"] for r in rows}),
        "positive_pairs": sum(r["has_gas"] for r in rows),
        "scenes": dict(sorted(Counter(r["scene"] for r in rows).items())),
    }


def make_split(pairs: Sequence[Mapping], *, method: str = "video", ratios="0.8,0.2", seed: int = 0) -> Split:
    """Split pairs into train/(val)/test, by recording (default) or, leaking, by frame.

    Parameters
    ----------
    pairs : sequence of mapping
        One per pair: ``pair_id``, ``recording``, optional ``scene`` (str) and ``has_gas`` (bool).
    method : {'video', 'scene-stratified', 'random'}
        ``video``: whole recordings go to one split, in a seeded random order, each to the split
        furthest below its target (:func:`assign_groups`), so every split is within one
        recording of its target. ``scene-stratified``: also by recording, but each recording
        goes, among the splits below target, to the one furthest below target within its
        stratum (scene type x has-gas), so each stratum is spread in proportion (see
        :func:`assign_groups` for the bounds). ``random``: the RT-CAN paper's frame-level 80/20
        protocol; neighbouring frames of one video land on both sides, so it **leaks** and
        emits a :class:`LeakySplitWarning`.
    ratios : str, sequence or mapping
        See :func:`parse_ratios`; a mapping is used as given.
    seed : int
        Seed of ``numpy.random.default_rng``; the same inputs and seed give the same split.

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        Unknown method, bad ratios, or fewer recordings than splits for a grouped method.

    Notes
    -----
    Grouping by video follows the standard advice against identity/temporal leakage in
    grouped data (e.g. scikit-learn's ``GroupShuffleSplit``); the RT-CAN protocol it replaces is
    described in Zhu et al., "RT-CAN: ... gas leak segmentation", Gas-DB (2024).

    Examples
    --------
    >>> rows = [{"pair_id": f"r{r}_{i}", "recording": f"r{r}"} for r in range(5) for i in range(4)]
    >>> s = make_split(rows, ratios="0.8,0.2", seed=1)
    >>> [len(s.pairs[k]) for k in ("train", "test")], s.leaks
    ([16, 4], False)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ratio = dict(ratios) if isinstance(ratios, Mapping) else parse_ratios(ratios)
    if not ratio or abs(sum(ratio.values()) - 1) > 1e-6 or set(ratio) - set(SPLIT_NAMES):
        raise ValueError(f"ratios must map {SPLIT_NAMES} names to fractions summing to 1, got {ratio}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    rows = _check_pairs(pairs)
    if not rows:
        raise ValueError("pairs is empty: nothing to split (label some pairs first)")
    rng = np.random.default_rng(int(seed))
    names = [s for s in SPLIT_NAMES if s in ratio]
    ratio = {s: float(ratio[s]) for s in names}

    if method == "random":
        warnings.warn("the 'random' split assigns single frames, so neighbouring frames of one recording land in "
                      "train and test and scores measure memory, not generalisation (RT-CAN/Gas-DB protocol); "
                      "use method='video' for a leak-free split", LeakySplitWarning, stacklevel=2)
        order = rng.permutation(len(rows))
        counts = _largest_remainder(len(rows), ratio)
        assignment, start = {}, 0
        for s in names:
            for k in order[start:start + counts[s]]:
                assignment[rows[k]["pair_id"]] = s
            start += counts[s]
        group_key, stratify = None, ()
    else:
        by_rec: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_rec[r["recording"]].append(r)
        recs = sorted(by_rec)
        if len(recs) < len(names):
            raise ValueError(f"a split by recording needs at least {len(names)} recordings for {names}, got "
                             f"{len(recs)}; add recordings, drop val, or use method='random' (which leaks)")
        sizes = {r: len(by_rec[r]) for r in recs}
        if method == "video":
            order = [recs[k] for k in rng.permutation(len(recs))]
            rec_split = assign_groups(sizes, ratio, order)
            stratify = ()
        else:
            strata: dict[str, tuple] = {}
            for rec in recs:
                scenes = Counter(r["scene"] for r in by_rec[rec])
                scene = sorted(scenes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                strata[rec] = (scene, any(r["has_gas"] for r in by_rec[rec]))
            keys = sorted(set(strata.values()))
            order = []
            for k in (keys[i] for i in rng.permutation(len(keys))):
                members = [r for r in recs if strata[r] == k]
                order += [members[i] for i in rng.permutation(len(members))]
            rec_split = assign_groups(sizes, ratio, order, strata=strata)
            stratify = ("scene", "has_gas")
        empty = [s for s in names if s not in rec_split.values()]
        if empty:
            raise ValueError(f"split(s) {empty} got no recording ({len(recs)} recordings for ratios {ratio}); "
                             "add recordings or raise those ratios")
        assignment = {r["pair_id"]: rec_split[r["recording"]] for r in rows}
        group_key = "recording"

    per_split = {s: [r for r in rows if assignment[r["pair_id"]] == s] for s in names}
    return Split(
        method=method, seed=int(seed), ratios=ratio,
        pairs={s: [r["pair_id"] for r in per_split[s]] for s in names},
        groups={s: sorted({r["recording"] for r in per_split[s]}) for s in names},
        summary={s: _summary(per_split[s]) for s in names},
        group_key=group_key, stratify=stratify,
    )


def _largest_remainder(n: int, ratio: Mapping[str, float]) -> dict[str, int]:
    exact = {s: r * n for s, r in ratio.items()}
    counts = {s: int(math.floor(v)) for s, v in exact.items()}
    rest = n - sum(counts.values())
    for s in sorted(ratio, key=lambda s: (-(exact[s] - counts[s]), list(ratio).index(s)))[:rest]:
        counts[s] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# pure part: the frame-level leakage audit
# ---------------------------------------------------------------------------------------------
def frame_signature(image: np.ndarray, *, size: tuple[int, int] = (80, 64), min_scale: float = 1.0,
                    clip: float = 4.0) -> np.ndarray:
    """A small, contrast-normalised thumbnail of a frame, for near-duplicate search.

    The frame is made gray, shrunk to ``size`` (width, height) with area averaging (which
    averages sensor noise away), centred on its median and divided by its robust spread
    (1.4826 x MAD, at least ``min_scale`` grey levels), then clipped to ``[-clip, clip]``.
    Offsets and gains (thermal drift, automatic gain control) therefore cancel, while any local
    change (a plume that moved, a person who walked in) stays visible cell by cell.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) ndarray
        uint8, uint16 or float; 16-bit thermal keeps its units.
    size : (int, int)
        Thumbnail width and height (80x64 = 8x reduction of a 640x512 frame).
    min_scale : float
        Floor of the spread, in the image's grey levels (guards flat frames).
    clip : float
        Bound of the normalised values; it bounds a cell's contribution in :func:`near_duplicates`.

    Returns
    -------
    (size[1], size[0]) float32 ndarray

    Notes
    -----
    On a fixed rig every frame shares the background, so global hashes (dHash, pHash) and SSIM
    call frames with a moved plume duplicates (methods.md §D.4). Comparing normalised thumbnails
    cell by cell (:func:`near_duplicates`) flags a pair only when *no* region changed.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image[:, :, :3].astype(np.float32), cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty H x W or H x W x 3 array, got shape {image.shape}")
    w, h = int(size[0]), int(size[1])
    if w < 2 or h < 2:
        raise ValueError(f"size must be at least (2, 2), got {size}")
    thumb = cv2.resize(image.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    med = float(np.median(thumb))
    scale = max(1.4826 * float(np.median(np.abs(thumb - med))), float(min_scale))
    return np.clip((thumb - med) / np.float32(scale), -clip, clip).astype(np.float32)


def near_duplicates(sigs_a, sigs_b, *, tol: float = 0.5, outlier_fraction: float = 0.01,
                    same: bool = False, chunk: int = 256) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j)`` whose signatures differ by more than ``tol`` in at most a few cells.

    Parameters
    ----------
    sigs_a, sigs_b : sequence of ndarray, or ndarray (N, ...)
        Signatures from :func:`frame_signature` (same size); values must lie in ``[-clip, clip]``.
        Several modalities are compared by calling this once per modality and intersecting.
    tol : float
        Largest per-cell difference (in units of the frame's robust spread) that counts as the same.
    outlier_fraction : float
        Fraction of cells allowed to exceed ``tol`` (noise, a few pixels of a moving edge).
    same : bool
        ``sigs_b is sigs_a``: only pairs with ``i < j`` are reported.
    chunk : int
        Rows of ``sigs_a`` compared at a time (memory bound).

    Returns
    -------
    list of (i, j, fraction)
        Index in ``sigs_a``, index in ``sigs_b``, fraction of cells over ``tol``; sorted.

    Notes
    -----
    Exact and fast: with ``k`` outlier cells allowed and values bounded by ``clip``, a
    near-duplicate has a squared distance of at most ``(P - k) tol^2 + k (2 clip)^2``, so a
    matrix product (``|a|^2 + |b|^2 - 2 a.b``) discards most pairs before the cell-wise count.
    """
    a = _stack(sigs_a, "sigs_a")
    b = a if same else _stack(sigs_b, "sigs_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"signatures differ in size: {a.shape[1:]} vs {b.shape[1:]}; make them with one size")
    if not tol > 0 or not 0 <= outlier_fraction < 1:
        raise ValueError(f"need tol > 0 and 0 <= outlier_fraction < 1, got tol={tol}, "
                         f"outlier_fraction={outlier_fraction}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        return []
    p = a.shape[1]
    k = int(math.floor(outlier_fraction * p))
    bound = float(max(np.abs(a).max(), np.abs(b).max()))
    limit = (p - k) * tol * tol + k * (2 * bound) ** 2 + 1e-3 * p
    na = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    nb = na if same else np.einsum("ij,ij->i", b, b, dtype=np.float64)
    out = []
    for start in range(0, a.shape[0], chunk):
        block = a[start:start + chunk]
        d2 = na[start:start + chunk, None] + nb[None, :] - 2.0 * (block.astype(np.float64) @ b.T.astype(np.float64))
        ii, jj = np.nonzero(d2 <= limit)
        ii = ii + start
        if same:
            keep = ii < jj
            ii, jj = ii[keep], jj[keep]
        for s in range(0, len(ii), 1024):  # exact count on the candidates, ~20 MB at a time
            ci, cj = ii[s:s + 1024], jj[s:s + 1024]
            over = np.count_nonzero(np.abs(a[ci] - b[cj]) > tol, axis=1)
            for i, j, n in zip(ci, cj, over):
                if n <= k:
                    out.append((int(i), int(j), round(float(n) / p, 6)))
    return sorted(out)


def _stack(sigs, name: str) -> np.ndarray:
    arr = np.asarray([np.asarray(s, np.float32).ravel() for s in sigs], np.float32) if not isinstance(
        sigs, np.ndarray) else sigs.reshape(len(sigs), -1).astype(np.float32, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a sequence of equally sized signatures")
    return arr


# ---------------------------------------------------------------------------------------------
# the stage over a workspace
# ---------------------------------------------------------------------------------------------
def split_path(ws, name: str = "default") -> Path:
    """``WS/splits/<name>.json``."""
    from gasdb_tools.workspace import check_id

    check_id(name, what="split name")
    return ws.root / "splits" / f"{name}.json"


def _label_has_gas(ws, pair: Mapping) -> bool:
    """Whether the pair's LabelMe document has a shape labelled ``gas`` (and no ``no_leak`` flag)."""
    from gasdb_tools import labelme_format

    doc = labelme_format.read(ws.path(pair["label"]))
    if (doc.get("flags") or {}).get("no_leak"):
        return False
    return any(s.get("label") == _GAS_LABEL for s in doc["shapes"])


def split_metadata(ws) -> tuple[list[dict], dict[str, dict[str, str]]]:
    """Pair metadata for :func:`make_split`, and the pairs left out with the reason.

    Excluded pairs (blacklist.csv, or a LabelMe document flagged water_spray / too_faint; see
    :func:`gasdb_tools.review.exclusions`) and pairs with no LabelMe document are left out (Gas-DB
    shipped unlabelled frames; RT-CAN issue #2). Returns ``(rows, {"blacklisted": {id: reason},
    "unlabelled": {id: ""}})``.
    """
    from gasdb_tools.review import exclusions, label_path, read_states

    index = ws.read_index()
    states = read_states(ws, index)
    black = exclusions(ws, index, states)
    rows, excluded = [], {"blacklisted": {}, "unlabelled": {}}
    for pid in sorted(index.pairs):
        pair = index.pairs[pid]
        if pid in black:
            excluded["blacklisted"][pid] = black[pid] or "no reason given"
            continue
        if pid not in states:
            excluded["unlabelled"][pid] = "no LabelMe document"
            continue
        pair = {**pair, "label": ws.rel(label_path(ws, pair))}
        rec = index.recordings.get(pair["recording"], {})
        rows.append({"pair_id": pid, "recording": pair["recording"], "scene": rec.get("scene", ""),
                     "has_gas": _label_has_gas(ws, pair)})
    return rows, excluded


def split_workspace(ws, *, method: str = "video", ratios="0.8,0.2", seed: int = 0, name: str = "default",
                    force: bool = False) -> tuple[Path, Split]:
    """Split a workspace's labelled, non-blacklisted pairs and write ``WS/splits/<name>.json``.

    Refuses to replace an existing split file with different content unless ``force``
    (rewriting the same split is a no-op). Returns the file path and the :class:`Split`.
    """
    path = split_path(ws, name)
    rows, excluded = split_metadata(ws)
    if not rows:
        raise WorkspaceError("no labelled, non-blacklisted pairs to split", file=ws.root / ws.PAIRS,
                             fix="extract and label pairs first (gasdb extract, gasdb preannotate)")
    split = make_split(rows, method=method, ratios=ratios, seed=seed)
    split = dataclasses.replace(split, excluded=excluded)
    text = dumps_json(split.to_dict(name=name))
    if path.exists() and path.read_text(encoding="utf-8") != text and not force:
        raise WorkspaceError("a different split with this name exists", file=path,
                             fix="pass --force to replace it (a release built on it changes), or use --name")
    write_json(path, json.loads(text))
    return path, split


def load_split(ws, name: str = "default") -> Split:
    """Read ``WS/splits/<name>.json``."""
    path = split_path(ws, name)
    if not path.exists():
        known = sorted(p.stem for p in (ws.root / "splits").glob("*.json")) if (ws.root / "splits").is_dir() else []
        raise WorkspaceError(f"no split named {name!r} (known: {', '.join(known) or 'none'})", file=path,
                             fix="run `gasdb split WS` first")
    return Split.from_dict(read_json(path, error=FormatError), file=path)


@dataclass
class LeakReport:
    """Result of :func:`check_split`: recordings and frames shared between splits."""

    split: str
    method: str
    pairs: int
    shared_groups: dict = field(default_factory=dict)  # recording -> [splits]
    identical: list = field(default_factory=list)  # [{a, b, split_a, split_b}] hash-identical pixels
    near_identical: list = field(default_factory=list)  # [{a, b, split_a, split_b, cells_over}]
    missing: list = field(default_factory=list)  # pair ids in the split file but not in the workspace
    params: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.shared_groups or self.identical or self.near_identical or self.missing)

    def to_dict(self) -> dict:
        return {"split": self.split, "method": self.method, "pairs": self.pairs, "ok": self.ok,
                "shared_groups": self.shared_groups, "identical": self.identical,
                "near_identical": self.near_identical, "missing": self.missing, "params": self.params}


def _pair_frames(ws, pair: Mapping) -> dict[str, np.ndarray]:
    from gasdb_tools.imaging import read_image

    thermal = pair.get("aligned") or pair["thermal"]
    return {"rgb": read_image(ws.path(pair["rgb"])), "thermal": read_image(ws.path(thermal))}


class FrameAudit:
    """Collects per-frame fingerprints, then finds identical and near-identical frames across splits.

    Feed every pair once with :meth:`add` (the release builder does it while it packs frames, so
    the audit costs one thumbnail per frame); :meth:`findings` compares pairs of *different*
    splits only. A pair of frames is *identical* when every modality has the same pixels
    (sha256), and *near-identical* when every modality's :func:`frame_signature` matches under
    :func:`near_duplicates` (``tol``, ``outlier_fraction``).
    """

    def __init__(self, *, tol: float = 0.5, outlier_fraction: float = 0.01, size: tuple[int, int] = (80, 64)):
        self.params = {"signature_size": [int(size[0]), int(size[1])], "tol": float(tol),
                       "outlier_fraction": float(outlier_fraction), "modalities": list(_AUDIT_MODALITIES)}
        self._ids: list[str] = []
        self._split: list[str] = []
        self._sigs: dict[str, list[np.ndarray]] = {m: [] for m in _AUDIT_MODALITIES}
        self._digests: dict[str, list[int]] = defaultdict(list)

    def add(self, pair_id: str, split: str, frames: Mapping[str, np.ndarray]) -> None:
        """Record one pair: ``frames`` maps ``rgb`` and ``thermal`` to their arrays."""
        missing = [m for m in _AUDIT_MODALITIES if m not in frames]
        if missing:
            raise ValueError(f"frames needs {list(_AUDIT_MODALITIES)}, missing {missing}")
        digest = hashlib.sha256()
        for m in _AUDIT_MODALITIES:
            arr = np.ascontiguousarray(frames[m])
            digest.update(f"{m}:{arr.dtype.str}:{arr.shape}:".encode())
            digest.update(arr.tobytes())
            self._sigs[m].append(frame_signature(arr, size=tuple(self.params["signature_size"])))
        self._digests[digest.hexdigest()].append(len(self._ids))
        self._ids.append(str(pair_id))
        self._split.append(str(split))

    def findings(self) -> tuple[list[dict], list[dict]]:
        """``(identical, near_identical)``: lists of ``{a, b, split_a, split_b[, cells_over]}``, sorted."""
        identical, seen = [], set()
        for members in self._digests.values():
            for x, i in enumerate(members):
                for j in members[x + 1:]:
                    if self._split[i] != self._split[j]:
                        identical.append(self._finding(i, j))
                        seen.add((min(i, j), max(i, j)))
        near = []
        names = sorted(set(self._split), key=lambda s: (SPLIT_NAMES.index(s) if s in SPLIT_NAMES else 99, s))
        arrays = {m: np.asarray(v, np.float32) for m, v in self._sigs.items()} if self._ids else {}
        for x, sa in enumerate(names):
            ka = [k for k, s in enumerate(self._split) if s == sa]
            for sb in names[x + 1:]:
                kb = [k for k, s in enumerate(self._split) if s == sb]
                found = None
                for m in _AUDIT_MODALITIES:
                    hits = {(ka[i], kb[j]): f for i, j, f in near_duplicates(
                        arrays[m][ka], arrays[m][kb], tol=self.params["tol"],
                        outlier_fraction=self.params["outlier_fraction"])}
                    found = hits if found is None else {k: max(v, hits[k]) for k, v in found.items() if k in hits}
                    if not found:
                        break
                for (i, j), frac in (found or {}).items():
                    if (min(i, j), max(i, j)) not in seen:
                        near.append({**self._finding(i, j), "cells_over": frac})
        key = lambda d: (d["a"], d["b"])  # noqa: E731
        return sorted(identical, key=key), sorted(near, key=key)

    def _finding(self, i: int, j: int) -> dict:
        if self._ids[j] < self._ids[i]:
            i, j = j, i
        return {"a": self._ids[i], "b": self._ids[j], "split_a": self._split[i], "split_b": self._split[j]}


_AUDIT_MODALITIES = ("rgb", "thermal")


def check_split(ws, name: str = "default", *, tol: float = 0.5, outlier_fraction: float = 0.01,
                size: tuple[int, int] = (80, 64)) -> LeakReport:
    """Audit a split file: recordings in two splits, and identical or near-identical frames across splits.

    Reads every pair's RGB and thermal frame (the aligned thermal when present) once, through
    :class:`FrameAudit`. Read-only: the workspace is not changed.

    Returns
    -------
    LeakReport
        ``ok`` is False when any recording spans two splits, any frame pair is (near-)identical
        across splits, or the split names pairs the workspace no longer has.
    """
    from gasdb_tools.progress import progress

    split = load_split(ws, name)
    index = ws.read_index()
    where = split.split_of()
    audit = FrameAudit(tol=tol, outlier_fraction=outlier_fraction, size=size)
    report = LeakReport(split=name, method=split.method, pairs=len(where), params=audit.params)
    in_splits: dict[str, set] = defaultdict(set)
    for pid in sorted(where):
        pair = index.pairs.get(pid)
        if pair is None:
            report.missing.append(pid)
        else:
            in_splits[pair["recording"]].add(where[pid])
    report.shared_groups = {rec: sorted(ss, key=SPLIT_NAMES.index) for rec, ss in sorted(in_splits.items())
                            if len(ss) > 1}
    ids = sorted(p for p in where if p in index.pairs)
    for pid in progress(ids, total=len(ids), desc="check", unit="pair"):
        audit.add(pid, where[pid], _pair_frames(ws, index.pairs[pid]))
    report.identical, report.near_identical = audit.findings()
    return report
