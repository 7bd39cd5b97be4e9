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
import time
from pathlib import Path

from gasdb_tools.errors import WorkspaceError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "dumps_json",
    "write_json",
    "read_json",
    "sha256_file",
    "sha256_bytes",
    "file_lock",
]


def atomic_write_bytes(path, data: bytes, *, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    ``sync=False`` skips the per-file ``fsync`` (about 1-2 ms each): the rename is still atomic, and
    bulk writers (frame extraction) call :func:`os.sync` once before they record the files in the index.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


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


@contextlib.contextmanager
def file_lock(path, *, timeout: float = 60.0):
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block.

    Two ``gasdb`` commands on one workspace then cannot interleave their index updates; the second
    waits up to ``timeout`` seconds, then fails with a clear message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise WorkspaceError("another gasdb command holds the workspace lock", file=path,
                                         fix="wait for it to finish, or remove the lock file if no gasdb "
                                             "command is running") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
