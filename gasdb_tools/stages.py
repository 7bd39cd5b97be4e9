"""The one stage runner: every per-recording stage (extract, calibrate, align, enhance, preannotate)
runs its recordings through :func:`run_stage`.

The runner owns what the stages share:

* **selection** -- every recording, or the ones asked for (unknown ids are an error that lists the
  known ones);
* **per-recording errors** -- a :class:`~gasdb_tools.errors.GasdbError`, ``ValueError`` or
  ``OSError`` (a full disk, a read-only folder, a permission) fails *that* recording: its message
  goes into the recording's ``<stage>_error`` column and the summary, and the other recordings
  still run; a clean run clears the column;
* **progress** on stderr (:mod:`gasdb_tools.progress`): one bar per recording, with its ETA; with
  several jobs, a bar over the recordings plus one per recording in progress, drawn by the parent
  from the workers' reports;
* **where the work runs** -- one job: in this process. ``jobs > 1``: recordings in worker
  processes on this machine (at most one per recording; jobs left over become threads *inside*
  each recording, :attr:`Sink.threads`, so one long recording still uses every core).
  ``scheduler``: recordings as tasks on a `Dask distributed <https://distributed.dask.org>`_
  cluster whose workers see the workspace at the same path (a shared file system);
* **one writer** -- workers (processes or Dask tasks) never write the index: every index change is
  an :class:`IndexOps` they send to this process, which applies it under the workspace lock, while
  the recording runs (so checkpoints inside a long recording are kept when something dies).
  A stage's updates are therefore the same whatever runs it, and the outputs are byte-identical.
  Commits are batched so that writing the index takes at most 10 % of a run (:class:`Committer`):
  the cost stays linear in the number of pairs;
* **retries** -- a worker that dies (killed, out of memory, its machine lost) has its recording
  run again, up to :data:`MAX_ATTEMPTS` times in all; the rerun resumes from what the first
  attempt committed (each stage skips work whose recipe holds). On a cluster the scheduler
  reschedules the task (Dask's ``distributed.scheduler.allowed-failures``, default 3);
* the **summary** -- ``{"workspace", "stage", "jobs", "scheduler", "recordings": [...], "done",
  "failed"}``; each recording's entry is what the stage returned plus ``id``, ``error``, ``seconds``,
  ``cpu_seconds`` (CPU time of the process that ran it, its threads included, while it ran: with
  ``seconds``, how many cores the recording kept busy) and ``attempts``.

Stopping this process at any moment (Ctrl-C, ``kill -9``) leaves a valid index: every change is an
atomic rewrite of the index files, done here only. A rerun resumes.

A stage's per-recording function has the signature ``work(ws, recording_id, sink, **options) ->
dict``; it must be a module-level function (workers import it by name) and record its index
changes only through ``sink.commit(...)``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue as _queue
import secrets
import socket
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from gasdb_tools import progress as _progress
from gasdb_tools.errors import GasdbError, WorkspaceError
from gasdb_tools.workspace import Index, Workspace

__all__ = ["IndexOps", "Sink", "Committer", "apply_ops", "apply_streaming", "map_ordered", "limit_threads", "run_stage", "use_scheduler", "STAGE_ERRORS",
           "MAX_ATTEMPTS", "SCHEDULER_ENV", "INDEX_TIME_SHARE", "os_error_text", "prestart", "largest_first"]

log = logging.getLogger(__name__)

#: Exceptions that fail one recording instead of the whole run.
STAGE_ERRORS = (GasdbError, ValueError, OSError)
#: Runs of one recording, in all, when its worker process dies.
MAX_ATTEMPTS = 3
#: The environment variable the CLI reads a scheduler address from (the name Dask itself uses).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"

_default_scheduler: str | None = None


@dataclass
class IndexOps:
    """Index changes of one commit, applied together in one transaction (see :func:`apply_ops`).

    Attributes
    ----------
    pairs : dict
        ``{pair_id: {column: value}}`` merged into existing rows; a pair not in the index is
        created from ``new_pairs_defaults.get(pair_id, {})`` plus these columns when
        ``create`` is true, else skipped (it vanished meanwhile).
    recording : dict
        ``{recording_id: {column: value}}`` merged into recording rows (skipped if gone).
    drop_pairs_of : dict
        ``{recording_id: set of pair ids to keep, or None for none}``: the recording's other
        pairs are removed (applied before ``pairs``).
    """

    pairs: dict = field(default_factory=dict)
    recording: dict = field(default_factory=dict)
    drop_pairs_of: dict = field(default_factory=dict)
    create: bool = False
    new_pairs_defaults: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.pairs or self.recording or self.drop_pairs_of)


def apply_ops(index: Index, ops: IndexOps) -> None:
    """Apply ``ops`` to an in-memory :class:`Index` (the caller holds the transaction)."""
    for rec, keep in ops.drop_pairs_of.items():
        keep = set(keep or ())
        for pid in [p for p, row in index.pairs.items() if row.get("recording") == rec and p not in keep]:
            del index.pairs[pid]
    for pid, columns in ops.pairs.items():
        if pid in index.pairs:
            index.pairs[pid].update(columns)
        elif ops.create:  # the new row is the ops' own dict when there are no defaults (no copy: ops are spent)
            defaults = ops.new_pairs_defaults.get(pid)
            index.pairs[pid] = {**defaults, **columns} if defaults else columns
    for rec, columns in ops.recording.items():
        if rec in index.recordings:
            index.recordings[rec].update(columns)


class _Touched:
    def __init__(self, pairs: set, recordings: set):
        self.pairs, self.recordings = pairs, recordings


def apply_streaming(ws: Workspace, ops_list) -> None:
    """Apply ``ops_list`` in order in one transaction, as :func:`apply_ops` on the whole index would,
    but with pairs.csv read and written as a stream (:meth:`Workspace.rewrite_pairs`): the memory
    it takes is that of the ops, not of the index (a 24-minute recording's 36,000 rows took about
    2 KB each as dicts). Falls back to the in-memory transaction where the stream cannot be used."""
    ops_list = [ops for ops in ops_list if ops]
    if not ops_list:
        return
    pair_ids = set().union(*(ops.pairs for ops in ops_list))
    dropped = set().union(*(ops.drop_pairs_of for ops in ops_list))
    columns = set()
    for ops in ops_list:
        for cols in ops.pairs.values():
            columns.update(cols)
        if ops.create:
            for cols in ops.new_pairs_defaults.values():
                columns.update(cols)

    def edit(pid: str, row):
        for ops in ops_list:  # each op in order, on this row alone (apply_ops is row by row)
            if row is not None and ops.drop_pairs_of:
                rec = row.get("recording")
                if rec in ops.drop_pairs_of and pid not in (ops.drop_pairs_of[rec] or ()):
                    row = None
            cols = ops.pairs.get(pid)
            if cols is not None:
                if row is not None:
                    row.update(cols)
                elif ops.create:
                    defaults = ops.new_pairs_defaults.get(pid)
                    row = {**defaults, **cols} if defaults else dict(cols)
        return row

    def edit_recordings(recordings: dict) -> None:
        for ops in ops_list:
            for rec, cols in ops.recording.items():
                if rec in recordings:
                    recordings[rec].update(cols)

    if not ws.rewrite_pairs(edit, _Touched(pair_ids, dropped), columns=columns, edit_recordings=edit_recordings):
        with ws.transaction() as index:
            for ops in ops_list:
                apply_ops(index, ops)


#: Largest share of a run's time spent writing the index (see :class:`Committer`).
INDEX_TIME_SHARE = 0.1


class Committer:
    """Applies :class:`IndexOps` to the workspace in batched transactions, in order.

    A transaction rewrites the whole index (O(pairs)), so committing every few frames would make a
    stage's cost grow with the square of the workspace. Commits are therefore gathered and applied
    together once the time since the last transaction is at least ``(1 - share) / share`` times
    what that transaction cost: the index takes at most ``share`` of the run (10 %) and the cost
    stays linear in the number of pairs, while a commit still reaches the index within seconds on
    a workspace of 10,000 pairs. Ops that drop pairs are applied at once (files are deleted after
    them); :meth:`flush` applies the rest (the runner calls it when a stage ends, however it ends).
    """

    def __init__(self, ws: Workspace, *, share: float | None = None):
        self.ws = ws
        self.share = INDEX_TIME_SHARE if share is None else share
        self.pending: list[IndexOps] = []
        self.due = 0.0
        self.transactions = 0

    def add(self, ops: IndexOps) -> None:
        self.pending.append(ops)
        if ops.drop_pairs_of or time.monotonic() >= self.due:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        t0 = time.monotonic()
        apply_streaming(self.ws, self.pending)
        self.pending = []
        self.transactions += 1
        now = time.monotonic()
        self.due = now + (now - t0) * (1 - self.share) / max(self.share, 1e-9)


class Sink:
    """Where a stage's per-recording function sends its index changes.

    Standalone (``Sink(ws)``) each commit is one transaction on the workspace; under the runner
    it goes to the runner's :class:`Committer` (this process) or is sent to the runner (a worker),
    which applies the commits in order.

    Attributes
    ----------
    threads : int
        Threads the stage may use *inside* this recording (per-frame work); 1 when the recordings
        already fill the jobs. Outputs must not depend on it.
    """

    def __init__(self, ws: Workspace, target=None, *, threads: int = 1, key=None, committer: Committer | None = None):
        self.ws = ws
        self._target = target  # a channel to the runner in a worker, None in the runner's process
        self._key = key
        self._committer = committer
        self.threads = max(1, int(threads))

    @property
    def in_worker(self) -> bool:
        """Whether this recording runs in a worker (process or Dask task) beside others."""
        return self._target is not None

    def commit(self, ops: IndexOps | None = None, **kwargs) -> None:
        """Record index changes: an :class:`IndexOps`, or its fields as keyword arguments."""
        ops = ops if ops is not None else IndexOps(**kwargs)
        if not ops:
            return
        if self._target is not None:
            self._target.send(("ops", self._key, ops))
        elif self._committer is not None:
            self._committer.add(ops)
        else:
            apply_streaming(self.ws, [ops])


@contextlib.contextmanager
def limit_threads(n: int):
    """OpenCV's own thread pool limited to ``n`` threads inside the block (``--jobs`` counts cores:
    a stage run with one job uses one core, with N jobs N)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(max(1, int(n)))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def map_ordered(fn, items, threads: int):
    """``fn`` over ``items`` in up to ``threads`` threads; results in input order, lazily, with at
    most ``2 * threads`` items in flight (bounded memory). One thread: a plain loop."""
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gasdb-frame") as pool:
        inflight: deque = deque()
        try:
            for item in items:
                inflight.append(pool.submit(fn, item))
                if len(inflight) >= 2 * threads:
                    yield inflight.popleft().result()
            while inflight:
                yield inflight.popleft().result()
        finally:
            for fut in inflight:
                fut.cancel()


