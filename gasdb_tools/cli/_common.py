"""Conventions shared by every ``gasdb`` command: workspace argument, ``--json``, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from gasdb_tools import progress
from gasdb_tools.errors import GasdbError
from gasdb_tools.workspace import Workspace

__all__ = ["workspace_argument", "json_option", "jobs_option", "emit_json", "fail", "open_workspace", "key_values"]


def open_workspace(ctx, param, value) -> Workspace:
    """click callback: open a workspace or report a usage error (exit 2)."""
    try:
        ws = Workspace.open(value)
    except GasdbError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    _prestart_workers(ctx, workspace=ws)
    return ws


def key_values(ctx, param, values) -> dict:
    """click callback for repeated ``KEY=VALUE`` options: values parsed as JSON when they are JSON
    (numbers, booleans, lists), else kept as text; ``-`` in keys becomes ``_`` (Python keyword names)."""
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out


def workspace_argument(func):
    """Positional ``WORKSPACE`` argument, opened as a :class:`Workspace`."""
    return click.argument("workspace", metavar="WORKSPACE", callback=open_workspace,
                          type=click.Path(file_okay=False, path_type=Path))(func)


def _json_callback(ctx, param, value):
    if value:
        progress.set_enabled(False)
    return value


def json_option(func):
    """``--json``: print a machine-readable result on stdout (and no progress bars)."""
    return click.option("--json", "as_json", is_flag=True, callback=_json_callback, expose_value=True,
                        help="Print a machine-readable JSON result on stdout.")(func)


def _scheduler_callback(ctx, param, value):
    value = value.strip() or None if value else None
    _prestart_workers(ctx, scheduler=value)
    return value


def _jobs_callback(ctx, param, value):
    _prestart_workers(ctx, jobs=value)
    return value


#: The stage module each command runs (its workers' fork server preloads it).
_STAGE_MODULES = {"extract": "gasdb_tools.extract", "calibrate": "gasdb_tools.calibration",
                  "align": "gasdb_tools.align", "enhance": "gasdb_tools.enhance",
                  "preannotate": "gasdb_tools.preannotate"}


def _prestart_workers(ctx, **now) -> None:
    """Once the workspace, ``--jobs`` and ``--scheduler`` are parsed: a stage that will run
    recordings in local worker processes starts their fork server now
    (:func:`gasdb_tools.stages.prestart`), so that its imports overlap the command's own."""
    params = {**ctx.params, **now}
    if ctx.resilient_parsing or ctx.meta.get("gasdb.prestart") or not {"jobs", "scheduler", "workspace"} <= set(params):
        return
    ctx.meta["gasdb.prestart"] = True
    ws = params["workspace"]
    if params["scheduler"] or not params["jobs"] or params["jobs"] < 2 or not isinstance(ws, Workspace):
        return
    try:
        if len(ws.select_recordings()) < 2:  # one recording runs in this process
            return
    except GasdbError:
        return  # the command reports it
    from gasdb_tools.stages import prestart

    prestart(_STAGE_MODULES.get(ctx.info_name))


def jobs_option(func):
    """``--jobs N`` and ``--scheduler ADDRESS``: where the stage runner runs the recordings
    (:func:`gasdb_tools.stages.run_stage`); the command receives ``jobs`` and ``scheduler``."""
    func = click.option("--scheduler", metavar="ADDRESS", envvar="DASK_SCHEDULER_ADDRESS", default=None,
                        callback=_scheduler_callback, show_envvar=True,
                        help="Run the recordings on this Dask scheduler's workers (tcp://host:8786), which must "
                             "see the workspace at the same path; see the README's cluster set-up.")(func)
    return click.option("-j", "--jobs", type=click.IntRange(min=1), default=lambda: os.cpu_count() or 1,
                        show_default="all CPUs", callback=_jobs_callback,
                        help="Cores on this machine: recordings in parallel worker processes, and the frames of "
                             "a recording in threads when there are fewer recordings than jobs (1: one core; "
                             "outputs are byte-identical whatever the number).")(func)


def emit_json(obj) -> None:
    """Print ``obj`` as deterministic JSON on stdout."""
    click.echo(json.dumps(obj, sort_keys=True, indent=2, allow_nan=False, default=str))


def fail(message: str | None = None) -> None:
    """End a command with exit code 1 (a failed check), after printing ``message`` to stderr."""
    if message:
        click.echo(message, err=True)
    raise click.exceptions.Exit(1)


def check_pair_ids(names, known, *, allowed=()) -> None:
    """A usage error (exit 2) for the first of ``names`` that is neither a pair of ``known`` nor in
    ``allowed``, with the closest pair ids as a hint."""
    import difflib

    for name in names:
        if name not in known and name not in allowed:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise click.BadParameter(f"no pair {name!r} in the workspace{hint}", param_hint="PAIR_ID")
