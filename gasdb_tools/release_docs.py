"""What a release says about itself: the summary of recorded facts, the figures, ``DATASHEET.md``
and ``index.html`` (``docs/formats.md`` §5.3).

Everything here comes from what the tool recorded while building the release: per pair its
modality, frame, review state and pre-annotation provenance read from its LabelMe document
(:mod:`gasdb_tools.review`), its mask and split; per recording its registration
(``same_source`` when one file was given as RGB and thermal). Prose that only people can give
(creators, consent, sites) is marked *maintainers*.
"""

from __future__ import annotations

import html as _html
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Mapping

import numpy as np

from gasdb_tools.croissant import licence_sentence

__all__ = ["summary", "figures", "datasheet", "html", "MODALITY_WORDS"]

#: How each modality is named in documents (a thermal camera alone never makes "RGB-thermal pairs").
MODALITY_WORDS = {"rgb+thermal": "RGB + thermal", "thermal": "thermal only (no RGB camera)",
                  "same-source": "RGB and thermal from one file (registered with --allow-same)"}
_SPLIT_COLOURS = {"train": "#1f77b4", "val": "#2ca02c", "test": "#d62728"}
_PANEL_WIDTH = 320  # sample images are shrunk to this width (the page stays small and fast)


def _rec_modality(rec: Mapping) -> str:
    if not rec.get("rgb"):
        return "thermal"
    return "same-source" if str(rec.get("same_source") or "") == "1" else "rgb+thermal"


