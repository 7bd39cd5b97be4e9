"""What to label next: the pending pairs whose correction should help the drafts most.

``gasdb preannotate`` records, in every draft it writes, how unsure it was
(``gasdb.preannot.stats``: :func:`gasdb_tools.dense.draft_stats`): the mean per-pixel entropy of
its gas probability within 15 px of the drafted plume (``uncertainty``) and, for refined drafts,
how much the fusion with the corrected masks disagrees with the background model alone
(``disagreement``: :func:`gasdb_tools.refine.disagreement`, the pixels drawn by one only over
their union, counted as at least 0.5 % of the frame, so that a stray blob in a gas-free frame
does not outrank a plume). :func:`rank` combines them with **coverage over time**: a correction teaches
its neighbours most (:mod:`gasdb_tools.propagate` carries it along the video, and the refined
model learns the scene), so a pair far from every corrected pair is worth more than one next to
a correction. Per pending pair ``i`` of a recording:

    u_i   = uncertainty_i / max(uncertainty over all pending pairs)   (0 when all are 0)
    d_i   = disagreement_i                                                        (0 when not recorded)
    c_i   = min(1, gap_i / (span / 4))    gap: seconds to the nearest corrected (or already chosen) pair
    score = (0.02 + u_i + d_i) * c_i ** 2

Pairs are chosen greedily over the whole workspace: the best score, then the scores of that
recording are recomputed with the chosen pair counted as corrected, and so on, so the choices
spread over time. The uncertainty is scaled by the workspace's largest, so the drafts of a recording
that holds no plume (all sure) rank below the unsure drafts of another. Ties go to the smaller pair id: the order is a function of the workspace's
documents only. Reading only the documents, it needs no video and takes a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from gasdb_tools import review
from gasdb_tools.workspace import Workspace

__all__ = ["Candidate", "rank", "suggest_workspace", "BASE_WEIGHT", "COVERAGE_FRACTION"]

#: Weight of a pair with no uncertainty and no disagreement (coverage alone).
BASE_WEIGHT = 0.02
#: A pair this fraction of the recording's span from every correction counts as fully uncovered.
COVERAGE_FRACTION = 0.25


@dataclass
class Candidate:
    """One pending pair and what its draft says about itself."""

    pair_id: str
    recording: str
    t: float
    uncertainty: float = 0.0
    disagreement: float = 0.0
    score: float = 0.0
    gap_s: float | None = None  # seconds to the nearest corrected pair when chosen (None: none in the recording)
    label: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("uncertainty", "disagreement", "score"):
            d[key] = round(float(d[key]), 6)
        d["gap_s"] = None if d["gap_s"] is None else round(float(d["gap_s"]), 3)
        return d


def _scores(cands: list[Candidate], anchors: list[float], span: float, top: float) -> np.ndarray:
    u = np.array([c.uncertainty / top if top > 0 else 0.0 for c in cands])
    d = np.array([c.disagreement for c in cands])
    t = np.array([c.t for c in cands])
    if anchors:
        gap = np.min(np.abs(t[:, None] - np.asarray(anchors)[None, :]), axis=1)
        cover = np.minimum(1.0, gap / max(COVERAGE_FRACTION * span, 1e-9))
    else:
        gap = np.full(len(cands), np.inf)
        cover = np.ones(len(cands))
    return (BASE_WEIGHT + u + d) * cover ** 2, gap


def rank(candidates, corrected: dict, n: int, *, spans: dict | None = None) -> list[Candidate]:
    """The ``n`` best pending pairs, greedily (see the module docstring).

    Parameters
    ----------
    candidates : iterable of Candidate
        Pending pairs with their draft statistics.
    corrected : dict
        ``{recording: [times of its corrected pairs]}``.
    n : int
        How many to choose.
    spans : dict, optional
        ``{recording: duration in seconds}`` (default: from the candidates' and corrections' times).

    Returns
    -------
    list of Candidate
        In the order chosen, with ``score`` and ``gap_s`` at the moment each was chosen.

    Examples
    --------
    >>> def pairs():  # ten pairs 1 s apart; the drafts of p4 and p5 are the unsure ones
    ...     return [Candidate(f"p{k}", "r", float(k), uncertainty=1.0 if k in (4, 5) else 0.1) for k in range(10)]
    >>> [c.pair_id for c in rank(pairs(), {}, 4)]
    ['p4', 'p5', 'p0', 'p8']
    >>> [c.pair_id for c in rank(pairs(), {"r": [4.5]}, 3)]   # p4 and p5 are next to a correction now
    ['p0', 'p7', 'p2']
    >>> sure = [Candidate(f"q{k}", "quiet", float(k), uncertainty=0.01) for k in range(5)]
    >>> [c.pair_id for c in rank(pairs() + sure, {}, 3)]   # a recording with sure drafts waits
    ['p4', 'p5', 'p0']
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    by_rec: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: c.pair_id):
        by_rec.setdefault(c.recording, []).append(c)
    anchors = {rec: list(corrected.get(rec, [])) for rec in by_rec}
    spans = dict(spans or {})
    for rec, cands in by_rec.items():
        if rec not in spans:
            ts = [c.t for c in cands] + anchors[rec]
            spans[rec] = max(ts) - min(ts) if ts else 0.0
    top = max((c.uncertainty for cands in by_rec.values() for c in cands), default=0.0)
    chosen: list[Candidate] = []
    while len(chosen) < n and any(by_rec.values()):
        best = None
        for rec in sorted(by_rec):
            cands = by_rec[rec]
            if not cands:
                continue
            scores, gaps = _scores(cands, anchors[rec], spans[rec], top)
            j = int(np.argmax(scores))  # the first of equals: the smallest pair id
            key = (-scores[j], cands[j].pair_id)
            if best is None or key < best[0]:
                best = (key, rec, j, float(scores[j]), float(gaps[j]))
        _, rec, j, score, gap = best
        pick = by_rec[rec].pop(j)
        pick.score = score
        pick.gap_s = None if not np.isfinite(gap) else gap
        anchors[rec].append(pick.t)
        chosen.append(pick)
    return chosen


