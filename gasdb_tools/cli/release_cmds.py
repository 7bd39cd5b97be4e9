"""``gasdb split``, ``gasdb release``, ``gasdb verify``, ``gasdb diff``."""

from __future__ import annotations

import shlex
import warnings
from collections import Counter
from pathlib import Path

import click

from gasdb_tools.cli._common import emit_json, fail, json_option, workspace_argument
from gasdb_tools.splits import METHODS, LeakySplitWarning, check_split, parse_ratios, split_workspace

_SHOW = 10  # findings printed before "... and N more"


@click.command()
@workspace_argument
@click.option("--strategy", type=click.Choice(METHODS), default="video", show_default=True,
              help="video: whole recordings per split, fractions closest to the ratios; scene-stratified: also "
                   "spread every scene and gas/no-gas; random: single frames (the paper's protocol, LEAKS).")
@click.option("--ratios", default="0.8,0.2", show_default=True,
              help="train,test or train,val,test fractions summing to 1 (e.g. 0.7,0.1,0.2).")
@click.option("--val", type=float, help="Validation fraction of the whole: taken out of train when --ratios sums "
                                        "to 1 (0.8,0.2 --val 0.1), else --ratios is train,test and sums to 1-val "
                                        "(0.7,0.2 --val 0.1); both give 0.7/0.1/0.2.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed: picks among equally good assignments.")
@click.option("--group-by", "group_by", multiple=True, metavar="KEY",
              help="Keep recordings with an equal KEY on one side: a recordings.csv column (scene, or one you add, "
                   "e.g. background), tag:NAME (tags NAME=VALUE) or tag (any shared tag). Repeatable.")
@click.option("--together", multiple=True, metavar="REC,REC[,...]",
              help="Keep these recordings on one side (what --check prints for shared backgrounds). Repeatable.")
@click.option("--name", default="default", show_default=True, help="Split name: WS/splits/<name>.json.")
@click.option("--check", is_flag=True,
              help="Audit the split NAME instead of making one: recordings and (near-)identical frames across splits.")
@click.option("--tol", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="--check: per-cell tolerance in units of the frame's robust contrast.")
@click.option("--max-changed", type=click.FloatRange(0, 1, max_open=True), default=0.01, show_default=True,
              help="--check: fraction of thumbnail cells that may differ for frames to count as near-identical.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing, different split file of that name.")