# -- running one recording (here or in a worker) ---------------------------------------------
def _run_one(root, stage: str, work, rec_id: str, options: dict, defaults: dict, *, channel=None,
             threads: int = 1, key=None, committer: Committer | None = None) -> dict:
    ws = Workspace(root)
    sink = Sink(ws, channel, threads=threads, key=key, committer=committer)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        result = dict(work(ws, rec_id, sink, **options) or {})
        error = ""
    except STAGE_ERRORS as exc:
        error = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and not isinstance(exc, GasdbError):
            error = os_error_text(exc)
        result = {**defaults, "status": "failed"}
        log.info("%s %s failed: %s", stage, rec_id, error)
    sink.commit(recording={rec_id: {f"{stage}_error": error}})
    result.setdefault("status", "failed" if error else "done")
    return {"id": rec_id, **result, "error": error or None, "seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(time.process_time() - c0, 3)}


def _task(root, stage: str, work, rec_id: str, options: dict, defaults: dict, channel_spec, threads: int,
          key) -> dict:
    """A recording in a worker: ``start``, its index changes and progress, ``end``, then the result."""
    import cv2

    cv2.setNumThreads(max(1, threads))  # this process's share of the cores
    channel = _open_channel(channel_spec)
    channel.send(("start", key, None))
    _progress.set_reporter(lambda desc, n, total: channel.send(("progress", key, (desc, n, total))))
    try:
        if not (Path(root) / Workspace.SETTINGS).is_file():
            raise WorkspaceError(f"the workspace is not visible on worker {socket.gethostname()}",
                                 file=root, fix="mount the shared folder at the same path on every worker")
        result = _run_one(root, stage, work, rec_id, options, defaults, channel=channel, threads=threads, key=key)
    except STAGE_ERRORS as exc:
        result = {"id": rec_id, **defaults, "status": "failed", "error": str(exc), "seconds": 0.0}
    finally:
        _progress.set_reporter(None)
    channel.send(("end", key, None))
    return result


def os_error_text(exc: OSError) -> str:
    """One line for an OSError: the file, what went wrong, what to do (``<file>: <problem> -> <fix>``)."""
    import errno

    fixes = {errno.ENOSPC: "free disk space, then rerun (finished work is kept)",
             errno.EDQUOT: "free disk space or raise the quota, then rerun",
             errno.EROFS: "the file system is read-only: use a writable workspace",
             errno.EACCES: "check the folder's permissions",
             errno.EPERM: "check the folder's permissions"}
    where = exc.filename or ""
    text = f"{where}: {exc.strerror or exc}" if where else str(exc.strerror or exc)
    fix = fixes.get(exc.errno)
    return f"{text} -> {fix}" if fix else text


# -- channels: worker -> runner ----------------------------------------------------------------
# Each worker has its own connection (a killed worker can only break its own, never a shared queue),
# and sends ("start" | "ops" | "progress" | "end", key, payload) in order.
_CHANNELS: dict = {}


class _ConnChannel:
    def __init__(self, address, authkey):
        from multiprocessing.connection import Client

        self.conn = Client(address, authkey=authkey)
        self.lock = threading.Lock()

    def send(self, message) -> None:
        with self.lock:
            self.conn.send(message)


class _DaskChannel:
    def __init__(self, name):
        from distributed import Queue, get_client

        self.queue = Queue(name, client=get_client())
        self.lock = threading.Lock()

    def send(self, message) -> None:
        with self.lock:
            self.queue.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _open_channel(spec):
    channel = _CHANNELS.get(spec)
    if channel is None:
        channel = _ConnChannel(spec[1], spec[2]) if spec[0] == "conn" else _DaskChannel(spec[1])
        _CHANNELS[spec] = channel
    return channel


def _init_process(spec=None) -> None:
    """A worker process starts: no bars, and a lifeline to the runner: when the runner dies (even by
    SIGKILL) its end of the connection closes and the worker exits, instead of waiting forever
    for work that will not come."""
    _progress.set_enabled(False)
    if spec is not None:
        from multiprocessing.connection import Client

        conn = Client(spec[1], authkey=spec[2])

        def watch() -> None:
            with contextlib.suppress(EOFError, OSError):
                conn.recv()
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="gasdb-lifeline").start()


