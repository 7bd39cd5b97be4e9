"""RSFNet: parameter counts against the paper, exact re-parameterisation, confidence gating and its
saliency pseudo-labels, the confidence loss in training, the deploy form in eval and speed."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _torch_threads import one_torch_thread  # noqa: E402,F401 (autouse fixture)

from _bench_gasdb import make_gasdb  # noqa: E402
from gasdb_tools.bench import count_parameters, create_model, list_models  # noqa: E402
from gasdb_tools.bench.data import Augment, GasDBFolder, split_names  # noqa: E402
from gasdb_tools.bench.evaluate import evaluate_checkpoint  # noqa: E402
from gasdb_tools.bench.losses import confidence_loss  # noqa: E402
from gasdb_tools.bench.models.rsfnet import RSF, ECACompress, MultiBranchConv, RSFNet  # noqa: E402
from gasdb_tools.bench.saliency import (NEIGHBOURHOODS, confidence_targets, fine_grained_saliency,  # noqa: E402
                                        mask_iou, otsu_mask)
from gasdb_tools.bench.speed import benchmark, has_deploy_form, markdown_table  # noqa: E402
from gasdb_tools.bench.train import TrainConfig, train  # noqa: E402
from gasdb_tools.errors import ModelError  # noqa: E402


def _randomise_bn(model, seed=0):
    """Non-trivial BN statistics, so folding them into the convolutions is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


# -- parameter counts (paper: 44.53 M and 73.63 M, 9 classes, MFNet) -------------------------------
PAPER = {"rsfnet-50-18": 44.53e6, "rsfnet-101-34": 73.63e6}
DEPLOY_9 = {"rsfnet-50-18": 44_571_187, "rsfnet-101-34": 73_671_475}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_deploy_parameter_count_is_within_one_percent_of_the_paper(name):
    n = count_parameters(name, n_class=9, deploy=True)
    assert n == DEPLOY_9[name]
    assert abs(n - PAPER[name]) / PAPER[name] < 0.01  # the bound; measured: +0.09 % and +0.06 %
    assert 0 < n - PAPER[name] < 45_000  # the same small surplus for both depths (the shared fusion/decoder)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_training_form_has_the_branch_parameters_on_top(name):
    # per multi-branch block (64 -> 64, K = 5): K×K 102,400 + BN 128 + 1×1 4,096 + BN 128
    # + 2 × (1×1 4,096 + 1×5 20,480) = 155,904, fused: 102,400 + 64 bias = 102,464
    train_form = count_parameters(name, n_class=9)
    assert train_form - DEPLOY_9[name] == 8 * (155_904 - 102_464)
    assert count_parameters(name, n_class=2, deploy=True) == DEPLOY_9[name] - 7 * 129  # head 1×1: 128 w + 1 b


def test_parameter_breakdown_of_rsfnet_50_18():
    with torch.device("meta"):
        m = RSFNet(9, deploy=True)

    def n(mod):
        return sum(p.numel() for p in mod.parameters())

    assert (n(m.rgb_encoder), n(m.thermal_encoder)) == (23_508_032, 11_176_512)  # torchvision trunks, no fc
    assert (n(m.rgb_confidence), n(m.thermal_confidence)) == (2048 * 128 + 128 + 129, 512 * 128 + 128 + 129)
    eca = [5, 5, 5, 7], [3, 5, 5, 5]  # ECA's adaptive kernel for 256/512/1024/2048 and 64/128/256/512 channels
    for rsf, rk, tk in zip(m.fusion, *eca):
        assert (rsf.rgb_recal.eca.kernel_size[0], rsf.thermal_recal.eca.kernel_size[0]) == (rk, tk)
    assert n(m.rgb_decoder) == n(m.thermal_decoder) == 2_360_576 + 1_032_960 + 258_432
    assert n(m.head) == 64 * 128 * 9 + 256 + 128 * 9 + 9
    assert n(m) == DEPLOY_9["rsfnet-50-18"]


