"""``gasdb init``, ``gasdb add``, ``gasdb remove``, ``gasdb status``."""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import emit_json, json_option, workspace_argument
from gasdb_tools.recordings import add_recording, remove_recording
from gasdb_tools.workspace import SCENES, Workspace


@click.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Dataset name (default: the folder name).")
@click.option("--rig", default="default", show_default=True, help="Name of the camera rig (calibration file name).")
def init(path: Path, name: str | None, rig: str) -> None:
    """Create an empty dataset workspace.

    PATH must be a new or empty folder. The LabelMe config and the label list are copied into
    PATH/annotation/ (labelme.yaml, labels.txt), where the team may adapt them; `gasdb label`
    uses that copy.

    \b
    Example:
      gasdb init my-dataset --rig rig-a
    """
    from gasdb_tools.resources import copy_annotation_config

    ws = Workspace.init(path, name=name, rig=rig)
    copy_annotation_config(ws.root / "annotation")
    click.echo(f"created workspace {ws.root} (LabelMe config in {ws.root / 'annotation'})")


def _video_file(ctx, param, value):
    """A video file; a folder (an image sequence) gets the command that packs it into one."""
    if value is not None and value.is_dir():
        raise click.BadParameter(
            f"{value} is a folder; gasdb add takes video files. Pack an image sequence into a lossless video "
            f"first, keeping its frame rate, e.g. ffmpeg -framerate 25 -pattern_type glob -i '{value}/*.png' "
            f"-c:v ffv1 {value.name}.mkv", param=param)
    return value


@click.command()
@workspace_argument
@click.option("--thermal", "thermal", required=True, type=click.Path(path_type=Path), callback=_video_file,
              help="Thermal video file.")
@click.option("--rgb", "rgb", type=click.Path(path_type=Path), callback=_video_file,
              help="RGB video file of the same take (leave it out for a thermal camera alone).")
@click.option("--scene", required=True, type=click.Choice(SCENES), help="Scene type (Gas-DB's types, or other).")
@click.option("--id", "recording_id", help="Recording id (default: derived from the file names).")
@click.option("--tag", "tags", multiple=True, help="Free tag; repeat for several (e.g. --tag night --tag methane).")
@click.option("--rig", help="Camera rig of this take (its calibration is calibration/<rig>.json); "
                            "default: the workspace's rig. Give each camera set-up its own rig.")
@click.option("--offset", type=float, help="Known start offset in seconds (t_rgb = t_thermal + offset).")
@click.option("--allow-same", is_flag=True, help="Accept an RGB and a thermal file with the same content.")
@click.option("--sensors", type=click.Path(dir_okay=False, path_type=Path),
              help="Gas-sensor log of the take: CSV with a 't' column (seconds on the thermal clock) and one "
                   "column per channel; extract attaches the nearest reading to each pair.")
@click.option("--sensor-offset", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="Shift of the sensor clock (t_thermal = t + SECONDS).")
@json_option
def add(workspace: Workspace, thermal: Path, rgb: Path | None, scene: str, recording_id: str | None,
        tags: tuple[str, ...], rig: str | None, offset: float | None, allow_same: bool, sensors: Path | None,
        sensor_offset: float, as_json: bool) -> None:
    """Register a recording (RGB + thermal video, or a thermal camera alone) in a workspace.

    A recording is the RGB and the thermal video of one take, or a thermal video alone (GasVid,
    IOD-Video and most gas data are thermal-only). Every file is opened and its first frame
    decoded before anything is written; a missing or unreadable file, a duplicate id, or RGB and
    thermal files with the same content (unless --allow-same) leave the index unchanged.

    \b
    Examples:
      gasdb add my-dataset --rgb take01/rgb.mp4 --thermal take01/thermal.mp4 --scene sunny --tag near
      gasdb add my-dataset --thermal gasvid/MOV_1467.mp4 --scene far --id mov1467
      gasdb add my-dataset --rgb b/rgb.mp4 --thermal b/thermal.mp4 --scene near --rig tripod-b
      gasdb add my-dataset --thermal c/thermal.mp4 --scene near --sensors c/mq-sensors.csv
    """
    row = add_recording(workspace, rgb=rgb, thermal=thermal, scene=scene, recording_id=recording_id,
                        tags=tags, offset_s=offset, rig=rig, allow_same=allow_same, sensors=sensors,
                        sensor_offset_s=sensor_offset)
    if as_json:
        emit_json(row)
    else:
        what = "thermal camera alone" if not rgb else f"RGB + thermal, rig {row['rig']}"
        click.echo(f"added recording {row['id']} ({scene}; {what})")


