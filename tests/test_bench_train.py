"""Benchmark harness end to end on CPU: data splits and augmentation, training (loss decreases,
checkpoints, logs, plot, resume), evaluation with gasdb_tools.metrics, speed, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _torch_threads import one_torch_thread  # noqa: E402,F401 (autouse fixture)

from click.testing import CliRunner  # noqa: E402

from _bench_gasdb import make_gasdb  # noqa: E402
from gasdb_tools.bench.data import Augment, GasDBFolder, augment_sample, carve_validation, split_names  # noqa: E402
from gasdb_tools.bench.evaluate import evaluate_checkpoint, evaluate_model  # noqa: E402
from gasdb_tools.bench.registry import list_models  # noqa: E402
from gasdb_tools.bench.speed import benchmark, markdown_table, measure_latency  # noqa: E402
from gasdb_tools.bench.train import TrainConfig, load_config, train  # noqa: E402
from gasdb_tools.cli import main  # noqa: E402
from gasdb_tools.errors import FormatError, ModelError  # noqa: E402
from gasdb_tools.metrics import confusion  # noqa: E402
from gasdb_tools.resources import bench_config, bench_configs  # noqa: E402


@pytest.fixture(scope="module")
def gasdb_dir(tmp_path_factory):
    """12 train (+2 blacklisted) and 4 test samples, 64×80 RGBA with an elliptic warm plume."""
    return make_gasdb(tmp_path_factory.mktemp("gasdb") / "gasdb", n_train=12, n_test=4, blacklist=2)


def _config(**kw) -> TrainConfig:
    base = dict(model="mfnet", epochs=2, num_workers=0, val_fraction=0.25, val_block=3, batch_size=4)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(gasdb_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mfnet"
    summary = train(_config(), gasdb_dir, out, device="cpu")
    return out, summary


# -- splits and augmentation ---------------------------------------------------------------------
def test_validation_is_carved_deterministically_in_contiguous_blocks():
    names = [f"{i:05d}" for i in range(1, 41)]
    a = carve_validation(names, fraction=0.25, block=5, seed=7)
    assert a == carve_validation(list(reversed(names)), fraction=0.25, block=5, seed=7)
    train_names, val = a
    assert len(val) == 10 and not set(train_names) & set(val) and sorted(train_names + val) == names
    blocks = {int(n) // 5 - (int(n) % 5 == 0) for n in val}  # names 1-5 are block 0, 6-10 block 1, ...
    assert len(blocks) == 2
    with pytest.raises(ValueError, match="fraction"):
        carve_validation(names, fraction=1.0)


def test_split_names_drops_the_blacklist_and_prefers_val_txt(gasdb_dir, tmp_path):
    s = split_names(gasdb_dir, val_fraction=0.25, val_block=3)
    black = (gasdb_dir / "blacklist.txt").read_text().split()
    assert len(black) == 2 and not set(black) & set(s["train"] + s["val"] + s["test"])
    assert len(s["train"]) + len(s["val"]) == 12 and len(s["test"]) == 4
    assert s["val_source"].startswith("carved from train.txt")
    with_val = make_gasdb(tmp_path / "release" / "gasdb", n_train=6, n_test=2, val=3)
    s2 = split_names(with_val.parent)  # a release folder: its gasdb/ subfolder is used
    assert s2["val_source"] == "val.txt" and len(s2["val"]) == 3 and len(s2["train"]) == 6
    with pytest.raises(FormatError, match="not a Gas-DB folder"):
        split_names(tmp_path)


def test_augmentation_is_reproducible_and_keeps_labels_binary(gasdb_dir):
    names = split_names(gasdb_dir)["train"]
    ds = GasDBFolder(gasdb_dir, names, augment=Augment(), seed=5)
    x0, y0, n0 = ds[3]
    x1, y1, _ = ds[3]
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert x0.shape == (4, 64, 80) and x0.dtype == torch.float32 and y0.dtype == torch.int64
    assert set(torch.unique(y0).tolist()) <= {0, 1} and 0.0 <= x0.min() and x0.max() <= 1.0
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], x0)
    plain, label, _ = GasDBFolder(gasdb_dir, names).read(3)
    assert plain.shape == (64, 80, 4) and label.shape == (64, 80) and n0 == names[3]


def test_flip_only_mirrors_image_and_label_together():
    image = np.random.default_rng(0).random((8, 10, 4), dtype=np.float32)
    label = (image[:, :, 3] > 0.5).astype(np.uint8)
    out, lab = augment_sample(image, label, np.random.default_rng(0), augment=Augment(flip_p=1.0, crop_rate=0.0))
    assert np.array_equal(out, image[:, ::-1]) and np.array_equal(lab, label[:, ::-1])


def test_pil_rgba_resize_premultiplies_rgb_by_thermal():
    image = np.full((20, 24, 4), 0.8, dtype=np.float32)
    image[:, :12, 3] = 0.0  # thermal 0 on the left half
    label = np.zeros((20, 24), np.uint8)
    faithful, _ = augment_sample(image, label, np.random.default_rng(1), size_hw=(40, 48),
                                 augment=Augment(flip_p=0.0, resize="pil-rgba"))
    clean, _ = augment_sample(image, label, np.random.default_rng(1), size_hw=(40, 48),
                              augment=Augment(flip_p=0.0))
    assert faithful.shape == clean.shape == (40, 48, 4)
    assert faithful[:, :12, :3].max() == 0.0  # RGB vanished where thermal is 0 (PIL's premultiplied alpha)
    assert clean[:, :12, :3].min() == pytest.approx(0.8, abs=1e-5)
    assert faithful[:, -8:, :3].min() == pytest.approx(0.8, abs=1 / 255)


# -- training ---------------------------------------------------------------------------------
def test_training_decreases_the_loss_and_writes_every_artefact(trained):
    out, summary = trained
    for f in ("config.json", "log.jsonl", "last.pt", "best.pt", "curves.png", "test_metrics.json"):
        assert (out / f).is_file(), f
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "test"]
    losses = [e["train_loss"] for e in events if e["event"] == "epoch"]
    assert losses[1] < losses[0]
    assert events[0]["n_train"] + events[0]["n_val"] == 12 and events[0]["n_test"] == 4
    assert summary["best"]["epoch"] in (0, 1) and summary["best"]["metric"] == "gas.iou"
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["split"] == "test" and test["n_images"] == 4 and test["epoch"] == summary["best"]["epoch"]
    s = test["scores"]["sum"]
    assert s["n_pixels"] == 4 * 64 * 80 and sum(sum(r) for r in s["confusion_matrix"]) == s["n_pixels"]
    assert set(s["gas"]) >= {"acc", "iou", "f2", "precision", "recall"}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_run_equals_an_uninterrupted_one(gasdb_dir, trained, tmp_path):
    out, _ = trained
    resumed = tmp_path / "resumed"
    train(_config(epochs=1), gasdb_dir, resumed, device="cpu")
    summary = train(_config(epochs=2), gasdb_dir, resumed, device="cpu")
    assert summary["epochs_run"] == 2
    a = torch.load(out / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    epochs = [json.loads(line)["epoch"] for line in (resumed / "log.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "epoch"]
    assert epochs == [0, 1]
    with pytest.raises(ModelError, match="already holds a checkpoint"):
        train(_config(epochs=2), gasdb_dir, resumed, device="cpu", resume=False)
    with pytest.raises(ModelError, match="holds a 'mfnet' run"):
        train(_config(model="unet-r18"), gasdb_dir, resumed, device="cpu")


def test_evaluate_checkpoint_scores_with_the_metrics_module(gasdb_dir, trained, tmp_path):
    out, summary = trained
    result = evaluate_checkpoint(out / "best.pt", gasdb_dir, split="test", device="cpu", out=tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads(json.dumps(result))
    assert result["scores"] == summary["test"]["scores"]
    assert result["prediction"] == "argmax(head1)" and result["model"] == "mfnet"


class _TwoHeads(torch.nn.Module):
    """Head 1 says gas where channel 0 > 0.5, head 2 where channel 1 > 0.5 (fixed, known logits)."""

    n_heads = 2

    def forward(self, x):
        h1 = torch.stack([torch.zeros_like(x[:, 0]), (x[:, 0] - 0.5) * 4], 1)
        h2 = torch.stack([torch.zeros_like(x[:, 1]), (x[:, 1] - 0.5) * 2], 1)
        return h1, h2, "extra outputs are ignored"


def test_evaluate_model_sums_the_heads_and_scores_each():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 4, 8, 8, generator=g)
    labels = (torch.rand(3, 8, 8, generator=g) > 0.5).long()
    labels[0, 0, 0] = 255  # ignored pixel
    cms = evaluate_model(_TwoHeads(), [(images, labels, ["a", "b", "c"])], device="cpu", n_heads=2, multiple=1)
    h1 = (images[:, 0] > 0.5).numpy().astype(np.uint8)
    h2 = (images[:, 1] > 0.5).numpy().astype(np.uint8)
    summed = ((images[:, 0] - 0.5) * 4 + (images[:, 1] - 0.5) * 2 > 0).numpy().astype(np.uint8)
    gt = labels.numpy()
    assert np.array_equal(cms["head1"], confusion(gt, h1))
    assert np.array_equal(cms["head2"], confusion(gt, h2))
    assert np.array_equal(cms["sum"], confusion(gt, summed))
    assert cms["sum"].sum() == 3 * 64 - 1


# -- configs, speed, CLI --------------------------------------------------------------------------
def test_every_shipped_config_loads_and_names_a_registered_model():
    shipped = bench_configs()
    assert len(shipped) >= 9
    covered = set()
    for name, path in shipped.items():
        cfg = load_config(path)
        assert cfg.model in list_models(), path
        covered.add(cfg.model)
    assert covered == set(list_models())
    rtcan = load_config(bench_config("rtcan-r50"))
    assert (rtcan.lr, rtcan.momentum, rtcan.weight_decay, rtcan.lr_gamma, rtcan.batch_size, rtcan.epochs,
            rtcan.seed) == (0.02, 0.9, 5e-4, 0.97, 4, 50, 3409)


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "mfnet", "learning_rate": 0.1}))
    with pytest.raises(ModelError, match="learning_rate"):
        load_config(bad)
    with pytest.raises(ValueError, match="select_metric"):
        TrainConfig(select_metric="accuracy")


def test_speed_reports_params_flops_and_labelled_cpu_latency():
    r = benchmark("mfnet", shape=(1, 4, 64, 80), warmup_iters=1, warmup_s=0.0, iters=2, repeats=2)
    assert r["params"] == 734_238 and r["gmacs"] == pytest.approx(r["gflops"] / 2)
    la = r["latency"]
    assert la["label"] == "CPU latency" and la["timer"] == "perf_counter" and len(la["repeats"]) == 2
    assert la["fps"] == pytest.approx(1000 / la["median_ms"]) and la["repeats"][0]["n"] == 2
    assert r["env"]["threads"] == 1 and r["env"]["cpu"]
    table = markdown_table([r])
    assert "| mfnet | 1 | 734,238 |" in table and "not measured" in table and "CPU latency" in table
    with pytest.raises(ValueError, match="iters"):
        measure_latency(torch.nn.Identity(), iters=0)


def test_cli_models_train_eval_speed(gasdb_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["bench", "models", "--pattern", "rtcan*", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in json.loads(res.output)["models"]}
    assert rows["rtcan-r50"]["params"] == 65_829_822 and rows["rtcan-r152"]["params"] == 135_101_374
    out = tmp_path / "run"
    res = runner.invoke(main, ["bench", "train", "--model", "mfnet", "--data", str(gasdb_dir), "--out", str(out),
                               "--epochs", "1", "--workers", "0", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["epochs_run"] == 1 and (out / "best.pt").is_file()
    res = runner.invoke(main, ["bench", "eval", "--checkpoint", str(out / "best.pt"), "--data", str(gasdb_dir),
                               "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_images"] == 4
    res = runner.invoke(main, ["bench", "train", "--model", "mfnet", "--data", str(gasdb_dir), "--out", str(out),
                               "--no-resume", "--device", "cpu"])
    assert res.exit_code == 1 and "already holds a checkpoint" in res.output
    res = runner.invoke(main, ["bench", "speed", "--model", "mfnet", "--size", "64x80", "--warmup", "0",
                               "--warmup-s", "0", "--iters", "1", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["results"][0]["latency"]["label"] == "CPU latency"
    res = runner.invoke(main, ["bench", "speed", "--model", "rtcan_r50"])
    assert res.exit_code == 2 and "did you mean rtcan-r50" in res.output
    res = runner.invoke(main, ["bench", "speed", "--model", "mfnet", "--size", "64by80"])
    assert res.exit_code == 2 and "HEIGHTxWIDTH" in res.output


def test_demo_run_trains_at_a_reduced_size_and_scores_test(gasdb_dir, tmp_path):
    from gasdb_tools.bench.train import demo_run

    summary = demo_run(gasdb_dir, tmp_path / "demo", size=(32, 48))
    assert summary["epochs_run"] == 1 and summary["params"] == 734_238
    assert summary["test"]["scores"]["sum"]["n_pixels"] == 4 * 32 * 48  # scored at the run's size
    assert "history" not in summary


@pytest.mark.gpu
def test_cuda_amp_training_and_event_timing(gasdb_dir, tmp_path):
    summary = train(_config(epochs=1, amp=True), gasdb_dir, tmp_path / "cuda", device="cuda")
    events = [json.loads(line) for line in (tmp_path / "cuda" / "log.jsonl").read_text().splitlines()]
    assert events[0]["amp"] is True and events[0]["device"].startswith("cuda")
    assert summary["test"]["scores"]["sum"]["n_pixels"] == 4 * 64 * 80
    r = benchmark("mfnet", device="cuda", shape=(1, 4, 64, 80), warmup_iters=2, warmup_s=0.0, iters=5, repeats=1,
                  amp=True, channels_last=True)
    assert r["latency"]["timer"] == "cuda-events" and r["latency"]["precision"] == "fp16 autocast"
    assert r["env"]["gpu"] and "not measured" not in markdown_table([r])


def test_a_cuda_device_always_names_its_index(monkeypatch):
    """torch.cuda.set_device refuses a bare 'cuda' device (seen on a GPU: "Expected a torch.device
    with a specified index"); resolve_device gives it the current device's index."""
    from gasdb_tools.bench.evaluate import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert resolve_device("cuda") == torch.device("cuda", 3)
    assert resolve_device("auto") == torch.device("cuda", 3)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
