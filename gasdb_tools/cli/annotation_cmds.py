"""``gasdb validate``, ``gasdb blacklist``, ``gasdb export``, ``gasdb stats``."""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import check_pair_ids, emit_json, fail, json_option, workspace_argument
from gasdb_tools.workspace import Workspace

_FORMATS = ("masks", "coco", "gasdb")


def _labels_option(func):
    return click.option("--labels", "labels_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        help="Label list (labels.txt: __ignore__, _background_, gas). Default: the built-in "
                             "list.")(func)


def _class_names(labels_file: Path | None):
    from gasdb_tools.export import DEFAULT_CLASS_NAMES, read_class_names

    return read_class_names(labels_file) if labels_file else DEFAULT_CLASS_NAMES


@click.command()
@workspace_argument
@_labels_option
@click.option("--no-image-check", is_flag=True, help="Skip opening each annotation's image (faster).")
@json_option
def validate(workspace: Workspace, labels_file: Path | None, no_image_check: bool, as_json: bool) -> None:
    """Check every pair and LabelMe annotation of WORKSPACE; exit 1 on any problem.

    Reports, each with file, field and fix: malformed JSON, schema errors, missing images, size
    mismatches, points outside the image, degenerate or self-intersecting polygons, unknown
    labels, empty annotations on frames marked as gas, pairs missing a modality.

    \b
    Example:
      gasdb validate my-dataset
      gasdb validate my-dataset --json > problems.json
    """
    from gasdb_tools.validate import validate_workspace

    problems = validate_workspace(workspace, class_names=_class_names(labels_file), check_image=not no_image_check)
    n_pairs = len(workspace.pairs())
    if as_json:
        emit_json({"workspace": str(workspace.root), "pairs": n_pairs, "ok": not problems,
                   "problems": [p.to_dict() for p in problems]})
    else:
        for p in problems:
            click.echo(f"[{p.check}] {p}")
        click.echo(f"{n_pairs} pairs checked, {len(problems)} problem{'s' if len(problems) != 1 else ''}",
                   err=bool(problems))
    if problems:
        fail()


@click.command()
@workspace_argument
@click.argument("names", nargs=-1, metavar="[PAIR_ID]...")
@click.option("--reason", help='Why the frames are excluded, e.g. "water spray" or "gas too weak".')
@click.option("--remove", is_flag=True, help="Take the pairs off the blacklist instead.")
@json_option
def blacklist(workspace: Workspace, names: tuple[str, ...], reason: str | None, remove: bool, as_json: bool) -> None:
    """Exclude pairs from exports' train/test lists, with a reason; or list / remove entries.

    Without PAIR_ID the exclusions are listed: blacklist.csv, and the pairs whose LabelMe document
    is flagged water_spray or too_faint. Excluded pairs stay in the workspace and are recorded in
    exports (Gas-DB's blacklist.txt and index.csv), never in a split list.

    \b
    Example:
      gasdb blacklist my-dataset rec01_00012000 rec01_00012500 --reason "water spray"
      gasdb blacklist my-dataset                       # list
      gasdb blacklist my-dataset rec01_00012000 --remove
    """
    if names:
        entries = workspace.blacklist()
        check_pair_ids(names, workspace.read_index().pairs, allowed=entries if remove else ())
        if remove:
            if reason:
                raise click.UsageError("--reason goes with adding entries, not with --remove")
            missing = [n for n in names if n not in entries]
            if missing:
                raise click.BadParameter(f"not on the blacklist: {', '.join(missing)}", param_hint="PAIR_ID")
            entries = workspace.update_blacklist(remove=names)
        else:
            if not reason or not reason.strip():
                raise click.UsageError('give a reason, e.g. --reason "water spray" (it is recorded in releases)')
            entries = workspace.update_blacklist(add={n: reason.strip() for n in names})
    elif remove or reason:
        raise click.UsageError("name the pairs to add or remove (PAIR_ID ...)")
    else:
        entries = workspace.blacklist()
    from gasdb_tools.review import exclusions

    flagged = {p: r for p, r in exclusions(workspace).items() if p not in entries}
    if as_json:
        emit_json({"workspace": str(workspace.root), "blacklist": entries, "flagged": flagged})
        return
    if names:
        verb = "removed from" if remove else "added to"
        click.echo(f"{len(names)} pair{'s' if len(names) != 1 else ''} {verb} the blacklist ({len(entries)} in all)")
        return
    if not entries and not flagged:
        click.echo("the blacklist is empty")
    for pid, why in sorted(entries.items()):
        click.echo(f"{pid}\t{why}")
    for pid, why in sorted(flagged.items()):
        click.echo(f"{pid}\t{why}")


@click.command()
@workspace_argument
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(_FORMATS), required=True,
              help="masks: class-index PNGs; coco: RLE instance JSON; gasdb: the RT-CAN folder layout.")
@click.option("--pair", "pairs", multiple=True, help="Export only this pair (repeat). Default: every labelled pair.")
@_labels_option
@click.option("--thermal", type=click.Choice(("aligned", "enhanced")), default="aligned", show_default=True,
              help="gasdb: which thermal frame goes into channel 3.")
@click.option("--keep-ignore", is_flag=True, help="gasdb: keep ignore pixels as 255 in labels/ too (the official "
                                                   "loader expects 0/1 only; ignore/ always marks them).")
