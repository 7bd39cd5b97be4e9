"""LabelMe reader/writer/rasteriser: LabelMe's own outputs, LabelMe's own loader, round trips, fuzzing."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import shared_data
from gasdb_tools import labelme_format as lf
from gasdb_tools.errors import FormatError
from gasdb_tools.imaging import write_image

EXAMPLES = ("labelme_examples", "instance_segmentation")


def _labelme():
    """LabelMe 6.x's package, or skip (optional test dependency; it loads Qt and onnxruntime)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    labelme = pytest.importorskip("labelme", reason="labelme is not installed (pip install labelme==6.3.1)")
    if not hasattr(labelme, "LabelFile"):
        pytest.skip("labelme >= 7 has no public LabelFile")
    return labelme


# ------------------------------------------------------------------------------------------
# conformance with LabelMe's own outputs
# ------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_rasterize_reproduces_labelme_voc_segmentation_class():
    base = shared_data(*EXAMPLES)
    class_names = (base / "data_dataset_voc" / "class_names.txt").read_text().splitlines()
    jsons = sorted((base / "data_annotated").glob("*.json"))
    assert jsons
    equal = total = 0
    for path in jsons:
        ours = lf.rasterize(lf.read(path), class_names, file=path)
        # LabelMe's VOC PNGs are palette images: the pixel values are the class indices
        from PIL import Image

        with Image.open(base / "data_dataset_voc" / "SegmentationClass" / f"{path.stem}.png") as im:
            assert im.mode == "P"
            ref = np.asarray(im)
        assert ours.shape == ref.shape
        assert set(np.unique(ours)) == set(np.unique(ref))
        equal += int((ours == ref).sum())
        total += ref.size
    # One pixel of 2011_000006 (row 290, col 104, on the edge of a 'person' polygon drawn over a
    # 'sofa') differs: LabelMe 6.3.1's own shapes_to_label under today's Pillow gives our value,
    # so the reference was made with an older Pillow whose polygon edge rule differed.
    assert equal / total >= 0.999


@pytest.mark.realdata
def test_rasterize_equals_labelme_shapes_to_label_on_examples():
    labelme = _labelme()
    from labelme.utils.shape import shapes_to_label

    base = shared_data(*EXAMPLES)
    class_names = (base / "data_dataset_voc" / "class_names.txt").read_text().splitlines()
    table = {n: i for i, n in enumerate(class_names)}
    table["__ignore__"] = -1
    for path in sorted((base / "data_annotated").glob("*.json")):
        doc = lf.read(path)
        theirs, _ = shapes_to_label((doc["imageHeight"], doc["imageWidth"]), labelme.LabelFile(str(path)).shapes, table)
        np.testing.assert_array_equal(lf.rasterize(doc, class_names), theirs.astype(np.uint8))


@pytest.mark.realdata
def test_reads_labelme_examples_and_keeps_them():
    base = shared_data(*EXAMPLES)
    for path in sorted((base / "data_annotated").glob("*.json")):
        raw = json.loads(path.read_text())
        doc = lf.read(path)
        assert doc["version"] == raw["version"]
        assert [s["points"] for s in doc["shapes"]] == [s["points"] for s in raw["shapes"]]
        assert all(s["description"] == "" and s["mask"] is None for s in doc["shapes"])
        found, _ = lf.image_file(doc, path)
        assert found.is_file()


def _random_points(rng, n, h, w):
    return [[float(x), float(y)] for x, y in zip(rng.uniform(-5, w + 5, n), rng.uniform(-5, h + 5, n))]


@pytest.mark.parametrize("shape_type,n", [("polygon", 7), ("rectangle", 2), ("circle", 2), ("line", 2),
                                          ("linestrip", 5), ("point", 1), ("oriented_rectangle", 4)])
def test_shape_to_mask_equals_labelme(shape_type, n):
    _labelme()
    from labelme.utils.shape import shape_to_mask as labelme_shape_to_mask

    rng = np.random.default_rng(hash(shape_type) % 2**32)
    h, w = 37, 53
    for _ in range(25):
        pts = _random_points(rng, n, h, w)
        shape = lf.make_shape(pts, shape_type=shape_type)
        np.testing.assert_array_equal(lf.shape_to_mask(shape, h, w), labelme_shape_to_mask((h, w), pts, shape_type))


