"""Benchmark ``gasdb preannotate`` on the dense thermal stream: speed, and the README's workflow.

* **speed** (decoding included): the recording's video decoded (PyAV, a prefetch thread, the gray
  path ``gasdb preannotate`` uses) and every frame through the gas background model, masks kept
  for pairs every 0.5 s (:func:`gasdb_tools.dense.pair_masks`), on a SimGas video (320x240 H.264,
  451 frames) and on a simulated 640x512 recording (H.264, 300 frames at 25 fps). Baseline in the
  same run: the same decoding with OpenCV MOG2 (``createBackgroundSubtractorMOG2``, defaults,
  shadows off) on every frame instead; and the decoding alone. Best of ``--repeats`` passes each,
  interleaved; frames/s. Targets: >= 300 frames/s at 320x240, >= 150 at 640x512.
* **the README's workflow through the CLI** (``gasdb init; gasdb add --thermal V; gasdb extract
  --every 0.5; gasdb preannotate [--preset extent]``): SimGas, every video: IoU of the drafts over
  the pairs (one confusion matrix per video) against the model run on every frame and scored on
  every frame (per-video IoU, the figure of ``bench_background.py``); IOD-Video: share of pairs
  whose draft's bounding box has IoU > 0.3 with the gas box, ``extent`` preset. Targets: SimGas
  within 0.02 of the dense IoU per video; IOD-Video >= 90 %.

Run::

    .venv/bin/python benchmarks/bench_preannotate.py            # ~3-5 min on 2 cores
    .venv/bin/python benchmarks/bench_preannotate.py --quick    # speed only

Writes ``benchmarks/results/preannotate.json``.
"""

from __future__ import annotations

import argparse
import json
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

from click.testing import CliRunner  # noqa: E402

from gasdb_tools import __version__, labelme_format, review  # noqa: E402
from gasdb_tools import dense, video  # noqa: E402
from gasdb_tools.background import GasSubtractor, gas_masks  # noqa: E402
from gasdb_tools.cli import main as cli  # noqa: E402
from gasdb_tools.coco import mask_bbox  # noqa: E402
from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.metrics import box_iou, confusion, scores  # noqa: E402
from gasdb_tools.sync import TimeSampler  # noqa: E402
from gasdb_tools.synth import SynthRig  # noqa: E402
from gasdb_tools.workspace import Workspace  # noqa: E402

SHARED = Path(os.environ.get("GASDB_SHARED_DATA", ROOT.parent / "shared" / "data"))
TARGETS = {"320x240": 300.0, "640x512": 150.0}


def _r(x, n=4):
    return None if x is None else round(float(x), n)


def _stream(path):
    """The stream gasdb preannotate reads (its prefetch thread and gray conversion)."""
    return dense.prefetch((t, video.frame_to_array(f, gray=True)) for t, f in video.iter_av_frames(path))


def _pair_times(path, every=0.5):
    sampler = TimeSampler(every)
    return [t for t, _ in video.iter_av_frames(path) if sampler.take(t)]