@click.option("-f", "--overwrite", is_flag=True, help="Write into an existing, non-empty OUT.")
@json_option
def export(workspace: Workspace, out: Path, fmt: str, pairs: tuple[str, ...], labels_file: Path | None, thermal: str,
           keep_ignore: bool, overwrite: bool, as_json: bool) -> None:
    """Export WORKSPACE's annotations to OUT as masks, COCO or the Gas-DB/RT-CAN layout.

    Every selected pair is checked before anything is written. Each pair keeps its recording's
    frame size; a thermal camera alone gets RGB = 0 (modality "thermal" in gasdb/index.csv); ignore
    pixels are 255 in masks, iscrowd 1 regions in COCO, and ignore/<name>.png beside the 0/1 labels
    of gasdb. masks and coco leave out blacklisted pairs (unless named with --pair); gasdb writes them
    but lists them only in blacklist.txt. OUT is a folder (coco: a .json file, or a folder that gets
    annotations.json).

    \b
    Example:
      gasdb export my-dataset --format gasdb release/gasdb
      gasdb export my-dataset --format coco release/coco.json
      gasdb export my-dataset --format masks release/masks
    """
    from gasdb_tools import export as ex

    target = out
    if fmt == "coco" and out.suffix.lower() != ".json":
        target = out / "annotations.json"
    if fmt == "coco" and target.exists() and not overwrite:
        raise click.UsageError(f"{target} exists; pass --overwrite to replace it")
    if fmt != "coco" and out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise click.UsageError(f"{out} exists and is not empty; pass --overwrite to write into it, or choose a new "
                               "folder")
    names = _class_names(labels_file)
    selection = list(pairs) or None
    if fmt == "masks":
        paths = ex.export_masks(workspace, out, pairs=selection, class_names=names)
        result = {"format": fmt, "out": str(out), "files": len(paths)}
        summary = f"wrote {len(paths)} masks to {out}"
    elif fmt == "coco":
        path = ex.export_coco(workspace, target, pairs=selection, class_names=names)
        import json

        doc = json.loads(path.read_text(encoding="utf-8"))
        result = {"format": fmt, "out": str(path), "images": len(doc["images"]),
                  "annotations": len(doc["annotations"])}
        summary = f"wrote {path}: {result['images']} images, {result['annotations']} gas instances"
    else:
        splits = None
        if selection:
            from gasdb_tools.review import exclusions

            index = workspace.read_index()
            black = exclusions(workspace, index)
            splits = ex.default_splits(workspace, [p for p in selection if p in index.pairs and p not in black])
        info = ex.export_gasdb(workspace, out, splits=splits, thermal=thermal,
                               ignore_value=255 if keep_ignore else 0, class_names=names)
        result = {"format": fmt, **info}
        counts = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
        summary = f"wrote {info['samples']} samples to {out} ({counts}, blacklisted {len(info['blacklisted'])})"
        if not as_json:  # --json carries them in "warnings"
            for w in info["warnings"]:
                click.echo(f"warning: {w}", err=True)
    if as_json:
        emit_json(result)
    else:
        click.echo(summary)


@click.command()
@workspace_argument
@_labels_option
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the PNG figures (default WORKSPACE/stats).")
@click.option("--no-figures", is_flag=True, help="Do not draw figures.")
@json_option
def stats(workspace: Workspace, labels_file: Path | None, figures_dir: Path | None, no_figures: bool,
          as_json: bool) -> None:
    """Counts per recording, scene and split, and the gas-coverage distribution, with figures.

    \b
    Example:
      gasdb stats my-dataset
      gasdb stats my-dataset --json --figures report/
    """
    from gasdb_tools.stats import workspace_stats, write_figures

    result = workspace_stats(workspace, class_names=_class_names(labels_file))
    figures = [] if no_figures else write_figures(result, figures_dir or workspace.root / "stats")
    result["figures"] = [str(p) for p in figures]
    if as_json:
        emit_json({k: v for k, v in result.items() if k != "pairs"})
        return
    t = result["totals"]
    click.echo(f"{t['pairs']} pairs, {t['labelled']} labelled, {t['positive']} with gas, "
               f"{t['blacklisted']} blacklisted")
    for title, table in (("recording", result["recordings"]), ("scene", result["scenes"]),
                         ("split", result["splits"])):
        if not table:
            continue
        rows = [[title, "pairs", "labelled", "gas", "blacklisted", "gas %"]]
        for key, c in table.items():
            frac = "-" if c["gas_fraction"] is None else f"{100 * c['gas_fraction']:.2f}"
            rows.append([key, str(c["pairs"]), str(c["labelled"]), str(c["positive"]), str(c["blacklisted"]), frac])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        click.echo("")
        for r in rows:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    q = result["coverage"]["quantiles"]
    if q:
        click.echo(f"\ngas coverage of positive pairs: median {100 * q['q50']:.2f} %, "
                   f"5-95 % range {100 * q['q05']:.2f}-{100 * q['q95']:.2f} %")
    for pid, msg in sorted(result["errors"].items()):
        click.echo(f"could not rasterise {pid}: {msg} (run gasdb validate)", err=True)
    for p in figures:
        click.echo(f"figure: {p}")