# ------------------------------------------------------------------------------------------
# rasteriser conventions (known answers)
# ------------------------------------------------------------------------------------------
def _doc(shapes, h=50, w=80):
    return lf.new_document("a.png", h, w, shapes=shapes)


def test_rectangle_is_boundary_inclusive_and_order_free():
    for corners in ([[20, 10], [70, 40]], [[70, 40], [20, 10]], [[70, 10], [20, 40]]):
        mask = lf.rasterize(_doc([lf.make_shape(corners, shape_type="rectangle")]))
        assert int((mask == 1).sum()) == 51 * 31 == 1581
        rows, cols = np.nonzero(mask)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 40, 20, 70)


def test_line_is_10px_wide_and_point_has_radius_5():
    line = lf.rasterize(_doc([lf.make_shape([[10, 25], [60, 25]], shape_type="line")]))
    rows = np.nonzero(line[:, 30])[0].tolist()
    assert len(rows) == 10 and rows == list(range(rows[0], rows[0] + 10)) and rows[0] <= 25 <= rows[-1]
    point = lf.rasterize(_doc([lf.make_shape([[40, 25]], shape_type="point")]))
    rows, cols = np.nonzero(point)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 30, 35, 45)


def test_later_shapes_overwrite_and_ignore_is_255():
    gas = lf.make_shape([[10, 10], [60, 10], [60, 40], [10, 40]])
    hole = lf.make_shape([[20, 15], [30, 25]], label="__ignore__", shape_type="rectangle")
    bg = lf.make_shape([[40, 15], [50, 25]], label="_background_", shape_type="rectangle")
    mask = lf.rasterize(_doc([gas, hole, bg]))
    assert set(np.unique(mask).tolist()) == {0, 1, 255}
    assert (mask[15:26, 20:31] == 255).all() and (mask[15:26, 40:51] == 0).all()
    assert mask[30, 30] == 1 and mask[5, 5] == 0
    # the other order: gas drawn last wins everywhere inside it
    assert set(np.unique(lf.rasterize(_doc([hole, bg, gas]))[10:41, 10:61]).tolist()) == {1}


def test_unknown_label_raises_with_field():
    doc = _doc([lf.make_shape([[1, 1], [5, 1], [5, 5]]), lf.make_shape([[1, 1], [5, 1], [5, 5]], label="smoke")])
    with pytest.raises(FormatError) as err:
        lf.rasterize(doc, file="x.json")
    assert err.value.field == "shapes[1].label" and "smoke" in err.value.message and err.value.fix


def test_class_index_numbering_matches_labelme_converters():
    assert lf.class_index(["__ignore__", "_background_", "gas"]) == {"__ignore__": 255, "_background_": 0, "gas": 1}
    assert lf.class_index(["_background_", "gas"])["gas"] == 1
    with pytest.raises(ValueError, match="first"):
        lf.class_index(["gas", "_background_"])
    with pytest.raises(TypeError):
        lf.class_index("gas")


def test_rasterize_instances_groups_by_label_and_group_id():
    a = lf.make_shape([[2, 2], [10, 2], [10, 10]], group_id=1)
    b = lf.make_shape([[30, 30], [40, 30], [40, 40]], group_id=1)
    c = lf.make_shape([[50, 5], [60, 5], [60, 15]])
    d = lf.make_shape([[50, 30], [60, 30], [60, 40]])
    cls, ins, instances = lf.rasterize_instances(_doc([a, b, c, d]))
    assert instances == [("gas", 1), ("gas", None), ("gas", None)]
    assert set(np.unique(ins).tolist()) == {0, 1, 2, 3}
    assert ins[5, 8] == ins[35, 38] == 1 and ins[10, 59] == 2 and ins[35, 59] == 3
    np.testing.assert_array_equal(cls == 1, ins > 0)


# ------------------------------------------------------------------------------------------
# mask shapes
# ------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_mask_shape_round_trip(seed):
    rng = np.random.default_rng(seed)
    full = np.zeros((30, 40), bool)
    y, x = int(rng.integers(0, 30)), int(rng.integers(0, 40))
    h, w = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    region = full[y:y + h, x:x + w]
    region[...] = rng.random(region.shape) > 0.3
    full[y, x] = True
    shape = lf.make_mask_shape(full)
    (x1, y1), (x2, y2) = shape["points"]
    assert lf.decode_mask(shape["mask"]).shape == (y2 - y1 + 1, x2 - x1 + 1)  # inclusive bbox
    np.testing.assert_array_equal(lf.rasterize(lf.new_document("a.png", 30, 40, shapes=[shape])) == 1, full)