def bench_speed(path: Path, repeats: int) -> dict:
    times = _pair_times(path)
    n = sum(1 for _ in video.iter_av_frames(path))

    def ours():
        for _ in dense.pair_masks(_stream(path), times, subtractor=GasSubtractor(), lead_in_s=1.0):
            pass

    def mog2():
        model = cv2.createBackgroundSubtractorMOG2(detectShadows=False)
        for _, frame in _stream(path):
            model.apply(frame)

    def decode():
        for _ in _stream(path):
            pass

    runs = {"ours": [], "mog2": [], "decode_only": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("mog2", mog2), ("decode_only", decode)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
    info = video.probe(path)
    out = {"video": path.name, "size": f"{info.width}x{info.height}", "codec": info.codec, "frames": n,
           "pairs": len(times), "repeats": repeats}
    for name, rs in runs.items():
        wall = min(w for w, _ in rs)
        out[name] = {"fps": _r(n / wall, 1), "ms_per_frame": _r(1000 * wall / n, 3),
                     "cpu_ms_per_frame": _r(1000 * min(c for _, c in rs) / n, 3)}
    out["ratio_ours_over_mog2_fps"] = _r(out["ours"]["fps"] / out["mog2"]["fps"], 3)
    out["target_fps"] = TARGETS.get(out["size"])
    out["meets_target"] = out["target_fps"] is not None and out["ours"]["fps"] >= out["target_fps"]
    return out


def _synth_video(out: Path) -> Path:
    rig = SynthRig(seed=0, size=(640, 512), contrast=16.0)
    path = out / "synth640.mp4"
    video.write_video(path, (rig.thermal(k / rig.thermal_fps)[0] for k in range(300)), fps=rig.thermal_fps)
    return path


# ----------------------------------------------------------------------------------------------
# the README's workflow through the CLI
# ----------------------------------------------------------------------------------------------
def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    return result.output


def _workspace(root: Path, video_path: Path, *preannotate_args) -> Workspace:
    _cli("init", root)
    _cli("add", root, "--thermal", video_path, "--scene", "other")
    _cli("extract", root, "--every", "0.5")
    _cli("preannotate", root, *preannotate_args)
    return Workspace(root)


def _draft(ws: Workspace, row) -> np.ndarray:
    return labelme_format.rasterize(labelme_format.read(review.label_path(ws, row))) == 1


def bench_simgas_workflow(folder: Path, work: Path) -> dict:
    rows = []
    for v in sorted(folder.glob("simgasvid*.mp4")):
        name = v.stem.replace("simgasvid", "")
        truth = {round(t, 6): img.mean(axis=2) > 20 for t, img in video.iter_frames(folder / f"smoke_only{name}.mp4")}
        frames = list(video.iter_frames(v, gray=True))
        lead = sum(1 for t, _ in frames if t < 1.0)
        cm_dense = np.zeros((2, 2), np.int64)
        for (t, _), m in zip(frames, gas_masks([f for _, f in frames], lead_in=lead)):
            cm_dense += confusion(truth[round(t, 6)], m)
        ws = _workspace(work / f"simgas{name}", v)
        cm = np.zeros((2, 2), np.int64)
        pairs = list(ws.read_index().pairs.values())
        for row in pairs:
            t = min(truth, key=lambda k: abs(k - float(row["t_thermal"])))
            cm += confusion(truth[t], _draft(ws, row))
        d, s = scores(cm_dense)["gas"]["iou"], scores(cm)["gas"]["iou"]
        rows.append({"video": v.name, "pairs": len(pairs), "frames": len(frames), "dense_iou": _r(d),
                     "cli_pairs_iou": _r(s), "difference": _r(s - d)})
        print(f"  {v.name:<22} pairs {len(pairs):>3}  CLI drafts IoU {s:.4f}  every frame {d:.4f}  ({s - d:+.4f})",
              flush=True)
    return {"per_video": rows, "mean_cli_pairs_iou": _r(np.mean([r["cli_pairs_iou"] for r in rows])),
            "mean_dense_iou": _r(np.mean([r["dense_iou"] for r in rows])),
            "max_abs_difference": _r(max(abs(r["difference"]) for r in rows)),
            "meets_target": all(abs(r["difference"]) <= 0.02 for r in rows)}


def bench_iod_workflow(folder: Path, work: Path) -> dict:
    avi = folder / "001_wild_static_vague.avi"
    boxes = {int(b[0]): b[1:] for b in json.loads((folder / "001_wild_static_vague.boxes.json").read_text())["boxes"]}
    times = [t for t, _ in video.iter_av_frames(avi)]
    out = {}
    for preset in ("extent", "mask"):
        ws = _workspace(work / f"iod_{preset}", avi, "--preset", preset)
        ious = []
        for row in ws.read_index().pairs.values():
            frame_no = int(np.argmin([abs(t - float(row["t_thermal"])) for t in times])) + 1
            if frame_no not in boxes:
                continue
            x, y, w, h = mask_bbox(_draft(ws, row))
            ious.append(box_iou((x, y, x + w, y + h), boxes[frame_no]))
        ious = np.array(ious)
        out[preset] = {"pairs_with_box": len(ious), "hit_rate_box_iou_gt_0.3": _r((ious > 0.3).mean()),
                       "mean_box_iou": _r(ious.mean())}
        print(f"  IOD-Video --preset {preset}: {len(ious)} pairs, box IoU > 0.3 in "
              f"{out[preset]['hit_rate_box_iou_gt_0.3']:.1%}", flush=True)
    out["meets_target"] = out["extent"]["hit_rate_box_iou_gt_0.3"] >= 0.9
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="speed only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "preannotate.json")
    args = parser.parse_args(argv)
    result = {"tool": f"gasdb-tools {__version__}", "python": platform.python_version(), "opencv": cv2.__version__,
              "numpy": np.__version__, "cpus": os.cpu_count(), "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="gasdb-preannotate-") as tmp:
        work = Path(tmp)
        videos = []
        if (SHARED / "simgas").is_dir():
            videos.append(SHARED / "simgas" / "simgasvid3.mp4")
        videos.append(_synth_video(work))
        result["speed"] = []
        for v in videos:
            print(f"speed: {v.name}, best of {args.repeats} ...", flush=True)
            s = bench_speed(v, args.repeats)
            result["speed"].append(s)
            print(f"  {s['size']}: ours {s['ours']['fps']} fps, MOG2 {s['mog2']['fps']} fps, decoding alone "
                  f"{s['decode_only']['fps']} fps; ratio {s['ratio_ours_over_mog2_fps']}; target "
                  f"{s['target_fps']}: {'met' if s['meets_target'] else 'NOT met'}", flush=True)
        if not args.quick:
            if (SHARED / "simgas").is_dir():
                print("SimGas through the CLI (extract --every 0.5) ...", flush=True)
                result["simgas_workflow"] = bench_simgas_workflow(SHARED / "simgas", work)
            if (SHARED / "iod_video").is_dir():
                print("IOD-Video through the CLI (extract --every 0.5) ...", flush=True)
                result["iod_workflow"] = bench_iod_workflow(SHARED / "iod_video", work)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
