"""What each stage has done, per recording: done / stale / missing / failed, computed from provenance.

Nothing here is remembered: every state is derived from the index (each output's recorded recipe
against the recipe computed now, :mod:`gasdb_tools.provenance`), from the files on disk (does the
output exist) and from the LabelMe documents (review state, :mod:`gasdb_tools.review`). The
command that fixes each problem is part of the answer (``next``).
"""

from __future__ import annotations

from collections import Counter

from gasdb_tools import enhance, extract, preannotate, provenance, review
from gasdb_tools.align import align_recipe, expected_geometry
from gasdb_tools.errors import GasdbError
from gasdb_tools.recordings import modality
from gasdb_tools.workspace import Workspace, is_thermal_only

__all__ = ["STAGES", "workspace_status", "pair_stages"]

#: The per-pair stages whose state is reported, in pipeline order.
STAGES = ("extract", "align", "enhance", "preannotate")
_COMMANDS = {"extract": "gasdb extract {ws}", "align": "gasdb align {ws}", "enhance": "gasdb enhance {ws}",
             "preannotate": "gasdb preannotate {ws}", "calibrate": "gasdb calibrate {ws}"}


def _exists(ws: Workspace, *rels) -> bool:
    return all(rel and ws.path(rel).is_file() for rel in rels)


def _count(states) -> dict:
    c = Counter(states)
    return {k: c.get(k, 0) for k in provenance.STATES if c.get(k, 0)}


def workspace_status(ws: Workspace) -> dict:
    """Per recording and stage, how many pairs are done, stale, missing or failed; review counts.

    Returns
    -------
    dict
        ``{"workspace", "recordings": [{"id", "scene", "modality", "rig", "pairs", "stages":
        {stage: {"done": n, "stale": n, "missing": n, "failed": n, "n/a": n, "error": str,
        "note": str}}, "review": {...counts}, "excluded": n, "errors": {stage: message}, "next":
        [commands]}], "totals": {...}}``.
    """
    index = ws.read_index()
    states = review.read_states(ws, index)
    excluded = review.exclusions(ws, index, states)
    out = []
    for rec_id, rec in index.recordings.items():
        rows = index.pairs_of(rec_id)
        errors = {k[: -len("_error")]: v for k, v in rec.items() if k.endswith("_error") and v}
        stages = {s: _stage(ws, s, rec, rows, states, errors.get(s, "")) for s in STAGES}
        ids = [r["pair_id"] for r in rows]
        entry = {"id": rec_id, "scene": rec.get("scene", ""), "modality": modality(rec),
                 "rig": "" if is_thermal_only(rec) else (rec.get("rig") or ws.settings.get("rig") or "default"),
                 "pairs": len(rows), "stages": stages, "review": review.counts(states, ids),
                 "excluded": sum(1 for p in ids if p in excluded), "errors": errors,
                 "calibration": _calibration(ws, rec, index)}
        entry["next"] = _next(ws, entry)
        out.append(entry)
    totals = {s: _count([]) for s in STAGES}
    for s in STAGES:
        c = Counter()
        for e in out:
            c.update({k: v for k, v in e["stages"][s].items() if isinstance(v, int)})
        totals[s] = dict(c)
    all_ids = list(index.pairs)
    return {"workspace": str(ws.root), "recordings": out, "pairs": len(all_ids),
            "review": review.counts(states, all_ids), "excluded": len(excluded), "totals": totals}


def pair_stages(ws: Workspace, index=None, states=None, *, recordings=None) -> dict[str, dict[str, str]]:
    """``{pair_id: {stage: done|stale|missing|failed|n/a}}``: the per-pair states :func:`workspace_status` counts
    (of every recording, or of ``recordings``)."""
    index = index or ws.read_index()
    states = review.read_states(ws, index) if states is None else states
    out: dict[str, dict[str, str]] = {}
    for rec_id, rec in index.recordings.items():
        if recordings is not None and rec_id not in recordings:
            continue
        rows = index.pairs_of(rec_id)
        errors = {k[: -len("_error")]: v for k, v in rec.items() if k.endswith("_error") and v}
        for s in STAGES:
            per, _ = _stage_states(ws, s, rec, rows, states, errors.get(s, ""))
            for r, st in zip(rows, per):
                out.setdefault(r["pair_id"], {})[s] = st
    return out


def _stage(ws: Workspace, stage: str, rec: dict, rows, states, error: str) -> dict:
    per, note = _stage_states(ws, stage, rec, rows, states, error)
    result = _count(per)
    if error:
        result["error"] = error
    if note:
        result["note"] = note
    return result


