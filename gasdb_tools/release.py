"""Versioned, verifiable dataset releases (the ``gasdb release`` and ``gasdb verify`` stages).

A release is one folder (``docs/formats.md`` §5)::

    OUT/
      gasdb.h5                    HDF5 pack: frames in per-size blocks, /meta, /splits (formats.md §4)
      gasdb/                      the Gas-DB / RT-CAN layout (images/, labels/ 0/1, ignore/, lists, index.csv)
      coco/annotations/instances_<split>.json, coco/images/<split>/<name>.png   COCO that loads in place
      hf/README.md, hf/data/<split>-NNNNN-of-NNNNN.parquet  Hugging Face datasets (Parquet + dataset card)
      croissant.json              MLCommons Croissant metadata (files with sha256, record sets, fields)
      index.csv                   name, pair_id, recording, scene, split, modality, review (one row per pair)
      split.json                  the workspace split file the release was cut from
      exclusions.csv              pair_id, recording, reason (blacklisted and unlabelled pairs)
      figures/*.png               samples per scene, gas-coverage histogram, split balance
      index.html                  a static page: counts, review numbers, figures, changes since the parent
      DATASHEET.md                "Datasheets for Datasets" sections, from recorded facts only
      manifest.json               version, parent, licence, counts, review, sources, sha256 + bytes per file
      SHA256SUMS                  ``sha256sum -c`` format, every file but itself

Every pair is read once, in its annotation frame (:func:`gasdb_tools.export.read_pair`); worker
processes encode and compress everything it becomes and write its own files (Gas-DB PNGs, COCO
image; source PNGs whose pixels are unchanged are copied byte for byte), and the main process
writes the shared files (HDF5 chunks, Parquet rows, COCO JSON) in pair-id order, so the build is
byte-reproducible whatever the number of workers. It is built in ``OUT.partial-XXXX`` next to
``OUT`` and renamed at the very end; any failure (a full disk included) removes the partial
folder; the workspace is only read. :func:`verify_release` recomputes every hash and count, names
each corrupted, missing, extra or unsafe file, and never follows a path out of the release.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import sys
import tempfile
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from gasdb_tools import __version__
from gasdb_tools.croissant import NO_LICENSE
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.fsutil import follow_umask, read_json, sha256_file

__all__ = [
    "H5_NAME",
    "INDEX_COLUMNS",
    "ReleasePlan",
    "VerifyReport",
    "plan_release",
    "unreviewed",
    "build_release",
    "make_release",
    "verify_release",
]

#: File name of the HDF5 pack inside a release.
H5_NAME = "gasdb.h5"
#: Columns of ``index.csv`` (the scorer reads name, scene and recording).
INDEX_COLUMNS = ("name", "pair_id", "recording", "scene", "split", "modality", "review")
_RELEASE_FORMAT = "gasdb-release"
_FORMAT_VERSION = 2
_CLASS_NAMES = ("background", "gas")
_IGNORE_INDEX = 255
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?$")
_SPDX = re.compile(r"^[A-Za-z0-9.+-]+(?: (?:AND|OR|WITH) [A-Za-z0-9.+-]+)*$")
_MANIFEST = "manifest.json"
_SUMS = "SHA256SUMS"
_UNREVIEWED = ("pending",)


# ---------------------------------------------------------------------------------------------
# planning (checks on the index and the files' headers; nothing is written)
# ---------------------------------------------------------------------------------------------
def _parse_version(value: str, what: str) -> tuple:
    m = _SEMVER.match(value or "") if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{what} must be a semantic version like 1.0.0 (MAJOR.MINOR.PATCH), got {value!r}")
    return tuple(int(x) for x in m.groups()[:3]) + ((0,) if m.group(4) else (1,))


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """``(width, height, bit depth, colour type)`` from a PNG's IHDR (the file is not decoded)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except FileNotFoundError:
        raise FormatError("frame file not found", file=path, fix="rerun the stage that writes it (gasdb status)") \
            from None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise FormatError("not a PNG file", file=path, fix="rerun the stage that writes it")
    w, h = struct.unpack(">II", head[16:24])
    return w, h, head[24], head[25]


@dataclass
class ReleasePlan:
    """What a release will hold, checked against the workspace before anything is written."""

    ids: list  # pair ids, sorted (sample order of the HDF5 pack)
    split_of: dict  # pair id -> split name
    splits: dict  # split name -> pair ids
    names: dict  # pair id -> Gas-DB name (released pairs and labelled blacklisted ones)
    pairs: dict  # pair id -> pairs.csv row (label resolved)
    recordings: dict  # recording id -> recordings.csv row
    split_doc: dict  # the split file
    excluded: list  # [{pair_id, recording, reason}]
    calibration: dict  # rig -> calibration JSON
    states: dict = field(default_factory=dict)  # pair id -> review.DocState
    layout_only: list = field(default_factory=list)  # labelled blacklisted pairs: Gas-DB layout only
    blacklist: dict = field(default_factory=dict)  # pair id -> reason (of layout_only pairs)
    frames: dict = field(default_factory=dict)  # pair id -> (block, (height, width), thermal dtype)

    def scene(self, pid: str) -> str:
        return self.recordings.get(self.pairs[pid]["recording"], {}).get("scene", "") or ""


