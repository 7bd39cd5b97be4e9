"""The one stage runner: every per-recording stage (extract, calibrate, align, enhance, preannotate)
runs its recordings through :func:`run_stage`.

The runner owns what the stages share:

* **selection** -- every recording, or the ones asked for (unknown ids are an error that lists the
  known ones);
* **per-recording errors** -- a :class:`~gasdb_tools.errors.GasdbError`, ``ValueError`` or
  ``OSError`` (a full disk, a read-only folder, a permission) fails *that* recording: its message
  goes into the recording's ``<stage>_error`` column and the summary, and the other recordings
  still run; a clean run clears the column;
* **progress** on stderr (:mod:`gasdb_tools.progress`), one bar per recording or, with several
  jobs, one bar over the recordings;
* **parallel jobs** -- ``jobs > 1`` runs recordings in that many worker processes. Workers never
  write the index: every index change is an :class:`IndexOps` list they send to the parent, which
  applies it under the workspace lock (so a stage's updates are the same whatever the number of
  jobs, and a killed worker leaves the index valid);
* the **summary** -- ``{"workspace", "stage", "jobs", "recordings": [...], "done", "failed"}``;
  each recording's entry is what the stage returned plus ``id``, ``error`` and ``seconds``.

A stage's per-recording function has the signature ``work(ws, recording_id, sink, **options) ->
dict``; it must be a module-level function (worker processes import it by name) and record its
index changes only through ``sink.commit(...)``.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue as _queue
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from gasdb_tools.errors import GasdbError
from gasdb_tools.progress import progress
from gasdb_tools.workspace import Index, Workspace

__all__ = ["IndexOps", "Sink", "apply_ops", "run_stage", "STAGE_ERRORS", "os_error_text"]

log = logging.getLogger(__name__)

#: Exceptions that fail one recording instead of the whole run.
STAGE_ERRORS = (GasdbError, ValueError, OSError)


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
        elif ops.create:
            index.pairs[pid] = {**ops.new_pairs_defaults.get(pid, {}), **columns}
    for rec, columns in ops.recording.items():
        if rec in index.recordings:
            index.recordings[rec].update(columns)


class Sink:
    """Where a stage's per-recording function sends its index changes.

    In the parent process (one job) each commit is one transaction on the workspace; in a worker
    process it is queued for the parent, which applies it in order.
    """

    def __init__(self, ws: Workspace, target=None):
        self.ws = ws
        self._target = target  # a multiprocessing queue in a worker, None in the parent

    def commit(self, ops: IndexOps | None = None, **kwargs) -> None:
        """Record index changes: an :class:`IndexOps`, or its fields as keyword arguments."""
        ops = ops if ops is not None else IndexOps(**kwargs)
        if not ops:
            return
        if self._target is None:
            with self.ws.transaction() as index:
                apply_ops(index, ops)
        else:
            self._target.put(("ops", ops))


# -- worker processes ------------------------------------------------------------------------
_WORKER_QUEUE = None


def _init_worker(queue) -> None:
    global _WORKER_QUEUE
    _WORKER_QUEUE = queue
    from gasdb_tools import progress as _progress

    _progress.set_enabled(False)  # the parent shows progress over recordings


def _run_one(root, stage: str, work, rec_id: str, options: dict, in_worker: bool, defaults: dict) -> dict:
    ws = Workspace(root)
    sink = Sink(ws, _WORKER_QUEUE if in_worker else None)
    t0 = time.perf_counter()
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
    return {"id": rec_id, **result, "error": error or None, "seconds": round(time.perf_counter() - t0, 3)}


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


# -- the runner ------------------------------------------------------------------------------
def run_stage(ws: Workspace, stage: str, work, *, recordings=None, jobs: int = 1, options: dict | None = None,
              defaults: dict | None = None) -> dict:
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
        Worker processes (1: run in this process).
    options : dict, optional
        Keyword arguments for ``work`` (picklable).
    defaults : dict, optional
        The entries of a failed recording's result that ``work`` would have filled (counts as 0, ...).

    Raises
    ------
    WorkspaceError
        An unknown recording id (before any work).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    ids = ws.select_recordings(recordings)
    options = dict(options or {})
    results: dict[str, dict] = {}
    if jobs == 1 or len(ids) <= 1:
        for rec in ids:
            results[rec] = _run_one(ws.root, stage, work, rec, options, False, dict(defaults or {}))
    else:
        _run_parallel(ws, stage, work, ids, options, jobs, results, dict(defaults or {}))
    ordered = [results[r] for r in ids]
    return {"workspace": str(ws.root), "stage": stage, "jobs": jobs, "recordings": ordered,
            "done": sum(1 for r in ordered if not r["error"]), "failed": sum(1 for r in ordered if r["error"])}


def _run_parallel(ws: Workspace, stage: str, work, ids, options, jobs, results, defaults) -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork: OpenCV and BLAS threads do not survive it
    queue = ctx.Queue()

    def drain(block: bool) -> None:
        batch = []
        try:
            while True:
                batch.append(queue.get(timeout=0.05) if block and not batch else queue.get_nowait())
        except _queue.Empty:
            pass
        if batch:
            with ws.transaction() as index:
                for _, ops in batch:
                    apply_ops(index, ops)

    with ProcessPoolExecutor(max_workers=min(jobs, len(ids)), mp_context=ctx, initializer=_init_worker,
                             initargs=(queue,)) as pool:
        futures = {pool.submit(_run_one, ws.root, stage, work, rec, options, True, defaults): rec for rec in ids}
        bar = iter(progress(range(len(ids)), total=len(ids), desc=stage, unit="recording"))
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                drain(block=False)
                for fut in done:
                    results[futures[fut]] = fut.result()
                    next(bar, None)
        finally:
            for fut in pending:
                fut.cancel()
    time.sleep(0)  # let the queue's feeder threads flush
    drain(block=True)
    drain(block=False)
