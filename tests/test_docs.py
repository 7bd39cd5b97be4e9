"""Every citation of the project's documents resolves: the file exists and so does the section.

A citation names one of the documents in ``docs/`` (``docs/formats.md``, ``formats.md``, or a bare
``methods §D.3``), optionally followed by sections (``§4``, ``§3.6, §8``, ``§8-9``, ``section B``,
``B.1``). Each ``§`` mark is attributed to the document named just before it (at most
``MAX_GAP`` characters before, in the same paragraph); a ``§`` with no document in front of it is
an error too, because nobody can tell where it points, except inside a document of ``docs/``,
where it means that document's own section.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_NAMES = ("design", "formats", "methods", "reference-models", "style")
#: Files whose citations are checked (this file is left out: its examples are deliberately wrong).
SOURCE_GLOBS = ("gasdb_tools/**/*.py", "tests/*.py", "benchmarks/**/*.py", "benchmarks/**/*.md", "README.md",
                "annotation/*.md", "calibration/*.md", "docs/*.md")

_NAME = "|".join(re.escape(n) for n in DOC_NAMES)
# ``docs/formats.md`` (any prefix folder) or a bare ``methods`` directly followed by a section mark
_DOC_MD = re.compile(rf"(?<![\w-])(?:docs/)?({_NAME})\.md\b")
_DOC_BARE = re.compile(rf"(?<![\w./-])({_NAME})(?=\s+§)")
_SEC = r"(?:[A-Z](?:\.\d+)*|\d+(?:\.\d+)*)"
# a section written right after the document without a § sign: ``section B``, ``B.1``, ``4.7``
_BARE_SECTION = re.compile(rf"[`'\"]*\s+(?:section\s+({_SEC})\b|([A-Z]\.\d+(?:\.\d+)*|\d+\.\d+(?:\.\d+)*)\b)")
_MARK = re.compile(rf"§\s?({_SEC})(?:\s?[-–]\s?({_SEC}))?")
_HEADING = re.compile(r"^#{1,6}\s+([A-Z]|\d+)((?:\.\d+)*)\.?\s", re.MULTILINE)
#: A § mark belongs to the document named at most this many characters before it.
MAX_GAP = 60


def _expand(first: str, last: str | None) -> list[str]:
    """``8-9`` -> ['8', '9']; ``C.2-C.4`` -> ['C.2', 'C.4'] (the endpoints; the range itself is prose)."""
    return [first] if not last else [first, last]


def citations(text: str, *, default: str | None = None) -> tuple[list[tuple[str, str | None, int]], list[int]]:
    """``([(doc, section or None, line), ...], [lines of § marks that name no document])``, in text order.

    ``default``: the document a § mark with no document in front of it belongs to (a document's
    references to its own sections); None makes such marks orphans.
    """
    mentions = []  # (start, end, doc)
    for m in _DOC_MD.finditer(text):
        mentions.append((m.start(), m.end(), m.group(1)))
    for m in _DOC_BARE.finditer(text):
        mentions.append((m.start(), m.end(), m.group(1)))
    mentions.sort()

    def line(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    found, cited = [], set()
    for start, end, doc in mentions:
        bare = _BARE_SECTION.match(text, end)
        if bare and "§" not in text[end:bare.end()]:
            found.append((end, doc, bare.group(1) or bare.group(2), line(start)))
            cited.add(start)
    orphans = []
    for m in _MARK.finditer(text):
        before = [mt for mt in mentions if mt[1] <= m.start()]
        gap = text[before[-1][1]:m.start()] if before else ""
        if before and len(gap) <= MAX_GAP and "\n\n" not in gap and "\n#" not in gap:
            doc = before[-1][2]
            cited.add(before[-1][0])
            for sec in _expand(m.group(1), m.group(2)):
                found.append((m.start(), doc, sec, line(m.start())))
        elif default is not None:
            for sec in _expand(m.group(1), m.group(2)):
                found.append((m.start(), default, sec, line(m.start())))
        else:
            orphans.append(line(m.start()))
    for start, _end, doc in mentions:
        if start not in cited:
            found.append((start, doc, None, line(start)))
    return [c[1:] for c in sorted(found, key=lambda c: c[0])], orphans


def headings(path: Path) -> set[str]:
    """Section numbers of a document's headings: ``## 4. HDF5`` -> '4', ``### C.2 ...`` -> 'C.2'."""
    return {m.group(1) + m.group(2) for m in _HEADING.finditer(path.read_text(encoding="utf-8"))}


def problems(text: str, where: str, docs: Path = DOCS, *, default: str | None = None) -> list[str]:
    """Every unresolved citation of ``text`` (named ``where`` in the messages; ``default`` as in
    :func:`citations`)."""
    found, orphans = citations(text, default=default)
    out = [f"{where}:{n}: '§' mark names no document; write e.g. docs/formats.md §4" for n in orphans]
    for doc, sec, n in found:
        path = docs / f"{doc}.md"
        if not path.is_file():
            out.append(f"{where}:{n}: cites docs/{doc}.md, which does not exist")
        elif sec is not None and sec not in headings(path):
            out.append(f"{where}:{n}: cites docs/{doc}.md §{sec}, which has no heading numbered {sec}")
    return out


