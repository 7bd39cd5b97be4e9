"""Review state, read from the LabelMe documents themselves, and the one safe way to write them.

The LabelMe file of a pair (``labels/<rec>/<pair>.json``) is the only record of what people did
with it, whichever tool they used (``gasdb label``, plain LabelMe, the review app, an editor):
every command (status, validate, split, release, stats) reads the state from the files through
:func:`read_states`. A document is

``pending``
    an untouched draft (its content still equals what pre-annotation wrote), or a document a
    reviewer sent back (:func:`reject`) that nobody has changed since;
``edited``
    changed by a person in any way an annotator can change a document: shapes (points, labels,
    type, group), a shape's description or flags, the image flags, the annotator named in the
    review block; or a document gasdb did not write; or one it cannot read (never overwritten);
``approved``
    its ``approved`` image flag is ticked (in LabelMe, or by :func:`approve`); a document without
    that flag (an older config) is approved when its review block says so.

A document can also be marked **recheck**: pre-annotation re-projected its shapes after the
geometry under it changed (a new calibration); it needs a person's look until it is approved or
edited again.

Image flags ``water_spray`` and ``too_faint`` exclude a pair from splits and releases (the reason
is the flag's), exactly like an entry in ``blacklist.csv``: :func:`exclusions` is their union.

**Writing.** A document is replaced only through :func:`write_document`: under the workspace lock,
immediately before the rename, the file's bytes must still be what the writer planned to replace
(compare-and-swap), so a LabelMe save that lands between planning and writing is never lost.
Approvals and rejections keep an audit trail (who, when, note) in the document's review block.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gasdb_tools import labelme_format
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.fsutil import file_lock, stage_bytes, write_json
from gasdb_tools.workspace import Index, Workspace, check_id

__all__ = [
    "REVIEW_STATUSES",
    "FLAGS",
    "EXCLUDE_FLAGS",
    "DocState",
    "content_hash",
    "raw_digest",
    "label_path",
    "with_label",
    "document_state",
    "read_states",
    "exclusions",
    "counts",
    "write_document",
    "approve",
    "reject",
    "whoami",
]

#: Review statuses, in workflow order.
REVIEW_STATUSES = ("pending", "edited", "approved")
#: Image-level flags of the project's LabelMe config (``annotation/labelme.yaml``), all false in a draft.
FLAGS = ("no_leak", "ambiguous", "water_spray", "too_faint", "approved")
#: Flags that keep a pair out of splits and releases, with the reason recorded.
EXCLUDE_FLAGS = {"water_spray": "water spray in view (flagged in LabelMe)",
                 "too_faint": "plume too faint to delineate (flagged in LabelMe)"}
_CACHE = Path(".gasdb-cache") / "documents.json"
_CACHE_VERSION = 2


# ----------------------------------------------------------------------------------------------
# what a document says
# ----------------------------------------------------------------------------------------------
def _true_flags(flags) -> list[str]:
    return sorted(str(k) for k, v in (flags or {}).items() if v is True) if isinstance(flags, dict) else []


def content_hash(doc) -> str:
    """SHA-256 of everything an annotator can change in a document.

    Counted: each shape's label, points (to 1/1000 px), type, group id, description, ticked
    per-shape flags and mask pixels; the ticked image flags; the review block's status,
    annotator and note. Not counted: what LabelMe rewrites when it saves an unchanged file (key
    order, indentation, a mask PNG's bytes, empty descriptions written as ``""`` or null, unticked
    flags written as false, a new flag from the config), and gasdb's own bookkeeping (history,
    recheck, hashes).

    >>> doc = labelme_format.new_document("a.png", 10, 10, shapes=[labelme_format.make_shape([[1, 1], [5, 1], [5, 5]])])
    >>> content_hash(doc) == content_hash(json.loads(json.dumps(doc)))
    True
    >>> doc["shapes"][0]["description"] = "edge unsure"
    >>> content_hash(doc) == content_hash(json.loads(json.dumps(doc)))
    True
    """
    shapes = []
    for s in doc.get("shapes") or []:
        points = [[round(float(x), 3), round(float(y), 3)] for x, y in s.get("points") or []]
        mask = s.get("mask")
        if isinstance(mask, str):  # LabelMe re-encodes mask PNGs on save: compare the pixels, not the bytes
            try:
                crop = labelme_format.decode_mask(mask)
                mask = [list(crop.shape), hashlib.sha256(np.packbits(crop).tobytes()).hexdigest()]
            except FormatError:
                pass
        shapes.append({"label": s.get("label"), "points": points, "shape_type": s.get("shape_type") or "polygon",
                       "group_id": s.get("group_id"), "mask": mask, "description": s.get("description") or "",
                       "flags": _true_flags(s.get("flags"))})
    meta = doc.get("gasdb") if isinstance(doc.get("gasdb"), dict) else {}
    review = meta.get("review") if isinstance(meta.get("review"), dict) else {}
    blob = json.dumps({"shapes": shapes, "flags": _true_flags(doc.get("flags")),
                       "review": [review.get(k) or None for k in ("status", "annotator", "note")]},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def raw_digest(data: bytes | None) -> str:
    """Digest of a file's exact bytes ('' for a file that does not exist): the compare-and-swap token."""
    return "" if data is None else hashlib.sha256(data).hexdigest()


