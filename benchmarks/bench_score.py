"""Benchmark ``gasdb score`` against a plain single-thread loop and a scikit-learn loop.

Scores 1293 ground-truth/prediction mask pairs of 640x512 (Gas-DB's size and count), PNG decoding
included on every side, in one run:

* **ours**: :func:`gasdb_tools.scoring.score` on a release folder + a submission folder (and a zip),
  with every check of the submission spec, sha256 hashing and a process per core (this one and
  forked ones; also timed in one process and with ``--by scene,recording --per-image``). Masks
  written by our ``encode_png`` (Up rows) are inflated in one call (libdeflate when the ``deflate``
  package is installed, else zlib: the header line says which) and counted on packed bits; the
  same masks written by Pillow (adaptive filters with Paeth rows, which go to OpenCV) are timed too;
* **plain loop** (the baseline the ratio is quoted against): ``cv2.imdecode`` of both masks and
  :func:`gasdb_tools.metrics.confusion` per image on one thread, no validation, no hashing;
* **sklearn loop**: what RT-CAN's ``test.py`` does per image: ``cv2.imread`` both masks, then
  ``sklearn.metrics.confusion_matrix(gt.ravel(), pred.ravel(), labels=[0, 1])`` added to a float64
  total (timed on 200 images and scaled with ``--quick``).

All must give the same confusion matrix. The fast variants run interleaved, round by round, so
they share the machine's load; the load average and the share of idle CPU during the rounds are
recorded. CPU seconds include those of the forked scoring processes; "busiest process CPU" is
the CPU time of the process (this one or a forked child) that worked longest: about the wall time on an
idle machine with a core per process, the figure to read when a shared machine is busy. Run::

    .venv/bin/python benchmarks/bench_score.py            # full run (the sklearn loop takes ~15-30 s)
    .venv/bin/python benchmarks/bench_score.py --quick    # sklearn loop timed on 200 images, scaled

Writes ``benchmarks/results/score.json``. Target: ours <= 0.5 s for 1293 masks on a 2-core machine.
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
from gasdb_tools.metrics import confusion  # noqa: E402
from gasdb_tools.scoring import default_workers, score, write_example_submission  # noqa: E402
from gasdb_tools.submission import _libdeflate  # noqa: E402

N_IMAGES = 1293
SIZE = (512, 640)  # (H, W)
TARGET_S = 0.5


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


def inflate_backend() -> str:
    """Which inflate the fast PNG path uses here."""
    import zlib

    if _libdeflate is not None:
        from importlib.metadata import version

        return f"libdeflate (deflate {version('deflate')})"
    return f"zlib {zlib.ZLIB_RUNTIME_VERSION}"


def write_pillow_submission(sub_dir: Path, out: Path) -> Path:
    """The same masks saved by Pillow (its adaptive row filters include Paeth: the OpenCV path)."""
    from PIL import Image

    out.mkdir()
    for path in sorted(sub_dir.glob("*.png")):
        mask = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        Image.fromarray(mask).save(out / path.name, "PNG")
    return out


def sklearn_loop(label_dir: Path, sub_dir: Path, names: list[str]) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    total = np.zeros((2, 2), np.float64)
    for name in names:
        gt = cv2.imread(str(label_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(str(sub_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        total += confusion_matrix(gt.ravel(), pred.ravel(), labels=[0, 1])
    return total


def plain_loop(label_dir: Path, sub_dir: Path, names: list[str]) -> np.ndarray:
    total = np.zeros((2, 2), np.int64)
    for name in names:
        gt = cv2.imdecode(np.frombuffer((label_dir / f"{name}.png").read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        pred = cv2.imdecode(np.frombuffer((sub_dir / f"{name}.png").read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        total += confusion(gt, pred)
    return total


def _scheduling() -> str:
    """This process's scheduling policy and nice value (a busy shared machine may be measured at high priority)."""
    try:
        policy = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}.get(
            os.sched_getscheduler(0), str(os.sched_getscheduler(0)))
        return f"{policy}, priority {os.sched_getparam(0).sched_priority}, nice {os.nice(0)}"
    except (AttributeError, OSError):
        return "unknown"


def _cpu_idle():
    with open("/proc/stat") as fh:
        v = [int(t) for t in fh.readline().split()[1:]]
    return v[3] + v[4], sum(v)


