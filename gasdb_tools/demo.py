"""``gasdb demo``: the whole pipeline on simulated recordings, end to end."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from gasdb_tools.errors import WorkspaceError
from gasdb_tools.fsutil import write_json
from gasdb_tools.recordings import add_recording
from gasdb_tools.synth import synthesize
from gasdb_tools.workspace import Workspace

__all__ = ["run_demo"]

_MARKER = ".gasdb-demo"


def run_demo(out, *, recordings: int = 2, seconds: float = 4.0, force: bool = False) -> dict:
    """Simulate recordings and run every stage; returns ``{"out", "steps": [{"stage", "result", "seconds"}]}``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise WorkspaceError("output folder exists and is not empty", file=out,
                                 fix="pass --force to replace a previous demo, or choose a new folder")
        if not (out / _MARKER).exists():
            raise WorkspaceError("refusing to delete a folder that gasdb demo did not create", file=out,
                                 fix="choose a new folder for the demo")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("created by gasdb demo\n")
    steps = []

    def step(stage, func):
        t0 = time.perf_counter()
        result = func()
        steps.append({"stage": stage, "result": result, "seconds": round(time.perf_counter() - t0, 2)})
        return result

    listing = step("synth", lambda: synthesize(out / "recordings", recordings=recordings, seconds=seconds))
    steps[-1]["result"] = f"{len(listing)} recordings in {out / 'recordings'}"
    ws = Workspace.init(out / "workspace", name="gasdb-demo")

    def add_all():
        for r in listing:
            d = out / "recordings" / r["dir"]
            add_recording(ws, rgb=d / "rgb.mp4", thermal=d / "thermal.mp4", scene=r["scene"], recording_id=r["id"])
        return f"{len(listing)} recordings registered in {ws.root}"

    step("add", add_all)
    summary = {"out": str(out), "workspace": str(ws.root), "steps": steps}
    write_json(out / "demo-summary.json", summary)
    return summary