@dataclass
class DocState:
    """What one LabelMe document says about its pair (see the module docstring)."""

    pair_id: str
    path: str = ""
    exists: bool = False
    status: str = ""  # pending | edited | approved ('' when there is no document)
    untouched: bool = False  # content equals the draft gasdb wrote, and nobody reviewed it
    recheck: str = ""  # why it needs a person's look again ('' when it does not)
    flags: list = field(default_factory=list)  # ticked image flags
    exclude: str = ""  # exclusion reason from a flag ('' when none)
    geometry: str = ""  # key of the annotation frame it is drawn in (gasdb.geometry.key)
    draft_inputs: str = ""  # recipe of the draft (gasdb.preannot.inputs)
    preannot: dict = field(default_factory=dict)  # method, preset, refined ... of the draft
    annotator: str = ""
    shapes: int = 0
    gas_shapes: int = 0
    error: str = ""  # why the file cannot be read

    def to_dict(self) -> dict:
        return asdict(self)


def document_state(doc, *, pair_id: str = "", path: str = "") -> DocState:
    """The :class:`DocState` of a parsed LabelMe document (a pure function of its content)."""
    state = DocState(pair_id=pair_id, path=path, exists=True)
    meta = doc.get("gasdb") if isinstance(doc.get("gasdb"), dict) else {}
    pre = meta.get("preannot") if isinstance(meta.get("preannot"), dict) else {}
    review = meta.get("review") if isinstance(meta.get("review"), dict) else {}
    geometry = meta.get("geometry") if isinstance(meta.get("geometry"), dict) else {}
    current = content_hash(doc)
    state.flags = _true_flags(doc.get("flags"))
    state.exclude = next((EXCLUDE_FLAGS[f] for f in EXCLUDE_FLAGS if f in state.flags), "")
    state.geometry = str(geometry.get("key") or "")
    state.draft_inputs = str(pre.get("inputs") or "")
    state.preannot = {k: pre.get(k) for k in ("method", "preset", "refined", "model") if pre.get(k) is not None}
    state.annotator = str(review.get("annotator") or "")
    shapes = doc.get("shapes") or []
    state.shapes = len(shapes)
    state.gas_shapes = sum(1 for s in shapes if s.get("label") == "gas")
    history = review.get("history") or []
    state.untouched = bool(pre) and pre.get("content_sha256") == current and not history
    flags = doc.get("flags") if isinstance(doc.get("flags"), dict) else {}
    if flags.get("approved") is True or ("approved" not in flags and review.get("status") == "approved"):
        state.status = "approved"
    elif state.untouched or (review.get("status") == "pending" and review.get("content_sha256") == current):
        state.status = "pending"
    else:
        state.status = "edited"
    recheck = review.get("recheck") if isinstance(review.get("recheck"), dict) else None
    if recheck and recheck.get("content_sha256") == current:
        state.recheck = str(recheck.get("reason") or "needs a new look")
    return state


