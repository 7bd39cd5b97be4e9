"""COCO instance annotations with pycocotools RLE masks (``docs/formats.md`` §2).

Masks come from the one rasteriser (:func:`gasdb_tools.labelme_format.rasterize_instances`) and
are stored as compressed RLE, so a COCO file means exactly what the class-index PNGs mean (a
polygon segmentation would be re-rasterised by pycocotools with other boundary rules: LabelMe's
rectangle (20, 10)-(70, 40) covers 1581 px, the same COCO polygon 1500 px).

Conventions: one category, ``gas`` = 1, no background category; gas instances have ``iscrowd``
0; the ignored pixels of an image (255 in the semantic masks: outside the thermal view, or drawn
as ``__ignore__``) form one ``iscrowd`` 1 annotation of category gas, which COCOeval treats as an
ignore region (a detection over it is neither a true nor a false positive); ``area`` is the pixel
count and ``bbox`` ``[x, y, w, h]`` the tight pixel box (pycocotools' ``toBbox``); RLE ``counts`` is
ASCII text so the document is plain JSON. The pycocotools pitfalls handled here: Fortran-ordered
input to ``encode``, ``bytes`` counts, ``loadRes([])`` raising, ``loadRes`` mutating its input,
and predictions of the wrong size silently scoring 0.

References
----------
T.-Y. Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014, doi:10.1007/978-3-319-10602-1_48.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from gasdb_tools.errors import FormatError

__all__ = [
    "GAS_CATEGORY",
    "CATEGORIES",
    "encode_rle",
    "decode_rle",
    "rle_area",
    "rle_bbox",
    "mask_bbox",
    "make_image",
    "make_annotation",
    "instance_masks",
    "mask_annotations",
    "build_coco",
    "check_coco",
    "evaluate_segm",
    "detections_from_annotations",
]

#: The only category: gas = 1 (COCO ids start at 1; there is no background category).
GAS_CATEGORY = {"id": 1, "name": "gas", "supercategory": "gas"}
CATEGORIES = (GAS_CATEGORY,)


def encode_rle(mask) -> dict:
    """Compressed RLE of a 2-D mask, JSON-ready: ``{"size": [H, W], "counts": str}``.

    Parameters
    ----------
    mask : array_like of bool or integers, shape (H, W)
        Nonzero = inside.

    Examples
    --------
    >>> rle = encode_rle(np.eye(3, dtype=bool))
    >>> rle["size"], isinstance(rle["counts"], str), int(decode_rle(rle).sum())
    ([3, 3], True, 3)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))  # pycocotools needs Fortran order
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _as_rle(rle: Mapping) -> dict:
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise FormatError("segmentation is not an RLE dict with size and counts", field="segmentation",
                          fix="export with gasdb export --format coco")
    counts = rle["counts"]
    size = [int(v) for v in rle["size"]]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": size, "counts": counts}


def decode_rle(rle: Mapping) -> np.ndarray:
    """Decode a (compressed or uncompressed) RLE dict to a boolean (H, W) mask (C order)."""
    with warnings.catch_warnings():  # pycocotools 2.0.x trips numpy 2's copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(_as_rle(rle))).astype(bool)


def rle_area(rle: Mapping) -> int:
    """Pixel count of an RLE mask."""
    return int(mask_utils.area(_as_rle(rle)))


def rle_bbox(rle: Mapping) -> list[float]:
    """``[x, y, w, h]`` of an RLE mask, as pycocotools computes it (``[0, 0, 0, 0]`` when empty)."""
    return [float(v) for v in mask_utils.toBbox(_as_rle(rle))]


def mask_bbox(mask) -> list[float]:
    """Tight ``[x, y, w, h]`` of a 2-D mask (``w = x2 - x1 + 1``); ``[0, 0, 0, 0]`` when empty."""
    mask = np.asarray(mask) != 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def make_image(image_id: int, file_name: str, height: int, width: int, **extra) -> dict:
    """A COCO ``images`` entry (extra keys, e.g. ``pair_id``, are kept; pycocotools ignores them)."""
    return {"id": int(image_id), "file_name": str(file_name), "height": int(height), "width": int(width), **extra}


