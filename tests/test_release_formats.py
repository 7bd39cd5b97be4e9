"""Releases of mixed cameras (frame sizes, thermal-only recordings, resized RGB) and every format a
release holds: HDF5 pack + GasDBDataset, Gas-DB layout, Hugging Face Parquet, Croissant, COCO
(Datumaro), the datasheet, ``gasdb diff``, ignore-aware scoring, and failures that must leave
nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from _release_ws import add_thermal_only, build_workspace
from gasdb_tools import labelme_format
from gasdb_tools.cli import main
from gasdb_tools.data import GasDBDataset
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.imaging import read_image
from gasdb_tools.release import build_release, plan_release, verify_release
from gasdb_tools.splits import split_workspace

CREATED = "2024-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Two RGB + thermal recordings (96x80 annotation frame, RGB stored at 192x160) and two thermal
    cameras alone (80x64, 8-bit, untouched drafts)."""
    root = tmp_path_factory.mktemp("mixed")
    ws = build_workspace(root / "ws", recordings=2, pairs_per=3, rgb_scale=2, scenes=["near", "far"])
    add_thermal_only(ws, "th00", pairs=3, scene="near", seed=11)
    add_thermal_only(ws, "th01", pairs=3, scene="far", seed=12)
    split_workspace(ws, method="video", ratios="0.5,0.5", seed=0)
    out = build_release(ws, root / "rel", version="1.0.0", created=CREATED)
    return ws, out


