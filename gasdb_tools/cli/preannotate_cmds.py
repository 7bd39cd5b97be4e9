"""``gasdb preannotate`` (LabelMe drafts by gas background subtraction, refined by corrections) and
``gasdb label`` (open LabelMe)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import click

from gasdb_tools import labelme_format
from gasdb_tools.cli._common import emit_json, fail, jobs_option, json_option, key_values, workspace_argument
from gasdb_tools.errors import FormatError, WorkspaceError
from gasdb_tools.resources import labelme_config
from gasdb_tools.workspace import Workspace

#: How to get the LabelMe app (the optional ``label`` extra).
INSTALL_HINT = "pip install 'gasdb-tools[label]'   (or: pip install labelme)"


@click.command()
@workspace_argument
@click.option("--method", type=click.Choice(("gas", "mog2", "knn")), default="gas", show_default=True,
              help="gas = the gas pipeline; mog2/knn = OpenCV's subtractors for ordinary moving objects.")
@click.option("--preset", type=click.Choice(("mask", "extent")), default=None,
              help="gas parameter set: mask = the plume as each frame shows it (pixel masks); extent = the "
                   "region it filled over the last 25 video frames, only where the scene flickers like gas "
                   "(box-style drafts, cluttered real scenes; misses a plume that stands still). [mask]")
@click.option("--polarity", type=click.Choice(("emitting", "absorbing", "both")), default=None,
              help="Plume sign: emitting = brighter than the scene, absorbing = darker. [both]")
@click.option("--k", "k", type=click.FloatRange(0, min_open=True), default=None,
              help="Threshold in robust noise sigmas (higher = fewer false alarms). [4]")
@click.option("--lead-in", "lead_in_s", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Seconds at the start of each recording known to be gas-free (0 = none).")
@click.option("--mode", type=click.Choice(("polygon", "mask")), default="polygon", show_default=True,
              help="polygon = editable polygons; mask = exact LabelMe mask shapes (not vertex-editable).")
@click.option("--epsilon", "epsilon_frac", type=click.FloatRange(0), default=0.003, show_default=True,
              help="Polygon simplification as a fraction of each blob's perimeter.")
@click.option("--param", "params", multiple=True, callback=key_values, metavar="KEY=VALUE",
              help="Any other knob of the method (e.g. --param learning_rate=0.05); repeatable.")
@click.option("--recording", "recordings", multiple=True, help="Only this recording (repeatable).")
@click.option("-f", "--force", is_flag=True,
              help="Rewrite untouched drafts even when they are up to date (edited, approved and reviewed "
                   "documents are never replaced).")
@click.option("--refine", is_flag=True,
              help="Learn from each recording's edited and approved documents: fit the background model's "
                   "parameters and a fusion of its evidence with the corrected masks carried by optical flow, "
                   "judged by leave-one-out IoU on those pairs, then rewrite the pending drafts.")
@click.option("--no-search", "no_search", is_flag=True,
              help="With --refine: keep the parameters, fit only the fusion (faster).")
@click.option("--carry", "carry_window_s", type=click.FloatRange(0, min_open=True), default=None,
              help="With --refine: how far a corrected mask is carried along the video, in seconds. [2]")
@click.option("--model", "use_model", is_flag=True,
              help="Train a small segmentation network on the corrected pairs (thermal + the background model's "
                   "evidence) and draft the pending pairs with it; saved in WORKSPACE/models/. Needs the bench "
                   "extra (torch).")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="With --model: training iterations (batches of 8 crops). [400]")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True,
              help="With --model: where to train and run it (auto = a GPU when present).")
@jobs_option
@json_option
def preannotate(workspace: Workspace, method: str, preset: str | None, polarity: str | None, k: float | None,
                lead_in_s: float, mode: str, epsilon_frac: float, params: dict, recordings: tuple[str, ...],
                force: bool, refine: bool, no_search: bool, carry_window_s: float | None, use_model: bool,
                iterations: int | None, device: str, jobs: int, scheduler: str | None, as_json: bool) -> None:
    """Draft LabelMe gas masks for every pair by background subtraction.

    Decodes each recording's thermal video at its full frame rate and native size, runs the gas
    background subtraction on every frame, and writes labels/<rec>/<pair>.json for the extracted
    pairs (in the aligned frame once the recording is aligned, the thermal frame of a thermal
    camera alone): editable gas polygons, provenance and review status 'pending'. A plain rerun
    rewrites exactly the untouched drafts whose video, pairs, geometry or parameters changed. A
    document a person changed is never replaced, not even with --force or --refine; when the
    geometry under it changed (a recalibration) its shapes are re-projected, the old version
    kept in labels/<rec>/.history/, and it is marked for re-review.

    With --refine the corrected documents teach the drafts of the same recording; the fit and
    its held-out IoU are recorded in every refined draft and printed. Correct the pairs
    `gasdb suggest` lists, then refine again. With --model a small network trained on the
    corrected pairs of all the selected recordings drafts the pending ones (its checkpoint's
    sha256 goes into each draft). A plain rerun goes back to plain drafts.

    \b
    Examples:
      gasdb preannotate my-dataset
      gasdb preannotate my-dataset --polarity absorbing --lead-in 2 --force
      gasdb preannotate my-dataset --preset extent --param hold=10
      gasdb preannotate my-dataset --refine --json
      gasdb preannotate my-dataset --model --iterations 600
    """
    from gasdb_tools.preannotate import preannotate_workspace
    from gasdb_tools.stages import use_scheduler

    if polarity is not None:
        params["polarity"] = polarity
    if k is not None:
        params["k"] = k
    if (no_search or carry_window_s is not None) and not refine:
        raise click.UsageError("--no-search and --carry go with --refine")
    if (iterations is not None or device != "auto") and not use_model:
        raise click.UsageError("--iterations and --device go with --model")
    config = None
    if iterations is not None:
        from gasdb_tools.draftmodel import TrainConfig

        config = TrainConfig(iterations=iterations)
    try:
        with use_scheduler(scheduler):
            report = preannotate_workspace(workspace, method=method, preset=preset, force=force,
                                           recordings=recordings or None, lead_in_s=lead_in_s, mode=mode,
                                           epsilon_frac=epsilon_frac, jobs=jobs, refine=refine,
                                           search=not no_search, carry_window_s=carry_window_s, model=use_model,
                                           model_config=config, device=device, **params)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        emit_json(report)
    else:
        index = workspace.read_index()
        for r in report["recordings"]:
            if r["error"]:
                click.echo(f"{r['id']}: FAILED: {r['error']}", err=True)
                continue
            rec_row = index.recordings.get(r["id"], {})
            note = ("" if r["frame"] != "thermal" or not r["pairs"] or not rec_row.get("rgb") else
                    "  [thermal coordinates: run `gasdb align`, then preannotate again]")
            extra = ""
            if r["reprojected"]:
                extra += f", {r['reprojected']} re-projected (to recheck)"
            if r["changed_meanwhile"]:
                extra += f", {r['changed_meanwhile']} saved by someone meanwhile (left alone)"
            click.echo(f"{r['id']}: {r['written']} written, {r['skipped']} up to date, "
                       f"{r['kept_edited']} edited left alone{extra}, {r['empty']} without gas{note}")
            if "refined" in r:
                click.echo(f"  {_refined_line(r['refined'])}")
        if report.get("model"):
            m = report["model"]
            held = f"held-out IoU {m['val_iou']:.3f} on {m['val_pairs']} pair(s)" if m["val_iou"] is not None else \
                "no held-out pairs (fewer than 5 corrected)"
            click.echo(f"draft model {m['path']} (sha256 {m['sha256'][:12]}): {m['train_pairs']} corrected pairs, "
                       f"{held}, {m['seconds']:.0f} s on {m['device']}")
        rv = report["review"]
        click.echo(f"{report['written']} drafts written, {report['kept_edited']} edited files left alone; review: "
                   f"{rv['pending']} pending, {rv['edited']} edited, {rv['approved']} approved; "
                   f"next: gasdb label {workspace.root}")
    if report["failed"]:
        fail(f"{report['failed']} recording(s) failed; see preannotate_error in `gasdb status`")


def _refined_line(refined: dict) -> str:
    """One line about a recording's refinement."""
    if "choice" not in refined:
        return f"refine: {refined.get('note', 'not refined')}"
    iou = refined["held_out"]["iou"]
    held = ", ".join(f"{k} {v:.3f}" for k, v in iou.items() if v is not None)
    what = {"base": "kept the current parameters", "params": "fitted parameters", "fusion": "fusion with the "
            "corrected masks"}[refined["choice"]]
    changed = ", ".join(f"{k}={v}" for k, v in refined["changed"].items())
    return (f"refine: {what}{' (' + changed + ')' if changed and refined['choice'] == 'params' else ''}; "
            f"held-out IoU over {len(refined['held_out']['pairs'])} corrected pair(s) "
            f"({refined['held_out']['units']}): {held}")


