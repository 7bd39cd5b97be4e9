"""The review app in a real browser: headless Chromium (Debian's package) driven by Playwright.

The workspace is the demo's pipeline at a smaller scale (``gasdb demo`` makes 3 recordings x 4 s at
640x512 in 1-2 minutes; here 2 recordings x 2 s at 320x256, the same stages: synth, add, extract,
calibrate, align, enhance, preannotate), stopped before the demo's simulated annotator, so every
draft is pending as a reviewer first finds it. Screenshots of the gallery and the pair view are
written to ``$GASDB_TEST_ARTIFACTS`` (default ``test-artifacts/review/`` in the repository).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("flask")
pytest.importorskip("waitress")
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the test extra)")

from gasdb_tools import labelme_format, review  # noqa: E402
from gasdb_tools.cli import main  # noqa: E402
from gasdb_tools.reviewapp import start_server  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REASON = "water spray in view (browser test)"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")


def build_demo_workspace(out: Path):
    """The demo's stages on 2 short, small simulated recordings (no annotator pass)."""
    from gasdb_tools.align import align_workspace
    from gasdb_tools.calibration import calibrate_workspace
    from gasdb_tools.enhance import enhance_workspace
    from gasdb_tools.extract import extract_workspace
    from gasdb_tools.preannotate import preannotate_workspace
    from gasdb_tools.recordings import add_recording
    from gasdb_tools.synth import synthesize
    from gasdb_tools.workspace import Workspace

    listing = synthesize(out / "recordings", recordings=2, seconds=2.0, size=(320, 256))
    ws = Workspace.init(out / "workspace", name="gasdb-demo")
    for r in listing:
        d = out / "recordings" / r["dir"]
        add_recording(ws, rgb=d / "rgb.mp4", thermal=d / "thermal.mp4", scene=r["scene"], recording_id=r["id"],
                      tags=(r["truth"]["polarity"],))
    extract_workspace(ws, every=0.2)
    calibrate_workspace(ws, frames=8, figure=False)
    align_workspace(ws)
    absorbing = [r["id"] for r in listing if r["truth"]["polarity"] == "absorbing"]
    enhance_workspace(ws, recordings=absorbing, invert=True)
    enhance_workspace(ws, recordings=[r["id"] for r in listing if r["id"] not in absorbing])
    preannotate_workspace(ws)
    return ws


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory):
    _chromium()
    return build_demo_workspace(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def server(demo_ws):
    srv, url = start_server(demo_ws, port=0)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    yield url
    srv.close()


@pytest.fixture
def page(tmp_path):
    exe = _chromium()
    with playwright_api.sync_playwright() as p:
        try:
            ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe,
                                                       args=CHROMIUM_ARGS, headless=True,
                                                       viewport={"width": 1280, "height": 900})
        except playwright_api.Error as exc:
            pytest.skip(f"Chromium ({exe}) could not be started: {exc}")
        pg = ctx.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        yield pg
        ctx.close()
        assert not errors, errors  # no script error, no CSP violation, no failed request