def test_mask_shape_wrong_size_and_clipping():
    crop = np.ones((3, 4), bool)
    with pytest.raises(FormatError, match="inclusive bbox"):
        lf.make_shape([[0, 0], [4, 3]], shape_type="mask", mask=crop)  # exclusive bbox: wrong
    shape = lf.make_shape([[37, 28], [40, 30]], shape_type="mask", mask=crop)  # hangs over the edge
    mask = lf.shape_to_mask(shape, 30, 39)
    assert int(mask.sum()) == 2 * 2 and mask[28:30, 37:39].all()
    with pytest.raises(FormatError, match="mask data"):
        lf.make_shape([[1, 1], [2, 2]], shape_type="mask")
    with pytest.raises(FormatError, match="base64"):
        lf.decode_mask("not base64!")


def test_labelme_reads_our_mask_shape(tmp_path):
    labelme = _labelme()
    full = np.zeros((20, 30), bool)
    full[3:9, 5:12] = True
    full[5, 7] = False
    _write_image_and_doc(tmp_path, [lf.make_mask_shape(full, group_id=3)], h=20, w=30)
    shape = labelme.LabelFile(str(tmp_path / "a.json")).shapes[0]
    np.testing.assert_array_equal(shape["mask"], full[3:9, 5:12])
    assert shape["points"] == [[5.0, 3.0], [11.0, 8.0]]


# ------------------------------------------------------------------------------------------
# reading and writing
# ------------------------------------------------------------------------------------------
def _write_image_and_doc(folder: Path, shapes, *, h=20, w=30, **extra) -> Path:
    write_image(folder / "img" / "a.png", np.full((h, w), 90, np.uint8))
    return lf.write(lf.new_document(folder / "img" / "a.png", h, w, shapes=shapes, **extra), folder / "a.json")


def test_write_is_relative_posix_null_imagedata_deterministic_atomic(tmp_path):
    path = _write_image_and_doc(tmp_path, [lf.make_shape([[1, 1], [9, 1], [5, 7]], group_id=1)],
                                gasdb={"pair_id": "p1", "review": {"status": "pre"}})
    raw = json.loads(path.read_text())
    assert raw["imagePath"] == "img/a.png" and raw["imageData"] is None
    assert list(raw)[:7] == ["version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"]
    first = path.read_bytes()
    lf.write(lf.read(path), path)
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "img"]  # no temp files left
    assert raw["gasdb"] == {"pair_id": "p1", "review": {"status": "pre"}}


def test_write_drops_image_data_unless_asked(tmp_path):
    doc = lf.new_document("a.png", 2, 2)
    doc["imageData"] = "aGVsbG8="
    assert json.loads(lf.dumps(doc))["imageData"] is None
    assert json.loads(lf.dumps(doc, with_image_data=True))["imageData"] == "aGVsbG8="


