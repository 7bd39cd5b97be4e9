"""Versioned, verifiable dataset releases (the ``gasdb release`` and ``gasdb verify`` stages).

A release is one folder::

    OUT/
      gasdb.h5              HDF5 pack: rgb, thermal (bit depth kept), mask {0,1,255}, valid; /meta, /splits
      gasdb/                the Gas-DB / RT-CAN layout (images/, labels/, train.txt, test.txt, ...)
      coco/annotations.json COCO instance annotations
      index.csv             name, pair_id, recording, scene, split (one row per pair)
      split.json            the workspace split file the release was cut from
      exclusions.csv        pair_id, recording, reason (blacklisted and unlabelled pairs)
      figures/*.png         samples per scene, gas-coverage histogram, split balance
      index.html            a static page showing the figures and the counts
      DATASHEET.md          "Datasheets for Datasets" sections, counts filled in
      manifest.json         version, parent, licence, counts, calibration, tool, sha256 + bytes per file
      SHA256SUMS            ``sha256sum -c`` format, every file but itself

It is built in ``OUT.partial-XXXX`` next to ``OUT`` and renamed at the very end, so an
interrupted build never leaves a folder that looks complete; the workspace is only read.
:func:`verify_release` recomputes every hash and count and names each corrupted, missing or
extra file. The formats follow formats.md §4 (HDF5) and §5 (manifest, datasheet).
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from gasdb_tools import __version__
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.fsutil import atomic_write_text, read_json, sha256_file, write_json

__all__ = [
    "H5_NAME",
    "INDEX_COLUMNS",
    "ReleasePlan",
    "VerifyReport",
    "plan_release",
    "build_release",
    "make_release",
    "verify_release",
]

#: File name of the HDF5 pack inside a release.
H5_NAME = "gasdb.h5"
#: Columns of ``index.csv`` (the scorer reads them).
INDEX_COLUMNS = ("name", "pair_id", "recording", "scene", "split")
_RELEASE_FORMAT = "gasdb-release"
_H5_FORMAT = "gasdb-h5"
_FORMAT_VERSION = 1
_CLASS_NAMES = ("background", "gas")
_IGNORE_INDEX = 255
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?$")
_SPDX = re.compile(r"^[A-Za-z0-9.+-]+(?: (?:AND|OR|WITH) [A-Za-z0-9.+-]+)*$")
_MANIFEST = "manifest.json"
_SUMS = "SHA256SUMS"


# ---------------------------------------------------------------------------------------------
# planning (pure checks on the index; nothing is written)
# ---------------------------------------------------------------------------------------------
def _parse_version(value: str, what: str) -> tuple:
    m = _SEMVER.match(value or "") if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{what} must be a semantic version like 1.0.0 (MAJOR.MINOR.PATCH), got {value!r}")
    return tuple(int(x) for x in m.groups()[:3]) + ((0,) if m.group(4) else (1,))


@dataclass
class ReleasePlan:
    """What a release will hold, checked against the workspace before anything is written."""

    ids: list  # pair ids, sorted (row order of the HDF5 pack)
    split_of: dict  # pair id -> split name
    splits: dict  # split name -> pair ids
    names: dict  # pair id -> Gas-DB name (released pairs and labelled blacklisted ones, see export_gasdb)
    pairs: dict  # pair id -> pairs.csv row
    recordings: dict  # recording id -> recordings.csv row
    thermal_source: str  # "aligned" (the thermal frame warped into the RGB frame)
    split_doc: dict  # the split file
    excluded: list  # [{pair_id, recording, reason}]
    calibration: dict  # rig -> calibration JSON (or {} when none)


def plan_release(ws, *, split: str = "default") -> ReleasePlan:
    """Check that the split can be released from the workspace as it is now, and list what goes in.

    Raises
    ------
    WorkspaceError
        No such split; the split names pairs the workspace no longer has, pairs that are now
        blacklisted or unlabelled (re-split); some pairs aligned and others not (run ``gasdb align``).
    """
    from gasdb_tools.export import default_names
    from gasdb_tools.splits import SPLIT_NAMES, load_split, split_path

    from gasdb_tools.review import exclusions, read_states, with_label

    split_obj = load_split(ws, split)
    path = split_path(ws, split)
    index = ws.read_index()
    states = read_states(ws, index)
    black = exclusions(ws, index, states)
    index.pairs = {p: {**with_label(ws, row), "review": states[p].status if p in states else ""}
                   for p, row in index.pairs.items()}
    split_of = split_obj.split_of()
    stale = []
    for pid in sorted(split_of):
        pair = index.pairs.get(pid)
        if pair is None:
            stale.append(f"{pid} (no longer in pairs.csv)")
        elif pid in black:
            stale.append(f"{pid} (now blacklisted: {black[pid] or 'no reason'})")
        elif pid not in states:
            stale.append(f"{pid} (has no label)")
    if stale:
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise WorkspaceError(f"the split is stale: {', '.join(stale[:5])}{more}", file=path,
                             fix="re-run `gasdb split WS --force` with the same seed")
    ids = sorted(split_of)
    if not ids:
        raise WorkspaceError("the split holds no pairs", file=path, fix="label pairs, then re-run `gasdb split`")
    unaligned = [pid for pid in ids if not index.pairs[pid].get("aligned")]
    if unaligned:
        # The Gas-DB layout stores thermal in the RGB frame (RGBA), so every released pair must be aligned.
        raise WorkspaceError(f"{len(unaligned)} of {len(ids)} pairs have no aligned thermal (e.g. {unaligned[0]})",
                             file=ws.root / ws.PAIRS, field="aligned",
                             fix="run `gasdb align WS` so every released pair is in the RGB frame")
    recs = {index.pairs[pid]["recording"] for pid in ids}
    excluded = []
    for pid in sorted(index.pairs):
        if pid in split_of:
            continue
        rec = index.pairs[pid]["recording"]
        if pid in black:
            reason = f"blacklisted: {black[pid] or 'no reason given'}"
        elif pid not in states:
            reason = "unlabelled"
        else:
            reason = "not in the split"
        excluded.append({"pair_id": pid, "recording": rec, "reason": reason})
    rigs = sorted({index.recordings.get(r, {}).get("rig") or ws.settings.get("rig", "default") for r in recs})
    calibration = {}
    for rig in rigs:
        cal = ws.root / "calibration" / f"{rig}.json"
        if cal.is_file():
            calibration[rig] = read_json(cal)
    names = [s for s in SPLIT_NAMES if s in split_obj.pairs]
    # export_gasdb also writes labelled blacklisted pairs (listed in blacklist.txt), so they need names too.
    named = set(ids) | {p for p in black if p in index.pairs and p in states}
    return ReleasePlan(
        ids=ids, split_of=split_of, splits={s: sorted(split_obj.pairs[s]) for s in names},
        names=default_names(named),
        pairs={pid: dict(index.pairs[pid]) for pid in ids},
        recordings={r: dict(index.recordings.get(r, {"id": r})) for r in sorted(recs)},
        thermal_source="aligned", split_doc=read_json(path), excluded=excluded,
        calibration=calibration,
    )


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
def _created(created) -> str:
    if created is not None:
        return str(created)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible-builds.org convention
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.timezone.utc))
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _check_out(ws, out: Path, force: bool) -> None:
    root = ws.root
    target = out.resolve()
    if target == root or root in target.parents:
        raise WorkspaceError("the release folder is inside the workspace", file=out,
                             fix="build the release outside the workspace (a release never modifies it)")
    if target in root.parents:
        raise WorkspaceError("the release folder contains the workspace", file=out, fix="choose another folder")
    if out.exists() or out.is_symlink():
        if not force:
            raise WorkspaceError("the release folder already exists", file=out,
                                 fix="choose a new folder, or pass --force to replace this release")
        if not out.is_dir() or (any(out.iterdir()) and not _looks_like_release(out)):
            raise WorkspaceError("refusing to replace a folder that is not a gasdb release", file=out,
                                 fix="choose a new folder for the release")


def _looks_like_release(path: Path) -> bool:
    try:
        return json.loads((path / _MANIFEST).read_text(encoding="utf-8")).get("format") == _RELEASE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def build_release(ws, out, *, version: str, parent_version: str | None = None, license: str = "CC-BY-4.0",
                  split: str = "default", force: bool = False, created: str | None = None,
                  compression: int = 4) -> Path:
    """Build a versioned release folder from a workspace and one of its split files.

    Parameters
    ----------
    ws : Workspace
        The workspace; it is only read.
    out : path
        The release folder to create (outside the workspace). It must not exist unless ``force``
        (and then it must be a previous gasdb release).
    version : str
        Semantic version ``MAJOR.MINOR.PATCH`` (Croissant 1.1 semantics: PATCH repackages, MINOR
        adds, MAJOR changes, removes or reshuffles records).
    parent_version : str, optional
        The release this one derives from (must be lower than ``version``).
    license : str
        SPDX licence id of the data (e.g. ``CC-BY-4.0``).
    split : str
        Name of the split file ``WS/splits/<split>.json`` (make it with ``gasdb split``).
    created : str, optional
        Creation time written in the manifest; default ``SOURCE_DATE_EPOCH`` when set, else now (UTC).
    compression : int
        gzip level of the HDF5 pack (with the shuffle filter; one chunk per frame).

    Returns
    -------
    pathlib.Path
        ``out``, complete (manifest and SHA256SUMS written last, then the folder renamed into place).

    Raises
    ------
    WorkspaceError
        Bad output folder, stale split, missing frames (see :func:`plan_release`).
    ValueError
        Bad version, parent version or licence.
    """
    ver = _parse_version(version, "version")
    if parent_version is not None and _parse_version(parent_version, "parent_version") >= ver:
        raise ValueError(f"parent_version {parent_version} must be lower than version {version}")
    if not isinstance(license, str) or not _SPDX.match(license):
        raise ValueError(f"license must be an SPDX identifier such as CC-BY-4.0, got {license!r}")
    if not 0 <= int(compression) <= 9:
        raise ValueError(f"compression must be a gzip level 0-9, got {compression}")
    out = Path(out)
    _check_out(ws, out, force)
    plan = plan_release(ws, split=split)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    try:
        _build_into(ws, plan, partial, version=version, parent_version=parent_version, license=license,
                    split=split, created=_created(created), compression=int(compression))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
            os.replace(out, old / "release")
            os.replace(partial, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _build_into(ws, plan: ReleasePlan, root: Path, *, version, parent_version, license, split, created,
                compression) -> None:
    from gasdb_tools import export

    stats, audit = _write_h5(ws, plan, root / H5_NAME, version=version, parent_version=parent_version,
                             license=license, compression=compression)
    export.export_gasdb(ws, root / "gasdb", splits=plan.splits, names=plan.names)
    export.export_coco(ws, root / "coco" / "annotations.json", pairs=plan.ids)
    _write_csv(root / "index.csv", INDEX_COLUMNS,
               [[plan.names[p], p, plan.pairs[p]["recording"], _scene(plan, p), plan.split_of[p]] for p in plan.ids])
    _write_csv(root / "exclusions.csv", ("pair_id", "recording", "reason"),
               [[e["pair_id"], e["recording"], e["reason"]] for e in plan.excluded])
    write_json(root / "split.json", plan.split_doc)
    identical, near = audit.findings()
    summary = _summary(plan, stats, identical, near, audit.params)
    figures = _figures(root, plan, stats)
    meta = {"version": version, "parent_version": parent_version, "license": license, "created": created,
            "name": _dataset_name(ws), "split_name": split}
    atomic_write_text(root / "DATASHEET.md", _datasheet(plan, summary, meta))
    atomic_write_text(root / "index.html", _html(plan, summary, meta, figures))
    files = _file_list(root)
    manifest = {
        "format": _RELEASE_FORMAT,
        "format_version": _FORMAT_VERSION,
        "name": meta["name"],
        "version": version,
        "parent_version": parent_version,
        "created": created,
        "license": license,
        "generator": {"tool": "gasdb-tools", "version": __version__, "git_commit": _source_commit(),
                      "python": ".".join(map(str, sys.version_info[:3]))},
        "classes": {str(i): n for i, n in enumerate(_CLASS_NAMES)},
        "ignore_index": _IGNORE_INDEX,
        "modalities": stats["modalities"],
        "calibration": plan.calibration,
        "split": {"name": split, **{k: plan.split_doc.get(k) for k in
                                    ("method", "seed", "ratios", "group_key", "stratify", "leaks_across_splits")}},
        "counts": summary["counts"],
        "annotation": summary["annotation"],
        "leakage_audit": summary["leakage_audit"],
        "exclusions": plan.excluded,
        "sources": {r: {"scene": row.get("scene", ""), "rgb_sha256": row.get("rgb_sha256", ""),
                        "thermal_sha256": row.get("thermal_sha256", ""),
                        "pairs": sum(1 for p in plan.ids if plan.pairs[p]["recording"] == r)}
                    for r, row in plan.recordings.items()},
        "links": {"datasheet": "DATASHEET.md", "page": "index.html", "checksums": _SUMS, "index": "index.csv",
                  "hdf5": H5_NAME, "gasdb_layout": "gasdb/", "coco": "coco/annotations.json"},
        "files": files,
    }
    write_json(root / _MANIFEST, manifest)
    sums = [(sha256_file(root / _MANIFEST), _MANIFEST)] + [(f["sha256"], f["path"]) for f in files]
    atomic_write_text(root / _SUMS, "".join(f"{h}  {p}\n" for h, p in sorted(sums, key=lambda x: x[1])))


def _dataset_name(ws) -> str:
    return str(ws.settings.get("name") or ws.root.name)


def _scene(plan: ReleasePlan, pid: str) -> str:
    return plan.recordings.get(plan.pairs[pid]["recording"], {}).get("scene", "") or ""


def _write_csv(path: Path, columns, rows) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _file_list(root: Path) -> list[dict]:
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if rel in (_MANIFEST, _SUMS):
            continue
        files.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return files


def _source_commit() -> str | None:
    """The git commit of the gasdb-tools checkout, when it runs from one (no subprocess)."""
    git = Path(__file__).resolve().parents[1] / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            loose = git / ref
            if loose.is_file():
                return loose.read_text().strip()
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
            return None
        return head or None
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# the HDF5 pack
# ---------------------------------------------------------------------------------------------
def _read_pair(ws, pair: Mapping) -> dict[str, np.ndarray]:
    """RGB (uint8), aligned thermal (its own bit depth) and valid mask (255 valid) of one pair."""
    from gasdb_tools.imaging import read_image

    rgb = read_image(ws.path(pair["rgb"]), mode="rgb")
    thermal = read_image(ws.path(pair["aligned"]))
    if thermal.ndim == 3:
        raise FormatError(f"aligned thermal frame has {thermal.shape[2]} channels; expected one",
                          file=ws.path(pair["aligned"]), fix="re-run `gasdb align`")
    valid = read_image(ws.path(pair["valid"])) if pair.get("valid") else np.full(thermal.shape, 255, np.uint8)
    if valid.ndim != 2 or valid.dtype != np.uint8:
        raise FormatError(f"valid mask must be single-channel uint8, got {valid.dtype} {valid.shape}",
                          file=ws.path(pair["valid"]), fix="re-run `gasdb align`")
    return {"rgb": rgb, "thermal": thermal, "valid": valid}


def _write_h5(ws, plan: ReleasePlan, path: Path, *, version, parent_version, license, compression):
    import h5py

    from gasdb_tools import export, labelme_format
    from gasdb_tools.progress import progress
    from gasdb_tools.splits import FrameAudit

    n = len(plan.ids)
    audit = FrameAudit()
    stats = {"pairs": {}, "modalities": {}}
    str_dt = h5py.string_dtype()
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        f.attrs.update({
            "format": _H5_FORMAT, "format_version": _FORMAT_VERSION, "dataset_name": _dataset_name(ws),
            "dataset_version": version, "parent_version": parent_version or "", "license": license,
            "generator": f"gasdb-tools {__version__}", "class_names": list(_CLASS_NAMES),
            "ignore_index": _IGNORE_INDEX, "calibration": json.dumps(plan.calibration, sort_keys=True),
            "split_method": str(plan.split_doc.get("method", "")), "thermal_source": plan.thermal_source,
        })
        dsets = {}
        meta_rows = defaultdict(list)
        for k, pid in enumerate(progress(plan.ids, total=n, desc="release", unit="pair")):
            pair = plan.pairs[pid]
            frames = _read_pair(ws, pair)
            mask = np.asarray(export.pair_mask(ws, pair))
            frames["mask"] = mask
            if k == 0:
                h, w = frames["rgb"].shape[:2]
                for key, arr in frames.items():
                    if key != "rgb" and key != "thermal" and arr.shape != (h, w):
                        raise FormatError(f"{key} is {arr.shape[1]}x{arr.shape[0]} but RGB is {w}x{h}",
                                          file=ws.path(pair.get(key) or pair["rgb"]), fix="re-run gasdb align")
                for key, arr in frames.items():
                    dsets[key] = f.create_dataset(key, shape=(n, *arr.shape), dtype=arr.dtype,
                                                  chunks=(1, *arr.shape), compression="gzip",
                                                  compression_opts=compression, shuffle=True, track_times=False)
                    stats["modalities"][key] = {"dtype": arr.dtype.name, "shape": [n, *arr.shape]}
                dsets["thermal"].attrs["source"] = plan.thermal_source
                dsets["thermal"].attrs["frame"] = "rgb (warped with the rig homography)"
                dsets["mask"].attrs["values"] = "0 background, 1 gas, 255 ignore"
                dsets["valid"].attrs["values"] = "255 valid thermal pixel, 0 outside the warped thermal view"
                stats["modalities"]["thermal"]["source"] = plan.thermal_source
            for key, arr in frames.items():
                want = dsets[key]
                if arr.shape != want.shape[1:] or arr.dtype != want.dtype:
                    raise FormatError(f"{key} frame is {arr.dtype} {arr.shape}, the others are {want.dtype} "
                                      f"{want.shape[1:]}", file=ws.path(pair.get(key) or pair["rgb"]),
                                      fix="frames of one release must share size and bit depth; re-run extract/align")
                want[k] = arr
            if mask.dtype != np.uint8 or not np.isin(mask, (0, 1, _IGNORE_INDEX)).all():
                raise FormatError("mask values outside {0, 1, 255}", file=ws.path(pair["label"]),
                                  fix="check the label names against labels.txt")
            audit.add(pid, plan.split_of[pid], frames)
            doc = labelme_format.read(ws.path(pair["label"]))
            pre = ((doc.get("gasdb") or {}).get("preannot") or {}).get("method") if isinstance(
                doc.get("gasdb"), dict) else None
            gas = int(np.count_nonzero(mask == 1))
            labelled = int(np.count_nonzero(mask != _IGNORE_INDEX))
            stats["pairs"][pid] = {"gas": gas, "labelled": labelled, "review": pair.get("review") or "unknown",
                                   "preannot": pre or "none", "index": k}
            meta_rows["pair_id"].append(pid)
            meta_rows["name"].append(plan.names[pid])
            meta_rows["recording"].append(pair["recording"])
            meta_rows["scene"].append(_scene(plan, pid))
            meta_rows["split"].append(plan.split_of[pid])
            meta_rows["review"].append(pair.get("review") or "")
            for t in ("t_rgb", "t_thermal", "dt"):
                meta_rows[t].append(float(pair.get(t) or "nan"))
            meta_rows["gas_pixels"].append(gas)
        meta = f.create_group("meta")
        for key, values in meta_rows.items():
            if key in ("t_rgb", "t_thermal", "dt"):
                meta.create_dataset(key, data=np.asarray(values, np.float64), track_times=False)
            elif key == "gas_pixels":
                meta.create_dataset(key, data=np.asarray(values, np.int64), track_times=False)
            else:
                meta.create_dataset(key, data=np.asarray(values, dtype=object), dtype=str_dt, track_times=False)
        grp = f.create_group("splits")
        pos = {pid: k for k, pid in enumerate(plan.ids)}
        for s, ids in plan.splits.items():
            grp.create_dataset(s, data=np.asarray(sorted(pos[p] for p in ids), np.int64), track_times=False)
    return stats, audit


# ---------------------------------------------------------------------------------------------
# summary, figures, datasheet, page
# ---------------------------------------------------------------------------------------------
def _summary(plan: ReleasePlan, stats: dict, identical, near, params) -> dict:
    per = stats["pairs"]

    def block(ids):
        gas = sum(per[p]["gas"] for p in ids)
        lab = sum(per[p]["labelled"] for p in ids)
        return {"pairs": len(ids), "recordings": len({plan.pairs[p]["recording"] for p in ids}),
                "positive_pairs": sum(1 for p in ids if per[p]["gas"] > 0),
                "gas_pixel_fraction": round(gas / lab, 6) if lab else None,
                "scenes": dict(sorted(Counter(_scene(plan, p) for p in ids).items()))}

    scenes = sorted({_scene(plan, p) for p in plan.ids})
    counts = {"total": block(plan.ids), "splits": {s: block(ids) for s, ids in plan.splits.items()},
              "scenes": {sc: {k: v for k, v in block([p for p in plan.ids if _scene(plan, p) == sc]).items()
                              if k != "scenes"} for sc in scenes}}
    annotation = {"review": dict(sorted(Counter(per[p]["review"] for p in plan.ids).items())),
                  "preannotation": dict(sorted(Counter(per[p]["preannot"] for p in plan.ids).items()))}
    by_rec = defaultdict(set)
    for p in plan.ids:
        by_rec[plan.pairs[p]["recording"]].add(plan.split_of[p])
    audit = {"params": params, "identical_across_splits": len(identical), "near_identical_across_splits": len(near),
             "shared_recordings": sorted(r for r, ss in by_rec.items() if len(ss) > 1),
             "examples": (identical + near)[:20]}
    return {"counts": counts, "annotation": annotation, "leakage_audit": audit, "modalities": stats["modalities"]}


_SPLIT_COLOURS = {"train": "#1f77b4", "val": "#2ca02c", "test": "#d62728"}


def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    from gasdb_tools.fsutil import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


_PANEL_WIDTH = 320  # sample images are shrunk to this width before plotting (figures stay small and fast)


def _shrink(image: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    if w <= _PANEL_WIDTH:
        return image
    size = (_PANEL_WIDTH, max(1, round(h * _PANEL_WIDTH / w)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _display(thermal: np.ndarray) -> np.ndarray:
    t = thermal.astype(np.float32)
    lo, hi = np.percentile(t, [0.5, 99.5])
    return np.clip((t - lo) / max(hi - lo, 1e-6), 0, 1)


def _overlay(gray01: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rgb = np.repeat(gray01[..., None], 3, axis=2)
    gas, ignore = mask == 1, mask == _IGNORE_INDEX
    rgb[gas] = 0.45 * rgb[gas] + 0.55 * np.array([1.0, 0.1, 0.1])
    rgb[ignore] = 0.6 * rgb[ignore] + 0.4 * np.array([0.2, 0.4, 1.0])
    return rgb


def _figures(root: Path, plan: ReleasePlan, stats: dict) -> list[dict]:
    import h5py
    from matplotlib.ticker import MaxNLocator

    figdir = root / "figures"
    figdir.mkdir(exist_ok=True)
    per = stats["pairs"]
    out = []
    scenes = sorted({_scene(plan, p) for p in plan.ids})
    with h5py.File(root / H5_NAME, "r") as f:
        for sc in scenes:
            ids = [p for p in plan.ids if _scene(plan, p) == sc]
            gas = sorted((p for p in ids if per[p]["gas"] > 0), key=lambda p: (per[p]["gas"], p))
            picks = []
            if gas:
                picks += [gas[-1], gas[len(gas) // 2]]
            picks += [p for p in ids if per[p]["gas"] == 0][:1]
            picks = list(dict.fromkeys(picks))[:3] or ids[:1]
            fig = _new_figure(10.5, 2.9 * len(picks))
            for r, pid in enumerate(picks):
                k = per[pid]["index"]
                rgb, thermal, mask = f["rgb"][k], f["thermal"][k], f["mask"][k]
                dtype = thermal.dtype.name
                rgb, thermal, mask = _shrink(rgb), _shrink(thermal), _shrink(mask, nearest=True)
                shown = _display(thermal)
                base = shown if shown.shape == mask.shape else rgb.mean(axis=2) / 255.0
                panels = [(rgb, "RGB"), (shown, f"thermal ({plan.thermal_source}, {dtype})"),
                          (_overlay(base, mask), f"mask: {100 * per[pid]['gas'] / max(per[pid]['labelled'], 1):.1f}% "
                                                 "gas")]
                for c, (img, title) in enumerate(panels):
                    ax = fig.add_subplot(len(picks), 3, r * 3 + c + 1)
                    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1 if img.ndim == 2 else None)
                    ax.set_title(f"{plan.names[pid]} {title}" if c == 0 else title, fontsize=9)
                    ax.axis("off")
            fig.suptitle(f"scene: {sc or 'unspecified'}", fontsize=11)
            fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.8 / (2.9 * len(picks)),
                                wspace=0.04, hspace=0.18)
            name = f"samples_{re.sub(r'[^A-Za-z0-9_-]+', '-', sc) or 'unspecified'}.png"
            _save(fig, figdir / name)
            out.append({"file": f"figures/{name}", "title": f"Samples: {sc or 'unspecified'}",
                        "caption": "RGB, thermal and the mask (red: gas, blue: ignore) of the pair with the most gas, "
                                   "a median gas pair and a gas-free pair of this scene."})
    # gas coverage histogram
    fig = _new_figure(7.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    bins = np.logspace(-3, 2, 26)  # plumes cover from a few pixels to most of the frame
    for s, ids in plan.splits.items():
        cov = [max(100 * per[p]["gas"] / per[p]["labelled"], 1e-3) for p in ids
               if per[p]["gas"] > 0 and per[p]["labelled"]]
        empty = sum(1 for p in ids if per[p]["gas"] == 0)
        ax.hist(cov, bins=bins, histtype="step", linewidth=2, color=_SPLIT_COLOURS.get(s),
                label=f"{s}: {len(cov)} gas pairs, {empty} gas-free")
    ax.set_xscale("log")
    ax.set_xlabel("gas pixels per pair (% of labelled pixels, log scale)")
    ax.set_ylabel("pairs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.set_title("Gas coverage per pair")
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.9)
    _save(fig, figdir / "gas_coverage.png")
    out.append({"file": "figures/gas_coverage.png", "title": "Gas coverage",
                "caption": "Histogram of the gas fraction of pairs that contain gas, per split."})
    # split balance
    fig = _new_figure(10.0, 4.0)
    ax = fig.add_subplot(1, 2, 1)
    names = list(plan.splits)
    bottom = np.zeros(len(names))
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, sc in enumerate(scenes):
        vals = np.array([sum(1 for p in plan.splits[s] if _scene(plan, p) == sc) for s in names], float)
        ax.bar(names, vals, bottom=bottom, color=cmap(i % 20), label=sc or "unspecified")
        bottom += vals
    ax.set_ylabel("pairs")
    ax.set_title("Pairs per split and scene")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    pos = [100 * sum(1 for p in plan.splits[s] if per[p]["gas"] > 0) / max(len(plan.splits[s]), 1) for s in names]
    recs = [len({plan.pairs[p]["recording"] for p in plan.splits[s]}) for s in names]
    bars = ax2.bar(names, pos, color=[_SPLIT_COLOURS.get(s, "#7f7f7f") for s in names])
    for b, n_rec in zip(bars, recs):
        ax2.annotate(f"{n_rec} rec.", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                     fontsize=8)
    ax2.set_ylim(0, 110)
    ax2.set_ylabel("pairs with gas (%)")
    ax2.set_title("Positive pairs and recordings per split")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.9, wspace=0.25)
    _save(fig, figdir / "split_balance.png")
    out.append({"file": "figures/split_balance.png", "title": "Split balance",
                "caption": "Pairs per split stacked by scene type; share of pairs with gas and number of recordings."})
    return out


def _counts_table(summary: dict) -> list[list[str]]:
    rows = [["split", "pairs", "recordings", "pairs with gas", "gas pixel fraction"]]
    items = list(summary["counts"]["splits"].items()) + [("total", summary["counts"]["total"])]
    for s, c in items:
        frac = "n/a" if c["gas_pixel_fraction"] is None else f"{100 * c['gas_pixel_fraction']:.2f}%"
        rows.append([s, str(c["pairs"]), str(c["recordings"]), str(c["positive_pairs"]), frac])
    return rows


def _md_table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _datasheet(plan: ReleasePlan, summary: dict, meta: dict) -> str:
    c = summary["counts"]
    ann = summary["annotation"]
    audit = summary["leakage_audit"]
    sd = plan.split_doc
    review = ann["review"]
    unreviewed = sum(v for k, v in review.items() if k not in ("approved", "edited"))
    scene_rows = [["scene", "pairs", "recordings", "pairs with gas"]] + [
        [sc or "unspecified", str(v["pairs"]), str(v["recordings"]), str(v["positive_pairs"])]
        for sc, v in c["scenes"].items()]
    black = [e for e in plan.excluded if e["reason"].startswith("blacklisted")]
    other = [e for e in plan.excluded if not e["reason"].startswith("blacklisted")]
    limits = []
    if sd.get("leaks_across_splits"):
        limits.append(f"**The split leaks**: method `{sd.get('method')}` puts frames of one recording in several "
                      "splits, so test scores overstate generalisation (the RT-CAN/Gas-DB protocol).")
    if audit["identical_across_splits"] or audit["near_identical_across_splits"]:
        limits.append(f"The leakage audit found {audit['identical_across_splits']} identical and "
                      f"{audit['near_identical_across_splits']} near-identical frame pairs across splits.")
    if unreviewed:
        limits.append(f"{unreviewed} of {c['total']['pairs']} masks were not reviewed by a person "
                      "(pre-annotations or unknown review status).")
    small = [s for s, v in c["splits"].items() if v["recordings"] < 3]
    if small:
        limits.append(f"Few recordings in split(s) {', '.join(small)}: scores vary strongly with the recordings "
                      "drawn; report results over several seeds.")
    if not plan.calibration:
        limits.append("No rig calibration file was found in the workspace.")
    limits.append("Gas is visible only in the thermal band; thin or faint plume edges are ambiguous and "
                  "annotators may disagree there (mark unsure areas as `__ignore__`).")
    lines = [
        f"# Datasheet: {meta['name']} {meta['version']}",
        "",
        "Following Gebru et al., *Datasheets for Datasets* (Commun. ACM 64(12), 2021, "
        "doi:10.1145/3458723). Counts below are filled in by gasdb-tools; sections marked "
        "*maintainers* need prose from the people who collected the data.",
        "",
        "## Motivation",
        "",
        "- Purpose: pixel-level segmentation of gas leaks in paired RGB and thermal (infrared) frames, in the "
        "Gas-DB / RT-CAN benchmark format.",
        "- Creators, funding: *maintainers*.",
        "",
        "## Composition",
        "",
        f"- {c['total']['pairs']} RGB-thermal pairs from {c['total']['recordings']} recordings; "
        f"{c['total']['positive_pairs']} pairs contain gas.",
        f"- Each pair: RGB (uint8), thermal ({summary['modalities']['thermal']['dtype']}, aligned, bit depth kept), "
        "mask "
        "(0 background, 1 gas, 255 ignore) and valid-pixel mask, in `gasdb.h5`, `gasdb/` and `coco/`.",
        "",
        _md_table(_counts_table(summary)),
        "",
        _md_table(scene_rows),
        "",
        "## Collection process",
        "",
        f"- Recordings (sha256 of each source video in `manifest.json` → `sources`): "
        f"{', '.join(plan.recordings)}.",
        "- Frame pairs were cut from time-synchronised RGB and thermal videos (nearest frame after the start "
        "offset); the thermal frame keeps its bit depth.",
        "- Cameras, sites, dates, consent: *maintainers*.",
        "",
        "## Preprocessing, cleaning, labelling",
        "",
        "- Thermal frames: warped into the RGB frame with the rig homography (`valid` marks the covered "
        "pixels; masks are 255 = ignore outside them).",
        "- Annotation: drafts by background subtraction on the enhanced thermal (pre-annotation), "
        "corrected in LabelMe; masks rasterised with LabelMe's own conventions.",
        f"- Pre-annotation method per pair: {_inline_counts(ann['preannotation'])}.",
        f"- Review status: {_inline_counts(review)} (approved/edited = checked by a person).",
        f"- Excluded pairs ({len(plan.excluded)}; listed with reasons in `exclusions.csv`): "
        f"{len(black)} blacklisted, {len(other)} for other reasons.",
    ]
    if black:
        reasons = Counter(e["reason"][len("blacklisted: "):] for e in black)
        lines += ["", "| blacklist reason | pairs |", "|---|---|"]
        lines += [f"| {_md_escape(r)} | {n} |" for r, n in sorted(reasons.items())]
    lines += [
        "",
        "## Splits",
        "",
        f"- Method `{sd.get('method')}`, seed {sd.get('seed')}, ratios "
        f"{', '.join(f'{k} {v:g}' for k, v in (sd.get('ratios') or {}).items())}; group key "
        f"`{sd.get('group_key')}`; stratified by {', '.join(sd.get('stratify') or []) or 'nothing'}.",
        f"- Recordings shared between splits: {len(audit['shared_recordings'])}. Leakage audit (RGB and thermal "
        f"thumbnails, tolerance {audit['params']['tol']} robust-σ, at most "
        f"{100 * audit['params']['outlier_fraction']:g}% changed cells): "
        f"{audit['identical_across_splits']} identical and {audit['near_identical_across_splits']} near-identical "
        "frame pairs across splits.",
        "- Select models on `val` (when present) and score `test` once.",
        "",
        "## Uses",
        "",
        "- Benchmarking RGB-thermal gas segmentation (scores: accuracy = recall, IoU, F1, F2 from one global "
        "pixel confusion matrix, ignoring 255).",
        "- Not for: safety-critical leak detection without validation on the target site and camera.",
        "",
        "## Distribution",
        "",
        f"- Version {meta['version']}" + (f" (parent {meta['parent_version']})" if meta["parent_version"] else "")
        + f", created {meta['created']}, licence `{meta['license']}`.",
        "- Integrity: `SHA256SUMS` (`sha256sum -c SHA256SUMS`) and `gasdb verify RELEASE`.",
        "",
        "## Maintenance",
        "",
        "- Versioning: PATCH repackages the same data, MINOR adds records, MAJOR changes, removes or "
        "reshuffles records across splits.",
        "- Contact, erratum process: *maintainers*.",
        "",
        "## Known limits",
        "",
    ]
    lines += [f"- {item}" for item in limits]
    return "\n".join(lines) + "\n"


def _inline_counts(counts: Mapping) -> str:
    return ", ".join(f"{k or 'none'}: {v}" for k, v in counts.items()) or "none"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _html(plan: ReleasePlan, summary: dict, meta: dict, figures: list[dict]) -> str:
    esc = html.escape
    rows = _counts_table(summary)
    table = "<table>\n<tr>" + "".join(f"<th>{esc(c)}</th>" for c in rows[0]) + "</tr>\n" + "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>\n" for r in rows[1:]) + "</table>"
    figures = sorted(figures, key=lambda f: f["file"].startswith("figures/samples_"))  # overview first
    figs = "\n".join(
        f'<figure><img src="{esc(f["file"])}" alt="{esc(f["title"])}">'
        f"<figcaption><b>{esc(f['title'])}</b>. {esc(f['caption'])}</figcaption></figure>" for f in figures)
    sd = plan.split_doc
    warn = ('<p class="warn">This release uses a split that puts frames of one recording in several splits; '
            "test scores overstate generalisation.</p>" if sd.get("leaks_across_splits") else "")
    title = f"{meta['name']} {meta['version']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
.warn {{ background: #fee; border: 1px solid #c33; padding: 0.5em; }}
</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p>Licence <code>{esc(meta['license'])}</code>; created {esc(meta['created'])}
{f"; parent version {esc(meta['parent_version'])}" if meta['parent_version'] else ""}.
Split <code>{esc(str(sd.get('method')))}</code> (seed {esc(str(sd.get('seed')))}, group key
<code>{esc(str(sd.get('group_key')))}</code>).</p>
{warn}
{table}
<p>Files: <a href="{H5_NAME}">{H5_NAME}</a> (HDF5 pack), <a href="gasdb/">gasdb/</a> (Gas-DB / RT-CAN layout),
<a href="coco/annotations.json">coco/annotations.json</a>, <a href="index.csv">index.csv</a>,
<a href="DATASHEET.md">DATASHEET.md</a>, <a href="manifest.json">manifest.json</a>,
<a href="{_SUMS}">{_SUMS}</a>. Check integrity with <code>gasdb verify</code> or
<code>sha256sum -c {_SUMS}</code>.</p>
{figs}
</body>
</html>
"""