def _cpu_seconds() -> tuple[float, float]:
    """CPU time of this process, and of its finished children (the forked scoring processes)."""
    try:
        import resource  # microseconds; os.times counts clock ticks (10 ms)
    except ImportError:  # pragma: no cover - Windows
        t = os.times()
        return t.user + t.system, t.children_user + t.children_system
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def interleaved(funcs: dict, rounds: int) -> tuple[dict, dict, float | None]:
    """Run every function once per round; (name -> (best wall, median wall, best CPU), outputs, idle share)."""
    walls = {k: [] for k in funcs}
    cpus = {k: [] for k in funcs}
    busiest = {k: [] for k in funcs}
    outs = {}
    try:
        idle0 = _cpu_idle()
    except OSError:
        idle0 = None
    for _ in range(rounds):
        for name, fn in funcs.items():
            t0, (own0, kids0) = time.perf_counter(), _cpu_seconds()
            outs[name] = fn()
            walls[name].append(time.perf_counter() - t0)
            own, kids = (a - b for a, b in zip(_cpu_seconds(), (own0, kids0)))
            cpus[name].append(own + kids)
            n_kids = 0 if kids == 0 else max(1, default_workers() - 1)  # children share alike (round-robin)
            busiest[name].append(max(own, kids / n_kids) if n_kids else own)
    idle = None
    if idle0 is not None:
        idle1 = _cpu_idle()
        idle = (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    return ({k: (min(walls[k]), float(np.median(walls[k])), min(cpus[k]), min(busiest[k])) for k in funcs},
            outs, idle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the sklearn loop on 200 images and scale")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the fast variants (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "score.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        release = make_release(tmp / "release")
        sub_dir = write_example_submission(release, tmp / "sub", shift=3)
        sub_zip = write_example_submission(release, tmp / "sub.zip", shift=3, as_zip=True)
        sub_pil = write_pillow_submission(sub_dir, tmp / "sub_pillow")
        setup_s = time.perf_counter() - t0
        label_dir = release / "gasdb" / "labels"
        names = sorted(p.stem for p in label_dir.glob("*.png"))

        load_before = os.getloadavg()[0]
        rows, outs, idle = interleaved({
            "ours (folder)": lambda: score(release, sub_dir),
            "ours (zip)": lambda: score(release, sub_zip),
            "ours (folder, 1 process)": lambda: score(release, sub_dir, workers=1),
            "ours (folder written by Pillow: Paeth rows, OpenCV path)": lambda: score(release, sub_pil),
            "ours (folder, --by scene,recording --per-image)": lambda: score(release, sub_dir,
                                                                            by=("scene", "recording"), per_image=True),
            "plain loop: cv2.imdecode + metrics.confusion, 1 thread": lambda: plain_loop(label_dir, sub_dir, names),
        }, args.rounds)
        load_after = os.getloadavg()[0]
        result = outs["ours (folder)"]
        plain_cm = outs["plain loop: cv2.imdecode + metrics.confusion, 1 thread"]

        subset = names[:200] if args.quick else names
        scale = len(names) / len(subset)
        sk, sk_out, _ = interleaved({"sk": lambda: sklearn_loop(label_dir, sub_dir, subset)}, 1)
        label = "sklearn loop: cv2.imread + confusion_matrix, 1 thread" + (" (scaled from 200)" if args.quick else "")
        rows[label] = tuple(v * scale for v in sk["sk"])
        for name in ("ours (zip)", "ours (folder, 1 process)", "ours (folder, --by scene,recording --per-image)",
                     "ours (folder written by Pillow: Paeth rows, OpenCV path)"):
            assert outs[name]["confusion_matrix"] == result["confusion_matrix"], name
        assert plain_cm.tolist() == result["confusion_matrix"], "the plain loop disagrees"
        if not args.quick:
            assert sk_out["sk"].astype(np.int64).tolist() == result["confusion_matrix"], "the sklearn loop disagrees"

    plain = "plain loop: cv2.imdecode + metrics.confusion, 1 thread"
    best = rows["ours (folder)"][0]
    ratio = rows[plain][0] / best
    cpu_ratio = rows[plain][2] / rows["ours (folder)"][2]
    width = max(len(k) for k in rows)
    print(f"scoring {len(names)} masks of {SIZE[1]}x{SIZE[0]} (PNG decoding included); {os.cpu_count()} CPUs, {_scheduling()}; "
          f"load average {load_before:.2f} -> {load_after:.2f}, idle CPU during the rounds "
          f"{'n/a' if idle is None else f'{100 * idle:.0f} %'}; setup {setup_s:.1f} s; inflate: {inflate_backend()}")
    print(f"{'method':<{width}}  {'best s':>8}  {'median s':>8}  {'CPU s':>8}  {'busiest process CPU s':>21}")
    for k, (b, m, c, p) in rows.items():
        print(f"{k:<{width}}  {b:8.3f}  {m:8.3f}  {c:8.3f}  {p:21.3f}")
    print(f"speed-up over the plain loop: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU; over the sklearn loop: "
          f"{rows[label][0] / best:.1f}x; target <= {TARGET_S} s: {'met' if best <= TARGET_S else 'NOT met'} "
          f"({best:.3f} s best, {rows['ours (folder)'][1]:.3f} s median; busiest process "
          f"{rows['ours (folder)'][3]:.3f} s of CPU, about the wall time on an idle machine)")
    print(f"gas IoU of the degraded submission: {result['percent']['gas']['iou']} %")

    write_json(args.out, {
        "benchmark": "score",
        "n_images": len(names),
        "size": [SIZE[1], SIZE[0]],
        "cpus": os.cpu_count(),
        "workers": default_workers(),
        "inflate": inflate_backend(),
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(load_after, 2),
        "idle_cpu_share_during_rounds": None if idle is None else round(idle, 3),
        "scheduling": _scheduling(),
        "python": platform.python_version(),
        "quick": args.quick,
        "rounds": args.rounds,
        "seconds": {k: {"best_wall": round(b, 4), "median_wall": round(m, 4), "cpu": round(c, 4),
                        "busiest_process_cpu": round(p, 4)} for k, (b, m, c, p) in rows.items()},
        "baseline": plain,
        "speedup_vs_plain_loop": round(ratio, 2),
        "cpu_speedup_vs_plain_loop": round(cpu_ratio, 2),
        "speedup_vs_sklearn_loop": round(rows[label][0] / best, 2),
        "target_s": TARGET_S,
        "target_met": best <= TARGET_S,
        "confusion_matrix": result["confusion_matrix"],
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
