"""What the review app lists: one row per pair, with its review state, staleness, exclusion,
validate problems, draft size and score, and the filters and sorts over those rows.

Every fact comes from the one place that owns it: review state and exclusions from the LabelMe
documents and ``blacklist.csv`` (:mod:`gasdb_tools.review`), staleness from provenance
(:func:`gasdb_tools.status.pair_stages`), problems from :func:`gasdb_tools.validate.validate_workspace`,
masks from the one rasteriser (:func:`gasdb_tools.labelme_format.rasterize`), scores from
:mod:`gasdb_tools.metrics`. What is slow to compute (masks, problems) is cached in memory and under
``WS/.gasdb-cache/review/``, keyed by each document file's size, times and inode, so a change made by
LabelMe or another command is seen on the next request; the cache is never an authority.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gasdb_tools import labelme_format, review
from gasdb_tools.errors import GasdbError
from gasdb_tools.fsutil import sha256_file, write_json
from gasdb_tools.workspace import Index, Workspace, check_id

__all__ = [
    "STATUSES",
    "SORTS",
    "PairRow",
    "Query",
    "QueryError",
    "parse_query",
    "select",
    "Catalog",
    "mask_metrics",
    "counts_table",
]

#: Review statuses a pair can be filtered by (``unlabelled``: no LabelMe document yet).
STATUSES = ("pending", "edited", "approved", "unlabelled", "recheck")
#: Sort keys of the gallery.
SORTS = ("pair", "recording", "scene", "status", "stale", "excluded", "problems", "area", "blobs", "score")
_YES_NO = ("yes", "no")
_CACHE = Path(".gasdb-cache") / "review" / "metrics.json"
_CACHE_VERSION = 1


@dataclass
class PairRow:
    """One pair as the gallery shows it (``None``: not computed yet, or not applicable)."""

    pair_id: str
    recording: str
    scene: str
    t: float
    status: str  # pending | edited | approved | unlabelled
    recheck: str = ""
    annotator: str = ""
    stale: list = field(default_factory=list)  # stages whose output is stale for this pair
    excluded: str = ""  # reason (blacklist.csv or a flag); '' when included
    blacklisted: bool = False  # listed in blacklist.csv (an exclusion by flag is not)
    problems: int | None = None
    area: float | None = None  # gas pixels, % of the frame
    blobs: int | None = None
    score: float | None = None  # gas IoU of the submission's mask against this document, %
    version: str = ""  # changes whenever the document or the pair's files change (cache buster)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# queries
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A gallery query: filters (None = any), a sort and a page."""

    recording: str | None = None
    scene: str | None = None
    status: str | None = None
    stale: str | None = None  # yes | no
    excluded: str | None = None  # yes | no
    problems: str | None = None  # yes | no
    area_min: float | None = None
    area_max: float | None = None
    blobs_min: int | None = None
    blobs_max: int | None = None
    score_min: float | None = None
    score_max: float | None = None
    sort: str = "pair"
    desc: bool = False
    page: int = 1
    per_page: int = 60

    def needs(self) -> set:
        """Which slow facts this query's filters or sort need for every pair."""
        out = set()
        bounds = (self.area_min, self.area_max, self.blobs_min, self.blobs_max, self.score_min, self.score_max)
        if any(b is not None for b in bounds) or self.sort in ("area", "blobs", "score"):
            out.add("metrics")
        if self.problems is not None or self.sort == "problems":
            out.add("problems")
        return out

    def params(self, **changes) -> dict:
        """The URL parameters of this query (defaults left out), with ``changes`` applied."""
        base = Query()
        out = {}
        for k, v in {**asdict(self), **changes}.items():
            if v is None or v == getattr(base, k):
                continue
            out[k] = ("1" if v else "0") if isinstance(v, bool) else str(v)
        return out


class QueryError(ValueError):
    """A URL parameter that is not a valid filter value (the message names it)."""