def _sources() -> list[Path]:
    files = {p for pattern in SOURCE_GLOBS for p in ROOT.glob(pattern) if p.is_file()}
    files.discard(Path(__file__).resolve())
    return sorted(files)


SOURCES = _sources()


# -- the repository's own citations ------------------------------------------------------------------------
@pytest.mark.parametrize("path", SOURCES, ids=[p.relative_to(ROOT).as_posix() for p in SOURCES])
def test_every_citation_resolves(path):
    text = path.read_text(encoding="utf-8")
    own = path.stem if path.parent == DOCS and path.stem in DOC_NAMES else None
    assert problems(text, path.relative_to(ROOT).as_posix(), default=own) == []


def test_the_scan_finds_the_known_citations():
    """Guards the scanner itself: if it stopped matching, the test above would pass vacuously."""
    found = {(doc, sec) for p in SOURCES if p.parent != DOCS
             for doc, sec, _ in citations(p.read_text(encoding="utf-8"))[0]}
    for expected in [("formats", "4"), ("formats", "5"), ("formats", "1.2"), ("formats", "6.2"),
                     ("methods", "B.1"), ("methods", "C.2"), ("methods", "D.3"), ("methods", "A.7"),
                     ("reference-models", "3.5"), ("reference-models", "8"), ("reference-models", "9"),
                     ("reference-models", "4.5"), ("design", "5"), ("methods", "B")]:
        assert expected in found
    assert len(found) >= 35


@pytest.mark.parametrize("doc", ["design", "formats", "methods", "reference-models"])
def test_documents_have_numbered_sections(doc):
    assert len(headings(DOCS / f"{doc}.md")) >= 5


def test_relative_links_in_docs_resolve():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for path in DOCS.glob("*.md"):
        for target in link.findall(path.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.name}: link to {target} does not resolve"


# -- the checker itself, on strings ------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("see ``docs/formats.md`` §4 (HDF5) and §5 (manifest)", [("formats", "4"), ("formats", "5")]),
    ("(``reference-models.md``\n§3.5). Every", [("reference-models", "3.5")]),
    ("(``reference-models.md`` §8, ``docs/formats.md`` §6.2)", [("reference-models", "8"), ("formats", "6.2")]),
    ("``docs/reference-models.md`` §8-9 for", [("reference-models", "8"), ("reference-models", "9")]),
    ("resampled (methods §D.3).", [("methods", "D.3")]),
    ("edges (methods.md B.1).", [("methods", "B.1")]),
    ("``docs/methods.md`` section B:", [("methods", "B")]),
    ("per docs/reference-models.md 4.5\")", [("reference-models", "4.5")]),
    ("draw in the RGB frame (``docs/design.md``), so", [("design", None)]),
    ("the METHODS tuple and formats of files", []),
])
def test_citations_are_parsed(text, expected):
    found, orphans = citations(text)
    assert [(d, s) for d, s, _ in found] == expected
    assert orphans == []


@pytest.mark.parametrize("text, words", [
    ("the layout (``docs/formats.md`` §99)", "no heading numbered 99"),
    ("see methods §Z.9 for the method", "no heading numbered Z.9"),
    ("see ``docs/methods.md`` §C.2 and ``docs/reference-models.md`` §4.7", "reference-models.md §4.7"),
    ("see docs/style.md for the style", "does not exist"),
    ("the full §7 protocol", "names no document"),
    ("``docs/formats.md`` describes files. Much later in the same paragraph, far away from it, §3", "names no document"),
    ("the layout of ``docs/formats.md``.\n\nA new paragraph, §3", "names no document"),
])
def test_unresolved_citations_are_reported(tmp_path, text, words):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("design", "formats", "methods", "reference-models"):
        (docs / f"{name}.md").write_text((DOCS / f"{name}.md").read_text(encoding="utf-8"), encoding="utf-8")
    found = problems(text, "x.py", docs)
    assert len(found) == 1 and words in found[0], found


def test_a_removed_section_breaks_its_citations(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("design", "methods", "reference-models"):
        (docs / f"{name}.md").write_text((DOCS / f"{name}.md").read_text(encoding="utf-8"), encoding="utf-8")
    formats = (DOCS / "formats.md").read_text(encoding="utf-8")
    (docs / "formats.md").write_text(re.sub(r"^## 4\. .*$", "## The HDF5 pack", formats, flags=re.MULTILINE),
                                     encoding="utf-8")
    release = (ROOT / "gasdb_tools" / "release.py").read_text(encoding="utf-8")
    assert problems(release, "release.py", DOCS) == []
    assert any("formats.md §4" in p for p in problems(release, "release.py", docs))
