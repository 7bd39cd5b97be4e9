"""The dataset workspace: its layout, its index, and locking.

A workspace is a folder::

    WS/
      gasdb.json          settings: name, schema version, rig, per-stage defaults
      recordings.csv      one row per recording (id, rgb, thermal, scene, tags, offset, stage status ...)
      pairs.csv           one row per extracted RGB-thermal pair (ids, timestamps, paths, stage outputs)
      blacklist.csv       pair_id, reason (frames kept out of train/test lists, with why)
      frames/<rec>/rgb/<pair>.png, frames/<rec>/thermal/<pair>.png     (thermal keeps its bit depth)
      aligned/<rec>/<pair>.png, aligned/<rec>/<pair>_valid.png          (thermal warped into RGB frame)
      enhanced/<rec>/<pair>.png                                          (8-bit, what annotators see)
      labels/<rec>/<pair>.json                                           (LabelMe documents)
      calibration/<rig>.json                                             (rig calibration + QA figure)
      splits/<name>.json

The two CSV files are *the* index: plain text, UTF-8, ``\\n`` line endings, one header row. Every
stage reads them, does its per-pair work, and writes them back through
:meth:`Workspace.transaction`, which holds a lock (``WS/.gasdb.lock``) and replaces each file
atomically, so a crash leaves the previous index valid and two commands never interleave writes.
Columns a stage does not know are preserved. Paths inside the index are POSIX paths relative to
the workspace root (recording sources may be absolute).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from gasdb_tools import __version__
from gasdb_tools.errors import WorkspaceError
from gasdb_tools.fsutil import atomic_write_bytes, file_lock, read_json, stage_path, write_json
from gasdb_tools.scenes import SCENES  # the scene column's vocabulary (part of this module's API)

__all__ = [
    "SCHEMA_VERSION",
    "SCENES",
    "RECORDING_COLUMNS",
    "PAIR_COLUMNS",
    "Index",
    "Workspace",
    "make_pair_id",
    "check_id",
    "check_relative_path",
    "OUTPUT_COLUMNS",
    "is_thermal_only",
]

SCHEMA_VERSION = 1

#: Columns of recordings.csv, in order; stages may add more (kept on rewrite).
RECORDING_COLUMNS = (
    "id", "rgb", "thermal", "scene", "tags", "rig", "rgb_sha256", "thermal_sha256",
    "offset_s", "offset_source", "offset_confidence",
)

#: Columns of pairs.csv, in order; stages add their own output columns (kept on rewrite).
PAIR_COLUMNS = ("pair_id", "recording", "t_rgb", "t_thermal", "dt", "rgb", "thermal")

#: pairs.csv columns that hold paths of files the stages wrote (always inside the workspace).
OUTPUT_COLUMNS = ("rgb", "thermal", "aligned", "valid", "enhanced", "label")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ID_MAX = {"pair id": 80}  # <recording (<= 64)>_<ms>; every other id is at most 64 characters


def check_id(value: str, *, what: str = "recording id", file=None, field: str | None = None) -> str:
    """Return ``value`` if it is a valid id (letters, digits, ``_``, ``-``; 1-64 chars), else raise.

    Ids become file and folder names, so anything else (path separators, ``..``, control
    characters, spaces) is refused. ``file``/``field`` say where a bad id was read from.

    >>> check_id("take_01")
    'take_01'
    """
    limit = _ID_MAX.get(what, 64)
    if not isinstance(value, str) or not _ID_RE.match(value) or len(value) > limit:
        raise WorkspaceError(f"invalid {what} {value!r}", file=file, field=field or what,
                             fix=f"use 1-{limit} letters, digits, '_' or '-', starting with a letter or digit")
    return value


def check_relative_path(value: str, *, file=None, field: str | None = None) -> str:
    """Return ``value`` if it is a POSIX path relative to the workspace that stays inside it, else raise.

    >>> check_relative_path("frames/rec01/rgb/rec01_00001000.png")
    'frames/rec01/rgb/rec01_00001000.png'
    """
    parts = value.split("/")
    bad = (value.startswith("/") or "\\" in value or any(p in ("", ".", "..") for p in parts)
           or any(ord(c) < 32 or ord(c) == 127 for c in value))
    if bad:
        raise WorkspaceError(f"path {value!r} is not a plain path inside the workspace", file=file, field=field,
                             fix="restore the value the stage wrote, or clear it and rerun the stage")
    return value


def is_thermal_only(recording: dict) -> bool:
    """Whether a recordings.csv row is a thermal camera alone (no RGB video).

    >>> is_thermal_only({"rgb": "", "thermal": "t.mp4"}), is_thermal_only({"rgb": "r.mp4", "thermal": "t.mp4"})
    (True, False)
    """
    return not recording.get("rgb")


def make_pair_id(recording: str, t_rgb: float) -> str:
    """Stable, sortable pair id: ``<recording>_<RGB time in ms, 8 digits>`` (thermal time without RGB).

    >>> make_pair_id("rec01", 12.3456)
    'rec01_00012346'
    """
    return f"{recording}_{int(round(t_rgb * 1000)):08d}"


def _read_csv(path: Path, check=None) -> tuple[list[str], list[dict]]:
    """Read an index CSV: UTF-8 (a byte-order mark, as Excel writes "CSV UTF-8", is accepted).

    ``check(row, where)`` is called on every row (``where`` names the line) and may raise.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WorkspaceError("index file missing", file=path,
                             fix="run `gasdb init` on a new folder, or restore the file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise WorkspaceError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})", file=path,
                             field=f"line {line}",
                             fix="save the file as UTF-8 (in Excel: 'CSV UTF-8'); gasdb does not guess encodings"
                             ) from None
    del text  # checked; parsed from the bytes as a stream (a StringIO copy would take 4 bytes a character)
    reader = csv.DictReader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    header = list(reader.fieldnames or [])
    rows = []
    for row in reader:
        lineno = reader.line_num
        if None in row:
            raise WorkspaceError("row has more fields than the header", file=path, field=f"line {lineno}",
                                 fix="repair the row (quote values containing commas)")
        row = {k: (v if v is not None else "") for k, v in row.items()}
        if check is not None:
            check(row, f"line {lineno}")
        rows.append(row)
    return header, rows


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buf = io.BytesIO()  # encoded as it is written: one copy of the file in memory, not three
    text = io.TextIOWrapper(buf, encoding="utf-8", newline="", write_through=False)
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in columns})
    text.flush()
    atomic_write_bytes(path, buf.getvalue())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _columns(base: tuple[str, ...], rows) -> list[str]:
    extra = sorted({k for row in rows for k in row} - set(base))
    return list(base) + extra


