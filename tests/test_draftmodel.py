"""Model-assisted drafts: the small network, its checkpoint, and gasdb preannotate --model."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from gasdb_tools import draftmodel, labelme_format, review  # noqa: E402
from gasdb_tools.cli import main  # noqa: E402
from gasdb_tools.preannotate import preannotate_workspace  # noqa: E402
from test_preannotate import N_FRAMES, _make_workspace  # noqa: E402
from test_refine import _correct, _pending_iou  # noqa: E402

FAST = draftmodel.TrainConfig(width=8, iterations=120, batch=4, crop=64)


def _blobs(n=10, seed=0, shape=(64, 80)):
    """Frames whose 'gas' is where the evidence channel is high, on a random thermal texture."""
    rng = np.random.default_rng(seed)
    inputs, truths = [], []
    for _ in range(n):
        truth = np.zeros(shape, bool)
        y, x = rng.integers(10, shape[0] - 20), rng.integers(10, shape[1] - 25)
        truth[y:y + 14, x:x + 18] = True
        thermal = rng.random(shape).astype(np.float32)
        evidence = np.where(truth, 6.0, 0.0).astype(np.float32) + rng.normal(0, 1, shape).astype(np.float32)
        inputs.append(draftmodel.model_inputs(thermal * 255, evidence, (0, 255)))
        truths.append(truth)
    return inputs, truths


def test_a_tiny_net_learns_gas_from_the_evidence_and_holds_out_every_fifth_pair():
    inputs, truths = _blobs()
    counted = [np.ones_like(t) for t in truths]
    model, info = draftmodel.train(inputs, truths, counted, config=FAST, device="cpu")
    assert info["train_pairs"] == 8 and info["val_pairs"] == 2 and info["val_iou"] > 0.6
    assert info["device"] == "cpu" and info["parameters"] == sum(p.numel() for p in model.parameters())
    prob = draftmodel.predict(model, inputs[0])
    pred = prob > FAST.threshold
    assert prob.shape == truths[0].shape and (pred & truths[0]).sum() / (pred | truths[0]).sum() > 0.7


def test_training_is_reproducible_and_the_checkpoint_round_trips(tmp_path):
    inputs, truths = _blobs(6, seed=1)
    counted = [np.ones_like(t) for t in truths]
    cfg = draftmodel.TrainConfig(width=8, iterations=20, batch=4, crop=64)
    a, info = draftmodel.train(inputs, truths, counted, config=cfg, device="cpu")
    b, _ = draftmodel.train(inputs, truths, counted, config=cfg, device="cpu")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    sha = draftmodel.save(a, tmp_path / "m.pt", info)
    assert sha == hashlib.sha256((tmp_path / "m.pt").read_bytes()).hexdigest()
    loaded, info2 = draftmodel.load(tmp_path / "m.pt", device="cpu")
    assert info2 == {k: v for k, v in info.items() if k != "seconds"}
    assert np.array_equal(draftmodel.predict(loaded, inputs[0]), draftmodel.predict(a, inputs[0]))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="cannot load the draft model"):
        draftmodel.load(tmp_path / "bad.pt")


def test_ignored_pixels_do_not_teach_the_model():
    """Labels that differ only under __ignore__ (uncounted) pixels train exactly the same weights."""
    inputs, truths = _blobs(5, seed=2)
    counted = []
    for t in truths:
        c = np.ones_like(t)
        c[:, :40] = False  # the left half is under an __ignore__ shape
        counted.append(c)
    scrambled = [np.where(c, t, ~t) for t, c in zip(truths, counted)]
    cfg = draftmodel.TrainConfig(width=8, iterations=15, batch=4, crop=32, val_every=100)
    a, _ = draftmodel.train(inputs, truths, counted, config=cfg, device="cpu")
    b, _ = draftmodel.train(inputs, scrambled, counted, config=cfg, device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c, _ = draftmodel.train(inputs, scrambled, [np.ones_like(t) for t in truths], config=cfg, device="cpu")
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


@pytest.mark.parametrize("change", [{"crop": 60}, {"iterations": 0}, {"lr": 2.0}])
def test_bad_training_settings_are_refused(change):
    with pytest.raises(ValueError):
        draftmodel.TrainConfig(**change)


def test_preannotate_model_drafts_pending_pairs_with_its_checkpoint_in_provenance(tmp_path):
    ws, truth = _make_workspace(tmp_path, contrast=10.0)
    preannotate_workspace(ws)
    gas = [p for p in sorted(truth) if truth[p].any()]
    keys = gas[::3][:8]
    static = _pending_iou(ws, truth, keys)
    for k in keys:
        _correct(ws, k, truth[k])
    before = {k: review.label_path(ws, ws.read_index().pairs[k]).read_bytes() for k in keys}
    config = draftmodel.TrainConfig(iterations=150, crop=64)
    report = preannotate_workspace(ws, model=True, model_config=config, device="cpu")
    m = report["model"]
    assert m["train_pairs"] == 7 and m["val_pairs"] == 1 and report["written"] == N_FRAMES - 8
    assert hashlib.sha256(ws.path(m["path"]).read_bytes()).hexdigest() == m["sha256"]
    for k, data in before.items():
        assert review.label_path(ws, ws.read_index().pairs[k]).read_bytes() == data
    doc = labelme_format.read(review.label_path(ws, ws.read_index().pairs[sorted(truth)[-1]]))
    assert doc["gasdb"]["preannot"]["model"]["sha256"] == m["sha256"]
    assert _pending_iou(ws, truth, keys) > static + 0.05
    again = preannotate_workspace(ws, model=True, model_config=config, device="cpu")
    assert again["model"]["sha256"] == m["sha256"] and again["written"] == 0  # same corrections and seed: same model


def test_cli_model_needs_corrections_and_its_own_options(tmp_path):
    ws, _ = _make_workspace(tmp_path)
    preannotate_workspace(ws)
    runner = CliRunner()
    result = runner.invoke(main, ["preannotate", str(ws.root), "--model", "--iterations", "5"])
    assert result.exit_code == 1 and "no corrected pairs" in result.output and "gasdb suggest" in result.output
    assert runner.invoke(main, ["preannotate", str(ws.root), "--iterations", "5"]).exit_code == 2
    result = runner.invoke(main, ["preannotate", str(ws.root), "--model", "--refine"])
    assert result.exit_code == 2 and "does not combine" in result.output


@pytest.mark.gpu
def test_the_draft_model_trains_and_predicts_on_a_gpu():
    inputs, truths = _blobs()
    model, info = draftmodel.train(inputs, truths, [np.ones_like(t) for t in truths], config=FAST, device="cuda")
    assert info["device"].startswith("cuda") and info["val_iou"] > 0.6
    assert json.dumps(info)  # JSON-ready