def artifacts() -> Path:
    out = Path(os.environ.get("GASDB_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "review")
    out.mkdir(parents=True, exist_ok=True)
    return out


def ready(pg):
    pg.wait_for_selector("body[data-ready='1']")
    pg.wait_for_function("() => Array.from(document.images)"
                         ".every(i => i.complete && (i.naturalWidth > 0 || i.loading === 'lazy'))")


def card_status(pg, pid):
    return pg.locator(f"#card-{pid} [data-role=status]").inner_text()


def test_review_in_the_browser(demo_ws, server, page):
    ws = demo_ws
    states = review.read_states(ws)
    assert states and all(s.status == "pending" for s in states.values())
    pg = page
    pg.goto(server)
    ready(pg)
    assert pg.locator("#counts [data-status=pending] b").inner_text() == str(len(states))
    pg.fill("#reviewer", "browser-reviewer")
    pg.press("#reviewer", "Tab")  # 'change' stores the name

    # filter to pending (the select submits the form)
    with pg.expect_navigation():
        pg.select_option("#f-status", "pending")
    ready(pg)
    assert "status=pending" in pg.url
    cards = pg.locator("#grid .card")
    pids = [cards.nth(i).get_attribute("data-pid") for i in range(cards.count())]
    assert pids == sorted(states)

    # approve three pairs with the keyboard: 'a' approves the focused card and moves on
    pg.locator("body").click(position={"x": 5, "y": 400})  # focus the page, not the reviewer field
    pg.evaluate("() => document.activeElement.blur()")
    for k in range(3):
        pg.keyboard.press("a")
        pg.wait_for_function(f"() => document.querySelector('#card-{pids[k]} [data-role=status]')"
                             ".textContent === 'approved'")
    assert pg.locator("#counts [data-status=approved] b").inner_text() == "3"
    # blacklist the fourth with a reason
    pg.keyboard.press("b")
    pg.wait_for_selector("#ask[open]")
    pg.fill("#ask-input", REASON)
    pg.press("#ask-input", "Enter")
    pg.wait_for_selector(f"#card-{pids[3]} [data-role=excluded]")
    ready(pg)
    pg.screenshot(path=str(artifacts() / "gallery.png"))

    # reload: the filter now hides the approved pairs, the blacklisted one is still pending
    pg.reload()
    ready(pg)
    grid = pg.locator("#grid .card")
    shown = [grid.nth(i).get_attribute("data-pid") for i in range(grid.count())]
    assert shown == pids[3:]
    assert pg.locator(f"#card-{pids[3]} [data-role=excluded]").inner_text() == "blacklisted"
    assert pg.locator("#counts [data-status=approved] b").inner_text() == "3"
    assert pg.locator("#counts [data-status=excluded] b").inner_text() == "1"

    # the same state in `gasdb status --json` and in the LabelMe files
    res = CliRunner().invoke(main, ["status", str(ws.root), "--json"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.output)
    assert status["review"]["approved"] == 3 and status["review"]["pending"] == len(states) - 3
    assert status["excluded"] == 1
    for pid in pids[:3]:
        doc = labelme_format.read(states[pid].path)
        assert doc["flags"]["approved"] is True
        last = doc["gasdb"]["review"]["history"][-1]
        assert last["action"] == "approve" and last["by"] == "browser-reviewer" and last["at"]
    assert labelme_format.read(states[pids[3]].path)["flags"].get("approved") is False
    assert ws.blacklist() == {pids[3]: REASON}

    # the pair view of the blacklisted pair: views, strip, chart, provenance; approve from the keyboard
    pg.keyboard.press("Enter")
    pg.wait_for_selector("body.pair-page[data-ready='1']")
    ready(pg)
    assert pg.locator("h1").inner_text() == pids[3]
    kinds = [pg.locator("#stage .gasdb-view").nth(i).get_attribute("data-kind")
             for i in range(pg.locator("#stage .gasdb-view").count())]
    assert kinds == ["rgb", "thermal", "camera", "enhanced", "overlay"]
    assert pg.locator("#strip .mini.current").count() == 1
    assert pg.locator("#area-chart circle.here").count() == 1
    assert REASON in pg.locator(".facts").inner_text()
    pg.fill("#opacity", "80")
    assert pg.evaluate("() => getComputedStyle(document.querySelector('.gasdb-layer.mask')).opacity") == "0.8"
    pg.screenshot(path=str(artifacts() / "pair.png"), full_page=True)
    pg.evaluate("() => document.activeElement.blur()")
    pg.keyboard.press("v")  # one view at a time
    assert "mode-toggle" in pg.locator("#stage").get_attribute("class")
    assert pg.locator("#stage .gasdb-view:visible").count() == 1
    pg.keyboard.press("2")
    assert pg.locator("#stage .gasdb-view:visible").get_attribute("data-kind") == "thermal"
    next_id = pg.locator("body").get_attribute("data-next")
    with pg.expect_navigation():
        pg.keyboard.press("a")  # approve, then on to the next pending pair
    pg.wait_for_selector("body.pair-page[data-ready='1']")
    assert pg.locator("h1").inner_text() == next_id
    assert review.read_states(ws)[pids[3]].status == "approved"
