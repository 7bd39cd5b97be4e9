"""Registering recordings in a workspace (the ``gasdb add`` stage).

A recording is one take: an RGB video and a thermal video of a fixed two-camera rig, or a thermal
video alone (most real gas data: GasVid, IOD-Video, SimGas). Its row in ``recordings.csv`` keeps
both sources (``rgb`` is empty for a thermal camera alone), their sha256, sizes and frame rates,
its scene type, tags and rig.
"""

from __future__ import annotations

import re
from pathlib import Path

from gasdb_tools.errors import WorkspaceError
from gasdb_tools.fsutil import sha256_file
from gasdb_tools.sensors import read_sensor_csv
from gasdb_tools.video import probe
from gasdb_tools.workspace import SCENES, Workspace, check_id

__all__ = ["add_recording", "derive_recording_id", "MODALITIES", "modality"]

#: What a recording holds: both cameras, or the thermal camera alone.
MODALITIES = ("rgb+thermal", "thermal")


def modality(row) -> str:
    """``rgb+thermal`` or ``thermal`` (no RGB video) for a recordings.csv row.

    >>> modality({"rgb": "", "thermal": "t.mp4"})
    'thermal'
    """
    return "rgb+thermal" if row.get("rgb") else "thermal"


def derive_recording_id(video: Path) -> str:
    """A recording id from a video file: its folder name for ``<take>/rgb.mp4`` (or ``thermal.mp4``), else its stem."""
    video = Path(video)
    stem = video.stem
    generic = ("rgb", "visible", "color", "colour", "thermal", "infrared", "ir", "lwir")
    base = video.resolve().parent.name if stem.lower() in generic else stem
    return re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-_")[:64] or "recording"


def add_recording(ws: Workspace, *, thermal, scene: str, rgb=None, recording_id: str | None = None,
                  tags=(), offset_s: float | None = None, rig: str | None = None, allow_same: bool = False,
                  sensors=None, sensor_offset_s: float = 0.0) -> dict:
    """Validate and register one recording; returns its index row.

    Parameters
    ----------
    ws : Workspace
    thermal : path
        The thermal video.
    scene : str
        One of :data:`gasdb_tools.workspace.SCENES`.
    rgb : path, optional
        The RGB video of the same take; None for a thermal camera alone.
    recording_id : str, optional
        Default: derived from the file names (:func:`derive_recording_id`).
    tags : sequence of str
        Free tags (no ``,`` or ``;``).
    offset_s : float, optional
        Known start offset (``t_rgb = t_thermal + offset_s``); RGB + thermal only.
    rig : str, optional
        The camera rig (its calibration is ``calibration/<rig>.json``); default the workspace's.
    allow_same : bool
        Accept an RGB and a thermal file with the same content (refused by default: it is almost
        always a mistake, and the release would call the pairs RGB-thermal).
    sensors : path, optional
        A gas-sensor stream logged beside the cameras (CSV: ``t`` on the thermal clock plus one
        column per channel; :mod:`gasdb_tools.sensors`); ``extract`` attaches its readings to pairs.
    sensor_offset_s : float
        Shift of the sensor clock: ``t_thermal = t + sensor_offset_s``.

    Both videos are probed (opened, first frame decoded) before the index is touched.

    Raises
    ------
    VideoError
        A file is missing or not a decodable video.
    WorkspaceError
        Unknown scene, invalid or duplicate id or rig, the same files already registered, RGB and
        thermal with equal content, or an offset without an RGB video.
    """
    thermal = Path(thermal).resolve()
    rgb = Path(rgb).resolve() if rgb is not None else None
    if scene not in SCENES:
        raise WorkspaceError(f"unknown scene type {scene!r}", field="scene", fix=f"use one of: {', '.join(SCENES)}")
    rec_id = check_id(recording_id if recording_id is not None else derive_recording_id(rgb or thermal))
    rig = check_id(rig or ws.settings.get("rig", "default"), what="rig name")
    for tag in tags:
        if not tag or "," in tag or ";" in tag:
            raise WorkspaceError(f"invalid tag {tag!r}", field="tag", fix="use tags without ',' or ';'")
    if rgb is None and offset_s is not None:
        raise WorkspaceError("an offset needs an RGB video (t_rgb = t_thermal + offset)", field="offset",
                             fix="leave --offset out for a thermal camera alone")
    stream = read_sensor_csv(sensors, offset_s=sensor_offset_s) if sensors is not None else None
    thermal_info = probe(thermal)
    rgb_info = probe(rgb) if rgb is not None else None
    thermal_sha = sha256_file(thermal)
    rgb_sha = sha256_file(rgb) if rgb is not None else ""
    if rgb is not None and rgb_sha == thermal_sha and not allow_same:
        raise WorkspaceError("the RGB and the thermal file have the same content", file=rgb, field="rgb",
                             fix="pass the RGB and the thermal video of the take; for a thermal camera alone leave "
                                 "--rgb out; --allow-same registers them anyway")
    row = {
        "id": rec_id,
        "rgb": ws.rel(rgb) if rgb is not None else "",
        "thermal": ws.rel(thermal),
        "scene": scene,
        "tags": ";".join(tags),
        "rig": rig,
        "rgb_sha256": rgb_sha,
        "thermal_sha256": thermal_sha,
        "offset_s": repr(float(offset_s)) if offset_s is not None else "",
        "offset_source": "given" if offset_s is not None else "",
        "offset_confidence": "",
        "rgb_size": f"{rgb_info.width}x{rgb_info.height}" if rgb_info else "",
        "thermal_size": f"{thermal_info.width}x{thermal_info.height}",
        "rgb_fps": f"{rgb_info.fps:.6g}" if rgb_info else "",
        "thermal_fps": f"{thermal_info.fps:.6g}",
        "same_source": "1" if rgb is not None and rgb_sha == thermal_sha else "",
    }
    if stream is not None:
        row.update({"sensors": ws.rel(Path(sensors).resolve()), "sensors_sha256": sha256_file(sensors),
                    "sensor_offset_s": repr(float(sensor_offset_s)), "sensor_channels": ";".join(stream.channels)})
    with ws.transaction() as index:
        if rec_id in index.recordings:
            raise WorkspaceError(f"recording id {rec_id!r} is already registered", file=ws.root / ws.RECORDINGS,
                                 field="id", fix="pass another --id, or keep the existing recording")
        for other in index.recordings.values():
            if other.get("rgb_sha256", "") == row["rgb_sha256"] and other.get("thermal_sha256") == row["thermal_sha256"]:
                raise WorkspaceError(f"these files are already registered as recording {other['id']!r}",
                                     file=rgb or thermal, fix="nothing to do; the recording is in the workspace")
        index.recordings[rec_id] = row
    return row