def _find_labelme() -> str | None:
    """Path of the ``labelme`` executable, or None when the app is not installed."""
    return shutil.which("labelme")


def image_folder(ws: Workspace, recording: str) -> Path:
    """The folder of the images a recording's drafts show (where LabelMe is opened)."""
    folders: Counter = Counter()
    for row in ws.pairs(recording):
        if not row.get("label"):
            continue
        path = ws.path(row["label"])
        try:
            doc = labelme_format.read(path)
        except FormatError:
            continue
        folders[labelme_format.image_file(doc, path)[0].parent.resolve()] += 1
    if not folders:
        raise WorkspaceError(f"recording {recording!r} has no annotation drafts yet", file=ws.root / ws.PAIRS,
                             field="label", fix=f"run `gasdb preannotate {ws.root}` first")
    return folders.most_common(1)[0][0]


def labelme_command(ws: Workspace, recording: str, *, config, executable: str = "labelme") -> list[str]:
    """The command line that opens LabelMe on one recording's frames and drafts.

    LabelMe opens the folder of the images and reads/writes ``<output>/<image stem>.json``, i.e.
    ``labels/<rec>/<pair>.json``; everything else (labels, flags, no embedded image data,
    autosave) comes from the config, because LabelMe 7 dropped ``--nodata``/``--autosave``.
    """
    return [str(executable), str(image_folder(ws, recording)), "--output", str(ws.root / "labels" / recording),
            "--config", str(config)]


