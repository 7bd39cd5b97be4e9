"""``gasdb synth`` and ``gasdb demo``."""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import emit_json, json_option


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--recordings", "-n", default=2, show_default=True, type=click.IntRange(1, 100),
              help="Number of recordings.")
@click.option("--seconds", default=4.0, show_default=True, type=click.FloatRange(0.5, 600),
              help="Thermal duration of each recording (the RGB stream covers it, plus the start offset).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (recording i uses seed + i).")
@click.option("--contrast", default=20.0, show_default=True, type=click.FloatRange(1, 128),
              help="Plume contrast in grey levels at unit concentration (8-16 faint, 32+ clear).")
@click.option("--size", default="640x512", show_default=True, help="Frame size WIDTHxHEIGHT of both cameras.")
@json_option
def synth(out: Path, recordings: int, seconds: float, seed: int, contrast: float, size: str, as_json: bool) -> None:
    """Simulate rig recordings with exact ground truth.

    Each recording is a paired RGB + thermal take of a fixed two-camera rig.

    Writes OUT/<id>/rgb.mp4, OUT/<id>/thermal.mp4 and OUT/<id>/truth/ (per-thermal-frame gas
    masks, the thermal->RGB homography, the start offset, truth.json). Streams have different
    frame rates and a known start offset; the plume is visible in thermal only. Deterministic
    for a seed.

    \b
    Example:
      gasdb synth sim --recordings 3 --seconds 6 --seed 7
      gasdb add ws --rgb sim/synth01/rgb.mp4 --thermal sim/synth01/thermal.mp4 --scene near
    """
    from gasdb_tools.synth import synthesize

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT, got {size!r}", param_hint="--size") from None
    if w < 64 or h < 64:
        raise click.BadParameter("frames must be at least 64x64", param_hint="--size")
    listing = synthesize(out, recordings=recordings, seconds=seconds, seed=seed, contrast=contrast, size=(w, h))
    if as_json:
        emit_json([{"id": r["id"], "dir": str(out / r["dir"]), "scene": r["scene"], **r["truth"]} for r in listing])
        return
    for r in listing:
        t = r["truth"]
        click.echo(f"{out / r['dir']}: {t['rgb_frames']} RGB frames @ {t['rgb_fps']:g} fps, "
                   f"{t['thermal_frames']} thermal @ {t['thermal_fps']:g} fps, offset {t['offset_s']:.3f} s, "
                   f"scene {r['scene']}")


@click.command()
@click.argument("out", default="demo-workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--recordings", "-n", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Number of simulated recordings.")
@click.option("--seconds", default=4.0, show_default=True, type=click.FloatRange(1, 120),
              help="Length of each simulated recording.")
@click.option("--force", is_flag=True, help="Delete a previous demo in OUT first (only a folder made by gasdb demo).")
@json_option
def demo(out: Path, recordings: int, seconds: float, force: bool, as_json: bool) -> None:
    """Run the whole pipeline on simulated recordings.

    Simulates a rig, builds a workspace in OUT/workspace, runs every stage on it, builds a
    release in OUT/release, scores a submission and lists what each stage produced and where.

    \b
    Example:
      gasdb demo demo-workspace --recordings 3 --seconds 4
    """
    from gasdb_tools.demo import run_demo

    summary = run_demo(out, recordings=recordings, seconds=seconds, force=force)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"demo finished in {out}")
    for step in summary["steps"]:
        click.echo(f"  {step['stage']:<12} {step['result']}")