def plan_release(ws, *, split: str = "default", require_reviewed: bool = False) -> ReleasePlan:
    """Check that the split can be released from the workspace as it is now, and list what goes in.

    Reads the review state from the LabelMe documents (:func:`gasdb_tools.review.read_states`) and
    each frame's PNG header (size and bit depth) so a release of mixed cameras is planned before
    anything is written.

    Raises
    ------
    WorkspaceError
        No such split; the split names pairs the workspace no longer has, pairs that are now
        excluded or unlabelled (re-split); an RGB + thermal pair that is not aligned; with
        ``require_reviewed``, pairs whose masks nobody reviewed.
    FormatError
        A frame file missing or not a PNG.
    """
    from gasdb_tools import h5pack, review, views
    from gasdb_tools.export import default_names
    from gasdb_tools.splits import SPLIT_NAMES, load_split, split_path

    split_obj = load_split(ws, split)
    path = split_path(ws, split)
    index = ws.read_index()
    states = review.read_states(ws, index)
    black = review.exclusions(ws, index, states)
    pairs = {p: review.with_label(ws, row) for p, row in index.pairs.items()}
    split_of = split_obj.split_of()
    stale = []
    for pid in sorted(split_of):
        if pid not in pairs:
            stale.append(f"{pid} (no longer in pairs.csv)")
        elif pid in black:
            stale.append(f"{pid} (now excluded: {black[pid] or 'no reason'})")
        elif pid not in states:
            stale.append(f"{pid} (has no label)")
    if stale:
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise WorkspaceError(f"the split is stale: {', '.join(stale[:5])}{more}", file=path,
                             fix=f"re-run `gasdb split {ws.root} --force` with the same seed")
    ids = sorted(split_of)
    if not ids:
        raise WorkspaceError("the split holds no pairs", file=path, fix="label pairs, then re-run `gasdb split`")
    recs = {pairs[pid]["recording"] for pid in ids}
    layout_only = [p for p in sorted(black) if p in pairs and p in states and p not in split_of]
    recordings = {r: dict(index.recordings.get(r, {"id": r})) for r in sorted(recs | {pairs[p]["recording"]
                                                                                    for p in layout_only})}
    unaligned = [pid for pid in ids + layout_only
                 if recordings[pairs[pid]["recording"]].get("rgb") and not pairs[pid].get("aligned")]
    if unaligned:
        raise WorkspaceError(f"{len(unaligned)} RGB + thermal pair(s) have no aligned thermal frame (e.g. "
                             f"{unaligned[0]}), so their RGB and thermal frames are not in one frame",
                             file=ws.root / ws.PAIRS, field="aligned",
                             fix="run `gasdb calibrate` and `gasdb align`, then `gasdb preannotate`")
    if require_reviewed:
        todo = [p for p in ids if states[p].status in _UNREVIEWED or states[p].recheck]
        if todo:
            raise WorkspaceError(f"{len(todo)} of {len(ids)} released masks are not reviewed (pending drafts or "
                                 f"marked for a recheck), e.g. {todo[0]}",
                                 file=ws.path(pairs[todo[0]]["label"]) if pairs[todo[0]].get("label") else path,
                                 fix="review them (gasdb label / gasdb review --approve), or release without "
                                     "--require-reviewed")
    frames = {}
    for pid in ids + layout_only:
        row = pairs[pid]
        rec = recordings[row["recording"]]
        kind = views.source_kind(rec, row)
        if not row.get(kind):
            raise WorkspaceError(f"pair {pid} has no {kind} thermal frame", file=ws.root / ws.PAIRS, field=kind,
                                 fix="rerun `gasdb extract`" if kind == "thermal" else "rerun `gasdb align`")
        w, h, depth, colour = _png_header(ws.path(row[kind]))
        if colour not in (0, 4) or depth not in (8, 16):
            raise FormatError(f"thermal frame is not an 8- or 16-bit single-channel PNG (colour type {colour}, "
                              f"{depth} bits)", file=ws.path(row[kind]), fix="re-extract the recording")
        if rec.get("rgb"):
            _png_header(ws.path(row["rgb"]))  # present and a PNG
        tdtype = "uint8" if depth == 8 else "uint16"
        frames[pid] = (h5pack.block_name(w, h, tdtype), (h, w), tdtype)
    rigs = sorted({recordings[r].get("rig") or ws.settings.get("rig", "default") for r in recs
                   if recordings[r].get("rgb")})
    calibration = {}
    for rig in rigs:
        cal = ws.root / "calibration" / f"{rig}.json"
        if cal.is_file():
            calibration[rig] = read_json(cal)
    excluded = []
    for pid in sorted(pairs):
        if pid in split_of:
            continue
        if pid in black:
            reason = f"blacklisted: {black[pid] or 'no reason given'}"
        elif pid not in states:
            reason = "unlabelled"
        else:
            reason = "not in the split"
        excluded.append({"pair_id": pid, "recording": pairs[pid]["recording"], "reason": reason})
    names = [s for s in SPLIT_NAMES if s in split_obj.pairs] + sorted(s for s in split_obj.pairs
                                                                       if s not in SPLIT_NAMES)
    return ReleasePlan(
        ids=ids, split_of=split_of, splits={s: sorted(split_obj.pairs[s]) for s in names},
        names=default_names(set(ids) | set(layout_only)),
        pairs={pid: dict(pairs[pid]) for pid in ids + layout_only},
        recordings=recordings, split_doc=read_json(path), excluded=excluded, calibration=calibration,
        states={p: states[p] for p in ids + layout_only}, layout_only=layout_only,
        blacklist={p: black[p] or "no reason given" for p in layout_only}, frames=frames,
    )


def unreviewed(plan: ReleasePlan) -> list[str]:
    """Released pairs whose masks nobody reviewed (pending drafts, or marked for a recheck)."""
    return [p for p in plan.ids if plan.states[p].status in _UNREVIEWED or plan.states[p].recheck]


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
def _created(created) -> str:
    if created is not None:
        return str(created)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible-builds.org convention
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.timezone.utc))
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _check_out(ws, out: Path, force: bool) -> None:
    root = ws.root
    target = out.resolve()
    if target == root or root in target.parents:
        raise WorkspaceError("the release folder is inside the workspace", file=out,
                             fix="build the release outside the workspace (a release never modifies it)")
    if target in root.parents:
        raise WorkspaceError("the release folder contains the workspace", file=out, fix="choose another folder")
    if out.exists() or out.is_symlink():
        if not force:
            raise WorkspaceError("the release folder already exists", file=out,
                                 fix="choose a new folder, or pass --force to replace this release")
        if not out.is_dir() or (any(out.iterdir()) and not _looks_like_release(out)):
            raise WorkspaceError("refusing to replace a folder that is not a gasdb release", file=out,
                                 fix="choose a new folder for the release")