def test_windows_image_path_is_read_as_posix(tmp_path):
    doc = lf.new_document("a.png", 4, 4)
    doc["imagePath"] = "..\\frames\\rec01\\a.png"
    (tmp_path / "w.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="Windows separators"):
        assert lf.read(tmp_path / "w.json")["imagePath"] == "../frames/rec01/a.png"


def test_image_file_falls_back_to_basename(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    doc = lf.new_document("moved/elsewhere/a.png", 4, 4)
    found, tried = lf.image_file(doc, tmp_path / "a.json")
    assert found == tmp_path / "a.png" and tried == [tmp_path / "moved/elsewhere/a.png", tmp_path / "a.png"]


@pytest.mark.parametrize("mutate,field,text", [
    (lambda d: d["shapes"][0].update(points=[[1, 1], [2, 2]]), "shapes[0].points", "needs >= 3"),
    (lambda d: d["shapes"][0].update(points=[[1, 1], [2, "x"], [3, 3]]), "shapes[0].points[1]", "two numbers"),
    (lambda d: d["shapes"][0].update(points=[[1, 1], [True, 2], [3, 3]]), "shapes[0].points[1]", "two numbers"),
    (lambda d: d["shapes"][0].update(shape_type="blob"), "shapes[0].shape_type", "unknown shape_type"),
    (lambda d: d["shapes"][0].update(group_id=True), "shapes[0].group_id", "group_id"),
    (lambda d: d["shapes"][0].update(group_id=1.5), "shapes[0].group_id", "group_id"),
    (lambda d: d["shapes"][0].pop("label"), "shapes[0].label", "no label"),
    (lambda d: d["shapes"][0].update(flags={"a": 1}), "shapes[0].flags.a", "true or false"),
    (lambda d: d["shapes"][0].update(mask="abcd"), "shapes[0].mask", "only mask shapes"),
    (lambda d: d.update(imageHeight=12.0), "imageHeight", "positive integer"),
    (lambda d: d.update(imageWidth=None), "imageWidth", "positive integer"),
    (lambda d: d.update(imagePath=""), "imagePath", "non-empty"),
    (lambda d: d.update(shapes={}), "shapes", "must be a list"),
    (lambda d: d.pop("shapes"), "shapes", "no shapes"),
    (lambda d: d.update(flags=[]), "flags", "flags must be"),
    (lambda d: d.update(imageData=5), "imageData", "base64"),
])
def test_schema_problems_name_the_field(tmp_path, mutate, field, text):
    doc = json.loads(json.dumps(lf.new_document("a.png", 20, 30, shapes=[lf.make_shape([[1, 1], [9, 1], [5, 7]])])))
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError) as err:
        lf.read(path)
    assert err.value.field == field and text in err.value.message
    assert err.value.file == str(path) and err.value.fix


def test_malformed_and_missing_files(tmp_path):
    (tmp_path / "m.json").write_text('{"shapes": [')
    with pytest.raises(FormatError, match="malformed JSON") as err:
        lf.read(tmp_path / "m.json")
    assert err.value.field.startswith("line 1")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FormatError):
        lf.read(tmp_path / "b.json")
    with pytest.raises(FormatError, match="not found"):
        lf.read(tmp_path / "none.json")
    with pytest.raises(FormatError, match="folder"):
        lf.read(tmp_path)


def test_builders_reject_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        lf.make_shape([1, 2, 3])
    with pytest.raises(ValueError, match="reserved"):
        lf.new_document("a.png", 2, 2, imageData="x")
    with pytest.raises(ValueError, match="positive"):
        lf.new_document("a.png", 0, 2)
    with pytest.raises(ValueError, match="empty"):
        lf.make_mask_shape(np.zeros((3, 3), bool))


# ------------------------------------------------------------------------------------------
# properties: round trips and fuzzing
# ------------------------------------------------------------------------------------------
_COUNTS = {"polygon": (3, 8), "rectangle": (2, 2), "circle": (2, 2), "line": (2, 2), "linestrip": (2, 6),
           "point": (1, 1), "oriented_rectangle": (4, 4)}
_coord = st.floats(-50, 700, allow_nan=False, allow_infinity=False, width=64) | st.integers(-50, 700)
_extra_value = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
                            | st.floats(allow_nan=False, allow_infinity=False),
                            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                                                      max_size=3), max_leaves=6)
_extra_keys = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in lf._TOP_KEYS + lf._SHAPE_KEYS),
                              _extra_value, max_size=2)


@st.composite
def _shapes(draw):
    shape_type = draw(st.sampled_from(sorted(_COUNTS) + ["mask"]))
    extra = draw(_extra_keys)
    common = dict(label=draw(st.sampled_from(["gas", "__ignore__", "_background_"])),
                  group_id=draw(st.none() | st.integers(0, 5)), description=draw(st.text(max_size=10)),
                  flags=draw(st.dictionaries(st.text(min_size=1, max_size=5), st.booleans(), max_size=2)))
    if shape_type == "mask":
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        x, y = draw(st.integers(0, 50)), draw(st.integers(0, 50))
        crop = np.array(draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))).reshape(h, w)
        return lf.make_shape([[x, y], [x + w - 1, y + h - 1]], shape_type="mask", mask=crop, **common, **extra)
    lo, hi = _COUNTS[shape_type]
    pts = draw(st.lists(st.tuples(_coord, _coord), min_size=lo, max_size=hi))
    shape = lf.make_shape(pts, shape_type=shape_type, **common, **extra)
    shape["points"] = [[x, y] for x, y in pts]  # keep ints as ints: the file must come back unchanged
    return shape


