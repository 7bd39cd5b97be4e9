"""The layer rule of ``docs/design.md``: imports point downwards only.

Every module of ``gasdb_tools`` is parsed with :mod:`ast` (module-level imports, imports inside
functions, and ``importlib.import_module("gasdb_tools...")`` calls) and checked against one layer
map. The checker itself is tested on synthetic sources, so a rule that could never fire is caught.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "gasdb_tools"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

# The layer map: rank (a module may import its own layer and lower ranks), the top-level modules or
# subpackages of gasdb_tools in the layer, and why the layer sits where it does.
LAYERS = {
    "core": (0, ("__init__", "errors", "fsutil", "progress", "provenance", "resources", "scenes"),
             "plumbing and vocabularies every layer shares: errors, atomic writes, digests, progress, package data"),
    "io": (1, ("imaging", "video"),
           "array <-> file codecs (PNG, video); they know nothing of datasets"),
    "arrays": (2, ("background", "coco", "croissant", "data", "gasdb_layout", "h5pack", "hf_export",
                   "labelme_format", "metrics", "polygons",
                   "pictures", "registration", "restoration", "sensors", "submission", "sync", "synth", "visibility",
                   "dense", "propagate", "refine", "draftmodel", "_median8"),
               "algorithms on arrays and single-file formats: usable in a notebook without a workspace"),
    "workspace": (3, ("workspace", "stages", "review", "views", "suggest"),
                  "the dataset folder, its index, the stage runner that writes it, the review state of its "
                  "documents and the 8-bit views of its frames: what every stage reads and writes"),
    "stages": (4, ("align", "calibration", "enhance", "export", "extract", "preannotate", "recordings", "release",
                   "release_diff", "release_docs", "scoring", "splits", "stats", "status", "validate"),
               "steps over a workspace or a release: read the index, do per-pair work, write outputs"),
    "apps": (5, ("demo", "reviewapp"),
             "whole applications over the stages: the demo plays every role (and runs the bench, lazily, when "
             "torch is there); the review web app serves a workspace to people"),
    "cli": (6, ("cli", "__main__"),
            "thin click commands over everything below"),
    "bench": (None, ("bench",),
              "the optional `bench` extra (PyTorch): may use core, io and arrays; imported by nothing "
              "but the CLI and the demo, and by them only inside functions, so `gasdb` runs without torch"),
}
#: Layers that may import ``bench``, and only lazily (inside a function).
BENCH_IMPORTERS = ("cli", "apps")
#: Units of other layers that may import ``bench`` lazily: the model-assisted drafts train with the
#: harness's loss and device choice (and import torch only when --model is asked for).
BENCH_IMPORTER_UNITS = ("draftmodel",)
#: The highest layer ``bench`` itself may import.
BENCH_MAY_USE = "arrays"

UNIT_LAYER = {unit: layer for layer, (_, units, _) in LAYERS.items() for unit in units}


#: C extension modules (setup.py builds each ``name.c`` into the module ``name``)
C_SOURCES = sorted(PACKAGE_DIR.rglob("*.c"))


def _known_modules() -> set[str]:
    mods = set()
    for path in [*PACKAGE_DIR.rglob("*.py"), *C_SOURCES]:
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        mods.add(".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts))
    return mods


KNOWN = _known_modules()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def unit_of(module: str) -> str:
    """``gasdb_tools.registration.ecc`` -> ``registration``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class Import:
    target: str  # the gasdb_tools module imported
    names: tuple[str, ...]  # names taken from it (``from target import a, b``)
    line: int
    lazy: bool  # inside a function


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _const_prefix(node) -> str | None:
    """The module name in ``import_module("gasdb_tools.x")`` (or the package of an f-string's constant head)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return node.values[0].value.rsplit(".", 1)[0]
    return None


def find_imports(module: str, source: str, *, is_package: bool = False) -> tuple[list[Import], dict[str, str], ast.AST]:
    """The gasdb_tools imports of a module, and the local names bound to gasdb_tools modules."""
    tree = ast.parse(source)
    found: list[Import] = []
    aliases: dict[str, str] = {}

    def visit(node, lazy: bool):
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name == PACKAGE or a.name.startswith(PACKAGE + "."):
                        found.append(Import(a.name, (), child.lineno, lazy))
                        if a.asname:
                            aliases[a.asname] = a.name
                        else:
                            aliases[a.name.split(".")[0]] = PACKAGE
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, is_package, child.level, child.module)
                if base == PACKAGE or base.startswith(PACKAGE + "."):
                    plain = []
                    for a in child.names:
                        sub = f"{base}.{a.name}"
                        if sub in KNOWN:  # `from gasdb_tools import labelme_format` imports a module
                            found.append(Import(sub, (), child.lineno, lazy))
                            aliases[a.asname or a.name] = sub
                        else:
                            plain.append(a.name)
                    if plain:
                        found.append(Import(base, tuple(plain), child.lineno, lazy))
            elif (isinstance(child, ast.Call) and isinstance(child.func, (ast.Attribute, ast.Name))
                  and (child.func.attr if isinstance(child.func, ast.Attribute) else child.func.id) == "import_module"
                  and child.args):
                name = _const_prefix(child.args[0])
                if name and (name == PACKAGE or name.startswith(PACKAGE + ".")):
                    found.append(Import(name, (), child.lineno, lazy))
            visit(child, inner)

    visit(tree, False)
    return found, aliases, tree


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """Every break of the layer rule in one module's source (empty list: none)."""
    unit = unit_of(module)
    if unit not in UNIT_LAYER:
        return [f"{module} is not in the layer map: add {unit!r} to a layer of LAYERS in tests/test_layers.py"]
    layer = UNIT_LAYER[unit]
    rank = LAYERS[layer][0]
    imports, aliases, tree = find_imports(module, source, is_package=is_package)
    out = []
    for imp in imports:
        where = f"{module}:{imp.line} imports {imp.target}"
        t_unit = unit_of(imp.target)
        if t_unit not in UNIT_LAYER:
            out.append(f"{where}: {t_unit!r} is not in the layer map")
            continue
        t_layer = UNIT_LAYER[t_unit]
        t_rank = LAYERS[t_layer][0]
        # private modules (cli._common, bench.models._blocks) belong to their own package
        parts = imp.target.split(".")
        for i, part in enumerate(parts):
            if _private(part):
                owner = ".".join(parts[:i])
                if not (module == owner or module.startswith(owner + ".")):
                    out.append(f"{where}: private module {'.'.join(parts[:i + 1])} is internal to {owner}")
                break
        # private names never cross modules, except from a private module of the same package
        for name in imp.names:
            if _private(name):
                same_pkg_private = (_private(parts[-1]) and module.rsplit(".", 1)[0] == imp.target.rsplit(".", 1)[0])
                if not same_pkg_private:
                    out.append(f"{where}: private name {name} (make it public in {imp.target}, or keep it there)")
        if t_unit == unit:
            continue
        if t_layer == "bench":
            if layer not in BENCH_IMPORTERS and unit not in BENCH_IMPORTER_UNITS:
                out.append(f"{where}: only {BENCH_IMPORTERS} may import bench (the optional torch extra)")
            elif not imp.lazy:
                out.append(f"{where}: bench must be imported inside a function (gasdb must run without torch)")
        elif layer == "bench":
            if t_rank > LAYERS[BENCH_MAY_USE][0]:
                out.append(f"{where}: bench may use core, io and arrays only, not {t_layer}")
        elif t_rank > rank:
            out.append(f"{where}: layer {layer} (rank {rank}) must not import layer {t_layer} (rank {t_rank})")
    # `from gasdb_tools import registration as reg` ... `reg._default_initial`: a private name too
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            head = _dotted(node.value)
            if not head:
                continue
            first, _, rest = head.partition(".")
            if first in aliases:
                target = aliases[first] + (f".{rest}" if rest else "")
                if target in KNOWN and target != module:
                    out.append(f"{module}:{node.lineno} uses private {target}.{node.attr}")
    return out


