"""gasdb_tools.scoring and ``gasdb score``: exact global scores, breakdowns, adapters, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gasdb_tools.cli import main
from gasdb_tools.errors import FormatError
from gasdb_tools.fsutil import dumps_json
from gasdb_tools.imaging import write_image
from gasdb_tools.scoring import (evaluate, format_table, load_ground_truth, score, to_codabench, to_codalab,
                                 to_evalai, write_example_submission)
from gasdb_tools.submission import InvalidSubmissionError

# --------------------------------------------------------------------------- a hand-computed release

G1 = [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
P1 = [[0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 0, 0]]  # TP 3, FN 1 (0,1), FP 1 (0,3), TN 7
G2 = [[0] * 4] * 3
P2 = [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]  # FP 1, TN 11
G3 = [[0] * 4] * 3
P3 = [[0] * 4] * 3  # TN 12; gas IoU undefined for this image
HAND = {"tn": 30, "fp": 2, "fn": 1, "tp": 3}


def _u8(rows):
    return np.array(rows, dtype=np.uint8)


def _make_release(root, masks: dict, *, index_rows=None, train=(), blacklist=()):
    for name, mask in masks.items():
        write_image(root / "gasdb" / "labels" / f"{name}.png", _u8(mask))
    test = [n for n in masks if n not in train]
    (root / "gasdb" / "test.txt").write_text("".join(f"{n}\n" for n in test))
    (root / "gasdb" / "train.txt").write_text("".join(f"{n}\n" for n in train))
    if blacklist:
        (root / "gasdb" / "blacklist.txt").write_text("".join(f"{n}\n" for n in blacklist))
    if index_rows is not None:
        lines = ["name,pair_id,recording,scene,split"]
        lines += [f"{n},{rec}_{n},{rec},{scene},{'train' if n in train else 'test'}" for n, rec, scene in index_rows]
        (root / "index.csv").write_text("\n".join(lines) + "\n")
    return root


def _write_sub(folder, masks: dict):
    for name, mask in masks.items():
        write_image(folder / f"{name}.png", _u8(mask))
    return folder


@pytest.fixture
def hand_release(tmp_path):
    return _make_release(tmp_path / "rel", {"a1": G1, "a2": G2, "a3": G3},
                         index_rows=[("a1", "r1", "sunny"), ("a2", "r1", "sunny"), ("a3", "r2", "rainy")])


def test_hand_computed_release_score(hand_release, tmp_path):
    sub = _write_sub(tmp_path / "sub", {"a1": P1, "a2": P2, "a3": P3})
    r = score(hand_release, sub, per_image=True, by="scene")
    assert r["confusion"] == HAND and r["confusion_matrix"] == [[30, 2], [1, 3]]
    assert (r["n_images"], r["n_pixels"], r["split"]) == (3, 36, "test")
    gas = r["metrics"]["gas"]
    assert gas["acc"] == gas["recall"] == pytest.approx(3 / 4)
    assert gas["precision"] == pytest.approx(3 / 5)
    assert gas["iou"] == pytest.approx(3 / 6)
    assert gas["f2"] == pytest.approx(15 / 21)
    assert r["metrics"]["pixel_accuracy"] == pytest.approx(33 / 36)
    assert r["percent"]["gas"] == {"precision": 60.0, "recall": 75.0, "acc": 75.0, "iou": 50.0, "f1": 66.67,
                                   "f2": 71.43}
    assert [row["id"] for row in r["per_image"]] == ["a1", "a2", "a3"]
    assert [row["iou"] for row in r["per_image"]] == [pytest.approx(0.6), 0.0, None]
    assert r["per_image"][0]["scene"] == "sunny"
    assert r["per_image_mean"]["gas"]["iou"] == pytest.approx(0.3)  # a3 (undefined) excluded
    assert r["per_image_mean"]["gas"]["n_defined"]["iou"] == 2
    assert r["by"]["scene"]["sunny"]["confusion"] == {"tn": 18, "fp": 2, "fn": 1, "tp": 3}
    assert r["by"]["scene"]["rainy"]["confusion"] == {"tn": 12, "fp": 0, "fn": 0, "tp": 0}
    assert r["by"]["scene"]["rainy"]["metrics"]["gas"]["iou"] is None
    json.dumps(r, allow_nan=False)
    assert "Acc(recall)" in format_table(r) and "50.00" in format_table(r)


def test_result_is_deterministic_and_hashes_content_not_container(hand_release, tmp_path):
    masks = {"a1": P1, "a2": P2, "a3": P3}
    folder = _write_sub(tmp_path / "sub", masks)
    import zipfile

    with zipfile.ZipFile(tmp_path / "sub.zip", "w") as zf:
        for name in masks:
            zf.write(folder / f"{name}.png", f"preds/{name}.png")
    a, b = score(hand_release, folder), score(hand_release, folder)
    assert dumps_json(a) == dumps_json(b)
    z = score(hand_release, tmp_path / "sub.zip")
    assert z["submission"]["sha256"] == a["submission"]["sha256"]
    assert z["submission"]["kind"] == "zip" and len(z["submission"]["archive_sha256"]) == 64
    assert a["submission"]["archive_sha256"] is None
    assert {k: v for k, v in z.items() if k != "submission"} == {k: v for k, v in a.items() if k != "submission"}
    assert a["tool"]["name"] == "gasdb-tools" and a["schema"] == "gasdb-score" and a["schema_version"] == 1
    write_image(folder / "a2.png", _u8(G2))  # a changed mask changes the hash
    assert score(hand_release, folder)["submission"]["sha256"] != a["submission"]["sha256"]
    assert score(hand_release, folder)["ground_truth"]["sha256"] == a["ground_truth"]["sha256"]


# --------------------------------------------------------------------------- a random release vs an oracle


@pytest.fixture
def random_release(tmp_path):
    rng = np.random.default_rng(7)
    masks, rows = {}, []
    for k in range(8):
        name = f"{k:05d}"
        m = np.zeros((40, 48), np.uint8)
        y, x = rng.integers(0, 30), rng.integers(0, 38)
        m[y:y + rng.integers(3, 12), x:x + rng.integers(3, 12)] = 1
        masks[name] = m
        rows.append((name, f"rec{k % 3}", ("sunny", "rainy")[k % 2]))
    return _make_release(tmp_path / "rel", masks, index_rows=rows, train=("00007",), blacklist=("00006",))


def test_perfect_and_degraded_submissions_match_sklearn(random_release, tmp_path):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    perfect = score(random_release, write_example_submission(random_release, tmp_path / "perfect"))
    assert perfect["n_images"] == 6  # 00006 blacklisted, 00007 in train
    assert perfect["metrics"]["gas"]["iou"] == 1.0 and perfect["percent"]["gas"]["f2"] == 100.0
    assert any("blacklist.txt" in w for w in perfect["warnings"])

    degraded_dir = write_example_submission(random_release, tmp_path / "degraded.zip", shift=2, as_zip=True)
    r = score(random_release, degraded_dir, by=("scene", "recording"))
    truth = load_ground_truth(random_release)
    oracle, per_group = np.zeros((2, 2), np.int64), {}
    for id_ in truth.ids:
        gt = (np.asarray(_read(truth.label_path(id_)))).ravel()
        pred = np.roll(_read(truth.label_path(id_)), (2, 2), axis=(0, 1)).ravel()
        cm = sklearn_metrics.confusion_matrix(gt, pred, labels=[0, 1])
        oracle += cm
        scene = truth.index[id_]["scene"]
        per_group[scene] = per_group.get(scene, 0) + cm
    assert r["confusion_matrix"] == oracle.tolist()
    assert 0 < r["metrics"]["gas"]["iou"] < 1
    for scene, cm in per_group.items():
        got = r["by"]["scene"][scene]["confusion"]
        assert [[got["tn"], got["fp"]], [got["fn"], got["tp"]]] == cm.tolist()
    for col in ("scene", "recording"):
        assert sum(g["n_images"] for g in r["by"][col].values()) == 6
        assert sum(g["confusion"]["tp"] for g in r["by"][col].values()) == r["confusion"]["tp"]
    assert sorted(r["by"]["recording"]) == ["rec0", "rec1", "rec2"]


def _read(path):
    from gasdb_tools.imaging import read_image

    return read_image(path)


def test_train_split_and_missing_split_list(random_release, tmp_path):
    sub = write_example_submission(random_release, tmp_path / "train_sub", split="train")
    r = score(random_release, sub, split="train")
    assert (r["split"], r["n_images"]) == ("train", 1)
    with pytest.raises(FormatError, match=r"no split list for split 'val'.*choose one of \['test', 'train'\]"):
        score(random_release, sub, split="val")


def test_binary_255_and_allow_missing(hand_release, tmp_path):
    sub = _write_sub(tmp_path / "sub", {"a1": np.array(P1) * 255, "a2": np.array(P2) * 255})
    with pytest.raises(InvalidSubmissionError, match="missing mask for id 'a3'"):
        score(hand_release, sub, binary_255=True)
    r = score(hand_release, sub, binary_255=True, allow_missing=True)
    assert r["confusion"] == HAND  # a3 scored as all background, which is what P3 was
    assert r["submission"]["binary_255"] is True
    assert any("--allow-missing" in w for w in r["warnings"])


def test_masks_folder_ground_truth_with_ignored_pixels(tmp_path):
    gt = tmp_path / "gt"
    write_image(gt / "x.png", _u8([[0, 1, 255], [1, 255, 0]]))
    write_image(gt / "y.png", _u8([[1, 1, 0], [0, 0, 0]]))
    (tmp_path / "index.csv").write_text("name,recording,scene\nx,r1,far\ny,r2,near\n")
    sub = _write_sub(tmp_path / "sub", {"x": [[1, 1, 1], [0, 1, 1]], "y": [[1, 0, 0], [0, 0, 1]]})
    r = score(gt, sub, by="scene")
    # x: (0,0) FP, (0,1) TP, (1,0) FN, (1,2) FP; 255 pixels excluded. y: TP 1, FN 1, FP 1, TN 3.
    assert r["confusion"] == {"tn": 3, "fp": 3, "fn": 2, "tp": 2}
    assert r["split"] is None and r["ground_truth"]["kind"] == "masks" and r["n_pixels"] == 10
    assert r["by"]["scene"]["far"]["confusion"] == {"tn": 0, "fp": 2, "fn": 1, "tp": 1}


def test_by_needs_an_index_and_a_known_column(tmp_path, hand_release):
    gt = tmp_path / "gt"
    write_image(gt / "x.png", _u8(G1))
    sub = _write_sub(tmp_path / "sub", {"x": P1})
    assert score(gt, sub)["confusion"] == {"tn": 7, "fp": 1, "fn": 1, "tp": 3}
    with pytest.raises(FormatError, match="needs an index.csv"):
        score(gt, sub, by="scene")
    with pytest.raises(ValueError, match="by must be one of"):
        score(gt, sub, by="weather")


def test_broken_ground_truth_is_a_format_error(hand_release, tmp_path):
    sub = _write_sub(tmp_path / "sub", {"a1": P1, "a2": P2, "a3": P3})
    (hand_release / "gasdb" / "labels" / "a2.png").unlink()
    with pytest.raises(FormatError, match="a2.png: ground-truth mask not readable"):
        score(hand_release, sub)
    write_image(hand_release / "gasdb" / "labels" / "a2.png", _u8(G2) + 3)
    with pytest.raises(FormatError, match=r"a2.png: bad ground-truth mask: gt has values \[3\]"):
        score(hand_release, sub)
    with pytest.raises(FormatError, match="ground truth not found"):
        score(tmp_path / "nowhere", sub)


# --------------------------------------------------------------------------- adapters


def test_platform_adapters(hand_release, tmp_path):
    r = score(hand_release, _write_sub(tmp_path / "sub", {"a1": P1, "a2": P2, "a3": P3}), by="scene")
    lines = dict(line.split(": ") for line in to_codalab(r).splitlines())
    assert lines["acc"] == "75.0000" and lines["iou"] == "50.0000" and lines["f2"] == "71.4286"
    assert "iou_scene_rainy" not in lines  # undefined (no gas in rainy): left out, never NaN
    bench = to_codabench(r)
    assert bench["iou"] == 50.0 and bench["iou_scene_sunny"] == 50.0
    json.dumps(bench, allow_nan=False)
    evalai = to_evalai(r)
    assert evalai["result"] == [{"test": evalai["submission_result"]["test"]}]
    assert evalai["submission_result"]["test"]["F2"] == pytest.approx(71.4286)
    out = evaluate(hand_release, tmp_path / "sub", "dev_phase", submission_metadata={"x": 1})
    assert out["result"][0]["dev_phase"]["IoU"] == 50.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidSubmissionError, match="3 problems"):
        evaluate(hand_release, tmp_path / "empty", "dev")


# --------------------------------------------------------------------------- CLI


def test_cli_table_json_and_formats(hand_release, tmp_path):
    sub = _write_sub(tmp_path / "sub", {"a1": P1, "a2": P2, "a3": P3})
    runner = CliRunner()
    res = runner.invoke(main, ["score", str(hand_release), str(sub), "--by", "scene",
                               "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "Acc(recall)" in res.output and "sunny" in res.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["confusion"] == HAND
    res = runner.invoke(main, ["score", str(hand_release), str(sub), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["confusion"] == HAND
    res = runner.invoke(main, ["score", str(hand_release), str(sub), "--format", "codalab"])
    assert res.exit_code == 0 and res.output.startswith("acc: 75.0000\n")
    res = runner.invoke(main, ["score", str(hand_release), str(sub), "--format", "evalai"])
    assert json.loads(res.output)["result"][0]["test"]["IoU"] == 50.0


def test_cli_jobs_give_byte_identical_json(tmp_path):
    """Threads change nothing: the JSON of --jobs 1 and --jobs 3 are the same bytes (ignored pixels included)."""
    rng = np.random.default_rng(11)
    masks, rows = {}, []
    for k in range(40):  # more ids than one thread-pool task holds
        m = (rng.random((30, 36)) < 0.25).astype(np.uint8)
        if k % 5 == 0:
            m[:4, :5] = 255
        masks[f"{k:05d}"] = m
        rows.append((f"{k:05d}", f"rec{k % 3}", ("sunny", "rainy")[k % 2]))
    release = _make_release(tmp_path / "rel", masks, index_rows=rows)
    sub = write_example_submission(release, tmp_path / "sub.zip", shift=1, grow=1, as_zip=True)
    outs = []
    for jobs in ("1", "3"):
        res = CliRunner().invoke(main, ["score", str(release), str(sub), "--by", "scene", "--by", "recording",
                                        "--per-image", "--jobs", jobs, "--out", str(tmp_path / f"j{jobs}.json")])
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / f"j{jobs}.json").read_bytes())
    assert outs[0] == outs[1]
    result = json.loads(outs[0])
    assert result["n_images"] == 40 and result["n_pixels"] == 40 * 30 * 36 - 8 * 20
    assert 0 < result["metrics"]["gas"]["iou"] < 1


def test_cli_invalid_submission_exits_1_with_the_full_report(hand_release, tmp_path):
    sub = _write_sub(tmp_path / "sub", {"a1": np.array(P1) * 255, "a2": P2})
    res = CliRunner().invoke(main, ["score", str(hand_release), str(sub), "--out", str(tmp_path / "report.json")])
    assert res.exit_code == 1
    assert "invalid submission: 2 problems" in res.output
    assert "a1.png: values {255} outside {0, 1}" in res.output and "missing mask for id 'a3'" in res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["valid"] is False and report["n_errors"] == 2
    assert [e["file"].rsplit("/", 1)[-1] for e in report["errors"]] == ["a1.png", "a3.png"]


def test_cli_usage_errors_exit_2(hand_release, tmp_path):
    res = CliRunner().invoke(main, ["score", str(hand_release), str(tmp_path), "--by", "weather"])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, ["score", str(hand_release), str(tmp_path / "absent")])
    assert res.exit_code == 2
    assert "Example" in CliRunner().invoke(main, ["score", "--help"]).output


def test_index_beside_an_rtcan_folder_is_found_for_by(random_release, tmp_path):
    data_dir = random_release / "gasdb"  # the RT-CAN folder itself; its own index.csv lacks 'scene'
    (data_dir / "index.csv").write_text("name,pair_id,recording,split\n00000,p,rec0,test\n")
    sub = write_example_submission(random_release, tmp_path / "sub")
    r = score(data_dir, sub, by="scene")
    assert r["ground_truth"]["kind"] == "rtcan"
    assert sorted(r["by"]["scene"]) == ["rainy", "sunny"]
    assert score(data_dir, sub, by="recording")["by"]["recording"].keys() == {"rec0", "(not in index.csv)"}


def test_release_writer_index_columns_are_the_ones_read_here():
    release = pytest.importorskip("gasdb_tools.release")
    from gasdb_tools.scoring import BY_COLUMNS

    assert "name" in release.INDEX_COLUMNS and set(BY_COLUMNS) <= set(release.INDEX_COLUMNS)


def test_score_demo_perfect_and_degraded(random_release, tmp_path):
    from gasdb_tools.scoring import score_demo

    summary = score_demo(random_release, tmp_path / "demo")
    assert summary["perfect"]["iou"] == 100.0 and summary["perfect"]["n_images"] == 6
    assert 0 < summary["degraded"]["iou"] < 100.0
    saved = json.loads((tmp_path / "demo" / "score-degraded.json").read_text())
    assert saved["percent"]["gas"]["iou"] == summary["degraded"]["iou"] and "scene" in saved["by"]


def test_cli_fatal_submission_error_also_writes_the_report(hand_release, tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"not a zip at all")
    res = CliRunner().invoke(main, ["score", str(hand_release), str(tmp_path / "broken.zip"),
                                    "--out", str(tmp_path / "report.json")])
    assert res.exit_code == 1 and "not a readable zip file" in res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["valid"] is False and "not a readable zip" in report["errors"][0]["message"]


def test_fast_png_path_scores_exactly_like_opencv(tmp_path, monkeypatch):
    """Every result field is the same whether masks take the one-inflate path or libpng (OpenCV)."""
    import io

    import cv2
    from PIL import Image

    import gasdb_tools.submission as submission_module
    from gasdb_tools.imaging import encode_png

    rng = np.random.default_rng(3)
    masks, rows, preds = {}, [], {}
    for k in range(9):
        name = f"{k:05d}"
        m = (cv2.resize(rng.standard_normal((5, 6)).astype(np.float32), (61, 47)) > 0.4).astype(np.uint8)
        masks[name] = m
        rows.append((name, f"rec{k % 2}", ("near", "far", "mid")[k % 3]))
        p = np.roll(m, k % 4, axis=1)
        # the writers users have: ours (Up), OpenCV's default (Sub), Pillow (adaptive, Paeth rows)
        if k % 3 == 0:
            preds[name] = encode_png(p)
        elif k % 3 == 1:
            preds[name] = cv2.imencode(".png", p)[1].tobytes()
        else:
            buf = io.BytesIO()
            Image.fromarray(p).save(buf, "PNG")
            preds[name] = buf.getvalue()
    release = _make_release(tmp_path / "rel", masks, index_rows=rows)
    for k, name in enumerate(masks):  # ignore masks beside the labels, as a release has them
        ignore = np.zeros_like(masks[name])
        ignore[:, : k + 1] = 1
        write_image(release / "gasdb" / "ignore" / f"{name}.png", ignore)
    sub = tmp_path / "sub"
    sub.mkdir()
    for name, data in preds.items():
        (sub / f"{name}.png").write_bytes(data)

    def run():
        return [score(release, sub, by=("scene", "recording"), per_image=True, workers=w, count_ignore=c)
                for w in (1, 2) for c in (False, True)]

    fast = run()
    assert fast[0]["ground_truth"]["ignore"] == "excluded (ignore/ masks)"
    assert fast[0]["n_pixels"] < fast[1]["n_pixels"]  # ignore pixels left out by default
    monkeypatch.setattr(submission_module, "_png_rows", lambda data: None)  # every fast path off
    assert run() == fast


def test_masks_folder_with_ignore_pixels_and_0_255_submissions_score_alike_on_every_path(tmp_path, monkeypatch):
    """Ground truth with 255 (whole-mask path), 0/1 ground truth with 0/255 predictions (bit path, on = 255),
    a missing mask, and a prediction with a stray value: the same results (or errors) with the fast paths off."""
    import gasdb_tools.submission as submission_module
    from gasdb_tools.imaging import encode_png

    rng = np.random.default_rng(5)
    gt, sub = tmp_path / "gt", tmp_path / "sub"
    sub.mkdir()
    for k in range(8):
        m = (rng.random((23, 41)) < 0.4).astype(np.uint8)
        if k % 2:
            m[rng.random(m.shape) < 0.1] = 255
        write_image(gt / f"{k:03d}.png", m)
        if k != 3:
            (sub / f"{k:03d}.png").write_bytes(encode_png(np.roll(m == 1, k, axis=0).astype(np.uint8) * 255,
                                                          png_filter=("up", "none", "sub")[k % 3]))

    def run():
        out = [score(gt, sub, binary_255=True, allow_missing=True, per_image=True, workers=w, count_ignore=c)
               for w in (1, 2) for c in (False, True)]
        bad = (rng_bad.random((23, 41)) < 0.4).astype(np.uint8) * 255
        bad[0, 0] = 9
        (sub / "001.png").write_bytes(encode_png(bad))
        with pytest.raises(InvalidSubmissionError) as err:
            score(gt, sub, binary_255=True, allow_missing=True)
        (sub / "001.png").write_bytes(good)
        return out, err.value.report

    good = (sub / "001.png").read_bytes()
    rng_bad = np.random.default_rng(0)
    fast = run()
    assert fast[0][0]["n_pixels"] < fast[0][1]["n_pixels"]
    assert "values {9} outside" in fast[1]["errors"][0]["message"]
    monkeypatch.setattr(submission_module, "_png_rows", lambda data: None)  # every fast path off
    rng_bad = np.random.default_rng(0)
    assert run() == fast


@pytest.mark.parametrize("seed", range(40))
def test_confusion_packed_equals_confusion_on_the_unpacked_masks(seed):
    from gasdb_tools.metrics import confusion, confusion_packed
    from gasdb_tools.submission import pack_bits

    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 90, 2))
    gt, pred, ignore = ((rng.random(shape) < rng.random()).astype(np.uint8) for _ in range(3))
    n = gt.size
    assert np.array_equal(confusion_packed(pack_bits(gt), pack_bits(pred), n_pixels=n), confusion(gt, pred))
    assert np.array_equal(confusion_packed(np.packbits(gt, axis=1), np.packbits(pred, axis=1), n_pixels=n),
                          confusion(gt, pred))
    with_ignore = np.where(ignore == 1, 255, gt)
    assert np.array_equal(confusion_packed(pack_bits(gt), pack_bits(pred), n_pixels=n, ignore=pack_bits(ignore)),
                          confusion(with_ignore, pred, ignore_index=255))
    with pytest.raises(ValueError, match="one shape"):
        confusion_packed(pack_bits(gt), np.packbits(pred, axis=0), n_pixels=n)


@pytest.fixture
def no_other_threads():
    """A process with no Python thread but this one, which scoring needs before it forks.

    An earlier test in the same pytest worker may have left the restoration's median pool (kept
    between calls, its threads idle) running: it is shut down here, and made again on next use.
    """
    import threading

    from gasdb_tools import restoration

    if restoration._POOL is not None:
        restoration._POOL.shutdown(wait=True)
        restoration._POOL = None
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    assert not others, f"threads left by earlier tests would stop scoring from forking: {others}"


def test_forked_workers_give_the_same_result_for_a_folder_and_a_zip_and_survive_a_dead_child(tmp_path, monkeypatch,
                                                                                           no_other_threads):
    """Scoring in several processes (forked; each opens its own zip handle) equals one process,
    field for field; a child that dies has its share scored by the parent."""
    import os

    import gasdb_tools.scoring as scoring_module
    from gasdb_tools.scoring import write_example_submission

    rng = np.random.default_rng(9)
    masks = {f"{k:04d}": (rng.random((31, 45)) < 0.3).astype(np.uint8) for k in range(70)}
    release = _make_release(tmp_path / "rel", masks, index_rows=[(n, f"r{k % 3}", "s") for k, n in enumerate(masks)])
    folder = write_example_submission(release, tmp_path / "sub", shift=2)
    archive = write_example_submission(release, tmp_path / "sub.zip", shift=2, as_zip=True)
    monkeypatch.setattr(scoring_module, "_CHUNK", 4)
    one = score(release, folder, by="recording", per_image=True, workers=1)
    monkeypatch.setattr(scoring_module, "_MIN_FORK_IDS", 0)
    real_child, marks = scoring_module._child, tmp_path / "children"
    marks.mkdir()

    def child(*args):  # leaves a mark, so the test knows children did run
        (marks / str(os.getpid())).touch()
        real_child(*args)

    monkeypatch.setattr(scoring_module, "_child", child)
    for sub in (folder, archive):
        for workers in (2, 3):
            got = score(release, sub, by="recording", per_image=True, workers=workers)
            assert {k: v for k, v in got.items() if k != "submission"} == \
                {k: v for k, v in one.items() if k != "submission"}
            assert got["submission"]["sha256"] == one["submission"]["sha256"]
    assert len(list(marks.iterdir())) == 2 * (1 + 2)  # one child for 2 workers, two for 3, per submission
    bad = tmp_path / "bad"  # problems found in children come back, each naming its file
    bad.mkdir()
    for k, name in enumerate(masks):
        mask = (masks[name] * (7 if k in (5, 60) else 1)).astype(np.uint8)
        write_image(bad / f"{name}.png", mask)
    reports = []
    for workers in (1, 2):
        with pytest.raises(InvalidSubmissionError) as err:
            score(release, bad, workers=workers)
        reports.append(err.value.report)
    assert reports[0] == reports[1] and reports[0]["n_errors"] == 2
    assert len(list(marks.iterdir())) == 7
    import threading

    release_thread = threading.Event()
    other = threading.Thread(target=release_thread.wait)
    other.start()
    try:  # another Python thread running: no fork, the same result
        assert score(release, archive, by="recording", per_image=True, workers=2)["per_image"] == one["per_image"]
    finally:
        release_thread.set()
        other.join()
    assert len(list(marks.iterdir())) == 7
    monkeypatch.setattr(scoring_module, "_child", lambda *args: os._exit(1))
    assert score(release, archive, by="recording", per_image=True, workers=2)["per_image"] == one["per_image"]