def _method(pre: Mapping) -> str:
    if not pre:
        return "none (not pre-annotated)"
    text = str(pre.get("method") or "unknown")
    if pre.get("preset"):
        text += f"/{pre['preset']}"
    if pre.get("model"):
        text += f" ({pre['model']})"
    return text


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def summary(plan, per: Mapping, identical, near, params) -> dict:
    """The recorded facts of a release: counts, frames, annotation and review, recordings, leakage audit."""
    sd = plan.split_doc
    split_info = sd.get("splits") if isinstance(sd.get("splits"), dict) else {}

    def block(ids):
        gas = sum(per[p]["gas"] for p in ids)
        lab = sum(per[p]["labelled"] for p in ids)
        return {"pairs": len(ids), "recordings": len({plan.pairs[p]["recording"] for p in ids}),
                "positive_pairs": sum(1 for p in ids if per[p]["gas"] > 0),
                "gas_pixel_fraction": round(gas / lab, 6) if lab else None,
                "scenes": dict(sorted(Counter(plan.scene(p) for p in ids).items())),
                "modalities": dict(sorted(Counter(per[p]["modality"] for p in ids).items()))}

    scenes = sorted({plan.scene(p) for p in plan.ids})
    splits = {}
    n = len(plan.ids)
    for s, ids in plan.splits.items():
        info = split_info.get(s) if isinstance(split_info.get(s), dict) else {}
        ratios = sd.get("ratios") if isinstance(sd.get("ratios"), dict) else {}
        splits[s] = {**block(ids), "requested_fraction": info.get("requested_fraction", ratios.get(s)),
                     "achieved_fraction": round(len(ids) / n, 6) if n else None,
                     "scene_fractions": info.get("scene_fractions")}
    counts = {"total": block(plan.ids), "splits": splits,
              "scenes": {sc: {k: v for k, v in block([p for p in plan.ids if plan.scene(p) == sc]).items()
                              if k != "scenes"} for sc in scenes}}
    review = Counter(per[p]["review"] for p in plan.ids)
    annotation = {
        "review": {s: review.get(s, 0) for s in ("pending", "edited", "approved")},
        "recheck": sum(1 for p in plan.ids if per[p]["recheck"]),
        "untouched_drafts": sum(1 for p in plan.ids if per[p]["untouched"]),
        "preannotation": dict(sorted(Counter(_method(per[p]["preannot"]) for p in plan.ids).items())),
        "refined": sum(1 for p in plan.ids if per[p]["preannot"].get("refined")),
        "drafted_on": dict(sorted(Counter(per[p]["draft_frame"] or "unknown" for p in plan.ids
                                          if per[p]["preannot"]).items())),
        "annotators_saw": dict(sorted(Counter(per[p]["view_source"] for p in plan.ids).items())),
    }
    recordings = {}
    for rec_id, rec in plan.recordings.items():
        ids = [p for p in plan.ids if plan.pairs[p]["recording"] == rec_id]
        if not ids:
            continue
        r = Counter(per[p]["review"] for p in ids)
        recordings[rec_id] = {
            "scene": rec.get("scene", ""), "modality": _rec_modality(rec), "rig": rec.get("rig", "") if rec.get("rgb")
            else "", "pairs": len(ids), "splits": sorted({plan.split_of[p] for p in ids}),
            "frame": sorted({"{}x{}".format(*per[p]["size"]) for p in ids}),
            "thermal_dtype": sorted({per[p]["thermal_dtype"] for p in ids}),
            "rgb_resized": sum(1 for p in ids if per[p]["rgb_resized_from"]),
            "rgb_native": sorted({per[p]["rgb_resized_from"] for p in ids if per[p]["rgb_resized_from"]}),
            "masks": dict(sorted(Counter(_method(per[p]["preannot"]) for p in ids).items())),
            "refined": sum(1 for p in ids if per[p]["preannot"].get("refined")),
            "drafted_on": dict(sorted(Counter(per[p]["draft_frame"] or "unknown" for p in ids
                                              if per[p]["preannot"]).items())),
            "review": {s: r.get(s, 0) for s in ("pending", "edited", "approved")},
            "recheck": sum(1 for p in ids if per[p]["recheck"]),
            "untouched_drafts": sum(1 for p in ids if per[p]["untouched"]),
            "rgb_sha256": rec.get("rgb_sha256", ""), "thermal_sha256": rec.get("thermal_sha256", ""),
            "sensor_channels": [c for c in (rec.get("sensor_channels") or "").split(";") if c],
            "sensor_readings": sum(1 for p in ids if plan.pairs[p].get("sensor_t")),
        }
    frames = {"blocks": dict(sorted(Counter(per[p]["block"] for p in plan.ids).items())),
              "sizes": dict(sorted(Counter("{}x{}".format(*per[p]["size"]) for p in plan.ids).items())),
              "modalities": dict(sorted(Counter(per[p]["modality"] for p in plan.ids).items())),
              "thermal_dtypes": dict(sorted(Counter(per[p]["thermal_dtype"] for p in plan.ids).items())),
              "rgb_resized": sum(1 for p in plan.ids if per[p]["rgb_resized_from"]),
              "missing_rgb": "zeros in gasdb.h5 /frames/*/rgb and in the Gas-DB images' RGB channels; null in hf/; "
                             "/meta/modality and index.csv say 'thermal'"}
    by_rec = defaultdict(set)
    for p in plan.ids:
        by_rec[plan.pairs[p]["recording"]].add(plan.split_of[p])
    audit = {"params": params, "identical_across_splits": len(identical), "near_identical_across_splits": len(near),
             "shared_recordings": sorted(r for r, ss in by_rec.items() if len(ss) > 1),
             "examples": (identical + near)[:20]}
    return {"counts": counts, "annotation": annotation, "recordings": recordings, "frames": frames,
            "leakage_audit": audit, "balance": sd.get("balance") if isinstance(sd.get("balance"), dict) else None}


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    """A small standalone SVG chart (text: no plotting library, the same bytes every time)."""
    esc = _html.escape
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n'
            f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="14">{esc(title)}</text>\n'
            + "\n".join(body) + "\n</svg>\n")


