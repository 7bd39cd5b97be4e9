"""``gasdb enhance``: Tarel–Hautière visibility restoration of thermal frames, for annotators."""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import emit_json, fail, jobs_option, json_option
from gasdb_tools.workspace import Workspace


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="WORKSPACE | IMAGE...",
                type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (loose images only).")
@click.option("--sv", type=click.IntRange(min=1), default=None,
              help="Odd median window in px; structure wider than this is treated as veil, so pick it above "
                   "the plume width. [workspace: 51; images: the authors' rule 2*floor(max(H,W)/25)+1]")
@click.option("--p", "p", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
              help="Restoration strength.")
@click.option("--gfactor", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Extra factor on the fitted gamma (>1 more contrast).")
@click.option("--invert", is_flag=True, help="Restore the inverted frame: for absorbing (dark, cold) plumes, "
                                            "which then show bright.")
@click.option("--gamma-rows", type=click.Choice(("all", "bottom_third")), default="all", show_default=True,
              help="Rows the gamma is fitted on (bottom_third = the authors' road-scene choice).")
@click.option("--recording", "recordings", multiple=True, help="Only this recording (repeatable; workspace only).")
@click.option("--force", is_flag=True, help="Redo frames already enhanced (and refit each recording's contrast).")
@click.option("--metrics", is_flag=True, help="Report Hautière's e, r, sigma (+ edge counts) per frame (~1 s/frame).")
@click.option("--metrics-mode", type=click.Choice(("compat", "fixed")), default="compat", show_default=True,
              help="compat = the original IFSTTAR code with its bugs (comparable with papers); fixed = intended.")
@click.option("--metrics-frames", type=click.IntRange(min=1), default=None,
              help="With --metrics: only this many evenly spaced frames per recording.")
@jobs_option
@json_option
def enhance(targets: tuple[Path, ...], out_dir: Path | None, sv: int | None, p: float, gfactor: float, invert: bool,
            gamma_rows: str, recordings: tuple[str, ...], force: bool, metrics: bool, metrics_mode: str,
            metrics_frames: int | None, jobs: int, scheduler: str | None, as_json: bool) -> None:
    """Tarel-Hautiere visibility restoration of thermal frames, as 8-bit PNGs for annotators.

    With a workspace (a folder holding gasdb.json) as the only argument, every pair gets
    enhanced/<rec>/<pair>.png from its aligned thermal frame (the extracted one for a thermal
    camera alone, or if the pair is not aligned yet), with one contrast setting per recording so
    the look does not jump between frames. A rerun redoes exactly the pairs whose source frame
    changed (e.g. after a re-alignment); --force redoes everything. Otherwise the arguments are image
    files, each enhanced on its own into -o DIR/<name>.png.

    \b
    Examples:
      gasdb enhance my-dataset --sv 51 --jobs 2
      gasdb enhance my-dataset --invert --metrics --metrics-frames 5 --json
      gasdb enhance frames/*.png -o enhanced-preview
    """
    from gasdb_tools.enhance import enhance_images, enhance_workspace

    first = targets[0]
    is_workspace = first.is_dir() and (first / Workspace.SETTINGS).is_file()
    if is_workspace:
        if len(targets) > 1:
            raise click.UsageError("pass one workspace, or image files with -o DIR (not both)")
        if out_dir is not None:
            raise click.UsageError("-o/--out is for loose images; a workspace writes into WORKSPACE/enhanced/")
        ws = Workspace.open(first)
        try:
            report = enhance_workspace(ws, sv=51 if sv is None else sv, p=p, gfactor=gfactor, invert=invert,
                                       gamma_rows=gamma_rows, force=force, metrics=metrics, metrics_mode=metrics_mode,
                                       metrics_frames=metrics_frames, recordings=recordings or None, jobs=jobs,
                                       scheduler=scheduler)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if as_json:
            emit_json(report)
        else:
            recordings = ws.read_index().recordings
            for r in report["recordings"]:
                if r["error"]:
                    click.echo(f"{r['id']}: FAILED: {r['error']}", err=True)
                    continue
                n_aligned, n_thermal = r["sources"]["aligned"], r["sources"]["thermal"]
                if not recordings.get(r["id"], {}).get("rgb"):
                    source = "thermal camera alone"
                elif n_thermal:
                    source = f"{n_aligned} aligned, {n_thermal} not aligned yet: run `gasdb align`"
                else:
                    source = f"{n_aligned} aligned" if n_aligned else ""
                click.echo(f"{r['id']}: {r['enhanced']} enhanced, {r['skipped']} already done"
                           + (f" ({source})" if source else ""))
            _echo_metrics(report["frames"])
        if report["failed"]:
            fail(f"{report['failed']} recording(s) failed; see enhance_error in `gasdb status`")
        return
    if first.is_dir():
        raise click.BadParameter(f"{first} is a folder but not a workspace (no gasdb.json); pass a workspace, "
                                 "or image files with -o DIR", param_hint="WORKSPACE | IMAGE...")
    if out_dir is None:
        raise click.UsageError("loose images need an output folder: -o DIR")
    if recordings:
        raise click.UsageError("--recording is for a workspace")
    try:
        report = enhance_images(targets, out_dir, sv=sv, p=p, gfactor=gfactor, invert=invert, gamma_rows=gamma_rows,
                                force=force, metrics=metrics, metrics_mode=metrics_mode)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        emit_json(report)
        return
    for item in report["images"]:
        click.echo(f"{item['input']} -> {item['output']}" + (" (exists, skipped)" if item["skipped"] else ""))
    _echo_metrics(report["images"])


def _echo_metrics(items) -> None:
    for item in items:
        m = item.get("metrics")
        if m:
            name = item.get("pair_id") or item.get("input")
            fmt = (lambda v: "n/a" if v is None else f"{v:.3f}")
            click.echo(f"{name}: e={fmt(m['e'])} r={fmt(m['r'])} sigma={100 * m['sigma']:.2f}% "
                       f"(n_o={m['n_o']}, n_r={m['n_r']}, {m['mode']})")
