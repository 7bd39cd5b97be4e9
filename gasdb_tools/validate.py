"""Quality checks of a workspace's pairs and LabelMe annotations (``gasdb validate``).

Every check returns :class:`Problem` records (file, field, message, fix) instead of stopping at
the first one, so a user sees the whole list at once (``docs/formats.md`` §8: pass 1 checks every
input). The checks:

========================  ======================================================================
check                     what is wrong
========================  ======================================================================
``modality``              a pair's RGB or thermal frame is not recorded or not on disk
``label-file``            pairs.csv names a LabelMe file that does not exist; or a file under
                          ``labels/`` that no pair names (orphan)
``json``                  malformed JSON
``schema``                the document breaks the LabelMe schema (see :mod:`labelme_format`)
``image``                 ``imagePath`` does not resolve (the basename fallback is tried and
                          named), or the image is 16-bit (LabelMe 6.3 cannot open it)
``size``                  ``imageHeight``/``imageWidth`` differ from the image or the aligned frame
``points``                a point lies outside the image (LabelMe keeps points in [0, W-1] x [0, H-1])
``degenerate``            a shape with no area (collinear polygon, zero-size rectangle, empty mask ...)
``self-intersection``     a polygon whose edges cross (its fill then depends on the rasteriser)
``label``                 a label not in the label list (``--labels``; default: the shipped ``labels.txt``)
``empty-gas``             no gas pixel on a frame marked as gas (see :func:`marked_as_gas`)
``stale``                 outputs made from inputs that changed since (a recalibration, new
                          frames), and documents to re-review after a re-projection
``mismatch``              a file whose bytes differ from what the stage that wrote it recorded
========================  ======================================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gasdb_tools import labelme_format
from gasdb_tools.errors import FormatError
from gasdb_tools.imaging import read_image
from gasdb_tools.polygons import polygon_self_intersects
from gasdb_tools.progress import progress

__all__ = [
    "CHECKS",
    "Problem",
    "marked_as_gas",
    "polygon_area",
    "validate_document",
    "validate_label_file",
    "validate_workspace",
]

CHECKS = ("modality", "label-file", "json", "schema", "image", "size", "points", "degenerate",
          "self-intersection", "label", "empty-gas", "stale", "mismatch")

#: Image-level flags that mark a frame as showing gas, and the one that marks it as gas-free.
GAS_FLAGS = ("gas", "leak", "has_gas")
NO_GAS_FLAG = "no_leak"
#: Recording tags (recordings.csv ``tags``, ``;``/``,``/space separated) that mark a recording as a leak.
GAS_TAGS = ("leak", "gas", "positive")
_TRUE = ("1", "true", "yes", "y")


@dataclass(frozen=True)
class Problem:
    """One problem found by a check: where (file, field), what (message) and how to fix it."""

    check: str
    message: str
    file: str | None = None
    field: str | None = None
    fix: str | None = None
    pair_id: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (for ``gasdb validate --json``)."""
        return asdict(self)

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        text = f"{where}: {self.message}" if where else self.message
        return text + (f" -> {self.fix}" if self.fix else "")

    @classmethod
    def from_error(cls, check: str, error: FormatError, *, pair_id: str | None = None) -> "Problem":
        return cls(check=check, message=error.message, file=error.file, field=error.field, fix=error.fix,
                   pair_id=pair_id)


