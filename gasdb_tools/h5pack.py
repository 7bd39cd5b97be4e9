"""The HDF5 pack of a release (``gasdb.h5``, ``docs/formats.md`` §4): layout, writer, checked reads.

Frames of one release may have different sizes (a 320x240 thermal camera and a 640x480 rig) and
thermal bit depths, so they live in **blocks**: one group per frame size and thermal dtype,
``/frames/<W>x<H>-<dtype>/{rgb,thermal,mask,valid}``, each an ``(n, H, W[, 3])`` dataset with one
chunk per frame. ``/meta/block`` and ``/meta/row`` say where sample ``k`` (pair-id order) is, so a
read is one chunk of one dataset. A thermal camera alone has ``rgb`` = 0 and ``/meta/modality``
``thermal``.

Chunks are compressed in worker processes and written with ``write_direct_chunk`` (the HDF5 C
library never sees uncompressed data), with the standard ``shuffle`` + ``gzip`` (deflate) filters
that every HDF5 build reads (h5py, MATLAB, h5dump; no plugin). The deflate streams of levels 1-3
come from ISA-L (``isal``, Intel's Intelligent Storage Acceleration Library): about 9x faster than
zlib at level 1 on 640x512 frames for files within 1-2 % of the size, and readable by every
inflate, so readers need nothing new. Level 0 stores, 4-9 use zlib. The per-sample tables carry a
SHA-256 (``meta_sha256``, ``splits_sha256`` attributes) that :func:`read_tables` checks, so a bit
flip in the split table is refused instead of returning another sample.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from isal import isal_zlib

from gasdb_tools.errors import FormatError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ARRAYS",
    "META_STR",
    "META_NUM",
    "block_name",
    "encode_chunk",
    "tables_digest",
    "PackWriter",
    "read_tables",
]

FORMAT = "gasdb-h5"
#: 2: frames in per-size blocks (1: one (N, H, W) dataset per array, all frames one size).
FORMAT_VERSION = 2
#: Arrays of a sample.
ARRAYS = ("rgb", "thermal", "mask", "valid")
#: Per-sample string fields under ``/meta``.
META_STR = ("pair_id", "name", "recording", "scene", "split", "review", "modality", "block", "rgb_resized_from",
            "mask_sha256", "sensors")
#: Per-sample numeric fields under ``/meta`` and their dtypes.
META_NUM = {"row": "<i8", "height": "<i8", "width": "<i8", "t_rgb": "<f8", "t_thermal": "<f8", "dt": "<f8",
            "gas_pixels": "<i8"}


def block_name(width: int, height: int, thermal_dtype) -> str:
    """The block of frames of one size and thermal dtype.

    >>> block_name(640, 512, "uint16")
    '640x512-uint16'
    """
    return f"{int(width)}x{int(height)}-{np.dtype(thermal_dtype).name}"


def encode_chunk(array: np.ndarray, level: int) -> bytes:
    """One frame as the bytes HDF5 stores for a ``shuffle`` + ``gzip(level)`` chunk (a zlib stream:
    ISA-L's at levels 1-3, zlib's otherwise; see the module docstring)."""
    a = np.ascontiguousarray(array)
    if a.dtype.itemsize > 1:
        data = np.ascontiguousarray(a.view(np.uint8).reshape(-1, a.dtype.itemsize).T).tobytes()
    else:
        data = a.tobytes()
    if 1 <= level <= isal_zlib.ISAL_BEST_COMPRESSION:
        return isal_zlib.compress(data, level)
    return zlib.compress(data, level)


def _column_bytes(key: str, values) -> bytes:
    if key in META_NUM:
        arr = np.asarray(values, dtype=META_NUM[key])
        return f"{key}:{arr.dtype.str}:{arr.shape[0]}:".encode() + arr.tobytes()
    parts = [f"{key}:str:{len(values)}:".encode()]
    for v in values:
        b = str(v).encode("utf-8")
        parts.append(len(b).to_bytes(8, "little") + b)
    return b"".join(parts)


def tables_digest(meta: Mapping, splits: Mapping) -> tuple[str, str]:
    """``(meta_sha256, splits_sha256)`` of the per-sample tables (canonical bytes, sorted keys)."""
    h = hashlib.sha256()
    for key in sorted(meta):
        h.update(_column_bytes(key, meta[key]))
    s = hashlib.sha256()
    for name in sorted(splits):
        arr = np.asarray(splits[name], dtype="<i8")
        s.update(f"{name}:{arr.shape[0]}:".encode() + arr.tobytes())
    return h.hexdigest(), s.hexdigest()


class PackWriter:
    """Write a pack: blocks created up front, chunks written in any order, tables last.

    Parameters
    ----------
    path : path
    blocks : dict
        Block name -> ``(n_frames, (height, width), thermal dtype)``.
    attrs : dict
        Root attributes (``format`` and ``format_version`` are added).
    level : int
        gzip level of the chunks (:func:`encode_chunk` must use the same).
    """

    def __init__(self, path, blocks: Mapping, attrs: Mapping, *, level: int):
        import h5py

        self.path = Path(path)
        self.level = int(level)
        self._f = h5py.File(self.path, "w", libver=("earliest", "v110"))
        self._f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, **attrs})
        self._d: dict[str, dict] = {}
        frames = self._f.create_group("frames")
        for name in sorted(blocks):
            n, (h, w), tdtype = blocks[name]
            g = frames.create_group(name)
            g.attrs.update({"width": int(w), "height": int(h), "thermal_dtype": np.dtype(tdtype).name})
            shapes = {"rgb": ((h, w, 3), np.uint8), "thermal": ((h, w), np.dtype(tdtype)),
                      "mask": ((h, w), np.uint8), "valid": ((h, w), np.uint8)}
            self._d[name] = {}
            for key in ARRAYS:
                shape, dtype = shapes[key]
                self._d[name][key] = g.create_dataset(key, shape=(n, *shape), dtype=dtype, chunks=(1, *shape),
                                                      compression="gzip", compression_opts=self.level, shuffle=True,
                                                      track_times=False)
            self._d[name]["mask"].attrs["values"] = "0 background, 1 gas, 255 ignore"
            self._d[name]["valid"].attrs["values"] = "255 where the thermal camera sees, 0 outside its warped view"
            self._d[name]["rgb"].attrs["missing"] = "0 for pairs without an RGB camera (/meta/modality 'thermal')"

    def write(self, block: str, row: int, chunks: Mapping[str, bytes]) -> None:
        """Store one frame's encoded chunks (:func:`encode_chunk`) at ``row`` of ``block``."""
        for key, data in chunks.items():
            d = self._d[block][key]
            d.id.write_direct_chunk((int(row),) + (0,) * (d.ndim - 1), data, 0)

    def finish(self, meta: Mapping, splits: Mapping) -> None:
        """Write ``/meta`` and ``/splits`` and their digests, then close the file."""
        import h5py

        g = self._f.create_group("meta")
        for key in sorted(meta):
            if key in META_NUM:
                g.create_dataset(key, data=np.asarray(meta[key], dtype=META_NUM[key]), track_times=False)
            else:
                g.create_dataset(key, data=np.asarray(meta[key], dtype=object), dtype=h5py.string_dtype(),
                                 track_times=False)
        s = self._f.create_group("splits")
        for name in sorted(splits):
            s.create_dataset(name, data=np.asarray(splits[name], np.int64), track_times=False)
        meta_sha, splits_sha = tables_digest(meta, splits)
        self._f.attrs["meta_sha256"] = meta_sha
        self._f.attrs["splits_sha256"] = splits_sha
        self.close()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_tables(f, *, path=None) -> tuple[dict, dict]:
    """``(meta, splits)`` of an open pack, checked against its digests.

    ``meta`` maps each ``/meta`` field to a list (strings) or an array; ``splits`` each split to
    its sorted row indices.

    Raises
    ------
    FormatError
        Not a gasdb pack, an unknown format version, missing tables, or tables whose SHA-256
        differs from the one recorded when the pack was written (a corrupted file).
    """
    where = path or getattr(f, "filename", None)
    if f.attrs.get("format") != FORMAT:
        raise FormatError("not a gasdb HDF5 pack (attribute format is not 'gasdb-h5')", file=where, field="format",
                          fix="pass the gasdb.h5 of a release")
    version = int(f.attrs.get("format_version", 0))
    if version != FORMAT_VERSION:
        raise FormatError(f"pack format_version {version}; this gasdb-tools reads {FORMAT_VERSION}", file=where,
                          field="format_version", fix="rebuild the release with this gasdb-tools (gasdb release)")
    if "meta" not in f or "splits" not in f or "frames" not in f:
        raise FormatError("the pack has no /meta, /splits or /frames group", file=where,
                          fix="rebuild the release with `gasdb release`")
    meta = {}
    for key in f["meta"]:
        d = f["meta"][key]
        meta[key] = d.asstr()[:].tolist() if key not in META_NUM else d[:]
    splits = {name: f["splits"][name][:] for name in f["splits"]}
    want = (str(f.attrs.get("meta_sha256", "")), str(f.attrs.get("splits_sha256", "")))
    got = tables_digest(meta, splits)
    for what, w, g in (("/meta", want[0], got[0]), ("/splits", want[1], got[1])):
        if w != g:
            raise FormatError(f"the {what} tables do not match their recorded SHA-256 (the file is corrupted)",
                              file=where, field=f"{what.strip('/')}_sha256",
                              fix="download the release again and check it with `gasdb verify RELEASE`")
    n = len(meta.get("pair_id", []))
    for key in ("block", "row"):
        if key not in meta or len(meta[key]) != n:
            raise FormatError(f"/meta/{key} is missing or has the wrong length", file=where,
                              fix="rebuild the release with `gasdb release`")
    return meta, splits