class _Listener:
    """The runner's end of the local channels: one reader thread per worker connection."""

    def __init__(self):
        from multiprocessing.connection import Listener

        self.folder = tempfile.mkdtemp(prefix="gasdb-stage-")
        self.authkey = secrets.token_bytes(16)
        self.listener = Listener(os.path.join(self.folder, "runner"), family="AF_UNIX", authkey=self.authkey)
        self.inbox: _queue.Queue = _queue.Queue()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def spec(self):
        return ("conn", self.listener.address, self.authkey)

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn = self.listener.accept()
            except (OSError, EOFError):
                if self.closed:
                    return
                continue  # a client that failed the handshake
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn) -> None:
        with contextlib.suppress(EOFError, OSError, pickle.UnpicklingError):
            while True:
                self.inbox.put(conn.recv())  # a worker killed mid-message ends here, its own channel only
        conn.close()

    def messages(self, timeout: float) -> list:
        out = []
        try:
            out.append(self.inbox.get(timeout=timeout))
            while True:
                out.append(self.inbox.get_nowait())
        except _queue.Empty:
            pass
        return out

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


# -- the runner ------------------------------------------------------------------------------
@contextlib.contextmanager
def use_scheduler(address: str | None):
    """Run the stages called inside the ``with`` block on the Dask cluster at ``address``
    (``None``: locally), unless they are given a ``scheduler`` themselves.

    >>> with use_scheduler("tcp://10.0.0.5:8786"):       # doctest: +SKIP
    ...     preannotate_workspace(ws)
    """
    global _default_scheduler
    before, _default_scheduler = _default_scheduler, address or None
    try:
        yield
    finally:
        _default_scheduler = before


