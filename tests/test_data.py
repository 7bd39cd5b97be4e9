"""GasDBDataset: split selection, exact samples, lazy per-process handles, DataLoader workers."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from _release_ws import build_workspace
from gasdb_tools.data import ARRAYS, GasDBDataset
from gasdb_tools.errors import FormatError
from gasdb_tools.imaging import read_image
from gasdb_tools.release import build_release
from gasdb_tools.splits import split_workspace


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ws = build_workspace(root / "ws", recordings=4, pairs_per=3, size=(64, 64))
    split_workspace(ws, ratios="0.5,0.5", seed=0)
    out = build_release(ws, root / "rel", version="0.1.0", created="2024-01-01T00:00:00Z")
    return ws, out / "gasdb.h5"


def test_samples_equal_the_workspace_frames(release):
    ws, h5 = release
    rows = {p["pair_id"]: p for p in ws.pairs()}
    total = 0
    for split in ("train", "test"):
        ds = GasDBDataset(h5, split)
        total += len(ds)
        for i in range(len(ds)):
            s = ds[i]
            assert set(s) == set(ARRAYS) | {"meta"}
            meta = s["meta"]
            assert meta["split"] == split
            row = rows[meta["pair_id"]]
            np.testing.assert_array_equal(s["rgb"], read_image(ws.path(row["rgb"])))
            np.testing.assert_array_equal(s["thermal"], read_image(ws.path(row["aligned"])))
            assert s["thermal"].dtype == np.uint16 and s["mask"].dtype == np.uint8
            assert meta["recording"] == row["recording"] and meta["t_thermal"] == float(row["t_thermal"])
            assert meta["gas_pixels"] == int((s["mask"] == 1).sum())
        ds.close()
    assert total == len(GasDBDataset(h5)) == len(rows)


def test_indexing_and_options(release):
    _, h5 = release
    ds = GasDBDataset(h5, "test", arrays=("mask",), transform=lambda s: (s["mask"].sum(), s["meta"]["name"]))
    last = ds[-1]
    assert last == ds[len(ds) - 1]
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(TypeError):
        ds[0.5]
    with pytest.raises(ValueError, match="not in the pack"):
        GasDBDataset(h5, "val")
    with pytest.raises(ValueError, match="subset"):
        GasDBDataset(h5, arrays=("depth",))
    assert "samples=" in repr(ds) and ds.version == "0.1.0" and ds.ignore_index == 255


def test_bad_files_are_reported(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        GasDBDataset(tmp_path / "none.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(FormatError, match="gasdb-h5"):
        GasDBDataset(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FormatError, match="cannot read"):
        GasDBDataset(tmp_path / "junk.h5")


def test_handle_is_lazy_and_not_pickled(release):
    _, h5 = release
    ds = GasDBDataset(h5, "train")
    assert ds._h5 is None  # nothing opened until the first sample
    first = ds[0]["rgb"]
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive
    assert clone._h5 is None
    np.testing.assert_array_equal(clone[0]["rgb"], first)
    ds.close()
    clone.close()


def test_torch_dataloader_with_workers(release):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, Dataset

    _, h5 = release
    ds = GasDBDataset(h5, "train")
    assert isinstance(ds, Dataset)
    seen = []
    for batch in DataLoader(ds, batch_size=2, num_workers=2, shuffle=False):
        assert batch["rgb"].dtype == torch.uint8 and batch["thermal"].dtype == torch.uint16
        seen += list(batch["meta"]["pair_id"])
    assert seen == [ds[i]["meta"]["pair_id"] for i in range(len(ds))]
