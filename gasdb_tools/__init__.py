"""gasdb-tools: curate RGB-thermal gas-leak recordings into a Gas-DB style segmentation dataset.

The library is layered (see README): pure array algorithms (``registration``,
``restoration``, ``background``, ``labelme_format``, ``metrics``, ``synth``), I/O helpers
(``imaging``, ``video``, ``fsutil``), the dataset ``workspace`` and the stages over it, and the
``gasdb`` command line in :mod:`gasdb_tools.cli`.
"""

__version__ = "0.1.0"
