"""``gasdb extract``."""

from __future__ import annotations

import click

from gasdb_tools.cli._common import emit_json, fail, jobs_option, json_option, workspace_argument
from gasdb_tools.extract import DEFAULT_MIN_CONFIDENCE, extract_workspace
from gasdb_tools.workspace import Workspace


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


@click.command()
@workspace_argument
@click.option("--every", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Keep at most one pair per SECONDS (time-based: 9/25/30 fps sources sample alike).")
@click.option("--max-pairs", type=click.IntRange(min=1), metavar="N",
              help="At most N pairs per recording, spread evenly over the recording.")
@click.option("--offset", type=float, metavar="SECONDS",
              help="Start offset for the selected recordings (t_rgb = t_thermal + SECONDS); default: the one "
                   "given to `gasdb add`, else estimated from the motion in both streams.")
@click.option("--dedup/--no-dedup", default=False, show_default=True,
              help="Skip pairs in which neither stream changed locally since the last kept pair.")
@click.option("--dedup-threshold", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Local change (robust noise units; noise alone gives ~2.8) that makes a frame new.")
@click.option("--recording", "recordings", multiple=True, metavar="ID",
              help="Only this recording (repeat for several).")
@click.option("--force", is_flag=True, help="Redo recordings already extracted.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=DEFAULT_MIN_CONFIDENCE, show_default=True,
              help="Refuse estimated offsets with a lower confidence (how unambiguous the best lag is).")
@click.option("--workers", type=click.IntRange(min=1), help="PNG writer threads per recording (default: its share of --jobs).")
@click.option("--png-compression", type=click.IntRange(0, 9), default=1, show_default=True,
              help="Deflate level of the PNG frames (1-3: ISA-L, 0 and 4-9: zlib; higher: smaller, slower).")
@jobs_option
@json_option
def extract(workspace: Workspace, every, max_pairs, offset, dedup, dedup_threshold, recordings, force, min_confidence,
            workers, png_compression, jobs, scheduler, as_json) -> None:
    """Extract time-synchronised RGB-thermal frame pairs.

    Decodes both videos of each recording sequentially and pairs frames by timestamp (never by
    index), rejecting pairs more than half a frame period of the faster stream apart; a thermal
    camera alone gives one "pair" per sampled thermal frame. Frames go
    to WORKSPACE/frames/<recording>/{rgb,thermal}/<pair>.png (thermal keeps 16 bits when the
    source has them) and pairs.csv. Reruns skip finished recordings and resume interrupted ones;
    a recording that fails is reported (exit 1) and the others are still extracted.

    \b
    Examples:
      gasdb extract my-dataset --every 0.5
      gasdb extract my-dataset --recording take07 --offset 0.84 --dedup --force
      gasdb extract my-dataset --every 0.5 --jobs 2
      gasdb extract my-dataset --scheduler tcp://10.0.0.5:8786
    """
    summary = extract_workspace(workspace, every=every, max_pairs=max_pairs, offset=offset, dedup=dedup,
                                dedup_threshold=dedup_threshold, force=force, recordings=recordings or None,
                                min_confidence=min_confidence, workers=workers, compression=png_compression,
                                jobs=jobs, scheduler=scheduler)
    if as_json:
        emit_json(summary)
    else:
        header = ["recording", "status", "pairs", "offset_s", "source", "confidence", "max|dt|_ms", "seconds"]
        table = [header] + [
            [r["id"], r["status"], str(r["pairs"]), _fmt(r["offset_s"], "+.3f"), r["offset_source"],
             _fmt(r["offset_confidence"], ".2f"),
             _fmt(None if r["max_abs_dt_s"] is None else 1000 * r["max_abs_dt_s"], ".1f"), _fmt(r["seconds"], ".1f")]
            for r in summary["recordings"]]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        click.echo(f"{summary['pairs_written']} pairs written, {summary['pairs_total']} in the workspace")
    failed = [r for r in summary["recordings"] if r["status"] == "failed"]
    if failed:
        fail("\n".join(f"{r['id']}: extract failed: {r['error']}" for r in failed))
