"""Benchmark ``gasdb release`` build throughput and ``GasDBDataset`` read throughput (640x512 pairs).

One run builds a labelled, aligned workspace of simulated 640x512 pairs (16-bit thermal), then times:

* **build** (pairs/s): :func:`gasdb_tools.release.build_release` (HDF5 pack with gzip + shuffle,
  Gas-DB layout with ignore masks, per-split COCO with its images, Hugging Face Parquet, Croissant,
  figures, datasheet, hashes; worker processes = CPUs, and once in one process) against the
  **baseline** :func:`gasdb_tools.export.export_gasdb` alone (the PNG folder a Gas-DB-style release
  ships, what ``gasdb export --format gasdb`` runs, one thread); the ratio says what the verifiable
  release costs on top of the bare folder.
* **read** (samples/s): ``GasDBDataset`` (rgb, thermal, mask, valid + metadata per sample), in
  order and shuffled, against two baselines: **plain h5py** reads of the same four arrays from a
  handle kept open, and **the PNG folder** (``gasdb/images/<name>.png`` + ``labels/<name>.png``
  through :func:`gasdb_tools.imaging.read_image`); and through a torch ``DataLoader``
  (batch 8, 0 and 2 workers; one intra-op torch thread in the main process, as in workers).

Run::

    .venv/bin/python benchmarks/bench_release.py             # 48 pairs (4 recordings x 12)
    .venv/bin/python benchmarks/bench_release.py --pairs 96 --repeats 5

Writes ``benchmarks/results/release.json``. Timings on a shared machine are noisy: compare the
ratios, which are measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _release_ws import build_workspace  # noqa: E402

from gasdb_tools import export  # noqa: E402
from gasdb_tools.data import GasDBDataset  # noqa: E402
from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.imaging import read_image  # noqa: E402
from gasdb_tools.release import build_release  # noqa: E402
from gasdb_tools.splits import split_workspace  # noqa: E402


def _timed(func, repeats: int) -> dict:
    """Wall seconds (best, median) and process CPU seconds (all threads; median): on a shared machine the
    CPU time does not depend on what else runs."""
    import resource

    def cpu_now():  # this process and its finished worker processes
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + kids.ru_utime + kids.ru_stime

    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = cpu_now(), time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
        cpu.append(cpu_now() - c0)
    return {"best": round(min(times), 4), "median": round(statistics.median(times), 4),
            "cpu_median": round(statistics.median(cpu), 4)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=48, help="pairs in the workspace (4 recordings)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "release.json")
    args = ap.parse_args(argv)
    per = max(1, args.pairs // 4)
    tmp = Path(tempfile.mkdtemp(prefix="bench-release-"))
    load_before = round(os.getloadavg()[0], 2)
    try:
        t0 = time.perf_counter()
        ws = build_workspace(tmp / "ws", recordings=4, pairs_per=per, size=(640, 512), step_s=0.5, ignore_box=False)
        setup_s = time.perf_counter() - t0
        split_workspace(ws, ratios="0.75,0.25", seed=0)
        n = 4 * per
        seconds, rates = {}, {}

        k = [0]

        def build(jobs=None):
            k[0] += 1
            build_release(ws, tmp / f"rel{k[0]}", version="1.0.0", created="2024-01-01T00:00:00Z", jobs=jobs)

        def baseline_build():
            k[0] += 1
            export.export_gasdb(ws, tmp / f"folder{k[0]}")

        seconds["build: ours (build_release)"] = _timed(build, args.repeats)
        seconds["build: baseline (export_gasdb PNG folder only)"] = _timed(baseline_build, args.repeats)
        seconds["build: ours (build_release, 1 process)"] = _timed(lambda: build(1), args.repeats)
        rel = tmp / "rel1"
        h5 = rel / "gasdb.h5"
        names = [line.split(",")[0] for line in (rel / "index.csv").read_text().splitlines()[1:]]
        order = np.random.default_rng(0).permutation(n)

        def ours(shuffled=False):
            ds = GasDBDataset(h5)
            for i in (order if shuffled else range(len(ds))):
                ds[int(i)]
            ds.close()

        def plain_h5py():
            import h5py

            with h5py.File(h5, "r") as f:
                (block,) = list(f["frames"])  # one camera: one block of (n, H, W[, 3]) datasets
                arrays = [f["frames"][block][key] for key in ("rgb", "thermal", "mask", "valid")]
                for i in range(n):
                    for a in arrays:
                        a[i]

        def png_folder():
            for name in names:
                read_image(rel / "gasdb" / "images" / f"{name}.png")
                read_image(rel / "gasdb" / "labels" / f"{name}.png")

        seconds["read: ours (GasDBDataset, in order)"] = _timed(ours, args.repeats)
        seconds["read: ours (GasDBDataset, shuffled)"] = _timed(lambda: ours(True), args.repeats)
        seconds["read: baseline (plain h5py, open handle)"] = _timed(plain_h5py, args.repeats)
        seconds["read: baseline (PNG folder, read_image)"] = _timed(png_folder, args.repeats)
        torch_threads = None
        try:
            import torch
            from torch.utils.data import DataLoader

            # Collation in the main process uses torch's intra-op threads; on a shared 2-core machine they
            # spin against each other and make stacking ~10x slower. Workers already run with 1 thread.
            torch.set_num_threads(1)
            torch_threads = torch.get_num_threads()

            for workers in (0, 2):
                def loader(workers=workers):
                    for _ in DataLoader(GasDBDataset(h5), batch_size=8, num_workers=workers, shuffle=True):
                        pass

                seconds[f"read: ours (DataLoader, batch 8, {workers} workers)"] = _timed(loader, args.repeats)
        except ImportError:
            pass
        for key, t in seconds.items():
            unit = "pairs/s" if key.startswith("build") else "samples/s"
            rates[key] = {"per_s": round(n / t["best"], 2), "unit": unit}
        def per_s(key):
            return rates[key]["per_s"]

        ratio = {
            "build: ours / export_gasdb (throughput)": round(
                per_s("build: ours (build_release)") / per_s("build: baseline (export_gasdb PNG folder only)"), 3),
            "build: ours 1 process / export_gasdb (throughput)": round(
                per_s("build: ours (build_release, 1 process)") / per_s("build: baseline (export_gasdb PNG folder only)"),
                3),
            "build CPU: ours / export_gasdb (CPU seconds, all processes)": round(
                seconds["build: ours (build_release)"]["cpu_median"]
                / seconds["build: baseline (export_gasdb PNG folder only)"]["cpu_median"], 3),
            "read: GasDBDataset / plain h5py": round(
                per_s("read: ours (GasDBDataset, in order)") / per_s("read: baseline (plain h5py, open handle)"), 3),
            "read: GasDBDataset / PNG folder": round(
                per_s("read: ours (GasDBDataset, in order)") / per_s("read: baseline (PNG folder, read_image)"), 3),
        }
        folder_bytes = sum(p.stat().st_size for p in (rel / "gasdb").rglob("*") if p.is_file())
        def mb(path):
            return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 2)

        sizes = {"gasdb.h5 MB": round(h5.stat().st_size / 1e6, 2),
                 "gasdb/ folder MB": round(folder_bytes / 1e6, 2), "hf/ MB": mb(rel / "hf"),
                 "coco/ MB": mb(rel / "coco"), "release MB": mb(rel),
                 "raw arrays MB": round(n * 640 * 512 * (3 + 2 + 1 + 1) / 1e6, 2)}
        result = {
            "benchmark": "release",
            "pairs": n, "size": [640, 512], "repeats": args.repeats,
            "workspace_setup_s": round(setup_s, 2), "torch_threads": torch_threads,
            "seconds": seconds, "throughput": rates, "ratios": ratio, "sizes": sizes,
            "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "load_avg_before_1min": load_before,
            "python": platform.python_version(), "machine": platform.machine(),
        }
        write_json(args.out, result)
        width = max(len(k) for k in seconds)
        print(f"{n} pairs of 640x512, best of {args.repeats} (load average {result['load_avg_1min']}):")
        for key in seconds:
            print(f"  {key:<{width}}  {seconds[key]['best']:8.3f} s  {rates[key]['per_s']:9.2f} {rates[key]['unit']}"
              f"  (CPU {seconds[key]['cpu_median']:.2f} s)")
        for key, v in ratio.items():
            print(f"  ratio {key}: {v}")
        print(f"  sizes: {sizes}")
        print(f"wrote {args.out}")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