def _looks_like_release(path: Path) -> bool:
    try:
        return json.loads((path / _MANIFEST).read_text(encoding="utf-8")).get("format") == _RELEASE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def build_release(ws, out, *, version: str, parent_version: str | None = None, parent=None,
                  license: str = NO_LICENSE, split: str = "default", force: bool = False,
                  created: str | None = None, compression: int = 1, jobs: int | None = None,
                  require_reviewed: bool = False) -> Path:
    """Build a versioned release folder from a workspace and one of its split files.

    Parameters
    ----------
    ws : Workspace
        The workspace; it is only read.
    out : path
        The release folder to create (outside the workspace). It must not exist unless ``force``
        (and then it must be a previous gasdb release).
    version : str
        Semantic version ``MAJOR.MINOR.PATCH`` (Croissant 1.1 semantics: PATCH repackages, MINOR
        adds, MAJOR changes, removes or reshuffles records).
    parent_version : str, optional
        The release this one derives from (must be lower than ``version``).
    parent : path, optional
        The previous release folder: its version becomes ``parent_version`` (unless given) and
        the changes since it (:func:`gasdb_tools.release_diff.diff_releases`) go into the manifest
        and the page.
    license : str
        SPDX licence id of the data (e.g. ``CC-BY-4.0``). The default, ``NOASSERTION`` (SPDX's "no
        licence stated"), makes the datasheet, page, card and Croissant file say that none was given.
    split : str
        Name of the split file ``WS/splits/<split>.json`` (make it with ``gasdb split``).
    created : str, optional
        Creation time written in the manifest; default ``SOURCE_DATE_EPOCH`` when set, else now (UTC).
    compression : int
        gzip level of the HDF5 pack's chunks (with the shuffle filter; one chunk per frame).
    jobs : int, optional
        Encoding worker processes (default: the number of CPUs, at most 8; 1 encodes in this
        process). The bytes do not depend on it.
    require_reviewed : bool
        Refuse to release masks nobody reviewed (pending drafts, rechecks).

    Returns
    -------
    pathlib.Path
        ``out``, complete (manifest and SHA256SUMS written last, then the folder renamed into place).

    Raises
    ------
    WorkspaceError
        Bad output folder, stale split, unaligned RGB + thermal pairs, unreviewed masks with
        ``require_reviewed`` (see :func:`plan_release`).
    ValueError
        Bad version, parent version or licence.
    OSError
        The disk is full or read-only (nothing is left behind).
    """
    ver = _parse_version(version, "version")
    parent_dir = None
    if parent is not None:
        parent_dir = Path(parent)
        pm = _read_manifest(parent_dir)
        parent_version = parent_version or pm.get("version")
    if parent_version is not None and _parse_version(parent_version, "parent_version") >= ver:
        raise ValueError(f"parent_version {parent_version} must be lower than version {version}")
    if not isinstance(license, str) or not _SPDX.match(license):
        raise ValueError(f"license must be an SPDX identifier such as CC-BY-4.0, got {license!r}")
    if not 0 <= int(compression) <= 9:
        raise ValueError(f"compression must be a gzip level 0-9, got {compression}")
    jobs = int(jobs) if jobs else min(8, os.cpu_count() or 1)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    out = Path(out)
    _check_out(ws, out, force)
    plan = plan_release(ws, split=split, require_reviewed=require_reviewed)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise _disk_error(exc, out) from exc
    try:
        follow_umask(partial)  # mkdtemp makes 0700; a release is shared like any folder
        _build_into(ws, plan, partial, version=version, parent_version=parent_version, parent_dir=parent_dir,
                    license=license, split=split, created=_created(created), compression=int(compression),
                    jobs=jobs)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
            os.replace(out, old / "release")
            os.replace(partial, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, out)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise _disk_error(exc, out) from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _disk_error(exc: OSError, out: Path) -> Exception:
    """One line for a failed write (HDF5 reports several lines): what, where, and that nothing was left."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return WorkspaceError(f"{os.strerror(exc.errno)} while writing the release (nothing was left behind)",
                              file=out, fix="free disk space (about the size of the workspace's frames), then rerun")
    if exc.errno == errno.EROFS:
        return WorkspaceError("the file system is read-only", file=out, fix="choose a writable folder for the release")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return WorkspaceError("permission denied", file=exc.filename or out, fix="check the folder's permissions")
    if exc.errno:
        return WorkspaceError(f"{os.strerror(exc.errno)} while writing the release (nothing was left behind)",
                              file=exc.filename or out, fix="check the disk, then rerun")
    return exc


def _read_manifest(path: Path) -> dict:
    try:
        doc = json.loads((Path(path) / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkspaceError(f"cannot read the parent release's manifest ({exc})", file=Path(path) / _MANIFEST,
                             fix="pass the folder of a previous gasdb release to --parent") from None
    if not isinstance(doc, dict) or doc.get("format") != _RELEASE_FORMAT:
        raise WorkspaceError("not a gasdb release manifest", file=Path(path) / _MANIFEST,
                             fix="pass the folder of a previous gasdb release to --parent")
    return doc


class _Files:
    """Writes release files and remembers their size and sha256 (no file is read back)."""

    def __init__(self, root: Path):
        import threading

        self.root = root
        self.known: dict[str, tuple[int, str]] = {}
        self._dirs: set = set()
        self._lock = threading.Lock()

    def put(self, rel: str, data: bytes, digest: str | None = None) -> None:
        """Write one file (flushed to disk) and record its size and sha256; safe from worker threads."""
        path = self.root / rel
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._dirs.add(path.parent)
        digest = digest or hashlib.sha256(data).hexdigest()
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with self._lock:
            self.known[rel] = (len(data), digest)

    def text(self, rel: str, text: str) -> None:
        self.put(rel, text.encode("utf-8"))

    def json(self, rel: str, obj) -> None:
        from gasdb_tools.fsutil import dumps_json

        self.text(rel, dumps_json(obj))

    def csv(self, rel: str, columns, rows) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        self.text(rel, buf.getvalue())

    def listing(self) -> list[dict]:
        """Every file under the root but the manifest and SHA256SUMS: path, bytes, sha256 (sorted)."""
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = path.relative_to(self.root).as_posix()
                if rel in (_MANIFEST, _SUMS):
                    continue
                if rel not in self.known:
                    self.known[rel] = (path.stat().st_size, sha256_file(path))
                size, digest = self.known[rel]
                files.append({"path": rel, "bytes": size, "sha256": digest})
        return sorted(files, key=lambda f: f["path"])


def _write_synced(path: Path, data: bytes) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return len(data), hashlib.sha256(data).hexdigest()


def _encode_pair(ws, plan: ReleasePlan, pid: str, stretch, level: int, root: Path) -> dict:
    """Everything one pair becomes, encoded (runs in a worker process). The pair's own files (Gas-DB
    layout, COCO image) are written here and listed in ``written``; what goes into shared files
    (HDF5, Parquet, COCO JSON) is returned for the main process to write in pair-id order."""
    from gasdb_tools import coco as coco_mod
    from gasdb_tools import export, gasdb_layout, h5pack, labelme_format
    from gasdb_tools.imaging import encode_png

    row = plan.pairs[pid]
    rec = plan.recordings[row["recording"]]
    layout_only = pid in plan.blacklist
    frames = export.read_pair(ws, row, rec, unlabelled="background" if layout_only else "error", keep_bytes=True)
    ignore = frames.mask == labelme_format.IGNORE_INDEX
    label01 = np.where(ignore, 0, frames.mask).astype(np.uint8)
    th8 = export.gasdb_thermal(ws, frames, row, "aligned", stretch)
    rgb = frames.rgb_or_zeros()

    def sha(b):
        return hashlib.sha256(b).hexdigest()

    written = {}
    for rel, data in gasdb_layout.encode_sample(rgb, th8, label01, ignore=ignore).items():
        rel = f"gasdb/{rel.format(name=plan.names[pid])}"
        written[rel] = _write_synced(root / rel, data)
    out = {"pid": pid, "written": written}
    if layout_only:
        return out
    block, (h, w), tdtype = plan.frames[pid]
    if frames.size != (w, h) or frames.thermal.dtype != np.dtype(tdtype):
        raise FormatError(f"pair {pid}: thermal frame is {frames.size[0]}x{frames.size[1]} {frames.thermal.dtype}, "
                          f"the plan read {w}x{h} {tdtype}", file=ws.path(row.get(frames.thermal_source) or "."),
                          fix="a stage rewrote the frames during the build: run `gasdb release` again")
    mask_png = encode_png(frames.mask, compression=1)
    src = frames.files
    hf = {"rgb": None if frames.rgb is None else (src.get("rgb") or encode_png(frames.rgb, compression=1)),
          "thermal": src.get("thermal") or encode_png(frames.thermal, compression=1),
          "mask": mask_png,
          "valid": src.get("valid") or encode_png(frames.valid, compression=1)}
    view, view_source = export.annotation_view(frames, stretch)
    rel = f"coco/images/{plan.split_of[pid]}/{plan.names[pid]}.png"
    written[rel] = _write_synced(root / rel, view)
    out.update({
        "info": {"size": frames.size, "modality": frames.modality, "recording": frames.recording,
                 "rgb_resized_from": "" if not frames.rgb_resized else "{}x{}".format(*frames.rgb_native),
                 "thermal_dtype": frames.thermal.dtype.name, "thermal_source": frames.thermal_source},
        "rgb": rgb, "thermal": frames.thermal,
        "chunks": {"rgb": h5pack.encode_chunk(rgb, level), "thermal": h5pack.encode_chunk(frames.thermal, level),
                   "mask": h5pack.encode_chunk(frames.mask, level), "valid": h5pack.encode_chunk(frames.valid, level)},
        "hf": hf, "view_source": view_source,
        "coco_anns": coco_mod.mask_annotations(frames.mask, frames.instances),
        "gas": int(np.count_nonzero(frames.mask == 1)), "labelled": int(np.count_nonzero(~ignore)),
        "mask_sha256": sha(frames.mask.tobytes()),
        "draft_frame": str(((frames.doc or {}).get("gasdb") or {}).get("frame") or "")
        if isinstance((frames.doc or {}).get("gasdb"), dict) else "",
    })
    return out


_WORKER: dict = {}


def _init_worker(ws, plan, stretch, level, root, *, main: bool = False) -> None:
    if not main:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the main process, which removes the folder
    _WORKER.update(ws=ws, plan=plan, stretch=stretch, level=level, root=root)


def _encode_task(pid: str) -> dict:
    w = _WORKER
    return _encode_pair(w["ws"], w["plan"], pid, w["stretch"][w["plan"].pairs[pid]["recording"]], w["level"],
                        w["root"])


class _InProcess:
    """The executor interface, run in the calling process (``jobs=1``)."""

    def __init__(self, *args):
        _init_worker(*args, main=True)

    def submit(self, func, *args):
        from concurrent.futures import Future

        fut = Future()
        try:
            fut.set_result(func(*args))
        except Exception as exc:  # noqa: BLE001 - delivered through the future, as a pool would
            fut.set_exception(exc)
        return fut

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _WORKER.clear()
        return False


def _pool(jobs: int, args: tuple):
    """Worker processes (forked: the plan is not pickled) for ``jobs`` > 1, else the calling process.

    Processes, not threads: reading LabelMe documents and rasterising them holds the GIL."""
    if jobs == 1:
        return _InProcess(*args)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=args)


def _ordered(pool, func, items, window: int):
    """``pool.map`` in order, with at most ``window`` results in flight (bounded memory)."""
    pending = deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(func, item))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(func, nxt))
        yield result


def _build_into(ws, plan: ReleasePlan, root: Path, *, version, parent_version, parent_dir, license, split,
                created, compression, jobs) -> None:
    from gasdb_tools import gasdb_layout, h5pack, hf_export, release_docs
    from gasdb_tools.coco import CATEGORIES, check_coco
    from gasdb_tools.export import recording_stretches
    from gasdb_tools.progress import progress
    from gasdb_tools.recordings import modality
    from gasdb_tools.splits import FrameAudit

    files = _Files(root)
    name = _dataset_name(ws)
    stretch = recording_stretches(ws, plan.recordings, ws.read_index())
    blocks_n = Counter(plan.frames[p][0] for p in plan.ids)
    blocks = {b: (n, next(plan.frames[p][1] for p in plan.ids if plan.frames[p][0] == b),
                  next(plan.frames[p][2] for p in plan.ids if plan.frames[p][0] == b)) for b, n in blocks_n.items()}
    attrs = {"dataset_name": name, "dataset_version": version, "parent_version": parent_version or "",
             "license": license, "generator": f"gasdb-tools {__version__}", "class_names": list(_CLASS_NAMES),
             "ignore_index": _IGNORE_INDEX, "calibration": json.dumps(plan.calibration, sort_keys=True),
             "split_method": str(plan.split_doc.get("method", ""))}
    block_rows = Counter()
    row_of = {}
    for pid in plan.ids:
        b = plan.frames[pid][0]
        row_of[pid] = block_rows[b]
        block_rows[b] += 1
    audit = FrameAudit()
    per: dict[str, dict] = {}
    meta = defaultdict(list)
    coco = {s: {"images": [], "annotations": []} for s in plan.splits}
    coco_ids = {s: {p: i + 1 for i, p in enumerate(ids)} for s, ids in plan.splits.items()}
    order = sorted(plan.ids + plan.layout_only)
    for rel in {f"coco/images/{s}" for s in plan.splits} | {"gasdb/images", "gasdb/labels", "gasdb/ignore"}:
        (root / rel).mkdir(parents=True, exist_ok=True)
    pack = hf = None
    try:
        with _pool(jobs, (ws, plan, stretch, compression, root)) as pool:
            for f in [pool.submit(os.getpid) for _ in range(jobs)]:
                f.result()  # workers are forked before any file is open here
            pack = h5pack.PackWriter(root / H5_NAME, blocks, attrs, level=compression)
            hf = hf_export.ShardWriter(root / "hf", {s: len(ids) for s, ids in plan.splits.items()})
            work = _ordered(pool, _encode_task, order, window=2 * jobs + 2)
            for res in progress(work, total=len(order), desc="release", unit="pair"):
                pid = res["pid"]
                files.known.update(res["written"])
                if pid in plan.blacklist:
                    continue
                fr = res["info"]
                pack.write(plan.frames[pid][0], row_of[pid], res["chunks"])
                s = plan.split_of[pid]
                nm = plan.names[pid]
                state = plan.states[pid]
                image_id = coco_ids[s][pid]
                coco[s]["images"].append({"id": image_id, "file_name": f"{nm}.png", "height": fr["size"][1],
                                          "width": fr["size"][0], "pair_id": pid, "recording": fr["recording"],
                                          "modality": fr["modality"]})
                for ann in res["coco_anns"]:
                    coco[s]["annotations"].append({"id": len(coco[s]["annotations"]) + 1, "image_id": image_id,
                                                   **ann})
                audit.add(pid, s, {"rgb": res["rgb"], "thermal": res["thermal"]})
                resized = fr["rgb_resized_from"]
                row = plan.pairs[pid]
                values = {"pair_id": pid, "name": nm, "recording": fr["recording"], "scene": plan.scene(pid),
                          "split": s, "review": state.status, "modality": fr["modality"],
                          "block": plan.frames[pid][0], "rgb_resized_from": resized,
                          "mask_sha256": res["mask_sha256"], "row": row_of[pid], "height": fr["size"][1],
                          "width": fr["size"][0], "gas_pixels": res["gas"]}
                for t in ("t_rgb", "t_thermal", "dt"):
                    values[t] = float(row.get(t) or "nan")
                values["sensors"] = _sensor_readings(row)
                for k, v in values.items():
                    meta[k].append(v)
                hf.add(s, {**values, **res["hf"]})
                per[pid] = {"gas": res["gas"], "labelled": res["labelled"], "review": state.status,
                            "recheck": bool(state.recheck), "preannot": dict(state.preannot),
                            "untouched": bool(state.untouched), "draft_frame": res["draft_frame"],
                            "view_source": res["view_source"], "modality": fr["modality"],
                            "size": list(fr["size"]), "rgb_resized_from": resized,
                            "thermal_dtype": fr["thermal_dtype"], "thermal_source": fr["thermal_source"],
                            "index": len(per),
                            "block": plan.frames[pid][0], "row": row_of[pid]}
        pos = {pid: k for k, pid in enumerate(plan.ids)}
        pack.finish(meta, {s: sorted(pos[p] for p in ids) for s, ids in plan.splits.items()})
        _fsync(root / H5_NAME)
    except BaseException:
        if pack is not None:
            pack.close()
        if hf is not None:
            hf.abort()
        raise
    shards = hf.close()
    for rel, (size, digest) in shards.items():
        files.known[f"hf/{rel}"] = (size, digest)
        _fsync(root / "hf" / rel)

    # the Gas-DB layout's lists and index
    lists = {s: [plan.names[p] for p in ids] for s, ids in plan.splits.items()}
    for required in ("train", "test"):
        lists.setdefault(required, [])
    for s, names in lists.items():
        files.text(f"gasdb/{s}.txt", "".join(f"{n}\n" for n in sorted(names)))
    files.text("gasdb/blacklist.txt", "".join(f"{plan.names[p]}\n" for p in sorted(plan.layout_only,
                                                                                    key=plan.names.get)))
    layout_rows = []
    for pid in sorted(plan.ids + plan.layout_only, key=plan.names.get):
        info = per.get(pid)
        rec = plan.recordings[plan.pairs[pid]["recording"]]
        layout_rows.append([plan.names[pid], pid, plan.pairs[pid]["recording"], plan.split_of.get(pid, ""),
                            plan.blacklist.get(pid, ""), info["modality"] if info else modality(rec),
                            info["rgb_resized_from"] if info else ""])
    files.csv("gasdb/index.csv", gasdb_layout.INDEX_COLUMNS, layout_rows)

    # COCO, one file per split, images inside the release
    for s, doc in coco.items():
        full = {"info": {"description": f"{name} {version}, split {s}: gas instances (iscrowd 0) and ignore "
                                        "regions (iscrowd 1) on the thermal images annotators saw",
                         "version": version, "year": int(created[:4]), "date_created": created},
                "licenses": [{"id": 1, "name": license, "url": ""}],
                "images": [{**im, "license": 1} for im in doc["images"]],
                "annotations": doc["annotations"], "categories": [dict(c) for c in CATEGORIES]}
        check_coco(full)
        files.json(f"coco/annotations/instances_{s}.json", full)

    files.csv("index.csv", INDEX_COLUMNS,
              [[plan.names[p], p, plan.pairs[p]["recording"], plan.scene(p), plan.split_of[p], per[p]["modality"],
                per[p]["review"]] for p in plan.ids])
    files.csv("exclusions.csv", ("pair_id", "recording", "reason"),
              [[e["pair_id"], e["recording"], e["reason"]] for e in plan.excluded])
    files.json("split.json", plan.split_doc)
    identical, near = audit.findings()
    summary = release_docs.summary(plan, per, identical, near, audit.params)
    meta_doc = {"version": version, "parent_version": parent_version, "license": license, "created": created,
                "name": name, "split_name": split}
    changes = None
    if parent_dir is not None:
        from gasdb_tools.release_diff import diff_releases, version_check

        changes = diff_releases(parent_dir, root, check_b=False)
        meta_doc["versioning"] = version_check(changes, changes["a"]["version"], version)
    figures = release_docs.figures(root, plan, per, files)
    hf_card = hf_export.dataset_card(meta_doc, summary, {s: len(ids) for s, ids in plan.splits.items()},
                                     {rel: size for rel, (size, _) in shards.items()})
    files.text("hf/README.md", hf_card)
    files.text("DATASHEET.md", release_docs.datasheet(plan, summary, meta_doc))
    files.text("index.html", release_docs.html(plan, summary, meta_doc, figures, changes))
    from gasdb_tools.croissant import croissant_document

    files.json("croissant.json", croissant_document(meta_doc, summary, plan, files.listing()))
    listing = files.listing()
    manifest = {
        "format": _RELEASE_FORMAT,
        "format_version": _FORMAT_VERSION,
        "name": name,
        "version": version,
        "parent_version": parent_version,
        "created": created,
        "license": license,
        "generator": {"tool": "gasdb-tools", "version": __version__, "git_commit": _source_commit(),
                      "python": ".".join(map(str, sys.version_info[:3]))},
        "classes": {str(i): n for i, n in enumerate(_CLASS_NAMES)},
        "ignore_index": _IGNORE_INDEX,
        "frames": summary["frames"],
        "calibration": plan.calibration,
        "split": {"name": split, **{k: plan.split_doc.get(k) for k in
                                    ("method", "seed", "ratios", "group_key", "group_by", "stratify",
                                     "leaks_across_splits", "balance")}},
        "counts": summary["counts"],
        "annotation": summary["annotation"],
        "recordings": summary["recordings"],
        "leakage_audit": summary["leakage_audit"],
        "exclusions": plan.excluded,
        "changes": changes,
        "versioning": meta_doc.get("versioning"),
        "links": {"datasheet": "DATASHEET.md", "page": "index.html", "checksums": _SUMS, "index": "index.csv",
                  "hdf5": H5_NAME, "gasdb_layout": "gasdb/", "coco": "coco/annotations/", "hf": "hf/",
                  "croissant": "croissant.json"},
        "files": listing,
    }
    files.json(_MANIFEST, manifest)
    sums = [(files.known[_MANIFEST][1], _MANIFEST)] + [(f["sha256"], f["path"]) for f in listing]
    files.text(_SUMS, "".join(f"{h}  {p}\n" for h, p in sorted(sums, key=lambda x: x[1])))


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _sensor_readings(pair: Mapping) -> str:
    """A pair's attached gas-sensor reading as compact JSON ``{"t", "dt", "<channel>": value, ...}``
    ('' when its recording logs no sensors or no reading was near enough; see :mod:`gasdb_tools.sensors`)."""
    if not pair.get("sensor_t"):
        return ""
    out = {"t": float(pair["sensor_t"]), "dt": float(pair["sensor_dt"])}
    out.update({k[len("sensor:"):]: float(v) for k, v in sorted(pair.items()) if k.startswith("sensor:") and v != ""})
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


def _dataset_name(ws) -> str:
    return str(ws.settings.get("name") or ws.root.name)


def _source_commit() -> str | None:
    """The git commit of the gasdb-tools checkout, when it runs from one (no subprocess)."""
    git = Path(__file__).resolve().parents[1] / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            for base in (git, git.parent.parent if git.parent.name == "worktrees" else git):
                loose = base / ref
                if loose.is_file():
                    return loose.read_text().strip()
                packed = base / "packed-refs"
                if packed.is_file():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split()[0]
            return None
        return head or None
    except (OSError, IndexError):
        return None


def make_release(ws, out, *, version: str = "0.1.0", method: str = "video", ratios="0.8,0.2", seed: int = 0,
                 split: str = "default", force: bool = False) -> dict:
    """Split (when ``WS/splits/<split>.json`` does not exist yet), build and verify a release in one call.

    The call ``gasdb demo`` makes; the commands are ``gasdb split``, ``gasdb release`` and ``gasdb verify``.

    Returns
    -------
    dict
        ``{"split": path, "release": path, "version", "counts": {split: pairs}, "verified": bool,
        "problems": [...]}``.
    """
    from gasdb_tools.splits import split_path, split_workspace

    path = split_path(ws, split)
    if not path.exists():
        split_workspace(ws, method=method, ratios=ratios, seed=seed, name=split)
    out = build_release(ws, out, version=version, split=split, force=force)
    report = verify_release(out)
    manifest = read_json(out / _MANIFEST)
    return {"split": str(path), "release": str(out), "version": version,
            "counts": {s: c["pairs"] for s, c in manifest["counts"]["splits"].items()},
            "verified": report.ok, "problems": report.to_dict()["problems"]}


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """Result of :func:`verify_release`. ``problems`` holds ``{file, kind, detail}`` dicts.

    ``kind`` is ``corrupted`` (hash or size differs), ``missing``, ``extra`` (a file the manifest does
    not list), ``unsafe`` (an absolute path, a ``..`` component, a symlink, or a path that resolves
    outside the release), ``count`` (a recomputed count differs from the manifest) or ``format``
    (unreadable or malformed).
    """

    path: str
    version: str | None = None
    files_checked: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str, kind: str, detail: str) -> None:
        self.problems.append({"file": file, "kind": kind, "detail": detail})

    def to_dict(self) -> dict:
        return {"path": self.path, "version": self.version, "ok": self.ok, "files_checked": self.files_checked,
                "problems": sorted(self.problems, key=lambda p: (p["file"], p["kind"]))}


def _unsafe(rel, root: Path) -> str | None:
    """Why a listed path must not be opened ('' / None when it is a plain relative path inside ``root``)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return "not a path"
    if "\\" in rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return "absolute or Windows path"
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".", "") for p in parts) or rel != PurePosixPath(rel).as_posix():
        return "path with '..' or '.' components"
    cur = root
    for p in parts:
        cur = cur / p
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cannot be checked ({exc.strerror})"
        if stat.S_ISLNK(st.st_mode):
            return "a symbolic link"
    try:
        if root.resolve() not in cur.resolve().parents:
            return "resolves outside the release"
    except OSError:
        return "cannot be resolved"
    return None


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_sums(path: Path, report: VerifyReport) -> dict[str, str]:
    sums: dict[str, str] = {}
    if not path.exists() and not path.is_symlink():
        report.add(_SUMS, "missing", "the checksum file is missing")
        return sums
    if not _is_regular(path):
        report.add(_SUMS, "unsafe", "not a regular file (a symbolic link or a folder)")
        return sums
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.add(_SUMS, "format", f"cannot read it ({exc})")
        return sums
    for n, line in enumerate(text.splitlines(), start=1):
        m = re.match(r"^([0-9a-f]{64}) [ *](.+)$", line)
        if not m:
            report.add(_SUMS, "format", f"line {n} is not '<sha256>  <path>'")
            continue
        sums[m.group(2)] = m.group(1)
    return sums


