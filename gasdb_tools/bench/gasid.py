"""Gas-identification releases: MultimodalGasData's sensor CSVs and thermal images, as one documented folder.

MultimodalGasData (Narkhede et al., *Data* 7(8):112, 2022; CC BY 4.0) pairs the readings of seven
MQ gas sensors with a thermal image per sample, in four classes. It is published in two layouts,
both read by :func:`build_id_release`:

* **original** (Mendeley v2)::

      <root>/Gas Sensors Measurements/Gas_Sensors_Measurements.csv
      <root>/Thermal Camera Images/<class>/<serial>_<class>.png

* **v3** (deduplicated, fixed 70/10/20 split)::

      <root>/Gas-Sensors-Measurements/Gas_Sensors_Measurements_{train,validation,test}.csv
      <root>/Thermal_Camera_Images/{train,validation,test}/<class>/<serial>_<class>.png

  (folder spellings with spaces, ``_`` or ``-`` are all accepted, at any depth below ``root``).

Every CSV has the header ``Serial Number,MQ2,MQ3,MQ5,MQ6,MQ7,MQ8,MQ135,Gas,Corresponding Image
Name``; ``Gas`` is the class and ``Corresponding Image Name`` the stem of the thermal image.

**The release folder** (format ``gasdb-identification`` version 1)::

    manifest.json          format, version, classes (index order), sensors, counts per split and
                           class, split source, thermal (bool), source files with sha256, and the
                           sha256 of every file below
    sensors.csv            sample,class,split,MQ2,...,MQ135,thermal  (one row per sample; sample =
                           the image stem, unique; thermal = relative path or empty)
    train.txt val.txt test.txt   sample ids, one per line
    thermal/<class>/<sample>.png  (optional) the thermal images, copied byte for byte

Classes are indexed in the order ``NoGas, Perfume, Smoke, Mixture``. A single CSV (the original
layout) is split per class, seeded, into 70 / 10 / 20 % (the v3 proportions).
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gasdb_tools.errors import FormatError
from gasdb_tools.fsutil import atomic_write_bytes, atomic_write_text, read_json, sha256_bytes, sha256_file, write_json

__all__ = ["FORMAT", "VERSION", "CLASSES", "SENSORS", "CSV_HEADER", "THERMAL_DIRS", "IdRelease", "read_sensor_csv",
           "find_multimodalgas", "build_id_release", "read_id_release", "SPLITS"]

FORMAT = "gasdb-identification"
VERSION = 1
CLASSES = ("NoGas", "Perfume", "Smoke", "Mixture")
SENSORS = ("MQ2", "MQ3", "MQ5", "MQ6", "MQ7", "MQ8", "MQ135")
CSV_HEADER = ("Serial Number",) + SENSORS + ("Gas", "Corresponding Image Name")
THERMAL_DIRS = ("Thermal Camera Images", "Thermal_Camera_Images", "Thermal-Camera-Images")
SPLITS = ("train", "val", "test")
_CSV_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_sensor_csv(path) -> list[dict]:
    """Rows of a MultimodalGasData sensor CSV: ``{"serial", "values" (7 floats), "class", "image"}``.

    Raises
    ------
    FormatError
        On another header, a non-numeric reading, an unknown class, or an image name repeated
        within the file (the error names the row and column).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read the sensor CSV ({exc})", file=path) from None
    reader = csv.reader(io.StringIO(text))
    header = tuple(h.strip() for h in next(reader, []))
    if header != CSV_HEADER:
        raise FormatError(f"unexpected header {list(header)}", file=path, field="header",
                          fix=f"MultimodalGasData's header is {','.join(CSV_HEADER)}")
    rows, seen = [], set()
    for line_no, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(CSV_HEADER):
            raise FormatError(f"{len(cells)} fields, expected {len(CSV_HEADER)}", file=path, field=f"line {line_no}")
        values = []
        for name, cell in zip(SENSORS, cells[1:8]):
            try:
                values.append(float(cell))
            except ValueError:
                raise FormatError(f"not a number: {cell!r}", file=path, field=f"line {line_no}, {name}",
                                  fix="sensor readings are numbers (raw ADC counts)") from None
        gas, image = cells[8].strip(), cells[9].strip()
        if gas not in CLASSES:
            raise FormatError(f"unknown class {gas!r}", file=path, field=f"line {line_no}, Gas",
                              fix=f"one of {', '.join(CLASSES)}")
        if not image or image in seen:
            raise FormatError(f"image name {image!r} is empty or repeated", file=path,
                              field=f"line {line_no}, Corresponding Image Name")
        seen.add(image)
        rows.append({"serial": cells[0].strip(), "values": values, "class": gas, "image": image})
    if not rows:
        raise FormatError("no data rows", file=path)
    return rows