def make_release(ws, out, *, version: str = "0.1.0", method: str = "video", ratios="0.8,0.2", seed: int = 0,
                 split: str = "default", force: bool = False) -> dict:
    """Split (when ``WS/splits/<split>.json`` does not exist yet), build and verify a release in one call.

    The call ``gasdb demo`` makes; the commands are ``gasdb split``, ``gasdb release`` and ``gasdb verify``.

    Returns
    -------
    dict
        ``{"split": path, "release": path, "version", "counts": {split: pairs}, "verified": bool,
        "problems": [...]}``.
    """
    from gasdb_tools.splits import split_path, split_workspace

    path = split_path(ws, split)
    if not path.exists():
        split_workspace(ws, method=method, ratios=ratios, seed=seed, name=split)
    out = build_release(ws, out, version=version, split=split, force=force)
    report = verify_release(out)
    manifest = read_json(out / _MANIFEST)
    return {"split": str(path), "release": str(out), "version": version,
            "counts": {s: c["pairs"] for s, c in manifest["counts"]["splits"].items()},
            "verified": report.ok, "problems": report.to_dict()["problems"]}


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """Result of :func:`verify_release`. ``problems`` holds ``{file, kind, detail}`` dicts.

    ``kind`` is ``corrupted`` (hash or size differs), ``missing``, ``extra`` (a file the manifest does
    not list), ``count`` (a recomputed count differs from the manifest) or ``format`` (unreadable).
    """

    path: str
    version: str | None = None
    files_checked: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str, kind: str, detail: str) -> None:
        self.problems.append({"file": file, "kind": kind, "detail": detail})

    def to_dict(self) -> dict:
        return {"path": self.path, "version": self.version, "ok": self.ok, "files_checked": self.files_checked,
                "problems": sorted(self.problems, key=lambda p: (p["file"], p["kind"]))}