def verify_release(path) -> VerifyReport:
    """Recompute every hash and count of a release; report each corrupted, missing, extra or unsafe file.

    Checks, in order: every path listed in ``SHA256SUMS`` and ``manifest.json`` is a plain
    relative path inside the release (never absolute, never ``..``, no symbolic link on the way);
    ``SHA256SUMS`` against every file it lists (``manifest.json`` included); the manifest's sha256
    and byte count of every file; files present but listed nowhere (extra), symbolic links
    anywhere (unsafe); then, for files whose hashes match, the counts: rows of ``index.csv`` and of
    each ``gasdb/<split>.txt`` per split, and the samples, split indices and table digests of
    ``gasdb.h5``. A malformed manifest is reported, never raised.

    Parameters
    ----------
    path : path
        The release folder.

    Returns
    -------
    VerifyReport
        ``ok`` is True when nothing is wrong. Nothing is raised for a damaged release.
    """
    root = Path(path)
    report = VerifyReport(path=str(root))
    if not root.is_dir():
        report.add(str(root), "missing", "the release folder does not exist")
        return report
    if not any((root / name).exists() or (root / name).is_symlink() for name in (_MANIFEST, _SUMS)):
        what = "a gasdb workspace" if (root / "gasdb.json").is_file() else "a folder"
        report.add(str(root), "missing", f"not a release: {what} with neither {_MANIFEST} nor {_SUMS} "
                                         "(pass the folder `gasdb release` wrote)")
        return report
    sums = _read_sums(root / _SUMS, report)
    bad = set()
    manifest = None
    mpath = root / _MANIFEST
    if not mpath.exists() and not mpath.is_symlink():
        report.add(_MANIFEST, "missing", "the manifest is missing")
    elif not _is_regular(mpath):
        report.add(_MANIFEST, "unsafe", "not a regular file (a symbolic link or a folder)")
        bad.add(_MANIFEST)
    else:
        if _MANIFEST in sums and sha256_file(mpath) != sums[_MANIFEST]:
            report.add(_MANIFEST, "corrupted", "sha256 differs from SHA256SUMS")
            bad.add(_MANIFEST)
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict) or manifest.get("format") != _RELEASE_FORMAT:
                raise ValueError("not a gasdb release manifest")
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            if _MANIFEST not in bad:
                report.add(_MANIFEST, "format", f"unreadable manifest ({exc})")
            manifest = None
    listed: dict[str, dict] = {}
    if manifest is not None:
        report.version = manifest.get("version") if isinstance(manifest.get("version"), str) else None
        if report.version is None:
            report.add(_MANIFEST, "format", "'version' is not a string")
        counts = manifest.get("counts")
        if not (isinstance(counts, dict) and isinstance(counts.get("total"), dict)
                and isinstance(counts.get("splits"), dict)
                and all(isinstance(v, dict) for v in counts["splits"].values())):
            report.add(_MANIFEST, "format", "'counts' is not an object with 'total' and per-split objects")
        entries = manifest.get("files")
        if not isinstance(entries, list):
            report.add(_MANIFEST, "format", "'files' is not a list")
            entries = []
        for k, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                report.add(_MANIFEST, "format", f"files[{k}] is not an object with a 'path' string")
                continue
            listed[entry["path"]] = entry
    expected = set(listed) | (set(sums) - {_MANIFEST})
    for rel in sorted(expected):
        why = _unsafe(rel, root)
        if why:
            report.add(str(rel), "unsafe", f"listed path is {why}; not opened")
            bad.add(rel)
    for rel in sorted(expected - bad):
        f = root / rel
        if not _is_regular(f):
            report.add(rel, "missing", "listed in the manifest/SHA256SUMS but absent (or not a regular file)")
            bad.add(rel)
            continue
        try:
            digest = sha256_file(f)
            size = f.stat().st_size
        except OSError as exc:
            report.add(rel, "format", f"cannot be read ({exc.strerror})")
            bad.add(rel)
            continue
        report.files_checked += 1
        entry = listed.get(rel)
        why = []
        if entry is not None and entry.get("sha256") != digest:
            why.append("sha256 differs from manifest.json")
        if entry is not None and entry.get("bytes") != size:
            why.append(f"size {size} bytes, manifest says {entry.get('bytes')!r}")
        if rel in sums and sums[rel] != digest:
            why.append("sha256 differs from SHA256SUMS")
        if manifest is not None and rel not in listed:
            why.append("not listed in manifest.json")
        if sums and rel not in sums:
            why.append("not listed in SHA256SUMS")
        if why:
            kind = "corrupted" if any("differs" in w or "size" in w for w in why) else "format"
            report.add(rel, kind, "; ".join(why))
            bad.add(rel)
    for dirpath, dirnames, filenames in os.walk(root):  # never follows links
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                if rel not in bad:
                    report.add(rel, "unsafe", "a symbolic link inside the release")
                    bad.add(rel)
            elif name in filenames and rel not in expected and rel not in (_MANIFEST, _SUMS):
                report.add(rel, "extra", "not listed in the manifest")
        for d in sorted(dirnames):
            rel = (Path(dirpath) / d).relative_to(root).as_posix()
            if not (Path(dirpath) / d).is_symlink() and not any(e == rel or str(e).startswith(rel + "/")
                                                                 for e in expected):
                report.add(rel + "/", "extra", "folder not listed in the manifest")
    if manifest is not None:
        try:
            _verify_counts(root, manifest, bad, report)
        except Exception as exc:  # noqa: BLE001 - a malformed manifest must give a report, not a traceback
            report.add(_MANIFEST, "format", f"counts cannot be checked ({type(exc).__name__}: {exc})")
    return report


