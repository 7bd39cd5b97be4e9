"""Annotation effort: how good the drafts left to correct are after a person corrected a few pairs.

A simulated annotator works on real recordings with exact masks, through the tool itself:

* **SimGas** (``../shared/data/simgas``, LangGas, 11 videos, 320x240, ~15 fps; exact masks:
  ``smoke_onlyN.mp4`` mean over channels > 20);
* **the rig simulator** (:class:`gasdb_tools.synth.SynthRig`, 320x256, 25 fps, 20 s, absorbing
  plume of contrast 8 with a person and the sync lamp, seeds 0-2; exact masks).

Per recording, a workspace with that recording alone (a thermal camera), the README's workflow:
``extract --every 0.5``, then ``preannotate`` (the *static* drafts). Then rounds at 0, 1, 2, 5 and
10 % of the recording's pairs (``max(1, round(p * pairs))``, cumulative): the annotator corrects
the pairs a strategy picks (writes the exact mask as a LabelMe ``mask`` shape and ticks
``approved``), and the tool runs ``preannotate --refine``. Strategies:

``suggest``
    the pairs ``gasdb suggest`` lists (library: :func:`gasdb_tools.suggest.suggest_workspace`);
``even``
    evenly spaced keyframes (each new one the pending pair farthest in time from the others).

After every round, on the pairs not corrected: the **mean per-video IoU** of the drafts (one
confusion matrix per video over its pending pairs, then the mean over videos), and the **share
of pairs that still need a correction**: pairs whose draft has IoU < 0.9 with the truth (an empty
draft of an empty truth has IoU 1), over all the recording's pairs (corrected pairs need none).
Against three baselines built from the same corrected pairs, in the same run:

``static``
    the drafts of the plain ``preannotate`` (what a person gets without refining);
``labelme``
    each pending pair gets the nearest earlier corrected mask (LabelMe's "keep previous
    annotation"); before the first correction, the static draft;
``cvat``
    polygons interpolated linearly between the corrected pairs before and after (CVAT's keyframe
    interpolation: contours matched by centroid, resampled to 64 points by arc length, start
    point and direction aligned); the nearest corrected pair's polygons outside their range.

Run::

    .venv/bin/python benchmarks/bench_annotation_effort.py            # ~1-2 h on 2 busy cores
    .venv/bin/python benchmarks/bench_annotation_effort.py --quick    # 3 SimGas videos, suggest only

Writes ``benchmarks/results/annotation_effort.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools import __version__, labelme_format, progress, review  # noqa: E402
from gasdb_tools.extract import extract_workspace  # noqa: E402
from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.metrics import confusion, scores  # noqa: E402
from gasdb_tools.polygons import mask_to_shapes  # noqa: E402
from gasdb_tools.preannotate import preannotate_workspace  # noqa: E402
from gasdb_tools.recordings import add_recording  # noqa: E402
from gasdb_tools.suggest import suggest_workspace  # noqa: E402
from gasdb_tools.synth import SynthRig  # noqa: E402
from gasdb_tools.video import iter_frames, write_video  # noqa: E402
from gasdb_tools.workspace import Workspace  # noqa: E402

SHARED = Path(os.environ.get("GASDB_SHARED_DATA", ROOT.parent / "shared" / "data"))
BUDGETS = (0, 1, 2, 5, 10)
NEED = 0.9  # a draft with a lower IoU needs a correction
EVERY = 0.5
SIMGAS = ("1", "2", "2_human", "3", "3_bats", "4", "5", "6", "7", "8", "9")


def _r(x, n=4):
    return None if x is None else round(float(x), n)


# ----------------------------------------------------------------------------------------------
# recordings with exact truth
# ----------------------------------------------------------------------------------------------
def simgas_recording(name: str, out: Path):
    """(thermal video, {time: truth mask}) of SimGas video ``name``."""
    folder = SHARED / "simgas"
    truth = {round(t, 6): img.mean(axis=2) > 20 for t, img in iter_frames(folder / f"smoke_only{name}.mp4")}
    return folder / f"simgasvid{name}.mp4", truth


def synth_recording(seed: int, out: Path, seconds: float = 20.0):
    rig = SynthRig(seed=seed, size=(320, 256), contrast=8.0, polarity="absorbing")
    n = int(seconds * rig.thermal_fps)
    frames, truth = [], {}
    for k in range(n):
        frame, mask = rig.thermal(k / rig.thermal_fps)
        frames.append(frame)
        truth[round(k / rig.thermal_fps, 6)] = mask
    path = out / f"synth{seed}.mkv"
    write_video(path, frames, fps=rig.thermal_fps, codec="ffv1")
    return path, truth


def _truth_at(truth: dict, t: float) -> np.ndarray:
    key = min(truth, key=lambda k: abs(k - t))
    return truth[key]


# ----------------------------------------------------------------------------------------------
# the simulated annotator
# ----------------------------------------------------------------------------------------------
def correct(ws: Workspace, pids, truth_of: dict) -> None:
    """Write the exact mask into each pair's document and approve it (as a person in LabelMe would)."""
    index = ws.read_index()
    for pid in pids:
        path = review.label_path(ws, index.pairs[pid])
        doc = labelme_format.read(path)
        doc["shapes"] = mask_to_shapes(truth_of[pid], mode="mask", min_area=0)
        labelme_format.write(doc, path)
    review.approve(ws, list(pids), by="simulated-annotator")