# ------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------
def polygon_area(points) -> float:
    """Absolute area of a closed polygon (shoelace formula), in px²."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


# ------------------------------------------------------------------------------------------
# one document
# ------------------------------------------------------------------------------------------
def marked_as_gas(doc: Mapping, recording: Mapping | None = None) -> bool:
    """Whether a frame is marked as showing gas (so an empty annotation is a mistake).

    A frame is marked when its image flags set ``gas``, ``leak`` or ``has_gas``; or when its
    recording is marked as a leak (a true ``has_gas``/``positive`` column, or a ``leak``/``gas``/
    ``positive`` tag in recordings.csv) - unless the annotator ticked the ``no_leak`` flag.
    """
    flags = doc.get("flags") or {}
    if flags.get(NO_GAS_FLAG) is True:
        return False
    if any(flags.get(f) is True for f in GAS_FLAGS):
        return True
    if recording:
        if any(str(recording.get(c, "")).strip().lower() in _TRUE for c in ("has_gas", "positive")):
            return True
        tags = str(recording.get("tags", "") or "").replace(";", " ").replace(",", " ").lower().split()
        return any(t in GAS_TAGS for t in tags)
    return False


def _shape_problems(shape: Mapping, i: int, height: int, width: int, file) -> list[Problem]:
    out = []
    where = f"shapes[{i}]"
    st = shape["shape_type"]
    pts = np.asarray(shape["points"], dtype=np.float64)
    eps = 1e-6
    outside = (pts[:, 0] < -eps) | (pts[:, 0] > width - 1 + eps) | (pts[:, 1] < -eps) | (pts[:, 1] > height - 1 + eps)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        out.append(Problem("points", f"{int(outside.sum())} point(s) outside the {width}x{height} image, first "
                           f"{pts[k].tolist()}", file=file, field=f"{where}.points[{k}]",
                           fix=f"move the points inside [0, {width - 1}] x [0, {height - 1}] (LabelMe keeps them "
                               "there)"))
    degenerate = None
    if st in ("polygon", "oriented_rectangle"):
        distinct = len(np.unique(pts, axis=0))
        centred = pts - pts.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False) if distinct >= 3 else np.zeros(2)
        if distinct < 3:
            degenerate = f"{st} has only {distinct} distinct point(s)"
        elif sv[1] <= 1e-9 * max(1.0, sv[0]):
            degenerate = f"{st} encloses no area (its points are collinear)"
        elif polygon_self_intersects(pts):
            out.append(Problem("self-intersection", f"{st} edges cross each other", file=file,
                               field=f"{where}.points", fix="redraw the outline without crossing edges (split it "
                                                            "into two shapes with the same group_id)"))
        elif polygon_area(pts) < 0.5:
            degenerate = f"{st} encloses almost no area ({polygon_area(pts):.2g} px²)"
    elif st == "rectangle":
        if pts[0, 0] == pts[1, 0] or pts[0, 1] == pts[1, 1]:
            degenerate = "rectangle has zero width or height"
    elif st == "circle":
        if np.all(pts[0] == pts[1]):
            degenerate = "circle has zero radius"
    elif st in ("line", "linestrip"):
        if len(np.unique(pts, axis=0)) < 2:
            degenerate = f"{st} has zero length"
    elif st == "mask":
        if not labelme_format.decode_mask(shape["mask"]).any():
            degenerate = "mask shape has no pixel set"
    if degenerate:
        out.append(Problem("degenerate", degenerate, file=file, field=f"{where}.points",
                           fix="delete or redraw the shape"))
    return out


def validate_document(doc: Mapping, *, file=None, class_names: Sequence[str] = labelme_format.DEFAULT_CLASS_NAMES,
                      frame_size: tuple[int, int] | None = None, recording: Mapping | None = None,
                      check_empty_gas: bool = True, gas_label: str = "gas") -> list[Problem]:
    """Check one parsed LabelMe document (no file access).

    Parameters
    ----------
    doc : dict
        The parsed JSON (not yet validated).
    file : path, optional
        Named in the problems.
    class_names : sequence of str
        The label list.
    frame_size : (height, width), optional
        The size the annotation must have (the aligned RGB frame).
    recording : dict, optional
        The recording row, for :func:`marked_as_gas`.
    check_empty_gas : bool
        Report an empty annotation on a frame marked as gas.
    """
    file = str(file) if file is not None else None
    schema = labelme_format.document_problems(doc, file=file)
    if schema:
        return [Problem.from_error("schema", e) for e in schema]
    doc = labelme_format.parse(doc, file=file)
    h, w = doc["imageHeight"], doc["imageWidth"]
    out: list[Problem] = []
    if frame_size is not None and tuple(frame_size) != (h, w):
        out.append(Problem("size", f"annotation is {w}x{h} but the aligned frame is {frame_size[1]}x{frame_size[0]} "
                           "(width x height)", file=file, field="imageHeight",
                           fix="annotate the aligned frame (rerun gasdb preannotate on this pair)"))
    table = labelme_format.class_index(class_names)
    labels_ok = True
    for i, shape in enumerate(doc["shapes"]):
        if shape["label"] not in table:
            labels_ok = False
            out.append(Problem("label", f"label {shape['label']!r} is not in the label list", file=file,
                               field=f"shapes[{i}].label",
                               fix=f"use one of {list(class_names)} (__ignore__: pixels that are not scored)"))
        out.extend(_shape_problems(shape, i, h, w, file))
    if check_empty_gas and labels_ok and gas_label in table and marked_as_gas(doc, recording):
        cls = labelme_format.rasterize(doc, class_names, file=file)
        if not (cls == table[gas_label]).any():
            out.append(Problem("empty-gas", "no gas annotated on a frame marked as gas", file=file, field="shapes",
                               fix="draw the gas, tick the no_leak flag if the frame shows none, or blacklist the "
                                   "frame with a reason (gasdb blacklist)"))
    return out


def _image_problems(doc: Mapping, json_path: Path) -> list[Problem]:
    out = []
    file = str(json_path)
    found, tried = labelme_format.image_file(doc, json_path)
    if not found.is_file():
        out.append(Problem("image", f"image not found: imagePath {doc['imagePath']!r} resolves to {tried[0]}"
                           + (f"; also tried {', '.join(map(str, tried[1:]))}" if len(tried) > 1 else ""),
                           file=file, field="imagePath", fix="fix imagePath (relative to the JSON's folder) or "
                                                             "restore the image"))
        return out
    if found != tried[0]:
        out.append(Problem("image", f"imagePath {doc['imagePath']!r} does not resolve ({tried[0]}); the image was "
                           f"found by name at {found}", file=file, field="imagePath",
                           fix=f"set imagePath to {found.name!r} so LabelMe can open the file"))
    try:
        image = read_image(found)
    except FormatError as exc:
        out.append(Problem("image", exc.message, file=str(found), fix=exc.fix))
        return out
    ih, iw = image.shape[:2]
    if (ih, iw) != (doc["imageHeight"], doc["imageWidth"]):
        out.append(Problem("size", f"imageHeight x imageWidth is {doc['imageHeight']}x{doc['imageWidth']} but the "
                           "image "
                           f"is {ih}x{iw}", file=file, field="imageHeight",
                           fix="re-open and save in LabelMe, or point imagePath at the right image"))
    if image.dtype != np.uint8:
        out.append(Problem("image", f"the image is {image.dtype.itemsize * 8}-bit; LabelMe 6.3 cannot open 16-bit PNGs",
                           file=file, field="imagePath",
                           fix="point imagePath at the 8-bit enhanced frame (enhanced/<rec>/<pair>.png)"))
    return out


def validate_label_file(path, *, class_names: Sequence[str] = labelme_format.DEFAULT_CLASS_NAMES,
                        frame_size: tuple[int, int] | None = None, recording: Mapping | None = None,
                        check_image: bool = True, check_empty_gas: bool = True) -> list[Problem]:
    """Check one LabelMe file: JSON, schema, image, size, shapes, labels, empty gas."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return [Problem("label-file", "annotation file not found", file=str(path), fix="rerun gasdb preannotate, or "
                        "clear the pair's label column")]
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        where = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else None
        return [Problem("json", f"malformed JSON ({getattr(exc, 'msg', type(exc).__name__)})", file=str(path),
                        field=where, fix="repair the file or restore it from a backup")]
    out = validate_document(doc, file=path, class_names=class_names, frame_size=frame_size, recording=recording,
                            check_empty_gas=check_empty_gas)
    if check_image and not any(p.check == "schema" for p in out):
        out.extend(_image_problems(labelme_format.parse(doc, file=path), path))
    return out