def _csv_split(path: Path) -> str | None:
    stem = path.stem
    if stem == "Gas_Sensors_Measurements":
        return None
    suffix = stem.rsplit("_", 1)[-1].lower()
    if stem.startswith("Gas_Sensors_Measurements_") and suffix in _CSV_SPLITS:
        return _CSV_SPLITS[suffix]
    raise FormatError("not a MultimodalGasData sensor file name", file=path,
                      fix="Gas_Sensors_Measurements.csv or Gas_Sensors_Measurements_{train,validation,test}.csv")


def find_multimodalgas(root) -> dict:
    """Locate the sensor CSV(s) and the thermal image folder of a MultimodalGasData copy.

    Returns
    -------
    dict
        ``csv``: ``{split or None: path}`` (``None`` = one CSV for everything); ``thermal_dir``:
        the ``Thermal Camera Images`` folder or None; ``layout``: ``original`` or ``v3``.

    Raises
    ------
    FormatError
        When no sensor CSV is found, or single and per-split CSVs are mixed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FormatError("not a folder", file=root, fix="pass the folder holding MultimodalGasData")
    found = sorted(p for p in root.rglob("Gas_Sensors_Measurements*.csv") if p.is_file())
    if not found:
        raise FormatError("no Gas_Sensors_Measurements*.csv below this folder", file=root,
                          fix="pass the MultimodalGasData folder (Gas Sensors Measurements/ + Thermal Camera Images/)")
    csvs: dict = {}
    for p in found:
        split = _csv_split(p)
        if split in csvs:
            raise FormatError(f"two sensor files for split {split!r}: {csvs[split]} and {p}", file=root)
        csvs[split] = p
    if None in csvs and len(csvs) > 1:
        raise FormatError("both Gas_Sensors_Measurements.csv and per-split files", file=root,
                          fix="keep one layout (the original single file, or v3's three files)")
    thermal = sorted(p for name in THERMAL_DIRS for p in root.rglob(name) if p.is_dir())
    return {"csv": csvs, "thermal_dir": thermal[0] if thermal else None,
            "layout": "original" if None in csvs else "v3"}


def _carve(rows: list[dict], *, seed: int, fractions=(0.7, 0.1, 0.2)) -> dict:
    rng = np.random.default_rng(seed)
    out = {s: [] for s in SPLITS}
    for cls in CLASSES:
        members = sorted((r["image"] for r in rows if r["class"] == cls))
        order = rng.permutation(len(members))
        n_test = int(round(fractions[2] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        picked = [members[i] for i in order]
        out["test"] += picked[:n_test]
        out["val"] += picked[n_test:n_test + n_val]
        out["train"] += picked[n_test + n_val:]
    return {s: sorted(v) for s, v in out.items()}


def build_id_release(source, out, *, thermal: str = "auto", seed: int = 0, force: bool = False) -> dict:
    """Build a gas-identification release from MultimodalGasData (either layout).

    Parameters
    ----------
    source : path
        The dataset folder.
    out : path
        Release folder to write (created).
    thermal : {'auto', 'copy', 'none'}
        ``copy``: every sample's thermal image must exist and is copied; ``none``: sensors only;
        ``auto``: copy when the dataset has a thermal folder, else sensors only.
    seed : int
        Seeds the per-class 70/10/20 split of a single CSV (v3 files keep their split).
    force : bool
        Rebuild although ``out`` already holds a release.

    Returns
    -------
    dict
        The manifest, plus ``"up_to_date": True`` when ``out`` already held this very release.

    Raises
    ------
    FormatError
        On bad CSVs, a sample without its thermal image (``copy``/``auto``), or an image name in
        two split files.
    """
    if thermal not in ("auto", "copy", "none"):
        raise ValueError(f"thermal must be 'auto', 'copy' or 'none', got {thermal!r}")
    from gasdb_tools import __version__

    found = find_multimodalgas(source)
    csv_files = found["csv"]
    source_files = {str(p.relative_to(Path(source))): sha256_file(p) for p in csv_files.values()}
    thermal_dir = found["thermal_dir"]
    use_thermal = thermal == "copy" or (thermal == "auto" and thermal_dir is not None)
    out = Path(out)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and not force:
        old = read_json(manifest_path, error=FormatError)
        src = old.get("source", {})
        if (src.get("files") == source_files and src.get("thermal_mode") == thermal and src.get("seed") == seed
                and old.get("thermal") == use_thermal):
            return {**old, "up_to_date": True}
        raise FormatError("the folder already holds another identification release", file=out,
                          fix="choose another output folder or pass --force")
    rows, split_of = [], {}
    for split, path in sorted(csv_files.items(), key=lambda kv: SPLITS.index(kv[0]) if kv[0] else -1):
        for r in read_sensor_csv(path):
            if r["image"] in split_of:
                raise FormatError(f"image name {r['image']!r} is in two sensor files", file=path,
                                  field="Corresponding Image Name")
            split_of[r["image"]] = split
            rows.append(r)
    if None in csv_files:
        split_of = {name: s for s, names in _carve(rows, seed=seed).items() for name in names}
        split_source = f"carved per class 70/10/20 with seed {seed}"
    else:
        split_source = "the dataset's split files (" + ", ".join(p.name for p in csv_files.values()) + ")"
    images = {}
    if use_thermal:
        if thermal_dir is None:
            raise FormatError("no 'Thermal Camera Images' folder", file=source,
                              fix="add the thermal images, or build a sensors-only release (--thermal none)")
        for p in thermal_dir.rglob("*"):
            if p.is_file() and p.suffix.lower() in _IMAGE_EXT:
                images.setdefault(p.stem, p)
        missing = [r["image"] for r in rows if r["image"] not in images]
        if missing:
            raise FormatError(f"{len(missing)} sample(s) have no thermal image (e.g. {missing[:3]})", file=thermal_dir,
                              fix="restore them, or build a sensors-only release (--thermal none)")
        for r in rows:
            cls_dir = images[r["image"]].parent.name
            if cls_dir in CLASSES and cls_dir != r["class"]:
                raise FormatError(f"the image of {r['image']!r} is in the {cls_dir!r} folder but its class is "
                                  f"{r['class']!r}", file=images[r["image"]], fix="move the image or fix the CSV")
    if force and out.exists():
        for stale in ("thermal", "sensors.csv", "manifest.json", *(f"{s}.txt" for s in SPLITS)):
            p = out / stale
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: (SPLITS.index(split_of[r["image"]]), CLASSES.index(r["class"]), r["image"]))
    files = {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("sample", "class", "split") + SENSORS + ("thermal",))
    for r in rows:
        rel = ""
        if use_thermal:
            src = images[r["image"]]
            rel = f"thermal/{r['class']}/{r['image']}{src.suffix.lower()}"
            data = src.read_bytes()
            atomic_write_bytes(out / rel, data, sync=False)
            files[rel] = sha256_bytes(data)
        values = [int(v) if float(v).is_integer() else v for v in r["values"]]
        writer.writerow((r["image"], r["class"], split_of[r["image"]], *values, rel))
    atomic_write_text(out / "sensors.csv", buf.getvalue())
    files["sensors.csv"] = sha256_file(out / "sensors.csv")
    counts = {}
    for s in SPLITS:
        names = [r["image"] for r in rows if split_of[r["image"]] == s]
        atomic_write_text(out / f"{s}.txt", "".join(n + "\n" for n in names))
        files[f"{s}.txt"] = sha256_file(out / f"{s}.txt")
        counts[s] = {c: sum(1 for r in rows if split_of[r["image"]] == s and r["class"] == c) for c in CLASSES}
    manifest = {
        "format": FORMAT, "version": VERSION, "created_by": f"gasdb-tools {__version__}",
        "dataset": "MultimodalGasData (Narkhede et al., Data 7(8):112, 2022; CC BY 4.0)",
        "classes": list(CLASSES), "sensors": list(SENSORS), "n_samples": len(rows),
        "splits": {s: sum(counts[s].values()) for s in SPLITS}, "counts": counts, "split_source": split_source,
        "thermal": use_thermal, "n_thermal": len(rows) if use_thermal else 0,
        "source": {"path": str(Path(source)), "layout": found["layout"], "files": source_files,
                   "thermal_dir": str(thermal_dir.relative_to(Path(source))) if thermal_dir else None,
                   "thermal_mode": thermal, "seed": seed},
        "files": dict(sorted(files.items())),
    }
    write_json(manifest_path, manifest)
    return manifest


@dataclass(frozen=True)
class IdRelease:
    """A gas-identification release in memory (thermal images stay on disk).

    Attributes
    ----------
    root : Path
    classes, sensors : tuple of str
    ids : list of str
        Sample ids, in ``sensors.csv`` order.
    labels : (N,) int64 array
        Class indices into ``classes``.
    values : (N, n_sensors) float32 array
        Raw sensor readings.
    splits : dict
        ``{"train"|"val"|"test": (k,) int64 array of row indices}``.
    thermal : list of Path or None
        Per sample, the thermal image (None in a sensors-only release).
    manifest : dict
    """

    root: Path
    classes: tuple
    sensors: tuple
    ids: list
    labels: np.ndarray
    values: np.ndarray
    splits: dict
    thermal: list
    manifest: dict = field(repr=False)

    @property
    def has_thermal(self) -> bool:
        """Whether every sample has a thermal image."""
        return bool(self.manifest.get("thermal")) and all(p is not None for p in self.thermal)


def read_id_release(path) -> IdRelease:
    """Read a release written by :func:`build_id_release` (its folder or its ``manifest.json``).

    Raises
    ------
    FormatError
        When the manifest is missing or of another format/version, a column is missing, a class
        or split is unknown, a split list disagrees with ``sensors.csv``, or a listed thermal
        image is missing.
    """
    root = Path(path)
    if root.is_file() and root.name == "manifest.json":
        root = root.parent
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FormatError("not an identification release (no manifest.json)", file=root,
                          fix="build one with `gasdb bench id-release MULTIMODALGASDATA OUT`")
    manifest = read_json(manifest_path, error=FormatError)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise FormatError(f"format {manifest.get('format')!r} version {manifest.get('version')!r}", file=manifest_path,
                          field="format", fix=f"expected {FORMAT!r} version {VERSION}")
    classes, sensors = tuple(manifest["classes"]), tuple(manifest["sensors"])
    table = root / "sensors.csv"
    try:
        reader = csv.DictReader(io.StringIO(table.read_text(encoding="utf-8")))
        records = list(reader)
    except OSError as exc:
        raise FormatError(f"cannot read ({exc})", file=table) from None
    need = ("sample", "class", "split", *sensors, "thermal")
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
        raise FormatError(f"missing column(s) {missing}", file=table, field="header")
    ids, labels, values, thermal, split_idx = [], [], [], [], {s: [] for s in SPLITS}
    for i, rec in enumerate(records):
        where = f"line {i + 2}"
        if rec["class"] not in classes:
            raise FormatError(f"unknown class {rec['class']!r}", file=table, field=f"{where}, class")
        if rec["split"] not in SPLITS:
            raise FormatError(f"unknown split {rec['split']!r}", file=table, field=f"{where}, split")
        try:
            values.append([float(rec[s]) for s in sensors])
        except ValueError:
            raise FormatError("a sensor reading is not a number", file=table, field=where) from None
        ids.append(rec["sample"])
        labels.append(classes.index(rec["class"]))
        split_idx[rec["split"]].append(i)
        rel = rec["thermal"].strip()
        if rel:
            p = root / rel
            if not p.is_file():
                raise FormatError("thermal image listed but missing", file=p, field=f"{table.name} {where}")
            thermal.append(p)
        else:
            thermal.append(None)
    if len(set(ids)) != len(ids):
        raise FormatError("a sample id is repeated", file=table, field="sample")
    for s in SPLITS:
        listed = root / f"{s}.txt"
        if listed.is_file():
            names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
            if sorted(names) != sorted(ids[i] for i in split_idx[s]):
                raise FormatError(f"{s}.txt does not list the {s} rows of sensors.csv", file=listed,
                                  fix="rebuild the release")
    return IdRelease(root=root, classes=classes, sensors=sensors, ids=ids, labels=np.asarray(labels, np.int64),
                     values=np.asarray(values, np.float32).reshape(len(ids), len(sensors)),
                     splits={s: np.asarray(v, np.int64) for s, v in split_idx.items()}, thermal=thermal,
                     manifest=manifest)
