"""The one progress helper: a tqdm bar on stderr, only when stderr is a terminal.

Bars are off when stderr is not a TTY, under ``CI=true``, or after :func:`set_enabled(False)`
(the CLI does that for ``--quiet`` and ``--json``), so logs and pipes stay clean.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

_enabled: bool | None = None  # None = decide from the terminal


def set_enabled(enabled: bool | None) -> None:
    """Force progress bars on/off (``None`` = automatic: stderr is a TTY and not CI)."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    """Whether bars are shown now."""
    if _enabled is not None:
        return _enabled
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """Wrap ``iterable`` in a progress bar when :func:`enabled`, else return it unchanged."""
    if not enabled():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