@click.command()
@workspace_argument
@click.option("--recording", help="Recording to open (default: the first one with pending drafts).")
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="LabelMe config (default: WORKSPACE/annotation/labelme.yaml, else the one shipped with gasdb).")
@click.option("-n", "--dry-run", is_flag=True, help="Print the LabelMe command instead of running it.")
def label(workspace: Workspace, recording: str | None, config: Path | None, dry_run: bool) -> None:
    """Open the LabelMe app on a recording's frames and drafts, with the project's config.

    LabelMe is an optional extra. Review state lives in the LabelMe files, so edits, flags
    (water_spray and too_faint exclude a frame) and the approved flag count as soon as LabelMe
    saves; when it closes, the review counts are printed.

    \b
    Examples:
      gasdb label my-dataset
      gasdb label my-dataset --recording take01 --dry-run
    """
    from gasdb_tools import review

    index = workspace.read_index()
    if recording is None:
        states = review.read_states(workspace, index)
        labelled = sorted({index.pairs[p]["recording"] for p in states})
        if not labelled:
            fail(f"no annotation drafts in {workspace.root}: run `gasdb preannotate {workspace.root}` first")
        pending = [index.pairs[p]["recording"] for p in sorted(states) if states[p].status == "pending"]
        recording = pending[0] if pending else labelled[0]
    elif recording not in index.recordings:
        raise click.BadParameter(f"no recording {recording!r} (known: {', '.join(index.recordings) or 'none'})",
                                 param_hint="--recording")
    config = config or labelme_config(workspace.root)
    executable = "labelme" if dry_run else _find_labelme()
    if executable is None:
        fail(f"the LabelMe app is not installed. Install it with:\n  {INSTALL_HINT}")
    cmd = labelme_command(workspace, recording, config=config, executable=executable)
    if dry_run:
        click.echo(" ".join(_quote(c) for c in cmd))
        return
    click.echo(f"opening LabelMe on {recording} (close it when done)", err=True)
    done = subprocess.run(cmd, check=False)
    index = workspace.read_index()
    states = review.read_states(workspace, index)
    c = review.counts(states, [p["pair_id"] for p in index.pairs_of(recording)])
    flagged = [p for p in sorted(states) if states[p].exclude and index.pairs[p]["recording"] == recording]
    click.echo(f"review of {recording}: {c['pending']} pending, {c['edited']} edited, {c['approved']} approved"
               + (f"; excluded by a flag: {', '.join(flagged)}" if flagged else ""))
    if done.returncode != 0:
        fail(f"LabelMe exited with status {done.returncode}")


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
