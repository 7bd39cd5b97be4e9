"""A tiny hand-built workspace for the annotation/export tests (no other stage needed).

Two recordings x three pairs of 48x64 frames: RGB, 16-bit thermal, aligned thermal (the same
pixels), a ``valid`` mask whose left 4 columns are invalid, the 8-bit enhanced frame annotators
see, and LabelMe documents for all but the last pair of each recording.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gasdb_tools import labelme_format as lf
from gasdb_tools.imaging import write_image
from gasdb_tools.workspace import Workspace, make_pair_id

H, W = 48, 64
INVALID_COLS = 4


def gas_polygon(k: int) -> list[list[float]]:
    """A gas polygon that moves with the pair index ``k``."""
    x0 = 10 + 3 * k
    return [[x0, 10], [x0 + 20, 12], [x0 + 18, 30], [x0 + 2, 28]]


def label_pair(ws: Workspace, pair_id: str, shapes, *, flags=None, **extra) -> Path:
    """Write a LabelMe document for a pair (imagePath -> its enhanced frame) and record it in the index."""
    row = ws.read_index().pairs[pair_id]
    path = ws.output_path("labels", row["recording"], f"{pair_id}.json")
    image = ws.path(row["enhanced"])
    rel = os.path.relpath(image, path.parent)
    flags = {"no_leak": False} if flags is None else dict(flags)
    flags.setdefault("approved", True)  # reviewed by a person
    doc = lf.new_document(rel, H, W, shapes=shapes, flags=flags, gasdb={"pair_id": pair_id}, **extra)
    lf.write(doc, path)
    with ws.transaction() as index:
        index.pairs[pair_id]["label"] = ws.rel(path)
    return path


def make_workspace(root, *, recordings=("rec_a", "rec_b"), pairs_per_recording: int = 3, seed: int = 0,
                   label: bool = True) -> Workspace:
    """Build the tiny workspace under ``root`` and return it."""
    rng = np.random.default_rng(seed)
    ws = Workspace.init(Path(root), name="tiny")
    rows = {}
    scenes = ("sunny", "rainy", "near", "far")
    for r, rec in enumerate(recordings):
        for k in range(pairs_per_recording):
            t = 1.0 + k * 0.5
            pid = make_pair_id(rec, t)
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            thermal = rng.integers(1000, 3000, (H, W), dtype=np.uint16)
            valid = np.full((H, W), 255, np.uint8)
            valid[:, :INVALID_COLS] = 0
            enhanced = (thermal // 12).astype(np.uint8)
            paths = {
                "rgb": ws.output_path("frames", rec, f"{pid}.png", sub="rgb"),
                "thermal": ws.output_path("frames", rec, f"{pid}.png", sub="thermal"),
                "aligned": ws.output_path("aligned", rec, f"{pid}.png"),
                "valid": ws.output_path("aligned", rec, f"{pid}_valid.png"),
                "enhanced": ws.output_path("enhanced", rec, f"{pid}.png"),
            }
            for key, image in (("rgb", rgb), ("thermal", thermal), ("aligned", thermal), ("valid", valid),
                               ("enhanced", enhanced)):
                write_image(paths[key], image)
            rows[pid] = {"pair_id": pid, "recording": rec, "t_rgb": repr(t), "t_thermal": repr(t), "dt": "0.0",
                         **{k: ws.rel(v) for k, v in paths.items()}, "label": "", "review": ""}
    with ws.transaction() as index:
        for r, rec in enumerate(recordings):
            index.recordings[rec] = {"id": rec, "rgb": f"/videos/{rec}_rgb.mp4", "thermal": f"/videos/{rec}_t.mp4",
                                     "scene": scenes[r % len(scenes)], "tags": "leak" if r == 0 else ""}
        index.pairs.update(rows)
    if label:
        for rec in recordings:
            pids = sorted(p for p in rows if rows[p]["recording"] == rec)
            for k, pid in enumerate(pids[:-1]):
                label_pair(ws, pid, [lf.make_shape(gas_polygon(k), group_id=1),
                                     lf.make_shape([[40, 35], [50, 44]], shape_type="rectangle", group_id=2)])
    return ws
