"""Dataset statistics (``gasdb stats``): counts per recording, scene and split, gas coverage, figures.

Gas coverage of a pair is its fraction of gas pixels among the valid (non-ignored) pixels of its
mask (:func:`gasdb_tools.export.pair_mask`). Figures are drawn with matplotlib's Agg backend (no
display needed) and written atomically as PNG.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gasdb_tools import labelme_format
from gasdb_tools.errors import GasdbError
from gasdb_tools.fsutil import atomic_write_bytes
from gasdb_tools.progress import progress

__all__ = ["COVERAGE_BINS", "pair_coverage", "workspace_stats", "write_figures"]

#: Histogram edges of gas coverage (fraction of valid pixels), positive pairs only.
COVERAGE_BINS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_REVIEW = ("pending", "edited", "approved")


def pair_coverage(mask: np.ndarray, *, gas: int = 1) -> tuple[int, int]:
    """``(gas pixels, valid pixels)`` of a class-index mask (255 = ignore, not counted)."""
    mask = np.asarray(mask)
    valid = int((mask != labelme_format.IGNORE_INDEX).sum())
    return int((mask == gas).sum()), valid


def _load_splits(ws) -> dict[str, list[str]] | None:
    """``WS/splits/default.json`` (``gasdb split``) as split -> pair ids, or None when absent/unreadable."""
    if not (ws.root / "splits" / "default.json").is_file():
        return None
    from gasdb_tools.splits import load_split

    try:
        return {name: list(ids) for name, ids in load_split(ws, "default").pairs.items()}
    except GasdbError:
        return None


def _new_counts() -> dict:
    return {"pairs": 0, "labelled": 0, "positive": 0, "blacklisted": 0, "gas_pixels": 0, "valid_pixels": 0,
            "review": {}}


def _add(counts: dict, p: Mapping) -> None:
    counts["pairs"] += 1
    counts["labelled"] += int(p["labelled"])
    counts["positive"] += int(p["positive"])
    counts["blacklisted"] += int(p["blacklisted"])
    counts["gas_pixels"] += p["gas_pixels"]
    counts["valid_pixels"] += p["valid_pixels"]
    if p["review"]:
        counts["review"][p["review"]] = counts["review"].get(p["review"], 0) + 1


def _finish(counts: dict) -> dict:
    counts["gas_fraction"] = counts["gas_pixels"] / counts["valid_pixels"] if counts["valid_pixels"] else None
    counts["review"] = dict(sorted(counts["review"].items()))
    return counts


def workspace_stats(ws, *, splits: Mapping[str, Sequence[str]] | None = None,
                    class_names: Sequence[str] = labelme_format.DEFAULT_CLASS_NAMES) -> dict:
    """Counts and gas coverage of a workspace.

    Parameters
    ----------
    ws : Workspace
    splits : dict of str -> list of pair ids, optional
        Default ``WS/splits/default.json`` when present (``gasdb split``), else no split table.
    class_names : sequence of str
        Label list for rasterising.

    Returns
    -------
    dict
        ``{"totals", "recordings": {id: counts}, "scenes": {scene: counts}, "splits": {name: counts},
        "coverage": {"positive", "quantiles", "histogram": {"edges", "counts"}}, "pairs": [...],
        "errors": {pair_id: message}}`` where counts are ``pairs, labelled, positive, blacklisted,
        gas_pixels, valid_pixels, gas_fraction, review``. Review states and exclusions (blacklist.csv
        and documents flagged water_spray / too_faint) are read from the LabelMe documents
        (:mod:`gasdb_tools.review`). Pairs whose annotation cannot be rasterised are listed under
        ``errors`` (run ``gasdb validate``) and count as unlabelled.
    """
    from gasdb_tools.export import pair_mask
    from gasdb_tools.review import exclusions, read_states

    index = ws.read_index()
    states = read_states(ws, index)
    black = exclusions(ws, index, states)
    splits = {k: list(v) for k, v in splits.items()} if splits is not None else _load_splits(ws)
    split_of = {p: s for s, ids in (splits or {}).items() for p in ids}
    rows, errors = [], {}
    for pid in progress(sorted(index.pairs), desc="stats", unit="pair"):
        pair = index.pairs[pid]
        rec = index.recordings.get(pair.get("recording", ""), {})
        gas = valid = 0
        state = states.get(pid)
        labelled = state is not None
        if labelled:
            try:
                gas, valid = pair_coverage(pair_mask(ws, pair, class_names))
            except GasdbError as exc:
                errors[pid] = str(exc)
                labelled = False
        rows.append({"pair_id": pid, "recording": pair.get("recording", ""), "scene": rec.get("scene", "") or "",
                     "split": split_of.get(pid, ""), "labelled": labelled, "positive": gas > 0,
                     "blacklisted": pid in black, "review": state.status if state is not None else "",
                     "recheck": bool(state is not None and state.recheck),
                     "gas_pixels": gas, "valid_pixels": valid,
                     "coverage": gas / valid if labelled and valid else None})
    totals = _new_counts()
    by_rec = {r: _new_counts() for r in index.recordings}
    by_scene: dict[str, dict] = {}
    by_split = {s: _new_counts() for s in (splits or {})}
    for p in rows:
        _add(totals, p)
        by_rec.setdefault(p["recording"], _new_counts())
        _add(by_rec[p["recording"]], p)
        _add(by_scene.setdefault(p["scene"] or "unknown", _new_counts()), p)
        if p["split"]:
            _add(by_split[p["split"]], p)
    for rid, counts in by_rec.items():
        counts["scene"] = index.recordings.get(rid, {}).get("scene", "")
    cover = np.array([p["coverage"] for p in rows if p["positive"] and p["coverage"] is not None], dtype=np.float64)
    hist, _ = np.histogram(cover, bins=COVERAGE_BINS)
    quantiles = ({f"q{q:02d}": float(np.percentile(cover, q)) for q in (0, 5, 25, 50, 75, 95, 100)}
                 if cover.size else {})
    return {
        "workspace": ws.root.name,
        "totals": _finish(totals),
        "recordings": {k: _finish(v) for k, v in by_rec.items()},
        "scenes": {k: _finish(v) for k, v in sorted(by_scene.items())},
        "splits": {k: _finish(v) for k, v in by_split.items()},
        "coverage": {"positive": int(cover.size), "quantiles": quantiles,
                     "histogram": {"edges": list(COVERAGE_BINS), "counts": [int(c) for c in hist]}},
        "review": dict(sorted(Counter(p["review"] or "none" for p in rows if p["labelled"]).items())),
        "pairs": rows,
        "errors": errors,
    }


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return atomic_write_bytes(path, buf.getvalue())


def write_figures(stats: Mapping, out_dir) -> list[Path]:
    """Draw the statistics as PNG figures in ``out_dir`` (matplotlib Agg); returns the paths.

    ``coverage.png``: histogram of gas coverage over positive pairs (log-spaced bins);
    ``recordings.png``: per recording, pairs split into positive / labelled empty / unlabelled,
    with blacklisted pairs marked.
    """
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    paths = []

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    edges = stats["coverage"]["histogram"]["edges"]
    counts = stats["coverage"]["histogram"]["counts"]
    labels = [f"{100 * a:g}-{100 * b:g}" for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(range(len(counts)), counts, color="#40a070")
    ax.set_xticks(range(len(counts)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("gas coverage (% of valid pixels)")
    ax.set_ylabel("positive pairs")
    ax.set_title(f"Gas coverage ({stats['coverage']['positive']} positive pairs)")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "coverage.png"))

    recs = stats["recordings"]
    names = list(recs)
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 2), 3.5))
    ax = fig.add_subplot()
    pos = np.array([recs[r]["positive"] for r in names])
    lab = np.array([recs[r]["labelled"] for r in names]) - pos
    unl = np.array([recs[r]["pairs"] for r in names]) - pos - lab
    x = np.arange(len(names))
    ax.bar(x, pos, label="gas", color="#40a070")
    ax.bar(x, lab, bottom=pos, label="labelled, no gas", color="#a0a0a0")
    ax.bar(x, unl, bottom=pos + lab, label="unlabelled", color="#e0e0e0")
    for k, r in enumerate(names):
        if recs[r]["blacklisted"]:
            ax.annotate(f"{recs[r]['blacklisted']} blacklisted", (k, recs[r]["pairs"]), ha="center", va="bottom",
                        fontsize=7)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, max([recs[r]["pairs"] for r in names] + [1]) * 1.25)  # room for the notes and legend
    ax.set_ylabel("pairs")
    ax.set_title("Pairs per recording")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "recordings.png"))
    return paths
