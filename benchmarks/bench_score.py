"""Benchmark ``gasdb score`` against a per-image loop of scikit-learn's ``confusion_matrix``.

Scores 1293 ground-truth/prediction mask pairs of 640x512 (Gas-DB's size and count), PNG decoding
included on both sides, in one run:

* **ours**: :func:`gasdb_tools.scoring.score` on a release folder + a submission folder (and a zip),
  with every check of the submission spec, sha256 hashing and the thread pool;
* **baseline**: what RT-CAN's ``test.py`` does per image: ``cv2.imread`` both masks, then
  ``sklearn.metrics.confusion_matrix(gt.ravel(), pred.ravel(), labels=[0, 1])`` added to a float64
  total (no validation, no hashing).

Both must give the same confusion matrix. Run::

    .venv/bin/python benchmarks/bench_score.py            # full run (the baseline takes ~30-60 s)
    .venv/bin/python benchmarks/bench_score.py --quick    # baseline timed on 200 images, extrapolated

Writes ``benchmarks/results/score.json``. Target: ours < 3 s for 1293 masks on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.imaging import write_image  # noqa: E402
from gasdb_tools.scoring import score, write_example_submission  # noqa: E402

N_IMAGES = 1293
SIZE = (512, 640)  # (H, W)


def _plume(rng: np.random.Generator) -> np.ndarray:
    """A blobby gas-like mask (0/1) at 640x512; about one in five frames has no gas."""
    if rng.random() < 0.2:
        return np.zeros(SIZE, np.uint8)
    low = rng.standard_normal((12, 15)).astype(np.float32)
    field = cv2.resize(low, SIZE[::-1], interpolation=cv2.INTER_CUBIC)
    return (field > rng.uniform(0.6, 1.6)).astype(np.uint8)


def make_release(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    names = [f"{k:05d}" for k in range(N_IMAGES)]
    for name in names:
        write_image(root / "gasdb" / "labels" / f"{name}.png", _plume(rng))
    (root / "gasdb" / "test.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "index.csv").write_text("name,pair_id,recording,scene,split\n" + "".join(
        f"{n},rec{k // 100:02d}_{n},rec{k // 100:02d},{('sunny', 'rainy', 'far', 'near')[k % 4]},test\n"
        for k, n in enumerate(names)))
    return root


def baseline(label_dir: Path, sub_dir: Path, names: list[str]) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    total = np.zeros((2, 2), np.float64)
    for name in names:
        gt = cv2.imread(str(label_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(str(sub_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        total += confusion_matrix(gt.ravel(), pred.ravel(), labels=[0, 1])
    return total


def _best(fn, repeat: int):
    """(best wall s, median wall s, best process CPU s over all threads, last result)."""
    times, cpus, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(times), float(np.median(times)), min(cpus), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the baseline on 200 images and extrapolate")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        release = make_release(tmp / "release")
        sub_dir = write_example_submission(release, tmp / "sub", shift=3)
        sub_zip = write_example_submission(release, tmp / "sub.zip", shift=3, as_zip=True)
        setup_s = time.perf_counter() - t0
        names = sorted(p.stem for p in (release / "gasdb" / "labels").glob("*.png"))

        rows = {}
        *rows["ours (folder)"], result = _best(lambda: score(release, sub_dir), args.repeat)
        *rows["ours (zip)"], result_z = _best(lambda: score(release, sub_zip), args.repeat)
        *rows["ours (folder, 1 thread)"], _ = _best(lambda: score(release, sub_dir, workers=1), args.repeat)
        *rows["ours (folder, --by scene,recording --per-image)"], _ = _best(
            lambda: score(release, sub_dir, by=("scene", "recording"), per_image=True), 1)

        subset = names[:200] if args.quick else names
        scale = len(names) / len(subset)
        base_s, _, base_cpu, base_cm = _best(lambda: baseline(release / "gasdb" / "labels", sub_dir, subset), 1)
        label = "baseline: cv2.imread + sklearn confusion_matrix per image" + (" (extrapolated from 200)"
                                                                               if args.quick else "")
        rows[label] = (base_s * scale, base_s * scale, base_cpu * scale)
        best = rows["ours (folder)"][0]
        if not args.quick:
            assert base_cm.astype(np.int64).tolist() == result["confusion_matrix"], "confusion matrices differ"
        assert result_z["confusion_matrix"] == result["confusion_matrix"]

    ratio = rows[label][0] / best
    cpu_ratio = rows[label][2] / rows["ours (folder)"][2]
    width = max(len(k) for k in rows)
    print(f"scoring {len(names)} masks of {SIZE[1]}x{SIZE[0]} (PNG decoding included); "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; setup {setup_s:.1f} s")
    print(f"{'method':<{width}}  {'best s':>8}  {'median s':>8}  {'CPU s':>8}")
    for k, (b, m, c) in rows.items():
        print(f"{k:<{width}}  {b:8.3f}  {m:8.3f}  {c:8.3f}")
    print(f"speed-up over the baseline: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU; "
          f"target < 3 s: {'met' if best < 3 else 'NOT met'} ({best:.2f} s)")
    print(f"gas IoU of the degraded submission: {result['percent']['gas']['iou']} %")

    write_json(ROOT / "benchmarks" / "results" / "score.json", {
        "benchmark": "score",
        "n_images": len(names),
        "size": [SIZE[1], SIZE[0]],
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "quick": args.quick,
        "seconds": {k: {"best_wall": round(b, 4), "median_wall": round(m, 4), "cpu": round(c, 4)}
                    for k, (b, m, c) in rows.items()},
        "speedup_vs_baseline": round(ratio, 2),
        "cpu_speedup_vs_baseline": round(cpu_ratio, 2),
        "target_s": 3.0,
        "target_met": best < 3.0,
        "confusion_matrix": result["confusion_matrix"],
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
