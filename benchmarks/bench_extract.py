"""Benchmark ``gasdb extract`` against the ffmpeg command line doing the same decode + PNG write.

Input: one simulated rig recording (:mod:`gasdb_tools.synth`), 640x512, RGB and thermal both at
25 fps with a zero offset, so every frame pairs and both sides write exactly the same PNGs: N RGB
frames (8-bit RGB) and N thermal frames (8-bit gray), at the same zlib level (1).

* **ours**: :func:`gasdb_tools.extract.extract_workspace` on a fresh workspace (offset given):
  decode both streams with PyAV, pair by timestamp, convert and write PNGs atomically (temp file,
  rename; PNG row filter "up"; one ``os.sync`` per index commit instead of a per-file fsync) on a
  thread pool of one worker per CPU, update the index;
* **ours, estimated offset**: the first variant plus the motion-energy pass that estimates the
  offset (a second Y-plane decode of both streams; informational: on this short, nearly static
  clip the estimate can be off, so its pair count may differ);
* **baseline**: one ``ffmpeg`` process (imageio-ffmpeg's static binary) with both inputs and two
  image2 outputs: ``-map 0:v -compression_level 1 rgb/%06d.png -map 1:v -pix_fmt gray
  -compression_level 1 thermal/%06d.png`` (ffmpeg's own threading: frame-threaded decoders and
  PNG encoder; its default Paeth prediction; no fsync).

Runs are interleaved (ours, ffmpeg, ...) ``--repeats`` times; the figure is the ratio of median
throughputs (pairs/s) in the same run, and the CPU seconds of each side are reported too (on a
shared machine CPU time is the steadier figure). The outputs are compared pixel by pixel.

Run::

    .venv/bin/python benchmarks/bench_extract.py            # 8 s of video (200 pairs), 3 repeats
    .venv/bin/python benchmarks/bench_extract.py --quick    # 3 s, 2 repeats

Writes ``benchmarks/results/extract.json``. Target: ours >= 0.9x ffmpeg's pairs/s.
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


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def make_input(folder: Path, seconds: float) -> Path:
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
                  offset_s=None if estimate else 0.0)
    c0, t0 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    summary = extract_workspace(ws, compression=COMPRESSION, min_confidence=0.0)
    wall, cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0
    rec = summary["recordings"][0]
    if rec["status"] != "extracted":
        raise SystemExit(f"extraction failed: {rec['error']}")
    return {"pairs": rec["pairs"], "wall_s": wall, "cpu_s": cpu, "offset_s": rec["offset_s"], "ws": root}


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
    return {"pairs": n_rgb, "wall_s": wall, "cpu_s": cpu, "out": out}


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the simulated recording")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 s of video, 2 repeats")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "extract.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 3.0, 2
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    ff_version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        print(f"simulating {args.seconds:g} s of 640x512 RGB + thermal at 25 fps ...", flush=True)
        src = make_input(tmp / "rec", args.seconds)
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
                "pairs_per_s": n / statistics.median(walls), "cpu_ms_per_pair": 1000 * statistics.median(cpus) / n}

    table = {name: stats(rs) for name, rs in runs.items()}
    base = table["ffmpeg"]
    for name, row in table.items():
        row["ratio_vs_ffmpeg"] = row["pairs_per_s"] / base["pairs_per_s"]
        row["cpu_ratio_vs_ffmpeg"] = base["cpu_ms_per_pair"] / row["cpu_ms_per_pair"]
    print()
    print(f"{'method':28s} {'pairs':>6s} {'median s':>9s} {'pairs/s':>8s} {'x ffmpeg':>9s} {'CPU ms/pair':>12s} "
          f"{'CPU x ffmpeg':>13s}")
    for name, row in table.items():
        print(f"{name:28s} {row['pairs']:6d} {row['median_wall_s']:9.2f} {row['pairs_per_s']:8.1f} "
              f"{row['ratio_vs_ffmpeg']:9.2f} {row['cpu_ms_per_pair']:12.1f} {row['cpu_ratio_vs_ffmpeg']:13.2f}")
    print(f"max |ours - ffmpeg| per pixel: rgb {diff['rgb']}, thermal {diff['thermal']}; "
          f"estimated offset {estimated:+.4f} s (truth 0)")
    ratio = table["ours"]["ratio_vs_ffmpeg"]
    print(f"ratio ours/ffmpeg (pairs/s): {ratio:.2f}  (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
    result = {
        "benchmark": "extract: decode + pair + PNG write vs ffmpeg CLI decode + PNG write",
        "gasdb_tools": __version__,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_at_end": os.getloadavg()},
        "ffmpeg": ff_version,
        "input": {"size": "640x512", "fps": 25, "seconds": args.seconds, "pairs": n_frames,
                  "rgb": "H.264 crf 12 yuv420p", "thermal": "H.264 crf 12 yuv420p (gray)"},
        "settings": {"png_compression": COMPRESSION, "our_workers": os.cpu_count(), "ffmpeg_threads": "auto",
                     "repeats": args.repeats},
        "results": table,
        "max_pixel_difference": diff,
        "estimated_offset_s": estimated,
        "ratio_ours_vs_ffmpeg": ratio,
        "target": ">= 0.9x ffmpeg pairs/s",
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
