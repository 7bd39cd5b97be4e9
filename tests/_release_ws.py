"""A small labelled, aligned workspace built by hand from the rig simulator (for split/release/data tests).

No video is decoded: frames come straight from :class:`gasdb_tools.synth.SynthRig`, thermal is
stored as 16-bit (raw bit depth kept), the aligned thermal is warped with the rig's homography,
and labels are LabelMe polygons of the exact plume mask (warped into the RGB frame).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gasdb_tools import labelme_format
from gasdb_tools.fsutil import write_json
from gasdb_tools.imaging import write_image
from gasdb_tools.review import content_hash
from gasdb_tools.synth import SynthRig
from gasdb_tools.workspace import Workspace, make_pair_id

SCENES = ("sunny", "rainy", "near", "far", "overlook", "simple-background")


def _polygons(mask: np.ndarray) -> list[dict]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    shapes = []
    for c in contours:
        pts = c[:, 0, :].astype(float)
        if len(pts) >= 3 and cv2.contourArea(c) >= 2:
            shapes.append(labelme_format.make_shape(pts, label="gas", group_id=1))
    return shapes


def build_workspace(root, *, recordings: int = 4, pairs_per: int | list = 3, size=(96, 80), step_s: float = 0.04,
                    gas=None, scenes=None, blacklist: dict | None = None, unlabelled=(), ignore_box=True,
                    seed: int = 0, rgb_scale: int = 1) -> Workspace:
    """Create ``root`` as a workspace with ``recordings`` recordings of ``pairs_per`` labelled pairs.

    ``gas[i]`` False gives recording ``i`` frames before the leak starts (empty masks).
    ``blacklist`` maps pair index ``(rec, k)`` -> reason; ``unlabelled`` lists ``(rec, k)`` without a label.
    ``rgb_scale`` > 1 stores the RGB frames that many times larger than the annotation frame (as after
    ``align --size`` with a smaller size than the camera's).
    """
    ws = Workspace.init(root, name="tiny")
    w, h = size
    counts = pairs_per if isinstance(pairs_per, (list, tuple)) else [pairs_per] * recordings
    gas = list(gas) if gas is not None else [True] * recordings
    scenes = list(scenes) if scenes is not None else [SCENES[i % len(SCENES)] for i in range(recordings)]
    rows, recs, black = {}, {}, {}
    hom = None
    for i in range(recordings):
        rig = SynthRig(seed=seed + i, size=size, distractors=False)
        hom = rig.homography
        rec = f"rec{i:02d}"
        recs[rec] = {"id": rec, "rgb": f"/videos/{rec}/rgb.mp4", "thermal": f"/videos/{rec}/thermal.mp4",
                     "scene": scenes[i], "tags": "", "rig": "default", "rgb_sha256": f"{i:064x}",
                     "thermal_sha256": f"{i + 100:064x}", "offset_s": repr(rig.offset_s), "offset_source": "given",
                     "offset_confidence": ""}
        t0 = rig.leak_start_s + 1.0 if gas[i] else 0.05
        for k in range(counts[i]):
            t_th = round(t0 + k * step_s, 6)
            t_rgb = t_th + rig.offset_s
            pid = make_pair_id(rec, t_rgb)
            rgb = rig.rgb(t_rgb)
            th8, gas_mask = rig.thermal(t_th)
            thermal = th8.astype(np.uint16) * 257 + np.uint16(k % 7)  # 16-bit, raw bit depth kept
            aligned = cv2.warpPerspective(thermal, hom, (w, h), flags=cv2.INTER_NEAREST)
            valid = cv2.warpPerspective(np.full((h, w), 255, np.uint8), hom, (w, h), flags=cv2.INTER_NEAREST)
            mask_rgb = cv2.warpPerspective(gas_mask.astype(np.uint8), hom, (w, h), flags=cv2.INTER_NEAREST)
            row = {"pair_id": pid, "recording": rec, "t_rgb": repr(t_rgb), "t_thermal": repr(t_th), "dt": "0.0",
                   "rgb": f"frames/{rec}/rgb/{pid}.png", "thermal": f"frames/{rec}/thermal/{pid}.png",
                   "aligned": f"aligned/{rec}/{pid}.png", "valid": f"aligned/{rec}/{pid}_valid.png",
                   "enhanced": "", "label": ""}
            if rgb_scale != 1:
                rgb = cv2.resize(rgb, (w * rgb_scale, h * rgb_scale), interpolation=cv2.INTER_NEAREST)
            write_image(ws.path(row["rgb"]), rgb, compression=1)
            write_image(ws.path(row["thermal"]), thermal, compression=1)
            write_image(ws.path(row["aligned"]), aligned, compression=1)
            write_image(ws.path(row["valid"]), valid, compression=1)
            if (i, k) not in unlabelled:
                shapes = _polygons(mask_rgb)
                if ignore_box and k == 0:
                    shapes.append(labelme_format.make_shape([[1, 1], [6, 5]], label="__ignore__",
                                                            shape_type="rectangle"))
                label = f"labels/{rec}/{pid}.json"
                status = ("approved", "edited", "pending")[k % 3]
                doc = labelme_format.new_document(f"../../aligned/{rec}/{pid}.png", h, w, shapes=shapes,
                                                  flags={"approved": status == "approved"},
                                                  gasdb={"pair_id": pid, "preannot": {"method": "bgsub"},
                                                         "review": {"status": "pending"}})
                if status == "pending":  # an untouched draft: its content is what pre-annotation recorded
                    doc["gasdb"]["preannot"]["content_sha256"] = content_hash(doc)
                labelme_format.write(doc, ws.path(label))
                row["label"] = label
            if blacklist and (i, k) in blacklist:
                black[pid] = blacklist[(i, k)]
            rows[pid] = row
    with ws.transaction() as index:
        index.recordings.update(recs)
        index.pairs.update(rows)
    if black:
        ws.set_blacklist(black)
    write_json(ws.root / "calibration" / "default.json", {"rig": "default", "homography_thermal_to_rgb": hom.tolist()})
    return ws


def add_thermal_only(ws: Workspace, rec: str, *, pairs: int = 3, size=(80, 64), scene: str = "far",
                     status: str = "pending", seed: int = 7) -> list[str]:
    """Add a thermal camera alone (8-bit frames of ``size``, no RGB, no aligned frame) with labelled pairs.

    Every document is an untouched draft (``pending``) unless ``status`` says otherwise. Returns the pair ids.
    """
    w, h = size
    rig = SynthRig(seed=seed, size=size, distractors=False)
    rows = {}
    for k in range(pairs):
        t = round(rig.leak_start_s + 1.0 + 0.04 * k, 6)
        pid = make_pair_id(rec, t)
        thermal, gas_mask = rig.thermal(t)
        row = {"pair_id": pid, "recording": rec, "t_rgb": "", "t_thermal": repr(t), "dt": "",
               "rgb": "", "thermal": f"frames/{rec}/thermal/{pid}.png", "aligned": "", "valid": "",
               "enhanced": "", "label": f"labels/{rec}/{pid}.json"}
        write_image(ws.path(row["thermal"]), thermal, compression=1)
        doc = labelme_format.new_document(f"../../frames/{rec}/thermal/{pid}.png", h, w,
                                          shapes=_polygons(gas_mask.astype(np.uint8)),
                                          flags={"approved": status == "approved"},
                                          gasdb={"pair_id": pid, "frame": "thermal",
                                                 "preannot": {"method": "gas", "preset": "mask"},
                                                 "review": {"status": "pending"}})
        if status == "pending":
            doc["gasdb"]["preannot"]["content_sha256"] = content_hash(doc)
        labelme_format.write(doc, ws.path(row["label"]))
        rows[pid] = row
    with ws.transaction() as index:
        index.recordings[rec] = {"id": rec, "rgb": "", "thermal": f"/videos/{rec}.mp4", "scene": scene, "tags": "",
                                 "rig": "default", "thermal_sha256": f"{seed:064x}", "thermal_size": f"{w}x{h}"}
        index.pairs.update(rows)
    return sorted(rows)


def tree_state(root) -> dict[str, tuple[int, int, bytes]]:
    """``{relative path: (size, mtime_ns, bytes)}`` of every file under ``root`` (to prove nothing changed)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}
