"""Atomic file writes, deterministic JSON, hashing and a workspace lock.

Every file the toolkit writes goes through :func:`atomic_write_bytes`: the data lands in a
temporary file in the same folder, is flushed to disk, and replaces the target with
:func:`os.replace`, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from gasdb_tools.errors import WorkspaceError

__all__ = [
    "atomic_write_bytes",
    "stage_bytes",
    "stage_path",
    "atomic_write_text",
    "dumps_json",
    "write_json",
    "read_json",
    "read_file",
    "sha256_file",
    "sha256_bytes",
    "file_lock",
    "follow_umask",
]


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it; restored at once, at import (no threads yet)
    os.umask(mask)
    return mask


#: Files are created with the permissions the user's umask allows (0644 under the usual 022).
_UMASK = _read_umask()


def follow_umask(path) -> Path:
    """Give a file or folder made private by ``tempfile`` (0600/0700) the mode the user's umask
    allows for new ones (0644/0755 under the usual 022)."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)
    return path


def atomic_write_bytes(path, data: bytes, *, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    ``sync=False`` skips the per-file ``fsync`` (about 1-2 ms each): the rename is still atomic, and
    bulk writers (frame extraction) call :func:`os.sync` once before they record the files in the index.
    """
    path = Path(path)
    tmp = stage_bytes(path, data, sync=sync)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def stage_bytes(path, data: bytes, *, sync: bool = True) -> Path:
    """``data`` written (and synced) to a new temp file beside ``path``, with the umask's mode: the
    first half of :func:`atomic_write_bytes`. The caller renames it over ``path`` (``os.replace``)
    or deletes it; a writer that must check something under a lock first does the slow part, the
    write and the ``fsync``, before it takes the lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        follow_umask(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def stage_path(path) -> Path:
    """A new, empty temp file beside ``path`` with the umask's mode, for a writer that streams into
    it (then ``fsync``, then ``os.replace`` over ``path``; or delete it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return follow_umask(tmp)


def atomic_write_text(path, text: str) -> Path:
    """Write UTF-8 text atomically, with ``\\n`` line endings as given."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj) -> str:
    """Deterministic JSON: sorted keys, 2-space indent, no NaN, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path, obj) -> Path:
    """Write ``obj`` as deterministic JSON (:func:`dumps_json`), atomically."""
    return atomic_write_text(path, dumps_json(obj))


def read_json(path, *, error=WorkspaceError):
    """Read a JSON file, raising ``error`` (naming the file and the position) when it is malformed."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise error("file not found", file=path, fix="check the path") from None
    except json.JSONDecodeError as exc:
        raise error(f"malformed JSON ({exc.msg})", file=path, field=f"line {exc.lineno} column {exc.colno}",
                    fix="repair the file or restore it from a backup") from None
    except UnicodeDecodeError:
        raise error("not UTF-8 text", file=path, fix="save the file as UTF-8") from None


def read_file(path, *, cap: int | None = None, follow_links: bool = True) -> bytes:
    """A whole (small) file's bytes, read with few system calls (no buffered-IO layer).

    Asks for the size ``fstat`` gives, then reads on to the end, so a file that grows meanwhile is
    still read whole. With ``cap``, at most ``cap + 1`` bytes are read (one more tells the caller
    the file is too large). ``follow_links=False`` opens with ``O_NOFOLLOW``: a symlink raises
    :class:`OSError` instead of being followed.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        limit = None if cap is None else cap + 1
        request = os.fstat(fd).st_size + 1
        parts, total = [], 0
        while limit is None or total < limit:
            block = os.read(fd, request if limit is None else min(request, limit - total))
            if not block:
                break
            parts.append(block)
            total += len(block)
            request = 1 << 16
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


class _HeldLock:
    """One workspace lock as this process holds it: a thread lock plus the ``flock`` on an open file."""

    def __init__(self):
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.handle = None


_HELD: dict[str, _HeldLock] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def file_lock(path, *, timeout: float = 60.0):
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block.

    Two ``gasdb`` commands on one workspace then cannot interleave their index updates; the second
    waits up to ``timeout`` seconds, then fails with a clear message. The lock is re-entrant within
    a thread (a read-modify-write that holds it may call code that takes it again) and exclusive
    between threads and processes.
    """
    path = Path(path)
    key = os.path.abspath(path)
    with _HELD_GUARD:
        held = _HELD.setdefault(key, _HeldLock())
    deadline = time.monotonic() + timeout

    def busy():
        return WorkspaceError("another gasdb command holds the workspace lock", file=path,
                              fix="wait for it to finish, or remove the lock file if no gasdb command is running")

    if not held.thread_lock.acquire(timeout=max(timeout, 0.0)):
        raise busy()
    try:
        if held.depth == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")
            pause = 0.0005
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        fh.close()
                        raise
                    if time.monotonic() > deadline:
                        fh.close()
                        raise busy() from None
                    # another process writes a document or the index (milliseconds): ask again
                    # soon, then less often (a fixed 20 ms made each wait cost a frame or two)
                    time.sleep(pause)
                    pause = min(2 * pause, 0.02)
            held.handle = fh
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                fcntl.flock(held.handle.fileno(), fcntl.LOCK_UN)
                held.handle.close()
                held.handle = None
    finally:
        held.thread_lock.release()