def run_stage(ws: Workspace, stage: str, work, *, recordings=None, jobs: int = 1, options: dict | None = None,
              defaults: dict | None = None, scheduler: str | None = None) -> dict:
    """Run ``work`` for each selected recording and return the summary (see the module docstring).

    Parameters
    ----------
    ws : Workspace
    stage : str
        The stage name (``<stage>_error`` is its error column).
    work : callable
        ``work(ws, recording_id, sink, **options) -> dict``, module-level.
    recordings : iterable of str, optional
        Only these recordings (default: every recording, in index order).
    jobs : int
        Cores to use on this machine: recordings in ``min(jobs, recordings)`` worker processes, the
        rest as threads inside each recording (1: everything in this process, on one core; OpenCV's
        own thread pool is limited to the same share, :func:`limit_threads`).
    options : dict, optional
        Keyword arguments for ``work`` (picklable).
    defaults : dict, optional
        The entries of a failed recording's result that ``work`` would have filled (counts as 0, ...).
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``): the recordings run as tasks on its
        workers (default: the one set by :func:`use_scheduler`, else local).

    Raises
    ------
    WorkspaceError
        An unknown recording id (before any work).
    GasdbError
        The scheduler cannot be reached, or Dask is not installed.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    scheduler = scheduler or _default_scheduler
    ids = ws.select_recordings(recordings)
    options = dict(options or {})
    defaults = dict(defaults or {})
    results: dict[str, dict] = {}
    if scheduler:
        _run_parallel(ws, stage, work, ids, options, defaults, results, backend=_DaskBackend(scheduler, stage))
    elif jobs == 1 or len(ids) <= 1:
        committer = Committer(ws)
        try:
            with limit_threads(jobs):
                for rec in ids:
                    results[rec] = {**_run_one(ws.root, stage, work, rec, options, defaults, threads=jobs,
                                               committer=committer), "attempts": 1}
        finally:
            committer.flush()
    else:
        _run_parallel(ws, stage, work, ids, options, defaults, results, backend=_LocalBackend(jobs, len(ids), getattr(work, "__module__", None)))
    ordered = [results[r] for r in ids]
    return {"workspace": str(ws.root), "stage": stage, "jobs": jobs, "scheduler": scheduler or None,
            "recordings": ordered, "done": sum(1 for r in ordered if not r["error"]),
            "failed": sum(1 for r in ordered if r["error"])}


class _Attempt:
    def __init__(self, rec: str):
        self.rec = rec
        self.submitted = 0  # tasks sent
        self.runs = 0  # tasks that started (their "start" arrived)
        self.ended = False
        self.result: dict | None = None


def _run_parallel(ws: Workspace, stage: str, work, ids, options, defaults, results, *, backend) -> None:
    """Drive the backend: apply the workers' index changes as they come, collect results, retry."""
    state = {rec: _Attempt(rec) for rec in ids}
    keys: dict[str, str] = {}
    board = _progress.Board(len(ids), stage)
    committer = Committer(ws)

    def handle(messages) -> None:
        for kind, key, payload in messages:
            rec = keys.get(key)
            if rec is None:
                continue  # a stale task of an earlier attempt or run
            if kind == "ops":
                committer.add(payload)
            elif kind == "start":
                state[rec].runs += 1
            elif kind == "end":
                state[rec].ended = True
            elif kind == "progress":
                board.report(rec, *payload)

    def submit(rec: str) -> None:
        st = state[rec]
        st.submitted += 1
        st.ended = False
        key = f"gasdb-{stage}-{rec}-{uuid.uuid4().hex[:12]}"
        keys[key] = rec
        backend.submit(key, rec, (str(ws.root), stage, work, rec, options, defaults))

    ok = False
    try:
        backend.start()
        for rec in largest_first(ws, ids):
            submit(rec)
        starts_at_last_death, deaths_before_any_start = 0, 0
        while len(results) < len(ids):
            handle(backend.messages(0.1))
            finished = backend.finished()
            if any(isinstance(outcome, _WorkerDied) for _, outcome in finished):
                handle(backend.messages(0.05))
                starts = sum(st.runs for st in state.values())
                deaths_before_any_start = deaths_before_any_start + 1 if starts == starts_at_last_death else 0
                starts_at_last_death = starts
                if deaths_before_any_start >= 2:  # workers that cannot start: retrying would not help
                    raise GasdbError("the worker processes die before they start a recording",
                                     fix="run the stage with --jobs 1 to see the error")
            for key, outcome in finished:
                rec = keys.get(key)
                if rec is None or rec in results:
                    continue
                st = state[rec]
                if isinstance(outcome, dict):
                    st.result = outcome
                elif isinstance(outcome, _WorkerDied):
                    handle(backend.messages(0.05))  # its "start", if it ran
                    # a task that never started (the pool broke under another recording) does not count
                    runs = st.runs
                    if outcome.retry and runs < MAX_ATTEMPTS and st.submitted < 2 * MAX_ATTEMPTS + 2:
                        log.warning("%s %s: the worker died; running the recording again", stage, rec)
                        keys.pop(key, None)
                        submit(rec)
                        continue
                    error = (f"the worker running it died {max(runs, 1)} time(s) ({outcome.reason}); finished work "
                             "is kept -> check the worker's memory and log, then rerun")
                    st.result = {"id": rec, **defaults, "status": "failed", "seconds": 0.0, "error": error}
                    st.ended = True
                    committer.add(IndexOps(recording={rec: {f"{stage}_error": error}}))
                else:  # an unexpected exception in the task: a bug, raised again here
                    raise outcome
            for rec, st in state.items():
                # a result counts once the worker's "end" arrived: its index changes were sent before it
                if rec not in results and st.result is not None and st.ended:
                    results[rec] = {**st.result, "attempts": max(st.runs, 1)}
                    board.finish(rec)
        handle(backend.messages(0.0))
        ok = True
    finally:
        try:
            committer.flush()
        finally:
            board.close()
            backend.close(wait=ok)