@click.command()
@workspace_argument
@click.argument("recording_id", metavar="RECORDING")
@click.option("-f", "--force", is_flag=True,
              help="Remove it even when people edited or approved its LabelMe documents (they move too).")
@json_option
def remove(workspace: Workspace, recording_id: str, force: bool, as_json: bool) -> None:
    """Unregister a recording; its outputs move to WS/removed/<id>/, nothing is deleted.

    The recording's rows leave the index and blacklist.csv; its frames, aligned and enhanced
    frames, LabelMe documents and per-recording calibration move, as they are, into
    WS/removed/RECORDING/ (with recording.json, its index row), so a document can be taken back.
    The source videos are not touched. A recording with edited or approved documents is refused
    (exit 1) unless --force. Split files that list its pairs are named: rerun `gasdb split`.

    \b
    Example:
      gasdb remove my-dataset take07
      gasdb remove my-dataset take07 --force --json
    """
    result = remove_recording(workspace, recording_id, force=force)
    if as_json:
        emit_json(result)
        return
    rv = result["review"]
    click.echo(f"removed recording {result['id']} ({result['pairs']} pairs: {rv['pending']} pending, "
               f"{rv['edited']} edited, {rv['approved']} approved); its outputs are in "
               f"{workspace.root / result['moved_to']}")
    for name in result["stale_splits"]:
        click.echo(f"split {name!r} lists its pairs: rerun `gasdb split {workspace.root} --name {name}`", err=True)


@click.command()
@workspace_argument
@json_option
def status(workspace: Workspace, as_json: bool) -> None:
    """Show what each stage has done per recording: done, stale, missing or failed.

    States are computed from provenance (what each output was made from), the files on disk and
    the LabelMe documents (review state), never remembered: after a recalibration the aligned,
    enhanced and pre-annotated outputs show as stale, and a plain rerun of each stage redoes
    exactly those. Each recording ends with the commands that bring it up to date.

    \b
    Example:
      gasdb status my-dataset
      gasdb status my-dataset --json
    """
    from gasdb_tools.status import STAGES, workspace_status

    report = workspace_status(workspace)
    if as_json:
        emit_json(report)
        return
    rows = report["recordings"]
    if not rows:
        click.echo("no recordings yet: add one with `gasdb add`")
        return
    header = ["recording", "modality", "scene", "pairs", *STAGES, "review p/e/a", "recheck", "excluded"]
    table = [header]
    for r in rows:
        cells = [r["id"], r["modality"], r["scene"], str(r["pairs"])]
        cells += [_stage_cell(r["stages"][s], r["pairs"]) for s in STAGES]
        rv = r["review"]
        cells += [f"{rv['pending']}/{rv['edited']}/{rv['approved']}", str(rv["recheck"]), str(r["excluded"])]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in rows:
        for stage, message in r["errors"].items():
            click.echo(f"{r['id']}: {stage} failed: {message}", err=True)
        for stage in STAGES:
            note = r["stages"][stage].get("note")
            if note and not (stage == "align" and r["modality"] == "thermal"):
                click.echo(f"{r['id']}: {stage}: {note}")
        cal = r.get("calibration") or {}
        if cal.get("rig") == "stale":
            click.echo(f"{r['id']}: rig calibration is stale: {cal.get('note', '')}")
        if cal.get("refinement") == "stale":
            click.echo(f"{r['id']}: its per-recording refinement was made on an older rig calibration (not used)")
        for command in r["next"]:
            click.echo(f"{r['id']}: next: {command}")


def _stage_cell(counts: dict, pairs: int) -> str:
    """``done`` / ``n/a`` when uniform, else e.g. ``12/20 (5 stale, 3 missing)``."""
    if counts.get("n/a") == pairs and pairs:
        return "n/a"
    done = counts.get("done", 0)
    if pairs and done == pairs:
        return "done"
    extra = [f"{counts[k]} {k}" for k in ("stale", "missing", "failed") if counts.get(k)]
    return f"{done}/{pairs}" + (f" ({', '.join(extra)})" if extra else "")
