"""What the benchmarks record about the machine they ran on (imported by the bench_*.py scripts)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :func:`platform.processor` says, or None)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or None
