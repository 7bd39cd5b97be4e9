"""Files shipped inside the package, read with :mod:`importlib.resources` (a wheel has them too).

* ``annotation/labelme.yaml``: the LabelMe configuration for annotators (``gasdb label``);
* ``annotation/labels.txt``: the label list (``__ignore__``, ``_background_``, ``gas``), which
  :data:`gasdb_tools.labelme_format.DEFAULT_CLASS_NAMES` is read from;
* ``bench/configs/<name>.json``: the reference training recipes (``gasdb bench train --config NAME``);
* ``reviewapp/templates/`` and ``reviewapp/static/``: the review app's pages, of which the sample
  panel (``panel.html``, ``panel.css``) also lays out a release page's samples.

These are the only copies in the repository. ``gasdb init`` copies the annotation files into
``WS/annotation/``, where a team may adapt them; ``gasdb label`` prefers that copy.

>>> label_list()
('__ignore__', '_background_', 'gas')
>>> "rtcan-r50" in bench_configs()
True
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from gasdb_tools.errors import GasdbError
from gasdb_tools.fsutil import atomic_write_bytes

__all__ = ["ANNOTATION_FILES", "annotation_file", "label_list", "bench_configs", "bench_config",
           "copy_annotation_config", "page_templates", "page_stylesheet"]

#: The annotation files shipped in ``gasdb_tools/annotation/`` and copied into ``WS/annotation/``.
ANNOTATION_FILES = ("labelme.yaml", "labels.txt")


def _shipped(*parts: str):
    res = importlib.resources.files(__package__ or "gasdb_tools")
    for part in parts:
        res = res / part
    return res


def _on_disk(res) -> Path:
    """The shipped file as a path other programs (LabelMe) can open."""
    if not isinstance(res, Path):
        raise GasdbError(f"gasdb-tools is installed as an archive, so {res.name} is not a file on disk",
                         fix="install gasdb-tools with pip (an unpacked wheel)")
    if not res.is_file():
        raise GasdbError("a file shipped with gasdb-tools is missing", file=res, fix="reinstall gasdb-tools")
    return res


def annotation_file(name: str) -> Path:
    """Path of a shipped annotation file (one of :data:`ANNOTATION_FILES`)."""
    if name not in ANNOTATION_FILES:
        raise ValueError(f"name must be one of {ANNOTATION_FILES}, got {name!r}")
    return _on_disk(_shipped("annotation", name))


def label_list() -> tuple[str, ...]:
    """The shipped label list (``labels.txt``): one label per line, blank lines ignored."""
    text = _shipped("annotation", "labels.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def bench_configs() -> dict[str, Path]:
    """The shipped training recipes: name (file name without ``.json``) -> path, sorted by name."""
    folder = _shipped("bench", "configs")
    named = {r.name[:-len(".json")]: r for r in folder.iterdir() if r.name.endswith(".json")}
    return {name: _on_disk(named[name]) for name in sorted(named)}


def bench_config(name_or_path) -> Path:
    """A training recipe: a JSON file that exists, else the name of a shipped recipe (``rtcan-r50``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = bench_configs()
    name = str(name_or_path)
    key = name[:-len(".json")] if name.endswith(".json") else name
    if key in shipped:
        return shipped[key]
    raise GasdbError(f"no config file {name!r} and no shipped recipe of that name", file=path,
                     fix="give a JSON file, or one of: " + ", ".join(shipped))


def copy_annotation_config(dest_dir) -> list[Path]:
    """Copy the shipped annotation files into ``dest_dir``; files already there are kept (they may be edited).

    Returns the files written.
    """
    dest_dir = Path(dest_dir)
    written = []
    for name in ANNOTATION_FILES:
        target = dest_dir / name
        if target.exists():
            continue
        atomic_write_bytes(target, _shipped("annotation", name).read_bytes())
        written.append(target)
    return written


def labelme_config(workspace_root) -> Path:
    """The LabelMe config of a workspace: ``WS/annotation/labelme.yaml`` when there is one (``gasdb
    init`` copies it there for the team to edit), else the one shipped in the package."""
    own = Path(workspace_root) / "annotation" / "labelme.yaml"
    return own if own.is_file() else annotation_file("labelme.yaml")


def page_templates() -> Path:
    """The folder of the shipped page templates (Jinja2; the review app's, shared with release pages)."""
    folder = _shipped("reviewapp", "templates")
    if not isinstance(folder, Path) or not folder.is_dir():
        raise GasdbError("the page templates shipped with gasdb-tools are missing", file=str(folder),
                         fix="reinstall gasdb-tools with pip (an unpacked wheel)")
    return folder


def page_stylesheet(name: str) -> str:
    """The text of a shipped stylesheet of the pages (``panel.css``, ``app.css``)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+\.css", name):
        raise ValueError(f"name must be a stylesheet's file name such as 'panel.css', got {name!r}")
    return _on_disk(_shipped("reviewapp", "static", name)).read_text(encoding="utf-8")
