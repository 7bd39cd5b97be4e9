"""The one progress helper: tqdm bars on stderr, only when stderr is a terminal, with an ETA.

Bars are off when stderr is not a TTY, under ``CI=true``, or after :func:`set_enabled(False)`
(the CLI does that for ``--quiet`` and ``--json``), so logs and pipes stay clean. A bar with a
known total shows the time left (``<ETA``) from the recent rate; stages pass totals (extract an
estimate from the video headers) so long recordings show one.

In a worker process of the stage runner (:mod:`gasdb_tools.stages`) no bar is drawn: a
*reporter* set with :func:`set_reporter` receives ``(desc, n, total)`` about twice a second
instead, and the parent draws the bars (:class:`Board`).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["progress", "enabled", "set_enabled", "set_reporter", "Board", "REPORT_EVERY_S"]

_enabled: bool | None = None  # None = decide from the terminal
_reporter: Callable[[str, int, int | None], None] | None = None

#: Seconds between two reports of a worker's bar to the parent.
REPORT_EVERY_S = 0.5
_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def set_enabled(enabled: bool | None) -> None:
    """Force progress bars on/off (``None`` = automatic: stderr is a TTY and not CI)."""
    global _enabled
    _enabled = enabled


def set_reporter(reporter: Callable[[str, int, int | None], None] | None) -> None:
    """Send ``(desc, n, total)`` of every bar to ``reporter`` instead of drawing it (``None``: draw)."""
    global _reporter
    _reporter = reporter


def enabled() -> bool:
    """Whether bars are shown now."""
    if _enabled is not None:
        return _enabled
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """Wrap ``iterable`` in a progress bar when :func:`enabled`, else return it unchanged.

    ``total`` may be an estimate (the bar's ETA follows it); without it and without ``len()`` the
    bar counts without an ETA.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _reporter is not None:
        return _reported(iterable, total, desc, _reporter)
    if not enabled():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                bar_format=_BAR_FORMAT if total else None)


def _reported(iterable: Iterable[T], total, desc: str, report) -> Iterator[T]:
    n = 0
    last = time.monotonic()
    report(desc, 0, total)
    for item in iterable:
        yield item
        n += 1
        now = time.monotonic()
        if now - last >= REPORT_EVERY_S:
            report(desc, n, total)
            last = now
    report(desc, n, total)


class Board:
    """The bars of a parallel run: one over the recordings, and one per recording in progress.

    Workers report ``(key, desc, n, total)`` (:meth:`report`); each running recording gets a bar
    with its own ETA, closed by :meth:`finish`. Nothing is drawn unless :func:`enabled`.
    """

    def __init__(self, total: int, desc: str):
        self.on = enabled()
        self.bars: dict = {}
        self.free: list[int] = []
        self.positions: dict = {}
        self.main = None
        if self.on:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.main = tqdm(total=total, desc=desc, unit="recording", file=sys.stderr, leave=False,
                             dynamic_ncols=True, position=0, bar_format=_BAR_FORMAT)

    def report(self, key, desc: str, n: int, total: int | None) -> None:
        if not self.on:
            return
        bar = self.bars.get(key)
        if bar is None:
            position = self.free.pop(0) if self.free else len(self.bars) + 1
            bar = self._tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, leave=False, dynamic_ncols=True,
                             position=position, bar_format=_BAR_FORMAT if total else None)
            self.bars[key] = bar
            self.positions[key] = position
        if total is not None and bar.total != total:
            bar.total = total
        if desc and bar.desc != desc:
            bar.set_description(desc, refresh=False)
        bar.update(max(n - bar.n, 0))

    def finish(self, key) -> None:
        if not self.on:
            return
        bar = self.bars.pop(key, None)
        if bar is not None:
            self.free.append(self.positions.pop(key))
            self.free.sort()
            bar.close()
        self.main.update(1)

    def close(self) -> None:
        if not self.on:
            return
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.main.close()