def largest_first(ws: Workspace, ids) -> list[str]:
    """``ids`` in the order to hand them to workers: the recordings with the most pairs first (ties
    in index order), so that a long recording does not start last and finish alone while the other
    workers idle (longest processing time first). Only the order of the work changes, never its
    results. Pairs are counted as a stream; before extraction every count is 0."""
    counts = dict.fromkeys(ids, 0)
    try:
        for row in ws.iter_pairs():
            if row["recording"] in counts:
                counts[row["recording"]] += 1
    except (GasdbError, OSError):
        return list(ids)  # the stage reports the index's problem itself
    return sorted(ids, key=lambda rec: -counts[rec])


class _WorkerDied:
    def __init__(self, reason: str, *, retry: bool = True):
        self.reason, self.retry = reason, retry


#: The modules of the per-recording stages (their ``work`` functions), and modules they import
#: only when they run (PyAV on the first video opened, the draft propagation's window).
_STAGE_MODULES = ("gasdb_tools.extract", "gasdb_tools.calibration", "gasdb_tools.align", "gasdb_tools.enhance",
                  "gasdb_tools.preannotate", "gasdb_tools.propagate", "av")


def _preload(module: str | None) -> list[str]:
    """What the fork server imports once for all its workers: this module, the stage's, and every
    stage module this process has imported already (a process that runs several stages, such as
    a benchmark or a pipeline script, pays their imports, about 0.2-0.35 s of CPU each, once and
    not in every worker of every later stage; the server is started by the first stage that
    needs it and kept)."""
    names = ["gasdb_tools.stages"] + ([module] if module else [])
    if module in ("gasdb_tools.extract", "gasdb_tools.preannotate"):
        names.append("av")  # they decode videos in every worker (PyAV is imported on the first one)
    return list(dict.fromkeys(names + [m for m in _STAGE_MODULES if m in sys.modules]))