def _verify_counts(root: Path, manifest: dict, bad: set, report: VerifyReport) -> None:
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
    splits = counts.get("splits") if isinstance(counts.get("splits"), dict) else {}
    total = (counts.get("total") or {}).get("pairs") if isinstance(counts.get("total"), dict) else None
    want = {s: v.get("pairs") for s, v in splits.items() if isinstance(v, dict)}
    if "index.csv" not in bad and _is_regular(root / "index.csv"):
        with open(root / "index.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        got = Counter(r.get("split") for r in rows)
        for s, n in want.items():
            if got.get(s, 0) != n:
                report.add("index.csv", "count", f"{got.get(s, 0)} rows in split {s}, manifest says {n}")
        if total is not None and len(rows) != total:
            report.add("index.csv", "count", f"{len(rows)} rows, manifest says {total}")
    for s, n in want.items():
        rel = f"gasdb/{s}.txt"
        if not re.match(r"^[A-Za-z0-9_-]+$", str(s)):
            report.add(_MANIFEST, "format", f"split name {s!r} is not letters, digits, '_' or '-'")
            continue
        if rel not in bad and _is_regular(root / rel):
            lines = [ln for ln in (root / rel).read_text(encoding="utf-8").splitlines() if ln.strip()]
            if len(lines) != n:
                report.add(rel, "count", f"{len(lines)} names, manifest says {n}")
    h5 = root / H5_NAME
    if H5_NAME in bad or not _is_regular(h5):
        return
    import h5py

    from gasdb_tools import h5pack

    try:
        with h5py.File(h5, "r") as f:
            meta, splits_h5 = h5pack.read_tables(f, path=h5)
            n = len(meta["pair_id"])
            if total is not None and n != total:
                report.add(H5_NAME, "count", f"{n} samples, manifest says {total}")
            for block, k in Counter(meta["block"]).items():
                for key in h5pack.ARRAYS:
                    name = f"frames/{block}/{key}"
                    if name not in f:
                        report.add(H5_NAME, "count", f"dataset /{name} is missing")
                    elif f[name].shape[0] != k:
                        report.add(H5_NAME, "count", f"/{name} holds {f[name].shape[0]} frames, /meta names {k}")
            for s, k in want.items():
                got = len(splits_h5[s]) if s in splits_h5 else None
                if got != k:
                    report.add(H5_NAME, "count", f"/splits/{s} holds {got} indices, manifest says {k}")
            if f.attrs.get("dataset_version") != manifest.get("version"):
                report.add(H5_NAME, "count", f"dataset_version {f.attrs.get('dataset_version')!r} differs from "
                                             f"the manifest's {manifest.get('version')!r}")
    except FormatError as exc:
        report.add(H5_NAME, "format", str(exc))
    except (OSError, KeyError, ValueError) as exc:
        report.add(H5_NAME, "format", f"HDF5 file cannot be read ({exc})")
