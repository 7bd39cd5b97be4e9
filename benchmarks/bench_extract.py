"""Benchmark ``gasdb extract`` against the ffmpeg command line doing the same decode + PNG write.

Input: one simulated rig recording (:mod:`gasdb_tools.synth`), 640x512, RGB and thermal both at
25 fps with a zero offset, so every frame pairs and both sides write PNGs of the same pixels: N RGB
frames (8-bit RGB) and N thermal frames (8-bit gray), at the same deflate level (1; ffmpeg deflates
with zlib, ours with ISA-L, so the bytes differ and the sizes are reported). ``--input CLIP``
uses a real clip as both streams instead (e.g. the GasVid clip of the shared data).

* **ours**: :func:`gasdb_tools.extract.extract_workspace` on a fresh workspace (offset given):
  decode both streams with PyAV, pair by timestamp, convert and write PNGs atomically (temp file,
  rename; PNG row filter "up" deflated by ISA-L; one ``os.sync`` per index commit instead of a
  per-file fsync) on a thread pool of one worker per CPU, update the index;
* **ours, estimated offset**: the same with the offset estimated. Every frame is kept, so the
  motion energies are measured in the writing pass itself (each stream decoded once; frames
  staged, then moved to their pair names). Target: at most 10 % slower than **ours**;
* **baseline**: one ``ffmpeg`` process (imageio-ffmpeg's static binary) with both inputs and two
  image2 outputs: ``-map 0:v -compression_level 1 rgb/%06d.png -map 1:v -pix_fmt gray
  -compression_level 1 thermal/%06d.png`` (ffmpeg's own threading: frame-threaded decoders and
  PNG encoder; its default Paeth prediction; no fsync).

Runs are interleaved (ours, ffmpeg, ...) ``--repeats`` times; the figure is the ratio of median
throughputs (pairs/s) in the same run, and the CPU seconds of each side are reported too (on a
shared machine CPU time is the steadier figure), with the bytes written per pair. The outputs are
compared pixel by pixel (they must be identical).

Run::

    .venv/bin/python benchmarks/bench_extract.py            # 8 s of video (200 pairs), 5 repeats
    .venv/bin/python benchmarks/bench_extract.py --quick    # 3 s, 2 repeats
    .venv/bin/python benchmarks/bench_extract.py --input ../shared/data/gasvid/MOV_1467_short.mp4 --seconds 30
    .venv/bin/python benchmarks/bench_extract.py --png-strategies ../shared/data   # zlib default, RLE, ISA-L; real frames

Writes ``benchmarks/results/extract.json`` (``extract_<clip>.json`` with ``--input``). Targets: ours
>= 1.0x ffmpeg's pairs/s; the estimated offset costs <= 10 % (pairs/s of ours over ours with it).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools import __version__  # noqa: E402
from gasdb_tools.extract import extract_workspace  # noqa: E402
from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.imaging import read_image  # noqa: E402
from gasdb_tools.recordings import add_recording  # noqa: E402
from gasdb_tools.synth import SynthRig, write_recording  # noqa: E402
from gasdb_tools.video import count_frames  # noqa: E402
from gasdb_tools.workspace import Workspace  # noqa: E402

COMPRESSION = 1
import scipy.signal  # noqa: E402,F401  (the offset estimate imports it once per process: not a per-recording cost)


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def make_input(folder: Path, seconds: float, clip: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if clip is not None:  # the first ``seconds`` of a real clip, remuxed (no re-encoding) as both streams
        import imageio_ffmpeg

        for name in ("rgb.mp4", "thermal.mp4"):
            subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-t", str(seconds),
                            "-c", "copy", "-an", str(folder / name)], check=True)
        return folder
    rig = SynthRig(seed=0, size=(640, 512), rgb_fps=25.0, thermal_fps=25.0, offset_s=0.0)
    write_recording(folder, rig, seconds)
    return folder


def run_ours(src: Path, work: Path, *, estimate: bool) -> dict:
    return _run_ours(src, work, estimate=estimate)


def _run_ours(src: Path, work: Path, *, estimate: bool) -> dict:
    root = work / "ws"
    shutil.rmtree(root, ignore_errors=True)
    ws = Workspace.init(root)
    add_recording(ws, rgb=src / "rgb.mp4", thermal=src / "thermal.mp4", scene="sunny", recording_id="bench",
                  offset_s=None if estimate else 0.0, allow_same=True)
    c0, t0 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    summary = extract_workspace(ws, compression=COMPRESSION, min_confidence=0.0, jobs=os.cpu_count())
    wall, cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0
    rec = summary["recordings"][0]
    if rec["status"] != "extracted":
        raise SystemExit(f"extraction failed: {rec['error']}")
    size = sum(f.stat().st_size for f in (root / "frames" / "bench").rglob("*.png"))
    return {"pairs": rec["pairs"], "wall_s": wall, "cpu_s": cpu, "offset_s": rec["offset_s"], "ws": root,
            "bytes": size}


def run_ffmpeg(ffmpeg: str, src: Path, work: Path) -> dict:
    out = work / "ffmpeg"
    shutil.rmtree(out, ignore_errors=True)
    (out / "rgb").mkdir(parents=True)
    (out / "thermal").mkdir()
    cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", str(src / "rgb.mp4"), "-i", str(src / "thermal.mp4"),
           "-map", "0:v", "-fps_mode", "passthrough", "-compression_level", str(COMPRESSION), str(out / "rgb/%06d.png"),
           "-map", "1:v", "-fps_mode", "passthrough", "-pix_fmt", "gray", "-compression_level", str(COMPRESSION),
           str(out / "thermal/%06d.png")]
    c0, t0 = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True)
    wall, cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_CHILDREN) - c0
    n_rgb, n_th = len(list((out / "rgb").glob("*.png"))), len(list((out / "thermal").glob("*.png")))
    if n_rgb != n_th:
        raise SystemExit(f"ffmpeg wrote {n_rgb} RGB and {n_th} thermal frames")
    size = sum(f.stat().st_size for f in out.rglob("*.png"))
    return {"pairs": n_rgb, "wall_s": wall, "cpu_s": cpu, "out": out, "bytes": size}


def compare_outputs(ws_root: Path, ff_out: Path) -> dict:
    """Largest pixel difference between our frames and ffmpeg's (pairs in time order)."""
    ws = Workspace.open(ws_root)
    rows = ws.pairs()
    diff = {"rgb": 0, "thermal": 0}
    for k, row in enumerate(rows):
        for key in diff:
            ours = read_image(ws.path(row[key])).astype(np.int32)
            theirs = read_image(ff_out / key / f"{k + 1:06d}.png").astype(np.int32)
            diff[key] = max(diff[key], int(np.abs(ours - theirs).max()))
    return diff