def _start_forkserver() -> None:
    """Start the fork server (once per process) with this process's ``sys.path``: it imports the
    preloaded modules before its children learn the parent's path, so a path set at run time
    (``sys.path.insert``) must reach it through ``PYTHONPATH``, or the workers would run another
    copy of the code."""
    from multiprocessing import forkserver

    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    try:
        forkserver.ensure_running()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def prestart(module: str | None = None) -> None:
    """Start the fork server now, preloading ``module`` (a stage's), so that its imports (about
    0.3-0.9 s) run on another core while the caller still imports and plans, instead of after:
    the command line calls it as soon as it knows a stage will run on several local jobs. A
    no-op where there is no fork server, or when it runs already."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_preload(module))
    _start_forkserver()


class _LocalBackend:
    """Worker processes on this machine; a pool that breaks because a worker died is replaced.

    Workers are forked from a *fork server* (a clean process that imported the stage's modules
    once, before any thread exists), never from this process: OpenCV and BLAS threads do not
    survive a fork, and a server saves each worker the imports (about 0.4 s of CPU, see
    :func:`_preload`). Where there is no fork server (Windows), they are spawned."""

    def __init__(self, jobs: int, n: int, module: str | None = None):
        self.procs = min(jobs, n)
        self.threads = max(1, jobs // self.procs)
        if "forkserver" in multiprocessing.get_all_start_methods():
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(_preload(module))
            _start_forkserver()
        else:
            self.ctx = multiprocessing.get_context("spawn")
        self.pool = None
        self.futures: dict = {}
        self.listener = None
        self.done: list = []

    def start(self) -> None:
        self.listener = _Listener()
        self._new_pool()

    def _new_pool(self) -> None:
        self.pool = ProcessPoolExecutor(max_workers=self.procs, mp_context=self.ctx, initializer=_init_process,
                                        initargs=(self.listener.spec,))

    def submit(self, key, rec, args) -> None:
        try:
            fut = self.pool.submit(_task, *args, self.listener.spec, self.threads, key)
        except BrokenProcessPool:
            self._new_pool()
            fut = self.pool.submit(_task, *args, self.listener.spec, self.threads, key)
        self.futures[fut] = key

    def messages(self, timeout: float) -> list:
        return self.listener.messages(timeout)

    def finished(self):
        if not self.futures:
            return []
        done, _ = wait(list(self.futures), timeout=0, return_when=FIRST_COMPLETED)
        out = []
        broken = False
        for fut in done:
            key = self.futures.pop(fut)
            exc = fut.exception()
            if exc is None:
                out.append((key, fut.result()))
            elif isinstance(exc, BrokenProcessPool):
                broken = True
                out.append((key, _WorkerDied("its process was killed or crashed")))
            else:
                out.append((key, exc))
        if broken:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._new_pool()
        return out

    def close(self, *, wait: bool = True) -> None:
        if self.pool is not None:
            if not wait:  # interrupted or failed: stop the workers now (files are written atomically)
                for proc in list(getattr(self.pool, "_processes", {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()
            self.pool.shutdown(wait=wait, cancel_futures=True)
        if self.listener is not None:
            self.listener.close()


class _DaskBackend:
    """Tasks on a Dask distributed cluster; the workers' messages come through a Dask queue."""

    def __init__(self, address: str, stage: str):
        self.address = address
        self.stage = stage
        self.client = self.queue = None
        self.futures: dict = {}

    def start(self) -> None:
        try:
            from distributed import Client, Queue
        except ImportError:
            raise GasdbError("running on a cluster needs Dask distributed",
                             fix="pip install 'gasdb-tools[cluster]' (or: pip install 'dask[distributed]')") from None
        try:
            self.client = Client(self.address, timeout="20s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise GasdbError(f"cannot reach the Dask scheduler at {self.address!r} ({type(exc).__name__}: {exc})",
                             field="--scheduler",
                             fix="start it (`dask scheduler`) and its workers (`dask worker ADDRESS --nthreads 1`), "
                                 f"or check the address / {SCHEDULER_ENV}") from None
        self.name = f"gasdb-{self.stage}-{uuid.uuid4().hex}"
        self.queue = Queue(self.name, client=self.client)

    def submit(self, key, rec, args) -> None:
        fut = self.client.submit(_task, *args, ("dask", self.name), 1, key, key=key, pure=False)
        self.futures[fut] = key

    def messages(self, timeout: float) -> list:
        items = self.queue.get(batch=True)
        if not items and timeout:
            time.sleep(timeout)
            items = self.queue.get(batch=True)
        return [pickle.loads(item) for item in items]

    def finished(self):
        out = []
        for fut in [f for f in self.futures if f.done()]:
            key = self.futures.pop(fut)
            if fut.status == "finished":
                out.append((key, fut.result()))
                continue
            exc = fut.exception()
            from distributed.scheduler import KilledWorker

            if isinstance(exc, KilledWorker):  # the scheduler already retried it (allowed-failures)
                out.append((key, _WorkerDied("killed or lost; the scheduler gave up retrying", retry=False)))
            elif fut.status == "cancelled":
                out.append((key, _WorkerDied("the task was cancelled on the cluster", retry=True)))
            else:
                out.append((key, exc))
        return out

    def close(self, *, wait: bool = True) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                for fut in self.futures:
                    fut.cancel()
            with contextlib.suppress(Exception):
                self.queue.close() if hasattr(self.queue, "close") else None
            with contextlib.suppress(Exception):
                self.client.close()
