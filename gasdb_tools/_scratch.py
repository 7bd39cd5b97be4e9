"""Per-thread reusable arrays for the large temporaries of hot loops (private).

Freshly allocated megabytes are not free: glibc returns freed memory to the kernel, and touching a
new allocation page-faults it back in (on a busy 2-core machine, about as much time as the
non-median steps of a restoration). Code that runs thousands of times on same-size images
keeps its temporaries here instead. Each thread has its own arrays; an array is reused while the
name, shape and dtype stay the same, and its contents are undefined. Never return one to a caller.
"""

from __future__ import annotations

import threading

import numpy as np

_LOCAL = threading.local()


def scratch(name: str, shape, dtype) -> np.ndarray:
    """This thread's array ``name`` of ``shape`` and ``dtype`` (contents undefined)."""
    store = _LOCAL.__dict__
    array = store.get(name)
    shape = tuple(int(n) for n in shape)
    if array is None or array.shape != shape or array.dtype != dtype:
        array = store[name] = np.empty(shape, dtype)
    return array
