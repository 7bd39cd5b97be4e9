"""Benchmark how the per-recording stages scale: jobs, a Dask cluster, long recordings, many pairs.

Three parts (each can be skipped):

* **throughput** -- ``extract``, ``enhance`` and ``preannotate`` over 4 simulated recordings of
  equal length (320×256, offsets given, a pair every 0.1 s), with ``--jobs 1``, ``--jobs 2`` and
  a local Dask cluster (``dask scheduler`` + two ``dask worker --nthreads 1`` processes started
  here, after the local runs: idle, they take about 9 % of a core, which would tax two jobs and
  not one). Pairs/s, the speed-up over one job, and the sha256 of every output file and of the
  index, which must be identical for the three (LabelMe documents with the workspace's path
  replaced), with the CPU seconds each recording took where it ran (the summary's
  ``cpu_seconds``): with one job, a recording's wall time on a free core; their sum, the work.
  ``cores_busy``: CPU seconds over wall seconds (``--jobs 1`` keeps one core busy: OpenCV, the
  restoration's bands and the video decoder are held to one thread).
  One and two jobs alternate over ``--rounds`` rounds (3 by default), then the cluster runs as
  many; the speed-ups are ratios of median wall times, and every run's outputs must hash alike.
  Target: ``--jobs 2`` >= 1.8× ``--jobs 1`` for enhance and preannotate (on 2 quiet cores).
* **memory** -- peak RSS (``ru_maxrss`` of a fresh process) of ``extract`` and ``preannotate`` on
  a 1-minute recording and on a 24-minute one (the 1-minute simulated clip looped 24 times,
  remuxed without re-encoding; 160×128). Extract runs twice: every frame with the offset
  estimated (the one-pass route), and a pair every 0.5 s with the offset given; preannotate runs
  on both (a draft for every frame: 36,000 documents at 24 minutes). Target: 24 minutes <= 1.2×
  1 minute.
* **pairs** -- time and CPU time of ``extract`` (every frame), ``enhance``, ``preannotate`` and
  ``gasdb status`` with one job for 100, 1,000 and 10,000 pairs (10 thermal-only recordings of
  64×48, 10 fps). The cost must grow linearly: the CPU time per pair at 10,000 is reported against
  the one at 1,000 (CPU time: the steadier figure on a shared machine).

Run::

    .venv/bin/python benchmarks/bench_scale.py                 # all parts (about 15-25 min on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --quick         # smaller: 2 x 40 pairs, 1 vs 4 min, up to 1,000 pairs
    .venv/bin/python benchmarks/bench_scale.py --only throughput

Writes ``benchmarks/results/scale.json`` (machine, load averages, every timing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
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

from _machine import cpu_model  # noqa: E402  (benchmarks/_machine.py, beside this script)
from gasdb_tools import __version__  # noqa: E402
from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.recordings import add_recording  # noqa: E402
from gasdb_tools.synth import SynthRig, write_recording  # noqa: E402
from gasdb_tools.video import write_video  # noqa: E402
from gasdb_tools.workspace import Workspace  # noqa: E402

SV = 31
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cpu() -> float:
    """CPU seconds of this process (the stages run in it with one job; threads included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _hashes(ws: Workspace, folder: str) -> str:
    """One sha256 over every output file under ``folder`` and the index (workspace path replaced)."""
    root = str(ws.root.resolve()).encode()
    h = hashlib.sha256()
    paths = sorted(p for p in (ws.root / folder).rglob("*") if p.is_file() and ".history" not in p.parts
                   and not p.name.endswith(".tmp"))
    for path in paths + [ws.root / Workspace.PAIRS, ws.root / Workspace.RECORDINGS]:
        h.update(str(path.relative_to(ws.root)).encode())
        h.update(path.read_bytes().replace(root, b"<WS>"))
    return h.hexdigest()


# -- throughput ----------------------------------------------------------------------------------
def _recordings(folder: Path, n: int, seconds: float, size) -> list[tuple[str, Path, float]]:
    out = []
    for i in range(n):
        rig = SynthRig(seed=10 + i, size=size, rgb_fps=25.0, thermal_fps=25.0, offset_s=0.2 + 0.1 * i,
                       polarity="absorbing" if i % 2 else "emitting")
        write_recording(folder / f"r{i}", rig, seconds)
        out.append((f"r{i}", folder / f"r{i}", rig.offset_s))
    return out


class Cluster:
    """``dask scheduler`` and two ``dask worker`` processes on localhost."""

    def __init__(self, folder: Path):
        dask_cli = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
        if dask_cli is None:
            raise SystemExit("the `dask` command is missing: pip install 'gasdb-tools[cluster]'")
        info = folder / "scheduler.json"
        self.procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                        "--scheduler-file", str(info)], env=ENV, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)]
        deadline = time.monotonic() + 60
        while not info.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.address = json.loads(info.read_text())["address"]
        for k in range(2):
            self.procs.append(subprocess.Popen([dask_cli, "worker", self.address, "--nthreads", "1", "--nworkers", "1",
                                                "--no-dashboard", "--host", "127.0.0.1"], env=ENV, cwd=folder,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def throughput(tmp: Path, *, recordings: int, seconds: float, size, rounds: int = 3) -> dict:
    from gasdb_tools.enhance import enhance_workspace
    from gasdb_tools.extract import extract_workspace
    from gasdb_tools.preannotate import preannotate_workspace

    print(f"throughput: {recordings} recordings of {seconds:g} s, {size[0]}x{size[1]}; "
          f"one and two jobs alternated over {rounds} rounds", flush=True)
    recs = _recordings(tmp / "videos", recordings, seconds, size)
    base = Workspace.init(tmp / "base")
    for rec_id, folder, offset in recs:
        add_recording(base, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="other",
                      recording_id=rec_id, offset_s=offset)
    stages = {
        "extract": (lambda ws, **kw: extract_workspace(ws, every=0.1, **kw), "frames", None),
        "enhance": (lambda ws, **kw: enhance_workspace(ws, sv=SV, **kw), "enhanced", "extract"),
        "preannotate": (lambda ws, **kw: _preannotate(preannotate_workspace, ws, **kw), "labels", "extract"),
    }
    out = {"recordings": recordings, "seconds": seconds, "size": list(size), "rounds": rounds, "stages": {}}
    inputs = {None: base.root}
    runs: dict[str, dict[str, list]] = {stage: {} for stage in stages}

    def measure(stage: str, name: str, kw: dict, k: int) -> None:
        run, folder, needs = stages[stage]
        ws_root = tmp / f"{stage}-{name}-{k}"
        shutil.copytree(inputs[needs], ws_root)
        ws = Workspace.open(ws_root)
        load = _load()
        t0, c0 = time.perf_counter(), _cpu()
        report = run(ws, **kw)
        wall, used = time.perf_counter() - t0, _cpu() - c0
        if report["failed"]:
            raise SystemExit(f"{stage} {name} failed: {report['recordings']}")
        pairs = len(ws.read_index().pairs)
        cpu = [r.get("cpu_seconds") or 0.0 for r in report["recordings"]]
        if kw.get("jobs", 1) > 1:  # the workers' CPU (forked by the fork server: not our children)
            used += sum(cpu)
        runs[stage].setdefault(name, []).append({
            "seconds": round(wall, 3), "pairs": pairs, "pairs_per_s": round(pairs / wall, 2), "load_before": load,
            "hash": _hashes(ws, folder),
            # CPU time of each recording where it ran (its threads included): on a shared machine,
            # the steadier figure (sum: the work; one job: its wall on a free core)
            "cpu_seconds_per_recording": [round(c, 3) for c in cpu], "cpu_seconds": round(sum(cpu), 3),
            # CPU of this process (threads included) plus, with jobs, its workers' recordings, over
            # the wall time: the cores the run kept busy (--jobs 1 should keep at most one)
            "cores_busy": None if "scheduler" in kw else round(used / wall, 2)})
        busy = "" if "scheduler" in kw else f", {used / wall:.2f} cores busy"
        print(f"  {stage:12s} {name:6s} {pairs} pairs in {wall:7.2f} s ({pairs / wall:6.1f} pairs/s), "
              f"{sum(cpu):.2f} CPU s in the recordings{busy}, load {load[0]}", flush=True)
        if name == "jobs1" and k == 0:
            inputs[stage] = ws_root
        else:
            shutil.rmtree(ws_root)

    # one job and two jobs first, alternated round by round so that both meet the machine's
    # passing states alike (the first round also pays the first calls' costs), with no cluster
    # running: its idle scheduler and workers take about 9 % of a core (heartbeats), which a run
    # on both cores would pay and a run on one would not
    for stage in stages:
        for k in range(rounds):
            for name, kw in (("jobs1", {"jobs": 1}), ("jobs2", {"jobs": 2})):
                measure(stage, name, kw, k)
    cluster = Cluster(tmp)
    try:
        for stage in stages:
            for k in range(rounds):
                measure(stage, "dask2", {"scheduler": cluster.address}, k)
    finally:
        cluster.close()
    for stage, by_name in runs.items():
        row = {}
        for name, done in by_name.items():
            seconds = [r["seconds"] for r in done]
            row[name] = {"median_seconds": statistics.median(seconds), "seconds": seconds,
                         "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in done),
                         "pairs": done[0]["pairs"], "rounds": done}
        for name in ("jobs2", "dask2"):
            row[name]["speedup_vs_jobs1"] = round(row["jobs1"]["median_seconds"] / row[name]["median_seconds"], 3)
        row["identical_outputs"] = len({r["hash"] for done in by_name.values() for r in done}) == 1
        out["stages"][stage] = row
        print(f"  {stage:12s} median of {rounds}: jobs1 {row['jobs1']['median_seconds']:.2f} s, jobs2 "
              f"{row['jobs2']['median_seconds']:.2f} s ({row['jobs2']['speedup_vs_jobs1']:.2f}x), dask "
              f"{row['dask2']['median_seconds']:.2f} s ({row['dask2']['speedup_vs_jobs1']:.2f}x); every run's "
              f"outputs identical: {row['identical_outputs']}", flush=True)
    return out


def _preannotate(fn, ws, scheduler=None, **kw):
    from gasdb_tools.stages import use_scheduler

    with use_scheduler(scheduler):
        return fn(ws, lead_in_s=0.5, **kw)


# -- memory --------------------------------------------------------------------------------------
_RSS_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from gasdb_tools.workspace import Workspace
ws = Workspace.open({ws!r})
t0 = time.perf_counter()
if {stage!r} == "extract":
    from gasdb_tools.extract import extract_workspace
    r = extract_workspace(ws, **{kwargs!r})
else:
    from gasdb_tools.preannotate import preannotate_workspace
    r = preannotate_workspace(ws, **{kwargs!r})
assert not r["failed"], r["recordings"]
print(json.dumps({{"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "pairs": len(ws.read_index().pairs)}}))
"""


def _child(stage: str, ws: Path, kwargs: dict) -> dict:
    code = _RSS_CHILD.format(root=str(ROOT), ws=str(ws), stage=stage, kwargs=kwargs)
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{stage} failed on {ws}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(tmp: Path, *, minutes: tuple[int, int], size) -> dict:
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    print(f"memory: {minutes[0]} vs {minutes[1]} minutes, {size[0]}x{size[1]}", flush=True)
    one = tmp / "m1"
    rig = SynthRig(seed=3, size=size, rgb_fps=25.0, thermal_fps=25.0, offset_s=0.0)
    write_recording(one, rig, 60.0 * minutes[0])
    clips = {minutes[0]: one}
    long = tmp / f"m{minutes[1]}"
    long.mkdir()
    loops = minutes[1] // minutes[0]
    for name in ("rgb.mp4", "thermal.mp4"):  # the clip looped, remuxed (same packets, continuous timestamps)
        subprocess.run([ffmpeg, "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(one / name), "-c", "copy",
                        str(long / name)], check=True)
    clips[minutes[1]] = long
    out = {"size": list(size), "minutes": list(minutes), "runs": {}}
    for m, folder in clips.items():
        for label, kwargs, stage, given in (("extract, every frame, offset estimated", {"min_confidence": 0.0},
                                             "extract", None),
                                            ("extract, a pair every 0.5 s, offset given", {"every": 0.5}, "extract",
                                             0.0),
                                            ("preannotate (on the 0.5 s pairs)", {"lead_in_s": 1.0}, "preannotate",
                                             0.0),
                                            ("preannotate (on every frame's pairs)", {"lead_in_s": 1.0}, "preannotate",
                                             None)):
            ws_root = tmp / f"ws-{m}-{'dense' if given is None else 'sparse'}"
            if stage == "extract":
                shutil.rmtree(ws_root, ignore_errors=True)
                ws = Workspace.init(ws_root)
                add_recording(ws, rgb=folder / "rgb.mp4", thermal=folder / "thermal.mp4", scene="other",
                              recording_id="rec", offset_s=given)
            load = _load()
            r = _child(stage, ws_root, kwargs)
            r["load_before"] = load
            out["runs"].setdefault(label, {})[f"{m} min"] = r
            print(f"  {label:45s} {m:3d} min: {r['pairs']:6d} pairs, peak RSS {r['rss_mib']:7.1f} MiB, "
                  f"{r['seconds']:7.1f} s, load {load[0]}", flush=True)
        shutil.rmtree(tmp / f"ws-{m}-dense", ignore_errors=True)
    for label, runs in out["runs"].items():
        a, b = runs[f"{minutes[0]} min"]["rss_mib"], runs[f"{minutes[1]} min"]["rss_mib"]
        runs["ratio"] = round(b / a, 3)
        print(f"  {label:45s} peak RSS {minutes[1]} min / {minutes[0]} min = {b / a:.3f} (target <= 1.2)")
    return out


# -- pairs ---------------------------------------------------------------------------------------
def _blob_video(path: Path, frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:64]

    def gen():
        for k in range(frames):
            cx, cy = 32 + 20 * np.sin(k / 15 + seed), 24 + 12 * np.cos(k / 23)
            blob = 60 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 40.0) * (k > 20)
            yield np.clip(90 + blob + rng.normal(0, 2, (48, 64)), 0, 255).astype(np.uint8)

    write_video(path, gen(), fps=10)


def pairs_scaling(tmp: Path, *, counts) -> dict:
    from gasdb_tools.enhance import enhance_workspace
    from gasdb_tools.extract import extract_workspace
    from gasdb_tools.preannotate import preannotate_workspace
    from gasdb_tools.status import workspace_status

    print(f"pairs: {', '.join(map(str, counts))}", flush=True)
    out = {"recordings": 10, "size": [64, 48], "fps": 10, "counts": {}}
    for n in counts:
        ws = Workspace.init(tmp / f"p{n}")
        for r in range(10):
            video = tmp / f"v{n}" / f"r{r}.mp4"
            _blob_video(video, n // 10, seed=r)
            add_recording(ws, thermal=video, scene="other", recording_id=f"r{r}")
        row = {"load_before": _load()}
        for stage, run in (("extract", lambda: extract_workspace(ws)),
                           ("enhance", lambda: enhance_workspace(ws, sv=15)),
                           ("preannotate", lambda: preannotate_workspace(ws, lead_in_s=1.0)),
                           ("status", lambda: workspace_status(ws))):
            t0, c0 = time.perf_counter(), _cpu()
            report = run()
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            if isinstance(report, dict) and report.get("failed"):
                raise SystemExit(f"{stage} failed at {n} pairs")
            row[stage] = {"seconds": round(wall, 3), "ms_per_pair": round(1000 * wall / n, 3),
                          "cpu_seconds": round(cpu, 3), "cpu_ms_per_pair": round(1000 * cpu / n, 3)}
        got = len(ws.read_index().pairs)
        row["pairs"] = got
        out["counts"][str(n)] = row
        print(f"  {n:6d} pairs ({got}): " + ", ".join(f"{s} {row[s]['seconds']:.2f} s ({row[s]['cpu_ms_per_pair']:.2f} CPU "
                                                    f"ms/pair)" for s in ("extract", "enhance", "preannotate", "status")),
              flush=True)
        shutil.rmtree(tmp / f"p{n}", ignore_errors=True)
        shutil.rmtree(tmp / f"v{n}", ignore_errors=True)
    keys = [str(n) for n in counts]
    if len(keys) >= 2:
        lo, hi = keys[-2], keys[-1]
        for key in ("ms_per_pair", "cpu_ms_per_pair"):
            out[f"ratio_{key}"] = {s: round(out["counts"][hi][s][key] / out["counts"][lo][s][key], 3)
                                   for s in ("extract", "enhance", "preannotate", "status")}
        print(f"  CPU time per pair at {hi} / at {lo}: {out['ratio_cpu_ms_per_pair']} (linear: about 1); wall: "
              f"{out['ratio_ms_per_pair']}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("throughput", "memory", "pairs"), action="append")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: rounds of one and two jobs (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args(argv)
    parts = args.only or ["throughput", "memory", "pairs"]
    result = {"benchmark": "scale: jobs, Dask cluster, long recordings, many pairs", "gasdb_tools": __version__,
              "command": "python benchmarks/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "cpu_model": cpu_model(), "load_avg_at_start": _load()}}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        tmp = Path(tmp)
        for sub in ("t", "m", "p"):
            (tmp / sub).mkdir()
        runs = {"throughput": lambda: throughput(tmp / "t", recordings=4, seconds=4.0 if args.quick else 8.0,
                                                 size=(320, 256), rounds=args.rounds),
                "memory": lambda: memory(tmp / "m", minutes=(1, 4) if args.quick else (1, 24), size=(160, 128)),
                "pairs": lambda: pairs_scaling(tmp / "p", counts=(100, 1000) if args.quick else (100, 1000, 10000))}
        for part in ("throughput", "memory", "pairs"):
            if part in parts:
                load = _load()
                result[part] = {**runs[part](), "command": result["command"], "load_avg_at_start": load,
                                "load_avg_at_end": _load()}
    result["machine"]["load_avg_at_end"] = _load()
    previous = {}
    if args.out.is_file() and args.only:
        previous = json.loads(args.out.read_text())
    write_json(args.out, {**previous, **result})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
