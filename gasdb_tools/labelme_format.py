"""LabelMe JSON: the one reader, the one writer and the one rasteriser of gasdb-tools.

A LabelMe document is handled as a plain ``dict`` with the schema of LabelMe 5.x-7.x
(``docs/formats.md`` §1.2)::

    {"version": "6.3.1", "flags": {}, "shapes": [...], "imagePath": "x.png", "imageData": null,
     "imageHeight": 512, "imageWidth": 640, <other keys kept>}

and each shape::

    {"label": "gas", "points": [[x, y], ...], "group_id": null, "description": "",
     "shape_type": "polygon", "flags": {}, "mask": null, <other keys kept>}

:func:`read` validates a file and returns its document (unknown keys preserved, ``\\``-separated
Windows image paths turned into POSIX ones); every problem is a :class:`~gasdb_tools.errors.FormatError`
naming the file, the JSON field (e.g. ``shapes[2].points``) and the fix. :func:`write` validates
and writes atomically and deterministically, with ``imageData`` null and a relative POSIX
``imagePath``. :func:`rasterize` turns a document into a class-index mask with LabelMe's own
conventions (PIL ``ImageDraw``: boundaries inclusive, lines 10 px wide, points of radius 5, later
shapes overwrite earlier ones), so a mask means the same thing here, in LabelMe's converters and in
every export. LabelMe itself is never imported (it loads Qt and has no public API from 7.0).

References
----------
K. Wada, *labelme: Image Polygonal Annotation with Python*, https://github.com/wkentaro/labelme
(``labelme/utils/shape.py`` ``shape_to_mask``/``shapes_to_label``, ``labelme/label_file.py``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import cv2
import numpy as np
from PIL import Image, ImageDraw

from gasdb_tools.errors import FormatError
from gasdb_tools.fsutil import atomic_write_text
from gasdb_tools.imaging import decode_image, encode_png
from gasdb_tools.resources import label_list

__all__ = [
    "LABELME_VERSION",
    "MAX_SIDE",
    "SHAPE_TYPES",
    "IGNORE_LABEL",
    "BACKGROUND_LABEL",
    "IGNORE_INDEX",
    "DEFAULT_CLASS_NAMES",
    "read",
    "loads",
    "write",
    "dumps",
    "parse",
    "document_problems",
    "new_document",
    "make_shape",
    "make_mask_shape",
    "encode_mask",
    "decode_mask",
    "shape_to_mask",
    "transform_shapes",
    "rasterize",
    "rasterize_instances",
    "class_index",
    "canonical",
    "documents_equal",
    "image_file",
]

#: Version string written into new documents (the LabelMe line whose loader we test against).
LABELME_VERSION = "6.3.1"

#: Shape types of LabelMe 5.x-7.x and the number of points each needs (``(min, max)``; max None = any).
SHAPE_TYPES: dict[str, tuple[int, int | None]] = {
    "polygon": (3, None),
    "rectangle": (2, 2),
    "circle": (2, 2),
    "line": (2, 2),
    "linestrip": (2, None),
    "point": (1, 1),
    "points": (1, None),  # 7.x only
    "mask": (2, 2),
    "oriented_rectangle": (4, 4),
}

#: The label LabelMe's converters map to "ignore" (id -1, 255 in a uint8 mask).
IGNORE_LABEL = "__ignore__"
#: The label of class 0.
BACKGROUND_LABEL = "_background_"
#: Value of ignored pixels in a uint8 class-index mask.
IGNORE_INDEX = 255
#: gasdb-tools' label list: the shipped ``labels.txt`` (``__ignore__``, ``_background_``, ``gas``).
DEFAULT_CLASS_NAMES = label_list()

#: Largest imageHeight / imageWidth accepted (PNG and LabelMe handle more, but no camera of ours does).
MAX_SIDE = 1 << 16

_TOP_KEYS = ("version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth")
_SHAPE_KEYS = ("label", "points", "group_id", "description", "shape_type", "flags", "mask")
_LINE_WIDTH = 10
_COORD_LIMIT = 1 << 24
_POINT_SIZE = 5


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def _check_flags(flags, file, field) -> Iterator[FormatError]:
    if not isinstance(flags, Mapping):
        yield FormatError(f"flags must be an object of name -> true/false, got {type(flags).__name__}",
                          file=file, field=field, fix='use {} or {"name": false}')
        return
    for key, value in flags.items():
        if not isinstance(key, str) or not isinstance(value, (bool, np.bool_)):
            yield FormatError(f"flag {key!r} must be true or false, got {value!r}", file=file,
                              field=f"{field}.{key}", fix="set the flag to true or false")


def _check_points(points, file, field) -> Iterator[FormatError]:
    if not isinstance(points, (list, tuple)):
        yield FormatError(f"points must be a list of [x, y], got {type(points).__name__}", file=file,
                          field=field, fix="write points as [[x, y], ...]")
        return
    for j, pt in enumerate(points):
        if (not isinstance(pt, (list, tuple)) or len(pt) != 2
                or not all(_is_number(v) for v in pt)):
            yield FormatError(f"point {j} must be [x, y] with two numbers, got {pt!r}", file=file,
                              field=f"{field}[{j}]", fix="write each point as [x, y] (numbers, not strings "
                                                         "or booleans)")
            return
        if not all(math.isfinite(float(v)) for v in pt):
            yield FormatError(f"point {j} is not finite: {pt!r}", file=file, field=f"{field}[{j}]",
                              fix="replace NaN/Infinity by pixel coordinates")
            return


def _shape_problems(shape, i: int, file) -> Iterator[FormatError]:
    where = f"shapes[{i}]"
    if not isinstance(shape, Mapping):
        yield FormatError(f"a shape must be an object, got {type(shape).__name__}", file=file, field=where,
                          fix="each entry of shapes is {\"label\": ..., \"points\": ..., ...}")
        return
    label = shape.get("label")
    if "label" not in shape:
        yield FormatError("shape has no label", file=file, field=f"{where}.label", fix="add a label (e.g. \"gas\")")
    elif not isinstance(label, str) or not label:
        yield FormatError(f"label must be a non-empty string, got {label!r}", file=file, field=f"{where}.label",
                          fix="set the label to a name from labels.txt")
    shape_type = shape.get("shape_type")
    if shape_type is None:
        shape_type = "polygon"  # LabelMe's default for files without shape_type
    if not isinstance(shape_type, str) or shape_type not in SHAPE_TYPES:
        yield FormatError(f"unknown shape_type {shape_type!r}", file=file, field=f"{where}.shape_type",
                          fix=f"use one of {', '.join(SHAPE_TYPES)}")
        shape_type = None
    if "points" not in shape:
        yield FormatError("shape has no points", file=file, field=f"{where}.points", fix="add the points or "
                          "delete the shape")
        points_ok = False
    else:
        problems = list(_check_points(shape["points"], file, f"{where}.points"))
        yield from problems
        points_ok = not problems
    if points_ok and shape_type is not None:
        n = len(shape["points"])
        lo, hi = SHAPE_TYPES[shape_type]
        if n < lo or (hi is not None and n > hi):
            need = f"exactly {lo}" if lo == hi else f">= {lo}"
            yield FormatError(f"{shape_type} has {n} point{'s' if n != 1 else ''} (needs {need})", file=file,
                              field=f"{where}.points", fix="delete or redraw the shape")
    group_id = shape.get("group_id")
    if group_id is not None and not _is_int(group_id):
        yield FormatError(f"group_id must be an integer or null, got {group_id!r}", file=file,
                          field=f"{where}.group_id", fix="use an integer, or null for its own instance")
    description = shape.get("description")
    if description is not None and not isinstance(description, str):
        yield FormatError(f"description must be a string, got {description!r}", file=file,
                          field=f"{where}.description", fix='use a string (or "")')
    if shape.get("flags") is not None:
        yield from _check_flags(shape["flags"], file, f"{where}.flags")
    mask = shape.get("mask")
    if shape_type == "mask":
        if not isinstance(mask, str) or not mask:
            yield FormatError("mask shape without mask data", file=file, field=f"{where}.mask",
                              fix="redraw the mask, or delete the shape")
        elif points_ok and len(shape["points"]) == 2:
            try:
                crop = decode_mask(mask)
            except FormatError as exc:
                yield FormatError(exc.message, file=file, field=f"{where}.mask", fix=exc.fix)
            else:
                (x1, y1), (x2, y2) = _int_bbox(shape["points"])
                want = (y2 - y1 + 1, x2 - x1 + 1)
                if crop.shape != want:
                    yield FormatError(f"mask is {crop.shape[0]}x{crop.shape[1]} (rows x cols) but its inclusive bbox "
                                      f"{[[x1, y1], [x2, y2]]} needs {want[0]}x{want[1]}", file=file,
                                      field=f"{where}.mask", fix="set points to the inclusive integer bbox "
                                                                 "[[x1, y1], [x2, y2]] of the mask crop")
    elif mask is not None:
        yield FormatError(f"only mask shapes carry mask data (this is a {shape_type})", file=file,
                          field=f"{where}.mask", fix="set mask to null, or shape_type to \"mask\"")


def document_problems(doc, *, file=None) -> list[FormatError]:
    """Every schema problem of a LabelMe document (empty list: the document is valid).

    Checks types and counts only; image-dependent checks (image present, size, points inside) and
    geometric checks (degenerate or self-intersecting polygons) are in :mod:`gasdb_tools.validate`.

    Parameters
    ----------
    doc : dict
        The parsed JSON document.
    file : str or os.PathLike, optional
        Named in the errors.

    Returns
    -------
    list of FormatError
        Each with ``file``, ``field`` (a JSON path such as ``shapes[2].points``) and ``fix``.
    """
    return list(_document_problems(doc, file))


def _document_problems(doc, file) -> Iterator[FormatError]:
    if not isinstance(doc, Mapping):
        yield FormatError(f"a LabelMe file holds a JSON object, got {type(doc).__name__}", file=file,
                          fix="open and re-save the annotation in LabelMe")
        return
    if "version" in doc and doc["version"] is not None and not isinstance(doc["version"], str):
        yield FormatError(f"version must be a string, got {doc['version']!r}", file=file, field="version",
                          fix='use the LabelMe version as text, e.g. "6.3.1"')
    if doc.get("flags") is not None:
        yield from _check_flags(doc["flags"], file, "flags")
    if "shapes" not in doc:
        yield FormatError("no shapes list", file=file, field="shapes", fix='add "shapes": [] (no annotation yet)')
    elif not isinstance(doc["shapes"], list):
        yield FormatError(f"shapes must be a list, got {type(doc['shapes']).__name__}", file=file, field="shapes",
                          fix="write shapes as a JSON list")
    else:
        for i, shape in enumerate(doc["shapes"]):
            yield from _shape_problems(shape, i, file)
    image_path = doc.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        yield FormatError(f"imagePath must be a non-empty string, got {image_path!r}", file=file, field="imagePath",
                          fix="set imagePath to the image file, relative to the JSON's folder")
    image_data = doc.get("imageData")
    if image_data is not None:
        if not isinstance(image_data, str):
            yield FormatError(f"imageData must be base64 text or null, got {type(image_data).__name__}", file=file,
                              field="imageData", fix="set imageData to null (the image is read from imagePath)")
        else:
            try:
                base64.b64decode(image_data, validate=True)
            except (binascii.Error, ValueError):
                yield FormatError("imageData is not valid base64", file=file, field="imageData",
                                  fix="set imageData to null (the image is read from imagePath)")
    for key in ("imageHeight", "imageWidth"):
        value = doc.get(key)
        if not _is_int(value) or value <= 0:
            yield FormatError(f"{key} must be a positive integer, got {value!r}", file=file, field=key,
                              fix="set it to the image's size in pixels (open and re-save in LabelMe)")
        elif value > MAX_SIDE:
            yield FormatError(f"{key} {value} is larger than any image we handle ({MAX_SIDE})", file=file,
                              field=key, fix="set it to the image's size in pixels (open and re-save in LabelMe)")


def parse(doc, *, file=None) -> dict:
    """Validate a parsed LabelMe document and return it in normal form (a deep copy).

    Normal form: ``flags`` {} when null, every shape with ``group_id``, ``description`` ("" when
    null), ``shape_type`` ("polygon" when absent), ``flags`` ({}) and ``mask`` (null); a
    ``\\``-separated ``imagePath`` becomes POSIX (with a warning). Unknown keys are kept.

    Raises
    ------
    FormatError
        The first problem found (see :func:`document_problems` for all of them).
    """
    problems = document_problems(doc, file=file)
    if problems:
        raise problems[0]
    out = copy.deepcopy(dict(doc))
    if out.get("flags") is None:
        out["flags"] = {}
    out.setdefault("imageData", None)
    if "\\" in out["imagePath"]:
        posix = PureWindowsPath(out["imagePath"]).as_posix()
        warnings.warn(f"{file or '<document>'}: imagePath {out['imagePath']!r} uses Windows separators; "
                      f"read as {posix!r}", stacklevel=3)
        out["imagePath"] = posix
    shapes = []
    for shape in out["shapes"]:
        s = dict(shape)
        s["points"] = [list(p) for p in s["points"]]
        s.setdefault("group_id", None)
        if s.get("description") is None:
            s["description"] = ""
        if s.get("shape_type") is None:
            s["shape_type"] = "polygon"
        if s.get("flags") is None:
            s["flags"] = {}
        s.setdefault("mask", None)
        shapes.append(s)
    out["shapes"] = shapes
    return out


def loads(text: str | bytes, *, file=None) -> dict:
    """Parse LabelMe JSON text (see :func:`read`)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"malformed JSON ({exc.msg})", file=file, field=f"line {exc.lineno} column {exc.colno}",
                          fix="repair the file or restore it from a backup") from None
    except UnicodeDecodeError:
        raise FormatError("not UTF-8 text", file=file, fix="save the file as UTF-8") from None
    except RecursionError:
        raise FormatError("JSON nested too deeply", file=file, fix="this is not a LabelMe file") from None
    return parse(doc, file=file)