def png_strategies(shared: Path, out: Path) -> int:
    """zlib strategies "default" and "rle" against ISA-L's deflate (filter "up", level 1) on real
    frames: CPU ns per input byte and compressed size / raw size, per set (why extract writes with ISA-L)."""
    import glob

    import cv2

    from gasdb_tools.imaging import encode_png
    from gasdb_tools.video import iter_frames

    sets = {}
    for name, rel in (("gasvid (OGI, gray)", "gasvid/MOV_1467_short.mp4"),
                      ("iod_video (IR, gray)", "iod_video/001_wild_static_vague.avi")):
        if (shared / rel).is_file():
            sets[name] = [img for _, (t, img) in zip(range(60), iter_frames(shared / rel, gray=True))]
    for name, pattern, flag in (("roadscene visible (RGB)", "rgbt_pairs/roadscene/visible/*", cv2.IMREAD_COLOR),
                                ("roadscene infrared (gray)", "rgbt_pairs/roadscene/infrared/*", cv2.IMREAD_GRAYSCALE),
                                ("tno sequences", "tno_sequences/*/*/*", cv2.IMREAD_UNCHANGED)):
        images = [cv2.imread(p, flag) for p in sorted(glob.glob(str(shared / pattern)))[:40]]
        images = [i for i in images if i is not None and i.dtype == np.uint8]
        if images:
            sets[name] = images
    if not sets:
        raise SystemExit(f"no real frames under {shared}")
    rows = {}
    for name, images in sets.items():
        row = {"frames": len(images), "shape": list(images[0].shape)}
        raw = sum(i.nbytes for i in images)
        for strategy in ("default", "rle", "isal"):
            # each path given its own channel order (no conversion pass): OpenCV's BGR, ISA-L's RGB
            options = {"deflate": "isal"} if strategy == "isal" else {"strategy": strategy, "channel_order": "bgr"}
            c0 = _cpu(resource.RUSAGE_SELF)
            size = sum(len(encode_png(i, compression=COMPRESSION, **options)) for _ in range(3) for i in images)
            row[strategy] = {"cpu_ns_per_byte": 1e9 * (_cpu(resource.RUSAGE_SELF) - c0) / (3 * raw),
                             "size_ratio": size / (3 * raw)}
        row["rle_cpu_vs_default"] = row["rle"]["cpu_ns_per_byte"] / row["default"]["cpu_ns_per_byte"]
        row["rle_size_vs_default"] = row["rle"]["size_ratio"] / row["default"]["size_ratio"]
        for other in ("default", "rle"):
            row[f"isal_cpu_vs_{other}"] = row["isal"]["cpu_ns_per_byte"] / row[other]["cpu_ns_per_byte"]
            row[f"isal_size_vs_{other}"] = row["isal"]["size_ratio"] / row[other]["size_ratio"]
        rows[name] = row
        print(f"{name:28s} {row['frames']:3d} frames: RLE {row['rle_cpu_vs_default']:.2f}x the CPU, "
              f"{row['rle_size_vs_default']:.2f}x the size of zlib's default strategy; ISA-L "
              f"{row['isal_cpu_vs_rle']:.2f}x the CPU, {row['isal_size_vs_rle']:.2f}x the size of RLE "
              f"({row['isal_size_vs_default']:.2f}x default's)")
    write_json(out, {"benchmark": "PNG deflate on real frames: zlib strategies and ISA-L (filter up, level 1)", "gasdb_tools": __version__,
                     "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()}, "sets": rows})
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the simulated recording")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--input", type=Path, default=None, help="a real clip, used as both streams")
    parser.add_argument("--png-strategies", type=Path, metavar="SHARED_DATA", default=None,
                        help="instead: compare zlib strategies on the real frames under SHARED_DATA")
    parser.add_argument("--quick", action="store_true", help="3 s of video, 2 repeats")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.png_strategies is not None:
        return png_strategies(args.png_strategies, args.out or ROOT / "benchmarks" / "results" / "png_strategy.json")
    if args.out is None:
        name = "extract.json" if args.input is None else f"extract_{args.input.stem}.json"
        args.out = ROOT / "benchmarks" / "results" / name
    if args.quick:
        args.seconds, args.repeats = 3.0, 2
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    ff_version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        print(f"input: {args.input or 'simulated 640x512 RGB + thermal at 25 fps'}, {args.seconds:g} s", flush=True)
        load_start = os.getloadavg()
        src = make_input(tmp / "rec", args.seconds, args.input)
        n_frames = count_frames(src / "thermal.mp4")
        runs = {"ours": [], "ours_estimated_offset": [], "ffmpeg": []}
        for rep in range(args.repeats):
            for name in runs:
                if name == "ffmpeg":
                    r = run_ffmpeg(ffmpeg, src, tmp)
                else:
                    r = run_ours(src, tmp, estimate=name == "ours_estimated_offset")
                runs[name].append(r)
                print(f"  repeat {rep + 1}: {name:28s} {r['pairs']} pairs in {r['wall_s']:.2f} s "
                      f"({r['pairs'] / r['wall_s']:.1f} pairs/s, {r['cpu_s']:.2f} CPU s)", flush=True)
        pairs = {name: rs[-1]["pairs"] for name, rs in runs.items() if name != "ours_estimated_offset"}
        if len(set(pairs.values())) != 1 or pairs["ours"] != n_frames:
            raise SystemExit(f"pair counts differ: {pairs} (frames per stream: {n_frames})")
        run_ours(src, tmp, estimate=False)
        diff = compare_outputs(tmp / "ws", runs["ffmpeg"][-1]["out"])
        estimated = runs["ours_estimated_offset"][-1]["offset_s"]

    def stats(rs):
        walls = [r["wall_s"] for r in rs]
        cpus = [r["cpu_s"] for r in rs]
        n = rs[0]["pairs"]
        return {"pairs": n, "wall_s": walls, "cpu_s": cpus, "median_wall_s": statistics.median(walls),
                "pairs_per_s": n / statistics.median(walls), "cpu_ms_per_pair": 1000 * statistics.median(cpus) / n,
                "kib_per_pair": rs[0]["bytes"] / n / 1024}

    table = {name: stats(rs) for name, rs in runs.items()}
    base = table["ffmpeg"]
    for name, row in table.items():
        row["ratio_vs_ffmpeg"] = row["pairs_per_s"] / base["pairs_per_s"]
        row["cpu_ratio_vs_ffmpeg"] = base["cpu_ms_per_pair"] / row["cpu_ms_per_pair"]
    print()
    print(f"{'method':28s} {'pairs':>6s} {'median s':>9s} {'pairs/s':>8s} {'x ffmpeg':>9s} {'CPU ms/pair':>12s} "
          f"{'CPU x ffmpeg':>13s} {'KiB/pair':>9s}")
    for name, row in table.items():
        print(f"{name:28s} {row['pairs']:6d} {row['median_wall_s']:9.2f} {row['pairs_per_s']:8.1f} "
              f"{row['ratio_vs_ffmpeg']:9.2f} {row['cpu_ms_per_pair']:12.1f} {row['cpu_ratio_vs_ffmpeg']:13.2f} "
              f"{row['kib_per_pair']:9.1f}")
    print(f"max |ours - ffmpeg| per pixel: rgb {diff['rgb']}, thermal {diff['thermal']}; "
          f"estimated offset {estimated:+.4f} s (truth 0)")
    ratio = table["ours"]["ratio_vs_ffmpeg"]
    extra = table["ours"]["pairs_per_s"] / table["ours_estimated_offset"]["pairs_per_s"] - 1
    extra_cpu = table["ours_estimated_offset"]["cpu_ms_per_pair"] / table["ours"]["cpu_ms_per_pair"] - 1
    print(f"ratio ours/ffmpeg (pairs/s): {ratio:.2f}  (target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'})")
    print(f"offset estimation costs {100 * extra:+.1f} % wall, {100 * extra_cpu:+.1f} % CPU (target <= 10 %: "
          f"{'met' if extra <= 0.10 else 'NOT met'})")
    print(f"load average: {load_start} at the start, {os.getloadavg()} at the end")
    result = {
        "benchmark": "extract: decode + pair + PNG write vs ffmpeg CLI decode + PNG write",
        "gasdb_tools": __version__,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg()},
        "command": "python benchmarks/bench_extract.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "ffmpeg": ff_version,
        "input": ({"size": "640x512", "fps": 25, "seconds": args.seconds, "pairs": n_frames,
                   "rgb": "H.264 crf 12 yuv420p", "thermal": "H.264 crf 12 yuv420p (gray)"} if args.input is None else
                  {"clip": args.input.name, "seconds": args.seconds, "pairs": n_frames, "rgb": "the clip",
                   "thermal": "the clip (gray)"}),
        "settings": {"png_compression": COMPRESSION, "our_png": "filter up, ISA-L deflate",
                     "ffmpeg_png": "pred paeth (its default), zlib default strategy", "our_workers": os.cpu_count(),
                     "ffmpeg_threads": "auto", "repeats": args.repeats},
        "results": table,
        "max_pixel_difference": diff,
        "estimated_offset_s": estimated,
        "ratio_ours_vs_ffmpeg": ratio,
        "offset_estimation_extra_wall": extra,
        "offset_estimation_extra_cpu": extra_cpu,
        "target": ">= 1.0x ffmpeg pairs/s; offset estimation <= 10 % extra",
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