def make_annotation(mask, *, ann_id: int, image_id: int, category_id: int = 1, **extra) -> dict:
    """A COCO annotation for one instance mask: RLE segmentation, exact area and bbox, iscrowd 0.

    Raises ``ValueError`` for an empty mask (COCO has no empty instances).
    """
    mask = np.asarray(mask) != 0
    area = int(mask.sum())
    if area == 0:
        raise ValueError("an instance mask must have at least one pixel; drop empty instances")
    return {"id": int(ann_id), "image_id": int(image_id), "category_id": int(category_id),
            "segmentation": encode_rle(mask), "area": area, "bbox": mask_bbox(mask), "iscrowd": 0, **extra}


def instance_masks(semantic: np.ndarray, instances: np.ndarray | None = None, *, gas: int = 1,
                   connectivity: int = 2) -> list[np.ndarray]:
    """Split the gas pixels of a semantic mask into instance masks.

    Parameters
    ----------
    semantic : ndarray of uint8, shape (H, W)
        Class-index mask (0 background, 1 gas, 255 ignore).
    instances : ndarray of int, shape (H, W), optional
        Instance ids from :func:`gasdb_tools.labelme_format.rasterize_instances` (0 = none). When
        given, each id's gas pixels form one instance (LabelMe's ``(label, group_id)`` rule);
        otherwise each connected region of gas is one instance.
    gas : int
        The class value of gas.
    connectivity : {1, 2}
        4- or 8-connectivity for connected regions.

    Returns
    -------
    list of ndarray of bool
        Non-empty, disjoint masks, ordered by instance id (or by region label).
    """
    semantic = np.asarray(semantic)
    is_gas = semantic == gas
    if instances is not None:
        instances = np.asarray(instances)
        if instances.shape != semantic.shape:
            raise ValueError(f"instances {instances.shape} and semantic {semantic.shape} must have the same shape")
        ids = np.unique(instances[is_gas])
        return [is_gas & (instances == k) for k in ids if k != 0]
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, n = ndimage.label(is_gas, structure=structure)
    return [labels == k for k in range(1, n + 1)]


def mask_annotations(semantic: np.ndarray, instances: np.ndarray | None = None, *, gas: int = 1,
                     ignore: int = 255) -> list[dict]:
    """COCO annotations of one image without ``id``/``image_id``: one per gas instance (``iscrowd`` 0,
    see :func:`instance_masks`), then the ignored pixels as one ``iscrowd`` 1 region (when there are any).

    >>> sem = np.array([[1, 1, 0], [0, 255, 255]], np.uint8)
    >>> [(a["iscrowd"], a["area"]) for a in mask_annotations(sem)]
    [(0, 2), (1, 2)]
    """
    semantic = np.asarray(semantic)
    out = []
    for mask in instance_masks(semantic, instances, gas=gas):
        out.append({"category_id": GAS_CATEGORY["id"], "segmentation": encode_rle(mask), "area": int(mask.sum()),
                    "bbox": mask_bbox(mask), "iscrowd": 0})
    crowd = semantic == ignore
    if crowd.any():
        out.append({"category_id": GAS_CATEGORY["id"], "segmentation": encode_rle(crowd), "area": int(crowd.sum()),
                    "bbox": mask_bbox(crowd), "iscrowd": 1})
    return out


def build_coco(images: Sequence[Mapping], annotations: Sequence[Mapping], *,
               categories: Sequence[Mapping] = CATEGORIES, info: Mapping | None = None) -> dict:
    """Assemble a COCO document (deterministic order: images and annotations sorted by id)."""
    doc = {
        "info": dict(info or {"description": "gasdb-tools export"}),
        "licenses": [],
        "images": sorted((dict(i) for i in images), key=lambda d: d["id"]),
        "annotations": sorted((dict(a) for a in annotations), key=lambda d: d["id"]),
        "categories": [dict(c) for c in categories],
    }
    check_coco(doc)
    return doc