def _read_state(path: Path, pair_id: str) -> DocState:
    try:
        doc = labelme_format.read(path)
    except FormatError as exc:
        if not path.exists():
            return DocState(pair_id=pair_id, path=str(path))
        return DocState(pair_id=pair_id, path=str(path), exists=True, status="edited", error=str(exc))
    return document_state(doc, pair_id=pair_id, path=str(path))


def _stat_key(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino]


def read_states(ws: Workspace, index: Index | None = None, *, pairs=None) -> dict[str, DocState]:
    """The :class:`DocState` of every pair (or of ``pairs``) with a LabelMe document, read from the files.

    A pair's document is ``labels/<rec>/<pair>.json`` (or what its ``label`` column names). Parsed
    states are cached in ``WS/.gasdb-cache/documents.json`` keyed by each file's size, times and
    inode, so only files that changed are read again; the cache is never an authority (delete it
    at will) and a read-only workspace simply goes without it.
    """
    index = index or ws.read_index()
    wanted = sorted(index.pairs) if pairs is None else list(pairs)
    cache_path = ws.root / _CACHE
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
        if cache.get("version") != _CACHE_VERSION:
            cache = {}
    except (OSError, ValueError, AttributeError):
        cache = {}
    entries = cache.get("files") or {}
    fresh, changed = {}, False
    out: dict[str, DocState] = {}
    for pid in wanted:
        row = index.pairs.get(pid)
        if row is None:
            continue
        path = label_path(ws, row)
        rel = ws.rel(path)
        key = _stat_key(path)
        if key is None:
            continue
        hit = entries.get(rel)
        if hit and hit.get("key") == key:
            state = DocState(**hit["state"])
        else:
            state = _read_state(path, pid)
            changed = True
        state.path = str(path)
        out[pid] = state
        fresh[rel] = {"key": key, "state": {**state.to_dict(), "path": ""}}
    if changed or (pairs is None and set(fresh) != set(entries)):
        try:
            write_json(cache_path, {"version": _CACHE_VERSION, "files": fresh if pairs is None else {**entries, **fresh}})
        except OSError:
            pass
    return out


def exclusions(ws: Workspace, index: Index | None = None, states: dict | None = None) -> dict[str, str]:
    """``{pair_id: reason}``: ``blacklist.csv`` plus documents flagged ``water_spray`` or ``too_faint``."""
    index = index or ws.read_index()
    states = read_states(ws, index) if states is None else states
    out = {pid: s.exclude for pid, s in states.items() if s.exclude}
    out.update({pid: reason or "no reason given" for pid, reason in ws.blacklist().items() if pid in index.pairs})
    return dict(sorted(out.items()))


def counts(states, pair_ids=None) -> dict:
    """``{"pending", "edited", "approved", "recheck", "unlabelled"}`` over ``pair_ids`` (default: the states')."""
    ids = list(states) if pair_ids is None else list(pair_ids)
    c = Counter(states[p].status if p in states else "unlabelled" for p in ids)
    out = {s: c.get(s, 0) for s in REVIEW_STATUSES}
    out["recheck"] = sum(1 for p in ids if p in states and states[p].recheck)
    out["unlabelled"] = c.get("unlabelled", 0)
    return out


