"""The stage runner: jobs, threads inside a recording and a Dask cluster give byte-identical outputs;
a worker killed mid-task has its recording run again; a killed client leaves a valid index and a
rerun resumes; progress reports with totals (ETA)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools import enhance as enhance_mod
from gasdb_tools import progress, stages
from gasdb_tools.align import align_workspace
from gasdb_tools.calibration import Calibration, calibration_path, write_calibration
from gasdb_tools.cli import main
from gasdb_tools.enhance import enhance_workspace
from gasdb_tools.extract import extract_workspace
from gasdb_tools.preannotate import preannotate_workspace
from gasdb_tools.recordings import add_recording
from gasdb_tools.stages import IndexOps, run_stage
from gasdb_tools.synth import synthesize
from gasdb_tools.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SIZE = (192, 160)
SV = 31
RECORDINGS = 4


# -- material ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Four simulated recordings registered (offsets given): the input of extract."""
    base = tmp_path_factory.mktemp("stages")
    listing = synthesize(base / "videos", recordings=RECORDINGS, seconds=3.0, seed=5, size=SIZE)
    ws = Workspace.init(base / "registered")
    for r in listing:
        add_recording(ws, rgb=base / "videos" / r["dir"] / "rgb.mp4", thermal=base / "videos" / r["dir"] / "thermal.mp4",
                      scene=r["scene"], recording_id=r["id"], offset_s=r["truth"]["offset_s"])
    return ws


@pytest.fixture(scope="module")
def template(registered, tmp_path_factory):
    """The recordings extracted and aligned: the input of enhance and preannotate. Tests copy it."""
    ws = _copy(registered, tmp_path_factory.mktemp("template") / "ws")
    assert extract_workspace(ws, every=0.1, jobs=1)["failed"] == 0
    rig = ws.recordings()[0].get("rig") or ws.settings.get("rig") or "default"
    write_calibration(calibration_path(ws, rig), Calibration(
        rig=rig, model="homography", matrix=np.array([[1.02, 0.01, 3.0], [-0.01, 0.98, -2.0], [0, 0, 1.0]]),
        rgb_size=SIZE, thermal_size=SIZE, score=0.6, consistent=True, residuals={}, source_frames=[],
        created="2026-01-01T00:00:00Z", qa_figure=""))
    assert align_workspace(ws)["failed"] == 0
    return ws


def _copy(template: Workspace, dst: Path) -> Workspace:
    shutil.copytree(template.root, dst)
    return Workspace.open(dst)


def _hashes(ws: Workspace, *folders: str, index: bool = True) -> dict:
    """sha256 of every output file under ``folders`` and of the index, with the workspace's own path
    replaced (LabelMe documents name their image by absolute path)."""
    out = {}
    root = str(ws.root.resolve())
    names = [ws.root / f for f in folders] + ([ws.root / Workspace.PAIRS, ws.root / Workspace.RECORDINGS] if index
                                              else [])
    for top in names:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            if ".history" in path.parts or path.name.endswith(".tmp"):
                continue
            data = path.read_bytes().replace(root.encode(), b"<WS>")
            out[str(path.relative_to(ws.root))] = hashlib.sha256(data).hexdigest()
    return out


def _stage(name: str):
    if name == "extract":
        return lambda ws, **kw: extract_workspace(ws, every=0.1, **kw), "frames"
    if name == "enhance":
        return lambda ws, **kw: enhance_workspace(ws, sv=SV, **kw), "enhanced"
    return lambda ws, **kw: preannotate_workspace(ws, lead_in_s=0.3, **kw), "labels"


@pytest.fixture(scope="module")
def reference(registered, template, tmp_path_factory):
    """Each stage's outputs with one job, in this process."""
    out = {}
    for name in ("extract", "enhance", "preannotate"):
        run, folder = _stage(name)
        ws = _copy(registered if name == "extract" else template, tmp_path_factory.mktemp("ref") / name)
        report = run(ws, jobs=1)
        assert report["failed"] == 0 and report["done"] == RECORDINGS
        out[name] = _hashes(ws, folder)
        assert any(k.startswith(folder) for k in out[name])
    return out


# -- jobs: byte-identical ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["extract", "enhance", "preannotate"])
def test_two_jobs_give_byte_identical_outputs(registered, template, reference, tmp_path, name):
    run, folder = _stage(name)
    ws = _copy(registered if name == "extract" else template, tmp_path / "ws")
    report = run(ws, jobs=2)
    assert report["jobs"] == 2 and report["done"] == RECORDINGS and report["failed"] == 0
    assert [r["id"] for r in report["recordings"]] == [r["id"] for r in ws.recordings()]
    assert all(r["attempts"] == 1 for r in report["recordings"])
    assert _hashes(ws, folder) == reference[name]


