"""Benchmark targetless RGB-thermal registration and stream synchronisation on real data.

Sections (every comparison runs in the same process, one side after the other, on the same data):

* **speed, one 640x512 pair** (simulated rig, exact truth): ours
  (:func:`gasdb_tools.registration.register_pair`, default ``model='auto'``, and a forced
  homography) against ``cv2.findTransformECC`` on the same pair (homography, one level, identity
  start, 50 iterations) run on our edge-magnitude features (their computation included): on raw
  intensities OpenCV's ECC raises at once on cross-modal pairs, which is no timing. Figures:
  median wall and CPU time, and the ratio of median wall times. Target: < 0.25 s per pair.
* **speed, 20-pair rig calibration** (640x512, :func:`gasdb_tools.registration.register_pairs`,
  defaults: model choice, joint refinement, QA). Target < 5 s.
* **accuracy, exact truth**: mean corner error against ``SynthRig.homography``.
* **RoadScene** (40 real visible/infrared pairs, skipped when absent): each infrared image warped
  by a random known similarity (+-4 % scale, +-3 deg, +-20 px, seed 0; the issue's protocol) and,
  separately, by a homography (the same plus +-4 px per corner). Mean corner error of the
  recovered transform at default settings and with each model forced; **composition**: the
  warped pair's estimate composed with the warp against the unwarped pair's estimate with the
  same model (the estimate must not depend on where the optimiser starts); OpenCV ECC on raw
  intensities (negative control) and on our features. Targets (similarity warps, defaults):
  median < 2 px, max < 6 px; composition median < 1 px, max < 3 px.
* **consistency flag on a real rig**: the 40 RoadScene pairs cropped to one size as one rig in 4
  recordings of 10 (aligned: must stay consistent), half of them from a camera turned by 0.8 deg
  and shifted by 4 px, and a near object shifted by 11 px over a quarter of the thermal view (the
  issue's parallax of a plane at 3 m against one at 20 m; both must be flagged).
* **TNO sequences** (real paired visual + thermal video, skipped when absent): the packings of
  ``tests/_tno.py`` (RGB 5 fps, thermal 10 fps, thermal 0.2 s later) and five more, offset and
  confidence as ``gasdb extract`` chooses them (motion energy, else where things move:
  ``extract.best_offset_estimate``), with the motion energy's own estimate beside it; calibration
  of the packed recordings with and without a known warp W of the thermal stream:
  ``corner_error(H_warped @ W, H)`` with the model chosen for the warped recording.

Run::

    .venv/bin/python benchmarks/bench_registration.py           # ~10 min on 2 shared cores
    .venv/bin/python benchmarks/bench_registration.py --quick   # fewer repeats and trials

Writes ``benchmarks/results/registration.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools import __version__  # noqa: E402
from gasdb_tools import registration as reg  # noqa: E402
from gasdb_tools import sync, video  # noqa: E402
from gasdb_tools.extract import COLOCATION_SECONDS, DEFAULT_MIN_CONFIDENCE, best_offset_estimate  # noqa: E402
from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.synth import SynthRig  # noqa: E402

SHARED = Path(os.environ.get("GASDB_SHARED_DATA", ROOT.parent / "shared" / "data"))
ROADSCENE = SHARED / "rgbt_pairs" / "roadscene"
TNO = SHARED / "tno_sequences"
SIZE = (640, 512)
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5)


def timed(func, repeats):
    """(result of the last call, median wall s, median CPU s) over ``repeats`` calls."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = func()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return out, statistics.median(walls), statistics.median(cpus)


def stats(values, nd=2):
    v = np.asarray(values, np.float64)
    return {"median": round(float(np.median(v)), nd), "mean": round(float(v.mean()), nd),
            "p90": round(float(np.percentile(v, 90)), nd), "max": round(float(v.max()), nd)}


