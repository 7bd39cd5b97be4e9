"""Releases: HDF5 round trip, layout, manifest/SHA256SUMS, verify failures, atomic build, the HTML page."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from _release_ws import build_workspace, tree_state
from gasdb_tools import export
from gasdb_tools.cli import main
from gasdb_tools.errors import WorkspaceError
from gasdb_tools.imaging import read_image
from gasdb_tools.release import INDEX_COLUMNS, build_release, plan_release, verify_release
from gasdb_tools.splits import split_workspace

CREATED = "2024-01-01T00:00:00Z"


def _sample(f, pid):
    """The four arrays of one pair in an open pack, found through /meta (block, row)."""
    ids = f["meta/pair_id"].asstr()[:].tolist()
    k = ids.index(pid)
    block, row = f["meta/block"].asstr()[k], int(f["meta/row"][k])
    return {a: f["frames"][block][a][row] for a in ("rgb", "thermal", "mask", "valid")}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    ws = build_workspace(root / "ws", recordings=5, pairs_per=3, gas=[True, True, False, True, True],
                         blacklist={(0, 2): "water spray, not gas"}, unlabelled=[(1, 1)])
    split_workspace(ws, method="video", ratios="0.6,0.4", seed=0)
    before = tree_state(ws.root)
    out = build_release(ws, root / "rel", version="1.0.0", created=CREATED, license="CC-BY-4.0")
    return ws, out, before


def _copy(out, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(out, dst)
    return dst


def _problems(report):
    return {(p["file"], p["kind"]) for p in report.problems}


# -- contents ---------------------------------------------------------------------------------------
def test_building_never_modifies_the_workspace(built):
    ws, _, before = built
    assert tree_state(ws.root) == before


def test_hdf5_round_trip_is_bit_exact(built):
    ws, out, _ = built
    plan = plan_release(ws)
    with h5py.File(out / "gasdb.h5", "r") as f:
        assert f.attrs["format"] == "gasdb-h5" and f.attrs["format_version"] == 2
        assert f.attrs["dataset_version"] == "1.0.0"
        assert len(f.attrs["meta_sha256"]) == 64 and len(f.attrs["splits_sha256"]) == 64
        calibration = json.loads((ws.root / "calibration" / "default.json").read_text())
        assert json.loads(f.attrs["calibration"]) == {"default": calibration}
        assert list(f["frames"]) == ["96x80-uint16"]  # one camera: one block
        n = len(plan.ids)
        for key, dtype in (("rgb", np.uint8), ("thermal", np.uint16), ("mask", np.uint8), ("valid", np.uint8)):
            d = f["frames/96x80-uint16"][key]
            assert d.shape[0] == n and d.dtype == dtype
            assert d.chunks == (1, *d.shape[1:])  # one chunk per frame
            assert d.compression == "gzip" and d.shuffle
        assert f["meta/pair_id"].asstr()[:].tolist() == plan.ids
        for k, pid in enumerate(plan.ids):
            row = plan.pairs[pid]
            got = _sample(f, pid)
            np.testing.assert_array_equal(got["rgb"], read_image(ws.path(row["rgb"])))
            np.testing.assert_array_equal(got["thermal"], read_image(ws.path(row["aligned"])))
            np.testing.assert_array_equal(got["valid"], read_image(ws.path(row["valid"])))
            np.testing.assert_array_equal(got["mask"], export.pair_mask(ws, row))
            assert f["meta/t_rgb"][k] == float(row["t_rgb"])
            assert f["meta/recording"].asstr()[k] == row["recording"]
            assert f["meta/modality"].asstr()[k] == "rgb+thermal" and f["meta/rgb_resized_from"].asstr()[k] == ""
        masks = f["frames/96x80-uint16/mask"][:]
        assert set(np.unique(masks)) == {0, 1, 255}
        assert f["frames/96x80-uint16/thermal"][:].max() > 255  # 16-bit thermal kept, not squeezed to 8 bits
        for s, ids in plan.splits.items():
            assert [plan.ids[i] for i in f["splits"][s][:]] == ids


def test_index_csv_and_gasdb_layout_agree(built):
    ws, out, _ = built
    with open(out / "index.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == INDEX_COLUMNS
        rows = list(reader)
    plan = plan_release(ws)
    assert [r["pair_id"] for r in rows] == plan.ids
    test_names = (out / "gasdb" / "test.txt").read_text().split()
    assert test_names == sorted(r["name"] for r in rows if r["split"] == "test")
    with h5py.File(out / "gasdb.h5", "r") as f:
        for r in rows:
            mask = _sample(f, r["pair_id"])["mask"]
            label = read_image(out / "gasdb" / "labels" / f"{r['name']}.png")
            np.testing.assert_array_equal(label, np.where(mask == 255, 0, mask))  # the loader wants 0/1
            ignore = read_image(out / "gasdb" / "ignore" / f"{r['name']}.png")
            np.testing.assert_array_equal(ignore, np.where(mask == 255, 255, 0))  # ... and the ignore beside it
            assert r["review"] == plan.states[r["pair_id"]].status and r["modality"] == "rgb+thermal"
    blacklist = (out / "gasdb" / "blacklist.txt").read_text().split()
    assert len(blacklist) == 1 and blacklist[0] not in {r["name"] for r in rows}
    excl = (out / "exclusions.csv").read_text()
    assert "water spray, not gas" in excl and "unlabelled" in excl


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_coco_loads_in_place_per_split_and_scores_one_against_itself(built):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from gasdb_tools import coco as coco_mod

    ws, out, _ = built
    plan = plan_release(ws)
    assert sorted(p.name for p in (out / "coco" / "annotations").iterdir()) == [
        f"instances_{s}.json" for s in sorted(plan.splits)]
    with h5py.File(out / "gasdb.h5", "r") as f:
        for s, ids in plan.splits.items():
            path = out / "coco" / "annotations" / f"instances_{s}.json"
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO(str(path))
            assert sorted(im["pair_id"] for im in gt.dataset["images"]) == ids
            for im in gt.dataset["images"]:
                image = read_image(out / "coco" / "images" / s / im["file_name"])  # the file is in the release
                assert image.dtype == np.uint8 and image.shape[:2] == (im["height"], im["width"])
                mask = _sample(f, im["pair_id"])["mask"]
                crowd = gt.loadAnns(gt.getAnnIds(imgIds=[im["id"]], iscrowd=True))
                assert len(crowd) == 1
                np.testing.assert_array_equal(gt.annToMask(crowd[0]).astype(bool), mask == 255)
                union = np.zeros(mask.shape, bool)
                for ann in gt.loadAnns(gt.getAnnIds(imgIds=[im["id"]], iscrowd=False)):
                    union |= gt.annToMask(ann).astype(bool)
                np.testing.assert_array_equal(union, mask == 1)
            dets = coco_mod.detections_from_annotations(gt.dataset["annotations"])
            with contextlib.redirect_stdout(io.StringIO()):
                ev = COCOeval(gt, gt.loadRes(dets), "segm")
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0) and ev.stats[1] == pytest.approx(1.0), s


def test_manifest_and_sha256sums(built):
    ws, out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f["path"] for f in manifest["files"]} == files - {"manifest.json", "SHA256SUMS"}
    assert manifest["version"] == "1.0.0" and manifest["parent_version"] is None
    assert manifest["created"] == CREATED and manifest["license"] == "CC-BY-4.0"
    assert "licence `CC-BY-4.0`" in (out / "DATASHEET.md").read_text()
    assert json.loads((out / "croissant.json").read_text())["license"] == "https://spdx.org/licenses/CC-BY-4.0.html"
    assert "\nlicense: cc-by-4.0\n" in (out / "hf" / "README.md").read_text()
    assert manifest["split"]["method"] == "video" and manifest["split"]["leaks_across_splits"] is False
    counts = manifest["counts"]
    assert counts["total"]["pairs"] == 13 == sum(c["pairs"] for c in counts["splits"].values())
    assert counts["total"]["recordings"] == 5
    split_doc = json.loads((ws.root / "splits" / "default.json").read_text())
    for s, c in counts["splits"].items():  # requested and achieved fractions, as the split file records them
        assert c["requested_fraction"] == split_doc["splits"][s]["requested_fraction"]
        assert c["achieved_fraction"] == pytest.approx(c["pairs"] / 13, abs=1e-6)
        assert c["scene_fractions"] == split_doc["splits"][s]["scene_fractions"]
    assert manifest["annotation"]["review"] == {"approved": 5, "edited": 4, "pending": 4}
    assert manifest["annotation"]["untouched_drafts"] == 4 and manifest["annotation"]["recheck"] == 0
    assert manifest["frames"]["sizes"] == {"96x80": 13} and manifest["frames"]["modalities"] == {"rgb+thermal": 13}
    assert {r: v["review"] for r, v in manifest["recordings"].items()}["rec02"] == {
        "pending": 1, "edited": 1, "approved": 1}
    assert manifest["leakage_audit"]["shared_recordings"] == []
    assert [e["reason"] for e in manifest["exclusions"]] == ["blacklisted: water spray, not gas", "unlabelled"]
    assert "default" in manifest["calibration"]
    if shutil.which("sha256sum"):
        res = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    text = (out / "DATASHEET.md").read_text()
    for section in ("Motivation", "Composition", "Collection process", "Preprocessing", "Uses", "Distribution",
                    "Maintenance", "Known limits", "Splits"):
        assert f"## {section}" in text
    assert "water spray, not gas" in text and "| total | 13 |  | 100.0% | 5 |" in text
    assert "4 pending (4 untouched drafts), 4 edited by a person and not yet approved, 5 approved by a reviewer" in text
    assert "corrected in LabelMe" not in text and "on the enhanced thermal" not in text  # nothing it did not record
    assert "**4 of 13 masks were not reviewed by a person**" in text


def test_rebuild_from_same_inputs_is_byte_identical_whatever_the_threads(built, tmp_path):
    ws, out, _ = built
    for jobs in (1, 3):
        again = build_release(ws, tmp_path / f"again{jobs}", version="1.0.0", created=CREATED, jobs=jobs,
                              license="CC-BY-4.0")
        assert (again / "SHA256SUMS").read_bytes() == (out / "SHA256SUMS").read_bytes()


def test_release_folder_follows_the_umask(built, tmp_path):
    import os
    import stat

    ws = built[0]
    old = os.umask(0o022)
    os.umask(old)
    out = build_release(ws, tmp_path / "perm", version="1.0.0", created=CREATED)
    expected = 0o777 & ~old
    assert stat.S_IMODE(out.stat().st_mode) == expected  # not mkdtemp's 0700
    assert stat.S_IMODE((out / "gasdb").stat().st_mode) == expected
    assert stat.S_IMODE((out / "gasdb.h5").stat().st_mode) == 0o666 & ~old


# -- verify -----------------------------------------------------------------------------------------
def test_verify_passes_on_fresh_release(built):
    report = verify_release(built[1])
    assert report.ok, report.problems
    assert report.version == "1.0.0" and report.files_checked > 20


def test_verify_of_a_workspace_says_it_is_not_a_release(built):
    """A workspace passed by mistake gets one line, not an 'extra' line per frame."""
    res = CliRunner().invoke(main, ["verify", str(built[0].root)])
    assert res.exit_code == 1 and "not a release: a gasdb workspace" in res.output
    assert "extra" not in res.output and "FAILED: 1 problem(s)" in res.output


def test_verify_names_a_flipped_byte_in_the_hdf5(built, tmp_path):
    rel = _copy(built[1], tmp_path)
    data = bytearray((rel / "gasdb.h5").read_bytes())
    data[len(data) // 2] ^= 0x01
    (rel / "gasdb.h5").write_bytes(bytes(data))
    report = verify_release(rel)
    assert _problems(report) == {("gasdb.h5", "corrupted")}
    res = CliRunner().invoke(main, ["verify", str(rel)])
    assert res.exit_code == 1 and "corrupted: gasdb.h5" in res.output


def test_verify_names_a_deleted_label_and_a_stray_file(built, tmp_path):
    rel = _copy(built[1], tmp_path)
    label = sorted((rel / "gasdb" / "labels").glob("*.png"))[0]
    label.unlink()
    (rel / "notes.txt").write_text("stray\n")
    (rel / "figures" / "extra").mkdir()
    report = verify_release(rel)
    name = label.relative_to(rel).as_posix()
    assert _problems(report) == {(name, "missing"), ("notes.txt", "extra"), ("figures/extra/", "extra")}
    res = CliRunner().invoke(main, ["verify", str(rel), "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and {p["file"] for p in doc["problems"]} == {name, "notes.txt", "figures/extra/"}


def test_verify_recounts_even_when_hashes_are_rewritten(built, tmp_path):
    from gasdb_tools.fsutil import sha256_file, write_json

    rel = _copy(built[1], tmp_path)
    lines = (rel / "index.csv").read_text().splitlines(keepends=True)
    (rel / "index.csv").write_text("".join(lines[:-1]))  # drop a row, then "fix" the hashes
    manifest = json.loads((rel / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["path"] == "index.csv":
            f["sha256"], f["bytes"] = sha256_file(rel / "index.csv"), (rel / "index.csv").stat().st_size
    write_json(rel / "manifest.json", manifest)
    sums = {ln.split("  ")[1]: ln.split("  ")[0] for ln in (rel / "SHA256SUMS").read_text().splitlines()}
    sums["index.csv"], sums["manifest.json"] = sha256_file(rel / "index.csv"), sha256_file(rel / "manifest.json")
    (rel / "SHA256SUMS").write_text("".join(f"{h}  {p}\n" for p, h in sorted(sums.items())))
    report = verify_release(rel)
    assert {(f, k) for f, k in _problems(report)} == {("index.csv", "count")}


def test_verify_damaged_manifest_and_sums(built, tmp_path):
    rel = _copy(built[1], tmp_path)
    with open(rel / "manifest.json", "a") as fh:
        fh.write(" ")
    assert ("manifest.json", "corrupted") in _problems(verify_release(rel))
    (rel / "SHA256SUMS").unlink()
    assert ("SHA256SUMS", "missing") in _problems(verify_release(rel))
    assert _problems(verify_release(tmp_path / "nowhere")) == {(str(tmp_path / "nowhere"), "missing")}


def _resign(rel):
    """Rewrite SHA256SUMS for the manifest as it is now (an attacker who can edit both)."""
    from gasdb_tools.fsutil import sha256_file

    sums = {ln.split("  ")[1]: ln.split("  ")[0] for ln in (rel / "SHA256SUMS").read_text().splitlines()}
    sums["manifest.json"] = sha256_file(rel / "manifest.json")
    (rel / "SHA256SUMS").write_text("".join(f"{h}  {p}\n" for p, h in sorted(sums.items())))


@pytest.mark.parametrize("path", ["/etc/hostname", "../outside.txt", "gasdb/../../outside.txt", "C:\\x.txt"])
def test_verify_refuses_manifest_entries_outside_the_release(built, tmp_path, path):
    from gasdb_tools.fsutil import write_json

    rel = _copy(built[1], tmp_path)
    (tmp_path / "outside.txt").write_text("secret\n")
    manifest = json.loads((rel / "manifest.json").read_text())
    manifest["files"].append({"path": path, "bytes": 7, "sha256": "0" * 64})
    write_json(rel / "manifest.json", manifest)
    _resign(rel)
    report = verify_release(rel)
    assert (path, "unsafe") in _problems(report)
    assert report.files_checked == len(manifest["files"]) - 1  # the unsafe entry was never opened


def test_verify_refuses_a_symlinked_pack(built, tmp_path):
    rel = _copy(built[1], tmp_path)
    real = tmp_path / "elsewhere.h5"
    (rel / "gasdb.h5").rename(real)
    (rel / "gasdb.h5").symlink_to(real)  # same bytes, but outside the release
    report = verify_release(rel)
    assert ("gasdb.h5", "unsafe") in _problems(report) and not report.ok


@pytest.mark.parametrize("mutate", [
    lambda m: m.update(files="everything"),
    lambda m: m.update(files=[1, None, {"path": 3}]),
    lambda m: m["files"][0].update(bytes="many", sha256=None),
    lambda m: m.update(counts=[]),
    lambda m: m.update(counts={"splits": {"train": 5, "../x": {"pairs": 1}}, "total": 3}),
    lambda m: m.update(version={"x": 1}),
])
def test_verify_never_crashes_on_a_malformed_manifest(built, tmp_path, mutate):
    from gasdb_tools.fsutil import write_json

    rel = _copy(built[1], tmp_path)
    manifest = json.loads((rel / "manifest.json").read_text())
    mutate(manifest)
    write_json(rel / "manifest.json", manifest)
    _resign(rel)
    report = verify_release(rel)
    assert not report.ok and report.problems
    res = CliRunner().invoke(main, ["verify", str(rel), "--json"])
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception, SystemExit)


# -- building safely --------------------------------------------------------------------------------
def test_interrupted_build_leaves_nothing_that_looks_complete(built, tmp_path, monkeypatch):
    from gasdb_tools import release_docs

    ws = built[0]
    seen = {}

    def boom(*args, **kwargs):
        partial = [p for p in tmp_path.iterdir() if p.name.startswith("out.partial-")]
        seen["partial"] = partial
        seen["verify"] = verify_release(partial[0]).ok
        raise KeyboardInterrupt

    monkeypatch.setattr(release_docs, "figures", boom)
    with pytest.raises(KeyboardInterrupt):
        build_release(ws, tmp_path / "out", version="1.0.0")
    assert len(seen["partial"]) == 1 and seen["verify"] is False  # mid-build: no manifest, fails verify
    assert list(tmp_path.iterdir()) == []  # the partial folder is removed, no OUT appears


def test_existing_out_needs_force_and_must_be_a_release(built, tmp_path):
    ws, out, _ = built
    target = tmp_path / "rel"
    shutil.copytree(out, target)
    with pytest.raises(WorkspaceError, match="already exists"):
        build_release(ws, target, version="1.0.1")
    new = build_release(ws, target, version="1.0.1", parent_version="1.0.0", force=True)
    assert json.loads((new / "manifest.json").read_text())["version"] == "1.0.1"
    assert verify_release(new).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(WorkspaceError, match="not a gasdb release"):
        build_release(ws, other, version="1.0.0", force=True)
    with pytest.raises(WorkspaceError, match="inside the workspace"):
        build_release(ws, ws.root / "releases" / "x", version="1.0.0")


@pytest.mark.parametrize("kwargs, match", [
    ({"version": "1.0"}, "semantic version"),
    ({"version": "v1.0.0"}, "semantic version"),
    ({"version": "1.0.0", "parent_version": "1.0.0"}, "lower than"),
    ({"version": "1.0.0", "license": "CC BY 4.0!"}, "SPDX"),
    ({"version": "1.0.0", "compression": 12}, "gzip level"),
])
def test_bad_arguments(built, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_release(built[0], tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_stale_split_and_missing_split_are_refused(tmp_path):
    ws = build_workspace(tmp_path / "ws", recordings=3, pairs_per=2, size=(64, 64))
    with pytest.raises(WorkspaceError, match="no split named"):
        build_release(ws, tmp_path / "r", version="1.0.0")
    split_workspace(ws, seed=0)
    victim = ws.pairs()[0]["pair_id"]
    ws.set_blacklist({victim: "too weak"})
    with pytest.raises(WorkspaceError, match="stale") as err:
        build_release(ws, tmp_path / "r", version="1.0.0")
    assert "too weak" in str(err.value) and "gasdb split" in str(err.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "ws"]


# -- the page ----------------------------------------------------------------------------------------
def test_html_references_every_figure(built):
    """The overview figures are linked, and each scene's three samples are the review app's sample
    panels (same template, same stylesheet) whose images are files of the release."""
    from gasdb_tools.pictures import panel_css

    out = built[1]
    page = (out / "index.html").read_text()
    figures = sorted(p.relative_to(out).as_posix() for p in (out / "figures").rglob("*") if p.is_file())
    rows = list(csv.DictReader(open(out / "index.csv", newline="")))
    scenes = {r["scene"] for r in rows}
    overview = {"figures/gas_coverage.svg", "figures/split_balance.svg"}
    samples = [f for f in figures if f.startswith("figures/samples/")]
    assert set(figures) == overview | set(samples)
    assert page.count('<figure class="gasdb-panel">') == len(samples) // 3 <= 3 * len(scenes)
    assert panel_css().strip() in page
    for scene in scenes:
        assert f"Samples: {scene}" in page
    names = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    for fig in figures:
        if fig in samples:
            assert f'src="{fig}"' in page
            img = read_image(out / fig)
            assert img.shape[1] <= 320 and img.std() > 5  # a drawn view, not a blank canvas
        else:
            assert f'<img src="{fig}"' in page
            import xml.etree.ElementTree as ET

            svg = ET.parse(out / fig).getroot()  # well-formed
            drawn = [e for e in svg.iter() if e.tag.split("}")[1] in ("rect", "polyline")]
            assert svg.tag.endswith("svg") and len(drawn) >= 4  # background, legend and the data
        assert fig in names  # verified like every other file
    assert "4 pending, 4 edited, 5 approved, 0 to recheck" in page  # the review numbers


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _screenshot(browser, page, png):
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,2400", f"--screenshot={png}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return read_image(png, mode="rgb")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs headless Chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium_with_its_figures(built, tmp_path):
    browser = _chromium()
    shot = _screenshot(browser, built[1] / "index.html", tmp_path / "page.png")
    assert shot.std() > 10  # not a blank page
    broken = _copy(built[1], tmp_path)
    shutil.rmtree(broken / "figures")
    without = _screenshot(browser, broken / "index.html", tmp_path / "broken.png")
    differs = np.abs(shot.astype(int) - without.astype(int)).max(axis=2) > 30
    assert differs.mean() > 0.05  # the figures' pixels are there only when the images load
    red = (shot[..., 0] > 200) & (shot[..., 1] < 120) & (shot[..., 2] < 120)  # gas overlay / test bars
    assert red.sum() > 500


# -- CLI -----------------------------------------------------------------------------------------------
def test_cli_release_then_verify(built, tmp_path):
    ws = built[0]
    runner = CliRunner()
    res = runner.invoke(main, ["release", str(ws.root), str(tmp_path / "r"), "--version", "2.0.0", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["version"] == "2.0.0" and doc["counts"]["total"]["pairs"] == 13
    res = runner.invoke(main, ["release", str(ws.root), str(tmp_path / "r"), "--version", "2.0.1"])
    assert res.exit_code == 1 and "already exists" in res.output
    res = runner.invoke(main, ["release", str(ws.root), str(tmp_path / "q"), "--version", "two"])
    assert res.exit_code == 2 and "semantic version" in res.output
    res = runner.invoke(main, ["verify", str(tmp_path / "r")])
    assert res.exit_code == 0 and "ok: release 2.0.0" in res.output


def test_cli_help_has_examples():
    for cmd in ("split", "release", "verify"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and "Example" in res.output


# -- real frames -------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_release_of_real_rgbt_frames_is_bit_exact(shared, tmp_path):
    """Two real MFNet RGB-thermal frames (Gas-DB's 4-channel layout) through split, release and verify."""
    from gasdb_tools import labelme_format
    from gasdb_tools.imaging import write_image
    from gasdb_tools.workspace import Workspace

    sources = sorted(shared("mfnet").glob("*.png"))
    ws = Workspace.init(tmp_path / "ws")
    rows, recs = {}, {}
    for i, png in enumerate(sources):
        rgba = read_image(png)
        rec, pid = f"mf{i}", f"mf{i}_00000000"
        h, w = rgba.shape[:2]
        row = {"pair_id": pid, "recording": rec, "t_rgb": "0.0", "t_thermal": "0.0", "dt": "0.0",
               "rgb": f"frames/{rec}/rgb/{pid}.png", "thermal": f"frames/{rec}/thermal/{pid}.png",
               "aligned": f"aligned/{rec}/{pid}.png", "valid": "", "label": f"labels/{rec}/{pid}.json",
               "review": "approved"}
        write_image(ws.path(row["rgb"]), rgba[..., :3])
        write_image(ws.path(row["thermal"]), rgba[..., 3])
        write_image(ws.path(row["aligned"]), rgba[..., 3])
        shape = labelme_format.make_shape([[w * 0.3, h * 0.3], [w * 0.6, h * 0.35], [w * 0.5, h * 0.7]])
        labelme_format.write(labelme_format.new_document(f"../../aligned/{rec}/{pid}.png", h, w, shapes=[shape]),
                             ws.path(row["label"]))
        rows[pid] = row
        recs[rec] = {"id": rec, "rgb": str(png), "thermal": str(png), "scene": ("sunny", "near")[i]}
    with ws.transaction() as index:
        index.recordings.update(recs)
        index.pairs.update(rows)
    split_workspace(ws, ratios="0.5,0.5", seed=0)
    out = build_release(ws, tmp_path / "rel", version="0.1.0")
    assert verify_release(out).ok
    with h5py.File(out / "gasdb.h5", "r") as f:
        for k, png in enumerate(sources):
            rgba = read_image(png)
            got = _sample(f, f"mf{k}_00000000")
            np.testing.assert_array_equal(got["rgb"], rgba[..., :3])
            np.testing.assert_array_equal(got["thermal"], rgba[..., 3])
            assert (got["mask"] == 1).sum() > 1000 and (got["valid"] == 255).all()
    gasdb_image = read_image(out / "gasdb" / "images" / "00001.png")
    np.testing.assert_array_equal(gasdb_image, read_image(sources[0]))  # Gas-DB RGBA round trip


def test_make_release_splits_builds_and_verifies(tmp_path):
    from gasdb_tools.release import make_release

    ws = build_workspace(tmp_path / "ws", recordings=2, pairs_per=2, size=(64, 64))
    result = make_release(ws, tmp_path / "rel", version="0.1.0")
    assert result["verified"] and result["problems"] == []
    assert result["counts"] == {"train": 2, "test": 2}  # two recordings: one each, never one split empty
    assert (ws.root / "splits" / "default.json").is_file()