def test_threads_inside_one_recording_give_byte_identical_outputs(template, tmp_path):
    """One recording and two jobs: its frames are enhanced and aligned in two threads."""
    rec = template.recordings()[0]["id"]
    one, two = _copy(template, tmp_path / "one"), _copy(template, tmp_path / "two")
    for ws, jobs in ((one, 1), (two, 2)):
        assert align_workspace(ws, recordings=[rec], force=True, jobs=jobs)["aligned"] > 20
        assert enhance_workspace(ws, sv=SV, recordings=[rec], jobs=jobs)["failed"] == 0
    assert _hashes(one, "aligned", "enhanced") == _hashes(two, "aligned", "enhanced")


def test_map_ordered_keeps_order_and_raises_the_first_error():
    assert list(stages.map_ordered(lambda x: x * x, range(50), 3)) == [x * x for x in range(50)]

    def boom(x):
        if x == 7:
            raise ValueError("seven")
        return x

    got = []
    with pytest.raises(ValueError, match="seven"):
        for x in stages.map_ordered(boom, range(20), 2):
            got.append(x)
    assert got == list(range(7))


# -- workers that die ------------------------------------------------------------------------------
def _workers(pid: int) -> list[int]:
    """Process ids of ``pid``'s multiprocessing workers: its spawned children, or the children of
    its fork server (read from /proc)."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                procs[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes())
            except (OSError, IndexError, ValueError):
                continue
    servers = {p for p, (ppid, cmd) in procs.items() if ppid == pid and b"forkserver" in cmd}
    return [p for p, (ppid, cmd) in procs.items()
            if ppid in servers or (ppid == pid and b"spawn_main" in cmd)]


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b"Z"


def _kill_mid_recording(ws: Workspace, folder: str, kill, *, timeout: float = 120.0) -> str | None:
    """Wait until some recording has part of its outputs, then call ``kill()``; returns that recording."""
    totals = {r["id"]: len(ws.pairs(r["id"])) for r in ws.recordings()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec, total in totals.items():
            n = len(list((ws.root / folder / rec).glob("*.png")))
            if 2 <= n < total - 2 and kill():
                return rec
        time.sleep(0.01)
    return None


def test_a_killed_worker_process_has_its_recording_run_again(template, reference, tmp_path):
    ws = _copy(template, tmp_path / "ws")
    report = {}
    runner = threading.Thread(target=lambda: report.update(enhance_workspace(ws, sv=SV, jobs=2)))
    runner.start()

    def kill():
        pids = _workers(os.getpid())
        if len(pids) < 2:
            return False
        os.kill(pids[0], signal.SIGKILL)
        return True

    victim = _kill_mid_recording(ws, "enhanced", kill)
    runner.join(300)
    assert victim is not None, "no recording was caught half-way"
    assert report["done"] == RECORDINGS and report["failed"] == 0
    assert sorted(r["id"] for r in report["recordings"]) == sorted(r["id"] for r in ws.recordings())
    assert max(r["attempts"] for r in report["recordings"]) == 2  # the killed ones ran again, once
    assert _hashes(ws, "enhanced") == reference["enhance"]


def _dies(ws, rec, sink):
    os.kill(os.getpid(), signal.SIGKILL)


def _fine(ws, rec, sink):
    sink.commit(IndexOps(recording={rec: {"note": "ok"}}))
    return {"value": rec}


def test_a_recording_whose_worker_always_dies_fails_after_three_runs(template, tmp_path):
    ws = _copy(template, tmp_path / "ws")
    ids = [r["id"] for r in ws.recordings()]
    report = run_stage(ws, "probe", _dies, recordings=ids[:2], jobs=2)
    assert report["failed"] == 2 and report["done"] == 0
    for r in report["recordings"]:
        assert "died" in r["error"] and "3 time(s)" in r["error"] and r["attempts"] == 3
    assert ws.recording(ids[0])["probe_error"].startswith("the worker running it died")
    ok = run_stage(ws, "probe", _fine, recordings=ids[:2], jobs=2)
    assert ok["done"] == 2 and ws.recording(ids[0])["probe_error"] == "" and ws.recording(ids[0])["note"] == "ok"


def test_a_killed_run_leaves_a_valid_index_and_the_rerun_resumes(template, reference, tmp_path):
    ws = _copy(template, tmp_path / "ws")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gasdb_tools", "-q", "enhance", str(ws.root), "--sv", str(SV),
                             "--jobs", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    workers = []

    def kill():
        workers.extend(_workers(proc.pid))
        proc.send_signal(signal.SIGKILL)
        return True

    victim = _kill_mid_recording(ws, "enhanced", kill)
    proc.wait(60)
    assert victim is not None and proc.returncode == -signal.SIGKILL
    assert workers
    deadline = time.monotonic() + 30  # its workers notice and exit: no orphans left waiting for work
    while any(Path(f"/proc/{pid}").exists() and b"Z" not in _state(pid) for pid in workers) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and b"Z" not in _state(pid)]
    index = Workspace.open(ws.root).read_index()  # valid: every row checked as it is read
    before = sum(1 for p in index.pairs.values() if p.get("enhance_digest"))
    rerun = enhance_workspace(ws, sv=SV)
    assert rerun["done"] == RECORDINGS
    assert sum(r["enhanced"] for r in rerun["recordings"]) == len(index.pairs) - before
    assert _hashes(ws, "enhanced") == reference["enhance"]


def test_an_interrupted_recording_resumes_inside_itself(template, tmp_path, monkeypatch):
    """Finished frames of a recording are committed every few frames: a rerun does only the rest."""
    ws = _copy(template, tmp_path / "ws")
    rec = ws.recordings()[0]["id"]
    total = len(ws.pairs(rec))
    monkeypatch.setattr(enhance_mod, "_FLUSH_EVERY", 5)
    monkeypatch.setattr(stages, "INDEX_TIME_SHARE", 1.0)  # every commit reaches the index at once
    real, commit, flush = enhance_mod.enhance_frame, stages.Sink.commit, stages.Committer.flush
    state = {"n": 0, "killed": False}

    def dies_after_12(*args, **kwargs):
        state["n"] += 1
        if state["n"] > 12:
            state["killed"] = True  # as SIGKILL would: nothing is committed from here on
            raise SystemExit("killed")
        return real(*args, **kwargs)

    def commit_until_killed(self, ops=None, **kwargs):
        return None if state["killed"] else commit(self, ops, **kwargs)

    def flush_until_killed(self):
        return None if state["killed"] else flush(self)

    monkeypatch.setattr(enhance_mod, "enhance_frame", dies_after_12)
    monkeypatch.setattr(stages.Sink, "commit", commit_until_killed)
    monkeypatch.setattr(stages.Committer, "flush", flush_until_killed)
    with pytest.raises(SystemExit):
        enhance_workspace(ws, sv=SV, recordings=[rec])
    assert sum(1 for p in ws.pairs(rec) if p.get("enhance_digest")) == 10  # two checkpoints of 5
    monkeypatch.setattr(enhance_mod, "enhance_frame", real)
    monkeypatch.setattr(stages.Sink, "commit", commit)
    monkeypatch.setattr(stages.Committer, "flush", flush)
    rerun = enhance_workspace(ws, sv=SV, recordings=[rec])["recordings"][0]
    assert (rerun["enhanced"], rerun["skipped"]) == (total - 10, 10)


def _where(ws, rec, sink):
    return {"stages_file": stages.__file__}


def test_workers_run_the_code_of_the_path_set_at_run_time(template, tmp_path):
    """A script that puts the code on sys.path at run time (no PYTHONPATH) gets workers running
    that same code, not another installed copy (the fork server imports before it is told the path)."""
    ws = _copy(template, tmp_path / "ws")
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT)!r})\n"
            "from gasdb_tools.stages import run_stage\nfrom gasdb_tools.workspace import Workspace\n"
            "from tests.test_stages import _where\n"
            f"r = run_stage(Workspace.open({str(ws.root)!r}), 'where', _where, jobs=2)\n"
            "import gasdb_tools.stages as s\n"
            "print(json.dumps([s.__file__] + [x['stages_file'] for x in r['recordings']]))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    files = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(files) == RECORDINGS + 1 and len(set(files)) == 1 and files[0].startswith(str(ROOT))


def test_commits_are_batched_to_keep_the_index_under_a_tenth_of_the_time(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with ws.transaction() as index:
        index.recordings["r"] = {"id": "r", "rgb": "", "thermal": "r.mp4", "scene": "other"}
    committer = stages.Committer(ws)
    for k in range(2000):
        committer.add(IndexOps(recording={"r": {"n": str(k)}}))
    assert committer.transactions < 200 and ws.recording("r")["n"] != "1999"  # not every commit: batched
    committer.flush()
    assert ws.recording("r")["n"] == "1999"
    committer.add(IndexOps(drop_pairs_of={"r": None}))  # applied at once: files are deleted after it
    assert not committer.pending


# -- progress -------------------------------------------------------------------------------------
def test_progress_reports_totals_from_workers_and_shows_an_eta(monkeypatch, capsys):
    seen = []
    progress.set_reporter(lambda desc, n, total: seen.append((desc, n, total)))
    try:
        assert list(progress.progress(range(5), desc="align r1")) == list(range(5))
    finally:
        progress.set_reporter(None)
    assert seen[0] == ("align r1", 0, 5) and seen[-1] == ("align r1", 5, 5)
    progress.set_enabled(True)
    try:
        bar = progress.progress(range(3), total=3, desc="x")
        assert "{remaining}" in bar.bar_format  # the ETA
        list(bar)
        board = progress.Board(2, "enhance")
        board.report("r1", "enhance r1", 3, 10)
        board.report("r1", "enhance r1", 6, 10)
        assert board.bars["r1"].n == 6 and board.bars["r1"].total == 10
        board.finish("r1")
        assert board.main.n == 1 and not board.bars
        board.close()
    finally:
        progress.set_enabled(None)


# -- a Dask cluster --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes (one thread each) on localhost."""
    pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install 'gasdb-tools[cluster]')")
    dask_cli = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    if dask_cli is None:
        pytest.skip("the `dask` command is not installed")
    folder = tmp_path_factory.mktemp("dask")
    info = folder / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(folder / "scheduler.log", "wb"))]
    try:
        deadline = time.monotonic() + 60
        while not info.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for k in range(2):
            procs.append(subprocess.Popen([dask_cli, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                           "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{k}"], env=env,
                                          cwd=folder, stdout=subprocess.DEVNULL,
                                          stderr=open(folder / f"worker{k}.log", "wb")))
        from distributed import Client

        client = Client(address, timeout="30s")
        client.wait_for_workers(2, timeout=120)
        yield address, client
        client.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.parametrize("name", ["extract", "enhance", "preannotate"])
