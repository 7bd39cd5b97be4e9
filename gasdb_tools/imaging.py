"""The one image reader and writer (8/16-bit PNG and friends), plus small dtype helpers.

Arrays are numpy, channels last, colour in **RGB(A)** order (OpenCV's BGR is converted at the
boundary, here and nowhere else). Thermal frames keep their bit depth: a 16-bit PNG reads back as
``uint16``. Writes are atomic (:func:`gasdb_tools.fsutil.atomic_write_bytes`).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from isal import isal_zlib

from gasdb_tools.errors import FormatError
from gasdb_tools.fsutil import atomic_write_bytes

__all__ = ["read_image", "write_image", "encode_png", "decode_image", "to_gray", "to_float01", "to_uint8"]

_MODES = ("unchanged", "gray", "rgb")
_PNG_FILTERS = {
    "up": cv2.IMWRITE_PNG_FILTER_UP,
    "all": cv2.IMWRITE_PNG_ALL_FILTERS,
    "none": cv2.IMWRITE_PNG_FILTER_NONE,
    "sub": cv2.IMWRITE_PNG_FILTER_SUB,
    "avg": cv2.IMWRITE_PNG_FILTER_AVG,
    "paeth": cv2.IMWRITE_PNG_FILTER_PAETH,
}
_PNG_STRATEGIES = {"default": 0, "filtered": 1, "huffman": 2, "rle": 3}
_PNG_DEFLATES = ("zlib", "isal")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (gray, RGB, RGBA)
_PNG_ROW_FILTERS = {"none": 0, "up": 2}  # the row filters the ISA-L path writes (PNG spec, section 9.2)


def decode_image(data: bytes, *, mode: str = "unchanged", name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, TIFF, ...) into an array.

    Parameters
    ----------
    data : bytes
        The encoded file content.
    mode : {'unchanged', 'gray', 'rgb'}
        ``unchanged`` keeps channels and bit depth (H×W, H×W×3 RGB or H×W×4 RGBA);
        ``gray`` returns H×W (colour converted with OpenCV's luma weights, bit depth kept);
        ``rgb`` returns H×W×3 (a gray image is repeated, alpha dropped).
    name : str
        Shown in error messages.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if image is None:
        raise FormatError("cannot decode the image (not an image, truncated or unsupported format)",
                          file=name, fix="re-export the file as PNG")
    if image.ndim == 3:
        code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}.get(image.shape[2])
        image = cv2.cvtColor(image, code) if code is not None else image
    if mode == "gray":
        return to_gray(image)
    if mode == "rgb":
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        return np.ascontiguousarray(image[:, :, :3])
    return image


def read_image(path, *, mode: str = "unchanged") -> np.ndarray:
    """Read an image file; see :func:`decode_image` for ``mode``.

    Raises
    ------
    FormatError
        When the file is missing or cannot be decoded (the message names the file).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError("image file not found", file=path, fix="check the path or rerun the stage "
                          "that writes it") from None
    except IsADirectoryError:
        raise FormatError("expected an image file, found a folder", file=path) from None
    return decode_image(data, mode=mode, name=str(path))


def encode_png(image: np.ndarray, *, compression: int = 3, png_filter: str = "up", strategy: str = "default",
               channel_order: str = "rgb", deflate: str = "zlib") -> bytes:
    """Encode a uint8/uint16 array (H×W, H×W×3 RGB, H×W×4 RGBA) as PNG bytes.

    ``png_filter`` is the PNG row filter. The default ``"up"`` encodes 640×512 camera frames about
    40 % faster than trying all five filters per row (``"all"``, OpenCV's default) for files within
    about 2-5 % of the size (measured on simulated and DJI thermal frames, zlib level 1).
    ``strategy`` is zlib's (``default``, ``filtered``, ``huffman``, ``rle``); ``rle`` is libpng's
    advice for filtered image data: at level 1 it takes 17-26 % less CPU than ``default`` on real
    camera frames, for files 0.79-0.95× the size on four real sets and 1.13× on RoadScene's
    visible frames (``benchmarks/bench_extract.py --png-strategies``). ``channel_order="bgr"``
    takes an H×W×3(4) array already in OpenCV's order (no conversion pass).

    ``deflate="isal"`` writes the PNG here instead of through OpenCV/libpng: the rows are filtered
    with numpy (``png_filter`` "up" or "none") and deflated as one IDAT by ISA-L at levels 1-3
    (zlib at 0 and 4-9, as :func:`gasdb_tools.h5pack.encode_chunk`; ``strategy`` must stay
    "default"). A standard PNG with the same pixels; at level 1 with filter "up" it takes 0.24-0.41x
    the CPU of zlib's RLE strategy for files 0.91-1.20x its size (0.95-1.03x zlib's default
    strategy's) on five real frame sets (``benchmarks/bench_extract.py --png-strategies``).
    Give it RGB(A) order (``channel_order="bgr"`` costs a conversion pass).
    """
    if png_filter not in _PNG_FILTERS:
        raise ValueError(f"png_filter must be one of {sorted(_PNG_FILTERS)}, got {png_filter!r}")
    if strategy not in _PNG_STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(_PNG_STRATEGIES)}, got {strategy!r}")
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if deflate not in _PNG_DEFLATES:
        raise ValueError(f"deflate must be one of {_PNG_DEFLATES}, got {deflate!r}")
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"PNG needs uint8 or uint16 pixels, got {image.dtype}; convert with to_uint8()")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(image.shape[2])
        if code is None:
            raise ValueError(f"PNG needs 1, 3 or 4 channels, got shape {image.shape}")
        if (channel_order == "rgb") != (deflate == "isal"):  # OpenCV wants BGR(A), the ISA-L path RGB(A)
            image = cv2.cvtColor(image, code)  # the same swap either way
    elif image.ndim != 2:
        raise ValueError(f"expected a 2-D or 3-D image array, got shape {image.shape}")
    if deflate == "isal":
        return _encode_png_isal(image, compression, png_filter, strategy)
    params = [cv2.IMWRITE_PNG_COMPRESSION, compression, cv2.IMWRITE_PNG_FILTER, _PNG_FILTERS[png_filter],
              cv2.IMWRITE_PNG_STRATEGY, _PNG_STRATEGIES[strategy]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image), params)
    if not ok:  # pragma: no cover - OpenCV only fails here on absurd input
        raise ValueError("OpenCV could not encode the image as PNG")
    return buf.tobytes()