# ----------------------------------------------------------------------------------------------
# writing documents
# ----------------------------------------------------------------------------------------------
def write_document(ws: Workspace, path, doc, *, expected: str) -> bool:
    """Write a LabelMe document only if the file still holds what the caller planned to replace.

    ``expected`` is :func:`raw_digest` of the bytes read when planning ('' when the file did not
    exist). Under the workspace lock and immediately before the rename, the file is read again;
    if it changed (a person saved meanwhile) nothing is written and False is returned.
    """
    path = Path(path)
    text = labelme_format.dumps(doc, path=path).encode("utf-8")
    tmp = stage_bytes(path, text)  # written and synced before the lock: under it, only a read and a rename
    try:
        with file_lock(ws.root / ws.LOCK):
            try:
                now = path.read_bytes()
            except FileNotFoundError:
                now = None
            if raw_digest(now) != expected:
                return False
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return True


def whoami() -> str:
    """The name recorded in audit trails: ``$GASDB_USER``, else the login name."""
    try:
        return os.environ.get("GASDB_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def label_path(ws: Workspace, pair: dict) -> Path:
    """Where a pair's LabelMe document is: its ``label`` column, else ``labels/<rec>/<pair>.json``."""
    return ws.path(pair.get("label") or f"labels/{pair['recording']}/{pair['pair_id']}.json")


def with_label(ws: Workspace, pair: dict) -> dict:
    """A copy of a pair row whose ``label`` names its LabelMe document when one exists on disk."""
    path = label_path(ws, pair)
    return {**pair, "label": ws.rel(path)} if path.is_file() else dict(pair)


def _document_path(ws: Workspace, index: Index, pid: str) -> Path:
    check_id(pid, what="pair id")
    row = index.pairs.get(pid)
    if row is None:
        raise WorkspaceError(f"no pair {pid!r} in the workspace", file=ws.root / ws.PAIRS,
                             fix="check the id with `gasdb status --json` or pairs.csv")
    return label_path(ws, row)


def _review_action(ws: Workspace, pair_ids, action: str, *, by: str | None, note: str | None,
                   attempts: int = 5) -> list[dict]:
    index = ws.read_index()
    by = by or whoami()
    out = []
    for pid in dict.fromkeys(pair_ids):
        path = _document_path(ws, index, pid)
        for _ in range(attempts):  # a save between our read and our write: read again and redo
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise WorkspaceError(f"pair {pid} has no LabelMe document to {action}", file=path,
                                     fix=f"run `gasdb preannotate {ws.root}` first") from None
            doc = labelme_format.loads(data, file=path)
            meta = doc.setdefault("gasdb", {})
            review = meta.setdefault("review", {}) if isinstance(meta, dict) else None
            if not isinstance(review, dict):
                raise FormatError("the gasdb.review block is not an object", file=path, field="gasdb.review",
                                  fix="repair the JSON by hand")
            flags = doc.setdefault("flags", {})
            flags["approved"] = action == "approve"
            review.pop("recheck", None)
            review.setdefault("history", []).append(
                {"action": action, "by": by, "at": _now(), **({"note": note} if note else {})})
            review["status"] = "approved" if action == "approve" else "pending"
            if note is not None:
                review["note"] = note
            else:  # the note belongs to the latest action; earlier ones stay in the history
                review.pop("note", None)
            review["content_sha256"] = content_hash(doc)
            if write_document(ws, path, doc, expected=raw_digest(data)):
                out.append({"pair_id": pid, "action": action, "status": review["status"], "by": by})
                break
        else:
            raise WorkspaceError(f"pair {pid}: the document kept changing while it was being {action.rstrip('e')}ed",
                                 file=path, fix="close the editor that is saving it, then try again")
    return out


def approve(ws: Workspace, pair_ids, *, by: str | None = None, note: str | None = None) -> list[dict]:
    """Tick the ``approved`` flag of each pair's document and append to its audit trail (atomic, CAS)."""
    return _review_action(ws, pair_ids, "approve", by=by, note=note)


def reject(ws: Workspace, pair_ids, *, by: str | None = None, note: str) -> list[dict]:
    """Send each pair's document back to ``pending`` (approval removed) with a note, in its audit trail."""
    if not note or not str(note).strip():
        raise ValueError("a rejection needs a note saying what to fix")
    return _review_action(ws, pair_ids, "reject", by=by, note=str(note).strip())