def test_a_dask_cluster_gives_byte_identical_outputs(cluster, registered, template, reference, tmp_path, name):
    address, _ = cluster
    run, folder = _stage(name)
    ws = _copy(registered if name == "extract" else template, tmp_path / "ws")
    report = run(ws, scheduler=address) if name != "preannotate" else _with_scheduler(address, run, ws)
    assert report["scheduler"] == address and report["done"] == RECORDINGS and report["failed"] == 0
    assert _hashes(ws, folder) == reference[name]


def _with_scheduler(address, run, ws):
    with stages.use_scheduler(address):
        return run(ws)


def test_a_killed_dask_worker_has_its_recording_run_again(cluster, template, reference, tmp_path):
    address, client = cluster
    ws = _copy(template, tmp_path / "ws")
    report = {}
    runner = threading.Thread(target=lambda: report.update(enhance_workspace(ws, sv=SV, scheduler=address)))
    runner.start()

    def kill():
        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        if not busy:
            return False
        pids = client.run(os.getpid, workers=list(busy)[:1])
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        return True

    victim = _kill_mid_recording(ws, "enhanced", kill)
    runner.join(300)
    assert victim is not None, "no recording was caught half-way"
    assert report["done"] == RECORDINGS and report["failed"] == 0
    assert sorted(r["id"] for r in report["recordings"]) == sorted(r["id"] for r in ws.recordings())
    assert max(r["attempts"] for r in report["recordings"]) == 2  # run again by the scheduler, once
    assert _hashes(ws, "enhanced") == reference["enhance"]
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker


