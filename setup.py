"""The project is declared in setup.cfg; this file only adds the optional C median (see below)."""

from setuptools import Extension, setup

# gasdb_tools/_median8.c: the exact 8-bit median behind Tarel-Hautiere (1.86x cv2.medianBlur's speed
# on a thermal frame: benchmarks/bench_restoration.py).
# Optional: where it cannot be compiled (no C compiler, MSVC), the install goes on and
# gasdb_tools.restoration uses cv2.medianBlur instead, with identical results.
setup(ext_modules=[Extension("gasdb_tools._median8", ["gasdb_tools/_median8.c"],
                             extra_compile_args=["-O3", "-std=gnu11"], optional=True)])
