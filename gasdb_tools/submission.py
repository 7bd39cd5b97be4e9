"""Read a segmentation submission (a folder or a zip of ``<id>.png`` masks) safely.

A submission is one single-channel PNG per ground-truth id, class indices 0 (background) and
1 (gas), or 0/255 behind an explicit flag (formats.md §6.2). This module only *reads*: zip members
are read into memory, never extracted, so nothing is written anywhere.

Safety (a challenge host must survive any upload):

* zip: absolute paths, ``..`` components (zip slip), drive letters, symlinks and encrypted members
  are errors; the member count, the declared total uncompressed size, each member's size and each
  large member's compression ratio are capped *before* anything is decompressed, and reads are
  bounded by the declared size (CPython's zipfile stops there and checks the CRC);
* folder: symlinks are errors (never followed); the walk stops at the member cap;
* each PNG's signature and IHDR header (size, bit depth, colour type) are checked before decoding,
  so a JPEG renamed ``.png``, a 16-bit or colour PNG, or a decompression bomb of the wrong size
  never reaches the decoder.

Files may sit at the root or inside exactly one top-level folder; ``__MACOSX/``, dotfiles,
``Thumbs.db`` and ``desktop.ini`` are ignored. Every problem is collected, each naming its file, and
reported once (:class:`InvalidSubmissionError`); extra files are warnings.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import threading
import zlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from gasdb_tools.errors import SubmissionError
from gasdb_tools.fsutil import read_file
from gasdb_tools.imaging import decode_image

try:  # libdeflate inflates PNG data 4-6x faster than zlib 1.2 (optional: ``pip install deflate``)
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - depends on the environment
    _libdeflate = None

__all__ = [
    "SubmissionLimits",
    "Submission",
    "InvalidSubmissionError",
    "open_submission",
    "decode_mask",
    "decode_png_gray8",
    "decode_png_bits",
    "pack_bits",
    "png_header",
    "PNG_SIGNATURE",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}
_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
_MAX_CD_ENTRY_BYTES = 1100  # generous central-directory bytes per member (46 + name + extras)
_MAX_REPORTED = 40  # errors listed in the exception text (all are in .errors)


@dataclass(frozen=True)
class SubmissionLimits:
    """Caps that keep a hostile upload from exhausting memory, disk or time.

    Parameters
    ----------
    max_members : int or None
        Most entries (files + folders) a zip or folder may hold; ``None`` = 10 × the number of
        expected ids + 100 (at most ``hard_max_members``).
    hard_max_members : int
        Absolute cap on entries, whatever the number of ids.
    max_total_bytes : int
        Most uncompressed bytes in all (declared) members together (2 GiB).
    max_member_bytes : int
        Most bytes of one member or file (64 MiB; a 640×512 mask PNG is < 400 kB).
    max_ratio : float
        Most uncompressed/compressed ratio of a zip member larger than ``ratio_min_bytes``.
    ratio_min_bytes : int
        Members up to this size are not ratio-checked (small all-zero masks compress very well).
    """

    max_members: int | None = None
    hard_max_members: int = 100_000
    max_total_bytes: int = 2 << 30
    max_member_bytes: int = 64 << 20
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1 << 20

    def member_cap(self, n_ids: int | None) -> int:
        """The entry cap for a submission expected to hold ``n_ids`` masks."""
        if self.max_members is not None:
            return min(self.max_members, self.hard_max_members)
        if n_ids is None:
            return self.hard_max_members
        return min(10 * n_ids + 100, self.hard_max_members)


class InvalidSubmissionError(SubmissionError):
    """A submission failed one or more checks; ``errors`` holds every problem, each naming its file.

    Attributes
    ----------
    errors : list of SubmissionError
        Every problem found, sorted by file name.
    warnings : list of str
        Non-fatal remarks (extra files, ignored junk).
    report : dict
        JSON-ready ``{"valid": false, "n_errors", "errors": [...], "warnings": [...]}``.
    """

    def __init__(self, errors, *, warnings=(), file=None):
        self.errors = sorted(errors, key=lambda e: (e.file or "", e.message))
        self.warnings = list(warnings)
        lines = [f"  - {e}" for e in self.errors[:_MAX_REPORTED]]
        if len(self.errors) > _MAX_REPORTED:
            lines.append(f"  ... and {len(self.errors) - _MAX_REPORTED} more (see the JSON report)")
        n = len(self.errors)
        message = f"invalid submission: {n} problem{'s' if n != 1 else ''}:\n" + "\n".join(lines)
        super().__init__(message, file=file)

    @property
    def report(self) -> dict:
        return {"valid": False, "n_errors": len(self.errors), "errors": [e.to_dict() for e in self.errors],
                "warnings": list(self.warnings)}


def _err(message: str, file: str, fix: str | None = None) -> SubmissionError:
    return SubmissionError(message, file=file, fix=fix)


# --------------------------------------------------------------------------- PNG header and decoding

def png_header(data: bytes) -> tuple[int, int, int, int]:
    """Parse a PNG's signature and IHDR chunk without decoding.

    Returns
    -------
    (height, width, bit_depth, colour_type)

    Raises
    ------
    ValueError
        When ``data`` is not a PNG (wrong signature, e.g. a JPEG renamed ``.png``) or its first
        chunk is not a well-formed IHDR.
    """
    if data[:8] != PNG_SIGNATURE:
        kind = "a JPEG" if data[:3] == b"\xff\xd8\xff" else "not a PNG"
        raise ValueError(f"{kind} (no PNG signature)")
    if len(data) < 33 or data[12:16] != b"IHDR" or struct.unpack(">I", data[8:12])[0] != 13:
        raise ValueError("truncated or malformed PNG (no IHDR chunk)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    return height, width, bit_depth, colour_type


def decode_png_gray8(data, *, out: np.ndarray | None = None) -> np.ndarray | None:
    """Decode a plain 8-bit grayscale PNG in one inflate call, or return ``None`` to leave it to libpng.

    The fast path of mask decoding: one zlib inflate of the whole image (libdeflate when the
    ``deflate`` package is installed, else zlib) and whole-array unfiltering with numpy, instead of
    libpng's row-by-row inflate. It takes only files that libpng (``cv2.imdecode``) decodes to the
    same pixels without a warning: signature, IHDR (8-bit, grayscale, not interlaced, standard
    compression and filter method), then only IDAT chunks and an empty IEND ending the file, every
    chunk's CRC right, one complete zlib stream (Adler-32 checked) of exactly the image's size, and
    rows filtered with None, Sub or Up (PNG specification 1.2, section 6). For anything else (Average or Paeth rows,
    ancillary chunks, a damaged file) it returns ``None`` and the caller decodes with OpenCV as
    before, so what is accepted or rejected, and the pixels, do not depend on this path.

    Parameters
    ----------
    data : bytes-like
        A PNG file's content.
    out : ndarray, optional
        A C-contiguous uint8 array to decode into when it has the image's shape (a reused buffer:
        fresh frame-sized arrays cost page faults each time); otherwise a new array is returned.

    Returns
    -------
    (H, W) ndarray of uint8, or None
    """
    rows = _png_rows(data)
    return None if rows is None else _unfilter_rows(rows, out)


def decode_png_bits(data, *, on: int = 1) -> np.ndarray | None:
    """Decode a two-valued (0 / ``on``) 8-bit gray PNG straight to packed bits, or ``None``.

    The mask path of :func:`gasdb_tools.scoring.score`: the pixels equal to ``on`` (1, or 255 for
    0/255 masks), packed eight to a byte along each row in the layout of :func:`pack_bits`,
    without building the image. It accepts
    the same files as :func:`decode_png_gray8` whose rows are all filtered None or Up (ours, PNG
    specification 1.2, section 6) and whose pixels are all 0 or ``on``; for anything else (Sub,
    Average or Paeth rows, another value, a file :func:`decode_png_gray8` refuses) it returns
    ``None`` and the caller decodes the whole image. See :func:`_pack_rows` for why this is exact.

    Returns
    -------
    (H, 8 * ceil((W + 1) / 64)) ndarray of uint8, or None
    """
    rows = _png_rows(data)
    return None if rows is None else _pack_rows(rows, on)


def _png_rows(data) -> np.ndarray | None:
    """The inflated, still filtered rows (H, 1 + W) of a plain 8-bit gray PNG, or ``None``.

    ``None`` for whatever :func:`decode_png_gray8` leaves to libpng, except the row filter types,
    which the callers check (column 0 holds them).
    """
    view = memoryview(data)
    if len(view) < 45 or view[:16] != PNG_SIGNATURE + b"\x00\x00\x00\rIHDR":
        return None
    width, height, bit_depth, colour_type, compression, filter_method, interlace = struct.unpack_from(
        ">IIBBBBB", view, 16)
    if (bit_depth, colour_type, compression, filter_method, interlace) != (8, 0, 0, 0, 0) \
            or not (0 < width < 1 << 16 and 0 < height < 1 << 16):
        return None
    if zlib.crc32(view[12:29]) != struct.unpack_from(">I", view, 29)[0]:
        return None
    idat, pos, end = [], 33, len(view)
    while True:
        if pos + 12 > end:
            return None
        length, kind = struct.unpack_from(">I4s", view, pos)
        stop = pos + 12 + length
        if stop > end or zlib.crc32(view[pos + 4:stop - 4]) != struct.unpack_from(">I", view, stop - 4)[0]:
            return None
        if kind == b"IDAT":
            idat.append(view[pos + 8:stop - 4])
        elif kind == b"IEND" and length == 0 and idat and stop == end:
            break
        else:  # ancillary or unknown chunks, IEND not last: libpng's rules apply
            return None
        pos = stop
    raw = _inflate(idat[0] if len(idat) == 1 else b"".join(idat), height * (width + 1))
    return None if raw is None else np.frombuffer(raw, np.uint8).reshape(height, width + 1)


def _unfilter_rows(rows: np.ndarray, out: np.ndarray | None) -> np.ndarray | None:
    """:func:`_unfilter` of ``rows`` into ``out`` when it fits, else into a new array."""
    shape = (rows.shape[0], rows.shape[1] - 1)
    if out is None or out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        out = np.empty(shape, np.uint8)
    return _unfilter(rows, out)


def _inflate(stream, size: int) -> bytes | None:
    """The zlib ``stream`` inflated, when it is complete, checks out and holds exactly ``size`` bytes."""
    try:
        if _libdeflate is not None:  # bounded by size; fails on a bad stream or Adler-32
            out = _libdeflate.zlib_decompress(stream, size)
        else:
            inflater = zlib.decompressobj()
            out = inflater.decompress(stream, size + 1)  # never more than size + 1 bytes (zip-bomb safe)
            if not inflater.eof:
                return None
    except Exception:  # noqa: BLE001 - zlib.error, deflate.DeflateError: libpng decides
        return None
    return out if len(out) == size else None


def _unfilter(rows: np.ndarray, image: np.ndarray) -> np.ndarray | None:
    """Undo the PNG row filters None (0), Sub (1) and Up (2) of a 1-byte-per-pixel image.

    Sub rows are prefix sums along the row and Up rows prefix sums down the column, restarting at
    every row that is not Up; all arithmetic is modulo 256, as in the PNG specification. ``None``
    for Average (3) and Paeth (4) rows (sequential along the row) and invalid filter types.
    ``rows`` are the inflated rows (H, 1 + W), ``image`` (H, W) receives the pixels.
    """
    height, width = image.shape
    kinds, pixels = rows[:, 0], rows[:, 1:]
    if int(kinds.max()) > 2:
        return None
    sub = kinds == 1
    up = kinds == 2
    up[0] = False  # Up on the first row adds zeros
    if sub.any() and not sub.all():
        pixels = pixels.copy()
        pixels[sub] = _prefix_sum(pixels[sub], 1, np.empty((int(sub.sum()), width), np.uint8))
    if up.any():
        _prefix_sum(pixels, 0, image)
        if not up[1:].all():  # a None or Sub row restarts the sum: subtract the total before it
            starts = np.maximum.accumulate(np.where(up, 0, np.arange(height)))
            before = np.concatenate([np.zeros((1, width), np.uint8), image])[starts]
            np.subtract(image, before, out=image)
    elif sub.all():
        _prefix_sum(pixels, 1, image)
    else:
        np.copyto(image, pixels)
    return image


_scratch = threading.local()
_MAX_SCRATCH = 1 << 22  # bytes of scratch a thread keeps between images


def _scratch_array(shape: tuple[int, int]) -> np.ndarray:
    """A uint8 array of ``shape`` over this thread's scratch buffer (its content is undefined).

    Fresh frame-sized arrays cost more than the passes over them: the allocator hands their pages
    back to the system when they are freed, and every new one faults them in again.
    """
    size = shape[0] * shape[1]
    scratch = getattr(_scratch, "buffer", None)
    if scratch is None or scratch.size < size:
        scratch = np.empty(size, np.uint8)
        if size <= _MAX_SCRATCH:  # kept for the next image of this thread
            _scratch.buffer = scratch
    return scratch[:size].reshape(shape)


def _prefix_sum(src: np.ndarray, axis: int, out: np.ndarray) -> np.ndarray:
    """Inclusive prefix sum of uint8 ``src`` along ``axis`` (0 or 1), modulo 256, written to ``out``.

    Hillis-Steele doubling: ceil(log2(n)) whole-array additions, alternating between ``out`` and a
    scratch buffer kept per thread (numpy's ``cumsum`` along an axis of uint8 is several times
    slower, and fresh buffers of a frame's size cost more than the additions).
    """
    n = src.shape[axis]
    passes = (n - 1).bit_length()
    if passes == 0:
        np.copyto(out, src)
        return out
    scratch = _scratch_array(out.shape)
    buffers = (out, scratch) if passes % 2 else (scratch, out)  # the last pass writes to out
    current, k, i = src, 1, 0
    while k < n:
        target = buffers[i % 2]
        if axis == 0:
            target[:k] = current[:k]
            np.add(current[k:], current[:-k], out=target[k:])
        else:
            target[:, :k] = current[:, :k]
            np.add(current[:, k:], current[:, :-k], out=target[:, k:])
        current, k, i = target, k * 2, i + 1
    return out


def pack_bits(mask: np.ndarray) -> np.ndarray:
    """Pack a (H, W) mask's nonzero pixels into the layout of :func:`decode_png_bits`.

    Each row is :func:`numpy.packbits` of ``[0, *row]`` (the first bit stands where a PNG row's
    filter-type byte is, so rows pack straight from the inflated data) padded with zero bytes to
    a multiple of 8 bytes. Two masks of one size pack alike, so counts of ``a & b`` are counts of
    pixels (:func:`gasdb_tools.metrics.confusion_packed`).
    """
    height, width = mask.shape
    row = _scratch_array((height, width + 1))
    row[:, 0] = 0
    np.not_equal(mask, 0, out=row[:, 1:].view(np.bool_))
    return _padded(np.packbits(row, axis=1))


def _padded(packed: np.ndarray) -> np.ndarray:
    """``packed`` (H, n) with zero bytes added to a multiple of 8 per row (whole uint64 words)."""
    height, n = packed.shape
    out = np.zeros((height, -(-n // 8) * 8), np.uint8)
    out[:, :n] = packed
    return out


def _pack_rows(rows: np.ndarray, on: int) -> np.ndarray | None:
    """The bits of ``image == on`` (:func:`pack_bits` layout) from rows filtered None or Up, or ``None``.

    With every pixel 0 or ``on`` (1 or 255), a None row's bytes are its pixels and an Up row's
    bytes are ``pixel - pixel above`` modulo 256: 0 where the pixel repeats the one above, ``on``
    where it turns on and ``-on`` (255 or 1) where it turns off. So the bits are an XOR prefix
    down each column of "byte != 0", restarted at every None row, computed on the packed bits
    (eight times less data than the image). The result is exact, not assumed: the image is known
    to be two-valued only if every byte is 0, 1 or 255 and every nonzero byte is the one its
    pixel's previous state allows (``on`` after off, ``-on`` after on); else ``None``.
    """
    if on not in (1, 255):
        raise ValueError(f"on must be 1 or 255, got {on}")
    height = rows.shape[0]
    kinds = rows[:, 0]
    if np.bitwise_and(kinds, 0xFD).any():  # a type other than None (0) and Up (2)
        return None
    # whole contiguous rows (the filter byte included) are several times faster to pass over than a view
    shifted = np.add(rows, 1, out=_scratch_array(rows.shape))  # bytes 255, 0, 1 -> 0, 1, 2
    shifted[:, 0] = 1
    if int(shifted.max()) > 2:
        return None
    changes = np.packbits(rows, axis=1)  # byte != 0
    changes[:, 0] &= 0x7F  # the filter byte's bit
    not_255 = np.packbits(shifted, axis=1)  # byte != 255
    words = _padded(changes).view(np.uint64)
    bits = np.bitwise_xor.accumulate(words, axis=0, out=words).view(np.uint8)
    # None rows after the first (the first is one either way)
    restarts = None if kinds[1:].all() else np.flatnonzero(kinds[1:] == 0) + 1
    if restarts is not None:
        starts = np.zeros(height, np.intp)
        starts[restarts] = restarts
        starts = np.maximum.accumulate(starts)
        bits ^= np.concatenate([np.zeros((1, bits.shape[1]), np.uint8), bits])[starts]
    n = changes.shape[1]
    before = np.empty_like(changes)  # each pixel's state before its row: the row above, or off after a restart
    before[0] = 0
    before[1:] = bits[:-1, :n]
    if restarts is not None:
        before[restarts] = 0
    # on == 1: a 1 byte must turn a pixel on (before: off), a 255 byte turn it off; on == 255: the reverse
    wrong = np.bitwise_xor(not_255, before, out=before)
    if on == 1:
        np.invert(wrong, out=wrong)
    return None if np.bitwise_and(changes, wrong, out=wrong).any() else bits


def decode_mask(data: bytes, *, shape: tuple[int, int], name: str = "<bytes>", binary_255: bool = False,
                out: np.ndarray | None = None, packed: bool = False) -> np.ndarray:
    """Check and decode one submitted mask PNG into a ``uint8`` array of 0/1.

    Parameters
    ----------
    data : bytes
        The file's content.
    shape : (int, int)
        The ground truth's (height, width); the mask must match exactly (never resized).
    name : str
        Shown in error messages.
    binary_255 : bool
        Accept values {0, 255} (255 → 1) instead of {0, 1}.
    out : ndarray, optional
        A reused (H, W) uint8 buffer the mask may be decoded into (see :func:`decode_png_gray8`,
        used for submitted masks when libdeflate is installed); use the returned array, which is
        ``out`` or a new one.
    packed : bool
        Return the gas pixels as packed bits (:func:`pack_bits` layout) instead: two-valued masks
        filtered None or Up are then decoded without building the image (:func:`decode_png_bits`).

    Returns
    -------
    (H, W) ndarray of uint8
        Class indices, 0 or 1 (with ``packed``: their bits, see :func:`pack_bits`).

    Raises
    ------
    SubmissionError
        Not a PNG (e.g. a JPEG renamed ``.png``), 16-bit, colour or alpha, wrong size, undecodable,
        or values outside the allowed set; the message names ``name``.

    Notes
    -----
    Accepted PNG modes are 8-bit grayscale (``L``), 1-bit grayscale (``1``: white = gas) and
    palette (``P``: the *indices* are the classes, the palette colours are ignored).
    """
    try:
        height, width, bit_depth, colour_type = png_header(data)
    except ValueError as exc:
        raise _err(f"unreadable mask: {exc}", name, "save the mask as a single-channel 8-bit PNG") from None
    if colour_type not in (0, 3):
        kind = _COLOUR_TYPES.get(colour_type, f"colour type {colour_type}")
        raise _err(f"multi-channel mask ({kind} PNG); masks must be single-channel", name,
                   "save one channel of class indices (mode L or P)")
    if bit_depth == 16:
        raise _err("16-bit PNG; masks must be 8-bit", name, "save the mask as 8-bit (uint8) class indices")
    if (height, width) != tuple(shape):
        raise _err(f"wrong size {width}x{height} (width x height); the ground truth is {shape[1]}x{shape[0]}",
                   name, "predict at the ground truth's size; masks are never resized")
    if colour_type == 0 and bit_depth not in (1, 8):
        raise _err(f"{bit_depth}-bit grayscale PNG is not supported", name, "save as 8-bit grayscale (mode L)")
    try:
        if colour_type == 3 or bit_depth == 1:
            mask = _decode_indices(data)
        else:
            # Any writer's file: tried only with libdeflate, where one it leaves to OpenCV (Pillow's
            # Paeth rows) costs ~30 us; with zlib that would be a whole wasted inflate.
            rows = _png_rows(data) if _libdeflate is not None else None
            if rows is not None and packed:
                bits = _pack_rows(rows, 255 if binary_255 else 1)
                if bits is not None:  # a two-valued mask of the right values: nothing left to check
                    return bits
            mask = None if rows is None else _unfilter_rows(rows, out)
            if mask is None:
                mask = decode_image(data, mode="unchanged", name=name)
    except Exception:  # noqa: BLE001 - any decoder failure is the file's problem
        raise _err("unreadable mask: the PNG data is corrupt or truncated", name,
                   "re-export the mask as PNG") from None
    if mask.ndim != 2 or mask.dtype != np.uint8 or mask.shape != tuple(shape):
        raise _err(f"decoded to {mask.dtype} {mask.shape}, expected uint8 {tuple(shape)}", name,
                   "save a single-channel 8-bit PNG of class indices")
    mask = _binarise(mask, name=name, binary_255=binary_255)
    return pack_bits(mask) if packed else mask


def _decode_indices(data: bytes) -> np.ndarray:
    """Palette (indices, not colours) and 1-bit PNGs via Pillow; OpenCV would expand both."""
    from PIL import Image  # Pillow comes with matplotlib; only needed for P and 1-bit masks

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode == "1":
            return np.asarray(im, dtype=np.uint8)
        if im.mode != "P":
            raise ValueError(f"unexpected Pillow mode {im.mode}")
        return np.asarray(im).astype(np.uint8, copy=False)


def _binarise(mask: np.ndarray, *, name: str, binary_255: bool) -> np.ndarray:
    top = int(mask.max())
    if not binary_255:
        if top <= 1:
            return mask
        allowed, fix = "{0, 1}", "write class indices 0/1 (for 0/255 masks pass --binary-255)"
    else:
        if top == 0:
            return mask
        if top == 255 and np.count_nonzero(mask) == np.count_nonzero(mask == 255):
            return (mask >> 7).astype(np.uint8, copy=False)
        allowed = "{0, 255} (--binary-255)"
        fix = "write 0 for background and 255 for gas (or drop --binary-255 for 0/1)"
    counts = np.bincount(mask.ravel(), minlength=256)
    ok = {0, 255} if binary_255 else {0, 1}
    bad = [v for v in np.flatnonzero(counts).tolist() if v not in ok]
    shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    raise _err(f"values {{{shown}}} outside {allowed}", name, fix)


# --------------------------------------------------------------------------- the submission container

@dataclass
class Submission:
    """An opened submission: which file holds each id, and a bounded reader.

    Use :func:`open_submission`; close it (or use ``with``) to release a zip file.

    Attributes
    ----------
    path : Path
        The folder or zip given.
    kind : {'folder', 'zip'}
    files : dict
        id → member name (zip) or path relative to ``path`` (folder), for the ids found.
    errors : list of SubmissionError
        Structural problems (unsafe members, duplicates, missing ids, oversize files).
    warnings : list of str
        Extra files, ignored junk.
    missing : list of str
        Expected ids without a file.
    archive_sha256 : str or None
        sha256 of the zip file itself.
    """

    path: Path
    kind: str
    files: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    archive_sha256: str | None = None
    missing: list = field(default_factory=list)
    limits: SubmissionLimits = field(default_factory=SubmissionLimits)
    _zip: zipfile.ZipFile | None = None
    _members: dict = field(default_factory=dict)  # normalised member name -> ZipInfo
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def display_name(self, id_: str) -> str:
        """How error messages name the file that holds ``id_``."""
        return self.label(self.files[id_])

    def label(self, rel: str) -> str:
        """``<zip name>:<member>`` or ``<folder>/<file>``."""
        return f"{self.path.name}:{rel}" if self.kind == "zip" else os.path.join(self.path, rel)  # == str(path / rel)

    def read(self, id_: str) -> bytes:
        """The bytes of ``id_``'s file, bounded by the size caps (thread-safe).

        Raises
        ------
        SubmissionError
            When the file cannot be read, is corrupt in the zip, or is larger than allowed.
        """
        name = self.display_name(id_)
        cap = self.limits.max_member_bytes
        try:
            if self._zip is not None:
                info = self._members[self.files[id_]]
                with self._lock, self._zip.open(info) as fh:
                    data = fh.read(min(info.file_size, cap) + 1)
            else:  # O_NOFOLLOW: a file swapped for a symlink after the walk is still not followed
                data = read_file(os.path.join(self.path, self.files[id_]), cap=cap, follow_links=False)
        except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
            raise _err(f"unreadable file ({exc})", name, "re-create the file or the zip") from None
        if len(data) > cap:
            raise _err(f"file larger than {cap} bytes", name, "submit plain mask PNGs")
        return data

    def reopen(self) -> None:
        """Give this (forked) process its own handle on the zip: one inherited from the parent
        shares its file offset with every other process, and their reads would mix."""
        if self._zip is not None:
            self._zip = zipfile.ZipFile(self.path)
            self._lock = threading.Lock()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_ignored(parts: tuple[str, ...]) -> bool:
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts) or parts[-1].lower() in _IGNORED_NAMES


def _unsafe_reason(raw: str) -> str | None:
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if any(p == ".." for p in name.split("/")):
        return "path traversal ('..' component, zip slip)"
    if "\x00" in name:
        return "NUL byte in the name"
    return None


def open_submission(path, *, ids=None, limits: SubmissionLimits | None = None, allow_missing: bool = False
                    ) -> Submission:
    """Open a submission folder or zip and map ids to files, without reading any mask.

    Parameters
    ----------
    path : str or os.PathLike
        A folder of ``<id>.png`` or a ``.zip`` of them (at the root or in one top-level folder).
    ids : iterable of str, optional
        The expected ids (ground-truth stems); with them, missing ids become errors and
        unexpected files warnings, and the member cap scales with their number.
    limits : SubmissionLimits, optional
    allow_missing : bool
        Report missing ids as warnings instead of errors (a development mode; the scorer then
        counts them as all background). They are listed in ``Submission.missing`` either way.

    Returns
    -------
    Submission
        With structural ``errors`` collected (not raised) so the caller can add per-file errors
        and fail once.

    Raises
    ------
    SubmissionError
        Immediately, when ``path`` is neither a folder nor a readable zip, or a cap on the member
        count or total size is exceeded (nothing is decompressed then).
    """
    path = Path(path)
    limits = limits or SubmissionLimits()
    expected = None if ids is None else set(ids)
    cap = limits.member_cap(None if expected is None else len(expected))
    if path.is_symlink():
        raise _err("the submission is a symlink", str(path), "pass the real folder or zip")
    if path.is_dir():
        sub = Submission(path=path, kind="folder", limits=limits)
        entries = _walk_folder(path, sub, cap)
    elif path.is_file():
        sub = Submission(path=path, kind="zip", limits=limits)
        entries = _scan_zip(path, sub, cap)
    else:
        raise _err("submission not found", str(path), "pass a folder or a .zip of <id>.png masks")

    _assign(entries, sub, expected, allow_missing=allow_missing)
    return sub


def _walk_folder(root: Path, sub: Submission, cap: int) -> list[tuple[str, int]]:
    """(relative posix path, size) of every regular file; symlinks are errors."""
    entries: list[tuple[str, int]] = []
    count = 0
    stack = [(str(root), "")]  # (folder, its path relative to root + "/"): strings, not pathlib (~1293 files)
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise _err(f"cannot list folder ({exc.strerror})", folder) from None
        for entry in items:
            count += 1
            if count > cap:
                raise _err(f"more than {cap} entries", str(sub.path),
                           "submit only the <id>.png masks of the split")
            rel = prefix + entry.name
            if _is_ignored(tuple(rel.split("/"))):
                continue
            if entry.is_symlink():
                sub.errors.append(_err("symlink (not followed)", str(sub.path / rel),
                                       "replace the link by the file itself"))
            elif entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                entries.append((rel, entry.stat(follow_symlinks=False).st_size))
            else:
                sub.errors.append(_err("not a regular file", str(sub.path / rel)))
    return entries


def _scan_zip(path: Path, sub: Submission, cap: int) -> list[tuple[str, int]]:
    from gasdb_tools.fsutil import sha256_file

    limits = sub.limits
    size = path.stat().st_size
    if size > limits.max_total_bytes:
        raise _err(f"zip file of {size} bytes, more than the cap of {limits.max_total_bytes}", str(path),
                   "submit only the <id>.png masks of the split")
    counts = _central_directory(path, size)
    if counts is not None:  # checked before zipfile parses (and allocates) the whole directory
        entries, cd_size = counts
        if entries > cap or cd_size > cap * _MAX_CD_ENTRY_BYTES + 65536:
            raise _err(f"zip has {entries} members, more than the cap of {cap}" if entries > cap else
                       f"zip central directory of {cd_size} bytes is too large for {cap} members", str(path),
                       "submit only the <id>.png masks of the split")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _err(f"not a readable zip file ({exc})", str(path),
                   "submit a .zip (or a folder) of <id>.png masks") from None
    infos = zf.infolist()
    if len(infos) > cap:
        zf.close()
        raise _err(f"zip has {len(infos)} members, more than the cap of {cap}", str(path),
                   "submit only the <id>.png masks of the split")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        zf.close()
        raise _err(f"zip declares {total} uncompressed bytes, more than the cap of {limits.max_total_bytes} "
                   "(zip bomb?)", str(path), "submit plain mask PNGs")
    sub._zip = zf
    sub.archive_sha256 = sha256_file(path)
    entries = []
    for info in infos:
        raw = info.filename
        where = f"{path.name}:{raw}"
        reason = _unsafe_reason(raw)
        if reason:
            sub.errors.append(_err(f"unsafe member: {reason}", where, "zip the masks with relative paths only"))
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            sub.errors.append(_err("unsafe member: symlink", where, "zip the files themselves, not links"))
            continue
        if info.is_dir():
            continue
        parts = PurePosixPath(raw.replace("\\", "/")).parts
        if not parts or _is_ignored(parts):
            continue
        if info.flag_bits & 0x1:
            sub.errors.append(_err("encrypted member", where, "zip without a password"))
            continue
        if info.file_size > limits.max_member_bytes:
            sub.errors.append(_err(f"member of {info.file_size} bytes, more than the cap of "
                                   f"{limits.max_member_bytes}", where, "submit plain mask PNGs"))
            continue
        if info.file_size > limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            sub.errors.append(_err(f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 "
                                   f"above the cap of {limits.max_ratio:.0f}:1 (zip bomb?)", where,
                                   "submit plain mask PNGs"))
            continue
        normalised = "/".join(parts)
        entries.append((normalised, info.file_size))
        sub._members.setdefault(normalised, info)
    return entries


def _central_directory(path: Path, size: int) -> tuple[int, int] | None:
    """(entry count, central-directory bytes) from the end records, or None if there are none."""
    with open(path, "rb") as fh:
        tail_len = min(size, 22 + 65535)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        entries, cd_size = struct.unpack("<HL", tail[at + 10:at + 16])
        if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
            fh.seek(struct.unpack("<Q", tail[at - 12:at - 4])[0])
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                entries, cd_size = struct.unpack("<QQ", record[32:48])
    return entries, cd_size


def _assign(entries: list[tuple[str, int]], sub: Submission, expected: set | None, *, allow_missing: bool
            ) -> None:
    """Strip one common top-level folder, map stems to files, record duplicates/missing/extras."""
    pngs = [e for e, _ in entries if e.lower().endswith(".png")]
    tops = {e.split("/", 1)[0] for e in pngs}
    prefix = ""
    if len(tops) == 1 and all("/" in e for e in pngs):
        prefix = next(iter(tops)) + "/"
    found: dict[str, list[str]] = {}
    extras: list[str] = []
    for rel, _size in entries:
        inner = rel[len(prefix):]
        stem, dot, ext = inner.rpartition(".")
        base_stem = stem.rsplit("/", 1)[-1]
        if not dot or ext.lower() != "png":
            extras.append(rel)
            continue
        if expected is not None and base_stem not in expected:
            extras.append(rel)
            continue
        found.setdefault(base_stem, []).append(rel)
    label = sub.label
    for id_ in sorted(found):
        rels = sorted(found[id_])
        if len(rels) > 1:
            sub.errors.append(_err(f"duplicate mask for id {id_!r}: {', '.join(rels)}", label(rels[0]),
                                   "keep exactly one <id>.png per id"))
            continue
        rel = rels[0]
        if "/" in rel[len(prefix):]:
            sub.errors.append(_err("mask inside a nested folder; files must sit at the root or in one "
                                   "top-level folder", label(rel), "move it up"))
            continue
        sub.files[id_] = rel
    if expected is not None:
        sub.missing = sorted(expected - set(found))
        if allow_missing and sub.missing:
            shown = ", ".join(sub.missing[:5]) + (", ..." if len(sub.missing) > 5 else "")
            sub.warnings.append(f"{len(sub.missing)} missing mask(s) scored as all background "
                                f"(--allow-missing): {shown}")
        elif sub.missing:
            for id_ in sub.missing:
                sub.errors.append(_err(f"missing mask for id {id_!r}", label(f"{prefix}{id_}.png"),
                                       "submit one <id>.png per id of the split"))
    if extras:
        shown = ", ".join(sorted(extras)[:5]) + (", ..." if len(extras) > 5 else "")
        sub.warnings.append(f"{len(extras)} extra file{'s' if len(extras) != 1 else ''} ignored "
                            f"(not <id>.png of an expected id): {shown}")
