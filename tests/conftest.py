"""Shared fixtures: where the real data lives, and a small simulated rig."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a failure there is reproducible, never a random draw);
# local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
#: Real recordings beside the project (never copied into it); tests needing them skip when absent.
SHARED_DATA = Path(os.environ.get("GASDB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (it sits beside the project in ../shared/data)")
    return path


def c_compiler() -> str | None:
    """The C compiler Python's extensions are built with (``CC``), if this machine has it: then
    setup.py builds the optional C median at install."""
    return shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0])


@pytest.fixture
def shared():
    """The ``shared_data`` function, as a fixture."""
    return shared_data


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