def _read_sums(path: Path, report: VerifyReport) -> dict[str, str]:
    sums = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        report.add(_SUMS, "missing", "the checksum file is missing")
        return sums
    except (OSError, UnicodeDecodeError) as exc:
        report.add(_SUMS, "format", f"cannot read it ({exc})")
        return sums
    for n, line in enumerate(text.splitlines(), start=1):
        m = re.match(r"^([0-9a-f]{64}) [ *](.+)$", line)
        if not m:
            report.add(_SUMS, "format", f"line {n} is not '<sha256>  <path>'")
            continue
        sums[m.group(2)] = m.group(1)
    return sums


def verify_release(path) -> VerifyReport:
    """Recompute every hash and count of a release; report each corrupted, missing or extra file.

    Checks, in order: ``SHA256SUMS`` against every file it lists (``manifest.json`` included);
    the manifest's sha256 and byte count of every file; files present but listed nowhere (extra);
    then, for files whose hashes match, the counts: rows of ``index.csv`` and of each
    ``gasdb/<split>.txt`` per split, and the frames and split indices in ``gasdb.h5``.

    Parameters
    ----------
    path : path
        The release folder.

    Returns
    -------
    VerifyReport
        ``ok`` is True when nothing is wrong. Nothing is raised for a damaged release.
    """
    root = Path(path)
    report = VerifyReport(path=str(root))
    if not root.is_dir():
        report.add(str(root), "missing", "the release folder does not exist")
        return report
    sums = _read_sums(root / _SUMS, report)
    bad = set()
    manifest = None
    mpath = root / _MANIFEST
    if not mpath.is_file():
        report.add(_MANIFEST, "missing", "the manifest is missing")
    else:
        if _MANIFEST in sums and sha256_file(mpath) != sums[_MANIFEST]:
            report.add(_MANIFEST, "corrupted", "sha256 differs from SHA256SUMS")
            bad.add(_MANIFEST)
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict) or manifest.get("format") != _RELEASE_FORMAT:
                raise ValueError("not a gasdb release manifest")
        except (ValueError, UnicodeDecodeError) as exc:
            if _MANIFEST not in bad:
                report.add(_MANIFEST, "format", f"unreadable manifest ({exc})")
            manifest = None
    listed: dict[str, dict] = {}
    if manifest is not None:
        report.version = manifest.get("version")
        for entry in manifest.get("files") or []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                listed[entry["path"]] = entry
    expected = set(listed) | (set(sums) - {_MANIFEST})
    for rel in sorted(expected):
        f = root / rel
        if not f.is_file():
            report.add(rel, "missing", "listed in the manifest/SHA256SUMS but absent")
            bad.add(rel)
            continue
        digest = sha256_file(f)
        report.files_checked += 1
        entry = listed.get(rel)
        why = []
        if entry is not None and (entry.get("sha256") != digest):
            why.append("sha256 differs from manifest.json")
        if entry is not None and entry.get("bytes") != f.stat().st_size:
            why.append(f"size {f.stat().st_size} bytes, manifest says {entry.get('bytes')}")
        if rel in sums and sums[rel] != digest:
            why.append("sha256 differs from SHA256SUMS")
        if manifest is not None and rel not in listed:
            why.append("not listed in manifest.json")
        if sums and rel not in sums:
            why.append("not listed in SHA256SUMS")
        if why:
            kind = "corrupted" if any("differs" in w or "size" in w for w in why) else "format"
            report.add(rel, kind, "; ".join(why))
            bad.add(rel)
    for f in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = f.relative_to(root).as_posix()
        if rel not in expected and rel not in (_MANIFEST, _SUMS):
            report.add(rel, "extra", "not listed in the manifest")
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        rel = d.relative_to(root).as_posix()
        if not any(e == rel or e.startswith(rel + "/") for e in expected):
            report.add(rel + "/", "extra", "folder not listed in the manifest")
    if manifest is not None:
        _verify_counts(root, manifest, bad, report)
    return report