def _check_pair(row: dict, where: str, recordings, pair_file: Path) -> str:
    """Check one pairs.csv row (ids, its recording, output paths); returns its pair id."""
    for column in ("pair_id", "recording"):
        if column not in row:
            raise WorkspaceError(f"no {column!r} column", file=pair_file, fix="restore the header row")
    pid = check_id(row["pair_id"], what="pair id", file=pair_file, field=f"{where}, column pair_id")
    rec = check_id(row["recording"], file=pair_file, field=f"{where}, column recording")
    if rec not in recordings:
        raise WorkspaceError(f"pair {pid} belongs to recording {rec!r}, which recordings.csv does not list",
                             file=pair_file, field=f"{where}, column recording",
                             fix="restore the recording's row, or delete its pairs")
    for column in OUTPUT_COLUMNS:
        if row.get(column):
            check_relative_path(row[column], file=pair_file, field=f"{where}, column {column}")
    return pid


def _twice(pid: str, pair_file: Path, where: str) -> WorkspaceError:
    return WorkspaceError(f"pair {pid} is listed twice", file=pair_file, field=f"{where}, column pair_id",
                          fix="delete one of the rows")


@contextlib.contextmanager
def _open_csv(path: Path):
    """``(header, rows)`` of an index CSV read as a stream: ``rows`` yields ``(line number, values)``.
    UTF-8 is checked as it is read (a byte-order mark is accepted)."""
    try:
        fh = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise WorkspaceError("index file missing", file=path,
                             fix="run `gasdb init` on a new folder, or restore the file") from None
    with fh:
        reader = csv.reader(fh)

        def rows():
            try:
                for values in reader:
                    if values:
                        yield reader.line_num, values
            except UnicodeDecodeError:
                raise WorkspaceError(f"not UTF-8 text (near line {reader.line_num + 1})", file=path,
                                     field=f"line {reader.line_num + 1}",
                                     fix="save the file as UTF-8 (in Excel: 'CSV UTF-8'); gasdb does not guess "
                                         "encodings") from None

        it = rows()
        first = next(it, None)
        yield (list(first[1]) if first else []), it