@json_option
def split(workspace, strategy, ratios, val, seed, group_by, together, name, check, tol, max_changed, force, as_json):
    """Make leak-free train/val/test splits (by recording), or audit one with --check.

    Labelled, non-blacklisted pairs are split; whole recordings (or --group-by groups) go to one
    split, chosen so the achieved pair fractions are closest to the ratios. Prints requested and
    achieved fractions and warns (stderr; "warnings" in --json) when a split is more than 5 points
    off, saying whether any assignment could do better. Writes WS/splits/NAME.json (same inputs and
    seed: same bytes). --check exits 1 when a recording or a (near-)identical frame appears in two
    splits, and prints the --together re-split that keeps recordings sharing frames on one side.

    \b
    Example:
      gasdb split my-dataset --strategy video --ratios 0.7,0.1,0.2 --seed 0
      gasdb split my-dataset --ratios 0.8,0.2 --val 0.1 --group-by background
      gasdb split my-dataset --check
    """
    if check:
        report = check_split(workspace, name, tol=tol, outlier_fraction=max_changed)
        if as_json:
            emit_json(report.to_dict())
        else:
            _print_check(report, workspace)
        if not report.ok:
            fail()
        return
    try:
        ratio = parse_ratios(ratios, val=val)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ratios/--val") from None
    sets = [[r for r in t.split(",") if r.strip()] for t in together]
    if any(len(t) < 2 for t in sets):
        raise click.BadParameter("each --together needs two or more recording ids, e.g. rec01,rec02",
                                 param_hint="--together")
    if strategy == "random" and (group_by or sets):
        raise click.BadParameter("the frame-level random strategy cannot keep recordings together; use --strategy "
                                 "video or scene-stratified", param_hint="--group-by/--together")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeakySplitWarning)
        try:
            path, result = split_workspace(workspace, method=strategy, ratios=ratio, seed=seed, name=name,
                                           force=force, group_by=group_by, together=sets)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    notes = [f"THIS SPLIT LEAKS. {w.message}" for w in caught if issubclass(w.category, LeakySplitWarning)]
    if result.leaks:
        seen = Counter(g for gs in result.groups.values() for g in gs)
        shared = sorted(g for g, n in seen.items() if n > 1)
        notes.append(f"{len(shared)} recordings in more than one split (e.g. {', '.join(shared[:3])}); "
                     "use --strategy video for a leak-free split.")
    if result.warning:
        notes.append(f"split off target: {result.warning}")
    for note in notes:
        click.secho(f"WARNING: {note}", fg="red", bold=True, err=True)
    if as_json:
        emit_json({"path": str(path), **result.to_dict(name=name), "warnings": notes})
        return
    search = result.balance.get("search", {})
    how = {"exact": "exact search", "local": "local search", "frames": "by frame"}.get(search.get("method"), "")
    click.echo(f"wrote {path} ({strategy}, seed {seed}; {how})")
    click.echo(f"  {'split':<5} {'requested':>9} {'achieved':>9} {'pairs':>7} {'recordings':>10} {'with gas':>8}")
    for s in result.pairs:
        info = result.summary[s]
        click.echo(f"  {s:<5} {100 * result.ratios[s]:>8.1f}% {100 * info['achieved_fraction']:>8.1f}% "
                   f"{info['n_pairs']:>7} {info['n_groups']:>10} {info['positive_pairs']:>8}")
    if strategy == "scene-stratified":
        scenes = sorted({sc for info in result.summary.values() for sc in info["scene_fractions"]})
        click.echo("  share of each scene's pairs:")
        click.echo(f"  {'scene':<18} " + " ".join(f"{s:>6}" for s in result.pairs))
        for sc in scenes:
            click.echo(f"  {sc or '(none)':<18} " + " ".join(
                f"{100 * result.summary[s]['scene_fractions'][sc]:>5.1f}%" for s in result.pairs))
    for members in result.linked:
        click.echo(f"  kept together: {', '.join(members)}")
    balance = result.balance
    if balance.get("within_tolerance", True) and strategy != "random":
        click.echo(f"every split within {100 * balance['max_deviation']:.1f} points of its ratio "
                   f"(greedy assignment: {100 * balance.get('greedy_max_deviation', 0):.1f})")


def _print_check(report, workspace) -> None:
    click.echo(f"split {report.split} ({report.method}): {report.pairs} pairs")
    if report.missing:
        click.echo(f"  {len(report.missing)} pair(s) of the split are no longer in the workspace, e.g. "
                   f"{', '.join(report.missing[:3])}")
    for rec, splits in list(report.shared_groups.items())[:_SHOW]:
        click.echo(f"  recording {rec} is in {', '.join(splits)}")
    if len(report.shared_groups) > _SHOW:
        click.echo(f"  ... and {len(report.shared_groups) - _SHOW} more recordings")
    for kind, items in (("identical", report.identical), ("near-identical", report.near_identical)):
        for d in items[:_SHOW]:
            click.echo(f"  {kind}: {d['a']} ({d['split_a']}) ~ {d['b']} ({d['split_b']})")
        if len(items) > _SHOW:
            click.echo(f"  ... and {len(items) - _SHOW} more {kind} pairs")
    leaks = bool(report.shared_groups or report.identical or report.near_identical)
    verdict = "LEAKS" if leaks else ("ok" if report.ok else
                                     f"no leak, but {len(report.missing)} pair(s) missing: split again "
                                     f"(`gasdb split {shlex.quote(str(workspace.root))} --force`)")
    click.echo(f"{len(report.shared_groups)} shared recordings, {len(report.identical)} identical and "
               f"{len(report.near_identical)} near-identical frame pairs across splits: {verdict}")
    if report.fix:
        for members in report.linked:
            click.echo(f"recordings {', '.join(members)} share (near-)identical frames (a shared background?)")
        command = shlex.join(["gasdb", "split", str(workspace.root), *report.fix["args"]])
        click.echo(f"keep them on one side with:\n  {command}")
        click.echo("or give them one value in a recordings.csv column (e.g. background) and split with "
                   "--group-by background")


