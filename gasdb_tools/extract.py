"""The ``extract`` stage: time-synchronised RGB-thermal frame pairs from a workspace's recordings.

Per recording:

1. **Offset.** Given (``offset=``, or ``offset_s`` registered by ``gasdb add --offset``), or
   estimated by cross-correlating the two streams' motion energies (:func:`gasdb_tools.sync.estimate_offset`);
   when that estimate is not confident, from where things move in the first
   :data:`COLOCATION_SECONDS` of both streams (:func:`gasdb_tools.sync.estimate_offset_colocation`,
   on the 80x64 luma the energy pass keeps), if that one is.
   The value, its source and confidence go into the recording row (``offset_s``,
   ``offset_source``, ``offset_confidence``). When every frame is kept (no ``every``,
   ``max_pairs`` or ``dedup``, and an RGB rate at most :data:`ONE_PASS_MAX_RATE_RATIO` times the
   thermal one) the energies are measured **in the writing pass** (:class:`gasdb_tools.video.MotionMeter`):
   both streams are decoded once, every frame is written to ``frames/<rec>/.staging/``, and once
   the offset is known the paired frames are moved to their names (an interrupted pass resumes
   without encoding the staged frames again). Otherwise a separate pass decodes both streams for
   the energies (writing every frame would then cost more than decoding twice). Both routes give
   the same offset, pairs and bytes.
2. **One sequential pass** over both streams (:func:`gasdb_tools.video.iter_av_frames`): frames
   are paired by timestamp (:func:`gasdb_tools.sync.iter_pairs`; ``|dt|`` at most half a frame
   period of the faster stream), sampled on a time grid (``every``, and ``max_pairs`` spread over
   the overlap), optionally near-duplicate filtered (``dedup``), and handed to a thread pool that
   converts and writes lossless PNGs (thermal keeps 16 bits when the source has them) through
   :func:`gasdb_tools.imaging.write_image`: colour converted by swscale straight to RGB, PNG
   filter "up" deflated by ISA-L (:data:`PNG_FORMAT`; on real camera frames 0.24-0.41x the CPU
   of zlib's RLE strategy at level 1, for files 0.91-1.20x its size). PNG encoding is the
   bottleneck (methods §D.1) and numpy/ISA-L/swscale release the GIL, so the pool scales with cores.
3. **Index.** Pair rows are committed through :meth:`Workspace.transaction` only after their files
   are on disk, in checkpoints, so an interrupted run leaves a valid index and the next run
   resumes the recording (same settings) where it stopped. A recording is finished when its row
   has ``extract_pairs``; reruns skip it unless ``force``.

A recording that fails (unreadable or truncated video, no frames, streams that do not overlap,
an unreliable offset estimate) gets ``extract_error`` and none of its pairs stay in the index;
the other recordings are still processed. Recordings run through the one stage runner
(:func:`gasdb_tools.stages.run_stage`; ``jobs`` worker processes).

**Thermal camera alone.** A recording without an RGB video yields "pairs" of one thermal frame
each, sampled the same way (``t_rgb``, ``rgb`` and ``dt`` are empty; the pair id carries the
thermal time). No offset is needed.

**Provenance.** Each pair records ``extract_digest``, the digest of its frame files' bytes as
written (:mod:`gasdb_tools.provenance`); the recording records ``extract_inputs``, the recipe of
its pairs (the source videos' sha256 and the parameters).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import time
from array import array
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path

from gasdb_tools import provenance, sync, video
from gasdb_tools.errors import GasdbError, VideoError, WorkspaceError
from gasdb_tools.fsutil import read_json, sha256_file, write_json
from gasdb_tools.imaging import write_image
from gasdb_tools.progress import progress
from gasdb_tools.sensors import attach_report, pair_columns, read_sensor_csv
from gasdb_tools.stages import IndexOps, run_stage
from gasdb_tools.workspace import PAIR_COLUMNS, Workspace, is_thermal_only, make_pair_id

__all__ = ["extract_workspace", "extract_recording", "extract_recipe", "best_offset_estimate",
           "DEFAULT_MIN_CONFIDENCE", "COLOCATION_SECONDS"]

#: Offset estimates below this peak correlation are refused (pass the offset instead).
DEFAULT_MIN_CONFIDENCE = 0.2
#: How frames are written: PNG row filter "up", deflated by ISA-L (``deflate="isal"`` of
#: :func:`gasdb_tools.imaging.encode_png`).
PNG_FORMAT = "up/isal"
#: The offset is estimated in the writing pass when the RGB rate is at most this many times the thermal
#: rate (then at least 1/this of the RGB frames written are kept; the rest is cheaper than a second decode).
ONE_PASS_MAX_RATE_RATIO = 1.5
#: Seconds at the start of each stream kept as 80x64 thumbnails for the co-location offset estimate
#: (:func:`gasdb_tools.sync.estimate_offset_colocation`), used when the motion energy is ambiguous.
COLOCATION_SECONDS = 60.0
_PEEK = 16  # frames looked at to measure a stream's frame period before pairing


def extract_workspace(ws: Workspace, *, every: float | None = None, max_pairs: int | None = None,
                      offset: float | None = None, dedup: bool = False, dedup_threshold: float = 4.0,
                      force: bool = False, recordings=None, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                      workers: int | None = None, compression: int = 1, checkpoint: int = 500,
                      jobs: int = 1, scheduler: str | None = None) -> dict:
    """Extract time-synchronised RGB-thermal pairs for every recording of a workspace.

    Parameters
    ----------
    ws : Workspace
        The workspace (recordings registered with ``gasdb add``).
    every : float, optional
        Keep at most one pair per ``every`` seconds (thermal clock), on a fixed time grid.
    max_pairs : int, optional
        At most this many pairs per recording, spread evenly over the streams' overlap.
    offset : float, optional
        Start offset for all selected recordings (``t_rgb = t_thermal + offset``), overriding the
        registered one; without it a registered (given) offset is used, else it is estimated.
    dedup : bool
        Skip pairs in which neither stream changed locally since the last kept pair
        (:class:`gasdb_tools.sync.DuplicateFilter`); off by default.
    dedup_threshold : float
        Change statistic (robust noise units) above which a frame counts as changed.
    force : bool
        Redo recordings already extracted (their old pairs and frames are replaced).
    recordings : iterable of str, optional
        Recording ids to process (default: all).
    min_confidence : float
        Refuse an estimated offset whose confidence is lower (the recording fails with a message
        that gives the estimate; pass ``offset`` to use it anyway).
    workers : int, optional
        Threads converting and writing PNGs (default: the recording's share of ``jobs``).
    compression : int
        PNG deflate level (0-9; 1-3 by ISA-L, 0 and 4-9 by zlib, :data:`PNG_FORMAT`).
    checkpoint : int
        Commit pair rows to the index every this many pairs (resume granularity).
    jobs : int
        Cores: recordings extracted in parallel worker processes, and PNG writer threads inside a
        recording when there are fewer recordings than jobs (see :func:`gasdb_tools.stages.run_stage`).
    scheduler : str, optional
        A Dask scheduler's address: the recordings run on that cluster's workers.

    Returns
    -------
    dict
        ``{"workspace", "recordings": [per-recording dicts], "extracted", "skipped", "failed",
        "pairs_written", "pairs_total"}``; per recording: ``id``, ``status``
        (``extracted|skipped|failed``), ``pairs``, ``written``, ``offset_s``, ``offset_source``,
        ``offset_confidence``, ``frames_rgb``, ``frames_thermal``, ``unpaired_thermal``,
        ``dedup_skipped``, ``max_abs_dt_s``, ``seconds``, ``error``.

    Raises
    ------
    WorkspaceError
        An unknown recording id was asked for. (Per-recording data problems do not raise; they
        are recorded in the index and the summary.)

    Examples
    --------
    >>> summary = extract_workspace(ws, every=0.2)          # doctest: +SKIP
    >>> summary["failed"], summary["pairs_total"]            # doctest: +SKIP
    (0, 40)
    """
    if every is not None and not every > 0:
        raise ValueError(f"every must be > 0 seconds or None, got {every!r}")
    if max_pairs is not None and (not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be an int >= 1 or None, got {max_pairs!r}")
    if offset is not None and not math.isfinite(offset):
        raise ValueError(f"offset must be a finite number of seconds, got {offset!r}")
    if not 0 <= compression <= 9:
        raise ValueError(f"compression must be a zlib level 0-9, got {compression!r}")
    if checkpoint < 1:
        raise ValueError(f"checkpoint must be >= 1 pairs, got {checkpoint!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers!r}")
    settings = dict(every=every, max_pairs=max_pairs, offset=offset, dedup=dedup, dedup_threshold=dedup_threshold,
                    force=force, min_confidence=min_confidence, compression=compression, checkpoint=checkpoint,
                    workers=workers)
    defaults = {"pairs": 0, "written": 0, "offset_s": None, "offset_source": "", "offset_confidence": None,
                "frames_rgb": 0, "frames_thermal": 0, "unpaired_thermal": 0, "dedup_skipped": 0,
                "max_abs_dt_s": None}
    report = run_stage(ws, "extract", _extract_work, recordings=list(dict.fromkeys(recordings)) if recordings
                       is not None else None, jobs=jobs, scheduler=scheduler, options=settings, defaults=defaults)
    results = report["recordings"]
    return {
        **report,
        "extracted": sum(r["status"] == "extracted" for r in results),
        "skipped": sum(r["status"] == "skipped" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "pairs_written": sum(r["written"] for r in results),
        "pairs_total": sum(1 for _ in ws.iter_pairs()),  # counted as a stream (memory: not the index)
    }


def _extract_work(ws: Workspace, rec_id: str, sink, **settings) -> dict:
    """The stage runner's per-recording function."""
    return extract_recording(ws, rec_id, sink=sink, **settings)


def extract_recipe(rec: dict) -> str:
    """The recipe of a recording's extracted pairs: its source videos and the extraction parameters."""
    return provenance.recipe("extract", rec.get("rgb_sha256", ""), rec.get("thermal_sha256", ""),
                             params=rec.get("extract_params", ""))


def extract_recording(ws: Workspace, rec_id: str, *, every: float | None = None, max_pairs: int | None = None,
                      offset: float | None = None, dedup: bool = False, dedup_threshold: float = 4.0,
                      force: bool = False, min_confidence: float = DEFAULT_MIN_CONFIDENCE, compression: int = 1,
                      checkpoint: int = 500, workers: int | None = None, sink=None) -> dict:
    """Extract one recording (see :func:`extract_workspace`); returns its summary dict.

    ``sink`` (a :class:`gasdb_tools.stages.Sink`) receives the index changes; by default they are
    written at once. A data problem (:class:`~gasdb_tools.errors.GasdbError`) rolls the
    recording back (its pairs leave the index) and is raised again for the stage runner.
    """
    from gasdb_tools.stages import Sink

    sink = sink if sink is not None else Sink(ws)
    workers = workers or sink.threads  # this recording's share of the cores (the stage runner's jobs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gasdb-png") as pool:
        job = _RecordingJob(ws, rec_id, every=every, max_pairs=max_pairs, offset=offset, dedup=dedup,
                            dedup_threshold=dedup_threshold, force=force, min_confidence=min_confidence,
                            compression=compression, checkpoint=checkpoint, pool=pool, workers=workers, sink=sink)
        return job.run()


def best_offset_estimate(th, rgb, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """The start offset of two scanned streams (``video.motion_energy`` results, thermal then RGB):
    the motion-energy estimate when it is confident; else the co-location estimate (where things
    move, from the scans' thumbnails) when that one is; else the more confident of the two.
    Energy comes first: a gas plume only the thermal camera sees moves nothing in the RGB view."""
    est = sync.estimate_offset(th.times, th.energy, rgb.times, rgb.energy)
    if est.confidence >= min_confidence or th.thumbnails is None or rgb.thumbnails is None \
            or len(th.thumbnails) < 3 or len(rgb.thumbnails) < 3:
        return est
    where = sync.estimate_offset_colocation(th.frame_times[:len(th.thumbnails)], th.thumbnails,
                                            rgb.frame_times[:len(rgb.thumbnails)], rgb.thumbnails)
    return where if where.confidence > est.confidence else est


def _num(x: float) -> str:
    return repr(round(float(x), 6) + 0.0)  # + 0.0: no "-0.0"


def _peek(iterator, n: int):
    """The first ``n`` items of ``iterator`` and an iterator that still yields all of them."""
    head = list(islice(iterator, n))
    return head, chain(head, iterator)


class _Counter:
    """Pass (t, frame) items through, remembering every timestamp (for the summary; 8 bytes a frame)."""

    def __init__(self, items):
        self.items = items
        self.times = array("d")

    def __iter__(self):
        for item in self.items:
            self.times.append(item[0])
            yield item


class _RecordingJob:
    def __init__(self, ws: Workspace, rec_id: str, *, every, max_pairs, offset, dedup, dedup_threshold, force,
                 min_confidence, compression, checkpoint, pool, workers, sink):
        self.ws, self.rec_id, self.sink = ws, rec_id, sink
        self.every, self.max_pairs, self.offset = every, max_pairs, offset
        self.dedup, self.dedup_threshold = dedup, dedup_threshold
        self.force, self.min_confidence = force, min_confidence
        self.compression, self.checkpoint, self.pool = compression, checkpoint, pool
        self.inflight: deque[Future] = deque()
        self.digests: dict[str, list] = {}  # pair id -> [rgb future or digest, thermal future or digest]
        # What grows with a recording's length is kept to a few bytes a frame (timestamps and
        # motion energies in arrays, staged digests in a bytearray): the pair ids committed only
        # when a resumed run must drop the interrupted run's leftovers, their times only when
        # sensor readings are attached.
        self.committed: set[str] = set()  # pair ids committed, when resuming (else left empty)
        self.pair_times: dict[str, str] = {}  # pair id -> t_thermal, with a sensor stream
        self.rec: dict = {}
        self.stash: dict[str, dict] = {}  # downstream columns of pairs replaced by --force, by pair id
        self.existing_digests: dict[str, str] = {}  # pair id -> extract_digest of a resumed run
        self.max_inflight = 4 * workers + 4  # frames waiting for or in a writer: bounded memory
        self.result = {"id": rec_id, "status": "", "pairs": 0, "written": 0, "offset_s": None, "offset_source": "",
                       "offset_confidence": None, "frames_rgb": 0, "frames_thermal": 0, "unpaired_thermal": 0,
                       "dedup_skipped": 0, "max_abs_dt_s": None, "seconds": 0.0, "error": ""}

    # -- driver -----------------------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.perf_counter()
        rec = self.rec = self.ws.recording(self.rec_id)
        done = rec.get("extract_pairs", "") != "" and not rec.get("extract_error")
        if done and not self.force:
            self.result.update(status="skipped", pairs=sum(1 for _ in self.ws.iter_pairs(self.rec_id)),
                               offset_s=_float_or_none(rec.get("offset_s")), offset_source=rec.get("offset_source", ""),
                               offset_confidence=_float_or_none(rec.get("offset_confidence")))
            return self.result
        try:
            self._extract(rec)
            self.result["status"] = "extracted"
        except GasdbError as exc:
            self._drain(ignore_errors=True)
            self._rollback(str(exc))
            raise
        except BaseException:
            self._drain(ignore_errors=True)  # files in flight land; committed checkpoints stay resumable
            raise
        finally:
            self.result["seconds"] = round(time.perf_counter() - t0, 3)
        return self.result

    def _paths(self, rec: dict) -> tuple[Path | None, Path]:
        if not rec.get("thermal"):
            raise WorkspaceError(f"recording {self.rec_id!r} has no thermal video", field="thermal",
                                 file=self.ws.root / self.ws.RECORDINGS, fix="register it again with `gasdb add`")
        rgb = self.ws.path(rec["rgb"]) if not is_thermal_only(rec) else None
        return rgb, self.ws.path(rec["thermal"])

    def _extract(self, rec: dict) -> None:
        rgb_path, th_path = self._paths(rec)
        if rgb_path is None:
            offset_s, source, confidence, scans = 0.0, "", None, None
        else:
            given = self._given_offset(rec)
            if given is None and self._one_pass(rgb_path, th_path):
                self._extract_one_pass(rec, rgb_path, th_path)
                return
            offset_s, source, confidence, scans = given if given is not None else \
                self._offset(rec, rgb_path, th_path)
            self.result.update(offset_s=offset_s, offset_source=source, offset_confidence=confidence)
        params_text = self._params_text(offset_s)
        existing = self._prepare(rec, params_text)
        every = self._effective_every(rgb_path, th_path, offset_s, scans)
        th_raw = _Prefetch(video.iter_av_frames(th_path))
        rgb_raw = _Prefetch(video.iter_av_frames(rgb_path)) if rgb_path is not None else None
        try:
            self._pair_and_write(rgb_raw, th_raw, rgb_path, th_path, offset_s, source, confidence, scans,
                                 params_text, existing, every, rec)
        finally:
            th_raw.close()
            if rgb_raw is not None:
                rgb_raw.close()

    def _params_text(self, offset_s: float) -> str:
        params = {"every": self.every, "max_pairs": self.max_pairs, "dedup": self.dedup,
                  "dedup_threshold": self.dedup_threshold if self.dedup else None, "offset_s": offset_s,
                  "compression": self.compression, "png": PNG_FORMAT}
        return json.dumps(params, sort_keys=True)

    def _meta(self, rec: dict, offset_s, source, confidence, params_text, *, paired: bool) -> dict:
        meta = {"offset_s": _num(offset_s) if paired else "", "offset_source": source,
                "offset_confidence": _num(confidence) if confidence is not None else "",
                "extract_params": params_text, "extract_pairs": "", "extract_error": ""}
        meta["extract_inputs"] = extract_recipe({**rec, **meta})
        return meta

    def _expected_pairs(self, th_path) -> int | None:
        """About how many pairs the recording gives (for the progress bar's ETA), from the header."""
        try:
            info = video.probe(th_path, decode_first=False)
        except GasdbError:
            return None
        frames = info.frames_declared or (int(info.duration_s * info.fps) if info.duration_s and info.fps else 0)
        if not frames:
            return None
        if self.every and info.fps:
            frames = min(frames, int(frames / (self.every * info.fps)) + 1)
        return min(frames, self.max_pairs) if self.max_pairs else frames

    def _pair_and_write(self, rgb_raw, th_raw, rgb_path, th_path, offset_s, source, confidence, scans,
                        params_text, existing, every, rec) -> None:
        th_frames = _Counter(th_raw)
        th_head, th_iter = _peek(iter(th_frames), _PEEK)
        if rgb_raw is None:  # a thermal camera alone: every thermal frame is a "pair"
            rgb_frames = _Counter(())
            rgb_iter = iter(())
            tolerance = 0.0
            pairs = (sync.Pair(None, None, float(t), frame, 0.0) for t, frame in th_iter)
        else:
            rgb_frames = _Counter(rgb_raw)
            rgb_head, rgb_iter = _peek(iter(rgb_frames), _PEEK)
            tolerance = sync.pairing_tolerance(self._period(rgb_head, rgb_path, scans and scans[1]),
                                               self._period(th_head, th_path, scans and scans[0]))
            pairs = sync.iter_pairs(rgb_iter, th_iter, offset_s=offset_s, tolerance=tolerance)
        meta = self._meta(rec, offset_s, source, confidence, params_text, paired=rgb_raw is not None)
        pairs = progress(pairs, total=self._expected_pairs(th_path), desc=f"extract {self.rec_id}", unit="pair")
        outcome = self._keep_pairs(pairs, every, existing, meta, self._write_pair)
        if outcome[0]:  # read both streams to their end: full frame counts, and the decoder's damage checks
            for rest in (rgb_iter, th_iter):
                for _ in rest:
                    pass
        self._finish(rgb_frames.times, th_frames.times, offset_s, tolerance, rgb_path, th_path, outcome, meta,
                     paired_streams=rgb_raw is not None)

    def _keep_pairs(self, pairs, every, existing, meta, place):
        """Sample, de-duplicate and place (write or move) the pairs; commit rows in checkpoints.

        Returns ``(complete, paired, kept, max_abs_dt, rows not committed yet)``; ``complete`` is
        False when ``max_pairs`` stopped it early.
        """
        sampler = sync.TimeSampler(every)
        dup = sync.DuplicateFilter(threshold=self.dedup_threshold) if self.dedup else None
        pending_rows: list[dict] = []
        last_pid = None
        kept = paired = 0
        max_dt = 0.0
        for pair in pairs:
            if self.max_pairs is not None and kept >= self.max_pairs:
                return False, paired, kept, max_dt, pending_rows
            paired += 1
            if not sampler.take(pair.t_thermal):
                continue
            th_gray = None
            if dup is not None:
                th_gray = video.frame_to_array(pair.thermal, gray=True)
                grays = [th_gray] if pair.rgb is None else [th_gray, video.frame_to_array(pair.rgb, gray=True)]
                if not dup.keep(*grays):
                    self.result["dedup_skipped"] += 1
                    continue
            pid = make_pair_id(self.rec_id, pair.t_rgb if pair.t_rgb is not None else pair.t_thermal)
            if pid == last_pid:  # two frames within 0.5 ms of each other (pairs come in time order): keep the first
                continue
            last_pid = pid
            kept += 1
            max_dt = max(max_dt, abs(pair.dt))
            th_rel = f"frames/{self.rec_id}/thermal/{pid}.png"
            rgb_rel = f"frames/{self.rec_id}/rgb/{pid}.png" if pair.rgb is not None else ""
            rgb_out, th_out = (self.ws.root / rgb_rel if rgb_rel else None), self.ws.root / th_rel
            on_disk = pid in existing and th_out.is_file() and (rgb_out is None or rgb_out.is_file())
            if not on_disk:
                self.digests[pid] = place(pair, rgb_out, th_out, th_gray)
                self.result["written"] += 1
            row = {"pair_id": pid, "recording": self.rec_id, "t_thermal": _num(pair.t_thermal), "thermal": th_rel,
                   "t_rgb": _num(pair.t_rgb) if pair.t_rgb is not None else "",
                   "dt": _num(abs(pair.dt)) if pair.t_rgb is not None else "", "rgb": rgb_rel}
            pending_rows.append(row)
            if len(pending_rows) >= self.checkpoint:
                self._commit(pending_rows, meta)
                pending_rows = []
        return True, paired, kept, max_dt, pending_rows

    def _write_pair(self, pair, rgb_out, th_out, th_gray) -> list:
        return [self._submit(rgb_out, pair.rgb, False) if rgb_out is not None else "",
                self._submit(th_out, th_gray if th_gray is not None else pair.thermal, True)]

    def _finish(self, rgb_times, th_times, offset_s, tolerance, rgb_path, th_path, outcome, meta, *,
                paired_streams: bool) -> None:
        complete, paired, kept, max_dt, pending_rows = outcome
        self.result["frames_rgb"] = len(rgb_times)
        self.result["frames_thermal"] = len(th_times)
        if kept == 0:
            raise self._no_overlap_error(rgb_times, th_times, offset_s, tolerance, rgb_path, th_path)
        self.result["unpaired_thermal"] = (self._unpaired(rgb_times, th_times, offset_s, tolerance, paired)
                                           if complete and paired_streams else (0 if not paired_streams else None))
        self.result["max_abs_dt_s"] = round(max_dt, 6) if paired_streams else None
        meta["extract_pairs"] = str(kept)
        self._commit(pending_rows, meta, final=True)
        self.result["pairs"] = kept
        if self.rec.get("sensors"):
            self._attach_sensors((th_times[0], th_times[-1]) if len(th_times) else (0.0, 0.0))

    def _attach_sensors(self, video_span) -> None:
        """The reading nearest in time for each pair of the recording's gas-sensor stream
        (:mod:`gasdb_tools.sensors`), and what was not attached, in the index and the summary."""
        stream = read_sensor_csv(self.ws.path(self.rec["sensors"]), offset_s=float(self.rec.get("sensor_offset_s") or 0))
        rows = [{"pair_id": pid, "t_thermal": t} for pid, t in sorted(self.pair_times.items())]
        report = attach_report(stream, [float(r["t_thermal"]) for r in rows], video_span)
        self.sink.commit(IndexOps(pairs=pair_columns(stream, rows),
                                  recording={self.rec_id: {"sensor_report": json.dumps(report, sort_keys=True)}}))
        self.result["sensors"] = report

    # -- one decoding pass that also estimates the offset --------------------------------------------
    def _one_pass(self, rgb_path, th_path) -> bool:
        """Whether to estimate the offset in the writing pass: when (nearly) every RGB frame will be
        kept, writing them all before pairing costs less than decoding both streams twice."""
        if self.every is not None or self.max_pairs is not None or self.dedup:
            return False
        try:
            fps_rgb = video.probe(rgb_path, decode_first=False).fps
            fps_th = video.probe(th_path, decode_first=False).fps
        except GasdbError:
            return False
        return fps_rgb > 0 and fps_th > 0 and fps_rgb <= ONE_PASS_MAX_RATE_RATIO * fps_th

    def _extract_one_pass(self, rec: dict, rgb_path: Path, th_path: Path) -> None:
        """Decode both streams once: measure their motion energy and write every frame to
        ``frames/<rec>/.staging/``; then estimate the offset, pair by timestamp and move the
        paired frames to their names (the pairs are those of the two-pass route, see the module
        docstring). An interrupted pass resumes: frames already staged are not encoded again."""
        staging = self._staging(rec)
        meters = {k: video.MotionMeter(keep_seconds=COLOCATION_SECONDS) for k in ("rgb", "thermal")}
        staged = {"rgb": _Staged(), "thermal": _Staged()}
        total = sum(filter(None, (video.probe(p, decode_first=False).frames_declared for p in (rgb_path, th_path))))
        # each stream's energies are measured in its decoding thread, beside the writers
        streams = {kind: _Prefetch(_metered(video.iter_av_frames(path), meters[kind]))
                   for kind, path in (("rgb", rgb_path), ("thermal", th_path))}
        try:
            for kind, t, frame in progress(_merge_by_time(streams), total=total or None,
                                           desc=f"extract {self.rec_id}", unit="frame"):
                out = staging / kind / f"{len(staged[kind]):08d}.png"
                if out.is_file():
                    staged[kind].add(None)  # from an interrupted pass: hashed when it is used
                else:
                    staged[kind].add(self._submit(out, frame, kind == "thermal"))
        finally:
            for it in streams.values():
                it.close()
        self._drain()
        th, rgb = meters["thermal"].result(), meters["rgb"].result()
        offset_s, source, confidence = self._estimate(th, rgb, rgb_path, th_path)
        self.result.update(offset_s=offset_s, offset_source=source, offset_confidence=confidence)
        params_text = self._params_text(offset_s)
        existing = self._prepare(rec, params_text)
        tolerance = sync.pairing_tolerance(self._period((), rgb_path, rgb), self._period((), th_path, th))
        pairs = sync.iter_pairs(zip(rgb.frame_times, range(rgb.frame_times.size)),
                                zip(th.frame_times, range(th.frame_times.size)), offset_s=offset_s,
                                tolerance=tolerance)
        meta = self._meta(rec, offset_s, source, confidence, params_text, paired=True)

        for kind in ("rgb", "thermal"):
            (self.ws.root / "frames" / self.rec_id / kind).mkdir(parents=True, exist_ok=True)

        def place(pair, rgb_out, th_out, _gray):
            return [_move(staging / "rgb" / f"{pair.rgb:08d}.png", staged["rgb"].digest(pair.rgb), rgb_out),
                    _move(staging / "thermal" / f"{pair.thermal:08d}.png", staged["thermal"].digest(pair.thermal),
                          th_out)]

        outcome = self._keep_pairs(pairs, None, existing, meta, place)
        self._finish(rgb.frame_times, th.frame_times, offset_s, tolerance, rgb_path, th_path, outcome, meta,
                     paired_streams=True)
        shutil.rmtree(staging, ignore_errors=True)

    def _staging(self, rec: dict) -> Path:
        """The staging folder, emptied unless it holds frames of the same videos and PNG settings."""
        staging = self.ws.root / "frames" / self.rec_id / ".staging"
        manifest = {"rgb_sha256": rec.get("rgb_sha256", ""), "thermal_sha256": rec.get("thermal_sha256", ""),
                    "compression": self.compression, "png": PNG_FORMAT}
        try:
            same = read_json(staging / "manifest.json") == manifest and not self.force
        except (OSError, ValueError, GasdbError):
            same = False
        if not same:
            shutil.rmtree(staging, ignore_errors=True)
            write_json(staging / "manifest.json", manifest)
        return staging

    # -- offset ------------------------------------------------------------------------------------
    def _given_offset(self, rec):
        """(offset_s, "given", None, None) when the offset is passed or registered, else None."""
        if self.offset is not None:
            return float(self.offset), "given", None, None
        if rec.get("offset_source") == "given" and rec.get("offset_s", "") != "":
            return float(rec["offset_s"]), "given", None, None
        return None

    def _offset(self, rec, rgb_path, th_path):
        """(offset_s, source, confidence or None, (thermal scan, rgb scan) or None), by a decoding pass
        of its own (the route when not every frame is kept: sampling, ``max_pairs``, ``dedup``)."""
        th = video.motion_energy(th_path, keep_seconds=COLOCATION_SECONDS)
        rgb = video.motion_energy(rgb_path, keep_seconds=COLOCATION_SECONDS)
        return (*self._estimate(th, rgb, rgb_path, th_path), (th, rgb))

    def _estimate(self, th, rgb, rgb_path, th_path):
        """(offset_s, source, confidence) from the two streams, or a VideoError; ``source`` names the
        evidence: ``estimated`` (motion energy) or ``estimated-colocation`` (where things move)."""
        if th.energy.size < 2 or rgb.energy.size < 2:
            raise VideoError("too few frames to estimate the start offset", file=th_path if th.energy.size < 2
                             else rgb_path, fix=f"pass the offset: gasdb extract {shlex.quote(str(self.ws.root))} --recording {self.rec_id} "
                                 "--offset SECONDS")
        est = best_offset_estimate(th, rgb, min_confidence=self.min_confidence)
        if not math.isfinite(est.offset_s):
            raise VideoError("cannot estimate the start offset: one stream shows no motion, or the streams overlap "
                             "too little", file=th_path, field="offset_s",
                             fix=f"pass it: gasdb extract {shlex.quote(str(self.ws.root))} --recording {self.rec_id} "
                                 "--offset SECONDS (t_rgb = t_thermal + offset)")
        if est.confidence < self.min_confidence:
            raise VideoError(f"the estimated start offset {est.offset_s:+.3f} s is unreliable (confidence "
                             f"{est.confidence:.2f} < {self.min_confidence:.2f}, from the {est.method})", file=th_path, field="offset_s",
                             fix=f"check it (a clap or flash seen by both cameras) and pass it: "
                                 f"gasdb extract {shlex.quote(str(self.ws.root))} --recording {self.rec_id} --offset SECONDS")
        source = "estimated-colocation" if est.method == "co-location" else "estimated"
        return round(float(est.offset_s), 6) + 0.0, source, float(est.confidence)

    def _period(self, head, path, scan) -> float:
        times = scan.frame_times if scan is not None else [t for t, _ in head]
        try:
            return sync.stream_period(times)
        except ValueError:
            fps = video.probe(path, decode_first=False).fps
            if fps > 0:
                return 1.0 / fps
            raise VideoError("cannot tell the frame period: fewer than two frames and no frame rate in the header",
                             file=path, fix="check that the file holds the whole recording") from None

    def _effective_every(self, rgb_path, th_path, offset_s, scans) -> float | None:
        """``every``, widened so that ``max_pairs`` spread over the overlap of the two streams."""
        if self.max_pairs is None:
            return self.every
        if scans is not None:
            th_t, rgb_t = scans[0].frame_times, scans[1].frame_times
            lo, hi = max(th_t[0], rgb_t[0] - offset_s), min(th_t[-1], rgb_t[-1] - offset_s)
        else:
            d_th = video.probe(th_path, decode_first=False).duration_s
            d_rgb = video.probe(rgb_path, decode_first=False).duration_s if rgb_path is not None else d_th
            if not d_th or not d_rgb:
                return self.every
            lo, hi = max(0.0, -offset_s), min(d_th, d_rgb - offset_s)
        span = hi - lo
        if span <= 0:
            return self.every
        return max(self.every or 0.0, span / self.max_pairs) or None

    # -- writing -----------------------------------------------------------------------------------
    def _submit(self, path: Path, frame, gray: bool) -> Future:
        while len(self.inflight) >= self.max_inflight:
            self.inflight.popleft().result()
        fut = self.pool.submit(_write_frame, path, frame, gray, self.compression)
        self.inflight.append(fut)
        return fut

    def _drain(self, *, ignore_errors: bool = False) -> None:
        while self.inflight:
            fut = self.inflight.popleft()
            try:
                fut.result()
            except BaseException:
                if not ignore_errors:
                    raise

    # -- index -------------------------------------------------------------------------------------
    def _prepare(self, rec: dict, params_text: str) -> set[str]:
        """Decide between resuming and starting over; returns the pair ids that can be kept.

        Starting over removes the recording's pairs and frames, but first saves the other stages'
        columns of those pairs (``frames/<rec>/previous-pairs.json``): a re-extracted pair with the
        same timestamps has the same frames, so its alignment, enhancement and labels still hold
        and are put back when it is committed again.
        """
        pairs = sorted(self.ws.iter_pairs(self.rec_id), key=lambda p: p["pair_id"])  # this recording's rows only
        stash_path = self._stash_path()
        if stash_path.is_file():
            self.stash = read_json(stash_path)
        resumable = (not self.force and pairs and rec.get("extract_params") == params_text
                     and not rec.get("extract_pairs"))
        if resumable:
            self.existing_digests = {p["pair_id"]: p.get("extract_digest", "") for p in pairs}
            return {p["pair_id"] for p in pairs}
        for p in pairs:
            extra = {k: v for k, v in p.items() if k not in PAIR_COLUMNS and v}
            if extra:
                self.stash[p["pair_id"]] = {"t_rgb": p.get("t_rgb"), "t_thermal": p.get("t_thermal"), "columns": extra}
        if self.stash:
            write_json(stash_path, self.stash)
        self._remove_outputs(error=None)
        return set()

    def _stash_path(self) -> Path:
        return self.ws.root / "frames" / self.rec_id / "previous-pairs.json"

    def _restored(self, row: dict) -> dict:
        """Stashed downstream columns of a re-extracted pair with the same timestamps, else {}.

        The columns carry their own provenance: the later stages' recipes name the old frames'
        ``extract_digest``, so if the new frames differ those outputs show as stale.
        """
        old = self.stash.get(row["pair_id"])
        if old and old.get("t_rgb") == row["t_rgb"] and old.get("t_thermal") == row["t_thermal"]:
            columns = dict(old["columns"])
            columns.pop("extract_digest", None)
            return columns
        return {}

    def _remove_outputs(self, *, error: str | None) -> None:
        """Drop this recording's pairs from the index (one commit), then their frame files."""
        columns = {"extract_pairs": "", "extract_params": "", "extract_inputs": ""}
        if error is not None:
            columns["extract_error"] = error
        self.sink.commit(IndexOps(drop_pairs_of={self.rec_id: None}, recording={self.rec_id: columns}))
        for sub in ("rgb", "thermal"):
            folder = self.ws.root / "frames" / self.rec_id / sub
            if folder.is_dir():
                for f in folder.iterdir():
                    if f.suffix in (".png", ".tmp") and f.is_file():
                        f.unlink()

    def _rollback(self, error: str) -> None:
        self._remove_outputs(error=error)
        shutil.rmtree(self.ws.root / "frames" / self.rec_id / ".staging", ignore_errors=True)

    def _digest(self, pid: str, row: dict) -> str:
        """The pair's ``extract_digest``: written now (from the writers), kept, or hashed from disk."""
        parts = self.digests.pop(pid, None)
        if parts is not None:
            return provenance.combine(*(p.result() if isinstance(p, Future) else p for p in parts))
        known = self.existing_digests.get(pid)
        if known:
            return known
        return provenance.combine(*(_file_digest(self.ws.root / row[k]) if row[k] else "" for k in ("rgb", "thermal")))

    def _commit(self, rows: list[dict], meta: dict, *, final: bool = False) -> None:
        self._drain()
        os.sync()  # frames are written without per-file fsync; make them durable before indexing them
        for row in rows:
            row["extract_digest"] = self._digest(row["pair_id"], row)
        pairs = {row["pair_id"]: row for row in rows}
        defaults = {pid: restored for pid, row in pairs.items() if (restored := self._restored(row))}
        if self.existing_digests:
            self.committed.update(pairs)
        if self.rec.get("sensors"):
            self.pair_times.update({pid: row["t_thermal"] for pid, row in pairs.items()})
        ops = IndexOps(pairs=pairs, recording={self.rec_id: meta}, create=True, new_pairs_defaults=defaults,
                       drop_pairs_of={self.rec_id: set(self.committed)} if final and self.existing_digests else {})
        # pairs left from an interrupted run with the same settings but not produced now are dropped
        # (``drop_pairs_of`` is applied before the rows, so this commit's rows stay); a run that did
        # not resume started from an index without pairs of the recording (:meth:`_prepare`)
        self.sink.commit(ops)
        if final:
            self._stash_path().unlink(missing_ok=True)

    # -- diagnostics -------------------------------------------------------------------------------
    @staticmethod
    def _unpaired(rgb_times, th_times, offset_s, tolerance, paired) -> int:
        """Thermal frames inside the RGB stream's time range that found no partner within tolerance."""
        lo, hi = rgb_times[0] - offset_s - tolerance, rgb_times[-1] - offset_s + tolerance
        return max(sum(lo <= t <= hi for t in th_times) - paired, 0)

    def _no_overlap_error(self, rgb_times, th_times, offset_s, tolerance, rgb_path, th_path) -> VideoError:
        if rgb_path is None or not len(rgb_times) or not len(th_times):
            return VideoError("a stream has no frames", file=th_path if rgb_path is None or not len(th_times) else rgb_path,
                              fix="re-export the recording")
        return VideoError(
            f"the streams do not overlap in time: thermal covers {th_times[0] + offset_s:.2f}-"
            f"{th_times[-1] + offset_s:.2f} s on the RGB clock (offset {offset_s:+.3f} s), RGB covers "
            f"{rgb_times[0]:.2f}-{rgb_times[-1]:.2f} s (pairs need |dt| <= {tolerance * 1000:.1f} ms)",
            file=th_path, field="offset_s",
            fix="check that both files belong to the same take and that the offset is right "
                "(t_rgb = t_thermal + offset)")


def _write_frame(path: Path, frame, gray: bool, compression: int) -> str:
    """Worker: convert a decoded frame (or take a gray array), write it as PNG atomically; returns its digest.

    Colour frames are converted by swscale straight to RGB, the order PNG stores (no extra pass)."""
    image = frame if hasattr(frame, "dtype") else video.frame_to_array(frame, gray=gray)
    _, sha = write_image(path, image, compression=compression, png_filter="up", deflate="isal",
                         sync=False, digest=True)  # one os.sync() per commit
    return sha


def _metered(frames, meter):
    """``(t, frame)`` from ``frames``, each also measured by ``meter`` (a :class:`video.MotionMeter`) first."""
    try:
        for t, frame in frames:
            meter.add(t, frame)
            yield t, frame
    finally:
        frames.close()


class _Prefetch:
    """Run a decoding iterator in its own thread, ``depth`` items ahead (PyAV decodes without the
    GIL): the two streams decode side by side and beside the pairing loop. Errors arrive in order;
    :meth:`close` stops the thread, which closes the iterator itself."""

    _END = object()

    def __init__(self, iterator, depth: int = 8):
        import queue
        import threading

        self._queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True, name="gasdb-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    break
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Raised(exc))
        finally:
            iterator.close()

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is self._END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._done = True
            raise item.exc
        return item

    def close(self) -> None:
        self._stop.set()
        self._done = True
        self._thread.join()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _merge_by_time(streams: dict):
    """``(name, t, frame)`` from several ``(t, frame)`` iterators, in time order (one frame of look-ahead each)."""
    heads = {}
    for name, it in streams.items():
        item = next(it, None)
        if item is not None:
            heads[name] = item
    while heads:
        name = min(heads, key=lambda n: heads[n][0])
        t, frame = heads[name]
        nxt = next(streams[name], None)
        if nxt is None:
            del heads[name]
        else:
            heads[name] = nxt
        yield name, t, frame


class _Staged:
    """The digests of a stream's staged frames, in order: 16 bytes a frame (a 24-minute recording
    at 25 fps: 0.6 MB), the writers' futures only while they run."""

    _SIZE = provenance.DIGEST_CHARS // 2
    _UNKNOWN = bytes(_SIZE)  # staged by an interrupted pass: hashed from the file when used

    def __init__(self):
        self.digests = bytearray()
        self.running: dict[int, Future] = {}

    def __len__(self) -> int:
        return len(self.digests) // self._SIZE

    def add(self, fut: Future | None) -> None:
        k = len(self)
        self.digests += self._UNKNOWN
        if fut is not None:
            self.running[k] = fut
        if len(self.running) > 64:  # settle the finished ones (the writers hold at most a few frames)
            for j in [j for j, f in self.running.items() if f.done()]:
                self._settle(j)

    def _settle(self, k: int) -> None:
        digest = self.running.pop(k).result()
        self.digests[k * self._SIZE:(k + 1) * self._SIZE] = bytes.fromhex(digest)

    def digest(self, k: int) -> str | None:
        """Frame ``k``'s digest, or None when it must be hashed from its file."""
        if k in self.running:
            self._settle(k)
        raw = bytes(self.digests[k * self._SIZE:(k + 1) * self._SIZE])
        return None if raw == self._UNKNOWN else raw.hex()


def _move(src: Path, digest: str | None, out: Path) -> str:
    """Move a staged frame to its pair name; returns its digest (known, or hashed when staged earlier)."""
    os.replace(src, out)
    return digest if digest is not None else _file_digest(out)


def _file_digest(path: Path) -> str:
    return sha256_file(path)[: provenance.DIGEST_CHARS]


def _float_or_none(text) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
