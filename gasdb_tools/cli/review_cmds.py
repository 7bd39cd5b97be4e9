"""``gasdb review``: the review app (a local web server), or approve / reject pairs from scripts, or counts."""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import check_pair_ids, emit_json, json_option, workspace_argument
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
@click.option("--counts", "show_counts", is_flag=True, help="Print the review counts per recording instead of serving.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve the app on; any non-loopback address needs the printed access token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the app in the default web browser.")
@click.option("--submission", type=click.Path(exists=True, path_type=Path), metavar="ZIP",
              help="Score every pair against this submission (a .zip or folder of <id>.png masks).")
@click.option("--release", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR",
              help="Release whose index.csv maps the submission's file names to pair ids.")
@json_option
def review(workspace: Workspace, pairs: tuple[str, ...], action: str | None, recordings: tuple[str, ...],
           note: str | None, by: str | None, show_counts: bool, host: str, port: int, open_browser: bool,
           submission: Path | None, release: Path | None, as_json: bool) -> None:
    """Browse, compare and review every pair in a local web app; or approve/reject pairs from scripts.

    Without an action, serves the review app and prints its URL: a gallery of every pair with
    its mask (drafts orange, edited cyan, approved green), filters and sorts by recording,
    scene, review status, staleness, exclusion, validate problems, gas area, blob count and
    submission score; a pair view with RGB, thermal, enhanced and the mask overlay side by side,
    the neighbouring frames and the recording's gas area over time; approve, reject, blacklist
    and "open in LabelMe" from the keyboard. The app listens on the loopback address unless
    --host says otherwise; any other address needs the access token printed with the URL.

    Review state lives in the LabelMe documents: approving ticks a document's `approved` flag
    (the same flag annotators tick in LabelMe), rejecting sends it back to pending with a note,
    and both append who and when to the document's audit trail. Every change, from the app or
    from --approve/--reject, is a compare-and-swap write under the workspace lock, so a LabelMe
    save at the same time is never lost. --counts (or --json without an action) prints the
    review counts per recording.

    \b
    Examples:
      gasdb review my-dataset                       # serve the app at http://127.0.0.1:8765/
      gasdb review my-dataset --port 0 --open       # any free port, open a browser
      gasdb review my-dataset --submission preds.zip --release releases/v1
      gasdb review my-dataset --approve take01_00001000 take01_00001500
      gasdb review my-dataset --approve --recording take01
      gasdb review my-dataset --reject take01_00002000 --note "plume edge missing on the left"
      gasdb review my-dataset --counts --json
    """
    from gasdb_tools import review as rv

    if action is None:
        if pairs or recordings or note:
            raise click.UsageError("name an action: --approve or --reject")
        if not (show_counts or as_json):
            from gasdb_tools.reviewapp import serve

            if release is not None and submission is None:
                raise click.UsageError("--release maps a --submission's names: give --submission too")
            workspace.read_index()  # a bad index is refused here, with file, line and column, not behind a page
            serve(workspace, host=host, port=port, open_browser=open_browser, submission=submission,
                  release=release, reviewer=by, echo=click.echo)
            return
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
    index = workspace.read_index()
    check_pair_ids(ids, index.pairs)
    if recordings:
        workspace.select_recordings(recordings, index=index)
        ids += [p["pair_id"] for rec in recordings for p in index.pairs_of(rec)
                if rv.label_path(workspace, p).is_file()]
    if not ids:
        raise click.UsageError("name the pairs (PAIR_ID ...) or --recording ID")
    func = rv.approve if action == "approve" else rv.reject
    kwargs = {"by": by, "note": note}
    done = func(workspace, ids, **kwargs)
    if as_json:
        emit_json({"workspace": str(workspace.root), "action": action, "pairs": done})
    else:
        click.echo(f"{len(done)} pair{'s' if len(done) != 1 else ''} {action.rstrip('e')}ed")