def draft_masks(ws: Workspace, pids) -> dict:
    index = ws.read_index()
    return {pid: labelme_format.rasterize(labelme_format.read(review.label_path(ws, index.pairs[pid]))) == 1
            for pid in pids}


def even_picks(order: list, keys: list, n_new: int) -> list:
    """Each new keyframe: the pair farthest (in pair index) from the existing ones (the middle first)."""
    keys = list(keys)
    pos = {p: i for i, p in enumerate(order)}
    picks = []
    for _ in range(n_new):
        best = None
        for p in order:
            if p in keys:
                continue
            i = pos[p]
            d = min([abs(i - pos[k]) for k in keys], default=None)
            score = (d if d is not None else len(order)) + (0 if d is not None else -abs(i - (len(order) - 1) / 2))
            if best is None or score > best[0]:
                best = (score, p)
        keys.append(best[1])
        picks.append(best[1])
    return picks


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------
def labelme_copy(order, keys, truth_of, static) -> dict:
    out, last = {}, None
    for p in order:
        if p in keys:
            last = truth_of[p]
        else:
            out[p] = last if last is not None else static[p]
    return out


def _contours(mask: np.ndarray) -> list[np.ndarray]:
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :].astype(np.float64) for c in cs if len(c) >= 3]


def _resample(poly: np.ndarray, n: int = 64) -> np.ndarray:
    closed = np.vstack([poly, poly[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.r_[0, np.cumsum(seg)]
    if s[-1] == 0:
        return np.repeat(poly[:1], n, axis=0)
    u = np.linspace(0, s[-1], n, endpoint=False)
    return np.c_[np.interp(u, s, closed[:, 0]), np.interp(u, s, closed[:, 1])]


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` rolled (and reversed if better) to match ``a`` point for point."""
    best = None
    for cand in (b, b[::-1]):
        for k in range(len(cand)):
            d = float(((a - np.roll(cand, -k, axis=0)) ** 2).sum())
            if best is None or d < best[0]:
                best = (d, np.roll(cand, -k, axis=0))
    return best[1]


def cvat_interpolate(order, keys, truth_of, shape) -> dict:
    out = {}
    ordered_keys = [p for p in order if p in keys]
    pos = {p: i for i, p in enumerate(order)}
    polys = {k: [_resample(c) for c in _contours(truth_of[k])] for k in ordered_keys}

    def draw(ps):
        m = np.zeros(shape, np.uint8)
        if ps:
            cv2.fillPoly(m, [np.round(p).astype(np.int32) for p in ps], 1)
        return m.astype(bool)

    for p in order:
        if p in keys:
            continue
        i = pos[p]
        before = [k for k in ordered_keys if pos[k] < i]
        after = [k for k in ordered_keys if pos[k] > i]
        if not before or not after:
            k = (before or after)[-1 if before else 0]
            out[p] = truth_of[k].copy()
            continue
        a, b = before[-1], after[0]
        alpha = (i - pos[a]) / (pos[b] - pos[a])
        pa, pb = polys[a], polys[b]
        used, shapes = set(), []
        for ca in pa:
            if not pb:
                break
            ja = int(np.argmin([np.hypot(*(ca.mean(0) - cb.mean(0))) if j not in used else np.inf
                                for j, cb in enumerate(pb)]))
            if ja in used:
                if alpha < 0.5:
                    shapes.append(ca)
                continue
            used.add(ja)
            cb = _align(ca, pb[ja])
            shapes.append((1 - alpha) * ca + alpha * cb)
        if len(pa) > len(used) and not pb:
            shapes += pa if alpha < 0.5 else []
        shapes += [cb for j, cb in enumerate(pb) if j not in used] if alpha >= 0.5 else []
        out[p] = draw(shapes)
    return out


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def _pair_iou(t: np.ndarray, p: np.ndarray) -> float:
    union = np.count_nonzero(t | p)
    return 1.0 if union == 0 else np.count_nonzero(t & p) / union


def evaluate(order, keys, truth_of, drafts: dict) -> dict:
    pending = [p for p in order if p not in keys]
    cm = np.zeros((2, 2), np.int64)
    need = 0
    for p in pending:
        cm += confusion(truth_of[p], drafts[p])
        need += _pair_iou(truth_of[p], drafts[p]) < NEED
    iou = scores(cm)["gas"]["iou"] if pending else None
    return {"iou": _r(iou if iou is not None else 1.0), "need_share": _r(need / len(order)),
            "need_share_of_pending": _r(need / len(pending) if pending else 0.0)}


# ----------------------------------------------------------------------------------------------
# one recording
# ----------------------------------------------------------------------------------------------
def run_recording(name: str, video: Path, truth: dict, work: Path, strategies, budgets) -> dict:
    ws_root = work / f"ws_{name}"
    ws = Workspace.init(ws_root)
    add_recording(ws, thermal=video, scene="other", recording_id="rec")
    extract_workspace(ws, every=EVERY)
    t0 = time.perf_counter()
    preannotate_workspace(ws)
    static_s = time.perf_counter() - t0
    index = ws.read_index()
    order = [r["pair_id"] for r in sorted(index.pairs.values(), key=lambda r: float(r["t_thermal"]))]
    truth_of = {p: _truth_at(truth, float(index.pairs[p]["t_thermal"])) for p in order}
    static = draft_masks(ws, order)
    shape = truth_of[order[0]].shape
    out = {"pairs": len(order), "static_seconds": _r(static_s, 2), "strategies": {}}
    for strategy in strategies:
        sws_root = work / f"ws_{name}_{strategy}"
        shutil.copytree(ws_root, sws_root)
        sws = Workspace(sws_root)
        keys: list = []
        rounds = []
        for pct in budgets:
            want = 0 if pct == 0 else max(1, int(round(pct / 100 * len(order))))
            new = max(0, want - len(keys))
            if new:
                if strategy == "suggest":
                    picks = [s["pair_id"] for s in suggest_workspace(sws, new)["suggestions"]]
                else:
                    picks = even_picks(order, keys, new)
                correct(sws, picks, truth_of)
                keys += picks
            seconds = None
            if keys and new:
                t0 = time.perf_counter()
                report = preannotate_workspace(sws, refine=True)
                seconds = time.perf_counter() - t0
                refined = report["recordings"][0].get("refined", {})
            elif not keys:
                refined = {}
            ours = draft_masks(sws, [p for p in order if p not in keys])
            row = {"budget_pct": pct, "corrected": len(keys), "corrected_pct": _r(100 * len(keys) / len(order), 2),
                   "keys": [order.index(k) for k in keys], "refine_seconds": _r(seconds, 2),
                   "refined": {k: refined.get(k) for k in ("choice", "held_out", "changed", "note") if k in refined},
                   "ours": evaluate(order, keys, truth_of, ours),
                   "static": evaluate(order, keys, truth_of, static)}
            if keys:
                row["labelme"] = evaluate(order, keys, truth_of, labelme_copy(order, set(keys), truth_of, static))
                row["cvat"] = evaluate(order, keys, truth_of, cvat_interpolate(order, set(keys), truth_of, shape))
            else:
                row["labelme"] = row["cvat"] = row["static"]
            rounds.append(row)
            print(f"  {name:<10} {strategy:<8} {pct:>3}% ({len(keys):>2} pairs)  ours {row['ours']['iou']:.3f} "
                  f"need {row['ours']['need_share']:.3f} | static {row['static']['iou']:.3f} "
                  f"labelme {row['labelme']['iou']:.3f} cvat {row['cvat']['iou']:.3f}"
                  f"  [{row['refined'].get('choice', '-')}; {row['refine_seconds']} s]", flush=True)
        out["strategies"][strategy] = rounds
    return out


def summarise(results: dict, strategies, budgets) -> dict:
    """Means over the videos of a set, per strategy and budget, and the comparisons."""
    out = {}
    for strategy in strategies:
        rows = []
        for b_i, pct in enumerate(budgets):
            per = [r["strategies"][strategy][b_i] for r in results.values()]
            row = {"budget_pct": pct, "corrected_mean": _r(np.mean([p["corrected"] for p in per]), 2)}
            for method in ("ours", "static", "labelme", "cvat"):
                row[method] = {"mean_iou": _r(np.mean([p[method]["iou"] for p in per])),
                               "need_share": _r(np.mean([p[method]["need_share"] for p in per]))}
            row["beats_every_baseline"] = all(
                row["ours"]["mean_iou"] > row[m]["mean_iou"] and row["ours"]["need_share"] < row[m]["need_share"]
                for m in ("static", "labelme", "cvat"))
            rows.append(row)
        out[strategy] = rows
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 SimGas videos, the suggest strategy, no simulator")
    parser.add_argument("--videos", default=",".join(SIMGAS), help="SimGas videos (comma-separated)")
    parser.add_argument("--synth-seeds", default="0,1,2")
    parser.add_argument("--strategies", default="suggest,even")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "annotation_effort.json")
    args = parser.parse_args(argv)
    progress.set_enabled(False)
    videos = ("3", "4", "2_human") if args.quick else tuple(v for v in args.videos.split(",") if v)
    seeds = () if args.quick else tuple(int(s) for s in args.synth_seeds.split(",") if s)
    strategies = ("suggest",) if args.quick else tuple(args.strategies.split(","))
    result = {"tool": f"gasdb-tools {__version__}", "python": platform.python_version(), "numpy": np.__version__,
              "opencv": cv2.__version__, "cpus": os.cpu_count(),
              "load_average_start": [round(x, 2) for x in os.getloadavg()],
              "protocol": {"every_s": EVERY, "budgets_pct": list(BUDGETS), "need_iou_below": NEED,
                           "strategies": list(strategies)}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gasdb-effort-") as tmp:
        work = Path(tmp)
        sets = {}
        if videos and (SHARED / "simgas").is_dir():
            sets["simgas"] = {}
            for v in videos:
                video, truth = simgas_recording(v, work)
                sets["simgas"][v] = run_recording(f"simgas{v}", video, truth, work, strategies, BUDGETS)
        elif videos:
            print(f"SimGas skipped: {SHARED / 'simgas'} not found")
        if seeds:
            sets["synth"] = {}
            for seed in seeds:
                video, truth = synth_recording(seed, work)
                sets["synth"][str(seed)] = run_recording(f"synth{seed}", video, truth, work, strategies, BUDGETS)
    result["recordings"] = sets
    result["summary"] = {name: summarise(recs, strategies, BUDGETS) for name, recs in sets.items()}
    result["seconds"] = _r(time.perf_counter() - t_start, 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    for name, summ in result["summary"].items():
        for strategy, rows in summ.items():
            print(f"{name} / {strategy}: mean per-video IoU of the pending drafts (share of pairs needing a correction)")
            for row in rows:
                print(f"  {row['budget_pct']:>3}%  " + "  ".join(
                    f"{m} {row[m]['mean_iou']:.3f} ({row[m]['need_share']:.3f})"
                    for m in ("ours", "static", "labelme", "cvat"))
                      + ("  beats all" if row["beats_every_baseline"] else ""))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