def check_coco(doc: Mapping, *, file=None) -> None:
    """Check the invariants of our COCO files; raise :class:`FormatError` naming the field.

    Unique ids, annotations on known images and categories, RLE size equal to the image size,
    ``area`` equal to the RLE pixel count, ``iscrowd`` 0 or 1 (1: an ignore region), no category 0.
    """
    try:
        images = {int(i["id"]): i for i in doc["images"]}
        cats = {int(c["id"]) for c in doc["categories"]}
        anns = list(doc["annotations"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"not a COCO document ({exc})", file=file,
                          fix="export with gasdb export --format coco") from None
    if len(images) != len(doc["images"]):
        raise FormatError("duplicate image ids", file=file, field="images", fix="give every image its own id")
    if 0 in cats:
        raise FormatError("category id 0 (COCO ids start at 1; no background category)", file=file,
                          field="categories", fix="use gas = 1")
    seen = set()
    for k, ann in enumerate(anns):
        where = f"annotations[{k}]"
        if ann["id"] in seen:
            raise FormatError(f"duplicate annotation id {ann['id']}", file=file, field=f"{where}.id")
        seen.add(ann["id"])
        image = images.get(int(ann["image_id"]))
        if image is None:
            raise FormatError(f"image_id {ann['image_id']} is not in images", file=file, field=f"{where}.image_id")
        if int(ann["category_id"]) not in cats:
            raise FormatError(f"category_id {ann['category_id']} is not in categories", file=file,
                              field=f"{where}.category_id")
        rle = ann["segmentation"]
        if [int(v) for v in rle["size"]] != [int(image["height"]), int(image["width"])]:
            raise FormatError(f"RLE size {rle['size']} differs from the image size "
                              f"{[image['height'], image['width']]}", file=file, field=f"{where}.segmentation.size",
                              fix="encode masks at the image's size (a wrong size silently scores AP 0)")
        if int(ann["area"]) != rle_area(rle):
            raise FormatError(f"area {ann['area']} differs from the mask's {rle_area(rle)} pixels", file=file,
                              field=f"{where}.area")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise FormatError(f"iscrowd must be 0 (an instance) or 1 (an ignore region), got {ann.get('iscrowd')!r}",
                              file=file, field=f"{where}.iscrowd")


def evaluate_segm(gt: Mapping, detections: Sequence[Mapping]) -> dict:
    """COCO segmentation AP of ``detections`` against ``gt``, with pycocotools' pitfalls handled.

    Parameters
    ----------
    gt : dict
        A COCO document (e.g. from :func:`build_coco`); not modified.
    detections : list of dict
        Results ``{"image_id", "category_id", "segmentation" (RLE), "score"}``; not modified
        (pycocotools' ``loadRes`` mutates its input, so a deep copy is passed).

    Returns
    -------
    dict
        ``{"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100",
        "AR_small", "AR_medium", "AR_large"}`` (pycocotools' ``stats``; -1 where undefined).
        With no detections every AP is 0.0 (``loadRes([])`` would raise).

    Raises
    ------
    FormatError
        When a detection names an image that is not in ``gt`` or has an RLE of the wrong size
        (pycocotools would assert, or silently score 0).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keys = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
            "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
    images = {int(i["id"]): i for i in gt["images"]}
    for k, det in enumerate(detections):
        image = images.get(int(det["image_id"]))
        if image is None:
            raise FormatError(f"detection image_id {det['image_id']} is not in the ground truth",
                              field=f"detections[{k}].image_id", fix="use the ground truth's image ids")
        size = [int(v) for v in det["segmentation"]["size"]]
        if size != [int(image["height"]), int(image["width"])]:
            raise FormatError(f"detection RLE size {size} differs from the image size "
                              f"{[image['height'], image['width']]}", field=f"detections[{k}].segmentation.size",
                              fix="encode predictions at the ground truth's size")
    if not detections:
        return {k: 0.0 for k in keys}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dict(gt))
        coco_gt.createIndex()
        dets = copy.deepcopy(list(detections))
        for det in dets:
            det["segmentation"] = {"size": det["segmentation"]["size"],
                                   "counts": _as_rle(det["segmentation"])["counts"]}
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(keys, ev.stats)}


def detections_from_annotations(annotations: Iterable[Mapping], *, score: float = 1.0) -> list[dict]:
    """Turn ground-truth instances (not the ``iscrowd`` ignore regions) into detections (for self-evaluation)."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "segmentation": dict(a["segmentation"]), "score": float(score)} for a in annotations
            if not a.get("iscrowd", 0)]

