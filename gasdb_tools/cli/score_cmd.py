"""``gasdb score``: score a segmentation submission against a release's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gasdb_tools import progress
from gasdb_tools.cli._common import fail, json_option
from gasdb_tools.errors import SubmissionError
from gasdb_tools.fsutil import dumps_json, write_json
from gasdb_tools.scoring import (BY_COLUMNS, SCHEMA, SCHEMA_VERSION, format_table, score as score_submission,
                                 to_codabench, to_codalab, to_evalai)
from gasdb_tools.submission import InvalidSubmissionError

FORMATS = ("table", "json", "codalab", "codabench", "evalai")


@click.command()
@click.argument("gt", metavar="GT", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("submission", metavar="SUBMISSION", type=click.Path(exists=True, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Split list of the release to score.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the full JSON result (or the error report) to FILE.")
@click.option("--per-image", is_flag=True, help="Add per-image rows and per-image means (secondary).")
@click.option("--by", "by", multiple=True, type=click.Choice(BY_COLUMNS),
              help="Break the result down by an index.csv column (repeatable).")
@click.option("--binary-255", is_flag=True, help="Submitted masks are 0/255 instead of 0/1.")
@click.option("--allow-missing", is_flag=True, help="Development mode: score missing masks as background.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="What to print: a table, the JSON result, or a challenge platform's file.")
@click.option("--count-ignore", is_flag=True,
              help="Score ignore pixels as background, exactly as RT-CAN's official code (no ignore class); by "
                   "default they are left out (the release's gasdb/ignore/ masks, 255 in a masks folder).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None, metavar="N",
              help="Processes reading, decoding and counting masks (default: every core); the result is "
                   "byte-identical for any N.")
@json_option
def score(gt: Path, submission: Path, split: str, out: Path | None, per_image: bool, by: tuple[str, ...],
          binary_255: bool, allow_missing: bool, fmt: str, count_ignore: bool, jobs: int | None,
          as_json: bool) -> None:
    """Score SUBMISSION (a folder or .zip of <id>.png masks, 0/1) against the ground truth GT.

    GT is a release folder (gasdb/labels, gasdb/test.txt, index.csv) or a folder of ground-truth
    masks. The metrics are Gas-DB's: one global confusion matrix; Acc = gas recall, IoU, F2.
    Pixels a release marks as ignore (gasdb/ignore/; 255 in a masks folder) are not scored unless
    --count-ignore, which reproduces RT-CAN's official numbers (ignore scored as background).
    An invalid submission (missing, duplicate, wrong-size, multi-channel, 16-bit, non-PNG or
    unsafe files, values outside 0/1) exits 1 with every problem listed.

    \b
    Example:
      gasdb score release-v1 predictions.zip --by scene -o score.json
      gasdb score release-v1 predictions/ --format codalab > output/scores.txt
      gasdb score release-v1 predictions.zip --count-ignore    # RT-CAN's official protocol
      gasdb score release-v1 predictions.zip --jobs 1 --json
    """
    if fmt != "table":
        progress.set_enabled(False)
    try:
        result = score_submission(gt, submission, split=split, per_image=per_image, by=by or None,
                                  binary_255=binary_255, allow_missing=allow_missing, workers=jobs,
                                  count_ignore=count_ignore)
    except SubmissionError as exc:
        report = exc.report if isinstance(exc, InvalidSubmissionError) else {
            "valid": False, "n_errors": 1, "errors": [exc.to_dict()], "warnings": []}
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "submission": submission.name, **report}
        if out is not None:
            write_json(out, doc)
        if as_json:
            click.echo(dumps_json(doc), nl=False)
        fail(f"Error: {exc}" + "".join(f"\nwarning: {w}" for w in report["warnings"]))
    if out is not None:
        write_json(out, result)
    if as_json or fmt == "json":
        click.echo(dumps_json(result), nl=False)
    elif fmt == "table":
        click.echo(format_table(result), nl=False)
    elif fmt == "codalab":
        click.echo(to_codalab(result), nl=False)
    elif fmt == "codabench":
        click.echo(json.dumps(to_codabench(result), sort_keys=True, allow_nan=False))
    else:
        click.echo(json.dumps(to_evalai(result), sort_keys=True, allow_nan=False))
