"""The ``gasdb`` command line: one click group whose commands load lazily, in pipeline order.

Each command lives in a small module of this package and only parses options, calls the library,
and prints (a table, or ``--json``). Library errors (:class:`gasdb_tools.errors.GasdbError`) become
``Error: <file>: <field>: <problem> -> <fix>`` with exit code 1; bad flags exit with 2.
"""

from __future__ import annotations

import importlib
import logging

import click

from gasdb_tools import __version__, progress
from gasdb_tools.errors import GasdbError

# name -> (module, attribute, one-line summary). The order is the pipeline order shown by --help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("workspace_cmds", "init", "Create an empty dataset workspace."),
    "add": ("workspace_cmds", "add", "Register a recording (RGB + thermal video, or a thermal camera alone) in a workspace."),
    "remove": ("workspace_cmds", "remove", "Unregister a recording; its outputs move to WS/removed/<id>/, nothing is deleted."),
    "status": ("workspace_cmds", "status", "Show what each stage has done per recording: done, stale, missing or failed."),
    "synth": ("synth_cmds", "synth", "Simulate rig recordings with exact ground truth."),
    "extract": ("extract_cmd", "extract", "Extract time-synchronised RGB-thermal frame pairs."),
    "calibrate": ("registration_cmds", "calibrate", "Estimate the rig's thermal-to-RGB registration from the edges both cameras see."),
    "align": ("registration_cmds", "align", "Warp every thermal frame into the RGB frame, with a valid-pixel mask."),
    "enhance": ("enhance_cmd", "enhance", "Tarel-Hautiere visibility restoration of thermal frames, as 8-bit PNGs for annotators."),
    "preannotate": ("preannotate_cmds", "preannotate", "Draft LabelMe gas masks for every pair by background subtraction."),
    "suggest": ("suggest_cmd", "suggest", "List the pending pairs whose correction would help the drafts most."),
    "label": ("preannotate_cmds", "label", "Open the LabelMe app on a recording's frames and drafts, with the project's config."),
    "review": ("review_cmds", "review", "Browse, compare and review every pair in a local web app; or approve/reject pairs from scripts."),
    "validate": ("annotation_cmds", "validate", "Check every pair and LabelMe annotation of WORKSPACE; exit 1 on any problem."),
    "blacklist": ("annotation_cmds", "blacklist", "Exclude pairs from exports' train/test lists, with a reason; or list / remove entries."),
    "export": ("annotation_cmds", "export", "Export WORKSPACE's annotations to OUT as masks, COCO or the Gas-DB/RT-CAN layout."),
    "stats": ("annotation_cmds", "stats", "Counts per recording, scene and split, and the gas-coverage distribution, with figures."),
    "split": ("release_cmds", "split", "Make leak-free train/val/test splits (by recording), or audit one with --check."),
    "release": ("release_cmds", "release", "Build a versioned, verifiable release folder OUT from WORKSPACE."),
    "verify": ("release_cmds", "verify", "Check a release against its manifest and SHA256SUMS; exit 1 naming each bad file."),
    "diff": ("release_cmds", "diff", "Show what changed between two releases: pairs added, removed, moved between splits, changed masks."),
    "score": ("score_cmd", "score", "Score SUBMISSION (a folder or .zip of <id>.png masks, 0/1) against the ground truth GT."),
    "bench": ("bench_cmds", "bench", "Reference benchmark harness: RT-CAN and baselines on Gas-DB (needs the bench extra)."),
    "demo": ("synth_cmds", "demo", "Run the whole pipeline on simulated recordings."),
}

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is used."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"gasdb_tools.cli.{module}"), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, summary) for name, (_, _, summary) in COMMANDS.items()]
        with formatter.section("Commands (in pipeline order)"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GasdbError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # a full disk, a read-only folder, a permission: one line, exit 1
            from gasdb_tools.stages import os_error_text

            raise click.ClickException(os_error_text(exc)) from exc


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="gasdb")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no log output below errors.")
def main(verbose: int, quiet: bool) -> None:
    """Turn RGB + thermal gas-leak recordings into a released, benchmarked segmentation dataset.

    \b
    Pipeline: recordings -> extract -> calibrate/align -> enhance -> preannotate
      -> LabelMe -> validate/export -> split -> release -> score / bench

    \b
    Example (the whole pipeline on simulated recordings):
      gasdb demo demo-workspace
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if quiet:
        progress.set_enabled(False)
