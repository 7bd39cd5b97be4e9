"""Package data (importlib.resources), ``gasdb init``'s annotation copy, and a wheel built from a clean clone.

The wheel test is what a user gets from ``pip install gasdb-tools``: the committed tree is cloned,
built into a wheel without network, installed into a fresh venv that borrows this environment's
dependencies (but not its editable gasdb_tools), and its ``gasdb`` runs ``init``, the demo and
``label --dry-run`` from a folder outside the repository.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import c_compiler
from gasdb_tools import labelme_format, resources
from gasdb_tools.cli import main
from gasdb_tools.resources import labelme_config
from gasdb_tools.errors import GasdbError
from gasdb_tools.export import read_class_names
from gasdb_tools.preannotate import FLAGS
from gasdb_tools.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


# -- the shipped files ------------------------------------------------------------------------
def test_label_list_is_the_shipped_file_and_the_default_classes():
    assert resources.label_list() == ("__ignore__", "_background_", "gas")
    assert labelme_format.DEFAULT_CLASS_NAMES == resources.label_list()
    assert read_class_names(resources.annotation_file("labels.txt")) == list(resources.label_list())
    assert labelme_format.class_index(labelme_format.DEFAULT_CLASS_NAMES) == {"__ignore__": 255, "_background_": 0,
                                                                             "gas": 1}


def test_labelme_config_matches_the_label_list_and_the_draft_flags():
    config = yaml.safe_load(resources.annotation_file("labelme.yaml").read_text(encoding="utf-8"))
    assert set(config["labels"]) == set(resources.label_list()) - {labelme_format.BACKGROUND_LABEL}
    assert tuple(config["flags"]) == FLAGS and "approved" in FLAGS
    assert config["store_data"] is False and config["auto_save"] is True
    assert set(config["label_colors"]) == set(config["labels"])


def test_labelme_loads_the_config():
    config_mod = pytest.importorskip("labelme.config", reason="LabelMe (test extra, Python < 3.12) is not installed")
    if not hasattr(config_mod, "load_config"):
        pytest.skip("this LabelMe has no labelme.config.load_config (the test extra pins 6.3.1)")
    # LabelMe's own loader: it refuses unknown keys and migrates store_data (5.x) to with_image_data
    config = config_mod.load_config(resources.annotation_file("labelme.yaml"), {})
    assert config["labels"] == ["gas", "__ignore__"] and config["flags"] == list(FLAGS)
    assert config["with_image_data"] is False and config["auto_save"] is True and config["validate_label"] == "exact"


def test_there_is_one_copy_of_each_shipped_file():
    for name in resources.ANNOTATION_FILES:
        assert resources.annotation_file(name).parent == ROOT / "gasdb_tools" / "annotation"
        assert not (ROOT / "annotation" / name).exists()
    assert not (ROOT / "benchmarks" / "configs").exists()
    assert all(p.parent == ROOT / "gasdb_tools" / "bench" / "configs" for p in resources.bench_configs().values())
    with pytest.raises(ValueError, match="one of"):
        resources.annotation_file("GUIDE.md")


def test_bench_config_by_name_by_file_and_unknown(tmp_path):
    shipped = resources.bench_configs()
    assert list(shipped) == sorted(shipped) and "rtcan-r50" in shipped and "mfnet" in shipped
    assert resources.bench_config("rtcan-r50") == shipped["rtcan-r50"]
    assert resources.bench_config("rtcan-r50.json") == shipped["rtcan-r50"]
    own = tmp_path / "rtcan-r50.json"  # a file of one's own wins over the shipped recipe of that name
    own.write_text("{}")
    assert resources.bench_config(own) == own
    with pytest.raises(GasdbError, match="no shipped recipe") as err:
        resources.bench_config("configs/rtcan-r50.json")  # a missing path is not taken for a name
    assert "rtcan-r50" in err.value.fix
    result = CliRunner().invoke(main, ["bench", "train", "--config", "rtcan-r5", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "rtcan-r50, rtcan-r50-paper-intent" in result.output


# -- gasdb init and gasdb label ------------------------------------------------------------------
def test_init_copies_the_annotation_config_and_label_prefers_it(tmp_path):
    result = CliRunner().invoke(main, ["init", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    ws = Workspace(tmp_path / "ws")
    for name in resources.ANNOTATION_FILES:
        assert (ws.root / "annotation" / name).read_bytes() == resources.annotation_file(name).read_bytes()
    assert labelme_config(ws.root) == ws.root / "annotation" / "labelme.yaml"
    (ws.root / "annotation" / "labelme.yaml").unlink()  # a workspace made before init copied it
    assert labelme_config(ws.root) == resources.annotation_file("labelme.yaml")


def test_copy_annotation_config_keeps_an_edited_copy(tmp_path):
    dest = tmp_path / "annotation"
    dest.mkdir()
    (dest / "labelme.yaml").write_text("auto_save: true\n")
    written = resources.copy_annotation_config(dest)
    assert written == [dest / "labels.txt"]
    assert (dest / "labelme.yaml").read_text() == "auto_save: true\n"
    assert resources.copy_annotation_config(dest) == []


# -- a wheel from a clean clone ------------------------------------------------------------------
def _run(cmd, *, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _package_data_patterns() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return [f"gasdb_tools/{p.strip()}" for p in cfg["options.package_data"]["gasdb_tools"].split("\n") if p.strip()]


@pytest.mark.slow
def test_wheel_from_a_clean_clone_runs_init_demo_and_label(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout, so there is no clean clone to build from")
    try:
        import venv
    except ImportError:
        pytest.skip("the venv module is not available")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", CI="true")

    src = tmp_path / "src"
    _run(["git", "clone", "-q", "--no-hardlinks", ROOT, src], cwd=tmp_path, env=env)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src],
         cwd=tmp_path, env=env)
    (wheel,) = dist.glob("gasdb_tools-*.whl")
    tracked = _run(["git", "ls-files", "gasdb_tools"], cwd=src, env=env).stdout.split()
    c_sources = [f for f in tracked if f.endswith(".c")]  # compiled into the wheel, not shipped
    data = [f for f in tracked if not f.endswith((".py", ".c"))]
    assert {"gasdb_tools/annotation/labelme.yaml", "gasdb_tools/annotation/labels.txt",
            "gasdb_tools/bench/configs/rtcan-r50.json"} <= set(data)
    assert all(any(fnmatch.fnmatch(f, p) for p in _package_data_patterns()) for f in data), data
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = sorted(set(tracked) - set(c_sources) - names)
    assert not missing, f"the wheel lacks {missing}"
    built = c_compiler() is not None
    if built:  # the optional C median is compiled where a compiler is (setup.py)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        unbuilt = [f for f in c_sources if f[:-2] + suffix not in names]
        assert not unbuilt, f"the wheel lacks the compiled {unbuilt}"

    # a fresh venv: the wheel installed into it; the dependencies borrowed from this environment via
    # a .pth line (a directory added that way has its own .pth files ignored: no editable finder)
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    py = target / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", wheel], cwd=tmp_path, env=env)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=env).stdout.strip())
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_borrowed_dependencies.pth").write_text("\n".join(outer) + "\n")

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    where = _run([py, "-c", "import gasdb_tools, gasdb_tools.resources as r, gasdb_tools.restoration as rs; "
                            "print(gasdb_tools.__file__); print(r.annotation_file('labelme.yaml')); "
                            "print(rs._median_rows_c is not None)"], cwd=run_dir, env=env).stdout.split("\n")
    assert Path(where[0]).is_relative_to(site), where  # the installed wheel, not the repository
    assert Path(where[1]) == site / "gasdb_tools" / "annotation" / "labelme.yaml"
    assert where[2] == str(built), where  # the wheel's C median loads
    gasdb = target / "bin" / "gasdb"

    _run([gasdb, "init", "ws"], cwd=run_dir, env=env)
    for name in ("labelme.yaml", "labels.txt"):
        assert (run_dir / "ws" / "annotation" / name).read_bytes() == (src / "gasdb_tools" / "annotation" / name).read_bytes()

    demo = _run([gasdb, "demo", "out", "--recordings", "2", "--seconds", "2"], cwd=run_dir, env=env)
    assert "release" in demo.stdout and "bench" in demo.stdout and "FAILED" not in demo.stdout
    assert (run_dir / "out" / "release" / "manifest.json").is_file()
    # the demo's workspace has no annotation/ copy: gasdb label falls back to the wheel's config
    shown = _run([gasdb, "label", "out/workspace", "--dry-run"], cwd=run_dir, env=env).stdout
    assert f"--config {site / 'gasdb_tools' / 'annotation' / 'labelme.yaml'}" in shown

    # the init'd workspace, with one of the demo's recordings: gasdb label uses its own copy
    rec = run_dir / "out" / "recordings" / "synth01"
    _run([gasdb, "add", "ws", "--rgb", rec / "rgb.mp4", "--thermal", rec / "thermal.mp4", "--scene", "near"],
         cwd=run_dir, env=env)
    _run([gasdb, "extract", "ws", "--every", "0.5"], cwd=run_dir, env=env)
    _run([gasdb, "preannotate", "ws"], cwd=run_dir, env=env)
    shown = _run([gasdb, "label", "ws", "--dry-run"], cwd=run_dir, env=env).stdout
    assert f"--config {run_dir / 'ws' / 'annotation' / 'labelme.yaml'}" in shown
    assert f"--output {run_dir / 'ws' / 'labels' / 'synth01'}" in shown
