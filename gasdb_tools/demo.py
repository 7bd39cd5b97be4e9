"""``gasdb demo``: the whole pipeline on simulated recordings, end to end.

The demo plays every role: it records (the rig simulator), curates (every stage), annotates
(a perfect annotator who first corrects and approves the pairs ``gasdb suggest`` lists, lets
``gasdb preannotate --refine`` redraw the others, reports how much closer to the truth they came,
then corrects the rest to the simulator's exact gas masks, warped into the RGB frame), releases, scores (the drafts themselves, plus a perfect and a degraded
submission) and trains a reference model for one epoch on CPU. Each step's result is listed in
``OUT/demo-summary.json``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from gasdb_tools import labelme_format, review
from gasdb_tools.errors import WorkspaceError
from gasdb_tools.fsutil import read_json, write_json
from gasdb_tools.imaging import read_image, write_image
from gasdb_tools.recordings import add_recording
from gasdb_tools.synth import synthesize
from gasdb_tools.workspace import Workspace

__all__ = ["run_demo", "annotate_from_truth"]

_MARKER = ".gasdb-demo"


def truth_mask(pair: dict, recordings_dir, cache: dict | None = None) -> np.ndarray:
    """The simulator's exact gas mask of a pair, in the RGB frame (the annotation frame of the demo)."""
    cache = {} if cache is None else cache
    rec = pair["recording"]
    if rec not in cache:
        cache[rec] = read_json(Path(recordings_dir) / rec / "truth" / "truth.json")
    truth = cache[rec]
    k = int(round(float(pair["t_thermal"]) * truth["thermal_fps"]))
    mask = read_image(Path(recordings_dir) / rec / "truth" / "masks" / f"{k:06d}.png")
    w, h = truth["size"]
    H = np.array(truth["homography_thermal_to_rgb"])
    return cv2.warpPerspective(mask, H, (w, h), flags=cv2.INTER_NEAREST) > 0


def annotate_from_truth(ws: Workspace, recordings_dir, *, pair_ids=None, approve: bool = False) -> dict:
    """Play a perfect annotator: replace each pair's LabelMe shapes by the simulator's exact mask.

    The truth mask of the pair's thermal frame is warped into the RGB frame with the rig's true
    homography and converted to polygons with the one mask -> polygon conversion; the JSON keeps
    everything else (provenance, image path) and its review status becomes ``edited`` (with
    ``approve``, the ``approved`` flag is ticked too). ``pair_ids`` limits it to those pairs; pairs
    already edited or approved are left alone.
    """
    from gasdb_tools.polygons import mask_to_shapes

    edited = 0
    truths: dict = {}
    wanted = None if pair_ids is None else set(pair_ids)
    states = review.read_states(ws)
    for pair in ws.pairs():
        if not pair.get("label") or (wanted is not None and pair["pair_id"] not in wanted):
            continue
        if pair["pair_id"] in states and states[pair["pair_id"]].status != "pending":
            continue
        mask = truth_mask(pair, recordings_dir, truths)
        path = ws.path(pair["label"])
        doc = labelme_format.read(path)
        doc["shapes"] = mask_to_shapes(mask)
        doc.setdefault("gasdb", {}).setdefault("review", {})["status"] = "edited"
        doc["gasdb"]["review"]["annotator"] = "gasdb demo (exact simulator masks)"
        if approve:
            doc.setdefault("flags", {})["approved"] = True
        labelme_format.write(doc, path)
        edited += 1
    return {"edited": edited}


def _pending_iou(ws: Workspace, recordings_dir) -> tuple[float, int]:
    """Pooled IoU of the pending drafts against the simulator's truth, and how many there are."""
    truths: dict = {}
    inter = union = n = 0
    states = review.read_states(ws)
    for pair in ws.pairs():
        st = states.get(pair["pair_id"])
        if st is None or st.status != "pending":
            continue
        draft = labelme_format.rasterize(labelme_format.read(ws.path(pair["label"]))) == 1
        truth = truth_mask(pair, recordings_dir, truths)
        inter += int(np.count_nonzero(draft & truth))
        union += int(np.count_nonzero(draft | truth))
        n += 1
    return (inter / union if union else 1.0), n


