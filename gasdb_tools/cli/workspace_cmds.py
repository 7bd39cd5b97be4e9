"""``gasdb init``, ``gasdb add``, ``gasdb status``."""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import emit_json, json_option, workspace_argument
from gasdb_tools.recordings import add_recording
from gasdb_tools.workspace import SCENES, STAGES, Workspace


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


@click.command()
@workspace_argument
@click.option("--rgb", "rgb", required=True, type=click.Path(dir_okay=False, path_type=Path), help="RGB video file.")
@click.option("--thermal", "thermal", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Thermal video file of the same take.")
@click.option("--scene", required=True, type=click.Choice(SCENES), help="Scene type (Gas-DB's types, or other).")
@click.option("--id", "recording_id", help="Recording id (default: derived from the file names).")
@click.option("--tag", "tags", multiple=True, help="Free tag; repeat for several (e.g. --tag night --tag methane).")
@click.option("--offset", type=float, help="Known start offset in seconds (t_rgb = t_thermal + offset).")
@json_option
def add(workspace: Workspace, rgb: Path, thermal: Path, scene: str, recording_id: str | None, tags: tuple[str, ...],
        offset: float | None, as_json: bool) -> None:
    """Register a recording (RGB + thermal video) in a workspace.

    A recording is an RGB video and a thermal video of one take. Both files are opened and their first frame decoded before anything is written; a missing
    or unreadable file or a duplicate id leaves the index unchanged.

    \b
    Example:
      gasdb add my-dataset --rgb take01/rgb.mp4 --thermal take01/thermal.mp4 --scene sunny --tag near
    """
    row = add_recording(workspace, rgb=rgb, thermal=thermal, scene=scene, recording_id=recording_id,
                        tags=tags, offset_s=offset)
    if as_json:
        emit_json(row)
    else:
        click.echo(f"added recording {row['id']} ({scene})")


@click.command()
@workspace_argument
@json_option
def status(workspace: Workspace, as_json: bool) -> None:
    """Show what each stage has done per recording.

    For every recording: how many pairs each stage has done, what is left, and any stage error.

    \b
    Example:
      gasdb status my-dataset --json
    """
    rows = workspace.status()
    if as_json:
        emit_json({"workspace": str(workspace.root), "recordings": rows})
        return
    stages = [s for s, _ in STAGES]
    header = ["recording", "scene", "pairs", *stages]
    table = [header] + [[r["id"], r["scene"], str(r["pairs"]), *(str(r[s]) for s in stages)] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if not rows:
        click.echo("no recordings yet: add one with `gasdb add`")
    for r in rows:
        for stage, message in r["errors"].items():
            click.echo(f"{r['id']}: {stage} failed: {message}", err=True)
        todo = [s for s in stages if r["pairs"] and r[s] < r["pairs"] and s != "review"]
        if not r["pairs"]:
            click.echo(f"{r['id']}: next: gasdb extract {workspace.root}")
        elif todo:
            click.echo(f"{r['id']}: left: {', '.join(todo)}")