# -- structural re-parameterisation ------------------------------------------------------------
@pytest.mark.parametrize("cin, cout, k", [(8, 8, 5), (6, 10, 3), (4, 4, 1)])
def test_multi_branch_block_fuses_exactly(cin, cout, k):
    torch.manual_seed(cin + k)
    block = _randomise_bn(MultiBranchConv(cin, cout, k), seed=k).eval()
    x = torch.randn(2, cin, 11, 9)
    y = block(x)
    w, b = block.fused_kernel()
    assert w.shape == (cout, cin, k, k) and b.shape == (cout,)
    assert torch.allclose(torch.nn.functional.conv2d(x, w, b, padding=k // 2), y, atol=1e-5)
    block.switch_to_deploy()
    assert block.deployed and [n for n, _ in block.named_children()] == ["reparam"]
    assert torch.allclose(block(x), y, atol=1e-5)
    block.switch_to_deploy()  # idempotent
    assert torch.allclose(block(x), y, atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        MultiBranchConv(4, 4, 4)


def test_deploy_form_equals_training_form_on_random_input():
    torch.manual_seed(0)
    model = _randomise_bn(create_model("rsfnet-50-18")).eval()
    x = torch.rand(2, 4, 64, 96)
    with torch.no_grad():
        expected = model(x)
        deployed = copy.deepcopy(model).switch_to_deploy()
        got = deployed(x)
    assert got.shape == (2, 2, 64, 96)
    assert torch.allclose(got, expected, atol=1e-5), float((got - expected).abs().max())
    n_deployed = sum(p.numel() for p in deployed.parameters())
    assert n_deployed == count_parameters("rsfnet-50-18", deploy=True) < sum(p.numel() for p in model.parameters())
    # the fused weights load strictly into a model built in deploy form
    fresh = create_model("rsfnet-50-18", deploy=True).eval()
    fresh.load_state_dict(deployed.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(fresh(x), expected, atol=1e-5)
    assert model.reparameterize.__func__ is RSFNet.switch_to_deploy


# -- confidence gating ------------------------------------------------------------------------
def test_training_mode_returns_the_two_raw_confidences():
    torch.manual_seed(1)
    model = create_model("rsfnet-50-18")
    x = torch.rand(2, 4, 64, 64)
    logits, conf = model.train()(x)
    assert logits.shape == (2, 2, 64, 64) and conf.shape == (2, 2)
    assert bool(((conf > 0) & (conf < 1)).all())
    model.eval()
    with torch.no_grad():
        out = model(x)
        out2, conf2 = model(x, return_confidence=True)
    assert isinstance(out, torch.Tensor) and torch.equal(out, out2) and conf2.shape == (2, 2)


def test_rsf_gate_scales_the_fused_branch_and_keeps_the_residual():
    torch.manual_seed(2)
    rsf = RSF(32, 16, 24, mid_channels=8, kernel_size=5).eval()
    r, t = torch.randn(1, 32, 6, 7), torch.randn(1, 16, 6, 7)
    with torch.no_grad():
        r_rec, t_rec = rsf.rgb_recal(r), rsf.thermal_recal(t)
        zero = torch.zeros(1, 1, 1, 1)
        r0, t0 = rsf(r, t, zero, zero + 1)
        r1, _ = rsf(r, t, zero + 1, zero)
    assert torch.allclose(r0, r_rec) and not torch.allclose(t0, t_rec)  # gate 0: residual only
    assert not torch.allclose(r1, r_rec)


def test_eca_recalibrates_then_compresses():
    torch.manual_seed(3)
    eca = ECACompress(64, 16)
    x = torch.randn(2, 64, 5, 4)
    y = torch.sigmoid(eca.eca(x.mean((2, 3))[:, None]))[:, 0, :, None, None]
    assert torch.allclose(eca(x), eca.compress(x * (1 + y)), atol=1e-6)
    assert eca.eca.kernel_size == (3,)


# -- saliency pseudo-labels ---------------------------------------------------------------------
def _naive_saliency(gray_blurred: np.ndarray) -> np.ndarray:
    """A loop-by-loop transcription of OpenCV contrib's StaticSaliencyFineGrained on a blurred gray image."""
    h, w = gray_blurred.shape
    ii = np.zeros((h + 1, w + 1), np.int64)
    ii[1:, 1:] = gray_blurred.astype(np.int64).cumsum(0).cumsum(1)
    on_sum = np.zeros((h, w), np.int64)
    off_sum = np.zeros((h, w), np.int64)
    for n in NEIGHBOURHOODS:
        for y in range(h):
            for x in range(w):
                x1, y1 = min(max(x - n + 1, 0), w), min(max(y - n + 1, 0), h)
                x2, y2 = min(max(x + n + 1, 0), w), min(max(y + n + 1, 0), h)
                c = int(gray_blurred[y, x])
                value = ii[y2, x2] + ii[y1, x1] - ii[y2, x1] - ii[y1, x2]
                mean = np.float32(value - c) / np.float32((x2 - x1) * (y2 - y1) - 1)
                on_sum[y, x] += int(max(np.float32(c) - mean, 0))
                off_sum[y, x] += int(max(mean - np.float32(c), 0))
    on = (255.0 * (on_sum / on_sum.max())).astype(np.int64)
    off = (255.0 * (off_sum / off_sum.max())).astype(np.int64)
    return np.minimum((255.0 * (on + off) / max(on.max(), off.max())).astype(np.int64), 255) / 255.0


def test_saliency_matches_a_loop_transcription_of_the_opencv_algorithm():
    import cv2

    rng = np.random.default_rng(0)
    gray = np.clip(rng.normal(100, 40, (30, 41)), 0, 255).astype(np.uint8)
    gray[8:20, 10:25] += 80
    blurred = cv2.GaussianBlur(cv2.GaussianBlur(gray, (3, 3), 0), (3, 3), 0)
    expected = _naive_saliency(blurred)
    got = fine_grained_saliency(gray)
    assert got.dtype == np.float32 and got.shape == gray.shape
    # float32 rounding may move a truncation by one 8-bit step on a few pixels
    diff = np.abs(got - expected) * 255
    assert diff.max() <= 1.0 + 1e-4 and np.mean(diff > 0.5) < 0.01


def test_saliency_properties():
    assert fine_grained_saliency(np.full((20, 30), 90, np.uint8)).max() == 0.0  # constant: nothing salient
    img = np.full((80, 96), 40, np.uint8)
    img[30:50, 40:60] = 220
    s = fine_grained_saliency(img)
    assert 0.0 <= s.min() and s.max() == pytest.approx(1.0)
    assert s[40, 50] > 2 * s[5, 5]  # the bright patch stands out from the flat surround
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    assert np.array_equal(fine_grained_saliency(rgb), s)  # a gray RGB image gives the gray result
    assert np.array_equal(fine_grained_saliency(img.astype(np.float32) / 255), s)
    assert otsu_mask(s)[40, 50] and not otsu_mask(s)[2, 2]
    with pytest.raises(ValueError, match="gray or RGB"):
        fine_grained_saliency(np.zeros((4, 4, 2, 2)))


def test_mask_iou_and_confidence_targets():
    a = np.zeros((4, 4), bool)
    assert mask_iou(a, a) == 1.0
    b = a.copy()
    b[0, :2] = True
    c = a.copy()
    c[0, 1:3] = True
    assert mask_iou(b, c) == pytest.approx(1 / 3)
    # thermal shows the object, RGB is unstructured noise: the thermal pseudo-label is the higher one
    rng = np.random.default_rng(1)
    label = np.zeros((96, 128), np.uint8)
    label[30:70, 40:90] = 1
    thermal = np.full(label.shape, 60, np.uint8) + (label * 150).astype(np.uint8)
    rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    iou_rgb, iou_t = confidence_targets(rgb, thermal, label)
    assert 0.0 <= iou_rgb < iou_t <= 1.0 and iou_t > 0.3
    assert iou_t == mask_iou(otsu_mask(fine_grained_saliency(thermal)), label > 0)
    with pytest.raises(ValueError, match="sizes differ"):
        confidence_targets(rgb, thermal[:10], label)


def test_confidence_loss_is_smooth_l1():
    pred = torch.tensor([[0.2, 0.9], [0.5, 0.1]])
    target = torch.tensor([[0.7, 0.1], [0.5, 1.0]])
    d = (pred - target).abs()
    expected = torch.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()
    assert confidence_loss(pred, target).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="confidence and target"):
        confidence_loss(pred, target[:, :1])


# -- the data pipeline and the training recipe -------------------------------------------------
@pytest.fixture(scope="module")
def gasdb_dir(tmp_path_factory):
    return make_gasdb(tmp_path_factory.mktemp("gasdb") / "gasdb", n_train=6, n_test=2, size=(64, 64))


def test_data_pipeline_adds_pseudo_labels_of_the_augmented_sample(gasdb_dir):
    names = split_names(gasdb_dir)["train"]
    ds = GasDBFolder(gasdb_dir, names, augment=Augment(), seed=3, confidence_targets=True)
    image, label, name, targets = ds[1]
    assert targets.shape == (2,) and targets.dtype == torch.float32 and name == names[1]
    arr = image.numpy().transpose(1, 2, 0)
    expected = confidence_targets(np.rint(arr[:, :, :3] * 255).astype(np.uint8),
                                  np.rint(arr[:, :, 3] * 255).astype(np.uint8), label.numpy())
    assert targets.tolist() == pytest.approx(list(expected))
    assert len(GasDBFolder(gasdb_dir, names)[1]) == 3  # plain samples stay triples


@pytest.mark.slow
def test_rsfnet_trains_with_the_confidence_loss_and_scores_identically_deployed(gasdb_dir, tmp_path):
    config = TrainConfig(model="rsfnet-50-18", epochs=1, num_workers=0, val_fraction=0.34, val_block=2,
                         batch_size=2, size=[32, 32])
    summary = train(config, gasdb_dir, tmp_path / "run", device="cpu")
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert events[0]["confidence_loss"] is True
    epoch = events[1]
    assert epoch["train_confidence_loss"] > 0
    assert epoch["train_loss"] == pytest.approx(epoch["train_loss_heads"][0] + 0.3 * epoch["train_confidence_loss"])
    trained = evaluate_checkpoint(tmp_path / "run" / "best.pt", gasdb_dir, device="cpu")
    deployed = evaluate_checkpoint(tmp_path / "run" / "best.pt", gasdb_dir, device="cpu", deploy=True)
    assert (trained["form"], deployed["form"]) == ("train", "deploy")
    assert deployed["scores"] == trained["scores"] == summary["test"]["scores"]
    off = TrainConfig(**{**config.__dict__, "confidence_weight": 0.0, "epochs": 1})
    train(off, gasdb_dir, tmp_path / "off", device="cpu")
    first = json.loads((tmp_path / "off" / "log.jsonl").read_text().splitlines()[1])
    assert first["train_confidence_loss"] is None


def test_deploy_is_refused_for_models_without_a_deploy_form(gasdb_dir, tmp_path):
    config = TrainConfig(model="mfnet", epochs=1, num_workers=0, val_fraction=0.34, val_block=2)
    train(config, gasdb_dir, tmp_path / "mf", device="cpu")
    with pytest.raises(ModelError, match="no deploy form"):
        evaluate_checkpoint(tmp_path / "mf" / "best.pt", gasdb_dir, device="cpu", deploy=True)


# -- registry and speed -------------------------------------------------------------------------
def test_registry_and_speed_report_the_deploy_form():
    assert {"rsfnet-50-18", "rsfnet-101-34"} <= set(list_models("rsfnet*"))
    assert has_deploy_form("rsfnet-50-18") and not has_deploy_form("mfnet")
    r = benchmark("rsfnet-50-18", deploy=True, shape=(1, 4, 64, 64), latency=False)
    t = benchmark("rsfnet-50-18", shape=(1, 4, 64, 64), latency=False)
    assert (r["form"], t["form"]) == ("deploy", "train")
    assert r["params"] == count_parameters("rsfnet-50-18", deploy=True) < t["params"]
    assert r["flops"] < t["flops"]
    assert "| rsfnet-50-18 (deploy) | 1 |" in markdown_table([r]) and "| rsfnet-50-18 | 1 |" in markdown_table([t])
    with pytest.raises(ValueError, match="does not take"):
        benchmark("mfnet", deploy=True, shape=(1, 4, 64, 64), latency=False)


def test_speed_results_merge_and_rows_of_different_runs_are_marked(tmp_path):
    from click.testing import CliRunner

    from gasdb_tools.bench.speed import merge_results
    from gasdb_tools.cli import main

    fast = dict(shape=(1, 4, 64, 64), warmup_iters=0, warmup_s=0.0, iters=1, repeats=1)
    a = benchmark("mfnet", **fast)
    torch.set_num_threads(2)
    try:
        b = benchmark("mfnet", **fast)
    finally:
        torch.set_num_threads(1)
    assert a["env"]["threads"] == 1 and b["env"]["threads"] == 2 and "load_avg_1min" in a["env"]
    u = benchmark("unet-r18", **fast)
    merged = merge_results([a, u], [b])
    assert [(r["model"], r["env"]["threads"]) for r in merged] == [("mfnet", 2), ("unet-r18", 1)]
    table = markdown_table(merged)
    assert "| mfnet¹ |" in table and "| unet-r18² |" in table
    assert "Timing ¹:" in table and "2 thread(s)" in table and "Timing ²:" in table
    one = markdown_table([a])
    assert "Timing: CPU latency" in one and "¹" not in one
    out = tmp_path / "speed.json"
    out.write_text(json.dumps({"results": [a]}))
    res = CliRunner().invoke(main, ["bench", "speed", "--model", "rsfnet-50*", "--deploy", "--no-latency", "--size",
                                    "64x64", "--merge", "--out", str(out), "--markdown", str(tmp_path / "t.md")])
    assert res.exit_code == 0, res.output
    rows = [(r["model"], r.get("form", "train")) for r in json.loads(out.read_text())["results"]]
    assert rows == [("mfnet", "train"), ("rsfnet-50-18", "deploy"), ("rsfnet-50-18", "train")]
    assert "| rsfnet-50-18 (deploy) |" in (tmp_path / "t.md").read_text()
    res = CliRunner().invoke(main, ["bench", "speed", "--model", "mfnet", "--no-latency", "--merge"])
    assert res.exit_code == 2 and "--merge needs --out" in res.output
