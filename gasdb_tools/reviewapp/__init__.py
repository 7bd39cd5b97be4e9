"""``gasdb review``'s local web app: browse, compare and review every pair of a workspace.

* :func:`create_app` -- the Flask application (gallery, pair view, pictures, review actions);
* :func:`serve` -- run it with the waitress WSGI server on a loopback address (any other address
  needs the random access token printed with the URL);
* :func:`render_sample_panel` -- the pair view's panel of views (RGB, thermal, mask overlay) as an
  HTML fragment from arrays or image files, for static pages such as a release's ``index.html``.

Review state lives in the LabelMe documents (:mod:`gasdb_tools.review`); the app only reads the
workspace through the index and writes through the library's locked functions.
"""

from __future__ import annotations

from gasdb_tools.pictures import panel_css, render_sample_panel

__all__ = ["create_app", "serve", "start_server", "render_sample_panel", "panel_css"]


def create_app(*args, **kwargs):
    """See :func:`gasdb_tools.reviewapp.app.create_app` (imported lazily: Flask loads only when serving)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)


def start_server(ws, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None, threads: int = 8,
                 **options):
    """Create the app and bind a waitress server to ``host:port`` (0: a free port) without running it.

    Returns ``(server, url)``; ``server.run()`` serves until ``server.close()`` (from another
    thread) or Ctrl-C. ``url`` carries the access token when one is needed (a non-loopback host).
    """
    from waitress import create_server

    from .app import allowed_hosts, create_app as _create, is_loopback

    app = _create(ws, host=host, port=port, token=token, **options)
    server = create_server(app, host=host, port=port, threads=threads, ident="gasdb-review",
                           clear_untrusted_proxy_headers=True)
    bound = server.effective_port
    app.config["GASDB_HOSTS"] = allowed_hosts(host, bound)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    if app.config["GASDB_TOKEN"] and not is_loopback(host):
        url += f"?token={app.config['GASDB_TOKEN']}"
    return server, url


def serve(ws, *, host: str = "127.0.0.1", port: int = 0, open_browser: bool = False, echo=print, **options) -> None:
    """Serve the review app until interrupted, printing its URL first (see :func:`start_server`)."""
    server, url = start_server(ws, host=host, port=port, **options)
    echo(f"gasdb review: serving {ws.root} at {url}")
    echo("press Ctrl-C to stop")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