def test_a_killed_dask_client_leaves_a_valid_index_and_the_rerun_resumes(cluster, template, reference, tmp_path):
    address, client = cluster
    ws = _copy(template, tmp_path / "ws")
    env = {**os.environ, "PYTHONPATH": str(ROOT), stages.SCHEDULER_ENV: address}
    proc = subprocess.Popen([sys.executable, "-m", "gasdb_tools", "-q", "preannotate", str(ws.root), "--lead-in", "0.3"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((ws.root / "labels").rglob("*.json")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    Workspace.open(ws.root).read_index()  # valid
    time.sleep(1)  # tasks the dead client left running finish (their results go nowhere)
    rerun = _with_scheduler(address, _stage("preannotate")[0], ws)
    assert rerun["done"] == RECORDINGS and rerun["failed"] == 0
    labels = {k: v for k, v in reference["preannotate"].items() if k.startswith("labels")}
    assert _hashes(ws, "labels", index=False) == labels
    # (preannotate's rerun does not put preannotate_inputs back on drafts it finds current: pairs.csv
    # differs there; nothing reads that column, the documents carry the recipe)
    assert all(p["label"] for p in ws.pairs())


def test_cli_scheduler_option_and_unreachable_scheduler(template, tmp_path):
    ws = _copy(template, tmp_path / "ws")
    result = CliRunner().invoke(main, ["enhance", "--help"])
    assert "--scheduler" in result.output and "DASK_SCHEDULER_ADDRESS" in result.output
    pytest.importorskip("distributed", reason="Dask distributed is not installed")
    result = CliRunner().invoke(main, ["enhance", str(ws.root), "--scheduler", "tcp://127.0.0.1:9"],
                                env={stages.SCHEDULER_ENV: ""})
    assert result.exit_code == 1 and "cannot reach the Dask scheduler" in result.output
    result = CliRunner().invoke(main, ["align", str(ws.root)], env={stages.SCHEDULER_ENV: "tcp://127.0.0.1:9"})
    assert result.exit_code == 1 and "tcp://127.0.0.1:9" in result.output


def test_fork_server_preloads_the_stage_and_what_this_process_imported():
    """Workers fork from a server that imported the stage's module, PyAV for the video stages, and
    the other stage modules this process already imported (their imports are not paid per worker)."""
    import sys

    from gasdb_tools.stages import _preload

    import gasdb_tools.enhance  # noqa: F401  (imported here: preloaded for every later stage)

    names = _preload("gasdb_tools.preannotate")
    assert names[:2] == ["gasdb_tools.stages", "gasdb_tools.preannotate"] and "av" in names
    assert "gasdb_tools.enhance" in names and len(names) == len(set(names))
    assert ("av" in _preload("gasdb_tools.enhance")) == ("av" in sys.modules)  # enhance decodes no video
    assert "gasdb_tools.align" not in _preload("gasdb_tools.enhance") or "gasdb_tools.align" in sys.modules


@pytest.mark.parametrize("argv, expected", [
    (["--jobs", "2"], ["gasdb_tools.extract"]),  # two recordings on two local jobs: the server starts early
    (["--jobs", "1"], []),
    (["--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"], []),  # a cluster: no local workers
    (["--jobs", "2", "--recording", "a"], ["gasdb_tools.extract"]),  # (the selection is not looked at)
])
def test_the_command_line_starts_the_workers_fork_server_while_it_still_imports(tmp_path, monkeypatch, argv, expected):
    """``gasdb <stage> --jobs N`` (N > 1, several recordings, no scheduler) starts the fork server
    when its options are parsed, preloading the stage's module, so that the server's imports run
    beside the command's own (:func:`gasdb_tools.stages.prestart`)."""
    import gasdb_tools.cli.extract_cmd as extract_cmd

    ws = Workspace.init(tmp_path / "ws")
    with ws.transaction() as index:
        for rec in ("a", "b"):
            index.recordings[rec] = {"id": rec, "thermal": f"{rec}.mp4"}
    calls = []
    monkeypatch.setattr(stages, "prestart", lambda module=None: calls.append(module))
    monkeypatch.setattr(extract_cmd, "extract_workspace", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    CliRunner().invoke(main, ["extract", str(ws.root), *argv])
    assert calls == expected
    one = Workspace.init(tmp_path / "one")
    with one.transaction() as index:
        index.recordings["a"] = {"id": "a", "thermal": "a.mp4"}
    calls.clear()
    CliRunner().invoke(main, ["extract", str(one.root), "--jobs", "2"])
    assert calls == []  # one recording runs in the command's own process


def test_workers_get_the_longest_recordings_first(tmp_path):
    """Longest processing time first: the recordings with the most pairs are handed out first
    (ties in index order); the summary keeps the index order."""
    ws = Workspace.init(tmp_path / "ws")
    with ws.transaction() as index:
        for rec, n in (("a", 1), ("b", 3), ("c", 0), ("d", 3), ("e", 2)):
            index.recordings[rec] = {"id": rec, "thermal": f"{rec}.mp4"}
            for k in range(n):
                index.pairs[f"{rec}_{k:08d}"] = {"pair_id": f"{rec}_{k:08d}", "recording": rec}
    assert stages.largest_first(ws, ["a", "b", "c", "d", "e"]) == ["b", "d", "e", "a", "c"]
    assert stages.largest_first(ws, ["e", "a"]) == ["e", "a"]
    report = run_stage(ws, "noop", _noop_work, jobs=2)
    assert [r["id"] for r in report["recordings"]] == ["a", "b", "c", "d", "e"]


def _noop_work(ws, rec, sink):
    return {"pairs": sum(1 for _ in ws.iter_pairs(rec))}