def _verify_counts(root: Path, manifest: dict, bad: set, report: VerifyReport) -> None:
    counts = (manifest.get("counts") or {}).get("splits") or {}
    total = ((manifest.get("counts") or {}).get("total") or {}).get("pairs")
    want = {s: v.get("pairs") for s, v in counts.items() if isinstance(v, dict)}
    if "index.csv" not in bad and (root / "index.csv").is_file():
        with open(root / "index.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        got = Counter(r.get("split") for r in rows)
        for s, n in want.items():
            if got.get(s, 0) != n:
                report.add("index.csv", "count", f"{got.get(s, 0)} rows in split {s}, manifest says {n}")
        if total is not None and len(rows) != total:
            report.add("index.csv", "count", f"{len(rows)} rows, manifest says {total}")
    for s, n in want.items():
        rel = f"gasdb/{s}.txt"
        if rel not in bad and (root / rel).is_file():
            lines = [ln for ln in (root / rel).read_text(encoding="utf-8").splitlines() if ln.strip()]
            if len(lines) != n:
                report.add(rel, "count", f"{len(lines)} names, manifest says {n}")
    h5 = root / H5_NAME
    if H5_NAME not in bad and h5.is_file():
        import h5py

        try:
            with h5py.File(h5, "r") as f:
                for key in ("rgb", "thermal", "mask", "valid"):
                    if key not in f:
                        report.add(H5_NAME, "count", f"dataset /{key} is missing")
                    elif total is not None and f[key].shape[0] != total:
                        report.add(H5_NAME, "count", f"/{key} holds {f[key].shape[0]} frames, manifest says {total}")
                for s, n in want.items():
                    got = f["splits"][s].shape[0] if "splits" in f and s in f["splits"] else None
                    if got != n:
                        report.add(H5_NAME, "count", f"/splits/{s} holds {got} indices, manifest says {n}")
                if f.attrs.get("dataset_version") != manifest.get("version"):
                    report.add(H5_NAME, "count", f"dataset_version {f.attrs.get('dataset_version')!r} differs from "
                                                 f"the manifest's {manifest.get('version')!r}")
        except OSError as exc:
            report.add(H5_NAME, "format", f"HDF5 file cannot be read ({exc})")