def read(path) -> dict:
    """Read and validate a LabelMe JSON file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.json`` file.

    Returns
    -------
    dict
        The document in normal form (:func:`parse`); unknown keys preserved; ``imagePath`` as in the
        file (relative to the JSON's folder) with Windows separators turned into ``/``.

    Raises
    ------
    FormatError
        On a missing or unreadable file, malformed JSON or any schema problem, naming the file, the
        field (e.g. ``shapes[2].points``) and the fix.

    Examples
    --------
    The same parsing, from text (:func:`loads`):

    >>> text = dumps(new_document("a.png", 4, 6, shapes=[make_shape([[0, 0], [5, 0], [5, 3]])]))
    >>> loads(text)["shapes"][0]["label"]
    'gas'
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError("annotation file not found", file=path, fix="check the path") from None
    except IsADirectoryError:
        raise FormatError("expected a LabelMe .json file, found a folder", file=path) from None
    except OSError as exc:
        raise FormatError(f"cannot read the file ({exc.strerror})", file=path, fix="check its permissions") from None
    return loads(data, file=path)


# ------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------
def _ordered(obj: Mapping, known: Sequence[str]) -> dict:
    out = {k: obj[k] for k in known if k in obj}
    for k in sorted(k for k in obj if k not in known):
        out[k] = obj[k]
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _relative_image_path(image_path: str, json_path: Path | None) -> str:
    posix = PureWindowsPath(image_path).as_posix() if "\\" in image_path else image_path
    if json_path is not None and os.path.isabs(posix):
        posix = Path(os.path.relpath(posix, Path(json_path).resolve().parent)).as_posix()
    return posix


def _dump(value, level: int) -> str:
    """JSON with 2-space indent, but lists of scalars (e.g. one ``[x, y]`` point) on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dump(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, (dict, list)) for v in value):
            return "[" + ", ".join(_dump(v, 0) for v in value) + "]"
        return "[\n" + ",\n".join(inner + _dump(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def dumps(doc, *, path=None, with_image_data: bool = False) -> str:
    """Serialise a document deterministically (validated; see :func:`write`). Returns the JSON text."""
    doc = parse(_jsonable(doc), file=path)
    if not with_image_data:
        doc["imageData"] = None
    doc["imagePath"] = _relative_image_path(doc["imagePath"], Path(path) if path is not None else None)
    doc["shapes"] = [_ordered(s, _SHAPE_KEYS) for s in doc["shapes"]]
    doc = _ordered(doc, _TOP_KEYS)
    try:
        return _dump(doc, 0) + "\n"
    except (TypeError, ValueError) as exc:
        raise FormatError(f"document holds a value JSON cannot store ({exc})", file=path,
                          fix="keep extra keys to strings, numbers, lists and dicts") from None


def write(doc, path, *, with_image_data: bool = False) -> Path:
    """Validate and write a LabelMe document, atomically and deterministically.

    Keys come in LabelMe's order, then unknown keys sorted; 2-space indent; UTF-8. ``imageData``
    is written as null unless ``with_image_data`` is true; an absolute ``imagePath`` is made
    relative to the JSON's folder, and separators are POSIX.

    Parameters
    ----------
    doc : dict
        A LabelMe document (e.g. from :func:`new_document` or :func:`read`). Not modified.
    path : str or os.PathLike
        Target ``.json`` file; its folder is created.
    with_image_data : bool
        Keep the document's embedded ``imageData`` (off by default: it bloats files ~30x).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FormatError
        When the document is invalid (nothing is written).
    """
    path = Path(path)
    return atomic_write_text(path, dumps(doc, path=path, with_image_data=with_image_data))


# ------------------------------------------------------------------------------------------
# building documents
# ------------------------------------------------------------------------------------------
def new_document(image_path, height: int, width: int, *, shapes: Iterable[Mapping] = (),
                 flags: Mapping | None = None, **extra) -> dict:
    """A new LabelMe document for an image of ``height`` x ``width`` pixels.

    Parameters
    ----------
    image_path : str or os.PathLike
        The image, relative to the JSON's folder (an absolute path is made relative by :func:`write`).
    height, width : int
        Image size in pixels.
    shapes : iterable of dict
        Shapes from :func:`make_shape` / :func:`make_mask_shape`.
    flags : dict, optional
        Image-level flags (e.g. ``{"no_leak": False}``).
    **extra
        Extra top-level keys, e.g. ``gasdb={"pair_id": ...}`` (kept on LabelMe round trips).

    Examples
    --------
    >>> doc = new_document("img/a.png", 512, 640, flags={"no_leak": False})
    >>> doc["imageHeight"], doc["imageWidth"], doc["imageData"], doc["shapes"]
    (512, 640, None, [])
    """
    if not _is_int(height) or height <= 0 or not _is_int(width) or width <= 0:
        raise ValueError(f"height and width must be positive integers, got {height!r} x {width!r}")
    reserved = set(_TOP_KEYS) & set(extra)
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved LabelMe keys; use the named arguments")
    image_path = os.fspath(image_path)
    doc = {
        "version": LABELME_VERSION,
        "flags": dict(flags or {}),
        "shapes": [dict(s) for s in shapes],
        "imagePath": PureWindowsPath(image_path).as_posix() if "\\" in image_path else image_path,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }
    doc.update(_jsonable(extra))
    return parse(doc)


def make_shape(points, *, label: str = "gas", shape_type: str = "polygon", group_id: int | None = None,
               description: str = "", flags: Mapping | None = None, mask=None, **extra) -> dict:
    """One LabelMe shape.

    Parameters
    ----------
    points : array_like, shape (N, 2)
        ``(x, y)`` pixel coordinates (origin top-left); for a ``mask`` shape the inclusive integer
        bbox ``[[x1, y1], [x2, y2]]``.
    label, shape_type, group_id, description, flags
        As in LabelMe; ``shape_type`` one of :data:`SHAPE_TYPES`.
    mask : ndarray of bool, shape (y2-y1+1, x2-x1+1), or str, optional
        The crop of a ``mask`` shape (encoded with :func:`encode_mask`), or its base64 PNG.
    **extra
        Extra shape keys, e.g. ``gasdb={"source": "bgsub", "score": 0.83}``.

    Raises
    ------
    FormatError
        When the shape breaks the schema (point count, mask size, ...).

    Examples
    --------
    >>> make_shape([[1, 2], [3, 2], [3, 5]], group_id=1)["points"]
    [[1.0, 2.0], [3.0, 2.0], [3.0, 5.0]]
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    if mask is not None and not isinstance(mask, str):
        mask = encode_mask(mask)
    if shape_type == "mask":
        pts = np.round(pts)
    reserved = set(_SHAPE_KEYS) & set(extra)
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved LabelMe keys; use the named arguments")
    shape = {
        "label": label,
        "points": [[float(x), float(y)] for x, y in pts],
        "group_id": None if group_id is None else int(group_id) if _is_int(group_id) else group_id,
        "description": description,
        "shape_type": shape_type,
        "flags": dict(flags or {}),
        "mask": mask,
    }
    shape.update(_jsonable(extra))
    problems = list(_shape_problems(shape, 0, None))
    if problems:
        raise problems[0]
    return shape


def make_mask_shape(mask, *, label: str = "gas", group_id: int | None = None, description: str = "",
                    flags: Mapping | None = None, **extra) -> dict:
    """A ``mask`` shape from a full-frame boolean mask (cropped to its inclusive bbox).

    Raises ``ValueError`` when the mask is empty (there is nothing to crop).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    mask = mask.astype(bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask is empty; there is no shape to make (skip it)")
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return make_shape([[x1, y1], [x2, y2]], label=label, shape_type="mask", group_id=group_id,
                      description=description, flags=flags, mask=mask[y1:y2 + 1, x1:x2 + 1], **extra)


def encode_mask(mask) -> str:
    """Base64 PNG (uint8 0/1) of a mask crop, as LabelMe stores it in ``shape["mask"]``.

    >>> decode_mask(encode_mask(np.eye(3, dtype=bool))).astype(int).tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    return base64.b64encode(encode_png(mask.astype(bool).astype(np.uint8))).decode("ascii")


def decode_mask(data: str) -> np.ndarray:
    """Decode a LabelMe ``mask`` string to a 2-D boolean array (the crop; nonzero = inside).

    Raises
    ------
    FormatError
        When the string is not base64 of a decodable image.
    """
    if not isinstance(data, str):
        raise FormatError(f"mask must be base64 text, got {type(data).__name__}", fix="redraw the mask")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError("mask is not valid base64", fix="redraw the mask") from None
    try:
        image = decode_image(raw)
    except FormatError:
        raise FormatError("mask is not a decodable PNG", fix="redraw the mask") from None
    if image.ndim == 3:
        image = image[:, :, :3].max(axis=2) if image.shape[2] >= 3 else image[:, :, 0]
    return image > 0


# ------------------------------------------------------------------------------------------
# rasterising
# ------------------------------------------------------------------------------------------
def _int_bbox(points) -> tuple[tuple[int, int], tuple[int, int]]:
    (x1, y1), (x2, y2) = np.asarray(points, dtype=np.float64).astype(int)
    return (int(x1), int(y1)), (int(x2), int(y2))


def shape_to_mask(shape: Mapping, height: int, width: int, *, line_width: int = _LINE_WIDTH,
                  point_size: int = _POINT_SIZE) -> np.ndarray:
    """Rasterise one shape to a boolean (H, W) mask with LabelMe's conventions.

    PIL ``ImageDraw``: polygons, rectangles (corners in any order), circles and points are filled
    with their outline included; lines and linestrips are ``line_width`` px wide; points are discs
    of radius ``point_size``; a ``mask`` shape is pasted at rows ``y1..y2`` and columns ``x1..x2`` of
    its integer bbox (clipped at the image edge); an ``oriented_rectangle`` is its 4-point polygon.
    Anything outside the image is clipped.
    """
    shape_type = shape.get("shape_type") or "polygon"
    points = shape["points"]
    if shape_type == "mask":
        out = np.zeros((height, width), dtype=bool)
        crop = decode_mask(shape["mask"])
        (x1, y1), _ = _int_bbox(points)
        h, w = crop.shape
        ys, xs = max(y1, 0), max(x1, 0)
        ye, xe = min(y1 + h, height), min(x1 + w, width)
        if ye > ys and xe > xs:
            out[ys:ye, xs:xe] = crop[ys - y1:ye - y1, xs - x1:xe - x1]
        return out
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    lim = float(_COORD_LIMIT)  # PIL takes C ints; far-off points are clipped (only far outside the image)
    xy = [(min(max(float(x), -lim), lim), min(max(float(y), -lim), lim)) for x, y in points]
    if shape_type == "circle":
        (cx, cy), (px, py) = xy[:2]
        d = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif shape_type == "rectangle":
        (xa, ya), (xb, yb) = xy[:2]
        draw.rectangle([min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)], outline=1, fill=1)
    elif shape_type in ("line", "linestrip"):
        draw.line(xy=xy, fill=1, width=line_width)
    elif shape_type in ("point", "points"):
        for cx, cy in xy:
            draw.ellipse([cx - point_size, cy - point_size, cx + point_size, cy + point_size], outline=1, fill=1)
    elif shape_type in ("polygon", "oriented_rectangle"):
        draw.polygon(xy=xy, outline=1, fill=1)
    else:
        raise FormatError(f"unknown shape_type {shape_type!r}", field="shape_type",
                          fix=f"use one of {', '.join(SHAPE_TYPES)}")
    return np.asarray(image, dtype=np.uint8).astype(bool)


def _map_points(points, matrix: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    q = np.hstack([p, np.ones((len(p), 1))]) @ matrix.T
    return q[:, :2] / q[:, 2:3]


def transform_shapes(shapes: Sequence[Mapping], matrix, *, size: tuple[int, int]) -> list[dict]:
    """Shapes mapped through a 3x3 pixel transform into an image of ``size`` (width, height).

    Every vertex of polygons, lines, linestrips and points goes through ``matrix`` exactly. A
    rectangle stays a rectangle when the transform is a scale plus a translation, else it becomes
    the polygon of its four mapped corners; a circle keeps its mapped centre and the mean distance
    of its mapped rim points; a ``mask`` shape is resampled (nearest) and cropped to its new box.
    Everything else about a shape (label, group, description, flags, extra keys) is kept.

    >>> sq = [make_shape([[0, 0], [4, 0], [4, 4]])]
    >>> transform_shapes(sq, [[2, 0, 1], [0, 2, 0], [0, 0, 1]], size=(20, 20))[0]["points"]
    [[1.0, 0.0], [9.0, 0.0], [9.0, 8.0]]
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m)) < 1e-12:
        raise ValueError(f"matrix must be an invertible 3x3 transform, got {m.tolist()!r}")
    m = m / m[2, 2]
    width, height = (int(v) for v in size)
    axis_aligned = abs(m[0, 1]) < 1e-12 and abs(m[1, 0]) < 1e-12 and abs(m[2, 0]) < 1e-12 and abs(m[2, 1]) < 1e-12
    out = []
    for shape in shapes:
        shape = copy.deepcopy(dict(shape))
        kind = shape.get("shape_type") or "polygon"
        pts = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
        if kind == "mask":
            (x1, y1), _ = _int_bbox(pts)
            crop = decode_mask(shape["mask"])
            src_h, src_w = max(y1 + crop.shape[0], 1), max(x1 + crop.shape[1], 1)
            full = np.zeros((src_h, src_w), np.uint8)
            ys, xs = max(y1, 0), max(x1, 0)
            full[ys:y1 + crop.shape[0], xs:x1 + crop.shape[1]] = crop[ys - y1:, xs - x1:]
            warped = cv2.warpPerspective(full, m, (width, height), flags=cv2.INTER_NEAREST) > 0
            if not warped.any():
                continue
            rows, cols = np.flatnonzero(warped.any(axis=1)), np.flatnonzero(warped.any(axis=0))
            ya, yb, xa, xb = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            shape["points"] = [[float(xa), float(ya)], [float(xb), float(yb)]]
            shape["mask"] = encode_mask(warped[ya:yb + 1, xa:xb + 1])
        elif kind == "rectangle" and not axis_aligned:
            (xa, ya), (xb, yb) = pts[:2]
            corners = _map_points([[xa, ya], [xb, ya], [xb, yb], [xa, yb]], m)
            shape["shape_type"] = "polygon"
            shape["points"] = corners.tolist()
        elif kind == "circle":
            (cx, cy), (px, py) = pts[:2]
            r = math.hypot(px - cx, py - cy)
            rim = _map_points([[cx + r, cy], [cx - r, cy], [cx, cy + r], [cx, cy - r]], m)
            centre = _map_points([[cx, cy]], m)[0]
            radius = float(np.mean(np.hypot(rim[:, 0] - centre[0], rim[:, 1] - centre[1])))
            shape["points"] = [centre.tolist(), [float(centre[0] + radius), float(centre[1])]]
        else:
            shape["points"] = _map_points(pts, m).tolist()
        out.append(shape)
    return out


def class_index(class_names: Sequence[str]) -> dict[str, int]:
    """Map label -> uint8 value for a class list, as LabelMe's converters number ``labels.txt``.

    ``__ignore__`` maps to 255 wherever it appears (LabelMe's id -1); the other names are numbered
    0, 1, ... in order, so ``_background_`` should come first. Both a ``labels.txt`` list
    (``__ignore__``, ``_background_``, ...) and a ``class_names.txt`` list (``_background_``, ...)
    give the same numbers.

    >>> class_index(["__ignore__", "_background_", "gas"])
    {'__ignore__': 255, '_background_': 0, 'gas': 1}
    """
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a list of label names, got {type(class_names).__name__}")
    names = [n for n in class_names if n != IGNORE_LABEL]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {list(class_names)}")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"at most {IGNORE_INDEX} classes fit a uint8 mask with 255 = ignore, got {len(names)}")
    if names and BACKGROUND_LABEL in names and names[0] != BACKGROUND_LABEL:
        raise ValueError(f"{BACKGROUND_LABEL!r} must be the first class (value 0), got {list(class_names)}")
    table = {IGNORE_LABEL: IGNORE_INDEX}
    table.update({name: i for i, name in enumerate(names)})
    return table


def rasterize(doc: Mapping, class_names: Sequence[str] = DEFAULT_CLASS_NAMES, *, file=None,
              line_width: int = _LINE_WIDTH, point_size: int = _POINT_SIZE) -> np.ndarray:
    """The one rasteriser: a LabelMe document -> uint8 class-index mask (H, W).

    Shapes are drawn in file order with :func:`shape_to_mask`, each overwriting what earlier shapes
    drew (LabelMe's ``shapes_to_label``). Pixels no shape covers are 0 (``_background_``);
    ``__ignore__`` shapes give 255.

    Parameters
    ----------
    doc : dict
        A LabelMe document (validated here; from :func:`read` or :func:`new_document`).
    class_names : sequence of str
        Label names; see :func:`class_index` for the numbering. Default ``__ignore__``,
        ``_background_``, ``gas`` (gas = 1).
    file : str or os.PathLike, optional
        Named in errors.

    Returns
    -------
    ndarray of uint8, shape (imageHeight, imageWidth)

    Raises
    ------
    FormatError
        When the document is invalid or a label is not in ``class_names``.

    Examples
    --------
    >>> doc = new_document("a.png", 50, 80, shapes=[make_shape([[20, 10], [70, 40]], shape_type="rectangle")])
    >>> int((rasterize(doc) == 1).sum())  # boundary inclusive: 51 x 31, not 50 x 30 as in COCO
    1581
    """
    return rasterize_instances(doc, class_names, file=file, line_width=line_width, point_size=point_size)[0]


def rasterize_instances(doc: Mapping, class_names: Sequence[str] = DEFAULT_CLASS_NAMES, *, file=None,
                        line_width: int = _LINE_WIDTH, point_size: int = _POINT_SIZE
                        ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int | None]]]:
    """Class and instance masks in one pass (LabelMe's ``shapes_to_label``).

    An instance is a ``(label, group_id)`` pair; a shape with ``group_id`` null is its own
    instance. Later shapes overwrite earlier ones in both masks, so instance pixels are disjoint
    and agree with the class mask.

    Returns
    -------
    cls : ndarray of uint8, shape (H, W)
        As :func:`rasterize`.
    ins : ndarray of int32, shape (H, W)
        0 where no shape is, else ``k + 1`` for ``instances[k]``.
    instances : list of (label, group_id)
        In order of first appearance; ``group_id`` None for ungrouped shapes (each its own entry).
    """
    doc = parse(doc, file=file)
    table = class_index(class_names)
    height, width = doc["imageHeight"], doc["imageWidth"]
    cls = np.zeros((height, width), dtype=np.uint8)
    ins = np.zeros((height, width), dtype=np.int32)
    instances: list[tuple[str, int | None]] = []
    keys: dict[tuple, int] = {}
    for i, shape in enumerate(doc["shapes"]):
        label = shape["label"]
        if label not in table:
            raise FormatError(f"label {label!r} is not in the label list {list(class_names)}", file=file,
                              field=f"shapes[{i}].label", fix="fix the label, or add it to labels.txt")
        key = (label, shape["group_id"]) if shape["group_id"] is not None else (label, None, i)
        if key not in keys:
            keys[key] = len(instances) + 1
            instances.append((label, shape["group_id"]))
        mask = shape_to_mask(shape, height, width, line_width=line_width, point_size=point_size)
        cls[mask] = table[label]
        ins[mask] = keys[key]
    return cls, ins, instances


