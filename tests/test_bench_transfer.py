"""Smoke -> gas transfer: the visible-smoke renderer, the smoke folder layouts, data-source detection,
initialising from a checkpoint (strict and partial, reported), and the two-stage recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _torch_threads import one_torch_thread  # noqa: E402,F401 (autouse fixture)

from click.testing import CliRunner  # noqa: E402

from _bench_gasdb import make_gasdb  # noqa: E402
from gasdb_tools.resources import bench_config
from gasdb_tools.bench.data import resolve_source  # noqa: E402
from gasdb_tools.bench.registry import create_model  # noqa: E402
from gasdb_tools.bench.smoke import (SmokeFolder, find_smoke_layout, read_smoke_pair, smoke_split_names,  # noqa: E402
                                     write_smoke_folder)
from gasdb_tools.bench.train import TrainConfig, init_from_checkpoint, load_config, transfer  # noqa: E402
from gasdb_tools.cli import main  # noqa: E402
from gasdb_tools.errors import FormatError, ModelError  # noqa: E402
from gasdb_tools.imaging import read_image, write_image  # noqa: E402
from gasdb_tools.synth import render_visible_smoke  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- the simulator's visible smoke --------------------------------------------------------------
def test_visible_smoke_is_deterministic_and_its_mask_marks_the_whitened_pixels():
    rgb, mask = render_visible_smoke((96, 64), seed=4)
    rgb2, mask2 = render_visible_smoke((96, 64), seed=4)
    assert np.array_equal(rgb, rgb2) and np.array_equal(mask, mask2)
    assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8 and mask.dtype == bool
    assert 0.02 < mask.mean() < 0.8
    other, _ = render_visible_smoke((96, 64), seed=5)
    assert not np.array_equal(rgb, other)
    sat = rgb.max(2).astype(int) - rgb.min(2).astype(int)  # smoke is grey: less saturated than sky and grass
    assert sat[mask].mean() < sat[~mask].mean()
    with pytest.raises(ValueError, match="at least 16x16"):
        render_visible_smoke((8, 8))


# -- smoke folder layouts -------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return write_smoke_folder(tmp_path_factory.mktemp("smoke") / "smoke", n=10, size=(80, 64), test=2)


def test_flat_layout_with_lists(smoke_dir):
    layout = find_smoke_layout(smoke_dir)
    assert layout.kind == "flat" and len(layout.pairs) == 10 and sorted(layout.lists) == ["test", "train"]
    s = smoke_split_names(smoke_dir, val_fraction=0.25, val_block=2)
    assert len(s["test"]) == 2 and len(s["train"]) + len(s["val"]) == 8 and s["val_source"].startswith("carved")
    image, label = read_smoke_pair(*layout.pairs["smoke_0000"])
    rgb, mask = render_visible_smoke((80, 64), seed=0)
    assert image.shape == (64, 80, 4) and np.allclose(image[:, :, :3] * 255, rgb, atol=1e-3)
    assert np.array_equal(label, mask.astype(np.uint8))
    gray = read_image(layout.pairs["smoke_0000"][0], mode="gray")
    assert np.allclose(image[:, :, 3] * 255, gray, atol=1e-3)  # the thermal slot holds the luma
    zeros, _ = read_smoke_pair(*layout.pairs["smoke_0000"], thermal="zeros")
    assert zeros[:, :, 3].max() == 0.0


def test_split_folder_layout_with_aliases_and_mask_conventions(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            write_image(tmp_path / split / "img" / f"a{i}.png", rng.integers(0, 255, (16, 20, 3), dtype=np.uint8))
            mask = np.zeros((16, 20), np.uint8)
            mask[4:10, 5:12] = 1 if i == 0 else 255
            if i:
                mask[0, 0] = 100  # an antialiased 0/255 mask pixel below 128 is background
            write_image(tmp_path / split / "gt" / f"a{i}.png", mask)
    layout = find_smoke_layout(tmp_path)
    assert layout.kind == "split-folders" and sorted(layout.lists["test"]) == ["test/a0", "test/a1"]
    s = smoke_split_names(tmp_path, val_fraction=0.34, val_block=1)
    assert len(s["train"]) == 2 and len(s["val"]) == 1 and s["test"] == ["test/a0", "test/a1"]
    _, class_index_mask = read_smoke_pair(*layout.pairs["train/a0"])  # 0/1 class indices
    _, mask_0_255 = read_smoke_pair(*layout.pairs["train/a1"])  # 0/255 with a stray 100
    assert class_index_mask.sum() == mask_0_255.sum() == 6 * 7
    ds = SmokeFolder(tmp_path, s["train"], size_hw=(32, 32))
    x, y, name = ds[0]
    assert x.shape == (4, 32, 32) and y.shape == (32, 32) and name == s["train"][0]


def test_bad_smoke_folders_are_reported(tmp_path):
    with pytest.raises(FormatError, match="no smoke layout"):
        find_smoke_layout(tmp_path)
    write_image(tmp_path / "images" / "x.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "masks").mkdir()
    with pytest.raises(FormatError, match="have no mask"):
        find_smoke_layout(tmp_path)
    write_image(tmp_path / "masks" / "x.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(FormatError, match="sizes differ"):
        read_smoke_pair(tmp_path / "images" / "x.png", tmp_path / "masks" / "x.png")
    (tmp_path / "train.txt").write_text("x\ny\n")
    with pytest.raises(FormatError, match="no image/mask pair.*'y'"):
        find_smoke_layout(tmp_path)


def test_sources_are_told_apart(smoke_dir, tmp_path):
    gas = make_gasdb(tmp_path / "gasdb", n_train=4, n_test=2)
    assert resolve_source(gas).kind == "gasdb" and resolve_source(smoke_dir).kind == "smoke"
    assert resolve_source(smoke_dir, "smoke", smoke_thermal="zeros").smoke_thermal == "zeros"
    with pytest.raises(FormatError, match="not a Gas-DB folder"):
        resolve_source(smoke_dir, "gasdb")
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(FormatError, match="neither a Gas-DB folder"):
        resolve_source(empty)


# -- initialising from a checkpoint ----------------------------------------------------------------
def test_partial_and_strict_initialisation_are_reported(tmp_path):
    torch.manual_seed(0)
    source = create_model("unet-r18", n_class=3)
    path = tmp_path / "src.pt"
    torch.save({"model": source.state_dict()}, path)  # a wrapped plain state dict
    target = create_model("unet-r18", n_class=2)
    report = init_from_checkpoint(target, path)
    assert report["shape_mismatch"] == ["segmentation_head.0.weight: file (3, 16, 3, 3) vs model (2, 16, 3, 3)",
                                        "segmentation_head.0.bias: file (3,) vs model (2,)"]
    assert report["missing"] == [] and report["unexpected"] == [] and report["source_model"] is None
    assert report["loaded"] == len(target.state_dict()) - 2
    assert report["loaded_params"] == report["total_params"] - 2 * 16 * 9 - 2
    for key, value in target.state_dict().items():
        if not key.startswith("segmentation_head"):
            assert torch.equal(value, source.state_dict()[key]), key
    with pytest.raises(ModelError, match="does not fit exactly.*2 with another shape"):
        init_from_checkpoint(create_model("unet-r18"), path, strict=True)
    mf = tmp_path / "mfnet.pt"
    torch.save(create_model("mfnet").state_dict(), mf)
    with pytest.raises(ModelError, match="no weight of the checkpoint fits"):
        init_from_checkpoint(create_model("unet-r18"), mf)
    with pytest.raises(ModelError, match="not found"):
        init_from_checkpoint(create_model("mfnet"), tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def gas_dir(tmp_path_factory):
    return make_gasdb(tmp_path_factory.mktemp("gas") / "gasdb", n_train=6, n_test=2, size=(64, 64))


def _cfg(**kw) -> TrainConfig:
    base = dict(model="unet-r18", epochs=1, num_workers=0, val_fraction=0.34, val_block=2, batch_size=2,
                size=[64, 64])
    base.update(kw)
    return TrainConfig(**base)


def test_two_stage_transfer_initialises_the_gas_run_from_the_smoke_run(smoke_dir, gas_dir, tmp_path):
    out = tmp_path / "transfer"
    result = transfer(_cfg(), _cfg(), smoke_dir, gas_dir, out, device="cpu")
    assert json.loads((out / "transfer.json").read_text()) == json.loads(json.dumps(result))
    smoke_start = json.loads((out / "smoke" / "log.jsonl").read_text().splitlines()[0])
    gas_start = json.loads((out / "gas" / "log.jsonl").read_text().splitlines()[0])
    assert smoke_start["data_format"] == "smoke" and smoke_start["n_test"] == 2
    assert gas_start["data_format"] == "gasdb" and gas_start["init"]["source"] == str(out / "smoke" / "best.pt")
    init = json.loads((out / "gas" / "init_report.json").read_text())
    assert init["source_model"] == "unet-r18" and init["loaded_params"] == init["total_params"]
    assert (init["missing"], init["unexpected"], init["shape_mismatch"]) == ([], [], [])
    assert result["init"]["loaded"] == init["loaded"]
    assert result["smoke"]["test"]["data_format"] == "smoke" and result["gas"]["test"]["n_images"] == 2
    # rerunning resumes both finished stages without training again
    again = transfer(_cfg(), _cfg(), smoke_dir, gas_dir, out, device="cpu")
    assert again["gas"]["test"] == result["gas"]["test"]
    with pytest.raises(ModelError, match="differ"):
        transfer(_cfg(), _cfg(model="mfnet"), smoke_dir, gas_dir, tmp_path / "x", device="cpu")


def test_shipped_transfer_configs():
    pre = load_config(bench_config("unet-r18-smoke-pretrain"))
    fine = load_config(bench_config("unet-r18-smoke-transfer"))
    assert (pre.model, pre.data_format, fine.model, fine.init_from) == ("unet-r18", "smoke", "unet-r18", None)


def test_cli_transfer_and_init_from(smoke_dir, gas_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "t"
    res = runner.invoke(main, ["bench", "transfer", "--smoke", str(smoke_dir), "--data", str(gas_dir), "--out",
                               str(out), "--pretrain-epochs", "1", "--epochs", "1", "--size", "64x64", "--workers",
                               "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "initialised from the smoke run" in res.output and (out / "transfer.json").is_file()
    run = tmp_path / "init"
    res = runner.invoke(main, ["bench", "train", "--model", "unet-r18", "--data", str(gas_dir), "--out", str(run),
                               "--epochs", "1", "--workers", "0", "--size", "64x64", "--device", "cpu",
                               "--init-from", str(out / "smoke" / "best.pt")])
    assert res.exit_code == 0, res.output
    assert "initialised from" in res.output and "0 missing" in res.output
    res = runner.invoke(main, ["bench", "train", "--model", "mfnet", "--data", str(gas_dir), "--out",
                               str(tmp_path / "bad"), "--epochs", "1", "--workers", "0", "--device", "cpu",
                               "--init-from", str(out / "smoke" / "best.pt"), "--init-strict"])
    assert res.exit_code == 1 and "no weight of the checkpoint fits" in res.output
    res = runner.invoke(main, ["bench", "train", "--model", "unet-r18", "--data", str(smoke_dir), "--out",
                               str(tmp_path / "s"), "--epochs", "1", "--workers", "0", "--device", "cpu",
                               "--data-format", "smoke", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["test"]["data_format"] == "smoke"