def _score_drafts(release: Path, drafts: dict, out: Path) -> dict:
    """Score the pre-annotation drafts (as a submission) against the release's test split."""
    import csv

    from gasdb_tools.scoring import score

    with open(release / "index.csv", newline="", encoding="utf-8") as fh:
        names = {row["pair_id"]: row["name"] for row in csv.DictReader(fh) if row["split"] == "test"}
    sub = out / "drafts-submission"
    for pid, name in names.items():
        write_image(sub / f"{name}.png", drafts[pid].astype(np.uint8))
    result = score(release, sub, by=("recording",))
    write_json(out / "score-drafts.json", result)
    return result


def run_demo(out, *, recordings: int = 3, seconds: float = 4.0, force: bool = False) -> dict:
    """Simulate recordings and run every stage; returns ``{"out", "steps": [{"stage", "result", "seconds"}]}``."""
    from gasdb_tools.align import align_workspace
    from gasdb_tools.calibration import calibrate_workspace
    from gasdb_tools.enhance import enhance_workspace
    from gasdb_tools.export import export_all
    from gasdb_tools.extract import extract_workspace
    from gasdb_tools.preannotate import preannotate_workspace
    from gasdb_tools.release import make_release
    from gasdb_tools.scoring import score_demo
    from gasdb_tools.stats import workspace_stats, write_figures
    from gasdb_tools.validate import validate_workspace

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise WorkspaceError("output folder exists and is not empty", file=out,
                                 fix="pass --force to replace a previous demo, or choose a new folder")
        if not (out / _MARKER).exists():
            raise WorkspaceError("refusing to delete a folder that gasdb demo did not create", file=out,
                                 fix="choose a new folder for the demo")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("created by gasdb demo\n")
    steps = []

    def step(stage, func):
        t0 = time.perf_counter()
        result = func()
        steps.append({"stage": stage, "result": result, "seconds": round(time.perf_counter() - t0, 2)})
        return result

    rec_dir = out / "recordings"
    listing = synthesize(rec_dir, recordings=recordings, seconds=seconds)
    steps.append({"stage": "synth", "result": f"{len(listing)} recordings in {rec_dir}", "seconds": None})
    ws = Workspace.init(out / "workspace", name="gasdb-demo")

    def add_all():
        for r in listing:
            d = rec_dir / r["dir"]
            # the plume's sign is known on a real rig too (the gas and the background temperature)
            add_recording(ws, rgb=d / "rgb.mp4", thermal=d / "thermal.mp4", scene=r["scene"], recording_id=r["id"],
                          tags=(r["truth"]["polarity"],))
        return f"{len(listing)} recordings registered in {ws.root}, tagged with their plume polarity"

    step("add", add_all)

    def extract():
        summary = extract_workspace(ws, every=0.2)
        truth = {r["id"]: r["truth"]["offset_s"] for r in listing}
        offsets = {r["id"]: f"{r['offset_s']:.3f} s (truth {truth[r['id']]:.3f})" for r in summary["recordings"]}
        return f"{summary['pairs_total']} pairs, {summary['failed']} failed; estimated offsets {offsets}"

    step("extract", extract)

    def calibrate():
        from gasdb_tools.calibration import calibration_path, read_calibration
        from gasdb_tools.registration import corner_error

        calibrate_workspace(ws)
        cal = read_calibration(calibration_path(ws, ws.settings.get("rig", "default")))
        truth = np.array(listing[0]["truth"]["homography_thermal_to_rgb"])  # one rig: shared by every take
        err = corner_error(cal.matrix, truth, listing[0]["truth"]["size"], reduce="none")
        return (f"{cal.model} from the rig's frames; corner error against the simulator's truth: "
                f"mean {np.mean(err):.2f} px, max {np.max(err):.2f} px")

    step("calibrate", calibrate)
    step("align", lambda: _brief(align_workspace(ws)))

    def enhance():
        absorbing = [r["id"] for r in listing if r["truth"]["polarity"] == "absorbing"]
        emitting = [r["id"] for r in listing if r["truth"]["polarity"] == "emitting"]
        done = []
        if absorbing:  # a dark, absorbing plume shows best inverted
            done.append(enhance_workspace(ws, recordings=absorbing, invert=True))
        if emitting:
            done.append(enhance_workspace(ws, recordings=emitting))
        n = sum(rec["enhanced"] for report in done for rec in report["recordings"])
        return f"{n} frames enhanced for annotators (absorbing plumes inverted)"

    step("enhance", enhance)
    step("preannotate", lambda: _brief(preannotate_workspace(ws)))
    drafts = {p["pair_id"]: labelme_format.rasterize(labelme_format.read(ws.path(p["label"]))) == 1
              for p in ws.pairs() if p.get("label")}

    def learn():
        from gasdb_tools.suggest import suggest_workspace

        before, n = _pending_iou(ws, rec_dir)
        k = max(len(listing), round(0.1 * n))
        chosen = [c["pair_id"] for c in suggest_workspace(ws, k)["suggestions"]]
        annotate_from_truth(ws, rec_dir, pair_ids=chosen, approve=True)
        same, _ = _pending_iou(ws, rec_dir)
        report = preannotate_workspace(ws, refine=True)
        after, left = _pending_iou(ws, rec_dir)
        return (f"gasdb suggest picked {len(chosen)} of {n} pairs, corrected and approved; the other {left} drafts' "
                f"IoU against the truth: {100 * same:.1f} % static -> {100 * after:.1f} % after "
                f"preannotate --refine ({report['written']} rewritten)")

    step("refine", learn)
    step("annotate", lambda: f"{annotate_from_truth(ws, rec_dir)['edited']} remaining drafts corrected "
                             "to the exact simulated masks (review status 'edited')")

    def validate():
        problems = validate_workspace(ws)
        return f"{len(problems)} problems"

    step("validate", validate)

    def blacklist():
        spray = [r["id"] for r in listing if "spray" in r["truth"]["distractors"]]
        pairs = ws.pairs(spray[0]) if spray else []
        if not pairs:
            return "nothing to exclude"
        pid = pairs[len(pairs) // 2]["pair_id"]
        ws.update_blacklist(add={pid: "water spray in view (demo)"})
        return f"{pid} excluded: water spray in view"

    step("blacklist", blacklist)
    def stats():
        figures = write_figures(workspace_stats(ws), out / "stats")
        return f"{len(figures)} figures in {out / 'stats'}"

    step("stats", stats)
    step("export", lambda: _brief(export_all(ws, out / "export")))
    release = step("release", lambda: make_release(ws, out / "release", version="0.1.0"))
    if not release["verified"]:
        raise WorkspaceError(f"the demo release did not verify: {release['problems']}", file=release["release"])
    steps[-1]["result"] = (f"{release['release']}: {release['counts']} pairs per split, verified")
    release_dir = Path(release["release"])

    def score():
        drafts_result = _score_drafts(release_dir, drafts, out / "score")
        demo = score_demo(release_dir, out / "score")
        gas = drafts_result["metrics"]["gas"]
        return (f"pre-annotation drafts vs corrected masks: IoU {_pct(gas['iou'])}, Acc (recall) "
                f"{_pct(gas['recall'])}, F2 {_pct(gas['f2'])}; perfect submission IoU {demo['perfect']['iou']}, "
                f"degraded IoU {demo['degraded']['iou']}")

    step("score", score)

    def bench():
        try:
            import torch  # noqa: F401
        except ImportError:
            return "skipped: torch is not installed (pip install 'gasdb-tools[bench]')"
        from gasdb_tools.bench.train import demo_run

        return _brief(demo_run(release_dir, out / "bench", model="mfnet", epochs=1, size=(128, 160), device="cpu"))

    step("bench", bench)
    summary = {"out": str(out), "workspace": str(ws.root), "release": str(release_dir), "steps": steps}
    write_json(out / "demo-summary.json", summary)
    return summary


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _brief(result) -> str:
    """A one-line summary of a stage's result dict (scalars only)."""
    if isinstance(result, dict):
        parts = [f"{k} {v}" for k, v in result.items() if isinstance(v, (int, float, str)) and len(str(v)) < 80]
        return ", ".join(parts[:8]) or "done"
    if isinstance(result, (list, tuple)):
        return f"{len(result)} items"
    return str(result)