# ------------------------------------------------------------------------------------------
# comparing and locating
# ------------------------------------------------------------------------------------------
def canonical(doc: Mapping) -> dict:
    """Canonical form for comparisons: normal form (:func:`parse`), points as floats, ``imageData`` dropped."""
    out = parse(_jsonable(doc))
    out["imageData"] = None
    for s in out["shapes"]:
        s["points"] = [[float(x), float(y)] for x, y in s["points"]]
    return out


def documents_equal(a: Mapping, b: Mapping) -> bool:
    """True when two documents mean the same annotation (equal :func:`canonical` forms)."""
    return canonical(a) == canonical(b)


def image_file(doc: Mapping, json_path) -> tuple[Path, list[Path]]:
    """Locate the image of a document read from ``json_path``.

    Tries ``imagePath`` relative to the JSON's folder, then the basename next to the JSON (moved
    datasets). Returns ``(found, tried)``; ``found`` is the first candidate that exists, or the
    first candidate when none exists (``tried`` lists them all, for the error message).
    """
    folder = Path(json_path).parent
    raw = str(doc.get("imagePath") or "")
    posix = PureWindowsPath(raw).as_posix() if "\\" in raw else raw
    candidates = [folder / posix]
    name = PurePosixPath(posix).name
    if name and folder / name != candidates[0]:
        candidates.append(folder / name)
    for c in candidates:
        if c.is_file():
            return c, candidates
    return candidates[0], candidates
