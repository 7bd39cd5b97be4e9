"""Registering recordings in a workspace (the ``gasdb add`` stage).

A recording is one take: an RGB video and a thermal video of a fixed two-camera rig, or a thermal
video alone (most real gas data: GasVid, IOD-Video, SimGas). Its row in ``recordings.csv`` keeps
both sources (``rgb`` is empty for a thermal camera alone), their sha256, sizes and frame rates,
its scene type, tags and rig.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from gasdb_tools.errors import GasdbError, WorkspaceError
from gasdb_tools.fsutil import sha256_file, write_json
from gasdb_tools.sensors import read_sensor_csv
from gasdb_tools.video import probe
from gasdb_tools.workspace import SCENES, Workspace, check_id

__all__ = ["add_recording", "derive_recording_id", "remove_recording", "MODALITIES", "modality", "OUTPUT_AREAS"]

#: What a recording holds: both cameras, or the thermal camera alone.
MODALITIES = ("rgb+thermal", "thermal")
#: The workspace folders that hold one recording's outputs as ``WS/<area>/<recording>/``.
OUTPUT_AREAS = ("frames", "aligned", "enhanced", "labels")


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


def _free_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that does not exist."""
    k, out = 1, base
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def remove_recording(ws: Workspace, recording_id: str, *, force: bool = False) -> dict:
    """Unregister a recording: its rows leave the index and its outputs move to ``WS/removed/<id>/``.

    Nothing is deleted: the recording's folders (:data:`OUTPUT_AREAS`: frames, aligned and enhanced
    frames, LabelMe documents) and its per-recording calibration are moved, as they are, into
    ``WS/removed/<id>/`` (``<id>-2``, ... when that exists), so a person can take a document back.
    The source videos are not touched. A recording whose documents a person edited or approved is
    refused unless ``force``. Its pairs leave ``blacklist.csv``; split files that list them are
    reported (rerun ``gasdb split``), not rewritten.

    Returns ``{"id", "pairs", "review", "moved_to", "moved", "stale_splits"}``.

    Raises
    ------
    WorkspaceError
        An unknown id, or people's work in the recording without ``force``.
    """
    from gasdb_tools.review import counts, read_states
    from gasdb_tools.splits import load_split

    rec_id = check_id(recording_id)
    index = ws.read_index()
    ws.select_recordings([rec_id], index=index)  # raises naming the known ids
    pids = [p["pair_id"] for p in index.pairs_of(rec_id)]
    review = counts(read_states(ws, index, pairs=pids), pids)
    people = review["edited"] + review["approved"]
    if people and not force:
        raise WorkspaceError(
            f"recording {rec_id!r} holds people's work: {review['edited']} edited and {review['approved']} approved "
            "LabelMe document(s)", file=ws.root / "labels" / rec_id,
            fix="pass --force to remove it anyway (its documents move to WS/removed/, nothing is deleted), "
                "or keep the recording")
    sources = [ws.root / area / rec_id for area in OUTPUT_AREAS]
    refinement = ws.root / "calibration" / "recordings" / f"{rec_id}.json"
    sources = [p for p in [*sources, refinement] if p.exists()]
    target = _free_folder(ws.root / "removed" / rec_id)
    moved: list[tuple[Path, Path]] = []
    with ws.transaction() as index:
        if rec_id not in index.recordings:
            raise WorkspaceError(f"recording {rec_id!r} was removed meanwhile", file=ws.root / ws.RECORDINGS,
                                 fix="nothing to do")
        row = index.recordings.pop(rec_id)
        for pid in pids:
            index.pairs.pop(pid, None)
        try:
            target.mkdir(parents=True)
            write_json(target / "recording.json", row)
            for src in sources:
                dest = target / ("calibration.json" if src == refinement else src.parent.name)
                shutil.move(str(src), str(dest))
                moved.append((src, dest))
        except OSError:
            for src, dest in reversed(moved):  # put back what moved; the index is not written
                shutil.move(str(dest), str(src))
            raise
    black = ws.blacklist()
    if any(pid in black for pid in pids):
        ws.update_blacklist(remove=pids)
    gone, stale = set(pids), []
    for path in sorted((ws.root / "splits").glob("*.json")) if (ws.root / "splits").is_dir() else []:
        try:
            split = load_split(ws, path.stem)
        except GasdbError:  # not a split file this version reads: `gasdb split --check` says more
            continue
        if any(gone.intersection(ids) for ids in split.pairs.values()):
            stale.append(path.stem)
    return {"id": rec_id, "pairs": len(pids), "review": review, "moved_to": ws.rel(target),
            "moved": [ws.rel(dest) for _, dest in moved], "stale_splits": stale}
