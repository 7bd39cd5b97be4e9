"""The review app's web application (Flask): gallery, pair view, pictures and review actions.

Security (the app reads and writes a dataset):

* **Host check**: requests must name the server's own host and port in ``Host`` (a DNS-rebinding
  page cannot reach a loopback server under another name).
* **Access token**: a server on a non-loopback address answers only requests that carry its random
  token (``?token=`` once, then a ``SameSite=Strict`` cookie, or the ``X-Gasdb-Token`` header).
* **Cross-site POSTs are refused**: every POST needs ``Content-Type: application/json``, an
  ``Origin`` (or ``Referer``) equal to the server's own, no cross-site ``Sec-Fetch-Site``, and the
  page's CSRF token in ``X-CSRF-Token``.
* **No path from a URL**: ids in URLs are checked with :func:`gasdb_tools.workspace.check_id` and
  looked up in the index; files are opened only through the index's paths (which
  :meth:`Workspace.read_index` checks stay inside the workspace) and the app's cache folder.
* Every review action goes through the library's locked code: :func:`gasdb_tools.review.approve` /
  :func:`~gasdb_tools.review.reject` (compare-and-swap writes, audit trail) and
  :meth:`Workspace.update_blacklist` (read-modify-write under the lock).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from flask import Flask, abort, jsonify, make_response, render_template, request

from gasdb_tools import review
from gasdb_tools.errors import GasdbError
from gasdb_tools.workspace import Workspace, check_id

from .catalog import STATUSES, Catalog, Query, QueryError, counts_table, parse_query, select
from .media import KINDS, Media

__all__ = ["create_app", "is_loopback", "allowed_hosts", "TOKEN_COOKIE"]

TOKEN_COOKIE = "gasdb_review_token"
_ACTIONS = ("approve", "reject", "blacklist", "unblacklist", "labelme")
_MAX_TEXT = 500


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback interface.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> set[str]:
    """The ``Host`` header values a server bound to ``host:port`` answers."""
    names = {host.lower()}
    if is_loopback(host):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    elif host in ("0.0.0.0", "::"):
        import socket

        names |= {socket.gethostname().lower(), socket.getfqdn().lower(), "localhost", "127.0.0.1"}
    names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    return {f"{n}:{port}" for n in names}


def _text(value, what: str, *, required: bool) -> str | None:
    """A short note, reason or name from a request body (400 when it is not plain text)."""
    if value is not None and not isinstance(value, str):
        abort(400, description=f"{what} must be text")
    text = (value or "").strip()
    if required and not text:
        abort(400, description=f"{what} is required")
    if len(text) > _MAX_TEXT or any(ord(c) < 32 for c in text):
        abort(400, description=f"{what}: at most {_MAX_TEXT} printable characters")
    return text or None


def create_app(ws: Workspace, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
               submission=None, release=None, reviewer: str | None = None, warm: bool = True,
               labelme: str | None = None) -> Flask:
    """The review app for ``ws`` (a WSGI application; :func:`gasdb_tools.reviewapp.serve` runs it).

    Parameters
    ----------
    ws : Workspace
    host, port : str, int
        Where it is served (for the Host check; :func:`serve` sets the real port once bound).
    token : str, optional
        Access token required from every request (always required for a non-loopback ``host``:
        one is made when None).
    submission, release : path, optional
        Score every pair against a submission (see :class:`~gasdb_tools.reviewapp.catalog.Catalog`).
    reviewer : str, optional
        Name for the audit trail when the browser gives none (default :func:`gasdb_tools.review.whoami`).
    warm : bool
        Compute masks and validate problems of every pair in a background thread after the first page.
    labelme : str, optional
        The LabelMe executable for "open in LabelMe" (default: ``labelme`` on PATH).
    """
    pkg = Path(__file__).parent
    app = Flask(__name__, template_folder=str(pkg / "templates"), static_folder=str(pkg / "static"),
                static_url_path="/static")
    app.jinja_env.add_extension("jinja2.ext.do")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    app.config.update(GASDB_TOKEN=token, GASDB_CSRF=secrets.token_urlsafe(24), GASDB_HOSTS=allowed_hosts(host, port),
                      GASDB_LOOPBACK=is_loopback(host), MAX_CONTENT_LENGTH=64 * 1024, JSON_SORT_KEYS=False,
                      SEND_FILE_MAX_AGE_DEFAULT=3600)
    catalog = Catalog(ws, submission=submission, release=release)
    media = Media(ws)
    app.extensions["gasdb_review"] = {"ws": ws, "catalog": catalog, "media": media}
    warm_state = {"started": False, "done": False, "thread": None}

    def start_warmup():
        if not warm or warm_state["started"]:
            return
        warm_state["started"] = True

        def run():
            try:
                snap = catalog.snapshot()
                index, states = snap[0], snap[1]
                ids = list(index.pairs)
                for i in range(0, len(ids), 16):
                    catalog.ensure_metrics(index, states, ids[i:i + 16])
                    time.sleep(0.005)  # let request threads have the interpreter
                catalog.save_cache()
                if catalog.outdated_problems(index, states):
                    catalog.validate(index, states)
            except Exception:  # noqa: BLE001 - a background warm-up must never take the server down
                app.logger.exception("review app warm-up failed")
            finally:
                warm_state["done"] = True

        warm_state["thread"] = threading.Thread(target=run, name="gasdb-review-warmup", daemon=True)
        warm_state["thread"].start()

    app.extensions["gasdb_review"]["warm_state"] = warm_state

    # -- security --------------------------------------------------------------------------
    @app.before_request
    def guard():
        if request.host.lower() not in app.config["GASDB_HOSTS"]:
            abort(400, description="unknown Host header")
        expected = app.config["GASDB_TOKEN"]
        if expected:
            given = request.args.get("token") or request.headers.get("X-Gasdb-Token") or \
                request.cookies.get(TOKEN_COOKIE) or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                abort(403, description="this server needs its access token (printed with its URL)")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin") or ""
            if not origin:
                referer = request.headers.get("Referer") or ""
                parts = urlsplit(referer)
                origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme else ""
            if origin != f"{request.scheme}://{request.host}":
                abort(403, description="cross-site request refused")
            if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                abort(403, description="cross-site request refused")
            if request.mimetype != "application/json":
                abort(415, description="send JSON")
            csrf = request.headers.get("X-CSRF-Token") or ""
            if not hmac.compare_digest(csrf.encode(), app.config["GASDB_CSRF"].encode()):
                abort(403, description="missing or wrong CSRF token")

    @app.after_request
    def headers(resp):
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        token = app.config["GASDB_TOKEN"]
        if token and request.args.get("token") == token:
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return resp

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(415)
    def error(exc):
        if request.path.startswith("/api/") or request.path.startswith("/img/"):
            return jsonify({"error": exc.description}), exc.code
        return render_template("error.html", code=exc.code, message=exc.description), exc.code

    # -- helpers ---------------------------------------------------------------------------
    def pair_or_404(pid: str, index):
        try:
            check_id(pid, what="pair id")
        except GasdbError:
            abort(400, description="invalid pair id")
        row = index.pairs.get(pid)
        if row is None:
            abort(404, description=f"no pair {pid} in this workspace")
        return row

    def query_from(args, index) -> Query:
        scenes = sorted({r.get("scene", "") for r in index.recordings.values()} - {""})
        try:
            return parse_query(args, recordings=list(index.recordings), scenes=scenes)
        except (QueryError, GasdbError) as exc:
            abort(400, description=str(getattr(exc, "message", exc)))

    def listing(args):
        snap = catalog.snapshot()
        q = query_from(args, snap[0])
        rows, snap = catalog.rows(need=q.needs(), snapshot=snap)
        return q, rows, select(rows, q), snap

    def common():
        return {"csrf": app.config["GASDB_CSRF"], "workspace": ws.settings.get("name") or ws.root.name,
                "statuses": STATUSES}

    # -- pages -----------------------------------------------------------------------------
    @app.get("/")
    def gallery():
        q, rows, chosen, snap = listing(request.args)
        index = snap[0]
        pages = max(1, -(-len(chosen) // q.per_page))
        page = min(q.page, pages)
        shown = chosen[(page - 1) * q.per_page: page * q.per_page]
        # the page's own slow facts are computed now, the rest in the background
        missing = [r.pair_id for r in shown if r.area is None and r.status != "unlabelled"]
        if missing:
            catalog.ensure_metrics(index, snap[1], missing)
            for r in shown:
                m = catalog.metrics_of(r.pair_id)
                if r.area is None and "area" in m:
                    r.area, r.blobs = m["area"], m["blobs"]
        scenes = sorted({rec.get("scene", "") for rec in index.recordings.values()} - {""})
        resp = make_response(render_template(
            "gallery.html", **common(), q=q, rows=shown, total=len(rows), matched=len(chosen), page=page, pages=pages,
            counts=counts_table(rows), matched_counts=counts_table(chosen), recordings=list(index.recordings),
            scenes=scenes, has_submission=catalog.has_submission, params=q.params, urlencode=urlencode,
            query_string=urlencode(q.params(page=None)), checking=not warm_state["done"]))
        if not warm_state["started"]:
            threading.Timer(0.2, start_warmup).start()
        return resp

    @app.get("/pair/<pid>")
    def pair_view(pid):
        q, rows, chosen, snap = listing(request.args)
        index, states, excluded, black = snap
        row = pair_or_404(pid, index)
        rec = index.recordings[row["recording"]]
        pos = next((i for i, r in enumerate(chosen) if r.pair_id == pid), None)
        prev_id = chosen[pos - 1].pair_id if pos else None
        next_id = chosen[pos + 1].pair_id if pos is not None and pos + 1 < len(chosen) else None
        rec_rows = index.pairs_of(row["recording"])
        rec_ids = [r["pair_id"] for r in rec_rows]
        catalog.ensure_metrics(index, states, rec_ids)
        catalog.save_cache()
        me = rec_ids.index(pid)
        strip = rec_ids[max(0, me - 4): me + 5]
        by_id = {r.pair_id: r for r in rows}
        state = states.get(pid)
        doc_meta, problems = {}, []
        if state is not None:
            catalog.validate(index, states, [pid])
            problems = catalog.problems_of(pid, states) or []
            try:
                from gasdb_tools import labelme_format

                doc = labelme_format.read(state.path)
                doc_meta = doc.get("gasdb") if isinstance(doc.get("gasdb"), dict) else {}
            except GasdbError as exc:
                doc_meta = {"error": exc.message}
        this = catalog.row(pid)
        chart = _chart(catalog, rec_rows, by_id, states, pid)
        available = media.available(index, row)
        return render_template(
            "pair.html", **common(), q=q, row=this, pair=row, rec=rec, state=state, problems=problems,
            meta=doc_meta, history=((doc_meta.get("review") or {}).get("history") or []) if doc_meta else [],
            prev_id=prev_id, next_id=next_id, position=None if pos is None else pos + 1, matched=len(chosen),
            strip=[by_id[s] for s in strip if s in by_id], chart=chart, available=available,
            query_string=urlencode(q.params(page=None)), label=str(review.label_path(ws, row)),
            blacklist_reason=black.get(pid, ""), loopback=app.config["GASDB_LOOPBACK"])

    @app.get("/img/<kind>/<pid>")
    def picture(kind, pid):
        if kind not in KINDS:
            abort(404, description="unknown picture")
        index = catalog.index()
        row = pair_or_404(pid, index)
        try:
            data, mime = media.picture(index, row, kind)
        except GasdbError as exc:
            abort(404, description=exc.message)
        resp = make_response(data)
        resp.headers["Content-Type"] = mime
        resp.headers["Cache-Control"] = "private, max-age=3600" if request.args.get("v") else "no-cache"
        return resp

    # -- API -------------------------------------------------------------------------------
    @app.get("/api/pairs")
    def api_pairs():
        q, rows, chosen, _ = listing(request.args)
        start = (q.page - 1) * q.per_page
        return jsonify({"total": len(rows), "matched": len(chosen), "counts": counts_table(rows),
                        "page": q.page, "per_page": q.per_page,
                        "pairs": [r.to_dict() for r in chosen[start:start + q.per_page]]})

    @app.get("/api/counts")
    def api_counts():
        rows, _ = catalog.rows()
        return jsonify(counts_table(rows))

    @app.get("/api/pair/<pid>")
    def api_pair(pid):
        index = catalog.index()
        pair_or_404(pid, index)
        return jsonify(catalog.row(pid).to_dict())

    @app.post("/api/pair/<pid>/<action>")
    def act(pid, action):
        if action not in _ACTIONS:
            abort(404, description="unknown action")
        index = catalog.index()
        row = pair_or_404(pid, index)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, description="send a JSON object")
        by = _text(body.get("by"), "by", required=False) or reviewer
        try:
            if action == "approve":
                review.approve(ws, [pid], by=by, note=_text(body.get("note"), "note", required=False))
            elif action == "reject":
                review.reject(ws, [pid], by=by, note=_text(body.get("note"), "note", required=True))
            elif action == "blacklist":
                ws.update_blacklist(add={pid: _text(body.get("reason"), "reason", required=True)})
            elif action == "unblacklist":
                ws.update_blacklist(remove=[pid])
            else:
                return jsonify(_open_labelme(ws, row, labelme=labelme, loopback=app.config["GASDB_LOOPBACK"]))
        except GasdbError as exc:
            return jsonify({"error": str(exc)}), 409
        return jsonify({"ok": True, "action": action, "pair": catalog.row(pid).to_dict(),
                        "counts": counts_table(catalog.rows()[0])})

    @app.get("/favicon.ico")
    def favicon():
        return "", 204

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True, "warm": warm_state["done"]})

    return app


def _open_labelme(ws: Workspace, row: dict, *, labelme: str | None, loopback: bool) -> dict:
    """Start LabelMe on one pair's image and document (only for a loopback server: it opens a window
    on the machine the server runs on); always returns the command line."""
    from gasdb_tools import labelme_format
    from gasdb_tools.resources import labelme_config

    path = review.label_path(ws, row)
    if not path.is_file():
        return {"ok": False, "error": f"pair {row['pair_id']} has no LabelMe document yet"}
    image, _ = labelme_format.image_file(labelme_format.read(path), path)
    try:
        config = str(labelme_config(ws.root))
    except GasdbError:
        config = None
    exe = labelme or shutil.which("labelme")
    cmd = [exe or "labelme", str(image), "--output", str(path)] + (["--config", config] if config else [])
    if not loopback:
        return {"ok": False, "command": cmd, "error": "LabelMe opens only from a server on this machine's loopback"}
    if exe is None:
        return {"ok": False, "command": cmd,
                "error": "the LabelMe app is not installed (pip install 'gasdb-tools[label]')"}
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    return {"ok": True, "command": cmd}


def _chart(catalog: Catalog, rec_rows, by_id, states, current: str) -> dict:
    """Points of the recording's gas area over time: drafts (untouched, or remembered) and edited documents."""
    draft, edited = [], []
    for r in rec_rows:
        pid = r["pair_id"]
        row = by_id.get(pid)
        if row is None:
            continue
        m = catalog.metrics_of(pid)
        st = states.get(pid)
        if st is None or "area" not in m:
            continue
        if st.untouched:
            draft.append((row.t, m["area"], pid))
        else:
            edited.append((row.t, m["area"], pid))
            d = catalog.draft_of(pid)
            if d is not None:
                draft.append((row.t, d["area"], pid))
    pts = draft + edited
    if not pts:
        return {"empty": True}
    t0 = min(p[0] for p in pts)
    t1 = max(max(p[0] for p in pts), t0 + 1e-6)
    top = max(max(p[1] for p in pts), 0.1)
    w, h, pad = 640, 150, 28

    def xy(t, a):
        return round(pad + (t - t0) / (t1 - t0) * (w - 2 * pad), 1), round(h - pad - a / top * (h - 2 * pad), 1)

    def line(points):
        points = sorted(points)
        return [{"x": xy(t, a)[0], "y": xy(t, a)[1], "pid": pid, "area": a, "t": t} for t, a, pid in points]

    cur = by_id.get(current)
    return {"empty": False, "w": w, "h": h, "pad": pad, "top": round(top, 2), "t0": round(t0, 2), "t1": round(t1, 2),
            "draft": line(draft), "edited": line(edited),
            "current_x": xy(cur.t, 0)[0] if cur else None}