def raw_ecc(rgb, thermal, *, mask=None):
    """OpenCV ECC on raw intensities: template RGB gray, input thermal; returns thermal->RGB or None."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    try:
        _, w = cv2.findTransformECC(gray, thermal.astype(np.float32), np.eye(3, dtype=np.float32),
                                    cv2.MOTION_HOMOGRAPHY, ECC_CRITERIA,
                                    None if mask is None else mask.astype(np.uint8), 5)
        return np.linalg.inv(w.astype(np.float64))
    except (cv2.error, np.linalg.LinAlgError):
        return None  # OpenCV raises when ECC does not converge


def feature_ecc(rgb, thermal, *, mask=None):
    """OpenCV ECC on our edge-magnitude features (one level, identity start): thermal->RGB or None."""
    f_rgb = reg.edge_features(rgb)
    f_th = reg.edge_features(thermal, mask=mask)
    try:
        _, w = cv2.findTransformECC(f_rgb, f_th, np.eye(3, dtype=np.float32), cv2.MOTION_HOMOGRAPHY, ECC_CRITERIA,
                                    None if mask is None else mask.astype(np.uint8), 5)
        return np.linalg.inv(w.astype(np.float64))
    except (cv2.error, np.linalg.LinAlgError):
        return None


def synth_pair(seed, t=2.0):
    rig = SynthRig(seed=seed, size=SIZE)
    return rig, rig.rgb(t + rig.offset_s), rig.thermal(t)[0]


# -- speed -------------------------------------------------------------------------------------------
def speed_single(repeats):
    rows = []
    for seed in range(3):
        rig, rgb, th = synth_pair(seed)
        reg.register_pair(rgb, th)  # warm-up (imports, allocations)
        auto, w_auto, c_auto = timed(lambda: reg.register_pair(rgb, th), repeats)
        hom, w_hom, c_hom = timed(lambda: reg.register_pair(rgb, th, model="homography"), repeats)
        ecc, w_ecc, c_ecc = timed(lambda: feature_ecc(rgb, th), repeats)

        def err(m, nd=3):
            return round(reg.corner_error(m, rig.homography, SIZE), nd) if m is not None else "raised"

        rows.append({
            "seed": seed, "ours_auto_ms": round(1000 * w_auto, 1), "ours_auto_cpu_ms": round(1000 * c_auto, 1),
            "ours_auto_model": auto.model, "ours_homography_ms": round(1000 * w_hom, 1),
            "ours_homography_cpu_ms": round(1000 * c_hom, 1), "ecc_ms": round(1000 * w_ecc, 1),
            "ecc_cpu_ms": round(1000 * c_ecc, 1), "ratio_auto_over_ecc": round(w_auto / w_ecc, 3),
            "ours_auto_corner_error_px": err(auto.matrix), "ours_homography_corner_error_px": err(hom.matrix),
            "ecc_corner_error_px": err(ecc),
        })
    return rows


def rig_calibration(n_pairs, repeats):
    rig = SynthRig(seed=7, size=SIZE)
    pairs = [(rig.rgb(t + rig.offset_s), rig.thermal(t)[0]) for t in np.linspace(0.3, 7.5, n_pairs)]
    out, wall, cpu = timed(lambda: reg.register_pairs(pairs), repeats)
    return {"pairs": n_pairs, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "model": out.model,
            "corner_error_px": round(reg.corner_error(out.matrix, rig.homography, SIZE), 3),
            "corner_error_max_px": round(reg.corner_error(out.matrix, rig.homography, SIZE, reduce="max"), 3),
            "consistent": out.consistent, "refined": out.refined}


def accuracy_synth(n):
    auto, hom = [], []
    for seed in range(n):
        rig, rgb, th = synth_pair(100 + seed, t=1.0 + 0.3 * seed)
        auto.append(reg.corner_error(reg.register_pair(rgb, th).matrix, rig.homography, SIZE))
        hom.append(reg.corner_error(reg.register_pair(rgb, th, model="homography").matrix, rig.homography, SIZE))
    return {"n": n, "auto": stats(auto, 3), "homography": stats(hom, 3)}


# -- RoadScene ---------------------------------------------------------------------------------------
def similarity_about_centre(size, scale, deg, shift):
    w, h = size
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    a = np.deg2rad(deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = rot
    m[:2, 2] = c - rot @ c + np.asarray(shift)
    return m


def random_warp(rng, size, jitter):
    """As tests/test_registration.py: +-4 % scale, +-3 deg, +-20 px shift, then +-jitter px per corner."""
    base = similarity_about_centre(size, 1 + rng.uniform(-0.04, 0.04), rng.uniform(-3, 3), rng.uniform(-20, 20, 2))
    if not jitter:
        return base
    corners = reg.image_corners(size)
    return reg.fit_model(corners, reg.transform_points(base, corners) + rng.uniform(-jitter, jitter, (4, 2)),
                         "homography")


def roadscene_pairs():
    names = sorted(os.listdir(ROADSCENE / "visible"))
    for name in names:
        rgb = cv2.cvtColor(cv2.imread(str(ROADSCENE / "visible" / name)), cv2.COLOR_BGR2RGB)
        yield name, rgb, cv2.imread(str(ROADSCENE / "infrared" / name), cv2.IMREAD_GRAYSCALE)


def accuracy_roadscene(n_trials, kind):
    rng = np.random.default_rng(0)
    pairs = list(roadscene_pairs())
    err = {k: [] for k in ("auto", "similarity", "affine", "homography", "feature_ecc", "raw_ecc")}
    comp = {k: [] for k in ("auto", "similarity", "affine", "homography")}
    times, models, initial = [], [], []
    for k in range(n_trials):
        name, rgb, ir = pairs[k % len(pairs)]
        size = (ir.shape[1], ir.shape[0])
        warp = random_warp(rng, size, 4.0 if kind == "homography" else 0.0)
        warped = cv2.warpPerspective(ir, warp, size, flags=cv2.INTER_LINEAR)
        valid = cv2.warpPerspective(np.full_like(ir, 255), warp, size, flags=cv2.INTER_LINEAR) == 255
        truth = np.linalg.inv(warp)
        truth /= truth[2, 2]
        initial.append(reg.corner_error(np.eye(3), truth, size))
        t0 = time.perf_counter()
        auto = reg.register_pair(rgb, warped, thermal_mask=valid)
        times.append(time.perf_counter() - t0)
        models.append(auto.model)
        err["auto"].append(reg.corner_error(auto.matrix, truth, size))
        plain = reg.register_pair(rgb, ir, model=auto.model)
        comp["auto"].append(reg.corner_error(auto.matrix @ warp, plain.matrix, size))
        for model in ("similarity", "affine", "homography"):
            m = reg.register_pair(rgb, warped, thermal_mask=valid, model=model).matrix
            err[model].append(reg.corner_error(m, truth, size))
            comp[model].append(reg.corner_error(m @ warp, reg.register_pair(rgb, ir, model=model).matrix, size))
        for key, func in (("feature_ecc", feature_ecc), ("raw_ecc", raw_ecc)):
            m = func(rgb, warped, mask=valid)
            err[key].append(reg.corner_error(m, truth, size) if m is not None else initial[-1])
    out = {"trials": n_trials, "warps": kind, "initial_px": stats(initial),
           "default_models": {m: models.count(m) for m in reg.MODELS},
           "default_median_ms": round(1000 * float(np.median(times)), 1)}
    for key, values in err.items():
        e = np.asarray(values)
        out[key] = {**stats(e), "under_2px": round(float((e < 2).mean()), 3)}
        if key in comp:
            out[key]["composition"] = stats(comp[key])
    return out


def roadscene_rig():
    raw = [(rgb, ir) for _, rgb, ir in roadscene_pairs()]
    h, w = min(a.shape[0] for a, _ in raw), min(a.shape[1] for a, _ in raw)

    def crop(img):
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])

    pairs = [(crop(a), crop(b)) for a, b in raw]
    size = (w, h)
    groups = [f"rec{k // 10}" for k in range(len(pairs))]
    moved_m = similarity_about_centre(size, 1.0, 0.8, (4, 0))

    def near(th):
        out = th.copy()
        out[h // 2:, : w // 2] = np.roll(th, 11, axis=1)[h // 2:, : w // 2]
        return out

    cases = {"aligned": pairs,
             "moved camera (half the frames: 0.8 deg, 4 px)": [
                 (a, cv2.warpPerspective(b, moved_m, size, borderMode=cv2.BORDER_REPLICATE) if k >= 20 else b)
                 for k, (a, b) in enumerate(pairs)],
             "near object (11 px over a quarter of the view)": [(a, near(b)) for a, b in pairs]}
    out = {}
    for name, ps in cases.items():
        r = reg.register_pairs(ps, groups=groups)
        mags = np.hypot(r.block_shifts[..., 0], r.block_shifts[..., 1])
        out[name] = {"consistent": r.consistent, "warnings": list(r.warnings), "model": r.model,
                     "group_apart_px": {k: round(v, 2) for k, v in r.group_apart.items()},
                     "block_shift_max_px": round(float(np.nanmax(mags)), 2) if np.isfinite(mags).any() else None,
                     "corner_deviation_median_px": r.stats()["corner_deviation_px"]["median"]}
    return out


# -- TNO -----------------------------------------------------------------------------------------------
def tno(tmp):
    from click.testing import CliRunner

    from gasdb_tools.cli import main
    from gasdb_tools.recordings import add_recording
    from gasdb_tools.workspace import Workspace
    from tests import _tno

    out = {"packing": "RGB every other visual frame at 5 fps, thermal every frame at 10 fps from id 2 "
                      "(offset 0.2 s); W = zoom 1.07, 1.5 deg, (3, -2) px", "sync": [], "calibration": {}}
    # sync: the test packing and five more (scene rate, thermal start, thermal step, RGB start, RGB step)
    packings = [(10, 2, 1, 0, 2), (10, 0, 1, 2, 2), (10, 1, 2, 0, 1), (10, 0, 2, 3, 1), (6, 3, 1, 0, 2),
                (4, 2, 1, 0, 2)]
    for name in _tno.SEQUENCES:
        visual, thermal = _tno.load_sequence(TNO, name)
        for f, s_t, step_t, s_r, step_r in packings:
            d = Path(tempfile.mkdtemp(dir=tmp))
            video.write_video(d / "thermal.mp4", thermal[s_t::step_t], fps=f / step_t)
            video.write_video(d / "rgb.mp4", [cv2.cvtColor(x, cv2.COLOR_GRAY2RGB) for x in visual[s_r::step_r]],
                              fps=f / step_r)
            th = video.motion_energy(d / "thermal.mp4", keep_seconds=COLOCATION_SECONDS)
            rgb = video.motion_energy(d / "rgb.mp4", keep_seconds=COLOCATION_SECONDS)
            energy = sync.estimate_offset(th.times, th.energy, rgb.times, rgb.energy)
            est = best_offset_estimate(th, rgb)  # what extract uses: energy, else co-location
            truth = (s_t - s_r) / f
            period = 1 / max(f / step_t, f / step_r)
            out["sync"].append({"sequence": name, "scene_fps": f, "thermal": f"from {s_t} every {step_t}",
                                "rgb": f"from {s_r} every {step_r}", "offset_s": round(truth, 3),
                                "estimate_s": round(est.offset_s, 3), "within_a_frame": abs(est.offset_s - truth) < period,
                                "confidence": round(est.confidence, 3), "peak": round(est.peak, 3),
                                "method": est.method, "energy_estimate_s": round(energy.offset_s, 3),
                                "energy_confidence": round(energy.confidence, 3),
                                "accepted": est.confidence >= DEFAULT_MIN_CONFIDENCE})
    warp = _tno.known_warp()
    ws = Workspace.init(Path(tmp) / "ws")
    for name in _tno.SEQUENCES:
        short = name.split("_")[0].lower()
        for warped in (False, True):
            rec = short + ("-warped" if warped else "")
            folder = _tno.pack_sequence(TNO, name, Path(tmp) / rec, warp=warp if warped else None)
            add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="other",
                          recording_id=rec, rig=rec)
    runner = CliRunner()
    import json

    rep = json.loads(runner.invoke(main, ["extract", str(ws.root), "--json"]).stdout)
    out["extract"] = {r["id"]: {"status": r["status"], "offset_s": r.get("offset_s"),
                                "confidence": r.get("offset_confidence"), "error": r.get("error")}
                      for r in rep["recordings"]}
    for rec, r in out["extract"].items():
        if r["status"] != "extracted":
            runner.invoke(main, ["extract", str(ws.root), "--recording", rec, "--offset", str(_tno.OFFSET_S)])
    auto = {r["rig"]: r for r in json.loads(runner.invoke(main, ["calibrate", str(ws.root), "--json"]).stdout)["rigs"]}
    for short in ("duine", "tree"):
        chosen = auto[short + "-warped"]["model"]
        row = {"auto_models": {"unwarped": auto[short]["model"], "warped": chosen},
               "consistent": {k: auto[k]["consistent"] for k in (short, short + "-warped")},
               "model_reason_warped": auto[short + "-warped"]["model_reason"]}
        plain = json.loads(runner.invoke(main, ["calibrate", str(ws.root), "--rig", short, "--model", chosen,
                                                "--force", "--json"]).stdout)["rigs"][0]
        row["composition_px"] = round(reg.corner_error(np.array(auto[short + "-warped"]["matrix"]) @ warp,
                                                       np.array(plain["matrix"]), _tno.SIZE), 2)
        row["unwarped_consistent_with_chosen_model"] = plain["consistent"]
        for model in ("similarity", "affine", "homography"):
            cal = {r["rig"]: r for r in json.loads(runner.invoke(main, [
                "calibrate", str(ws.root), "--model", model, "--force", "--json"]).stdout)["rigs"]}
            row[f"composition_{model}_px"] = round(reg.corner_error(
                np.array(cal[short + "-warped"]["matrix"]) @ warp, np.array(cal[short]["matrix"]), _tno.SIZE), 2)
        out["calibration"][short] = row
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and trials")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "registration.json")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 5
    load = os.getloadavg()
    print(f"gasdb-tools {__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, OpenCV threads {cv2.getNumThreads()}, load average {load[0]:.1f}")

    single = speed_single(repeats)
    print("\nOne 640x512 pair (simulated rig): ours (auto, homography) vs cv2.findTransformECC on edge features")
    print(f"{'seed':>4} {'auto ms':>8} {'cpu':>7} {'model':>11} {'hom ms':>7} {'ECC ms':>7} {'ratio':>6} "
          f"{'auto err':>8} {'hom err':>8} {'ECC err':>8}")
    for r in single:
        print(f"{r['seed']:>4} {r['ours_auto_ms']:>8} {r['ours_auto_cpu_ms']:>7} {r['ours_auto_model']:>11} "
              f"{r['ours_homography_ms']:>7} {r['ecc_ms']:>7} {r['ratio_auto_over_ecc']:>6} "
              f"{r['ours_auto_corner_error_px']:>8} {r['ours_homography_corner_error_px']:>8} "
              f"{str(r['ecc_corner_error_px']):>8}")
    auto_ms = statistics.median(r["ours_auto_ms"] for r in single)
    ratio = statistics.median(r["ratio_auto_over_ecc"] for r in single)
    print(f"median: ours {auto_ms:.0f} ms per pair (target < 250 ms) = {ratio:.2f} x one cv2.findTransformECC call")

    rig = rig_calibration(20, 1 if args.quick else 3)
    print(f"\n20-pair rig calibration: {rig['seconds']} s (cpu {rig['cpu_seconds']} s, target < 5 s), model "
          f"{rig['model']}, corner error {rig['corner_error_px']} px")
    synth = accuracy_synth(4 if args.quick else 10)
    print(f"Exact truth, single pairs: auto {synth['auto']}, homography {synth['homography']}")

    road = road_h = flag = None
    if ROADSCENE.exists():
        n = 20 if args.quick else 40
        road = accuracy_roadscene(n, "similarity")
        road_h = accuracy_roadscene(n, "homography")
        for r in (road, road_h):
            print(f"\nRoadScene, {r['trials']} known {r['warps']} warps (start error median {r['initial_px']['median']} px); "
                  f"default models {r['default_models']}")
            print(f"{'method':<12} {'median':>7} {'mean':>7} {'max':>7} {'<2px':>6} {'comp med':>9} {'comp max':>9}")
            for key in ("auto", "similarity", "affine", "homography", "feature_ecc", "raw_ecc"):
                e = r[key]
                c = e.get("composition", {})
                print(f"{key:<12} {e['median']:>7} {e['mean']:>7} {e['max']:>7} {e['under_2px']:>6.0%} "
                      f"{str(c.get('median', '')):>9} {str(c.get('max', '')):>9}")
        flag = roadscene_rig()
        print("\nConsistency flag, RoadScene as one rig (4 recordings of 10):")
        for name, r in flag.items():
            print(f"  {name}: consistent={r['consistent']}, groups apart {r['group_apart_px']}, "
                  f"block max {r['block_shift_max_px']} px")
    else:
        print(f"\nRoadScene pairs not found at {ROADSCENE}: real-pair sections skipped")
    tno_out = None
    if TNO.exists():
        with tempfile.TemporaryDirectory() as tmp:
            tno_out = tno(tmp)
        print("\nTNO sync (confidence threshold %.2f):" % DEFAULT_MIN_CONFIDENCE)
        for r in tno_out["sync"]:
            print(f"  {r['sequence']:<15} {r['scene_fps']:>3} fps thermal {r['thermal']:<14} rgb {r['rgb']:<14} "
                  f"truth {r['offset_s']:+.3f} est {r['estimate_s']:+.3f} conf {r['confidence']:.2f} "
                  f"{'accepted' if r['accepted'] else 'refused'} ({r['method']}; energy alone "
                  f"{r['energy_estimate_s']:+.3f} at {r['energy_confidence']:.2f})")
        print("TNO calibration:", tno_out["calibration"])
    else:
        print(f"\nTNO sequences not found at {TNO}: skipped")
    result = {
        "benchmark": "registration",
        "tool": f"gasdb-tools {__version__}",
        "machine": {"python": platform.python_version(), "opencv": cv2.__version__, "numpy": np.__version__,
                    "cpus": os.cpu_count(), "opencv_threads": cv2.getNumThreads(), "platform": platform.platform(),
                    "load_average_at_start": [round(v, 2) for v in load],
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "quick": args.quick,
        "baseline": "cv2.findTransformECC on the same pair: MOTION_HOMOGRAPHY, identity start, 50 iterations / "
                    "eps 1e-5, gaussFiltSize 5, one level; on our edge-magnitude features (speed ratio; feature "
                    "computation included) and on raw intensities (negative control; a failure counts as its "
                    "start, the identity)",
        "single_pair_640x512": {"per_seed": single, "ours_auto_median_ms": auto_ms, "ratio_auto_over_ecc": ratio,
                                "target_ms": 250},
        "rig_calibration_20_pairs": {**rig, "target_s": 5},
        "exact_truth_single_pairs": synth,
        "roadscene_similarity_warps": road,
        "roadscene_homography_warps": road_h,
        "consistency_flag_roadscene_rig": flag,
        "tno": tno_out,
        "note": "timings are from a shared 2-core machine (see the load averages); compare ratios measured in one run",
    }
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
