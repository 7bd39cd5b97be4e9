"""COCO RLE export: pycocotools loads it, decodes the same masks, and COCOeval scores GT vs itself 1.0."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from annotation_fixtures import make_workspace
from gasdb_tools import coco, export
from gasdb_tools import labelme_format as lf
from gasdb_tools.errors import FormatError


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_rle_round_trip_area_and_bbox(mask):
    rle = coco.encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
    json.dumps(rle)
    np.testing.assert_array_equal(coco.decode_rle(rle), mask)
    assert coco.rle_area(rle) == int(mask.sum())
    assert coco.rle_bbox(rle) == coco.mask_bbox(mask)


def test_encode_accepts_c_order_and_views():
    base = np.zeros((10, 12), np.uint8)
    base[2:5, 3:9] = 7
    view = base[:, ::-1]  # neither C- nor Fortran-contiguous
    np.testing.assert_array_equal(coco.decode_rle(coco.encode_rle(view)), view != 0)
    with pytest.raises(ValueError, match="2-D"):
        coco.encode_rle(np.zeros((2, 2, 2)))


def test_uncompressed_rle_is_decoded():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    counts, prev, run = [], False, 0
    for v in mask.ravel(order="F"):
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    np.testing.assert_array_equal(coco.decode_rle({"size": [4, 5], "counts": counts}), mask)


def test_annotation_matches_labelme_rectangle_not_coco_polygon():
    doc = lf.new_document("a.png", 50, 80, shapes=[lf.make_shape([[20, 10], [70, 40]], shape_type="rectangle")])
    ann = coco.make_annotation(lf.rasterize(doc) == 1, ann_id=1, image_id=1)
    assert ann["area"] == 1581 and ann["bbox"] == [20.0, 10.0, 51.0, 31.0]
    assert ann["iscrowd"] == 0 and ann["category_id"] == 1
    with pytest.raises(ValueError, match="at least one pixel"):
        coco.make_annotation(np.zeros((3, 3), bool), ann_id=2, image_id=1)


def test_instance_masks_by_group_and_by_component():
    sem = np.zeros((10, 10), np.uint8)
    sem[1:3, 1:3] = 1
    sem[6:9, 6:9] = 1
    sem[7, 7] = 255
    ins = np.zeros((10, 10), np.int32)
    ins[1:3, 1:3] = 1
    ins[6:9, 6:9] = 1  # one LabelMe group, two blobs
    by_group = coco.instance_masks(sem, ins)
    assert len(by_group) == 1 and by_group[0].sum() == 4 + 8
    by_comp = coco.instance_masks(sem)
    assert [m.sum() for m in by_comp] == [4, 8]


def _gt_and_masks(ws, tmp_path):
    path = export.export_coco(ws, tmp_path / "coco.json")
    return path, json.loads(path.read_text())


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_workspace_export_loads_in_pycocotools_and_decodes_the_same_masks(tmp_path):
    from pycocotools.coco import COCO

    ws = make_workspace(tmp_path / "ws")
    path, doc = _gt_and_masks(ws, tmp_path)
    assert [c["id"] for c in doc["categories"]] == [1] and doc["categories"][0]["name"] == "gas"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    assert len(gt.getImgIds()) == 4  # labelled pairs only
    for img in gt.loadImgs(gt.getImgIds()):
        expected = export.pair_mask(ws, img["pair_id"]) == 1
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]], iscrowd=False))
        assert len(anns) == 2  # the two LabelMe groups of the fixture
        crowd = gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]], iscrowd=True))
        assert len(crowd) == 1 and crowd[0]["iscrowd"] == 1  # the ignored pixels: one ignore region
        np.testing.assert_array_equal(gt.annToMask(crowd[0]).astype(bool), export.pair_mask(ws, img["pair_id"]) == 255)
        assert img["file_name"].startswith("enhanced/")  # the image annotators saw, workspace-relative
        union = np.zeros_like(expected)
        for ann in anns:
            m = gt.annToMask(ann).astype(bool)
            assert not (union & m).any()  # instances are disjoint
            union |= m
            assert ann["area"] == int(m.sum()) and ann["iscrowd"] == 0
            assert ann["bbox"] == coco.mask_bbox(m)
        np.testing.assert_array_equal(union, expected)
        # ignored (invalid) pixels belong to no instance
        assert not union[:, :4].any()


def test_cocoeval_scores_ground_truth_against_itself_as_one(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ws = make_workspace(tmp_path / "ws")
    path, doc = _gt_and_masks(ws, tmp_path)
    dets = coco.detections_from_annotations(doc["annotations"])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0) and ev.stats[1] == pytest.approx(1.0)
    ours = coco.evaluate_segm(doc, dets)
    assert ours["AP"] == pytest.approx(1.0) and ours["AR100"] == pytest.approx(1.0)
    assert dets == coco.detections_from_annotations(doc["annotations"])  # inputs not mutated
    assert coco.evaluate_segm(doc, dets)["AP"] == pytest.approx(1.0)  # re-evaluating works
    # a worse prediction scores less
    shifted = [dict(d, segmentation=coco.encode_rle(np.roll(coco.decode_rle(d["segmentation"]), 6, axis=1)))
               for d in dets]
    assert coco.evaluate_segm(doc, shifted)["AP"] < 0.9


def test_evaluate_segm_handles_pitfalls(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    _, doc = _gt_and_masks(ws, tmp_path)
    assert coco.evaluate_segm(doc, [])["AP"] == 0.0  # loadRes([]) would raise
    det = coco.detections_from_annotations(doc["annotations"])[:1]
    with pytest.raises(FormatError, match="not in the ground truth"):
        coco.evaluate_segm(doc, [dict(det[0], image_id=999)])
    wrong = dict(det[0], segmentation=coco.encode_rle(np.ones((10, 10), bool)))
    with pytest.raises(FormatError, match="size"):
        coco.evaluate_segm(doc, [wrong])


def test_check_coco_rejects_broken_documents(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    _, doc = _gt_and_masks(ws, tmp_path)
    coco.check_coco(doc)
    for mutate, text in [
        (lambda d: d["annotations"][0].update(area=1), "area"),
        (lambda d: d["annotations"][0].update(iscrowd=2), "iscrowd"),
        (lambda d: d["annotations"][0].update(image_id=99), "image_id"),
        (lambda d: d["categories"].append({"id": 0, "name": "_background_"}), "background"),
        (lambda d: d["images"][0].update(height=7), "size"),
    ]:
        bad = copy.deepcopy(doc)
        mutate(bad)
        with pytest.raises(FormatError, match=text):
            coco.check_coco(bad)


def test_export_is_deterministic(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    a = export.export_coco(ws, tmp_path / "a.json").read_bytes()
    b = export.export_coco(ws, tmp_path / "b.json").read_bytes()
    assert a == b