SOURCES = sorted(PACKAGE_DIR.rglob("*.py"))


def test_the_package_is_found_and_every_module_has_a_layer():
    assert len(SOURCES) > 40
    units = {unit_of(module_name(p)) for p in [*SOURCES, *C_SOURCES]}
    missing = sorted(units - set(UNIT_LAYER))
    assert not missing, f"add these to LAYERS in tests/test_layers.py: {missing}"
    stale = sorted(set(UNIT_LAYER) - units)
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_module_respects_the_layers(path):
    found = violations(module_name(path), path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")
    assert not found, "\n".join(found)


# -- the checker on synthetic sources: each rule can fail --------------------------------------
@pytest.mark.parametrize("module, source, expected", [
    ("gasdb_tools.registration", "from gasdb_tools.workspace import Workspace", "must not import layer workspace"),
    ("gasdb_tools.polygons", "def f():\n    from gasdb_tools.validate import polygon_area\n",
     "must not import layer stages"),
    ("gasdb_tools.synth", "import gasdb_tools.workspace as ws", "must not import layer workspace"),
    ("gasdb_tools.metrics", "from gasdb_tools import export", "must not import layer stages"),
    ("gasdb_tools.stats", "from gasdb_tools.cli import main", "must not import layer cli"),
    ("gasdb_tools.imaging", "from gasdb_tools.labelme_format import read", "must not import layer arrays"),
    ("gasdb_tools.registration.ecc", "from ..workspace import Workspace", "must not import layer workspace"),
    ("gasdb_tools.coco", "import importlib\nimportlib.import_module('gasdb_tools.extract')",
     "must not import layer stages"),
    ("gasdb_tools.calibration", "from gasdb_tools.registration import _default_initial", "private name"),
    ("gasdb_tools.calibration", "from gasdb_tools import registration as reg\nreg._default_initial(1, 2)",
     "uses private gasdb_tools.registration._default_initial"),
    ("gasdb_tools.export", "from gasdb_tools.cli._common import fail", "private module"),
    ("gasdb_tools.export", "def f():\n    from gasdb_tools.bench.train import load_config\n",
     "only ('cli', 'apps') may import bench"),
    ("gasdb_tools.cli.bench_cmds", "from gasdb_tools.bench.train import load_config", "inside a function"),
    ("gasdb_tools.demo", "from gasdb_tools import bench", "inside a function"),
    ("gasdb_tools.bench.train", "from gasdb_tools.workspace import Workspace", "bench may use core, io and arrays"),
    ("gasdb_tools.newmodule", "import numpy", "not in the layer map"),
])
def test_checker_reports_each_kind_of_violation(module, source, expected):
    found = violations(module, source)
    assert any(expected in v for v in found), found


@pytest.mark.parametrize("module, source", [
    ("gasdb_tools.demo", "def f():\n    from gasdb_tools.bench.train import demo_run\n"),
    ("gasdb_tools.cli.bench_cmds", "def f():\n    from gasdb_tools.bench.registry import list_models\n"),
    ("gasdb_tools.cli.preannotate_cmds", "from gasdb_tools.cli._common import fail\nimport gasdb_tools\n"
                                         "x = gasdb_tools.__file__"),
    ("gasdb_tools.bench.models.rtcan", "from gasdb_tools.bench.models._blocks import BasicConv"),
    ("gasdb_tools.registration.ecc", "from gasdb_tools.registration._pyramid import _levels"),
    ("gasdb_tools.validate", "from gasdb_tools.polygons import polygon_self_intersects"),
    ("gasdb_tools.bench.data", "from gasdb_tools import gasdb_layout\nfrom gasdb_tools.imaging import to_float"),
    ("gasdb_tools.synth", "from gasdb_tools.scenes import SCENES\nfrom gasdb_tools import __version__"),
])
def test_checker_accepts_allowed_imports(module, source):
    assert violations(module, source) == []
