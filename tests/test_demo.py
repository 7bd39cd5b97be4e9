"""`make demo` runs `gasdb demo`: the whole pipeline on the simulated rig, every role played."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from gasdb_tools.cli import main
from gasdb_tools.release import verify_release


@pytest.mark.slow
def test_the_demo_runs_every_stage_and_corrections_teach_the_drafts(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "demo-summary.json").read_text())
    stages = [s["stage"] for s in summary["steps"]]
    assert stages[:10] == ["synth", "add", "extract", "calibrate", "align", "enhance", "preannotate", "refine",
                           "annotate", "validate"]
    assert {"release", "score", "bench"} <= set(stages)
    results = {s["stage"]: s["result"] for s in summary["steps"]}
    m = re.search(r"picked (\d+) of (\d+) pairs.*IoU against the truth: ([\d.]+) % static -> ([\d.]+) %",
                  results["refine"])
    assert m, results["refine"]
    picked, total, static, refined = int(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert 3 <= picked < total and refined > static + 5  # a few corrections make the other drafts better
    assert results["validate"] == "0 problems"
    assert verify_release(summary["release"]).ok
    again = CliRunner().invoke(main, ["demo", str(out)])
    assert again.exit_code == 1 and "--force" in again.output  # an existing demo is not overwritten silently