def suggest_workspace(ws: Workspace, n: int = 10, *, recordings=None) -> dict:
    """The ``n`` pending pairs of ``ws`` to correct next (:func:`rank` over the documents).

    Returns
    -------
    dict
        ``{"workspace", "n", "suggestions": [Candidate.to_dict()...], "pending", "corrected",
        "without_stats"}``: ``without_stats`` counts pending drafts written before drafts recorded
        their statistics (ranked by coverage alone; rerun ``gasdb preannotate --force``).
    """
    index = ws.read_index()
    wanted = set(ws.select_recordings(recordings, index=index))
    rows = [r for r in index.pairs.values() if r["recording"] in wanted]
    states = review.read_states(ws, index, pairs=[r["pair_id"] for r in rows])
    excluded = review.exclusions(ws, index, states)
    cands, corrected = [], {}
    missing_stats = 0
    for r in rows:
        pid = r["pair_id"]
        st = states.get(pid)
        if st is None or pid in excluded:
            continue
        t = float(r.get("t_thermal") or 0.0)
        if st.status in ("edited", "approved"):
            corrected.setdefault(r["recording"], []).append(t)
            continue
        stats = _stats(st.path)
        if stats is None:
            missing_stats += 1
            stats = {}
        cands.append(Candidate(pid, r["recording"], t, uncertainty=float(stats.get("uncertainty") or 0.0),
                               disagreement=float(stats.get("disagreement") or 0.0), label=ws.rel(st.path)))
    spans = {}
    for rec in wanted:
        ts = [float(r.get("t_thermal") or 0.0) for r in rows if r["recording"] == rec]
        spans[rec] = max(ts) - min(ts) if ts else 0.0
    chosen = rank(cands, corrected, n, spans=spans)
    return {"workspace": str(ws.root), "n": n, "suggestions": [c.to_dict() for c in chosen], "pending": len(cands),
            "corrected": sum(len(v) for v in corrected.values()), "without_stats": missing_stats}


def _stats(path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        stats = doc["gasdb"]["preannot"]["stats"]
        return stats if isinstance(stats, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