def test_mixed_release_keeps_each_recording_at_its_own_size(mixed):
    ws, out = mixed
    assert verify_release(out).ok
    rows = {p["pair_id"]: p for p in ws.pairs()}
    with h5py.File(out / "gasdb.h5", "r") as f:
        assert sorted(f["frames"]) == ["80x64-uint8", "96x80-uint16"]
    seen = set()
    for s in GasDBDataset(out / "gasdb.h5"):
        meta = s["meta"]
        row = rows[meta["pair_id"]]
        seen.add(meta["modality"])
        if meta["modality"] == "thermal":
            assert s["rgb"].shape == (64, 80, 3) and not s["rgb"].any()  # a missing RGB reads as zeros
            np.testing.assert_array_equal(s["thermal"], read_image(ws.path(row["thermal"])))
            assert (s["valid"] == 255).all() and meta["rgb_resized_from"] == ""
        else:
            native = read_image(ws.path(row["rgb"]))
            assert native.shape == (160, 192, 3) and meta["rgb_resized_from"] == "192x160"
            np.testing.assert_array_equal(s["rgb"], cv2.resize(native, (96, 80), interpolation=cv2.INTER_AREA))
            np.testing.assert_array_equal(s["thermal"], read_image(ws.path(row["aligned"])))
        assert s["mask"].shape == s["thermal"].shape == (meta["height"], meta["width"])
    assert seen == {"thermal", "rgb+thermal"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frames"]["sizes"] == {"80x64": 6, "96x80": 6}
    assert manifest["frames"]["rgb_resized"] == 6 and manifest["frames"]["modalities"] == {"rgb+thermal": 6,
                                                                                             "thermal": 6}


def test_gasdb_layout_of_a_thermal_camera_alone_has_black_rgb(mixed):
    ws, out = mixed
    import csv

    with open(out / "gasdb" / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        image = read_image(out / "gasdb" / "images" / f"{r['name']}.png")
        assert image.shape[2] == 4
        if r["modality"] == "thermal":
            assert image.shape[:2] == (64, 80) and not image[..., :3].any()
            thermal = read_image(ws.path(ws.read_index().pairs[r["pair_id"]]["thermal"]))
            np.testing.assert_array_equal(image[..., 3], thermal)  # 8-bit: the stretch is the identity
        else:
            assert image.shape[:2] == (80, 96) and r["rgb_resized_from"] == "192x160"


def test_dataset_refuses_a_bit_flip_in_the_split_table(mixed, tmp_path):
    _, out = mixed
    h5 = tmp_path / "gasdb.h5"
    shutil.copy(out / "gasdb.h5", h5)
    with h5py.File(h5, "r") as f:
        offset = f["splits/train"].id.get_offset()
    data = bytearray(h5.read_bytes())
    data[offset] ^= 0x01  # sample 0 of train becomes another row
    h5.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="corrupted"):
        GasDBDataset(h5, "train")
    assert not verify_release(out).problems  # the original is untouched


def test_thermal_only_unreviewed_release_says_so(tmp_path):
    from gasdb_tools.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", name="simgas")
    for i, scene in enumerate(("near", "far", "near")):
        add_thermal_only(ws, f"sim{i}", pairs=2 + i, scene=scene, seed=20 + i)
    split_workspace(ws, method="video", ratios="0.7,0.3", seed=0)
    res = CliRunner().invoke(main, ["release", str(ws.root), str(tmp_path / "rel"), "--version", "0.1.0"])
    assert res.exit_code == 0, res.output
    assert "WARNING: 9 of 9 released masks were not reviewed by a person" in res.stderr
    assert "WARNING: no licence given" in res.stderr  # no --license: nothing claims one
    sheet = (tmp_path / "rel" / "DATASHEET.md").read_text()
    assert "9 thermal frames from 3 thermal-only recording(s) (no RGB camera)" in sheet
    assert "RGB-thermal pairs" not in sheet
    assert "**9 of 9 masks were not reviewed by a person**" in sheet
    assert "no licence stated by the maintainers (SPDX `NOASSERTION`)" in sheet and "CC-BY" not in sheet
    assert "No licence stated by the maintainers" in (tmp_path / "rel" / "index.html").read_text()
    assert "\nlicense: unknown\n" in (tmp_path / "rel" / "hf" / "README.md").read_text()
    assert "license" not in json.loads((tmp_path / "rel" / "croissant.json").read_text())
    manifest = json.loads((tmp_path / "rel" / "manifest.json").read_text())
    for s, c in manifest["counts"]["splits"].items():
        row = next(line for line in sheet.splitlines() if line.startswith(f"| {s} |"))
        assert f"{100 * c['requested_fraction']:.1f}%" in row and f"{100 * c['achieved_fraction']:.1f}%" in row
    assert "thermal only (no RGB camera)" in (tmp_path / "rel" / "index.html").read_text()
    res = CliRunner().invoke(main, ["release", str(ws.root), str(tmp_path / "strict"), "--version", "0.1.0",
                                    "--require-reviewed"])
    assert res.exit_code == 1 and "not reviewed" in res.output and not (tmp_path / "strict").exists()


def test_same_file_recordings_are_not_called_rgb_thermal_pairs(tmp_path):
    ws = build_workspace(tmp_path / "ws", recordings=2, pairs_per=2, size=(64, 64))
    with ws.transaction() as index:
        index.recordings["rec01"]["same_source"] = "1"
    split_workspace(ws, ratios="0.5,0.5", seed=0)
    out = build_release(ws, tmp_path / "rel", version="1.0.0", created=CREATED)
    sheet = (out / "DATASHEET.md").read_text()
    assert "2 RGB-thermal pairs from 1 RGB + thermal recording(s)" in sheet
    assert "2 pairs from 1 recording(s) whose RGB and thermal are one file" in sheet
    assert "rec01 were registered with the same file as RGB and thermal" in sheet


# -- Hugging Face, Croissant, Datumaro ---------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_hf_parquet_loads_with_datasets(mixed):
    datasets = pytest.importorskip("datasets")
    _, out = mixed
    counts = {s: c["pairs"] for s, c in json.loads((out / "manifest.json").read_text())["counts"]["splits"].items()}
    with h5py.File(out / "gasdb.h5", "r") as f:
        ids = f["meta/pair_id"].asstr()[:].tolist()
        for ds in (datasets.load_dataset("parquet", data_dir=str(out / "hf" / "data")),
                   datasets.load_dataset(str(out / "hf"))):
            assert {s: len(v) for s, v in ds.items()} == counts
            for s in ds:
                for row in ds[s]:
                    k = ids.index(row["pair_id"])
                    block, r = f["meta/block"].asstr()[k], int(f["meta/row"][k])
                    g = f["frames"][block]
                    np.testing.assert_array_equal(np.asarray(row["thermal"]), g["thermal"][r])
                    np.testing.assert_array_equal(np.asarray(row["mask"]), g["mask"][r])
                    np.testing.assert_array_equal(np.asarray(row["valid"]), g["valid"][r])
                    if row["modality"] == "thermal":
                        assert row["rgb"] is None
                    else:
                        np.testing.assert_array_equal(np.asarray(row["rgb"]), g["rgb"][r])
                    assert row["split"] == s and row["review"] in ("pending", "edited", "approved")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_croissant_validates_and_its_records_load(mixed):
    mlc = pytest.importorskip("mlcroissant")
    from gasdb_tools.fsutil import sha256_file

    _, out = mixed
    doc = json.loads((out / "croissant.json").read_text())
    files = [d for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {d["contentUrl"] for d in files} == {f["path"] for f in manifest["files"]} - {"croissant.json"}
    for d in files:
        assert d["sha256"] == sha256_file(out / d["contentUrl"])
    dataset = mlc.Dataset(jsonld=str(out / "croissant.json"))  # raises on validation errors
    pairs = list(dataset.records("pairs"))
    assert sorted(r["pairs/pair_id"].decode() for r in pairs) == sorted(plan_ids(out))
    samples = list(dataset.records("samples"))
    assert len(samples) == len(pairs)
    first = samples[0]
    assert first["samples/mask"].size == (first["samples/width"], first["samples/height"])


def plan_ids(out):
    import csv

    with open(out / "index.csv", newline="") as fh:
        return [r["pair_id"] for r in csv.DictReader(fh)]


_DATUMARO_SCRIPT = """
import json, sys
import datumaro as dm
ds = dm.Dataset.import_from(sys.argv[1], "coco")
out = {}
for name, sub in ds.subsets().items():
    items = list(sub)
    out[name] = {"items": len(items), "sizes": sorted({tuple(it.media.size) for it in items}),
                 "loaded": all(it.media.has_data and it.media.data is not None for it in items),
                 "crowd": sum(1 for it in items for a in it.annotations
                              if type(a).__name__ == "RleMask" and a.attributes.get("is_crowd"))}
print(json.dumps(out))
"""


def _datumaro_python():
    """A Python that imports datumaro: this one, or $GASDB_DATUMARO_PYTHON (datumaro 1.13 pins
    opencv < 5, so it often lives in its own environment)."""
    try:
        import datumaro  # noqa: F401

        return sys.executable
    except ImportError:
        exe = os.environ.get("GASDB_DATUMARO_PYTHON")
        return exe if exe and shutil.which(exe) or (exe and os.path.isfile(exe)) else None


@pytest.mark.skipif(_datumaro_python() is None, reason="needs datumaro: `make test` installs it into .venv-datumaro "
                                                        "(or point GASDB_DATUMARO_PYTHON at a Python that has it)")
def test_coco_imports_in_place_with_datumaro(mixed):
    _, out = mixed
    res = subprocess.run([_datumaro_python(), "-c", _DATUMARO_SCRIPT, str(out / "coco")], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s: v["items"] for s, v in got.items()} == {s: c["pairs"] for s, c in manifest["counts"]["splits"].items()}
    for s, v in got.items():
        doc = json.loads((out / "coco" / "annotations" / f"instances_{s}.json").read_text())
        assert v["loaded"] and v["crowd"] == sum(a["iscrowd"] for a in doc["annotations"]) > 0  # ignore regions
        assert {tuple(x) for x in v["sizes"]} <= {(64, 80), (80, 96)}


# -- ignore-aware scoring ---------------------------------------------------------------------------
def test_score_leaves_ignore_out_by_default_and_count_ignore_is_rtcans(mixed, tmp_path):
    """The issue's repro: predicting gas also where no thermal pixel exists must not lower the default IoU."""
    from gasdb_tools.imaging import write_image
    from gasdb_tools.metrics import confusion, scores

    _, out = mixed
    names = (out / "gasdb" / "test.txt").read_text().split()
    total = np.zeros((2, 2), np.int64)
    for name in names:
        label = read_image(out / "gasdb" / "labels" / f"{name}.png")
        ignore = read_image(out / "gasdb" / "ignore" / f"{name}.png") > 0
        pred = ((label == 1) | ignore).astype(np.uint8)  # gas also on every ignore pixel
        write_image(tmp_path / "sub" / f"{name}.png", pred)
        total += confusion(label, pred, ignore_index=None)  # RT-CAN: 0/1 labels, nothing ignored
    runner = CliRunner()
    res = runner.invoke(main, ["score", str(out), str(tmp_path / "sub"), "--json"])
    assert res.exit_code == 0, res.output
    default = json.loads(res.stdout)
    assert default["percent"]["gas"]["iou"] == 100.0 and default["metrics"]["gas"]["iou"] == 1.0
    assert default["ground_truth"]["ignore"] == "excluded (ignore/ masks)"
    res = runner.invoke(main, ["score", str(out), str(tmp_path / "sub"), "--json", "--count-ignore"])
    official = json.loads(res.stdout)
    expected = scores(total)["gas"]["iou"]
    assert official["metrics"]["gas"]["iou"] == pytest.approx(expected, rel=0, abs=0)
    assert official["confusion_matrix"] == total.tolist()
    assert official["metrics"]["gas"]["iou"] < 1.0  # the ignore pixels count as false positives there


# -- diff ---------------------------------------------------------------------------------------------
def test_diff_and_release_parent(tmp_path):
    ws = build_workspace(tmp_path / "ws", recordings=4, pairs_per=3, size=(64, 64))
    split_workspace(ws, ratios="0.5,0.5", seed=0)
    v1 = build_release(ws, tmp_path / "v1", version="1.0.0", created=CREATED)
    pairs = ws.pairs()
    victim, edited = pairs[0]["pair_id"], pairs[4]
    ws.set_blacklist({victim: "water spray"})
    doc = labelme_format.read(ws.path(edited["label"]))
    doc["shapes"].append(labelme_format.make_shape([[2, 2], [30, 2], [30, 30], [2, 30]], label="gas"))
    labelme_format.write(doc, ws.path(edited["label"]))
    split_workspace(ws, ratios="0.5,0.5", seed=1, force=True)
    res = res_v2 = CliRunner().invoke(main, ["release", str(ws.root), str(tmp_path / "v2"), "--version", "1.1.0",
                                             "--parent", str(v1), "--json"])
    assert res.exit_code == 0, res.output
    v2 = tmp_path / "v2"
    manifest = json.loads((v2 / "manifest.json").read_text())
    assert manifest["parent_version"] == "1.0.0"
    changes = manifest["changes"]
    assert changes["removed"] == [victim] and changes["added"] == []
    changed = {c["pair_id"]: c for c in changes["masks_changed"]}
    assert list(changed) == [edited["pair_id"]] and 0 < changed[edited["pair_id"]]["iou"] < 1
    res = CliRunner().invoke(main, ["diff", str(v1), str(v2), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == changes
    with h5py.File(v1 / "gasdb.h5", "r") as f1, h5py.File(v2 / "gasdb.h5", "r") as f2:
        from test_release import _sample

        a, b = _sample(f1, edited["pair_id"])["mask"], _sample(f2, edited["pair_id"])["mask"]
        both = (a != 255) & (b != 255)
        ga, gb = (a == 1) & both, (b == 1) & both
        assert changed[edited["pair_id"]]["iou"] == pytest.approx((ga & gb).sum() / (ga | gb).sum())
    moved = {m["pair_id"] for m in changes["moved"]}
    split1 = json.loads((v1 / "split.json").read_text())["splits"]
    split2 = json.loads((v2 / "split.json").read_text())["splits"]
    side1 = {p: s for s, v in split1.items() for p in v["pairs"]}
    side2 = {p: s for s, v in split2.items() for p in v["pairs"]}
    assert moved == {p for p in side1 if p in side2 and side1[p] != side2[p]}
    text = CliRunner().invoke(main, ["diff", str(v1), str(v2)]).output
    assert "pairs removed" in text and victim in text and "masks changed" in text
    page = (v2 / "index.html").read_text()
    assert "Changes since 1.0.0" in page and victim in page
    res = CliRunner().invoke(main, ["diff", str(v1), str(ws.root)])
    assert res.exit_code == 1 and "not a release" in res.output
    # 1.1.0 removed a pair and changed a mask: MAJOR by the stated policy, so it is warned about
    check = manifest["versioning"]
    assert (check["given"], check["needed"], check["ok"]) == ("minor", "major", False)
    assert "1 pair(s) removed" in check["reasons"] and "1 mask(s) changed" in check["reasons"]
    assert "WARNING: version 1.1.0 is a MINOR bump" in res_v2.stderr
    assert "calls for a MAJOR bump; this release is a MINOR bump" in (v2 / "DATASHEET.md").read_text()
    v3 = build_release(ws, tmp_path / "v3", version="2.0.0", parent=v2, created=CREATED)
    check = json.loads((v3 / "manifest.json").read_text())["versioning"]
    assert check == {"given": "major", "needed": "patch", "ok": True, "reasons": []}
    assert "no record changed (MAJOR bump)" in (v3 / "DATASHEET.md").read_text()


# -- failures leave nothing behind -------------------------------------------------------------------
def _mount_tmpfs(path, options):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("options, words", [("size=600k", "No space left on device"),
                                            ("size=1m,ro", "the file system is read-only")])
def test_release_onto_a_full_or_read_only_disk_fails_cleanly(mixed, tmp_path, options, words):
    ws, _ = mixed
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, options):
        pytest.skip("needs root and mount to make a small or read-only file system")
    try:
        res = subprocess.run([sys.executable, "-m", "gasdb_tools", "release", str(ws.root), str(disk / "rel"),
                              "--version", "1.0.0"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert res.returncode == 1, (res.returncode, res.stderr[-2000:])  # not a crash (139) or a traceback
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], res.stderr
        assert "Traceback" not in res.stderr
        assert list(disk.iterdir()) == []  # no OUT, no OUT.partial-*, no temp file
        if "ro" not in options:  # leave 16 KiB free: not enough for the export's images
            st = os.statvfs(disk)
            (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 16384))
        res = subprocess.run([sys.executable, "-m", "gasdb_tools", "export", str(ws.root), "--format", "gasdb",
                              str(disk / "export")], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
        assert words in lines[0] or "No space left" in lines[0] or "read-only" in lines[0].lower(), lines[0]
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]  # no temp file left
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_unaligned_rgb_pairs_are_refused_before_anything_is_written(tmp_path):
    ws = build_workspace(tmp_path / "ws", recordings=2, pairs_per=2, size=(64, 64))
    with ws.transaction() as index:
        pid = sorted(index.pairs)[0]
        index.pairs[pid]["aligned"] = ""
        index.pairs[pid]["valid"] = ""
    split_workspace(ws, ratios="0.5,0.5", seed=0)
    with pytest.raises(WorkspaceError, match="no aligned thermal frame"):
        plan_release(ws)
    assert not (tmp_path / "rel").exists()
