"""Load a release's HDF5 pack for training: :class:`GasDBDataset`.

A map-style dataset over ``gasdb.h5`` (see :mod:`gasdb_tools.h5pack`). It is a
``torch.utils.data.Dataset`` when torch is installed and a plain indexable object otherwise.
Each sample keeps its own frame size (a release may mix cameras). The per-sample tables are
checked against their SHA-256 when the dataset is created, so a corrupted split table is refused.
The file is opened lazily, once per process: h5py handles cannot be pickled, and a handle
shared across forked DataLoader workers corrupts reads (pytorch issues #11929, #11887), so
each worker opens its own on first access.

Examples
--------
>>> from gasdb_tools.data import GasDBDataset              # doctest: +SKIP
>>> ds = GasDBDataset("release-1.0.0/gasdb.h5", "train")    # doctest: +SKIP
>>> sample = ds[0]                                          # doctest: +SKIP
>>> sample["rgb"].shape, sample["thermal"].dtype, sample["meta"]["modality"]   # doctest: +SKIP
((480, 640, 3), dtype('uint16'), 'rgb+thermal')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from gasdb_tools.errors import FormatError
from gasdb_tools.h5pack import ARRAYS, META_NUM, read_tables

__all__ = ["GasDBDataset", "ARRAYS"]

try:  # a torch Dataset when torch is there; nothing in this module needs torch otherwise
    from torch.utils.data import Dataset as _Base
except ImportError:  # pragma: no cover - exercised only without torch
    _Base = object


class GasDBDataset(_Base):
    """Samples of one split of a release's HDF5 pack.

    Parameters
    ----------
    h5_path : path
        The release's ``gasdb.h5``.
    split : str or None
        ``train``, ``val``, ``test`` (any name under ``/splits``), or None for every pair.
    arrays : sequence of str
        Which of :data:`ARRAYS` each sample holds (default all four).
    transform : callable, optional
        Called on each sample dict; its result is returned instead.

    Notes
    -----
    A sample is a dict: ``rgb`` (H, W, 3) uint8 (all 0 when ``meta["modality"]`` is ``thermal``:
    a thermal camera alone), ``thermal`` (H, W) with its recording's bit depth (uint16 for
    radiometric cameras), ``mask`` (H, W) uint8 with 0 background, 1 gas, 255 ignore, ``valid``
    (H, W) uint8 with 255 where the thermal camera sees, and ``meta``: a dict with ``index``
    (sample number in the pack), ``pair_id``, ``name`` (Gas-DB name), ``recording``, ``scene``,
    ``split``, ``review``, ``modality``, ``rgb_resized_from`` ("WxH" of the RGB frame before it was
    resized to the annotation frame, "" when it was not), ``height``, ``width``, ``t_rgb``,
    ``t_thermal``, ``dt`` and ``gas_pixels``. Each sample has its own (H, W); batch samples of one
    size (group by ``meta["block"]``) or resize them in ``transform``. Arrays are numpy arrays;
    torch's default collate turns them into tensors.

    Raises
    ------
    FormatError
        The file is missing, not a gasdb pack, or its per-sample tables do not match their
        recorded SHA-256 (a corrupted file).
    """

    def __init__(self, h5_path, split: str | None = None, *, arrays=ARRAYS, transform: Callable | None = None):
        import h5py

        self.h5_path = Path(h5_path)
        self.split = split
        self.arrays = tuple(arrays)
        bad = [a for a in self.arrays if a not in ARRAYS]
        if bad or not self.arrays:
            raise ValueError(f"arrays must be a non-empty subset of {ARRAYS}, got {arrays!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        if not self.h5_path.is_file():
            raise FormatError("HDF5 pack not found", file=self.h5_path,
                              fix="pass the gasdb.h5 of a release (gasdb release WS OUT --version X.Y.Z)")
        try:
            with h5py.File(self.h5_path, "r") as f:
                meta, splits = read_tables(f, path=self.h5_path)
                n = len(meta["pair_id"])
                if split is None:
                    self.indices = np.arange(n, dtype=np.int64)
                else:
                    if split not in splits:
                        raise ValueError(f"split {split!r} is not in the pack; it has {sorted(splits)}")
                    self.indices = np.asarray(splits[split], dtype=np.int64)
                if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
                    raise FormatError(f"split {split!r} names rows outside 0..{n - 1}", file=self.h5_path,
                                      fix="check it with `gasdb verify RELEASE`")
                blocks = sorted(set(meta["block"]))
                missing = [f"frames/{b}/{a}" for b in blocks for a in self.arrays if f"frames/{b}/{a}" not in f]
                if missing:
                    raise FormatError(f"datasets {missing[:3]} are missing", file=self.h5_path,
                                      fix="rebuild the release with `gasdb release`")
                self._meta_str = {k: v for k, v in meta.items() if k not in META_NUM}
                self._meta_num = {k: v for k, v in meta.items() if k in META_NUM}
                self._block = list(meta["block"])
                self._row = np.asarray(meta["row"], np.int64)
                self.version = str(f.attrs.get("dataset_version", ""))
                self.class_names = [str(c) for c in f.attrs.get("class_names", ())]
                self.ignore_index = int(f.attrs.get("ignore_index", 255))
        except OSError as exc:
            raise FormatError(f"cannot read the HDF5 pack ({exc})", file=self.h5_path,
                              fix="check it with `gasdb verify RELEASE`") from None
        self._h5 = None
        self._pid = None
        self._dsets = {}

    # -- lazy, per-process file handle ---------------------------------------------------------
    def _datasets(self) -> dict:
        """This process's open datasets (opened on first use; name lookups cached)."""
        if self._h5 is None or self._pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.h5_path, "r")
            self._pid = os.getpid()
            self._dsets = {b: {a: self._h5[f"frames/{b}/{a}"] for a in self.arrays} for b in sorted(set(self._block))}
        return self._dsets

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None
        self._pid = None
        self._dsets = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None  # h5py handles are not picklable; each worker opens its own
        state["_pid"] = None
        state["_dsets"] = {}
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- the dataset protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples in split {self.split!r}")
        k = int(self.indices[i])
        row = int(self._row[k])
        sample = {a: d[row] for a, d in self._datasets()[self._block[k]].items()}
        meta = {"index": k}
        meta.update({key: values[k] for key, values in self._meta_str.items()})
        meta.update({key: values[k].item() for key, values in self._meta_num.items()})
        sample["meta"] = meta
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (f"GasDBDataset({str(self.h5_path)!r}, split={self.split!r}, samples={len(self)}, "
                f"version={self.version!r})")