@st.composite
def _documents(draw):
    return lf.new_document(draw(st.sampled_from(["a.png", "img/b c.png", "../enhanced/r1/p.png", "ü/ß.png"])),
                           draw(st.integers(1, 600)), draw(st.integers(1, 700)),
                           shapes=draw(st.lists(_shapes(), max_size=4)),
                           flags=draw(st.dictionaries(st.text(min_size=1, max_size=6), st.booleans(), max_size=3)),
                           **draw(_extra_keys))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(doc=_documents())
def test_round_trip_is_unchanged(tmp_path, doc):
    path = lf.write(doc, tmp_path / "doc.json")
    back = lf.read(path)
    assert back == doc
    assert lf.documents_equal(back, doc)
    first = path.read_bytes()
    lf.write(back, path)
    assert path.read_bytes() == first


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(doc=_documents())
def test_labelme_loader_opens_our_files(tmp_path, doc):
    labelme = _labelme()
    doc = dict(doc, imagePath="img.png")
    write_image(tmp_path / "img.png", np.zeros((doc["imageHeight"], doc["imageWidth"]), np.uint8))
    path = lf.write(doc, tmp_path / "doc.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = labelme.LabelFile(str(path))
    assert loaded.image_path == "img.png"
    assert [s["points"] for s in loaded.shapes] == [s["points"] for s in doc["shapes"]]
    assert [(s["label"], s["shape_type"], s["group_id"], s["description"], s["flags"]) for s in loaded.shapes] == \
        [(s["label"], s["shape_type"], s["group_id"], s["description"], s["flags"]) for s in doc["shapes"]]
    extra = {k: v for k, v in doc.items() if k not in lf._TOP_KEYS}
    assert loaded.other_data == extra
    # and what LabelMe saves, we read back as the same annotation
    shapes = [dict({k: v for k, v in s.items() if k != "other_data"}, **s["other_data"],
                   mask=None if s["mask"] is None else lf.encode_mask(s["mask"])) for s in loaded.shapes]
    loaded.save(str(tmp_path / "saved.json"), shapes=shapes, image_path=loaded.image_path,
                image_height=doc["imageHeight"], image_width=doc["imageWidth"], other_data=loaded.other_data,
                flags=loaded.flags)
    assert lf.documents_equal(lf.read(tmp_path / "saved.json"), doc)


def _json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(list(lf._TOP_KEYS + lf._SHAPE_KEYS)) | st.text(max_size=4), kids, max_size=5), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(value=_json_values())
def test_fuzzed_documents_only_raise_format_error(value):
    try:
        doc = lf.parse(value)
    except FormatError:
        return
    if doc["imageHeight"] * doc["imageWidth"] <= 10**6:
        lf.rasterize(doc, ["__ignore__", "_background_", "gas"] + sorted({s["label"] for s in doc["shapes"]}
                                                                         - {"__ignore__", "_background_", "gas"}))


@st.composite
def _mutated(draw):
    doc = json.loads(lf.dumps(draw(_documents())))
    paths = [(doc, k) for k in doc]
    for s in doc["shapes"]:
        paths += [(s, k) for k in s]
        if isinstance(s.get("points"), list):
            paths += [(s["points"], i) for i in range(len(s["points"]))]
    for _ in range(draw(st.integers(1, 3))):
        if not paths:
            break
        container, key = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete"]))
        if action == "delete" and isinstance(container, dict):
            container.pop(key, None)
        elif isinstance(container, dict) or (isinstance(container, list) and key < len(container)):
            container[key] = draw(_json_values())
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_mutated())
def test_mutated_documents_only_raise_format_error(doc):
    try:
        parsed = lf.loads(json.dumps(doc, allow_nan=True))
    except FormatError as exc:
        assert exc.message and str(exc)
        return
    labels = sorted({s["label"] for s in parsed["shapes"]} - {"__ignore__", "_background_"})
    if parsed["imageHeight"] * parsed["imageWidth"] <= 10**5:
        lf.rasterize(parsed, ["__ignore__", "_background_", *labels])
    lf.dumps(parsed)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzzed_bytes_only_raise_format_error(data):
    try:
        lf.loads(data)
    except FormatError:
        pass


def test_deeply_nested_json_is_a_format_error():
    with pytest.raises(FormatError):
        lf.loads("[" * 100000 + "]" * 100000)