def _recolumn(tmp: Path, target: Path, columns: list[str], final: list[str]) -> Path:
    """The rows of ``tmp`` (written with ``columns``) rewritten with ``final``, as a stream; a new temp file."""
    keep = [columns.index(k) for k in final]
    out = stage_path(target)
    with open(tmp, encoding="utf-8", newline="") as src, open(out, "w", encoding="utf-8", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst, lineterminator="\n")
        next(reader)
        writer.writerow(final)
        for values in reader:
            writer.writerow([values[i] for i in keep])
        dst.flush()
        os.fsync(dst.fileno())
    os.unlink(tmp)
    return out


@dataclass
class Index:
    """The in-memory index: recordings and pairs keyed by id, in file order (insertion order).

    Rows are plain ``dict[str, str]``; numbers are stored as text (``repr`` of floats) so the CSV
    round-trips exactly. Use :meth:`Workspace.transaction` to change it.
    """

    recordings: dict[str, dict] = field(default_factory=dict)
    pairs: dict[str, dict] = field(default_factory=dict)

    def pairs_of(self, recording: str) -> list[dict]:
        """Pairs of one recording, sorted by pair id (i.e. by time)."""
        return sorted((p for p in self.pairs.values() if p["recording"] == recording), key=lambda p: p["pair_id"])


