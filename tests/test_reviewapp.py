"""The review app (gasdb_tools.reviewapp) without a browser: rows, filters, pictures, actions, security.

Runs on the small hand-built workspace of ``_release_ws`` (16-bit thermal, aligned frames, LabelMe
documents that are approved, edited or pending drafts) through Flask's test client, and through a
real waitress server on the loopback address where concurrency or the CLI matters.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("flask")
pytest.importorskip("waitress")

from _release_ws import build_workspace  # noqa: E402

from gasdb_tools import labelme_format, review  # noqa: E402
from gasdb_tools.cli import main  # noqa: E402
from gasdb_tools.errors import WorkspaceError  # noqa: E402
from gasdb_tools.imaging import decode_image, encode_png  # noqa: E402
from gasdb_tools.reviewapp import create_app, render_sample_panel, start_server  # noqa: E402
from gasdb_tools.reviewapp import catalog as cat  # noqa: E402
from gasdb_tools.pictures import STATUS_COLOURS, mask_rgba, overlay  # noqa: E402

HOST = "127.0.0.1:5000"
ORIGIN = f"http://{HOST}"


@pytest.fixture
def ws(tmp_path):
    # 2 recordings x 4 pairs: k = 0, 3 approved; 1 edited; 2 pending (an untouched draft)
    return build_workspace(tmp_path / "ws", recordings=2, pairs_per=4, unlabelled=[(1, 3)])


@pytest.fixture
def app(ws):
    return create_app(ws, host="127.0.0.1", port=5000, warm=False, reviewer="tester")


@pytest.fixture
def client(app):
    return app.test_client()


def get(client, url, **kw):
    return client.get(url, headers={"Host": HOST, **kw.pop("headers", {})}, **kw)


def post(client, app, url, body, *, headers=None):
    h = {"Host": HOST, "Origin": ORIGIN, "X-CSRF-Token": app.config["GASDB_CSRF"], "Sec-Fetch-Site": "same-origin"}
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    return client.post(url, data=json.dumps(body), content_type="application/json", headers=h)


def ids(ws):
    return sorted(ws.read_index().pairs)


# ----------------------------------------------------------------------------------------------
# rows, filters, sorts
# ----------------------------------------------------------------------------------------------
def test_rows_carry_the_review_state_exclusions_and_mask_facts(ws):
    pids = ids(ws)
    ws.update_blacklist(add={pids[1]: "water spray"})
    catalog = cat.Catalog(ws)
    rows, (index, states, *_) = catalog.rows(need={"metrics"})
    by = {r.pair_id: r for r in rows}
    assert len(rows) == 8
    for pid, r in by.items():
        expected = states[pid].status if pid in states else "unlabelled"
        assert r.status == expected
    from gasdb_tools.status import pair_stages

    stale = {p for p, stages in pair_stages(ws).items() if "stale" in stages.values()}
    assert stale == {p for p, s in states.items() if s.untouched}  # hand-made drafts lack today's recipe
    assert cat.counts_table(rows) == {"pending": 2, "edited": 2, "approved": 3, "unlabelled": 1, "recheck": 0,
                                      "excluded": 1, "stale": len(stale), "total": 8}
    assert {r.pair_id for r in rows if r.stale} == stale
    assert by[pids[1]].excluded == "water spray" and by[pids[1]].blacklisted
    # area and blobs from the one rasteriser, checked against an independent count
    for pid in states:
        mask = labelme_format.rasterize(labelme_format.read(states[pid].path))
        gas = (mask == 1).astype(np.uint8)
        assert by[pid].area == pytest.approx(100 * gas.sum() / gas.size, abs=1e-4)
        assert by[pid].blobs == cv2.connectedComponents(gas, connectivity=8)[0] - 1
    assert by[pids[-1]].area is None and by[pids[-1]].status == "unlabelled"


def test_mask_metrics_exact():
    m = np.zeros((20, 10), np.uint8)
    m[0:2, 0:2] = 1
    m[5, 5] = 1
    m[10:12, 3:9] = 255  # ignore is not gas
    assert cat.mask_metrics(m) == {"pixels": 5, "area": 2.5, "blobs": 2}
    assert cat.mask_metrics(np.zeros((4, 4), np.uint8)) == {"pixels": 0, "area": 0.0, "blobs": 0}


def test_parse_query_refuses_unknown_values_and_paths():
    known = {"recordings": ["rec00", "rec01"], "scenes": ["sunny"]}
    q = cat.parse_query({"recording": "rec01", "status": "pending", "area_min": "0.5", "sort": "area", "desc": "1"},
                        **known)
    assert (q.recording, q.status, q.area_min, q.sort, q.desc) == ("rec01", "pending", 0.5, "area", True)
    for bad in ({"recording": "../../etc"}, {"recording": "rec02"}, {"scene": "../x"}, {"status": "done"},
                {"sort": "__class__"}, {"area_min": "nan"}, {"area_min": "1e999"}, {"page": "0"},
                {"per_page": "100000"}, {"stale": "maybe"}, {"blobs_min": "1.5"}):
        with pytest.raises((cat.QueryError, WorkspaceError)):
            cat.parse_query(bad, **known)


rows_strategy = st.lists(st.builds(
    cat.PairRow, pair_id=st.from_regex(r"r[0-3]_[0-9]{8}", fullmatch=True), recording=st.sampled_from(["r0", "r1"]),
    scene=st.sampled_from(["sunny", "rainy"]), t=st.floats(0, 10),
    status=st.sampled_from(["pending", "edited", "approved", "unlabelled"]), recheck=st.sampled_from(["", "moved"]),
    stale=st.sampled_from([[], ["enhance"]]), excluded=st.sampled_from(["", "spray"]),
    problems=st.one_of(st.none(), st.integers(0, 3)), area=st.one_of(st.none(), st.floats(0, 100)),
    blobs=st.one_of(st.none(), st.integers(0, 5))), max_size=30, unique_by=lambda r: r.pair_id)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, status=st.sampled_from([None, "pending", "approved", "recheck"]),
       stale=st.sampled_from([None, "yes", "no"]), area_min=st.one_of(st.none(), st.floats(0, 50)),
       sort=st.sampled_from(cat.SORTS), desc=st.booleans())
def test_select_is_exactly_the_rows_that_pass_every_filter(rows, status, stale, area_min, sort, desc):
    q = cat.Query(status=status, stale=stale, area_min=area_min, sort=sort, desc=desc)
    chosen = cat.select(rows, q)

    def passes(r):
        ok_status = status is None or (bool(r.recheck) if status == "recheck" else r.status == status)
        ok_stale = stale is None or bool(r.stale) == (stale == "yes")
        ok_area = area_min is None or (r.area is not None and r.area >= area_min)
        return ok_status and ok_stale and ok_area

    assert sorted(r.pair_id for r in chosen) == sorted(r.pair_id for r in rows if passes(r))
    if sort in ("area", "blobs", "problems", "score"):
        values = [getattr(r, sort) for r in chosen]
        known = [v for v in values if v is not None]
        assert values[:len(known)] == known  # unknown values last, in either direction
        assert known == sorted(known, reverse=desc)
    elif sort == "pair":
        assert [r.pair_id for r in chosen] == sorted((r.pair_id for r in chosen), reverse=desc)


def test_gallery_filters_by_status_and_shows_counts(client, ws):
    r = get(client, "/?status=pending")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    states = review.read_states(ws)
    pending = sorted(p for p, s in states.items() if s.status == "pending")
    assert sorted(re.findall(r'data-pid="([^"]+)"', page)) == pending
    assert re.search(r'data-status="approved">approved <b>3</b>', page)
    assert re.search(r'data-status="unlabelled">unlabelled <b>1</b>', page)
    data = get(client, "/api/pairs?status=approved&sort=area&desc=1").get_json()
    assert data["matched"] == 3 and [p["status"] for p in data["pairs"]] == ["approved"] * 3
    areas = [p["area"] for p in data["pairs"]]
    assert areas == sorted(areas, reverse=True)


def test_gallery_pages(client, ws):
    first = get(client, "/api/pairs?per_page=3&page=1").get_json()
    third = get(client, "/api/pairs?per_page=3&page=3").get_json()
    assert [p["pair_id"] for p in first["pairs"]] == ids(ws)[:3]
    assert [p["pair_id"] for p in third["pairs"]] == ids(ws)[6:]
    html = get(client, "/?per_page=3&page=2").get_data(as_text=True)
    assert "page 2 of 3" in html and 'id="next-page"' in html and 'id="prev-page"' in html


def test_problems_filter_runs_validate(client, ws):
    from gasdb_tools.validate import validate_workspace

    before = get(client, "/api/pairs?per_page=100").get_json()["pairs"]
    assert all(p["problems"] is None for p in before)  # not computed until asked for (or warmed up)
    pid = sorted(review.read_states(ws))[0]
    path = Path(review.read_states(ws)[pid].path)
    doc = json.loads(path.read_text())
    doc["shapes"].append({"label": "smoke", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon",
                          "group_id": None, "flags": {}, "description": ""})
    path.write_text(json.dumps(doc))
    expected = {}
    for p in validate_workspace(ws):
        if p.pair_id:
            expected[p.pair_id] = expected.get(p.pair_id, 0) + 1
    data = get(client, "/api/pairs?problems=yes&per_page=100").get_json()
    assert {p["pair_id"]: p["problems"] for p in data["pairs"]} == expected
    assert any(p.check == "label" and p.pair_id == pid for p in validate_workspace(ws, pairs=[pid]))
    clean = get(client, "/api/pairs?problems=no&per_page=100").get_json()
    assert {p["pair_id"] for p in clean["pairs"]} == set(ids(ws)) - set(expected)


def test_stale_filter_follows_provenance(client, ws):
    from gasdb_tools.status import pair_stages

    pid = ids(ws)[0]  # approved: its document is not a stale draft
    with ws.transaction() as index:  # an enhanced frame made from other inputs than today's
        index.pairs[pid].update({"enhanced": index.pairs[pid]["aligned"], "enhance_inputs": "an older recipe"})
    per = pair_stages(ws)
    stale = sorted(p for p, stages in per.items() if "stale" in stages.values())
    data = get(client, "/api/pairs?stale=yes").get_json()
    assert [p["pair_id"] for p in data["pairs"]] == stale
    assert pid in stale and data["pairs"][0]["stale"]
    # a restarted app reads the stale stages from its disk cache, and still notices the next change
    again = create_app(ws, port=5000, warm=False).test_client()
    assert [p["pair_id"] for p in get(again, "/api/pairs?stale=yes").get_json()["pairs"]] == stale
    with ws.transaction() as index:
        index.pairs[pid]["enhance_inputs"] = ""
        index.pairs[pid]["enhanced"] = ""
    expected = sorted(p for p, stages in pair_stages(ws).items() if "stale" in stages.values())
    assert pid not in expected
    assert [p["pair_id"] for p in get(again, "/api/pairs?stale=yes").get_json()["pairs"]] == expected


def test_score_against_a_submission_zip(tmp_path, ws):
    states = review.read_states(ws)
    labelled = sorted(states)
    buf = io.BytesIO()
    truth = {}
    with zipfile.ZipFile(buf, "w") as z:
        for k, pid in enumerate(labelled[:3]):
            gt = labelme_format.rasterize(labelme_format.read(states[pid].path))
            truth[pid] = gt
            pred = (gt == 1).astype(np.uint8) if k == 0 else np.zeros_like(gt)
            z.writestr(f"{pid}.png", encode_png(pred))
    sub = tmp_path / "sub.zip"
    sub.write_bytes(buf.getvalue())
    app = create_app(ws, port=5000, warm=False, submission=sub)
    data = get(app.test_client(), "/api/pairs?sort=score&per_page=100").get_json()
    score = {p["pair_id"]: p["score"] for p in data["pairs"]}
    assert score[labelled[0]] == 100.0
    for pid in labelled[1:3]:
        assert score[pid] == (0.0 if (truth[pid] == 1).any() else None)
    assert all(score[p] is None for p in labelled[3:])


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------
def test_pictures_and_the_thumbnail_cache_follow_provenance(client, app, ws):
    pid = sorted(p for p, s in review.read_states(ws).items() if s.status == "pending")[0]
    for kind in ("thumb", "rgb", "thermal", "camera", "mask", "boundary"):
        r = get(client, f"/img/{kind}/{pid}")
        assert r.status_code == 200, (kind, r.get_json())
        img = decode_image(r.data)
        assert img.ndim == 3 and img.shape[0] > 0
    mask = decode_image(get(client, f"/img/mask/{pid}").data)  # RGBA in the document's frame
    doc_mask = labelme_format.rasterize(labelme_format.read(review.read_states(ws)[pid].path))
    assert mask.shape[:2] == doc_mask.shape and ((mask[..., 3] > 0) == (doc_mask > 0)).all()
    assert tuple(mask[doc_mask == 1][0][:3]) in (STATUS_COLOURS["pending"], (255, 255, 255))
    cache = ws.root / ".gasdb-cache" / "review" / "img" / pid.rsplit("_", 1)[0]
    before = sorted(p.name for p in cache.glob(f"{pid}.thumb.*"))
    assert len(before) == 1
    thumb1 = get(client, f"/img/thumb/{pid}").data
    assert get(client, f"/img/thumb/{pid}").data == thumb1  # served from the cache
    assert post(client, app, f"/api/pair/{pid}/approve", {}).status_code == 200
    thumb2 = get(client, f"/img/thumb/{pid}").data  # the status colour changed: made again
    after = sorted(p.name for p in cache.glob(f"{pid}.thumb.*"))
    assert thumb2 != thumb1 and len(after) == 1 and after != before
    with ws.transaction() as index:  # new aligned frames (a rerun of align): a new thermal view
        index.pairs[pid]["align_digest"] = "0" * 32
    old = sorted(p.name for p in cache.glob(f"{pid}.thermal.*"))
    get(client, f"/img/thermal/{pid}")
    assert sorted(p.name for p in cache.glob(f"{pid}.thermal.*")) != old


def test_overlay_and_layers_colours():
    base = np.full((4, 4), 100, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    out = overlay(base, mask, colour=(255, 0, 0), alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100] and out[1, 1].tolist() == [178, 50, 50]
    layer = mask_rgba(mask, colour=(0, 255, 0), outline=False)
    assert layer[1, 1].tolist() == [0, 255, 0, 255] and layer[0, 0, 3] == 0


def test_render_sample_panel_from_arrays_and_files(tmp_path):
    rgb = np.zeros((50, 80, 3), np.uint8)
    rgb[..., 0] = 200
    thermal = np.linspace(1000, 5000, 50 * 80).reshape(50, 80).astype(np.uint16)
    mask = np.zeros((50, 80), np.uint8)
    mask[10:20, 10:30] = 1
    html = render_sample_panel(rgb, thermal, mask, title="<b>00001</b> & co", caption="scene: near", width=40)
    assert "&lt;b&gt;00001&lt;/b&gt; &amp; co" in html and "<b>00001" not in html
    srcs = re.findall(r'src="data:image/(png|jpeg);base64,([^"]+)"', html)
    assert [s[0] for s in srcs] == ["jpeg", "jpeg", "png"]
    import base64

    views = [decode_image(base64.b64decode(s[1])) for s in srcs]
    assert all(v.shape[:2] == (25, 40) for v in views)
    assert "mask (5.0 % gas)" in html
    files = tmp_path / "figs"
    html2 = render_sample_panel(rgb, None, mask, title="t", out_dir=files, name="s1")
    assert sorted(p.name for p in files.iterdir()) == ["s1_overlay.png", "s1_rgb.jpg"]
    assert 'src="s1_rgb.jpg"' in html2 and 'src="s1_overlay.png"' in html2
    with pytest.raises(Exception):
        render_sample_panel(rgb, out_dir=files, name="../evil")


# ----------------------------------------------------------------------------------------------
# actions
# ----------------------------------------------------------------------------------------------
def test_actions_write_through_the_library_with_an_audit_trail(client, app, ws):
    pending = sorted(p for p, s in review.read_states(ws).items() if s.status == "pending")
    a, b = pending
    r = post(client, app, f"/api/pair/{a}/approve", {"by": "ana"})
    assert r.status_code == 200 and r.get_json()["pair"]["status"] == "approved"
    assert r.get_json()["counts"]["approved"] == 4
    r = post(client, app, f"/api/pair/{b}/reject", {"note": "edge missing"})
    assert r.status_code == 200
    assert post(client, app, f"/api/pair/{b}/reject", {"note": "  "}).status_code == 400
    r = post(client, app, f"/api/pair/{b}/blacklist", {"reason": "water spray in view"})
    assert r.status_code == 200 and r.get_json()["pair"]["excluded"] == "water spray in view"
    assert post(client, app, f"/api/pair/{b}/blacklist", {}).status_code == 400
    states = review.read_states(ws)
    assert states[a].status == "approved"
    doc = labelme_format.read(states[a].path)
    assert doc["flags"]["approved"] is True
    hist = doc["gasdb"]["review"]["history"]
    assert hist[-1]["action"] == "approve" and hist[-1]["by"] == "ana" and re.match(r"\d{4}-\d\d-\d\dT", hist[-1]["at"])
    doc_b = labelme_format.read(states[b].path)
    assert doc_b["gasdb"]["review"]["history"][-1] == {**doc_b["gasdb"]["review"]["history"][-1], "action": "reject",
                                                       "by": "tester", "note": "edge missing"}
    assert ws.blacklist() == {b: "water spray in view"}
    res = CliRunner().invoke(main, ["status", str(ws.root), "--json"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.output)
    assert status["review"]["approved"] == 4 and status["excluded"] == 1
    assert post(client, app, f"/api/pair/{b}/unblacklist", {}).status_code == 200
    assert ws.blacklist() == {}


def test_a_labelme_save_during_an_approval_is_kept(client, app, ws, monkeypatch):
    pid = sorted(p for p, s in review.read_states(ws).items() if s.status == "pending")[0]
    path = Path(review.read_states(ws)[pid].path)
    real_loads = labelme_format.loads
    saved = {"done": False}

    def loads_then_labelme_saves(data, **kw):
        doc = real_loads(data, **kw)
        if not saved["done"]:  # LabelMe saves between our read and our write
            saved["done"] = True
            other = real_loads(path.read_bytes())
            other["shapes"].append(labelme_format.make_shape([[2, 2], [9, 2], [9, 9]], label="gas"))
            labelme_format.write(other, path)
        return doc

    monkeypatch.setattr(labelme_format, "loads", loads_then_labelme_saves)
    assert post(client, app, f"/api/pair/{pid}/approve", {}).status_code == 200
    monkeypatch.undo()
    doc = labelme_format.read(path)
    assert saved["done"] and doc["flags"]["approved"] is True
    assert any(s["points"] == [[2, 2], [9, 2], [9, 9]] for s in doc["shapes"])  # the save was not lost


def test_two_tabs_at_once_lose_nothing(ws):
    server, url = start_server(ws, port=0, warm=False)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        page = urllib.request.urlopen(url).read().decode()
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        origin = url.rstrip("/")
        pids = ids(ws)
        labelled = sorted(review.read_states(ws))
        errors = []

        def call(pid, action, body):
            req = urllib.request.Request(f"{origin}/api/pair/{pid}/{action}", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json", "Origin": origin,
                                                                 "X-CSRF-Token": csrf})
            try:
                urllib.request.urlopen(req).read()
            except urllib.error.HTTPError as exc:
                errors.append((pid, action, exc.code, exc.read()))

        jobs = [threading.Thread(target=call, args=(p, "blacklist", {"reason": f"r-{p}"})) for p in pids]
        jobs += [threading.Thread(target=call, args=(p, "approve", {"by": f"tab{i % 2}"}))
                 for i, p in enumerate(labelled)]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join()
        assert not errors
        assert ws.blacklist() == {p: f"r-{p}" for p in pids}
        states = review.read_states(ws)
        assert all(states[p].status == "approved" for p in labelled)
    finally:
        server.close()


# ----------------------------------------------------------------------------------------------
# security
# ----------------------------------------------------------------------------------------------
TRAVERSALS = ["..", "../gasdb.json", "..%2Fgasdb.json", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "a/../../b",
              "..\\..\\x", "/etc/passwd", "%00", "rec00_00001000%00.json", "x" * 200]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_path_traversal_in_every_url_parameter_is_refused(client, app, ws, bad):
    pid = ids(ws)[0]
    urls = [f"/pair/{bad}", f"/img/thumb/{bad}", f"/img/{bad}/{pid}", f"/api/pair/{bad}",
            f"/?recording={bad}", f"/?scene={bad}", f"/?status={bad}", f"/?sort={bad}", f"/?stale={bad}",
            f"/?area_min={bad}", f"/?page={bad}", f"/pair/{pid}?recording={bad}", f"/static/{bad}",
            "/static/..%2F..%2Fcli%2F__init__.py", "/static/../app.py"]
    for url in urls:
        r = get(client, url, follow_redirects=True)
        assert r.status_code in (400, 404, 405), (url, r.status_code)
        assert b"schema_version" not in r.data and b"root:" not in r.data and b"import " not in r.data
    for url in (f"/api/pair/{bad}/approve", f"/api/pair/{pid}/{bad}"):
        assert post(client, app, url, {}).status_code in (400, 404, 405)


def test_nothing_outside_the_workspace_is_read_or_written(tmp_path, ws):
    """Every file the app opens while serving is in the workspace or the installed code."""
    import gasdb_tools

    opened = []
    active = {"on": False}

    def hook(event, args):
        if active["on"] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append((os.fspath(args[0]), args[1]))

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one is off outside the block
    app = create_app(ws, port=5000, warm=False)
    client = app.test_client()
    pid = ids(ws)[2]
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    active["on"] = True
    try:
        for url in ["/", "/?status=pending&sort=area", f"/pair/{pid}", f"/img/thumb/{pid}", f"/img/thermal/{pid}",
                    f"/img/mask/{pid}", f"/img/boundary/{pid}", "/api/pairs", f"/pair/..%2F..%2F{outside.name}",
                    "/img/thumb/..%2Foutside.txt", "/static/app.css"]:
            get(client, url)
        post(client, app, f"/api/pair/{pid}/approve", {})
        post(client, app, f"/api/pair/{pid}/blacklist", {"reason": "x"})
    finally:
        active["on"] = False
    allowed = [str(ws.root), str(Path(gasdb_tools.__file__).parent), sys.prefix, sys.base_prefix, "/dev/urandom",
               "/etc/localtime", "/usr/share/zoneinfo", "/etc/passwd", "/etc/group", "/proc/self",
               "/etc/mime.types"]  # the standard library's own configuration (mimetypes, time zones, users)
    strays = [(p, m) for p, m in opened if not any(str(Path(p).resolve()).startswith(a) for a in allowed)
              and not str(p).isdigit()]
    assert not strays, strays
    writes = [p for p, m in opened if isinstance(m, str) and any(c in m for c in "wax+")]
    assert writes and all(str(Path(p).resolve()).startswith(str(ws.root)) for p in writes), writes
    assert not any(Path(p).name == outside.name for p, _ in opened)


def test_a_non_loopback_host_needs_the_token(ws):
    app = create_app(ws, host="192.0.2.10", port=8765, warm=False)
    token = app.config["GASDB_TOKEN"]
    assert token and len(token) >= 24
    c = app.test_client()
    h = {"Host": "192.0.2.10:8765"}
    assert c.get("/", headers=h).status_code == 403
    assert c.get("/api/pairs", headers=h).status_code == 403
    assert c.get(f"/img/thumb/{ids(ws)[0]}", headers=h).status_code == 403
    assert c.get("/?token=wrong", headers=h).status_code == 403
    r = c.get(f"/?token={token}", headers=h)
    assert r.status_code == 200 and "gasdb_review_token=" in r.headers.get("Set-Cookie", "")
    assert "SameSite=Strict" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]
    assert c.get("/api/pairs", headers=h).status_code == 200  # the cookie now carries it
    c2 = app.test_client()
    assert c2.get("/api/pairs", headers={**h, "X-Gasdb-Token": token}).status_code == 200
    # a loopback server needs none, and refuses other Host names (DNS rebinding)
    local = create_app(ws, host="127.0.0.1", port=8765, warm=False)
    assert local.config["GASDB_TOKEN"] is None
    lc = local.test_client()
    assert lc.get("/", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert lc.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert lc.get("/", headers={"Host": "evil.example:8765"}).status_code == 400
    assert lc.get("/", headers={"Host": "127.0.0.1:9999"}).status_code == 400


def test_cross_site_posts_are_refused(client, app, ws):
    pid = sorted(p for p, s in review.read_states(ws).items() if s.status == "pending")[0]
    path = Path(review.read_states(ws)[pid].path)
    before = path.read_bytes()
    url = f"/api/pair/{pid}/approve"
    refused = [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:5001"},
        {"Origin": None, "Referer": None},
        {"Origin": None, "Referer": "http://evil.example/page"},
        {"X-CSRF-Token": None},
        {"X-CSRF-Token": "guess"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    for headers in refused:
        assert post(client, app, url, {}, headers=headers).status_code == 403, headers
    # a plain HTML form (what a cross-site page can send without CORS) is not JSON
    r = client.post(url, data="by=x", content_type="application/x-www-form-urlencoded",
                    headers={"Host": HOST, "Origin": ORIGIN, "X-CSRF-Token": app.config["GASDB_CSRF"]})
    assert r.status_code == 415
    assert get(client, url).status_code == 405
    assert path.read_bytes() == before and ws.blacklist() == {}
    r = post(client, app, url, {}, headers={"Origin": None, "Referer": f"{ORIGIN}/pair/{pid}"})
    assert r.status_code == 200 and labelme_format.read(path)["flags"]["approved"] is True


def test_security_headers(client):
    r = get(client, "/")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in r.get_data(as_text=True)  # no inline script (the CSP would block it)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def test_cli_actions_and_counts_still_work(ws):
    pending = sorted(p for p, s in review.read_states(ws).items() if s.status == "pending")
    runner = CliRunner()
    res = runner.invoke(main, ["review", str(ws.root), "--approve", pending[0], "--by", "cli", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["pairs"][0]["status"] == "approved"
    res = runner.invoke(main, ["review", str(ws.root), "--counts", "--json"])
    assert json.loads(res.output)["total"]["approved"] == 4
    res = runner.invoke(main, ["review", str(ws.root), "--reject", pending[1]])
    assert res.exit_code == 2 and "--note" in res.output
    # rejected: back to pending (not 'edited') with the note; approved later: the note is gone from
    # the review block (it belonged to the rejection) and stays in the history
    res = runner.invoke(main, ["review", str(ws.root), "--reject", pending[0], "--note", "edge missing"])
    assert res.exit_code == 0 and "1 pair rejected" in res.output, res.output
    state = review.read_states(ws, pairs=[pending[0]])[pending[0]]
    assert state.status == "pending"
    res = runner.invoke(main, ["review", str(ws.root), "--approve", pending[0]])
    assert res.exit_code == 0 and "1 pair approved" in res.output, res.output
    block = labelme_format.read(review.label_path(ws, ws.read_index().pairs[pending[0]]))["gasdb"]["review"]
    assert block["status"] == "approved" and "note" not in block
    assert [h["action"] for h in block["history"]] == ["approve", "reject", "approve"]
    assert block["history"][1]["note"] == "edge missing"
    res = runner.invoke(main, ["review", str(ws.root), "--approve", "--recording", "rec01", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)["pairs"]) == 3  # rec01's 4th pair has no document
    res = runner.invoke(main, ["review", "--help"])
    assert "gasdb review my-dataset " in res.output and "--submission" in res.output and "--port" in res.output


def test_cli_serves_and_prints_the_url(ws):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "gasdb_tools", "review", str(ws.root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+/)$", line.strip())
        assert m, line
        page = urllib.request.urlopen(m.group(1), timeout=30).read().decode()
        assert 'id="grid"' in page and page.count('class="card') == 8
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_open_in_labelme_names_the_pair_and_runs_only_on_loopback(ws, monkeypatch, tmp_path):
    pid = sorted(review.read_states(ws))[0]
    doc_path = review.read_states(ws)[pid].path
    fake = tmp_path / "labelme"
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args.txt\"\n")
    fake.chmod(0o755)
    app = create_app(ws, port=5000, warm=False, labelme=str(fake))
    data = post(app.test_client(), app, f"/api/pair/{pid}/labelme", {}).get_json()
    assert data["ok"] and data["command"][0] == str(fake)
    assert data["command"][1:3] == [str(labelme_format.image_file(labelme_format.read(doc_path), doc_path)[0]),
                                    "--output"] and data["command"][3] == doc_path
    for _ in range(200):
        if (tmp_path / "args.txt").exists():
            break
        threading.Event().wait(0.05)
    assert doc_path in (tmp_path / "args.txt").read_text()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    app = create_app(ws, port=5000, warm=False)
    data = post(app.test_client(), app, f"/api/pair/{pid}/labelme", {}).get_json()
    assert not data["ok"] and "not installed" in data["error"] and data["command"][0] == "labelme"
    remote = create_app(ws, host="192.0.2.10", port=8765, warm=False, labelme=str(fake))
    c = remote.test_client()
    r = c.post(f"/api/pair/{pid}/labelme", data="{}", content_type="application/json",
               headers={"Host": "192.0.2.10:8765", "Origin": "http://192.0.2.10:8765",
                        "X-CSRF-Token": remote.config["GASDB_CSRF"], "X-Gasdb-Token": remote.config["GASDB_TOKEN"]})
    assert r.status_code == 200 and not r.get_json()["ok"] and "loopback" in r.get_json()["error"]
