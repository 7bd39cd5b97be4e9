"""Registering recordings in a workspace (the ``gasdb add`` stage)."""

from __future__ import annotations

import re
from pathlib import Path

from gasdb_tools.errors import WorkspaceError
from gasdb_tools.fsutil import sha256_file
from gasdb_tools.video import probe
from gasdb_tools.workspace import SCENES, Workspace, check_id

__all__ = ["add_recording", "derive_recording_id"]


def derive_recording_id(rgb: Path) -> str:
    """A recording id from the RGB file: its folder name for ``<take>/rgb.mp4``, else its stem."""
    rgb = Path(rgb)
    stem = rgb.stem
    base = rgb.resolve().parent.name if stem.lower() in ("rgb", "visible", "color", "colour") else stem
    return re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-_")[:64] or "recording"


def add_recording(ws: Workspace, *, rgb, thermal, scene: str, recording_id: str | None = None,
                  tags=(), offset_s: float | None = None, rig: str | None = None) -> dict:
    """Validate and register one recording; returns its index row.

    Both videos are probed (opened, first frame decoded) before the index is touched.

    Raises
    ------
    VideoError
        A file is missing or not a decodable video.
    WorkspaceError
        Unknown scene, invalid or duplicate id, or the same files already registered.
    """
    rgb, thermal = Path(rgb).resolve(), Path(thermal).resolve()
    if scene not in SCENES:
        raise WorkspaceError(f"unknown scene type {scene!r}", field="scene", fix=f"use one of: {', '.join(SCENES)}")
    rec_id = check_id(recording_id if recording_id is not None else derive_recording_id(rgb))
    for tag in tags:
        if not tag or "," in tag or ";" in tag:
            raise WorkspaceError(f"invalid tag {tag!r}", field="tag", fix="use tags without ',' or ';'")
    rgb_info, thermal_info = probe(rgb), probe(thermal)
    row = {
        "id": rec_id,
        "rgb": ws.rel(rgb),
        "thermal": ws.rel(thermal),
        "scene": scene,
        "tags": ";".join(tags),
        "rig": rig or ws.settings.get("rig", "default"),
        "rgb_sha256": sha256_file(rgb),
        "thermal_sha256": sha256_file(thermal),
        "offset_s": repr(float(offset_s)) if offset_s is not None else "",
        "offset_source": "given" if offset_s is not None else "",
        "offset_confidence": "",
        "rgb_size": f"{rgb_info.width}x{rgb_info.height}",
        "thermal_size": f"{thermal_info.width}x{thermal_info.height}",
        "rgb_fps": f"{rgb_info.fps:.6g}",
        "thermal_fps": f"{thermal_info.fps:.6g}",
    }
    with ws.transaction() as index:
        if rec_id in index.recordings:
            raise WorkspaceError(f"recording id {rec_id!r} is already registered", file=ws.root / ws.RECORDINGS,
                                 field="id", fix="pass another --id, or keep the existing recording")
        for other in index.recordings.values():
            if other.get("rgb_sha256") == row["rgb_sha256"] and other.get("thermal_sha256") == row["thermal_sha256"]:
                raise WorkspaceError(f"these files are already registered as recording {other['id']!r}",
                                     file=rgb, fix="nothing to do; the recording is in the workspace")
        index.recordings[rec_id] = row
    return row
