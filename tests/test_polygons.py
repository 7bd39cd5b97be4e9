"""Mask -> LabelMe shapes: exact shapes, round trips through the one rasteriser, groups, holes, pinches."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasdb_tools import labelme_format
from gasdb_tools.polygons import mask_to_polygons, mask_to_shapes, plume_groups, polygon_self_intersects
from gasdb_tools.synth import SynthRig
from gasdb_tools.validate import validate_document


def _raster(shapes, shape):
    doc = labelme_format.new_document("a.png", shape[0], shape[1], shapes=shapes)
    return labelme_format.rasterize(doc) == 1


def _iou(a, b) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def test_rectangle_is_four_exact_vertices_and_round_trips_exactly():
    m = np.zeros((40, 60), bool)
    m[5:25, 10:50] = True
    polys = mask_to_polygons(m)
    assert len(polys) == 1
    assert sorted(map(tuple, polys[0].tolist())) == [(10.0, 5.0), (10.0, 24.0), (49.0, 5.0), (49.0, 24.0)]
    assert np.array_equal(_raster(mask_to_shapes(m), m.shape), m)


def test_empty_mask_gives_no_shapes():
    assert mask_to_shapes(np.zeros((10, 10), bool)) == []
    assert mask_to_polygons(np.zeros((10, 10), np.uint8)) == []


def _plume_masks():
    rig = SynthRig(seed=11, size=(320, 256), contrast=24.0, distractors=False, sync_lamp=False, leak_start_s=0.2)
    return [rig.thermal(t)[1] for t in (1.0, 2.5, 4.0, 6.0)]


@pytest.mark.parametrize("eps, floor", [(0.002, 0.97), (0.003, 0.96), (0.005, 0.95)])
def test_plume_round_trip_iou(eps, floor):
    """Rasterising the written polygons reproduces simulated plume masks (holes filled: compare to that)."""
    for mask in _plume_masks():
        assert mask.any()
        filled = _raster(mask_to_shapes(mask, epsilon_frac=0, min_area=0), mask.shape)
        got = _raster(mask_to_shapes(mask, epsilon_frac=eps), mask.shape)
        assert _iou(got, mask) >= 0.95
        assert _iou(got, filled) >= floor


def test_simplification_reduces_vertices():
    mask = _plume_masks()[2]
    n = [sum(len(s["points"]) for s in mask_to_shapes(mask, epsilon_frac=e)) for e in (0.0, 0.002, 0.005, 0.02)]
    assert n[0] > n[1] > n[2] > n[3] >= 3


@st.composite
def blob_masks(draw):
    h, w = draw(st.integers(24, 96)), draw(st.integers(24, 96))
    m = np.zeros((h, w), np.uint8)
    for _ in range(draw(st.integers(1, 4))):
        cx, cy = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        ax, ay = draw(st.integers(3, max(3, w // 3))), draw(st.integers(3, max(3, h // 3)))
        cv2.ellipse(m, (cx, cy), (ax, ay), draw(st.integers(0, 179)), 0, 360, 1, -1)
    return m.astype(bool)


@settings(max_examples=60, deadline=None)
@given(blob_masks())
def test_round_trip_properties(mask):
    shapes = mask_to_shapes(mask, min_area=0)
    got = _raster(shapes, mask.shape)
    assert _iou(got, mask) >= 0.9  # small random blobs: boundary pixels weigh more than on plumes
    doc = labelme_format.new_document("a.png", mask.shape[0], mask.shape[1], shapes=shapes)
    problems = [p for p in validate_document(doc, frame_size=mask.shape) if p.check != "empty-gas"]
    assert problems == []  # inside the image, >= 3 points, no touching edges, known label
    for s in shapes:
        pts = np.asarray(s["points"])
        assert not polygon_self_intersects(pts)
        assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= mask.shape[1] - 1
        assert pts[:, 1].min() >= 0 and pts[:, 1].max() <= mask.shape[0] - 1


def test_pinched_blob_never_yields_touching_edges():
    m = np.zeros((30, 30), bool)
    m[5:15, 5:15] = True
    m[15:25, 15:25] = True  # touches the first square at one corner pixel
    m[14, 14] = m[15, 15] = True
    shapes = mask_to_shapes(m)
    assert shapes and all(not polygon_self_intersects(s["points"]) for s in shapes)
    assert _iou(_raster(shapes, m.shape), m) >= 0.85


def test_blobs_of_one_plume_share_a_group_id():
    m = np.zeros((40, 120), bool)
    m[10:30, 5:25] = True
    m[10:30, 32:50] = True  # 7 px from the first: same plume
    m[10:30, 90:110] = True  # far away: another plume
    shapes = mask_to_shapes(m, group_gap=15, first_group_id=3)
    assert [s["group_id"] for s in shapes] == [3, 3, 4]
    assert [s["group_id"] for s in mask_to_shapes(m, group_gap=0)] == [1, 2, 3]
    groups = plume_groups(m, group_gap=15)
    assert groups[20, 10] == groups[20, 40] != groups[20, 100] and groups[0, 0] == 0


def test_small_blobs_are_dropped():
    m = np.zeros((40, 40), bool)
    m[2:4, 2:4] = True  # 4 px
    m[20:30, 20:30] = True
    shapes = mask_to_shapes(m, min_area=20)
    assert len(shapes) == 1 and not _raster(shapes, m.shape)[3, 3]
    assert len(mask_to_shapes(m, min_area=0)) == 2


def test_holes_drop_background_and_mask_modes():
    m = np.zeros((60, 60), bool)
    m[5:55, 5:55] = True
    m[20:40, 20:40] = False  # a 400 px hole
    filled = _raster(mask_to_shapes(m), m.shape)
    assert filled[30, 30]  # holes="drop": filled like LabelMe's own conversion
    carved = mask_to_shapes(m, holes="background")
    assert [s["label"] for s in carved] == ["gas", "_background_"]
    assert np.array_equal(_raster(carved, m.shape), m)
    exact = mask_to_shapes(m, mode="mask")
    assert [s["shape_type"] for s in exact] == ["mask"]
    assert np.array_equal(_raster(exact, m.shape), m)


def test_mask_mode_one_shape_per_plume():
    m = np.zeros((40, 120), bool)
    m[10:30, 5:25] = True
    m[10:30, 30:50] = True
    m[10:30, 90:110] = True
    shapes = mask_to_shapes(m, mode="mask", group_gap=10)
    assert [s["group_id"] for s in shapes] == [1, 2]
    assert np.array_equal(_raster(shapes, m.shape), m)


def test_extra_keys_and_label_are_written():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    (shape,) = mask_to_shapes(m, label="__ignore__", extra={"gasdb": {"source": "bgsub"}})
    assert shape["label"] == "__ignore__" and shape["gasdb"] == {"source": "bgsub"}


@pytest.mark.parametrize("kwargs, error, message", [
    ({"mode": "brush"}, ValueError, "mode must be one of"),
    ({"holes": "keep"}, ValueError, "holes must be one of"),
    ({"epsilon_frac": -0.1}, ValueError, "epsilon_frac must be >= 0"),
    ({"min_area": "big"}, TypeError, "min_area must be a number"),
    ({"label": ""}, ValueError, "label must be"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        mask_to_shapes(np.ones((5, 5), bool), **kwargs)


@pytest.mark.parametrize("mask", [np.zeros((3, 3, 3), bool), np.zeros((0, 4), bool), np.zeros((4, 4), np.float32)])
def test_bad_masks(mask):
    with pytest.raises((ValueError, TypeError)):
        mask_to_polygons(mask)
