"""``gasdb calibrate`` and ``gasdb align``."""

from __future__ import annotations

import click

from gasdb_tools.cli._common import emit_json, fail, jobs_option, json_option, workspace_argument
from gasdb_tools.registration import MODEL_CHOICES
from gasdb_tools.workspace import Workspace


def _size(ctx, param, value):
    if value is None:
        return None
    from gasdb_tools.align import parse_size

    size = parse_size(value)
    if size is None:
        raise click.BadParameter(f"expected WIDTHxHEIGHT (e.g. 640x512) or WIDTH (e.g. 640), got {value!r}")
    if size[0] < 16 or (size[1] is not None and size[1] < 16):
        raise click.BadParameter(f"must be at least 16x16, got {value!r}")
    return size


@click.command()
@workspace_argument
@click.option("--rig", help="Calibrate only this rig (default: every rig that has recordings).")
@click.option("--model", type=click.Choice(MODEL_CHOICES), default="auto", show_default=True,
              help="Transform model; auto chooses by held-out error (frames or regions left out) and records why.")
@click.option("--frames", type=click.IntRange(1, 500), default=20, show_default=True,
              help="Frame pairs to use, spread over the rig's recordings and time.")
@click.option("--force", is_flag=True, help="Recalibrate a rig that already has a calibration file.")
@click.option("--no-refine", is_flag=True, help="Skip the joint multi-frame refinement (median of corners only).")
@click.option("--min-score", type=click.FloatRange(-1, 1), default=0.15, show_default=True,
              help="Frames whose edge correlation stays below this are left out.")
@click.option("--distortion", type=click.Choice(["keep", "estimate", "none"]), default="keep", show_default=True,
              help="Thermal lens radial distortion: keep the one the rig file gives, estimate it (about 8x slower; "
                   "kept only when the frames constrain it), or none.")
@click.option("--strict", is_flag=True, help="Exit 1 when a calibration is flagged (residuals disagree).")
@click.option("--per-recording", is_flag=True,
              help="Then refine the rig calibration for each recording (a small, regularised update for the "
                   "scene's depth plane: parallax); align uses it.")
@click.option("--recording", "recordings", multiple=True, metavar="ID",
              help="With --per-recording: only this recording (repeatable).")
@click.option("--update-model", type=click.Choice(["translation", "similarity", "affine"]), default="translation",
              show_default=True, help="With --per-recording: the model of each recording's update.")
@json_option
def calibrate(workspace: Workspace, rig: str | None, model: str, frames: int, force: bool, no_refine: bool,
              min_score: float, distortion: str, strict: bool, per_recording: bool, recordings: tuple[str, ...],
              update_model: str, as_json: bool) -> None:
    """Estimate the rig's thermal-to-RGB registration from the edges both cameras see.

    No calibration target is needed: frame pairs spread over the rig's recordings are aligned
    on their edges, combined by the median of the projected corners and refined jointly. With
    --model auto (the default) translation, similarity, affine and homography are each fitted
    and the simplest whose held-out error (recordings, or quarters of the view, left out) is
    within one standard error of the best is kept; the file and the output say which and why.
    Writes WORKSPACE/calibration/<rig>.json and a QA figure <rig>_qa.png. A calibration whose residuals
    disagree (parallax, a camera that moved) is written but flagged; with --strict the command
    then exits 1. Frames that do not register leave no file behind. Recordings of a thermal camera
    alone need no calibration. --per-recording then refines the rig's transform for each recording
    (calibration/recordings/<rec>.json and a QA figure); align uses a recording's refinement while
    it was made on the current rig calibration.

    \b
    Example:
      gasdb calibrate my-dataset --frames 20
      gasdb calibrate my-dataset --rig rig-a --model affine --force --json
      gasdb calibrate my-dataset --rig rig-a --distortion estimate --force
      gasdb calibrate my-dataset --per-recording
    """
    from gasdb_tools.calibration import calibrate_workspace, refine_recordings

    if recordings and not per_recording:
        raise click.UsageError("--recording goes with --per-recording")
    report = calibrate_workspace(workspace, rig=rig, model=model, frames=frames, force=force, refine=not no_refine,
                                 min_score=min_score, distortion=distortion)
    flagged = [r for r in report["rigs"] if not r["consistent"]]
    if per_recording:
        report["recordings"] = refine_recordings(workspace, recordings=list(recordings) or None,
                                                 model=update_model)["recordings"]
    if as_json:
        emit_json(report)
    else:
        if report.get("note"):
            click.echo(report["note"])
        for r in report["rigs"]:
            if r["skipped"]:
                click.echo(f"rig {r['rig']}: calibration exists ({r['path']}); pass --force to redo it")
                continue
            dev = (r.get("corner_deviation_px") or {}).get("median")
            click.echo(f"rig {r['rig']}: {r['model']} from {r['frames_used']}/{r['frames_total']} frames, "
                       f"score {r['score']:.3f}, median frame deviation {dev if dev is not None else '-'} px "
                       f"-> {r['path']}")
            if r.get("model_reason"):
                click.echo(f"  model: {r['model_reason']}")
            if r["figure"]:
                click.echo(f"  QA figure: {r['figure']}")
            for w in r["warnings"]:
                click.echo(f"  warning: {w}", err=True)
        for r in report.get("recordings", []):
            if r["error"]:
                click.echo(f"recording {r['id']}: refinement failed: {r['error']}", err=True)
            elif r["status"] != "n/a":
                click.echo(f"recording {r['id']}: refined, corners moved {r['shift_px'][0]:.2f} px (max "
                           f"{r['shift_px'][1]:.2f}), edge correlation {r['score_rig']:.3f} -> {r['score']:.3f} "
                           f"-> {r['path']}")
    if any(r["error"] for r in report.get("recordings", [])):
        fail()
    if strict and flagged:
        fail(f"{len(flagged)} calibration(s) flagged: " + ", ".join(r["rig"] for r in flagged))