# ------------------------------------------------------------------------------------------
# a workspace
# ------------------------------------------------------------------------------------------
def validate_workspace(ws, *, class_names: Sequence[str] = labelme_format.DEFAULT_CLASS_NAMES,
                       pairs: Sequence[str] | None = None, check_image: bool = True,
                       check_digests: bool = True) -> list[Problem]:
    """Check every pair of a workspace (or ``pairs``), its annotation and its artifacts' provenance.

    Besides the document checks (see the module docstring): ``stale`` -- outputs whose inputs
    changed since they were made (:mod:`gasdb_tools.status`), one problem per recording and stage
    with the command that redoes them, and documents to re-review after a re-projection;
    ``mismatch`` -- with ``check_digests``, files whose bytes differ from the digest the stage
    recorded (changed outside gasdb).

    Returns
    -------
    list of Problem
        Sorted by pair id, then check order; empty when everything is fine. Excluded pairs
        are checked too, except for ``empty-gas`` (an excluded frame may rightly show no gas).
    """
    from gasdb_tools import review
    from gasdb_tools.status import workspace_status
    from gasdb_tools.workspace import is_thermal_only

    index = ws.read_index()
    states = review.read_states(ws, index)
    black = review.exclusions(ws, index, states)
    ids = sorted(index.pairs) if pairs is None else list(pairs)
    out: list[Problem] = []
    pairs_csv = str(ws.root / ws.PAIRS)
    referenced = set()
    for pid in progress(ids, desc="validate", unit="pair"):
        row = index.pairs.get(pid)
        if row is None:
            out.append(Problem("modality", f"no pair {pid!r} in the workspace", file=pairs_csv, pair_id=pid,
                               fix="check the id"))
            continue
        rec = index.recordings.get(row.get("recording", ""), {})
        columns = ("thermal",) if is_thermal_only(rec) else ("rgb", "thermal")
        for col in columns:
            rel = row.get(col) or ""
            if not rel:
                out.append(Problem("modality", f"pair has no {col} frame", file=pairs_csv, field=f"{pid}.{col}",
                                   pair_id=pid, fix="rerun `gasdb extract` for its recording"))
            elif not ws.path(rel).is_file():
                out.append(Problem("modality", f"{col} frame missing on disk", file=str(ws.path(rel)),
                                   field=f"{pid}.{col}", pair_id=pid, fix="rerun `gasdb extract --force` for its "
                                                                          "recording"))
        if check_digests:
            out.extend(_digest_problems(ws, row, columns))
        state = states.get(pid)
        frame_size = _frame_size(ws, row, state)
        if state is None:
            if row.get("label"):
                out.append(Problem("label-file", "annotation file not found", file=str(ws.path(row["label"])),
                                   pair_id=pid, fix="rerun `gasdb preannotate`, or clear the pair's label column"))
            continue
        label = review.label_path(ws, row)
        referenced.add(label.resolve())
        problems = validate_label_file(label, class_names=class_names, frame_size=frame_size,
                                       recording=rec, check_image=check_image, check_empty_gas=pid not in black)
        out.extend(Problem(**{**p.to_dict(), "pair_id": pid}) for p in problems)
        if state.recheck:
            out.append(Problem("stale", f"re-projected into a new geometry: {state.recheck}", file=str(label),
                               field="gasdb.review.recheck", pair_id=pid,
                               fix=f"check the shapes, then approve: gasdb review {ws.root} --approve {pid}"))
    if pairs is None:
        out.extend(_stale_problems(ws, workspace_status(ws)))
    if pairs is None and (ws.root / "labels").is_dir():
        for path in sorted((ws.root / "labels").rglob("*.json")):
            if ".history" in path.parts:
                continue
            if path.resolve() not in referenced:
                out.append(Problem("label-file", "annotation file that no pair refers to", file=str(path),
                                   fix="delete it, or re-extract the pair it belonged to"))
    return out


