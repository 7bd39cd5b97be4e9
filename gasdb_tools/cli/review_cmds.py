"""``gasdb review``: approve or reject pairs (for scripts), or show where review stands."""

from __future__ import annotations

import click

from gasdb_tools.cli._common import emit_json, json_option, workspace_argument
from gasdb_tools.workspace import Workspace


@click.command()
@workspace_argument
@click.argument("pairs", nargs=-1, metavar="[PAIR_ID]...")
@click.option("--approve", "action", flag_value="approve", help="Approve the pairs' documents.")
@click.option("--reject", "action", flag_value="reject", help="Send the pairs back to pending (needs --note).")
@click.option("--recording", "recordings", multiple=True, metavar="ID",
              help="Act on every labelled pair of this recording (repeatable).")
@click.option("--note", help="Why (required with --reject; recorded in the document's audit trail).")
@click.option("--by", help="Reviewer name for the audit trail [$GASDB_USER or the login name].")
@json_option
def review(workspace: Workspace, pairs: tuple[str, ...], action: str | None, recordings: tuple[str, ...],
           note: str | None, by: str | None, as_json: bool) -> None:
    """Approve or reject pairs, or show the review state of every recording.

    Review state lives in the LabelMe documents: approving ticks a document's `approved` flag
    (the same flag annotators tick in LabelMe), rejecting sends it back to pending with a note,
    and both append who and when to the document's audit trail. Every change is a
    compare-and-swap write under the workspace lock, so a LabelMe save at the same time is never
    lost. Without an action the review counts per recording are shown.

    \b
    Examples:
      gasdb review my-dataset --approve take01_00001000 take01_00001500
      gasdb review my-dataset --approve --recording take01
      gasdb review my-dataset --reject take01_00002000 --note "plume edge missing on the left"
      gasdb review my-dataset --json
    """
    from gasdb_tools import review as rv

    if action is None:
        if pairs or recordings or note:
            raise click.UsageError("name an action: --approve or --reject")
        index = workspace.read_index()
        states = rv.read_states(workspace, index)
        rows = []
        for rec in index.recordings:
            ids = [p["pair_id"] for p in index.pairs_of(rec)]
            rows.append({"id": rec, "pairs": len(ids), **rv.counts(states, ids)})
        if as_json:
            emit_json({"workspace": str(workspace.root), "recordings": rows,
                       "total": rv.counts(states, list(index.pairs))})
            return
        for r in rows:
            click.echo(f"{r['id']}: {r['pairs']} pairs: {r['pending']} pending, {r['edited']} edited, "
                       f"{r['approved']} approved, {r['recheck']} to recheck, {r['unlabelled']} without a document")
        return
    if action == "reject" and not (note and note.strip()):
        raise click.UsageError('--reject needs --note "what to fix"')
    ids = list(pairs)
    if recordings:
        index = workspace.read_index()
        workspace.select_recordings(recordings, index=index)
        ids += [p["pair_id"] for rec in recordings for p in index.pairs_of(rec) if p.get("label")]
    if not ids:
        raise click.UsageError("name the pairs (PAIR_ID ...) or --recording ID")
    func = rv.approve if action == "approve" else rv.reject
    kwargs = {"by": by, "note": note}
    done = func(workspace, ids, **kwargs)
    if as_json:
        emit_json({"workspace": str(workspace.root), "action": action, "pairs": done})
    else:
        click.echo(f"{len(done)} pair{'s' if len(done) != 1 else ''} {action}d")