@click.command()
@workspace_argument
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="Semantic version of the release, e.g. 1.0.0.")
@click.option("--parent", "parent", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The previous release folder: its version becomes the parent version, and what changed since "
                   "it (gasdb diff) goes into the manifest and index.html.")
@click.option("--parent-version", help="Version this release derives from (default: --parent's version).")
@click.option("--license", "license_", default="NOASSERTION", show_default=True,
              help="SPDX licence id of the data, e.g. CC-BY-4.0; without it the release states that no licence was "
                   "given (SPDX NOASSERTION) and warns.")
@click.option("--split", "split_name", default="default", show_default=True, help="Split file WS/splits/<name>.json.")
@click.option("--require-reviewed", is_flag=True,
              help="Refuse to release masks nobody reviewed (pending drafts, documents marked for a recheck).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Encoding worker processes (default: CPUs, at most 8); the release's bytes do not depend on it.")
@click.option("-f", "--force", is_flag=True, help="Replace OUT when it is a previous gasdb release.")
@json_option
def release(workspace, out, version, parent, parent_version, license_, split_name, require_reviewed, jobs, force,
            as_json):
    """Build a versioned, verifiable release folder OUT from WORKSPACE.

    OUT gets gasdb.h5 (HDF5 pack, frames of any size), gasdb/ (Gas-DB/RT-CAN layout with ignore/
    masks), coco/ (per-split COCO with its images), hf/ (Hugging Face Parquet + card),
    croissant.json, index.csv, DATASHEET.md, figures/, index.html, manifest.json and SHA256SUMS.
    The workspace is only read; the folder appears only when complete (built as
    OUT.partial-XXXX, then renamed; removed on any failure). Warns on stderr when released masks
    were not reviewed by a person.

    \b
    Example:
      gasdb split my-dataset --seed 0
      gasdb release my-dataset releases/gasdb-1.0.0 --version 1.0.0 --license CC-BY-4.0
      gasdb release my-dataset releases/gasdb-1.1.0 --version 1.1.0 --parent releases/gasdb-1.0.0
    """
    from gasdb_tools.fsutil import read_json
    from gasdb_tools.croissant import NO_LICENSE
    from gasdb_tools.release import build_release

    try:
        path = build_release(workspace, out, version=version, parent_version=parent_version, parent=parent,
                             license=license_, split=split_name, force=force, jobs=jobs,
                             require_reviewed=require_reviewed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    manifest = read_json(path / "manifest.json")
    ann = manifest["annotation"]
    total = manifest["counts"]["total"]["pairs"]
    notes = []
    if ann["review"]["pending"] or ann["recheck"]:
        notes.append(f"{ann['review']['pending']} of {total} released masks were not reviewed by a person "
                     f"({ann['untouched_drafts']} untouched pre-annotation drafts, {ann['recheck']} to recheck); "
                     "the datasheet says so. Review them (gasdb label / gasdb review) or pass --require-reviewed "
                     "to refuse such releases.")
    audit = manifest["leakage_audit"]
    if audit["shared_recordings"] or audit["identical_across_splits"] or audit["near_identical_across_splits"]:
        notes.append(f"{len(audit['shared_recordings'])} recordings, {audit['identical_across_splits']} identical and "
                     f"{audit['near_identical_across_splits']} near-identical frame pairs are shared between splits "
                     "(see DATASHEET.md)")
    if manifest["license"] == NO_LICENSE:
        notes.append("no licence given: the datasheet, page and cards say so (SPDX NOASSERTION), and users cannot tell on "
                     "which terms they may use the data; rebuild with --license SPDX-ID (e.g. CC-BY-4.0) and --force")
    check = manifest.get("versioning")
    if check and not check["ok"]:
        notes.append(f"version {manifest['version']} is a {check['given'].upper()} bump over {manifest['parent_version']}, "
                     f"but {'; '.join(check['reasons'])} call(s) for {check['needed'].upper()} (Croissant's policy; "
                     "the datasheet says so). Rebuild with the right --version and --force if it is wrong.")
    for note in notes:
        click.secho(f"WARNING: {note}", fg="red", bold=True, err=True)
    if as_json:
        emit_json({"path": str(path), "version": manifest["version"], "counts": manifest["counts"],
                   "annotation": ann, "frames": manifest["frames"],
                   "leakage_audit": {k: v for k, v in audit.items() if k != "examples"},
                   "changes": manifest.get("changes"), "files": len(manifest["files"]), "warnings": notes})
        return
    click.echo(f"release {manifest['version']} written to {path} ({len(manifest['files'])} files)")
    order = {s: k for k, s in enumerate(("train", "val", "test"))}
    for s, c in sorted(manifest["counts"]["splits"].items(), key=lambda kv: (order.get(kv[0], 9), kv[0])):
        req = c.get("requested_fraction")
        click.echo(f"  {s:<5} {c['pairs']:>6} pairs ({100 * c['achieved_fraction']:.1f}%"
                   + (f", asked {100 * req:.1f}%" if req is not None else "") + f")  {c['recordings']:>4} recordings  "
                   f"{c['positive_pairs']:>6} with gas")
    click.echo(f"  frames: {', '.join(f'{k} ({v})' for k, v in manifest['frames']['sizes'].items())}; "
               f"{', '.join(f'{k}: {v}' for k, v in manifest['frames']['modalities'].items())}")
    click.echo(f"  review: {ann['review']['pending']} pending, {ann['review']['edited']} edited, "
               f"{ann['review']['approved']} approved")


@click.command()
@click.argument("release_dir", metavar="RELEASE", type=click.Path(file_okay=False, path_type=Path))
@json_option
def verify(release_dir, as_json):
    """Check a release against its manifest and SHA256SUMS; exit 1 naming each bad file.

    Recomputes every sha256 and count; reports corrupted, missing, extra and unsafe files (listed
    paths that are absolute, contain '..', or lead outside the release, symbolic links included)
    and a malformed manifest, without ever following such a path.

    \b
    Example:
      gasdb verify releases/gasdb-1.0.0
    """
    from gasdb_tools.release import verify_release

    report = verify_release(release_dir)
    if as_json:
        emit_json(report.to_dict())
    else:
        for p in report.to_dict()["problems"]:
            click.echo(f"{p['kind']}: {p['file']} ({p['detail']})")
        if report.ok:
            click.echo(f"ok: release {report.version} in {release_dir}: {report.files_checked} files verified")
        else:
            click.echo(f"FAILED: {len(report.problems)} problem(s) in {release_dir}", err=True)
    if not report.ok:
        fail()


@click.command()
@click.argument("old", metavar="OLD", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("new", metavar="NEW", type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
def diff(old, new, as_json):
    """Show what changed between two releases: pairs added, removed, moved between splits, changed masks.

    Pairs are matched by pair id; a changed mask is reported with the gas IoU between the two
    versions (ignore pixels left out). Both releases are verified first.

    \b
    Example:
      gasdb diff releases/gasdb-1.0.0 releases/gasdb-1.1.0
      gasdb diff releases/gasdb-1.0.0 releases/gasdb-1.1.0 --json > changes.json
    """
    from gasdb_tools.release_diff import diff_releases, format_diff

    result = diff_releases(old, new)
    if as_json:
        emit_json(result)
    else:
        click.echo(format_diff(result), nl=False)