def _number(args, key, kind):
    raw = args.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise QueryError(f"{key}: expected a number, got {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"{key}: expected a finite number, got {raw!r}")
    return value


def parse_query(args, *, recordings=(), scenes=()) -> Query:
    """A :class:`Query` from URL parameters; every value is checked against the known choices.

    Recording ids must be in ``recordings`` and scenes in ``scenes`` (nothing from a URL is used
    as a path); unknown parameters are ignored.

    Raises
    ------
    QueryError
        A value that is not allowed (the message names the parameter).
    """
    def choice(key, allowed):
        raw = args.get(key)
        if raw is None or raw == "":
            return None
        if raw not in allowed:
            raise QueryError(f"{key}: {raw!r} is not one of the known values")
        return raw

    rec = args.get("recording")
    if rec:
        check_id(rec)
    sort = args.get("sort") or "pair"
    if sort not in SORTS:
        raise QueryError(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
    page = _number(args, "page", int)
    per_page = _number(args, "per_page", int)
    page = 1 if page is None else page
    per_page = 60 if per_page is None else per_page
    if page < 1 or not 1 <= per_page <= 500:
        raise QueryError("page must be >= 1 and per_page in 1-500")
    return Query(recording=choice("recording", recordings), scene=choice("scene", scenes),
                 status=choice("status", STATUSES), stale=choice("stale", _YES_NO),
                 excluded=choice("excluded", _YES_NO), problems=choice("problems", _YES_NO),
                 area_min=_number(args, "area_min", float), area_max=_number(args, "area_max", float),
                 blobs_min=_number(args, "blobs_min", int), blobs_max=_number(args, "blobs_max", int),
                 score_min=_number(args, "score_min", float), score_max=_number(args, "score_max", float),
                 sort=sort, desc=args.get("desc") in ("1", "true", "yes"), page=page, per_page=per_page)


def _within(value, lo, hi) -> bool:
    if lo is None and hi is None:
        return True
    if value is None:
        return False
    return (lo is None or value >= lo) and (hi is None or value <= hi)


_STATUS_ORDER = {s: i for i, s in enumerate(("pending", "edited", "approved", "unlabelled"))}


def _sort_key(sort: str):
    def missing_last(v):
        return (v is None, v if v is not None else 0)

    return {
        "pair": lambda r: r.pair_id,
        "recording": lambda r: (r.recording, r.pair_id),
        "scene": lambda r: (r.scene, r.pair_id),
        "status": lambda r: (_STATUS_ORDER.get(r.status, 9), r.pair_id),
        "stale": lambda r: (-len(r.stale), r.pair_id),
        "excluded": lambda r: (not r.excluded, r.pair_id),
        "problems": lambda r: (missing_last(r.problems), r.pair_id),
        "area": lambda r: (missing_last(r.area), r.pair_id),
        "blobs": lambda r: (missing_last(r.blobs), r.pair_id),
        "score": lambda r: (missing_last(r.score), r.pair_id),
    }[sort]


def select(rows, query: Query) -> list[PairRow]:
    """The rows matching ``query``'s filters, in its order (every page; slice for one)."""
    out = []
    for r in rows:
        if query.recording and r.recording != query.recording:
            continue
        if query.scene and r.scene != query.scene:
            continue
        if query.status == "recheck":
            if not r.recheck:
                continue
        elif query.status and r.status != query.status:
            continue
        if query.stale and (bool(r.stale) != (query.stale == "yes")):
            continue
        if query.excluded and (bool(r.excluded) != (query.excluded == "yes")):
            continue
        if query.problems and (r.problems is None or (r.problems > 0) != (query.problems == "yes")):
            continue
        if not (_within(r.area, query.area_min, query.area_max) and _within(r.blobs, query.blobs_min, query.blobs_max)
                and _within(r.score, query.score_min, query.score_max)):
            continue
        out.append(r)
    key = _sort_key(query.sort)
    out.sort(key=key, reverse=query.desc)
    if query.desc and query.sort in ("problems", "area", "blobs", "score"):  # unknown values stay last
        out.sort(key=lambda r: getattr(r, query.sort) is None)
    return out


# ----------------------------------------------------------------------------------------------
# per-document facts
# ----------------------------------------------------------------------------------------------
def mask_metrics(mask: np.ndarray) -> dict:
    """Gas pixels, gas area (% of the frame) and gas blob count (8-connected) of a class mask.

    >>> m = np.zeros((10, 10), np.uint8); m[1:3, 1:3] = 1; m[6:9, 6:9] = 1
    >>> mask_metrics(m)
    {'pixels': 13, 'area': 13.0, 'blobs': 2}
    """
    gas = (np.asarray(mask) == 1).astype(np.uint8)
    pixels = int(gas.sum())
    blobs = int(cv2.connectedComponents(gas, connectivity=8)[0]) - 1 if pixels else 0
    return {"pixels": pixels, "area": round(100.0 * pixels / max(gas.size, 1), 4), "blobs": blobs}


def _stat_key(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino]


def _doc_facts(path: Path) -> dict:
    """Mask metrics of one document, and the draft digest it carries (for the draft-area memory)."""
    try:
        doc = labelme_format.read(path)
        mask = labelme_format.rasterize(doc, file=path)
    except GasdbError as exc:
        return {"error": exc.message}
    meta = doc.get("gasdb") if isinstance(doc.get("gasdb"), dict) else {}
    pre = meta.get("preannot") if isinstance(meta.get("preannot"), dict) else {}
    return {**mask_metrics(mask), "draft_sha": str(pre.get("content_sha256") or "")}


class Catalog:
    """The rows of a workspace for the review app, recomputed from the files on every :meth:`rows` call.

    Parameters
    ----------
    ws : Workspace
    submission : path, optional
        A folder or zip of ``<id>.png`` masks (:func:`gasdb_tools.submission.open_submission`); each
        pair's gas IoU against its document becomes its ``score``. Files are named by pair id, or by
        release name when ``release`` (a release folder with ``index.csv``) is given.
    release : path, optional
    """

    def __init__(self, ws: Workspace, *, submission=None, release=None):
        self.ws = ws
        self._lock = threading.RLock()
        self._metrics: dict = {}
        self._drafts: dict = {}
        self._problems: dict = {}  # pid -> (key, [problem dicts])
        self._problems_done = False
        self._stale_cache: dict | None = None
        self._index_cache: tuple | None = None
        self._states_cache: tuple | None = None
        self._dirty = False
        self._submission = None
        self._sub_ids: dict = {}
        self._sub_key = ""
        self._scores: dict = {}
        self._load_cache()
        if submission is not None:
            self._open_submission(Path(submission), None if release is None else Path(release))

    # -- caches --------------------------------------------------------------------------
    def _cache_path(self) -> Path:
        return self.ws.root / _CACHE

    def _load_cache(self) -> None:
        try:
            data = json.loads(self._cache_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
            return
        self._metrics = data.get("metrics") or {}
        self._drafts = data.get("drafts") or {}
        self._stale_cache = {rec: (v[0], v[1]) for rec, v in (data.get("stale") or {}).items()}

    def save_cache(self) -> None:
        """Write the metrics cache when it changed (a read-only workspace goes without)."""
        with self._lock:
            if not self._dirty:
                return
            data = {"version": _CACHE_VERSION, "metrics": dict(self._metrics), "drafts": dict(self._drafts),
                    "stale": {rec: list(v) for rec, v in (self._stale_cache or {}).items()}}
            self._dirty = False
        try:
            write_json(self._cache_path(), data)
        except OSError:
            pass

    # -- submission ----------------------------------------------------------------------
    def _open_submission(self, path: Path, release: Path | None) -> None:
        from gasdb_tools.submission import open_submission

        names = {}
        if release is not None:
            with open(release / "index.csv", newline="", encoding="utf-8") as fh:
                names = {row["name"]: row["pair_id"] for row in csv.DictReader(fh)}
        sub = open_submission(path, allow_missing=True)
        self._submission = sub
        self._sub_ids = {names.get(stem, stem): stem for stem in sub.files}
        self._sub_key = sha256_file(path)[:16] if path.is_file() else str(path.stat().st_mtime_ns)

    @property
    def has_submission(self) -> bool:
        return self._submission is not None

    def _score(self, pid: str, path: Path) -> float | None:
        from gasdb_tools import metrics
        from gasdb_tools.submission import decode_mask

        stem = self._sub_ids.get(pid)
        if stem is None:
            return None
        try:
            gt = labelme_format.rasterize(labelme_format.read(path), file=path)
            pred = decode_mask(self._submission.read(stem), shape=gt.shape, name=self._submission.display_name(stem))
        except GasdbError:
            return None
        iou = metrics.scores(metrics.confusion(gt, pred, ignore_index=labelme_format.IGNORE_INDEX))["gas"]["iou"]
        return None if iou is None else round(100.0 * iou, 2)

    # -- facts ---------------------------------------------------------------------------
    def ensure_metrics(self, index: Index, states: dict, pids) -> None:
        """Compute the mask metrics (and scores) of ``pids`` whose documents changed since last time."""
        for pid in pids:
            st = states.get(pid)
            if st is None:
                continue
            path = Path(st.path)
            key = _stat_key(path)
            with self._lock:
                hit = self._metrics.get(pid)
                if hit and hit.get("key") == key:
                    if self._submission is not None and (pid, tuple(key or ())) not in self._scores:
                        self._scores[(pid, tuple(key or ()))] = self._score(pid, path)
                    continue
            facts = _doc_facts(path)
            score = self._score(pid, path) if self._submission is not None else None
            with self._lock:
                self._metrics[pid] = {"key": key, **facts}
                if st.untouched and "area" in facts and facts.get("draft_sha"):
                    self._drafts[pid] = {"sha": facts["draft_sha"], "area": facts["area"], "blobs": facts["blobs"]}
                if self._submission is not None:
                    self._scores[(pid, tuple(key or ()))] = score
                self._dirty = True

    def metrics_of(self, pid: str) -> dict:
        with self._lock:
            return dict(self._metrics.get(pid) or {})

    def draft_of(self, pid: str) -> dict | None:
        """Area and blobs of the pair's pre-annotation draft, when the app saw it before it was edited."""
        with self._lock:
            m, d = self._metrics.get(pid) or {}, self._drafts.get(pid)
        if d and m.get("draft_sha") and d.get("sha") == m["draft_sha"]:
            return {"area": d["area"], "blobs": d["blobs"]}
        return None

    def validate(self, index: Index, states: dict, pids=None) -> None:
        """Run :func:`gasdb_tools.validate.validate_workspace` on every pair (or ``pids``) and keep the problems."""
        from gasdb_tools.validate import validate_workspace

        keys = {pid: _stat_key(Path(states[pid].path)) if pid in states else None
                for pid in (index.pairs if pids is None else pids)}
        problems = validate_workspace(self.ws, pairs=None if pids is None else list(pids))
        per: dict = {pid: [] for pid in keys}
        for p in problems:
            if p.pair_id in per:
                per[p.pair_id].append(p.to_dict())
        with self._lock:
            for pid, key in keys.items():
                self._problems[pid] = (key, per[pid])
            if pids is None:
                self._problems_done = True

    def problems_of(self, pid: str, states: dict) -> list | None:
        """The validate problems of a pair (None: not checked since its document last changed)."""
        with self._lock:
            hit = self._problems.get(pid)
        if hit is None:
            return None
        key = _stat_key(Path(states[pid].path)) if pid in states else None
        return hit[1] if hit[0] == key else None

    def outdated_problems(self, index: Index, states: dict) -> list[str]:
        """Pairs whose problems are unknown or older than their document."""
        return [pid for pid in index.pairs if self.problems_of(pid, states) is None]

    def _stale(self, index: Index, states: dict) -> dict:
        """Stale stages per pair, recomputed only for recordings whose rows, documents or calibration changed."""
        from gasdb_tools.status import pair_stages

        files = [self.ws.root / self.ws.SETTINGS]
        cal = self.ws.root / "calibration"
        if cal.is_dir():
            files += sorted(cal.glob("*.json"))
        common = [[f.name, _stat_key(f)] for f in files]
        prints = {}
        for rec_id, rec in index.recordings.items():
            rows = index.pairs_of(rec_id)
            blob = json.dumps([common, rec, rows, [(r["pair_id"], s.untouched, s.draft_inputs, s.geometry)
                                                   for r in rows for s in [states.get(r["pair_id"])] if s is not None]],
                              sort_keys=True)
            prints[rec_id] = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        with self._lock:
            cached = dict(self._stale_cache or {})
        todo = [rec for rec, fp in prints.items() if cached.get(rec, (None,))[0] != fp]
        if todo:
            per = pair_stages(self.ws, index, states, recordings=set(todo))
            for rec in todo:
                cached[rec] = (prints[rec], {r["pair_id"]: sorted(s for s, v in per.get(r["pair_id"], {}).items()
                                                                  if v == "stale") for r in index.pairs_of(rec)})
        cached = {rec: v for rec, v in cached.items() if rec in prints}
        with self._lock:
            self._stale_cache = cached
            if todo:
                self._dirty = True
        return {pid: stages for _, per in cached.values() for pid, stages in per.items()}

    def index(self) -> Index:
        """The index, parsed again only when pairs.csv or recordings.csv changed (both are replaced atomically)."""
        key = tuple(tuple(_stat_key(self.ws.root / n) or ()) for n in (self.ws.PAIRS, self.ws.RECORDINGS))
        with self._lock:
            if self._index_cache and self._index_cache[0] == key and all(key):
                return self._index_cache[1]
        index = self.ws.read_index()
        with self._lock:
            self._index_cache = (key, index)
        return index

    def states(self, index: Index) -> dict:
        """:func:`gasdb_tools.review.read_states`, called again only when a document file's size, times or
        inode changed (the same test read_states uses for its own cache)."""
        paths = {pid: review.label_path(self.ws, row) for pid, row in index.pairs.items()}
        with self._lock:
            index_key = self._index_cache[0] if self._index_cache and self._index_cache[1] is index else id(index)
        key = (index_key, tuple((pid, tuple(_stat_key(p) or ())) for pid, p in paths.items()))
        with self._lock:
            if self._states_cache and self._states_cache[0] == key:
                return self._states_cache[1]
        states = review.read_states(self.ws, index)
        with self._lock:
            self._states_cache = (key, states)
        return states

    # -- rows ----------------------------------------------------------------------------
    def snapshot(self):
        """``(index, states, exclusions, blacklist)`` read from the files now."""
        index = self.index()
        states = self.states(index)
        black = self.ws.blacklist()
        excluded = review.exclusions(self.ws, index, states)
        return index, states, excluded, black

    def rows(self, *, need=(), snapshot=None) -> tuple[list[PairRow], tuple]:
        """Every pair's :class:`PairRow` (in pair-id order) and the snapshot it was made from.

        ``need`` names slow facts to compute for every pair first (``metrics``, ``problems``);
        otherwise rows carry what is cached (None where nothing is).
        """
        index, states, excluded, black = snapshot or self.snapshot()
        if "metrics" in need:
            self.ensure_metrics(index, states, list(index.pairs))
            self.save_cache()
        if "problems" in need:
            todo = self.outdated_problems(index, states)
            if todo:
                self.validate(index, states, None if len(todo) == len(index.pairs) else todo)
        stale = self._stale(index, states)
        out = []
        for pid in sorted(index.pairs):
            row = index.pairs[pid]
            rec = index.recordings.get(row["recording"], {})
            st = states.get(pid)
            try:
                t = float(row.get("t_thermal") or row.get("t_rgb") or 0.0)
            except ValueError:
                t = 0.0
            key = _stat_key(Path(st.path)) if st is not None else None
            with self._lock:
                m = self._metrics.get(pid) if st is not None else None
                m = m if m and m.get("key") == key else None
                score = self._scores.get((pid, tuple(key or ()))) if self._submission is not None else None
            problems = self.problems_of(pid, states) if st is not None else (
                self._problems.get(pid, (None, None))[1])
            out.append(PairRow(
                pair_id=pid, recording=row["recording"], scene=rec.get("scene", ""), t=t,
                status=st.status if st is not None else "unlabelled", recheck=st.recheck if st else "",
                annotator=st.annotator if st else "", stale=stale.get(pid, []), excluded=excluded.get(pid, ""),
                blacklisted=pid in black, problems=None if problems is None else len(problems),
                area=(m or {}).get("area"), blobs=(m or {}).get("blobs"), score=score,
                version=_version(row, key, st)))
        self.save_cache()
        return out, (index, states, excluded, black)

    def row(self, pid: str) -> PairRow:
        rows, _ = self.rows()
        for r in rows:
            if r.pair_id == pid:
                return r
        raise KeyError(pid)


def _version(row: dict, key, state) -> str:
    """A short token that changes whenever the pair's document or its recorded outputs change."""
    parts = [row.get(c, "") for c in ("extract_digest", "align_digest", "enhance_digest", "enhanced", "aligned")]
    text = "\x1f".join([*parts, repr(key), state.status if state else ""])
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def counts_table(rows) -> dict:
    """``{status: n}`` over rows, plus ``recheck``, ``excluded``, ``stale`` and ``total``."""
    out = {s: 0 for s in ("pending", "edited", "approved", "unlabelled")}
    for r in rows:
        out[r.status] = out.get(r.status, 0) + 1
    out["recheck"] = sum(1 for r in rows if r.recheck)
    out["excluded"] = sum(1 for r in rows if r.excluded)
    out["stale"] = sum(1 for r in rows if r.stale)
    out["total"] = len(rows)
    return out