def _stage_states(ws: Workspace, stage: str, rec: dict, rows, states, error: str) -> tuple[list[str], str]:
    """The state of each of ``rows`` (in order) for ``stage``, and a note on the recording."""
    note = ""
    per: list[str] = []
    if stage == "extract":
        stale = bool(rec.get("extract_inputs")) and rec["extract_inputs"] != extract.extract_recipe(rec)
        for r in rows:
            have = _exists(ws, r.get("thermal"), *([r.get("rgb")] if not is_thermal_only(rec) else []))
            per.append(provenance.state(recorded="stale" if stale else "ok", expected="ok", have_output=have,
                                        error=error))
        if not rows:
            note = "not extracted yet" if not error else ""
    elif stage == "align":
        if is_thermal_only(rec):
            per = ["n/a"] * len(rows)
            note = "thermal camera alone: its frame is the annotation frame"
        else:
            try:
                geometry = expected_geometry(ws, rec)
                interp = _align_interpolation(rec)
                for r in rows:
                    per.append(provenance.state(recorded=r.get("align_inputs", ""),
                                                expected=align_recipe(r, geometry, interp),
                                                have_output=_exists(ws, r.get("aligned"), r.get("valid")), error=error))
            except GasdbError as exc:
                per = ["missing"] * len(rows)
                note = exc.message
    elif stage == "enhance":
        expected = enhance.expected_inputs(rec, rows)
        for r in rows:
            have = _exists(ws, r.get("enhanced"))
            want = expected.get(r["pair_id"]) if expected is not None else ("?" if have else "")
            per.append(provenance.state(recorded=r.get("enhance_inputs", ""), expected=want or "?", have_output=have,
                                        error=error))
    elif stage == "preannotate":
        try:
            expected = preannotate.expected_inputs(ws, rec, rows)
        except GasdbError:
            expected = None
        geometry_key = None
        if rows:
            try:
                geometry_key = preannotate.draft_geometry(ws, rec, rows)[1].key
            except GasdbError:
                geometry_key = None
        for r in rows:
            st = states.get(r["pair_id"])
            if st is None:
                per.append("failed" if error else "missing")
            elif st.untouched:
                fresh = st.draft_inputs == expected and (geometry_key is None or st.geometry == geometry_key)
                per.append("done" if fresh else "stale")
            else:  # annotator work: stale only when the geometry under it changed (re-projection pending)
                per.append("stale" if geometry_key and st.geometry and st.geometry != geometry_key else "done")
    return per, note


def _align_interpolation(rec: dict) -> str:
    import json

    try:
        return json.loads(rec.get("align_params") or "{}").get("interpolation") or "linear"
    except (ValueError, AttributeError):
        return "linear"


def _calibration(ws: Workspace, rec: dict, index) -> dict:
    """The state of the recording's rig calibration (``done``/``stale``/``missing``; n/a without an RGB
    camera) and of its per-recording refinement (``none``/``current``/``stale``)."""
    from gasdb_tools.calibration import calibration_path, calibration_state, current_refinement, read_calibration

    if is_thermal_only(rec):
        return {"rig": "n/a", "refinement": "n/a"}
    path = calibration_path(ws, rec.get("rig") or ws.settings.get("rig") or "default")
    if not path.is_file():
        return {"rig": "missing", "refinement": "none"}
    try:
        cal = read_calibration(path)
        state, why = calibration_state(ws, cal, index)
        refinement = current_refinement(ws, rec, cal)[1]
    except GasdbError as exc:
        return {"rig": "failed", "refinement": "none", "note": str(exc)}
    out = {"rig": state, "refinement": refinement}
    if why:
        out["note"] = why
    return out


def _next(ws: Workspace, entry: dict) -> list[str]:
    """The commands that bring a recording up to date, in pipeline order."""
    root = str(ws.root)
    todo = []
    if not entry["pairs"]:
        return [_COMMANDS["extract"].format(ws=root)]
    cal = entry.get("calibration") or {}
    if cal.get("rig") == "stale":
        todo.append(_COMMANDS["calibrate"].format(ws=root) + " --force")
    if cal.get("refinement") == "stale":
        todo.append(_COMMANDS["calibrate"].format(ws=root) + f" --per-recording --recording {entry['id']}")
    for s in STAGES:
        st = entry["stages"][s]
        if st.get("stale") or st.get("missing") or st.get("failed"):
            if s == "align" and "calibration" in st.get("note", ""):
                todo.append(_COMMANDS["calibrate"].format(ws=root))
            todo.append(_COMMANDS[s].format(ws=root) + f" --recording {entry['id']}")
    return todo
