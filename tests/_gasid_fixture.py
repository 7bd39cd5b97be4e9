"""A tiny synthetic MultimodalGasData copy in the dataset's exact layouts (built in tmp_path, never committed).

``original`` (Mendeley v2)::

    ROOT/Gas Sensors Measurements/Gas_Sensors_Measurements.csv
    ROOT/Thermal Camera Images/<class>/<serial>_<class>.png

``v3``::

    ROOT/MultimodalGasDataset/Gas-Sensors-Measurements/Gas_Sensors_Measurements_{train,validation,test}.csv
    ROOT/MultimodalGasDataset/Thermal_Camera_Images/{train,validation,test}/<class>/<serial>_<class>.png

The CSV header is the dataset's: ``Serial Number,MQ2,MQ3,MQ5,MQ6,MQ7,MQ8,MQ135,Gas,Corresponding Image Name``;
serial numbers count per class from 1. Sensor readings are integers around class-specific levels;
each thermal image is dark with a warm disc whose size and brightness depend on the class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gasdb_tools.imaging import write_image

CLASSES = ("NoGas", "Perfume", "Smoke", "Mixture")
HEADER = "Serial Number,MQ2,MQ3,MQ5,MQ6,MQ7,MQ8,MQ135,Gas,Corresponding Image Name"
_LEVELS = {"NoGas": (750, 530, 430, 440, 600, 660, 470), "Perfume": (700, 520, 400, 390, 620, 570, 430),
           "Smoke": (560, 350, 330, 370, 570, 560, 285), "Mixture": (650, 430, 430, 400, 460, 310, 420)}
_DISC = {"NoGas": (0.0, 0), "Perfume": (0.18, 90), "Smoke": (0.42, 150), "Mixture": (0.30, 220)}


def _thermal(cls: str, rng: np.random.Generator, size) -> np.ndarray:
    w, h = size
    img = rng.normal(60, 6, (h, w))
    radius, warm = _DISC[cls]
    if radius:
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        img += warm * (((yy - cy) ** 2 + (xx - cx) ** 2) <= (radius * min(w, h)) ** 2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _rows(n_per_class: int, rng: np.random.Generator) -> list[tuple]:
    rows = []
    for cls in CLASSES:
        for serial in range(1, n_per_class + 1):
            values = np.rint(np.asarray(_LEVELS[cls]) + rng.normal(0, 6, 7)).astype(int)
            rows.append((serial, *values.tolist(), cls, f"{serial}_{cls}"))
    order = rng.permutation(len(rows))  # the published files are not sorted by class
    return [rows[i] for i in order]


def _write_csv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows), encoding="utf-8")


def make_multimodalgas(root: Path, *, n_per_class: int = 10, layout: str = "original", size=(40, 32), seed: int = 0,
                       thermal: bool = True) -> Path:
    """Write a synthetic copy; returns the folder to give to ``build_id_release``."""
    rng = np.random.default_rng(seed)
    rows = _rows(n_per_class, rng)
    if layout == "original":
        _write_csv(root / "Gas Sensors Measurements" / "Gas_Sensors_Measurements.csv", rows)
        image_dir = {r[-1]: root / "Thermal Camera Images" / r[-2] for r in rows}
    elif layout == "v3":
        base = root / "MultimodalGasDataset"
        splits = {"train": [], "validation": [], "test": []}
        for i, r in enumerate(sorted(rows, key=lambda r: (r[-2], r[0]))):
            k = i % 10
            splits["train" if k < 7 else "validation" if k == 7 else "test"].append(r)
        image_dir = {}
        for split, part in splits.items():
            _write_csv(base / "Gas-Sensors-Measurements" / f"Gas_Sensors_Measurements_{split}.csv", part)
            image_dir.update({r[-1]: base / "Thermal_Camera_Images" / split / r[-2] for r in part})
    else:
        raise ValueError(layout)
    if thermal:
        for r in rows:
            write_image(image_dir[r[-1]] / f"{r[-1]}.png", _thermal(r[-2], rng, size))
    return root
