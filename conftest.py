"""Doctest collection over gasdb_tools (setup.cfg: ``--doctest-modules``).

The ``bench`` subpackage needs the optional PyTorch extra; without torch its doctests are not
collected (its tests skip themselves with a reason).
"""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["gasdb_tools/bench/*"]