def _encode_png_isal(image: np.ndarray, compression: int, png_filter: str, strategy: str) -> bytes:
    """:func:`encode_png` with ``deflate="isal"`` (``image``: uint8/uint16, H×W or H×W×3/4 in RGB(A) order)."""
    if png_filter not in _PNG_ROW_FILTERS:
        raise ValueError(f"deflate='isal' writes the row filters {sorted(_PNG_ROW_FILTERS)}, got {png_filter!r}")
    if strategy != "default":
        raise ValueError(f"strategy={strategy!r} is zlib's; deflate='isal' has none (leave strategy='default')")
    if not (isinstance(compression, (int, np.integer)) and 0 <= compression <= 9):
        raise ValueError(f"compression must be a zlib level 0-9, got {compression!r}")
    h, w = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.dtype == np.uint16:
        image = image.astype(">u2")  # PNG samples are big-endian
    rows = np.ascontiguousarray(image).view(np.uint8).reshape(h, -1)
    filtered = np.empty((h, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = _PNG_ROW_FILTERS[png_filter]
    if png_filter == "up":  # each byte minus the byte above it, modulo 256; the first row has zeros above
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    else:
        filtered[:, 1:] = rows
    level = int(compression)
    idat = (isal_zlib.compress(filtered, level) if 1 <= level <= isal_zlib.ISAL_BEST_COMPRESSION
            else zlib.compress(filtered, level))
    header = struct.pack(">IIBBBBB", w, h, 8 * image.dtype.itemsize, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join([_PNG_SIGNATURE, *_png_chunk(b"IHDR", header), *_png_chunk(b"IDAT", idat),
                     *_png_chunk(b"IEND", b"")])


def _png_chunk(kind: bytes, data: bytes) -> tuple:
    """A PNG chunk's parts: length, type, data, CRC-32 of type and data (PNG spec, section 5.3)."""
    return struct.pack(">I", len(data)), kind, data, struct.pack(">I", isal_zlib.crc32(data, isal_zlib.crc32(kind)))


def write_image(path, image: np.ndarray, *, compression: int = 3, png_filter: str = "up", strategy: str = "default",
                channel_order: str = "rgb", deflate: str = "zlib", sync: bool = True, digest: bool = False):
    """Write an array as a lossless PNG, atomically. Returns the path (and its digest).

    ``compression`` is zlib's level (0-9); 1 writes about twice as fast as 3 for a few % more bytes.
    ``png_filter``, ``strategy``, ``channel_order``, ``deflate``: see :func:`encode_png`. ``sync``: see
    :func:`gasdb_tools.fsutil.atomic_write_bytes`.
    ``digest=True`` returns ``(path, digest)``, the digest of the bytes written
    (:func:`gasdb_tools.provenance.bytes_digest`), for the stages' provenance.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"write_image writes lossless PNG only; got {path.name!r} (use a .png name)")
    data = encode_png(image, compression=compression, png_filter=png_filter, strategy=strategy,
                      channel_order=channel_order, deflate=deflate)
    atomic_write_bytes(path, data, sync=sync)
    if digest:
        from gasdb_tools.provenance import bytes_digest

        return path, bytes_digest(data)
    return path


def to_gray(image: np.ndarray) -> np.ndarray:
    """H×W×3 (RGB) or H×W×4 → H×W with OpenCV's luma weights; H×W passes through. Dtype kept."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        return cv2.cvtColor(image, code)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise ValueError(f"expected a gray or RGB(A) image, got shape {image.shape}")


def to_float01(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 → float32 in [0, 1] (by the dtype's range); floats pass through as float32."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32, copy=False)
    raise TypeError(f"expected uint8, uint16 or float pixels, got {image.dtype}")


def to_uint8(image: np.ndarray, *, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map an image to uint8.

    Floats are taken as [0, 1]; uint16 as [0, 65535]; with ``lo``/``hi`` the values are first
    stretched linearly so ``lo`` → 0 and ``hi`` → 255 (one setting per recording keeps the look of
    a sequence steady). Values are rounded and clipped.
    """
    image = np.asarray(image)
    if lo is not None or hi is not None:
        if lo is None or hi is None or not hi > lo:
            raise ValueError(f"need lo < hi for a contrast stretch, got lo={lo}, hi={hi}")
        scaled = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    raise TypeError(f"expected uint8, uint16 or float pixels, got {image.dtype}")