def _coverage_svg(plan, per: Mapping) -> str:
    esc = _html.escape
    x0, x1, y0, y1 = 60, 560, 40, 300  # plot box
    edges = np.logspace(-3, 2, 26)  # plumes cover from a few pixels to most of the frame (% of labelled pixels)
    hists = {}
    for s, ids in plan.splits.items():
        cov = [max(100 * per[p]["gas"] / per[p]["labelled"], 1e-3) for p in ids if per[p]["gas"] > 0
               and per[p]["labelled"]]
        hists[s] = (np.histogram(np.clip(cov, 1e-3, 100), bins=edges)[0], len(cov),
                    sum(1 for p in ids if per[p]["gas"] == 0))
    top = max([int(h.max()) for h, _, _ in hists.values() if h.size] + [1])

    def sx(v):
        return x0 + (np.log10(v) + 3) / 5 * (x1 - x0)

    def sy(n):
        return y1 - n / top * (y1 - y0)

    body = [f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="black"/>',
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>']
    for e in range(-3, 3):
        x = sx(10.0 ** e)
        body.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y1 + 5}" stroke="black"/>'
                    f'<text x="{x:.1f}" y="{y1 + 18}" text-anchor="middle">{10.0 ** e:g}%</text>')
    for n in sorted({0, top // 2, top}):
        body.append(f'<text x="{x0 - 6}" y="{sy(n) + 4:.1f}" text-anchor="end">{n}</text>')
    body.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{y1 + 36}" text-anchor="middle">gas pixels per pair '
                "(% of labelled pixels, log scale)</text>")
    body.append(f'<text x="16" y="{(y0 + y1) / 2:.0f}" transform="rotate(-90 16 {(y0 + y1) / 2:.0f})" '
                'text-anchor="middle">pairs</text>')
    for k, (s, (h, n_gas, n_empty)) in enumerate(hists.items()):
        colour = _SPLIT_COLOURS.get(s, _PALETTE[k % len(_PALETTE)])
        pts = [f"{sx(edges[0]):.1f},{sy(0):.1f}"]
        for i, c in enumerate(h):
            pts += [f"{sx(edges[i]):.1f},{sy(c):.1f}", f"{sx(edges[i + 1]):.1f},{sy(c):.1f}"]
        pts.append(f"{sx(edges[-1]):.1f},{sy(0):.1f}")
        body.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        body.append(f'<rect x="{x0 + 10}" y="{y0 + 4 + 18 * k}" width="12" height="12" fill="{colour}"/>'
                    f'<text x="{x0 + 28}" y="{y0 + 14 + 18 * k}">'
                    f"{esc(s)}: {n_gas} gas pairs, {n_empty} gas-free</text>")
    return _svg(600, 350, body, "Gas coverage per pair")


def _balance_svg(plan, per: Mapping, scenes: list) -> str:
    esc = _html.escape
    names = list(plan.splits)
    counts = {s: [sum(1 for p in plan.splits[s] if plan.scene(p) == sc) for sc in scenes] for s in names}
    top = max([sum(v) for v in counts.values()] + [1])
    x0, y0, y1, bw = 60, 40, 300, 50
    body = [f'<line x1="{x0}" y1="{y1}" x2="{x0 + 90 * len(names)}" y2="{y1}" stroke="black"/>',
            f'<text x="{x0 - 6}" y="{y0 + 4}" text-anchor="end">{top}</text>',
            f'<text x="{x0 - 6}" y="{y1 + 4}" text-anchor="end">0</text>',
            f'<text x="{x0 + 45 * len(names):.0f}" y="{y1 + 36}" text-anchor="middle">pairs per split and scene</text>']
    for i, s in enumerate(names):
        x, base = x0 + 20 + 90 * i, float(y1)
        for k, n in enumerate(counts[s]):
            h = n / top * (y1 - y0)
            if n:
                body.append(f'<rect x="{x}" y="{base - h:.1f}" width="{bw}" height="{h:.1f}" '
                            f'fill="{_PALETTE[k % len(_PALETTE)]}"><title>{esc(scenes[k] or "unspecified")}: '
                            f"{n}</title></rect>")
            base -= h
        body.append(f'<text x="{x + bw / 2}" y="{y1 + 18}" text-anchor="middle">{esc(s)}</text>')
    lx = x0 + 90 * len(names) + 10
    for k, sc in enumerate(scenes):
        body.append(f'<rect x="{lx}" y="{y0 + 18 * k}" width="12" height="12" fill="{_PALETTE[k % len(_PALETTE)]}"/>'
                    f'<text x="{lx + 18}" y="{y0 + 10 + 18 * k}">{esc(sc or "unspecified")}</text>')
    px = lx + 170
    body.append(f'<line x1="{px}" y1="{y1}" x2="{px + 90 * len(names)}" y2="{y1}" stroke="black"/>'
                f'<text x="{px - 6}" y="{y0 + 4}" text-anchor="end">100%</text>'
                f'<text x="{px + 45 * len(names):.0f}" y="{y1 + 36}" text-anchor="middle">pairs with gas (%)</text>')
    for i, s in enumerate(names):
        ids = plan.splits[s]
        pos = 100 * sum(1 for p in ids if per[p]["gas"] > 0) / max(len(ids), 1)
        recs = len({plan.pairs[p]["recording"] for p in ids})
        h = pos / 100 * (y1 - y0)
        x = px + 20 + 90 * i
        body.append(f'<rect x="{x}" y="{y1 - h:.1f}" width="{bw}" height="{h:.1f}" '
                    f'fill="{_SPLIT_COLOURS.get(s, "#7f7f7f")}"/>'
                    f'<text x="{x + bw / 2}" y="{y1 - h - 4:.1f}" text-anchor="middle">{pos:.0f}%, {recs} rec.</text>'
                    f'<text x="{x + bw / 2}" y="{y1 + 18}" text-anchor="middle">{esc(s)}</text>')
    return _svg(px + 90 * len(names) + 20, 350, body, "Split balance")


def figures(root: Path, plan, per: Mapping, files) -> list[dict]:
    """Write the figures (sample images per scene, gas coverage, split balance); return their entries.

    Each scene's samples (the pair with the most gas, a median gas pair and a gas-free pair) are
    laid out by the review app's sample panel (:func:`gasdb_tools.pictures.render_sample_panel`):
    their images go to ``figures/samples/`` and the entry's ``panels`` holds the HTML fragments.
    """
    import h5py

    from gasdb_tools.pictures import render_sample_panel

    def store(name: str, data: bytes) -> str:
        files.put(f"figures/samples/{name}", data)
        return f"figures/samples/{name}"

    out = []
    scenes = sorted({plan.scene(p) for p in plan.ids})
    with h5py.File(root / "gasdb.h5", "r") as f:
        for sc in scenes:
            ids = [p for p in plan.ids if plan.scene(p) == sc]
            gas = sorted((p for p in ids if per[p]["gas"] > 0), key=lambda p: (per[p]["gas"], p))
            picks = []
            if gas:
                picks += [gas[-1], gas[len(gas) // 2]]
            picks += [p for p in ids if per[p]["gas"] == 0][:1]
            picks = list(dict.fromkeys(picks))[:3] or ids[:1]
            panels = []
            for pid in picks:
                g = f["frames"][per[pid]["block"]]
                k = per[pid]["row"]
                stem = re.sub(r"[^A-Za-z0-9_-]+", "-", plan.names[pid])
                rgb = g["rgb"][k] if per[pid]["modality"] != "thermal" else None
                gas_pct = 100 * per[pid]["gas"] / max(per[pid]["labelled"], 1)
                panels.append(render_sample_panel(
                    rgb, g["thermal"][k], g["mask"][k], title=plan.names[pid], status=per[pid]["review"],
                    caption=f"{per[pid]['review']} mask: {gas_pct:.1f} % gas"
                            + ("" if rgb is not None else "; thermal camera alone (no RGB)"),
                    width=_PANEL_WIDTH, name=stem, store=store))
            out.append({"file": None, "panels": panels, "title": f"Samples: {sc or 'unspecified'}",
                        "caption": "RGB, thermal and the mask over the thermal view (gas in the colour of its review "
                                   "status, ignore in blue) of the pair with the most gas, a median gas pair and a "
                                   "gas-free pair of this scene."})
    files.text("figures/gas_coverage.svg", _coverage_svg(plan, per))
    out.append({"file": "figures/gas_coverage.svg", "title": "Gas coverage",
                "caption": "Histogram of the gas fraction of pairs that contain gas, per split (log scale)."})
    files.text("figures/split_balance.svg", _balance_svg(plan, per, scenes))
    out.append({"file": "figures/split_balance.svg", "title": "Split balance",
                "caption": "Pairs per split stacked by scene type; share of pairs with gas and number of recordings."})
    return out


# ---------------------------------------------------------------------------------------------
# tables shared by the datasheet and the page
# ---------------------------------------------------------------------------------------------
def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def counts_table(summary: dict) -> list[list[str]]:
    rows = [["split", "pairs", "requested", "achieved", "recordings", "pairs with gas", "gas pixel fraction"]]
    for s, c in summary["counts"]["splits"].items():
        frac = "n/a" if c["gas_pixel_fraction"] is None else f"{100 * c['gas_pixel_fraction']:.2f}%"
        rows.append([s, str(c["pairs"]), _pct(c["requested_fraction"]), _pct(c["achieved_fraction"]),
                     str(c["recordings"]), str(c["positive_pairs"]), frac])
    t = summary["counts"]["total"]
    frac = "n/a" if t["gas_pixel_fraction"] is None else f"{100 * t['gas_pixel_fraction']:.2f}%"
    rows.append(["total", str(t["pairs"]), "", "100.0%", str(t["recordings"]), str(t["positive_pairs"]), frac])
    return rows


def scene_split_table(summary: dict) -> list[list[str]]:
    splits = summary["counts"]["splits"]
    scenes = sorted(summary["counts"]["scenes"])
    rows = [["scene", "pairs", *[f"{s}: share of the scene" for s in splits]]]
    for sc in scenes:
        cells = []
        for s, c in splits.items():
            fr = c.get("scene_fractions")
            if isinstance(fr, dict) and sc in fr:
                cells.append(_pct(fr[sc]))
            else:
                total = summary["counts"]["scenes"][sc]["pairs"]
                cells.append(_pct(c["scenes"].get(sc, 0) / total if total else None))
        rows.append([sc or "unspecified", str(summary["counts"]["scenes"][sc]["pairs"]), *cells])
    return rows


def recordings_table(summary: dict) -> list[list[str]]:
    rows = [["recording", "modality", "scene", "frame", "pairs", "masks made by", "drafted on", "pending",
             "edited", "approved", "recheck"]]
    for rec, r in summary["recordings"].items():
        made = ", ".join(f"{m}: {n}" for m, n in r["masks"].items())
        if r["refined"]:
            made += f" (refined: {r['refined']})"
        drafted = ", ".join(f"{k} frame: {v}" for k, v in r["drafted_on"].items()) or "-"
        rows.append([rec, MODALITY_WORDS[r["modality"]], r["scene"] or "unspecified", ", ".join(r["frame"]),
                     str(r["pairs"]), made, drafted, str(r["review"]["pending"]), str(r["review"]["edited"]),
                     str(r["review"]["approved"]), str(r["recheck"])])
    return rows


def _md_table(rows: list[list[str]]) -> str:
    head, *body = rows
    esc = [[_md_escape(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def _md_escape(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline_counts(counts: Mapping) -> str:
    return ", ".join(f"{k or 'none'}: {v}" for k, v in counts.items()) or "none"


def _modality_sentence(summary: dict) -> str:
    mods = summary["frames"]["modalities"]
    recs = Counter(r["modality"] for r in summary["recordings"].values())
    parts = []
    rgbt = sum(r["pairs"] for r in summary["recordings"].values() if r["modality"] == "rgb+thermal")
    same = sum(r["pairs"] for r in summary["recordings"].values() if r["modality"] == "same-source")
    if rgbt:
        parts.append(f"{rgbt} RGB-thermal pairs from {recs['rgb+thermal']} RGB + thermal recording(s)")
    if same:
        parts.append(f"{same} pairs from {recs['same-source']} recording(s) whose RGB and thermal are one file "
                     "(not independent RGB-thermal pairs)")
    if mods.get("thermal"):
        parts.append(f"{mods['thermal']} thermal frames from {recs['thermal']} thermal-only recording(s) (no RGB "
                     "camera)")
    return "; ".join(parts)


def limits(plan, summary: dict) -> list[str]:
    """The known limits of a release, each a fact the tool recorded."""
    c = summary["counts"]
    ann = summary["annotation"]
    audit = summary["leakage_audit"]
    sd = plan.split_doc
    out = []
    total = c["total"]["pairs"]
    pending = ann["review"]["pending"]
    if pending or ann["recheck"]:
        out.append(f"**{pending} of {total} masks were not reviewed by a person** ({ann['untouched_drafts']} untouched "
                   f"pre-annotation drafts; {ann['recheck']} marked for a recheck). Treat them as machine labels.")
    if sd.get("leaks_across_splits"):
        out.append(f"**The split leaks**: method `{sd.get('method')}` puts frames of one recording in several "
                   "splits, so test scores overstate generalisation (the RT-CAN/Gas-DB protocol).")
    if audit["identical_across_splits"] or audit["near_identical_across_splits"]:
        out.append(f"The leakage audit found {audit['identical_across_splits']} identical and "
                   f"{audit['near_identical_across_splits']} near-identical frame pairs across splits.")
    bal = summary.get("balance") or {}
    if bal.get("warning"):
        out.append(f"Split balance: {bal['warning']}.")
    mods = summary["frames"]["modalities"]
    if mods.get("thermal"):
        out.append(f"{mods['thermal']} of {total} pairs come from a thermal camera alone: they have no RGB frame "
                   "(zeros in `gasdb.h5` and in the Gas-DB images' RGB channels, null in `hf/`).")
    same = [r for r, v in summary["recordings"].items() if v["modality"] == "same-source"]
    if same:
        out.append(f"Recording(s) {', '.join(same)} were registered with the same file as RGB and thermal: their "
                   "'RGB' carries no independent information.")
    if summary["frames"]["rgb_resized"]:
        out.append(f"{summary['frames']['rgb_resized']} RGB frames were resized to their annotation frame "
                   "(`align --size`; `/meta/rgb_resized_from` gives the camera's size).")
    if len(summary["frames"]["sizes"]) > 1:
        out.append(f"Frames have {len(summary['frames']['sizes'])} sizes "
                   f"({', '.join(summary['frames']['sizes'])}); the official RT-CAN loader resizes everything to "
                   "640x512.")
    small = [s for s, v in c["splits"].items() if v["recordings"] < 3]
    if small:
        out.append(f"Few recordings in split(s) {', '.join(small)}: scores vary strongly with the recordings "
                   "drawn; report results over several seeds.")
    rigs = {v["rig"] for v in summary["recordings"].values() if v["modality"] != "thermal" and v["rig"]}
    missing = sorted(rigs - set(plan.calibration))
    if missing:
        out.append(f"No calibration file was found for rig(s) {', '.join(missing)}.")
    out.append("Gas is visible only in the thermal band; thin or faint plume edges are ambiguous and "
               "annotators may disagree there (mark unsure areas as `__ignore__`).")
    return out


# ---------------------------------------------------------------------------------------------
# the datasheet
# ---------------------------------------------------------------------------------------------
def _versioning_sentence(check, parent) -> str:
    """What the bump against the parent release says, when a parent was given."""
    if not check:
        return ""
    what = "; ".join(check["reasons"]) or "no record changed"
    if check["ok"]:
        return f" Against {parent}: {what} ({check['given'].upper()} bump)."
    return (f" **Against {parent}: {what}, which calls for a {check['needed'].upper()} bump; this release is a "
            f"{check['given'].upper()} bump.**")


def datasheet(plan, summary: dict, meta: dict) -> str:
    """``DATASHEET.md``: Gebru et al.'s sections, filled with what the tool recorded."""
    c = summary["counts"]
    ann = summary["annotation"]
    audit = summary["leakage_audit"]
    sd = plan.split_doc
    black = [e for e in plan.excluded if e["reason"].startswith("blacklisted")]
    other = [e for e in plan.excluded if not e["reason"].startswith("blacklisted")]
    fr = summary["frames"]
    dtypes = ", ".join(f"{k}: {v}" for k, v in fr["thermal_dtypes"].items())
    lines = [
        f"# Datasheet: {meta['name']} {meta['version']}",
        "",
        "Following Gebru et al., *Datasheets for Datasets* (Commun. ACM 64(12), 2021, "
        "doi:10.1145/3458723). Everything below was recorded by gasdb-tools while it built the release; "
        "sections marked *maintainers* need prose from the people who collected the data.",
        "",
        "## Motivation",
        "",
        "- Purpose: pixel-level segmentation of gas leaks in thermal (infrared) frames, with the RGB frame "
        "where an RGB camera was present, in the Gas-DB / RT-CAN benchmark format.",
        "- Creators, funding: *maintainers*.",
        "",
        "## Composition",
        "",
        f"- {c['total']['pairs']} pairs from {c['total']['recordings']} recordings: {_modality_sentence(summary)}; "
        f"{c['total']['positive_pairs']} pairs contain gas.",
        f"- Frame sizes (each recording keeps its own): {_inline_counts(fr['sizes'])} pairs. Thermal bit depth: "
        f"{dtypes} pairs.",
        "- Each pair: RGB (uint8; zeros when there is no RGB camera), thermal (bit depth kept), mask "
        "(0 background, 1 gas, 255 ignore) and valid-pixel mask, in `gasdb.h5`, `gasdb/` (labels 0/1 plus "
        "`ignore/` masks), `coco/` and `hf/`.",
        "",
        _md_table(counts_table(summary)),
        "",
        "## Collection process",
        "",
        "- Recordings (sha256 of each source video in `manifest.json` → `recordings`): "
        f"{', '.join(summary['recordings'])}.",
        "- Frame pairs were cut from time-synchronised RGB and thermal videos (nearest frame after the start "
        "offset), or from the thermal video alone; the thermal frame keeps its bit depth.",
        "- Cameras, sites, dates, consent: *maintainers*.",
    ]
    sensed = {r: v for r, v in summary["recordings"].items() if v["sensor_channels"]}
    if sensed:
        lines.append("- Gas sensors logged beside the cameras (each pair carries the nearest reading and its |dt| in "
                     "`gasdb.h5` /meta/sensors and `hf/` column `sensors`): "
                     + "; ".join(f"{r}: {', '.join(v['sensor_channels'])} ({v['sensor_readings']} of {v['pairs']} "
                                 "pairs with a reading)" for r, v in sensed.items()) + ".")
    lines += [
        "",
        "## Preprocessing, cleaning, labelling",
        "",
    ]
    warped = sum(1 for r in summary["recordings"].values() if r["modality"] != "thermal")
    if warped:
        lines.append(f"- Thermal frames of the {warped} RGB + thermal recording(s) were warped into the RGB frame with "
                     "the rig homography (`valid` marks the covered pixels; masks are 255 = ignore outside them).")
    if fr["modalities"].get("thermal"):
        lines.append("- Thermal-only recordings are annotated in the thermal camera's own frame (every pixel valid).")
    if fr["rgb_resized"]:
        lines.append(f"- {fr['rgb_resized']} RGB frames were resized to their annotation frame (`align --size`).")
    pending, edited, approved = (ann["review"][k] for k in ("pending", "edited", "approved"))
    made = _inline_counts(ann["preannotation"])
    drafted = ", ".join(f"the {k} frame: {v}" for k, v in ann["drafted_on"].items()) or "none recorded"
    lines += [
        f"- Masks: {made} (method/preset of the pre-annotation each document started from, whether or not a person "
        f"changed it later; {ann['refined']} refined). Drafts were "
        f"made on {drafted}. Masks are rasterised with LabelMe's own conventions.",
        f"- Review (read from each LabelMe document): {pending} pending ({ann['untouched_drafts']} untouched drafts), "
        f"{edited} edited by a person and not yet approved, {approved} approved by a reviewer (corrected or accepted "
        f"as drafted: the documents do not tell which); {ann['recheck']} marked for a recheck.",
        f"- Annotators saw: {_inline_counts(ann['annotators_saw'])} (document: the image the LabelMe file opens; "
        "stretch: the thermal frame through the recording's contrast stretch). `coco/images/` holds those images.",
        f"- Excluded pairs ({len(plan.excluded)}; listed with reasons in `exclusions.csv`): "
        f"{len(black)} blacklisted, {len(other)} for other reasons.",
        "",
        _md_table(recordings_table(summary)),
    ]
    if black:
        reasons = Counter(e["reason"][len("blacklisted: "):] for e in black)
        lines += ["", _md_table([["exclusion reason", "pairs"]] + [[r, str(n)] for r, n in sorted(reasons.items())])]
    bal = summary.get("balance") or {}
    lines += [
        "",
        "## Splits",
        "",
        f"- Method `{sd.get('method')}`, seed {sd.get('seed')}, group key `{sd.get('group_key')}`"
        + (f", grouped by {', '.join(sd.get('group_by') or [])}" if sd.get("group_by") else "")
        + f"; stratified by {', '.join(sd.get('stratify') or []) or 'nothing'}. Requested and achieved pair "
        "fractions are in the table above"
        + (f"; the largest deviation is {100 * bal['max_deviation']:.1f} points" if "max_deviation" in bal else "")
        + ".",
        "- Share of each scene's pairs per split:",
        "",
        _md_table(scene_split_table(summary)),
        "",
        f"- Recordings shared between splits: {len(audit['shared_recordings'])}. Leakage audit (RGB and thermal "
        f"thumbnails, tolerance {audit['params']['tol']} robust-σ, at most "
        f"{100 * audit['params']['outlier_fraction']:g}% changed cells): "
        f"{audit['identical_across_splits']} identical and {audit['near_identical_across_splits']} near-identical "
        "frame pairs across splits.",
        "- Select models on `val` (when present) and score `test` once.",
        "",
        "## Uses",
        "",
        "- Benchmarking gas segmentation (scores: accuracy = gas recall, IoU, F1, F2 from one global pixel "
        "confusion matrix). `gasdb score` leaves ignore pixels (255) out by default; `--count-ignore` scores "
        "them as background, as RT-CAN's official code does (its labels are 0/1 only).",
        "- Not for: safety-critical leak detection without validation on the target site and camera.",
        "",
        "## Distribution",
        "",
        f"- Version {meta['version']}" + (f" (parent {meta['parent_version']})" if meta["parent_version"] else "")
        + f", created {meta['created']}, " + licence_sentence(meta["license"]) + ".",
        "- Integrity: `SHA256SUMS` (`sha256sum -c SHA256SUMS`) and `gasdb verify RELEASE`.",
        "",
        "## Maintenance",
        "",
        "- Versioning: PATCH repackages the same data, MINOR adds records, MAJOR changes, removes or "
        "reshuffles records across splits. `gasdb diff OLD NEW` lists what changed."
        + _versioning_sentence(meta.get("versioning"), meta.get("parent_version")),
        "- Contact, erratum process: *maintainers*.",
        "",
        "## Known limits",
        "",
    ]
    lines += [f"- {item}" for item in limits(plan, summary)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
def _html_table(rows: list[list[str]]) -> str:
    esc = _html.escape
    return ("<table>\n<tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in rows[0]) + "</tr>\n"
            + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>\n" for r in rows[1:])
            + "</table>")


def html(plan, summary: dict, meta: dict, figures: list[dict], changes: dict | None = None) -> str:
    """``index.html``: counts, split fractions, review numbers per recording, changes, limits, figures."""
    esc = html_escape = _html.escape
    from gasdb_tools.pictures import panel_css

    figures = sorted(figures, key=lambda f: bool(f.get("panels")))  # overview first, then the samples
    figs = "\n".join(
        (f"<section><h3>{esc(f['title'])}</h3><p>{esc(f['caption'])}</p>\n" + "\n".join(f["panels"]) + "</section>")
        if f.get("panels") else
        (f'<figure><img src="{esc(f["file"])}" alt="{esc(f["title"])}">'
         f"<figcaption><b>{esc(f['title'])}</b>. {esc(f['caption'])}</figcaption></figure>") for f in figures)
    sd = plan.split_doc
    ann = summary["annotation"]
    warn = ""
    if sd.get("leaks_across_splits"):
        warn += ('<p class="warn">This release uses a split that puts frames of one recording in several splits; '
                 "test scores overstate generalisation.</p>")
    if ann["review"]["pending"] or ann["recheck"]:
        warn += (f'<p class="warn">{ann["review"]["pending"]} of {summary["counts"]["total"]["pairs"]} masks were not '
                 f"reviewed by a person ({ann['untouched_drafts']} untouched pre-annotation drafts; {ann['recheck']} "
                 "marked for a recheck).</p>")
    review = (f"<p>Review (read from each LabelMe document): {ann['review']['pending']} pending, "
              f"{ann['review']['edited']} edited, {ann['review']['approved']} approved, {ann['recheck']} to recheck.</p>")
    diff_html = ""
    if changes:
        from gasdb_tools.release_diff import diff_rows

        diff_html = (f"<h2>Changes since {html_escape(str(changes['a']['version']))}</h2>\n"
                     + _html_table(diff_rows(changes)))
    items = "".join(f"<li>{esc(x.replace('**', '').replace('`', ''))}</li>" for x in limits(plan, summary))
    title = f"{meta['name']} {meta['version']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
.warn {{ background: #fee; border: 1px solid #c33; padding: 0.5em; }}
{panel_css()}
</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p>{esc(licence_sentence(meta['license']).capitalize())}; created {esc(meta['created'])}
{f"; parent version {esc(meta['parent_version'])}" if meta['parent_version'] else ""}.
Split <code>{esc(str(sd.get('method')))}</code> (seed {esc(str(sd.get('seed')))}, group key
<code>{esc(str(sd.get('group_key')))}</code>). {esc(_modality_sentence(summary))}.</p>
{warn}
{_html_table(counts_table(summary))}
<h2>Scenes across splits</h2>
{_html_table(scene_split_table(summary))}
<h2>Recordings: how masks were made and reviewed</h2>
{review}
{_html_table(recordings_table(summary))}
{diff_html}
<h2>Known limits</h2>
<ul>{items}</ul>
<p>Files: <a href="gasdb.h5">gasdb.h5</a> (HDF5 pack), <a href="gasdb/">gasdb/</a> (Gas-DB / RT-CAN layout),
<a href="coco/annotations/">coco/annotations/</a> (COCO, images in coco/images/), <a href="hf/">hf/</a>
(Hugging Face Parquet), <a href="croissant.json">croissant.json</a>, <a href="index.csv">index.csv</a>,
<a href="DATASHEET.md">DATASHEET.md</a>, <a href="manifest.json">manifest.json</a>,
<a href="SHA256SUMS">SHA256SUMS</a>. Check integrity with <code>gasdb verify</code> or
<code>sha256sum -c SHA256SUMS</code>.</p>
{figs}
</body>
</html>
"""