def _frame_size(ws, row: Mapping, state) -> tuple[int, int] | None:
    """(H, W) of the frame a pair's document should be drawn in."""
    frame = None
    if state is not None and state.exists and not state.error:
        try:
            frame = (json.loads(Path(state.path).read_text(encoding="utf-8")).get("gasdb") or {}).get("frame")
        except (OSError, ValueError, AttributeError):
            frame = None
    if frame != "thermal" and row.get("valid") and ws.path(row["valid"]).is_file():
        return read_image(ws.path(row["valid"])).shape[:2]
    if row.get("thermal") and (frame == "thermal" or not row.get("rgb")) and ws.path(row["thermal"]).is_file():
        return read_image(ws.path(row["thermal"])).shape[:2]
    if row.get("rgb") and ws.path(row["rgb"]).is_file():
        return read_image(ws.path(row["rgb"])).shape[:2]
    return None


def _digest_problems(ws, row: Mapping, frame_columns) -> list[Problem]:
    """Files whose bytes are not what the stage that wrote them recorded."""
    from gasdb_tools import provenance
    from gasdb_tools.fsutil import sha256_file

    def digest(rel):
        path = ws.path(rel)
        return sha256_file(path)[: provenance.DIGEST_CHARS] if path.is_file() else None

    checks = [("extract_digest", list(frame_columns) if len(frame_columns) == 2 else ["", "thermal"], "extract"),
              ("align_digest", ["aligned", "valid"], "align"), ("enhance_digest", ["enhanced"], "enhance")]
    out = []
    for column, parts, stage in checks:
        recorded = row.get(column) or ""
        if not recorded or any(p and not row.get(p) for p in parts):
            continue
        digests = [digest(row[p]) if p else "" for p in parts]
        if any(d is None for d in digests):
            continue  # a missing file is reported elsewhere
        value = digests[0] if len(parts) == 1 else provenance.combine(*digests)
        if value != recorded:
            files = ", ".join(str(ws.path(row[p])) for p in parts if p)
            out.append(Problem("mismatch", f"{files}: the file changed after `gasdb {stage}` wrote it",
                               file=pairs_csv_path(ws), field=f"{row['pair_id']}.{column}", pair_id=row["pair_id"],
                               fix=f"gasdb {stage} {ws.root} --recording {row['recording']} --force"))
    return out


def pairs_csv_path(ws) -> str:
    return str(ws.root / ws.PAIRS)


def _stale_problems(ws, status: Mapping) -> list[Problem]:
    out = []
    for rec in status["recordings"]:
        for stage, counts in rec["stages"].items():
            stale = counts.get("stale", 0)
            if stale:
                out.append(Problem("stale", f"recording {rec['id']}: {stale} {stage} output(s) were made from "
                                   "inputs that have changed since", file=pairs_csv_path(ws), field=stage,
                                   fix=f"gasdb {stage} {ws.root} --recording {rec['id']}"))
    return out
