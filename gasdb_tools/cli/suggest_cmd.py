"""``gasdb suggest``: the pending pairs whose correction would help the drafts most."""

from __future__ import annotations

import click

from gasdb_tools.cli._common import emit_json, json_option, workspace_argument
from gasdb_tools.workspace import Workspace


@click.command()
@workspace_argument
@click.option("-n", "n", type=click.IntRange(min=0), default=10, show_default=True, help="How many pairs to list.")
@click.option("--recording", "recordings", multiple=True, metavar="ID", help="Only this recording (repeatable).")
@json_option
def suggest(workspace: Workspace, n: int, recordings: tuple[str, ...], as_json: bool) -> None:
    """List the pending pairs whose correction would help the drafts most.

    Ranks the pending drafts by how unsure pre-annotation was near the plume, by how much the
    refined drafts disagree with the background model, and by how far they are in time from
    every corrected pair, choosing greedily so the list spreads over each recording. The order
    depends only on the workspace's documents. Correct (and approve) the listed pairs, then run
    `gasdb preannotate WORKSPACE --refine`.

    \b
    Examples:
      gasdb suggest my-dataset -n 5
      gasdb suggest my-dataset -n 20 --recording take01 --json
    """
    from gasdb_tools.suggest import suggest_workspace

    report = suggest_workspace(workspace, n, recordings=recordings or None)
    if as_json:
        emit_json(report)
        return
    if not report["suggestions"]:
        click.echo(f"nothing to suggest: {report['pending']} pending drafts")
        return
    click.echo(f"{'pair':<32}{'recording':<20}{'t (s)':>9}{'score':>8}{'unsure':>8}{'disagree':>9}{'gap (s)':>9}")
    for c in report["suggestions"]:
        gap = "-" if c["gap_s"] is None else f"{c['gap_s']:.1f}"
        click.echo(f"{c['pair_id']:<32}{c['recording']:<20}{c['t']:>9.2f}{c['score']:>8.3f}{c['uncertainty']:>8.3f}"
                   f"{c['disagreement']:>9.3f}{gap:>9}")
    click.echo(f"{len(report['suggestions'])} of {report['pending']} pending pairs; {report['corrected']} corrected. "
               f"Correct them, then: gasdb preannotate {workspace.root} --refine")
    if report["without_stats"]:
        click.echo(f"note: {report['without_stats']} drafts record no statistics (written by an older version) and are "
                   f"ranked by time alone; `gasdb preannotate {workspace.root} --force` rewrites them", err=True)
