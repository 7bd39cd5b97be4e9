"""What changed between two releases (``gasdb diff OLD NEW``, and the page of ``release --parent``).

Pairs are matched by pair id (stable across versions). The diff lists pairs added and removed,
pairs that moved between splits, and masks that changed (their bytes differ): for each, the gas IoU
between the two versions (ignore pixels of either version left out) and the changed pixels; plus
pairs, recordings and scenes counted in both. Masks are read from the HDF5 packs, and only for
pairs whose recorded mask digest (``/meta/mask_sha256``) differs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from gasdb_tools.errors import FormatError

__all__ = ["diff_releases", "diff_rows", "format_diff", "version_check"]

_IGNORE = 255


def _load(root: Path, *, check: bool = True) -> dict:
    import h5py

    from gasdb_tools import h5pack

    root = Path(root)
    if check:
        try:
            json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FormatError(f"not a release: cannot read manifest.json ({exc})", file=root / "manifest.json",
                              fix="pass two release folders made by `gasdb release`") from None
        from gasdb_tools.release import verify_release

        report = verify_release(root)
        if not report.ok:
            p = report.problems[0]
            raise FormatError(f"the release does not verify ({len(report.problems)} problem(s), e.g. {p['kind']}: "
                              f"{p['file']})", file=root, fix="run `gasdb verify` on it")
    with h5py.File(root / "gasdb.h5", "r") as f:
        meta, _ = h5pack.read_tables(f, path=root / "gasdb.h5")
        version, name = str(f.attrs.get("dataset_version", "")), str(f.attrs.get("dataset_name", ""))
    n = len(meta["pair_id"])
    rows = {meta["pair_id"][k]: {key: (meta[key][k] if key not in h5pack.META_NUM else meta[key][k].item())
                                 for key in meta} for k in range(n)}
    return {"root": root, "version": version, "name": name, "rows": rows}


def _mask(root: Path, row: dict) -> np.ndarray:
    import h5py

    with h5py.File(root / "gasdb.h5", "r") as f:
        return f["frames"][row["block"]]["mask"][int(row["row"])]


def _compare(a: np.ndarray, b: np.ndarray) -> dict:
    if a.shape != b.shape:
        return {"iou": None, "changed_pixels": None,
                "note": f"size {a.shape[1]}x{a.shape[0]} -> {b.shape[1]}x{b.shape[0]}"}
    scored = (a != _IGNORE) & (b != _IGNORE)
    ga, gb = (a == 1) & scored, (b == 1) & scored
    union = int(np.count_nonzero(ga | gb))
    inter = int(np.count_nonzero(ga & gb))
    return {"iou": (inter / union) if union else 1.0, "changed_pixels": int(np.count_nonzero(a != b)),
            "gas_pixels": [int(np.count_nonzero(a == 1)), int(np.count_nonzero(b == 1))]}


def diff_releases(a, b, *, check_b: bool = True, check_a: bool = True) -> dict:
    """Compare release ``a`` (older) with ``b`` (newer).

    Parameters
    ----------
    a, b : path
        Release folders. Both are verified first (``check_a``/``check_b``; the release builder skips
        checking the release it is still writing).

    Returns
    -------
    dict
        ``{"a": {name, version, pairs}, "b": {...}, "added": [pair ids], "removed": [...],
        "moved": [{pair_id, from, to}], "masks_changed": [{pair_id, iou, changed_pixels, gas_pixels}],
        "mean_iou_changed", "splits": {split: [pairs in a, pairs in b]}, "scenes": {...},
        "recordings": {...}, "recordings_added", "recordings_removed"}`` (deterministic, sorted).

    Raises
    ------
    FormatError
        A folder that is not a release, or one that does not verify.
    """
    ra, rb = _load(a, check=check_a), _load(b, check=check_b)
    ia, ib = ra["rows"], rb["rows"]
    common = sorted(set(ia) & set(ib))
    moved = [{"pair_id": p, "from": ia[p]["split"], "to": ib[p]["split"]} for p in common
             if ia[p]["split"] != ib[p]["split"]]
    changed = []
    for p in common:
        if ia[p].get("mask_sha256") and ia[p].get("mask_sha256") == ib[p].get("mask_sha256"):
            continue
        cmp = _compare(_mask(ra["root"], ia[p]), _mask(rb["root"], ib[p]))
        if cmp["changed_pixels"] != 0:
            changed.append({"pair_id": p, **cmp})
    ious = [c["iou"] for c in changed if c["iou"] is not None]

    def count(rows, key):
        return Counter(r[key] for r in rows.values())

    def both(key):
        ca, cb = count(ia, key), count(ib, key)
        return {k: [ca.get(k, 0), cb.get(k, 0)] for k in sorted(set(ca) | set(cb))}

    recs = both("recording")
    return {
        "a": {"name": ra["name"], "version": ra["version"], "pairs": len(ia)},
        "b": {"name": rb["name"], "version": rb["version"], "pairs": len(ib)},
        "added": sorted(set(ib) - set(ia)),
        "removed": sorted(set(ia) - set(ib)),
        "moved": moved,
        "masks_changed": changed,
        "mean_iou_changed": round(float(np.mean(ious)), 6) if ious else None,
        "splits": both("split"),
        "scenes": both("scene"),
        "recordings": recs,
        "recordings_added": sorted(r for r, (x, y) in recs.items() if x == 0 and y > 0),
        "recordings_removed": sorted(r for r, (x, y) in recs.items() if x > 0 and y == 0),
    }


def diff_rows(d: dict) -> list[list[str]]:
    """The diff as a table (header first): what, count, details."""
    def few(items, n=5):
        items = list(items)
        return ", ".join(items[:n]) + (f" ... (+{len(items) - n})" if len(items) > n else "")

    rows = [["change", f"{d['a']['version']} -> {d['b']['version']}", "details"]]
    rows.append(["pairs", f"{d['a']['pairs']} -> {d['b']['pairs']}", ""])
    rows.append(["pairs added", str(len(d["added"])), few(d["added"])])
    rows.append(["pairs removed", str(len(d["removed"])), few(d["removed"])])
    rows.append(["pairs moved between splits", str(len(d["moved"])),
                 few(f"{m['pair_id']} ({m['from']} -> {m['to']})" for m in d["moved"])])
    mean = "" if d["mean_iou_changed"] is None else f"mean gas IoU between versions {d['mean_iou_changed']:.4f}; "
    rows.append(["masks changed", str(len(d["masks_changed"])),
                 mean + few(f"{c['pair_id']} (IoU {c['iou']:.3f})" if c["iou"] is not None else
                            f"{c['pair_id']} ({c.get('note', '')})" for c in d["masks_changed"])])
    rows.append(["recordings added", str(len(d["recordings_added"])), few(d["recordings_added"])])
    rows.append(["recordings removed", str(len(d["recordings_removed"])), few(d["recordings_removed"])])
    for s, (x, y) in d["splits"].items():
        rows.append([f"split {s}", f"{x} -> {y}", ""])
    for sc, (x, y) in d["scenes"].items():
        rows.append([f"scene {sc or 'unspecified'}", f"{x} -> {y}", ""])
    return rows


def format_diff(d: dict) -> str:
    """The diff as a plain-text table."""
    rows = diff_rows(d)
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() + "\n" for r in rows)


_LEVELS = ("patch", "minor", "major")


def version_check(changes: dict, old_version: str, new_version: str) -> dict:
    """Compare a release's version bump with what its changes against the parent call for.

    The policy (Croissant 1.1): PATCH repackages the same records, MINOR adds records, MAJOR
    changes, removes or moves records between splits. Returns ``{"given", "needed", "reasons",
    "ok"}`` (levels ``patch`` / ``minor`` / ``major``).

    >>> d = {"added": ["a"], "removed": [], "moved": [], "masks_changed": [{"pair_id": "b"}]}
    >>> version_check(d, "1.0.0", "1.1.0")["needed"], version_check(d, "1.0.0", "1.1.0")["ok"]
    ('major', False)
    >>> version_check({"added": ["a"], "removed": [], "moved": [], "masks_changed": []}, "1.0.0", "1.1.0")["ok"]
    True
    """
    reasons = {"major": [], "minor": []}
    for key, words in (("removed", "pair(s) removed"), ("moved", "pair(s) moved between splits"),
                       ("masks_changed", "mask(s) changed")):
        if changes.get(key):
            reasons["major"].append(f"{len(changes[key])} {words}")
    if changes.get("added"):
        reasons["minor"].append(f"{len(changes['added'])} pair(s) added")
    needed = "major" if reasons["major"] else "minor" if reasons["minor"] else "patch"
    old = [int(v) for v in str(old_version).split("-")[0].split(".")[:3]]
    new = [int(v) for v in str(new_version).split("-")[0].split(".")[:3]]
    given = "major" if new[0] != old[0] else "minor" if new[1] != old[1] else "patch"
    return {"given": given, "needed": needed, "ok": _LEVELS.index(given) >= _LEVELS.index(needed),
            "reasons": reasons["major"] + reasons["minor"]}
