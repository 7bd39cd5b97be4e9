"""Leak-free, balanced train/val/test splits and a leakage audit (the ``gasdb split`` stage).

Gas-DB was split 80/20 at random over frames cut from 19 videos, so neighbouring frames of one
video sit on both sides and test scores measure memory rather than generalisation. Here the unit
of splitting is the **recording** (formats.md §7), or a *group* of recordings that must stay
together (a shared background, one site): every pair of one unit lands in one split.

Recordings hold very different numbers of pairs, so which units go where decides how far the
achieved pair fractions are from the requested ratios. :func:`assign_groups` searches for the
assignment closest to the ratios (exact branch and bound, or a seeded local search when the exact
search would take too long), starting from the greedy "largest deficit first" rule, so it is never
worse than that rule.

The module has two layers:

* pure functions over pair metadata (``pair_id``, ``recording``, ``scene``, ``has_gas``):
  :func:`parse_ratios`, :func:`group_recordings`, :func:`assign_groups`, :func:`make_split`
  (strategies ``video``, ``scene-stratified``, ``random``), :func:`frame_signature` and
  :func:`near_duplicates` (the frame-level audit);
* the stage over a workspace: :func:`split_workspace` writes ``WS/splits/<name>.json``,
  :func:`load_split` reads it back and :func:`check_split` audits it.

Split files are deterministic: the same workspace, strategy, ratios, grouping and seed give a
byte-identical file (sorted keys and ids, no timestamps, a search bounded by a node count, not by time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
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
    "TOLERANCE",
    "LeakySplitWarning",
    "Split",
    "LeakReport",
    "parse_ratios",
    "group_recordings",
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
#: A split whose achieved pair fraction is further than this from its ratio is warned about (5 points).
TOLERANCE = 0.05
#: ``scene-stratified`` lets the overall fractions drift this far (or as far as the best plain split
#: must) from the ratios to balance scenes and gas/no-gas.
STRATIFY_SLACK = 0.02
_MAX_NODES = 10_000  # branch-and-bound nodes before the search settles for the best found
_CLASS_CHUNK = 24  # equal units branched on together (compositions instead of 3^m assignments)
_EXACT_CLASSES = 200  # more classes than this: local search only (recursion depth)
_FORMAT = "gasdb-split"
_FORMAT_VERSION = 1
_GAS_LABEL = "gas"


class LeakySplitWarning(UserWarning):
    """A split puts frames of one recording on both sides (the paper's frame-level protocol)."""


# ---------------------------------------------------------------------------------------------
# pure part: ratios and grouping
# ---------------------------------------------------------------------------------------------
def parse_ratios(ratios, *, val: float | None = None) -> dict[str, float]:
    """Turn ``"0.8,0.2"`` (train, test) or ``"0.7,0.1,0.2"`` (train, val, test) into a dict.

    Parameters
    ----------
    ratios : str or sequence of float
        Two values (train, test) or three (train, val, test) summing to 1; with ``val``, two values
        summing to 1 or to ``1 - val``.
    val : float, optional
        A validation fraction of the whole. Only with two ratios, read one of two ways, which
        cannot be confused because ``val > 0``:

        * the two ratios sum to 1: ``val`` is taken out of train (``0.8,0.2`` with ``val=0.1``
          gives train 0.7, val 0.1, test 0.2);
        * the two ratios sum to ``1 - val``: they are train and test as given (``0.7,0.2`` with
          ``val=0.1`` gives the same train 0.7, val 0.1, test 0.2).

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
    >>> parse_ratios("0.7,0.2", val=0.1)
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
    if any(not math.isfinite(v) for v in values) or (val is not None and not math.isfinite(val)):
        raise ValueError(f"ratios must be finite numbers, got {ratios!r}")
    total = sum(values)
    if len(values) == 2 and val is not None:
        if not 0 < val < 1:
            raise ValueError(f"val must be a fraction of the whole between 0 and 1, got {val:g}")
        train, test = values
        if abs(total - 1.0) <= 1e-6:  # val comes out of train
            if not val < train:
                raise ValueError(f"val must be > 0 and smaller than the train ratio {train:g}, got {val:g}")
            train = round(train - val, 12)
        elif abs(total + val - 1.0) > 1e-6:
            raise ValueError(f"with val {val:g}, ratios must sum to 1 (val taken out of train: '0.8,0.2' "
                             f"--val 0.1) or to {1 - val:g} (train,test as given: '0.7,0.2' --val 0.1), got "
                             f"{'+'.join(f'{v:g}' for v in values)} = {total:g}")
        out = {"train": train, "val": float(val), "test": test}
    else:
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"ratios must sum to 1, got {'+'.join(f'{v:g}' for v in values)} = {total:g}; "
                             "e.g. '0.8,0.2' or '0.7,0.1,0.2'")
        out = dict(zip(("train", "test") if len(values) == 2 else SPLIT_NAMES, values))
        out = {s: out[s] for s in SPLIT_NAMES if s in out}
    bad = [k for k, v in out.items() if not v > 0]
    if bad:
        raise ValueError(f"every split needs a ratio > 0, got {out}; drop the split or raise its ratio")
    return out


def _tags(row: Mapping) -> list[str]:
    return str(row.get("tags", "") or "").replace(";", " ").replace(",", " ").split()


def group_recordings(recordings: Mapping[str, Mapping], *, by: Sequence[str] = (),
                     together: Sequence[Sequence[str]] = ()) -> dict[str, str]:
    """Which recordings must stay on one side of a split: recording id -> group id.

    Two recordings are linked when they share a non-empty value of any key in ``by``, or are
    listed in one entry of ``together``; groups are the connected sets of links (so ``a~b`` and
    ``b~c`` put ``a``, ``b`` and ``c`` together). A group's id is its smallest recording id; a
    recording linked to none is its own group.

    Parameters
    ----------
    recordings : mapping
        Recording id -> its ``recordings.csv`` row.
    by : sequence of str
        Keys, each one of:

        * a column of ``recordings.csv`` (``scene``, ``rig``, or one a maintainer adds, e.g.
          ``background``): equal non-empty values link recordings (exact text);
        * ``tag:NAME``: tags of the form ``NAME=VALUE`` (``gasdb add --tag background=lot-a``)
          link recordings with equal ``VALUE``;
        * ``tag``: recordings sharing any tag are linked (every shared tag binds, so tags such as
          ``absorbing`` merge everything they are on; prefer ``tag:NAME``).
    together : sequence of sequence of str
        Recording ids to keep together, e.g. those ``gasdb split --check`` finds sharing frames.

    Returns
    -------
    dict
        Every recording id -> its group id.

    Raises
    ------
    ValueError
        A key that is no column (or ``tag:`` with no such tag on any recording), a key no
        recording has a value for, or an unknown recording id in ``together``.

    Examples
    --------
    >>> recs = {"a": {"background": "lot"}, "b": {"background": "lot"}, "c": {"background": ""}}
    >>> group_recordings(recs, by=["background"])
    {'a': 'a', 'b': 'a', 'c': 'c'}
    >>> group_recordings(recs, together=[["b", "c"]])
    {'a': 'a', 'b': 'b', 'c': 'b'}
    """
    ids = sorted(recordings)
    parent = {r: r for r in ids}

    def find(r: str) -> str:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    columns = sorted({k for row in recordings.values() for k in row})
    for key in by:
        key = str(key).strip()
        if key == "tag":
            values = {r: _tags(recordings[r]) for r in ids}
        elif key.startswith("tag:") and key[4:]:
            prefix = key[4:] + "="
            values = {r: [t[len(prefix):] for t in _tags(recordings[r]) if t.startswith(prefix) and t != prefix]
                      for r in ids}
        elif key in columns:
            values = {r: [str(recordings[r].get(key, "") or "").strip()] for r in ids}
            values = {r: [v for v in vs if v] for r, vs in values.items()}
        else:
            raise ValueError(f"--group-by {key!r} is no column of recordings.csv (columns: {', '.join(columns)}) "
                             "and not 'tag' or 'tag:NAME'; add a column (e.g. 'background') with equal values "
                             "for recordings that must stay together")
        if not any(values.values()):
            what = f"a tag {key[4:]}=VALUE" if key.startswith("tag:") else f"a value in {key!r}"
            raise ValueError(f"--group-by {key!r}: no recording has {what}; fill it in recordings.csv for the "
                             "recordings that must stay together")
        first: dict[str, str] = {}
        for r in ids:
            for v in values[r]:
                union(r, first.setdefault(v, r))
    for members in together:
        members = [str(m).strip() for m in members if str(m).strip()]
        unknown = [m for m in members if m not in parent]
        if unknown:
            raise ValueError(f"--together names unknown recording(s) {', '.join(unknown)}; use ids from "
                             "recordings.csv")
        for m in members[1:]:
            union(members[0], m)
    return {r: find(r) for r in ids}


# ---------------------------------------------------------------------------------------------
# pure part: assigning whole groups to splits
# ---------------------------------------------------------------------------------------------
def _greedy_assign(sizes: Mapping[str, int], ratios: Mapping[str, float], order: Sequence[str], *,
                   strata: Mapping[str, object] | None = None) -> dict[str, str]:
    """The greedy baseline: each group, in ``order``, to the split furthest below its target.

    Without ``strata`` the split with the largest deficit (target count minus count so far)
    takes the group, ties going to the split listed first in ``ratios``; when only as many groups
    are left as splits without one, each such split gets one. With ``strata`` (group -> stratum
    key) the group goes, among the splits still below their overall target, to the one furthest
    below its target within the group's stratum (ties: the larger overall deficit). No split ends
    above its target by more than the largest group, but one large group taken late can leave a
    split far off (295 pairs in a 545-pair set): :func:`assign_groups` starts from this and searches.
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


class _Objective:
    """Cost of an assignment from its per-split counts ``C`` (splits x dimensions; dimension 0 = pairs).

    Plain: ``(largest |deviation| of a split, sum of |deviations|)``, in pairs: the achieved
    fractions closest to the ratios in the max norm, then in the 1-norm. Stratified (dimensions
    1.. are scenes and gas/no-gas): ``(max(largest deviation, allowance), sum over dimensions of
    the largest fraction deviation within it, largest deviation, sum of deviations)``, so the
    overall fractions may drift up to ``allowance`` pairs to balance every scene and gas/no-gas.
    Costs are rounded to 1e-9 and compared lexicographically.
    """

    def __init__(self, totals, ratio, *, stratified: bool = False, allowance: float = 0.0):
        totals = np.asarray(totals, np.float64)
        self.target = np.asarray(ratio, np.float64)[:, None] * totals[None, :]
        self.floor = np.abs(self.target - np.round(self.target))  # counts are integers
        self.weight = 1.0 / totals[1:]
        self.stratified = stratified
        self.allowance = round(float(allowance), 9)

    def _combine(self, dev_max, dev_sum, strata_dev):
        g, s0 = np.round(dev_max, 9), np.round(dev_sum, 9)
        if not self.stratified:
            return np.stack([g, s0], -1)
        strat = np.round((strata_dev.max(-2) * self.weight).sum(-1), 9)
        return np.stack([np.maximum(g, self.allowance), strat, g, s0], -1)

    def cost(self, counts):
        dev = np.abs(counts - self.target)
        return self._combine(dev[..., 0].max(-1), dev[..., 0].sum(-1), dev[..., 1:])

    def bound(self, counts, remaining):
        """A lower bound on the cost of every completion of ``counts`` with ``remaining`` items left."""
        over = np.maximum(counts - self.target, 0.0)
        under = np.maximum(self.target - counts - remaining[..., None, :], 0.0)
        dev = np.maximum(np.maximum(over, under), self.floor)
        # deviations sum to zero, so the 1-norm is twice the total overshoot (or undershoot)
        s0 = np.maximum(dev[..., 0].sum(-1), 2 * np.maximum(over[..., 0].sum(-1), under[..., 0].sum(-1)))
        return self._combine(dev[..., 0].max(-1), s0, dev[..., 1:])


def _lex_order(costs: np.ndarray) -> np.ndarray:
    """Indices sorting rows of ``costs`` lexicographically (stable: ties keep their order)."""
    return np.lexsort(costs.T[::-1])


def _local_search(vec, assign, obj: _Objective, rng, *, nonempty: bool, max_passes: int = 50):
    """Hill climbing from ``assign`` by moving one group or swapping two; seeded scan order."""
    n_splits = obj.target.shape[0]
    assign = np.array(assign, np.int64)
    counts = np.zeros((n_splits, vec.shape[1]), np.int64)
    np.add.at(counts, assign, vec)
    members = np.bincount(assign, minlength=n_splits)
    current = obj.cost(counts).tolist()
    for _ in range(max_passes):
        moved = False
        for g in rng.permutation(len(vec)):
            s, v = assign[g], vec[g]
            targets = [t for t in range(n_splits) if t != s] if not (nonempty and members[s] == 1) else []
            others = np.nonzero(assign != s)[0]
            cand = np.repeat(counts[None], len(targets) + len(others), axis=0)
            for k, t in enumerate(targets):
                cand[k, s] -= v
                cand[k, t] += v
            diff = vec[others] - v
            rows = np.arange(len(targets), len(cand))
            cand[rows, s] += diff
            cand[rows, assign[others]] -= diff
            if not len(cand):
                continue
            costs = obj.cost(cand)
            j = int(_lex_order(costs)[0])
            if costs[j].tolist() < current:
                current = costs[j].tolist()
                counts = cand[j]
                if j < len(targets):
                    members[s] -= 1
                    members[targets[j]] += 1
                    assign[g] = targets[j]
                else:
                    h = others[j - len(targets)]
                    assign[g], assign[h] = assign[h], s
                moved = True
        if not moved:
            break
    return assign, current


class _Budget(Exception):
    pass


def _compositions(m: int, parts: int) -> np.ndarray:
    """Every way to write ``m`` as an ordered sum of ``parts`` non-negative integers."""
    out = [c + (m - sum(c),) for c in itertools.product(range(m + 1), repeat=parts - 1) if sum(c) <= m]
    return np.array(out, np.int64)


def _branch_and_bound(vec, obj: _Objective, best: list, rng, *, nonempty: bool, max_nodes: int):
    """Exact search below the incumbent cost ``best``; returns (assignment or None, nodes, proven).

    Groups with equal count vectors are interchangeable, so each class of equal groups is branched
    on as a whole (how many go to each split), largest first, children in order of their lower
    bound (ties in a seeded order); states reached twice are expanded once. This is the complete
    anytime search of multiway number partitioning (Korf, "A complete anytime algorithm for number
    partitioning", Artificial Intelligence 106, 1998) with a bound for ratios instead of equal parts.
    """
    n_splits = obj.target.shape[0]
    by_row: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(map(tuple, vec.tolist())):
        by_row[row].append(i)
    chunks = []
    for row, idx in sorted(by_row.items(), key=lambda kv: (-kv[0][0], kv[0])):
        idx = [idx[k] for k in rng.permutation(len(idx))]
        for start in range(0, len(idx), _CLASS_CHUNK):
            chunks.append((np.array(row, np.int64), idx[start:start + _CLASS_CHUNK]))
    if len(chunks) > _EXACT_CLASSES:
        return None, 0, False
    comps = []
    for _, idx in chunks:
        c = _compositions(len(idx), n_splits)
        comps.append(c[rng.permutation(len(c))])
    remaining = np.zeros((len(chunks) + 1, vec.shape[1]), np.int64)
    groups_left = np.zeros(len(chunks) + 1, np.int64)
    for i in range(len(chunks) - 1, -1, -1):
        remaining[i] = remaining[i + 1] + chunks[i][0] * len(chunks[i][1])
        groups_left[i] = groups_left[i + 1] + len(chunks[i][1])
    found: list = [None]
    path: list[int] = []
    seen: set = set()
    nodes = 0

    def dfs(i: int, counts: np.ndarray, used: np.ndarray) -> None:
        nonlocal nodes
        if i == len(chunks):
            cost = obj.cost(counts).tolist()
            if cost < best[0]:
                best[0], found[0] = cost, list(path)
            return
        nodes += 1
        if nodes > max_nodes:
            raise _Budget
        row = chunks[i][0]
        kids = counts[None] + comps[i][:, :, None] * row[None, None, :]
        kid_used = used[None] | (comps[i] > 0)
        feasible = (~kid_used).sum(1) <= groups_left[i + 1] if nonempty else np.ones(len(kids), bool)
        lb = obj.bound(kids, remaining[i + 1])
        for j in _lex_order(lb):
            if lb[j].tolist() >= best[0]:
                break
            if not feasible[j]:
                continue
            key = (i, kids[j].tobytes(), kid_used[j].tobytes())
            if key in seen:
                continue
            seen.add(key)
            path.append(int(j))
            dfs(i + 1, kids[j], kid_used[j])
            path.pop()

    try:
        dfs(0, np.zeros((n_splits, vec.shape[1]), np.int64), np.zeros(n_splits, bool))
        proven = True
    except _Budget:
        proven = False
    if found[0] is None:
        return None, nodes, proven
    assign = np.zeros(len(vec), np.int64)
    for (_, idx), comp in zip(chunks, (comps[i][j] for i, j in enumerate(found[0]))):
        start = 0
        for s, k in enumerate(comp):
            assign[idx[start:start + k]] = s
            start += k
    return assign, nodes, proven


def _solve(vec, obj: _Objective, starts, rng, *, nonempty: bool, max_nodes: int):
    """Best of a local search from each start, then branch and bound below it."""
    best_assign, best_cost = None, None
    for start in starts:
        a, c = _local_search(vec, start, obj, rng, nonempty=nonempty)
        if best_cost is None or c < best_cost:
            best_assign, best_cost = a, c
    incumbent = [best_cost]
    a, nodes, proven = _branch_and_bound(vec, obj, incumbent, rng, nonempty=nonempty, max_nodes=max_nodes)
    if a is not None:
        best_assign, best_cost = a, incumbent[0]
    info = {"method": "exact" if proven else "local", "proven_optimal": bool(proven), "nodes": int(nodes)}
    return best_assign, best_cost, info


@dataclass(frozen=True)
class _Assignment:
    splits: dict  # group -> split
    search: dict  # method, proven_optimal, nodes (and "overall" for stratified)
    greedy: dict  # the greedy baseline's group -> split


def _assign(sizes: Mapping[str, object], ratios: Mapping[str, float], *, seed: int = 0,
            strata: Mapping[str, object] | None = None, max_nodes: int = _MAX_NODES) -> _Assignment:
    groups = sorted(sizes)
    names = list(ratios)
    ratio = np.array([float(ratios[s]) for s in names])
    if not groups:
        raise ValueError("sizes is empty: no groups to assign")
    if strata is None:
        vec = np.array([[int(sizes[g])] for g in groups], np.int64)
    else:
        if set(strata) < set(groups):
            raise ValueError("strata must give a stratum for every group")
        per = {g: (dict(strata[g]) if isinstance(strata[g], Mapping) else {strata[g]: int(sizes[g])})
               for g in groups}
        labels = sorted({k for d in per.values() for k in d}, key=repr)
        vec = np.array([[int(sizes[g])] + [int(per[g].get(k, 0)) for k in labels] for g in groups], np.int64)
        vec = vec[:, [0] + [k for k in range(1, vec.shape[1]) if vec[:, k].sum() > 0]]
    if (vec < 0).any() or vec[:, 0].sum() == 0:
        raise ValueError("group sizes must be >= 0 with at least one item")
    nonempty = len(groups) >= len(names)
    rng = np.random.default_rng(int(seed))
    index = {g: k for k, g in enumerate(groups)}
    pos = {s: k for k, s in enumerate(names)}

    def greedy(order, keys=None):
        got = _greedy_assign({g: int(sizes[g]) for g in groups}, ratios, order, strata=keys)
        return np.array([pos[got[g]] for g in groups], np.int64), got

    plain = _Objective(vec[:, :1].sum(0), ratio)
    start, baseline = greedy([groups[k] for k in rng.permutation(len(groups))])
    a, cost, info = _solve(vec[:, :1], plain, [start], rng, nonempty=nonempty, max_nodes=max_nodes)
    if strata is not None:
        keys = {g: tuple(sorted((k for k, n in per[g].items() if n > 0), key=repr)) if isinstance(strata[g], Mapping)
                else strata[g] for g in groups}
        kinds = sorted(set(keys.values()), key=repr)
        order = []
        for kind in (kinds[i] for i in rng.permutation(len(kinds))):
            members = [g for g in groups if keys[g] == kind]
            order += [members[i] for i in rng.permutation(len(members))]
        s_start, baseline = greedy(order, keys)
        allowance = max(cost[0], STRATIFY_SLACK * float(vec[:, 0].sum()))
        strat = _Objective(vec.sum(0), ratio, stratified=True, allowance=allowance)
        overall = info
        a, _, info = _solve(vec, strat, [s_start, a], rng, nonempty=nonempty, max_nodes=max_nodes)
        info = {**info, "overall": overall}
    return _Assignment(splits={g: names[int(a[index[g]])] for g in groups}, search=info, greedy=baseline)


def assign_groups(sizes: Mapping[str, int], ratios: Mapping[str, float], *, seed: int = 0,
                  strata: Mapping[str, object] | None = None, max_nodes: int = _MAX_NODES) -> dict[str, str]:
    """Assign whole groups to splits so the achieved item fractions are closest to the ratios.

    Minimises the largest deviation of a split's item count from its target (``ratio x total``),
    then the sum of deviations, over every assignment that gives each split at least one group
    (when there are as many groups as splits). The greedy rule (each group, in a seeded order, to
    the split furthest below target) gives the starting point; a local search (move one group, swap
    two) improves it; a branch and bound then either proves it optimal or finds the optimum, within
    ``max_nodes`` nodes (``benchmarks/bench_splits.py``: proved optimal for 95-100 % of random sets
    of up to 19 recordings and 75-100 % of sets of 30-60; every result was within 0.3 points of
    the ratios from 12 recordings on). The result is never worse than the greedy one and depends
    only on the inputs and ``seed``.

    Parameters
    ----------
    sizes : mapping
        Group id -> number of items (pairs) in it.
    ratios : mapping
        Split name -> fraction (summing to 1), e.g. from :func:`parse_ratios`.
    seed : int
        Orders the greedy start, the local search and ties in the exact search: among equally good
        assignments, the seed decides.
    strata : mapping, optional
        Group id -> a stratum key (the whole group is in it) or a mapping stratum -> item count
        (e.g. ``{"scene=sunny": 30, "gas": 12, "no-gas": 18}``). Then the overall fractions may be up
        to ``max(STRATIFY_SLACK, best possible)`` off, and within that every stratum is spread over
        the splits as close to the ratios as possible (sum over strata of each stratum's largest
        fraction deviation).
    max_nodes : int
        Branch-and-bound nodes before settling for the best found (bounds time, keeps determinism).

    Returns
    -------
    dict
        Group id -> split name.

    Examples
    --------
    >>> sizes = {"a": 295, "b": 61, "c": 61, "d": 61, "e": 41, "f": 25}
    >>> got = assign_groups(sizes, {"train": 0.7, "val": 0.1, "test": 0.2})
    >>> {s: sum(n for g, n in sizes.items() if got[g] == s) for s in ("train", "val", "test")}
    {'train': 381, 'val': 61, 'test': 102}
    """
    return _assign(sizes, ratios, seed=seed, strata=strata, max_nodes=max_nodes).splits


# ---------------------------------------------------------------------------------------------
# pure part: the split
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """A split of pairs: which pairs (and which recordings) each split holds, and how it was made.

    ``pairs`` and ``groups`` map split name -> sorted ids (``groups`` are recordings).
    ``summary`` holds per-split counts (pairs, recordings, positive pairs, scenes) and fractions
    (requested, achieved, per scene, of the positive pairs). ``balance`` says how close the
    achieved fractions are and how they were searched; ``group_by``, ``together`` and ``linked``
    record which recordings were kept together. Use :meth:`to_dict` for the JSON file.
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
    balance: dict = field(default_factory=dict)
    group_by: tuple = ()
    together: tuple = ()
    linked: tuple = ()

    @property
    def leaks(self) -> bool:
        """True when a recording appears in more than one split."""
        seen = Counter(g for gs in self.groups.values() for g in gs)
        return any(n > 1 for n in seen.values())

    @property
    def warning(self) -> str | None:
        """The text of the balance warning (a split more than ``TOLERANCE`` off), or None."""
        return self.balance.get("warning")

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
            "group_by": list(self.group_by),
            "together": [list(t) for t in self.together],
            "linked": [list(t) for t in self.linked],
            "stratify": list(self.stratify),
            "leaks_across_splits": self.leaks,
            "balance": dict(self.balance),
            "splits": {s: {"groups": list(self.groups[s]), "pairs": list(self.pairs[s]), **self.summary[s]}
                       for s in self.pairs},
            "excluded": {k: dict(sorted(v.items())) for k, v in sorted(self.excluded.items())},
        }

    @classmethod
    def from_dict(cls, doc: Mapping, *, file=None) -> "Split":
        """Rebuild a :class:`Split` from its JSON document, checking the fields it needs.

        Files written before ``balance``, ``group_by``, ``together`` and ``linked`` existed read
        with those empty.
        """
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
                       stratify=tuple(doc.get("stratify", ())), excluded=dict(doc.get("excluded", {})),
                       balance=dict(doc.get("balance") or {}), group_by=tuple(doc.get("group_by") or ()),
                       together=tuple(tuple(t) for t in doc.get("together") or ()),
                       linked=tuple(tuple(t) for t in doc.get("linked") or ()))
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


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def _summaries(per_split: Mapping[str, list], ratio: Mapping[str, float], rows: list[dict]) -> dict:
    total = len(rows)
    scene_total = Counter(r["scene"] for r in rows)
    positive = sum(r["has_gas"] for r in rows)
    out = {}
    for s, members in per_split.items():
        scenes = Counter(r["scene"] for r in members)
        gas = sum(r["has_gas"] for r in members)
        out[s] = {
            "n_pairs": len(members),
            "n_groups": len({r["recording"] for r in members}),
            "positive_pairs": gas,
            "scenes": dict(sorted(scenes.items())),
            "requested_fraction": round(float(ratio[s]), 6),
            "achieved_fraction": _fraction(len(members), total),
            "scene_fractions": {sc: _fraction(scenes.get(sc, 0), n) for sc, n in sorted(scene_total.items())},
            "positive_fraction": _fraction(gas, positive),
        }
    return out


def _balance(summary: Mapping[str, dict], ratio: Mapping[str, float], search: Mapping, *, greedy=None,
             largest=None, units: int = 0, unit_word: str = "recording") -> dict:
    """The ``balance`` block of a split file, with the warning when a split is > TOLERANCE off."""
    dev = {s: abs(summary[s]["achieved_fraction"] - ratio[s]) for s in summary}
    worst = max(dev, key=lambda s: (round(dev[s], 9), -list(dev).index(s)))
    scenes = sorted({sc for body in summary.values() for sc in body["scene_fractions"]})
    out = {
        "tolerance": TOLERANCE,
        "max_deviation": round(dev[worst], 6),
        "worst_split": worst,
        "within_tolerance": bool(dev[worst] <= TOLERANCE + 1e-9),
        "search": dict(search),
        "scene_max_deviation": {sc: round(max(abs(summary[s]["scene_fractions"][sc] - ratio[s]) for s in summary),
                                          6) for sc in scenes},
        "warning": None,
    }
    if greedy is not None:
        out["greedy_max_deviation"] = round(greedy, 6)
    if largest is not None:
        out["largest_unit"] = largest
    if not out["within_tolerance"]:
        body = summary[worst]
        text = (f"{worst} is {100 * dev[worst]:.1f} points off its ratio (requested {100 * ratio[worst]:.1f} %, "
                f"achieved {100 * body['achieved_fraction']:.1f} %)")
        proven = (search.get("overall") or search).get("proven_optimal")
        if proven:
            text += f"; no assignment of these {units} {unit_word}s comes closer (exact search)"
        else:
            nodes = (search.get("overall") or search).get("nodes")
            text += (f"; this is the best a seeded local search found (the exact search stopped after {nodes} "
                     "nodes), another --seed may come closer")
        if largest is not None:
            text += (f"; the largest {unit_word}, {'+'.join(largest['recordings'])}, holds "
                     f"{100 * largest['fraction']:.1f} % of the pairs")
        out["warning"] = text
    return out


def make_split(pairs: Sequence[Mapping], *, method: str = "video", ratios="0.8,0.2", seed: int = 0,
               groups: Mapping[str, str] | None = None, max_nodes: int = _MAX_NODES) -> Split:
    """Split pairs into train/(val)/test, by recording or recording group (default) or, leaking, by frame.

    Parameters
    ----------
    pairs : sequence of mapping
        One per pair: ``pair_id``, ``recording``, optional ``scene`` (str) and ``has_gas`` (bool).
    method : {'video', 'scene-stratified', 'random'}
        ``video``: whole recordings (or groups) go to one split; :func:`assign_groups` picks the
        assignment whose pair fractions are closest to the ratios. ``scene-stratified``: also by
        recording; the overall fractions may be up to ``max(STRATIFY_SLACK, the best possible)``
        off, and within that each scene and gas/no-gas (pairs with and without a ``gas`` shape) is
        spread over the splits as close to the ratios as possible. ``random``: the RT-CAN paper's
        frame-level 80/20 protocol; neighbouring frames of one video land on both sides, so it
        **leaks** and emits a :class:`LeakySplitWarning`.
    ratios : str, sequence or mapping
        See :func:`parse_ratios`; a mapping is used as given.
    seed : int
        Seed of ``numpy.random.default_rng``; the same inputs and seed give the same split.
    groups : mapping, optional
        Recording id -> group id (:func:`group_recordings`): recordings of one group always land in
        one split. Recordings not in it are their own group. Not with ``random``.
    max_nodes : int
        Node budget of the exact search (see :func:`assign_groups`).

    Returns
    -------
    Split
        Its ``summary`` holds requested and achieved fractions per split and per scene; its
        ``balance`` the largest deviation, the search used, the greedy baseline's deviation and,
        when a split is more than :data:`TOLERANCE` off, a warning that says why.

    Raises
    ------
    ValueError
        Unknown method, bad ratios, fewer recordings (groups) than splits for a grouped method.

    Notes
    -----
    Grouping by video follows the standard advice against identity/temporal leakage in
    grouped data (e.g. scikit-learn's ``GroupShuffleSplit``); the RT-CAN protocol it replaces is
    described in Zhu et al., "RT-CAN: ... gas leak segmentation", Gas-DB (2024).

    Examples
    --------
    >>> rows = [{"pair_id": f"r{r}_{i}", "recording": f"r{r}"} for r in range(5) for i in range(4)]
    >>> s = make_split(rows, ratios="0.8,0.2", seed=1)
    >>> [len(s.pairs[k]) for k in ("train", "test")], s.leaks, s.balance["max_deviation"]
    ([16, 4], False, 0.0)
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
    names = [s for s in SPLIT_NAMES if s in ratio]
    ratio = {s: float(ratio[s]) for s in names}
    groups = dict(groups or {})
    linked: tuple = ()

    if method == "random":
        if len(set(groups.values())) < len(groups):
            raise ValueError("groups keep recordings together, which a frame-level 'random' split cannot; "
                             "use method='video' or 'scene-stratified'")
        warnings.warn("the 'random' split assigns single frames, so neighbouring frames of one recording land in "
                      "train and test and scores measure memory, not generalisation (RT-CAN/Gas-DB protocol); "
                      "use method='video' for a leak-free split", LeakySplitWarning, stacklevel=2)
        rng = np.random.default_rng(int(seed))
        order = rng.permutation(len(rows))
        counts = _largest_remainder(len(rows), ratio)
        assignment, start = {}, 0
        for s in names:
            for k in order[start:start + counts[s]]:
                assignment[rows[k]["pair_id"]] = s
            start += counts[s]
        group_key, stratify = None, ()
        search, greedy, largest, units = {"method": "frames", "proven_optimal": True, "nodes": 0}, None, None, 0
    else:
        unit_of = {r["recording"]: str(groups.get(r["recording"], r["recording"])) for r in rows}
        by_unit: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_unit[unit_of[r["recording"]]].append(r)
        units = len(by_unit)
        word = "recording" if all(len({r["recording"] for r in v}) == 1 for v in by_unit.values()) else "group"
        if units < len(names):
            raise ValueError(f"a split by recording needs at least {len(names)} recordings for {names}, got "
                             f"{units} {word}s; add recordings, drop val, group less, or split single frames "
                             "(`--strategy random`, which leaks)")
        sizes = {u: len(v) for u, v in by_unit.items()}
        strata = None
        if method == "scene-stratified":
            scenes = sorted({r["scene"] for r in rows})
            strata = {}
            for u, members in by_unit.items():
                counts = Counter(f"scene={r['scene']}" for r in members) if len(scenes) > 1 else Counter()
                counts.update("gas" if r["has_gas"] else "no-gas" for r in members)
                strata[u] = dict(counts)
        result = _assign(sizes, ratio, seed=int(seed), strata=strata, max_nodes=max_nodes)
        assignment = {r["pair_id"]: result.splits[unit_of[r["recording"]]] for r in rows}
        search = result.search
        greedy = max(abs(sum(n for u, n in sizes.items() if result.greedy[u] == s) / len(rows) - ratio[s])
                     for s in names)
        big = max(sorted(sizes), key=lambda u: sizes[u])
        largest = {"recordings": sorted({r["recording"] for r in by_unit[big]}), "pairs": sizes[big],
                   "fraction": _fraction(sizes[big], len(rows))}
        linked = tuple(sorted(tuple(sorted({r["recording"] for r in v})) for v in by_unit.values()
                              if len({r["recording"] for r in v}) > 1))
        group_key = "recording"
        stratify = ("scene", "has_gas") if method == "scene-stratified" else ()

    per_split = {s: [r for r in rows if assignment[r["pair_id"]] == s] for s in names}
    summary = _summaries(per_split, ratio, rows)
    balance = _balance(summary, ratio, search, greedy=greedy, largest=largest, units=units,
                       unit_word="recording" if not linked else "group")
    return Split(
        method=method, seed=int(seed), ratios=ratio,
        pairs={s: [r["pair_id"] for r in per_split[s]] for s in names},
        groups={s: sorted({r["recording"] for r in per_split[s]}) for s in names},
        summary=summary, group_key=group_key, stratify=stratify, balance=balance, linked=linked,
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
                    force: bool = False, group_by: Sequence[str] = (), together: Sequence[Sequence[str]] = (),
                    max_nodes: int = _MAX_NODES) -> tuple[Path, Split]:
    """Split a workspace's labelled, non-blacklisted pairs and write ``WS/splits/<name>.json``.

    ``group_by`` and ``together`` keep recordings on one side (:func:`group_recordings` over
    ``recordings.csv``); both are recorded in the file with the groups they made (``linked``).
    Refuses to replace an existing split file with different content unless ``force``
    (rewriting the same split is a no-op). Returns the file path and the :class:`Split`.
    """
    path = split_path(ws, name)
    rows, excluded = split_metadata(ws)
    if not rows:
        raise WorkspaceError("no labelled, non-blacklisted pairs to split", file=ws.root / ws.PAIRS,
                             fix="extract and label pairs first (gasdb extract, gasdb preannotate)")
    by = tuple(str(k).strip() for k in group_by)
    together = tuple(tuple(sorted({str(r).strip() for r in t if str(r).strip()})) for t in together)
    groups = None
    if by or together:
        if method == "random":
            raise ValueError("--group-by/--together keep recordings together, which the frame-level 'random' "
                             "strategy cannot; use --strategy video or scene-stratified")
        try:
            groups = group_recordings(ws.read_index().recordings, by=by, together=together)
        except ValueError as exc:
            raise WorkspaceError(str(exc), file=ws.root / ws.RECORDINGS, field="--group-by/--together",
                                 fix="name a column of recordings.csv, tag:NAME, or recording ids") from None
    split = make_split(rows, method=method, ratios=ratios, seed=seed, groups=groups, max_nodes=max_nodes)
    split = dataclasses.replace(split, excluded=excluded, group_by=by, together=tuple(sorted(set(together))))
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
                             fix=f"run `gasdb split {ws.root}` first")
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
    linked: list = field(default_factory=list)  # [[recordings]] sharing (near-)identical frames across splits
    fix: dict = field(default_factory=dict)  # {"together": [[...]], "args": [...]}: the re-split that fixes it

    @property
    def ok(self) -> bool:
        return not (self.shared_groups or self.identical or self.near_identical or self.missing)

    def to_dict(self) -> dict:
        return {"split": self.split, "method": self.method, "pairs": self.pairs, "ok": self.ok,
                "shared_groups": self.shared_groups, "identical": self.identical,
                "near_identical": self.near_identical, "missing": self.missing, "params": self.params,
                "linked_recordings": self.linked, "fix": self.fix}


def _pair_frames(ws, pair: Mapping) -> dict[str, np.ndarray]:
    from gasdb_tools.imaging import read_image

    thermal = read_image(ws.path(pair.get("aligned") or pair["thermal"]))
    if not pair.get("rgb"):  # a thermal camera alone: black RGB, as the release packs it
        return {"rgb": np.zeros((*thermal.shape[:2], 3), np.uint8), "thermal": thermal}
    return {"rgb": read_image(ws.path(pair["rgb"])), "thermal": thermal}


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
    report.linked, report.fix = _linked_fix(split, name, index, report)
    return report


def _ratio_text(ratios: Mapping[str, float]) -> str:
    return ",".join(f"{ratios[s]:g}" for s in SPLIT_NAMES if s in ratios)


def _linked_fix(split: Split, name: str, index, report: LeakReport) -> tuple[list, dict]:
    """Recordings whose frames are (near-)identical across splits, and the ``gasdb split`` arguments that
    keep each such set on one side (with the split's own settings and earlier ``--together`` sets)."""
    rec = {pid: index.pairs[pid]["recording"] for pid in split.split_of() if pid in index.pairs}
    links = {(rec[d["a"]], rec[d["b"]]) for d in report.identical + report.near_identical
             if d["a"] in rec and d["b"] in rec and rec[d["a"]] != rec[d["b"]]}
    if not links:
        return [], {}
    involved = {r: {"tags": ""} for pair in links for r in pair}
    groups = group_recordings(involved, together=[list(p) for p in links])
    linked = sorted(sorted(r for r in involved if groups[r] == g) for g in sorted(set(groups.values())))
    sets = {tuple(t) for t in split.together}
    keep = group_recordings({r: {} for t in list(sets) + [tuple(x) for x in linked] for r in t},
                            together=list(sets) + [list(x) for x in linked])
    together = sorted(sorted(r for r in keep if keep[r] == g) for g in sorted(set(keep.values())))
    method = split.method if split.method != "random" else "video"
    args = ["--strategy", method, "--ratios", _ratio_text(split.ratios), "--seed", str(split.seed), "--name", name]
    for key in split.group_by:
        args += ["--group-by", key]
    for t in together:
        args += ["--together", ",".join(t)]
    return linked, {"together": together, "args": args + ["--force"]}