class Workspace:
    """A dataset workspace on disk (see the module docstring for the layout).

    Examples
    --------
    >>> import tempfile
    >>> ws = Workspace.init(tempfile.mkdtemp() + "/ws")
    >>> [r["id"] for r in ws.recordings()]
    []
    """

    SETTINGS = "gasdb.json"
    RECORDINGS = "recordings.csv"
    PAIRS = "pairs.csv"
    BLACKLIST = "blacklist.csv"
    LOCK = ".gasdb.lock"

    def __init__(self, root):
        self.root = Path(root).resolve()

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def init(cls, root, *, name: str | None = None, rig: str = "default") -> "Workspace":
        """Create a new, empty workspace at ``root`` (an empty or missing folder)."""
        root = Path(root)
        if (root / cls.SETTINGS).exists():
            raise WorkspaceError("a workspace already exists here", file=root / cls.SETTINGS,
                                 fix="use it as it is, or choose another folder")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise WorkspaceError("folder exists and is not empty", file=root,
                                 fix="choose a new or empty folder for the workspace")
        root.mkdir(parents=True, exist_ok=True)
        ws = cls(root)
        write_json(ws.root / cls.SETTINGS, {
            "schema_version": SCHEMA_VERSION,
            "name": name or ws.root.name,
            "rig": rig,
            "created_with": f"gasdb-tools {__version__}",
            "stages": {},
        })
        _write_csv(ws.root / cls.RECORDINGS, list(RECORDING_COLUMNS), [])
        _write_csv(ws.root / cls.PAIRS, list(PAIR_COLUMNS), [])
        _write_csv(ws.root / cls.BLACKLIST, ["pair_id", "reason"], [])
        return ws

    @classmethod
    def open(cls, root) -> "Workspace":
        """Open an existing workspace, checking its settings file and schema version."""
        root = Path(root)
        settings = root / cls.SETTINGS
        if not settings.is_file():
            raise WorkspaceError("not a gasdb workspace (no gasdb.json)", file=root,
                                 fix="run `gasdb init DIR` first, or pass the workspace folder")
        data = read_json(settings)
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise WorkspaceError(f"unsupported schema version {version!r} (this gasdb reads {SCHEMA_VERSION})",
                                 file=settings, field="schema_version",
                                 fix="use the gasdb version that created the workspace")
        return cls(root)

    # -- paths ----------------------------------------------------------------------------
    def path(self, rel) -> Path:
        """Absolute path of an index path (relative to the root unless absolute)."""
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    def rel(self, path) -> str:
        """Index form of a path: POSIX, relative to the root when inside it."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.as_posix()

    def output_path(self, area: str, recording: str, filename: str, *, sub: str | None = None) -> Path:
        """Conventional output path ``WS/<area>/<recording>[/<sub>]/<filename>``.

        >>> Workspace("/ws").output_path("frames", "rec01", "rec01_00001000.png", sub="thermal").as_posix()
        '/ws/frames/rec01/thermal/rec01_00001000.png'
        """
        base = self.root / area / recording
        return (base / sub / filename) if sub else base / filename

    # -- settings -------------------------------------------------------------------------
    @property
    def settings(self) -> dict:
        """The parsed ``gasdb.json``."""
        return read_json(self.root / self.SETTINGS)

    def update_settings(self, **changes) -> dict:
        """Merge top-level keys into ``gasdb.json`` (under the lock)."""
        with file_lock(self.root / self.LOCK):
            data = self.settings
            data.update(changes)
            write_json(self.root / self.SETTINGS, data)
        return data

    # -- index ----------------------------------------------------------------------------
    def read_index(self) -> Index:
        """Read both index files (no lock: a consistent snapshot, since writes are atomic).

        Every id and every output path is checked as it is read (ids become file names, so a
        hand-edited ``../x`` must never reach a path): a bad row raises naming the file, the line
        and the column.
        """
        pair_file = self.root / self.PAIRS
        index = Index()
        index.recordings = self._read_recordings()

        def check_pair(row, where):
            pid = _check_pair(row, where, index.recordings, pair_file)
            if pid in index.pairs:
                raise _twice(pid, pair_file, where)
            index.pairs[pid] = row

        _read_csv(pair_file, check_pair)
        return index

    def _read_recordings(self) -> dict[str, dict]:
        """recordings.csv alone, checked as :meth:`read_index` checks it."""
        rec_file = self.root / self.RECORDINGS
        out: dict[str, dict] = {}

        def check(row, where):
            rec_id = row.get("id")
            if rec_id is None:
                raise WorkspaceError("no 'id' column", file=rec_file, fix="restore the header row")
            check_id(rec_id, file=rec_file, field=f"{where}, column id")
            if row.get("rig"):
                check_id(row["rig"], what="rig name", file=rec_file, field=f"{where}, column rig")
            if rec_id in out:
                raise WorkspaceError(f"recording {rec_id!r} is listed twice", file=rec_file, field=f"{where}, column id",
                                     fix="delete one of the rows")
            out[rec_id] = row

        _read_csv(rec_file, check)
        return out

    def iter_pairs(self, recording: str | None = None):
        """Pair rows in file order (sorted by pair id, as the index is written), read as a stream
        and checked as :meth:`read_index` checks them, optionally only those of ``recording``:
        memory does not grow with the index."""
        pair_file = self.root / self.PAIRS
        recordings = self._read_recordings()
        seen_last = None
        with _open_csv(pair_file) as (header, rows):
            for lineno, values in rows:
                row = dict(zip(header, values))
                where = f"line {lineno}"
                if len(values) > len(header):
                    raise WorkspaceError("row has more fields than the header", file=pair_file, field=where,
                                         fix="repair the row (quote values containing commas)")
                for k in header[len(values):]:
                    row[k] = ""
                pid = _check_pair(row, where, recordings, pair_file)
                if pid == seen_last:
                    raise _twice(pid, pair_file, where)
                seen_last = pid
                if recording is None or row["recording"] == recording:
                    yield row

    def rewrite_pairs(self, edit, touched, *, columns=(), edit_recordings=None) -> bool:
        """Apply ``edit`` to pairs.csv as a stream, under the lock: memory does not grow with the index.

        ``edit(pair_id, row or None) -> row or None`` is called, in pair-id order, for every row
        whose id is in ``touched`` or whose recording is in ``touched`` (``touched`` has
        ``pairs``, a set of pair ids, and ``recordings``, a set of recording ids), and for each id
        of ``touched.pairs`` not in the file (with None); None removes the row. Other rows are
        copied as they are. ``columns``: every column ``edit`` may add. ``edit_recordings(dict)``
        changes the recording rows (read whole: one per recording). The files written are those
        :meth:`transaction` would write (rows sorted by pair id, columns: the index's own then the
        others sorted, dropped when no row has them). Returns False, having written nothing, when
        the file is not sorted by pair id (a hand edit) or an edit adds a column not in
        ``columns``: then use :meth:`transaction`.
        """
        pair_file, rec_file = self.root / self.PAIRS, self.root / self.RECORDINGS
        with file_lock(self.root / self.LOCK):
            recordings = self._read_recordings()
            new_ids = sorted(set(touched.pairs))
            tmp = None
            try:
                with _open_csv(pair_file) as (header, rows):
                    base = set(PAIR_COLUMNS)
                    out_columns = list(PAIR_COLUMNS) + sorted((set(header) | set(columns)) - base)
                    allowed = set(out_columns)
                    same = out_columns == header
                    pos = {k: i for i, k in enumerate(header)}
                    used: set[str] = set()
                    tmp = stage_path(pair_file)
                    with open(tmp, "w", encoding="utf-8", newline="") as fh:
                        writer = csv.writer(fh, lineterminator="\n")
                        writer.writerow(out_columns)
                        j, last, written = 0, None, 0

                        def put(row) -> bool:
                            if not allowed.issuperset(row):
                                return False
                            used.update(row)
                            writer.writerow([_cell(row.get(k, "")) for k in out_columns])
                            return True

                        for lineno, values in rows:
                            where = f"line {lineno}"
                            if len(values) > len(header):
                                raise WorkspaceError("row has more fields than the header", file=pair_file,
                                                     field=where, fix="repair the row (quote values containing commas)")
                            if len(values) < len(header):
                                values = values + [""] * (len(header) - len(values))
                            row = dict(zip(header, values))
                            pid = _check_pair(row, where, recordings, pair_file)
                            if last is not None and pid <= last:
                                return False  # not sorted (or a pair twice): the in-memory route says which
                            last = pid
                            while j < len(new_ids) and new_ids[j] < pid:
                                created = edit(new_ids[j], None)
                                if created is not None:
                                    if not put(created):
                                        return False
                                    written += 1
                                j += 1
                            if j < len(new_ids) and new_ids[j] == pid:
                                j += 1
                            if pid in touched.pairs or row["recording"] in touched.recordings:
                                row = edit(pid, row)
                                if row is None:
                                    continue
                                if not put(row):
                                    return False
                            elif same:
                                writer.writerow(values)
                                used.update(header)
                            else:
                                writer.writerow([values[pos[k]] if k in pos else "" for k in out_columns])
                                used.update(header)
                            written += 1
                        for pid in new_ids[j:]:
                            created = edit(pid, None)
                            if created is not None:
                                if not put(created):
                                    return False
                                written += 1
                        fh.flush()
                        os.fsync(fh.fileno())
                final = list(PAIR_COLUMNS) + sorted(used - base) if written else list(PAIR_COLUMNS)
                if final != out_columns:  # a column no row kept: the rows again, without it
                    tmp = _recolumn(tmp, pair_file, out_columns, final)
                if edit_recordings is not None:
                    edit_recordings(recordings)
                os.replace(tmp, pair_file)
                tmp = None
            finally:
                if tmp is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
            recs = list(recordings.values())
            _write_csv(rec_file, _columns(RECORDING_COLUMNS, recs), recs)
        return True

    def write_index(self, index: Index) -> None:
        """Write both index files atomically (pairs first). Prefer :meth:`transaction`."""
        pairs = sorted(index.pairs.values(), key=lambda p: p["pair_id"])
        _write_csv(self.root / self.PAIRS, _columns(PAIR_COLUMNS, pairs), pairs)
        recs = list(index.recordings.values())
        _write_csv(self.root / self.RECORDINGS, _columns(RECORDING_COLUMNS, recs), recs)

    @contextlib.contextmanager
    def transaction(self):
        """Lock the workspace, yield the :class:`Index`, and write it back if the block succeeds.

        If the block raises, nothing is written: the previous index stays as it was.
        """
        with file_lock(self.root / self.LOCK):
            index = self.read_index()
            yield index
            self.write_index(index)

    def recordings(self) -> list[dict]:
        """All recording rows, in index order."""
        return list(self.read_index().recordings.values())

    def select_recordings(self, recordings=None, *, index: Index | None = None) -> list[str]:
        """Ids a stage should work on: every recording (index order), or ``recordings``, each checked.

        Raises
        ------
        WorkspaceError
            An id that is not in the index (the message lists the known ids).
        """
        known = index.recordings if index is not None else self._read_recordings()
        wanted = list(known) if recordings is None else list(recordings)
        for rec in wanted:
            if rec not in known:
                raise WorkspaceError(f"no recording {rec!r} (known: {', '.join(known) or 'none'})",
                                     file=self.root / self.RECORDINGS, fix="check the id with `gasdb status`")
        return wanted

    def update_pairs(self, updates, *, recording: str | None = None, recording_columns=None) -> None:
        """Merge ``{pair_id: {column: value}}`` into the pair rows (and ``recording_columns`` into
        ``recording``'s row) in one transaction; pairs or recordings gone from the index are skipped."""
        with self.transaction() as index:
            for pid, columns in updates.items():
                if pid in index.pairs:
                    index.pairs[pid].update(columns)
            if recording_columns and recording in index.recordings:
                index.recordings[recording].update(recording_columns)

    def set_stage_error(self, recording: str, stage: str, error: str) -> None:
        """Record why ``stage`` failed for ``recording`` (column ``<stage>_error``); ``""`` clears it."""
        self.update_pairs({}, recording=recording, recording_columns={f"{stage}_error": error})

    def recording(self, recording_id: str) -> dict:
        """One recording row; raises naming the known ids when absent."""
        recs = self._read_recordings()  # recordings.csv alone: the pairs can be many
        if recording_id not in recs:
            known = ", ".join(recs) or "none"
            raise WorkspaceError(f"no recording {recording_id!r} (known: {known})", file=self.root / self.RECORDINGS,
                                 fix="check the id with `gasdb status`")
        return recs[recording_id]

    def pairs(self, recording: str | None = None) -> list[dict]:
        """Pair rows sorted by pair id, optionally of one recording."""
        rows = sorted(self.read_index().pairs.values(), key=lambda p: p["pair_id"])
        return [p for p in rows if recording is None or p["recording"] == recording]

    # -- blacklist ------------------------------------------------------------------------
    def blacklist(self) -> dict[str, str]:
        """``{pair_id: reason}`` from blacklist.csv (empty when the file is absent)."""
        path = self.root / self.BLACKLIST
        if not path.exists():
            return {}

        def check(row, where):
            if "pair_id" not in row:
                raise WorkspaceError("no 'pair_id' column", file=path, fix="restore the header row: pair_id,reason")
            check_id(row["pair_id"], what="pair id", file=path, field=f"{where}, column pair_id")

        _, rows = _read_csv(path, check)
        return {r["pair_id"]: r.get("reason", "") for r in rows}

    def set_blacklist(self, entries: dict[str, str]) -> None:
        """Replace blacklist.csv with ``entries`` (sorted by pair id), atomically under the lock.

        Prefer :meth:`update_blacklist`, which reads the file under the same lock: a caller that
        read it earlier would drop entries another command added meanwhile.
        """
        with file_lock(self.root / self.LOCK):
            rows = [{"pair_id": k, "reason": v} for k, v in sorted(entries.items())]
            _write_csv(self.root / self.BLACKLIST, ["pair_id", "reason"], rows)

    def update_blacklist(self, add: dict[str, str] | None = None, remove=()) -> dict[str, str]:
        """Add ``{pair_id: reason}`` and remove ids, as one read-modify-write under the lock; returns the result."""
        with file_lock(self.root / self.LOCK):
            entries = self.blacklist()
            for pid in remove:
                entries.pop(pid, None)
            for pid, reason in (add or {}).items():
                entries[check_id(pid, what="pair id")] = reason
            self.set_blacklist(entries)
            return entries