@click.command()
@workspace_argument
@click.option("--size", default=None, callback=_size, metavar="WxH|W",
              help="Annotation frame size: WIDTHxHEIGHT, or WIDTH to keep each recording's aspect ratio. "
                   "[the RGB camera's native size, or what the recording last used]")
@click.option("--force", is_flag=True, help="Redo pairs that are already aligned.")
@click.option("--recording", "recordings", multiple=True, help="Only this recording (repeatable).")
@click.option("--interpolation", type=click.Choice(["linear", "nearest", "cubic"]), default="linear",
              show_default=True, help="Resampling of the thermal frames.")
@jobs_option
@json_option
def align(workspace: Workspace, size, force: bool, recordings: tuple[str, ...], interpolation: str, jobs: int,
          scheduler: str | None, as_json: bool) -> None:
    """Warp every thermal frame into the RGB frame, with a valid-pixel mask.

    The annotation frame of a recording is its RGB frame at the camera's native size (4:3 and
    16:9 cameras are not stretched) unless --size says otherwise. Uses each recording's rig
    calibration (run `gasdb calibrate` first); recordings of a thermal camera alone need no
    alignment and are reported as n/a. Writes aligned/<rec>/<pair>.png (thermal bit depth kept)
    and aligned/<rec>/<pair>_valid.png (255 valid, 0 outside the thermal view). Resumable: a rerun
    redoes exactly the pairs whose calibration, size or frames changed (--force: all). Exits 1 if
    any recording failed.

    \b
    Example:
      gasdb align my-dataset
      gasdb align my-dataset --size 640 --jobs 2
    """
    from gasdb_tools.align import align_workspace

    report = align_workspace(workspace, force=force, size=size, recordings=list(recordings) or None,
                             interpolation=interpolation, jobs=jobs, scheduler=scheduler)
    if as_json:
        emit_json(report)
    else:
        for r in report["recordings"]:
            if r["error"]:
                state = f"failed: {r['error']}"
            elif r["status"] == "n/a":
                click.echo(f"{r['id']}: {r['pairs']} pairs, thermal camera alone: nothing to align")
                continue
            else:
                state = f"{r['aligned']} aligned, {r['skipped']} up to date ({r['size'][0]}x{r['size'][1]})"
            click.echo(f"{r['id']} (rig {r['rig']}): {r['pairs']} pairs, {state}")
        click.echo(f"{report['aligned']} frames aligned, {report['skipped']} up to date, "
                   f"{report['failed']} recording(s) failed")
    if report["failed"]:
        fail()
