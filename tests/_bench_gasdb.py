"""A tiny synthetic Gas-DB folder for the benchmark tests (built in tmp_path, never committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gasdb_tools.gasdb_layout import format_name, write_layout_lists, write_sample


def make_gasdb(root: Path, *, n_train: int = 12, n_test: int = 4, size=(64, 80), seed: int = 0, val: int = 0,
               blacklist: int = 0) -> Path:
    """Write ``n_train + n_test (+ val + blacklist)`` RGBA samples with an elliptic warm "plume" each.

    Thermal is warm inside the plume (the learnable cue); RGB is noise with a faint trace.
    Returns the folder.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    total = n_train + n_test + val + blacklist
    names = [format_name(i + 1) for i in range(total)]
    for name in names:
        cy, cx = rng.uniform(0.25 * h, 0.75 * h), rng.uniform(0.25 * w, 0.75 * w)
        ry, rx = rng.uniform(0.12 * h, 0.3 * h), rng.uniform(0.12 * w, 0.3 * w)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        thermal = np.clip(rng.normal(70, 12, size) + 110 * mask, 0, 255).astype(np.uint8)
        rgb = np.clip(rng.normal(120, 30, (h, w, 3)) + 10 * mask[..., None], 0, 255).astype(np.uint8)
        write_sample(root, name, rgb, thermal, mask.astype(np.uint8))
    splits = {"train": names[:n_train], "test": names[n_train:n_train + n_test]}
    if val:
        splits["val"] = names[n_train + n_test:n_train + n_test + val]
    black = names[n_train + n_test + val:]
    splits["train"] = splits["train"] + black  # listed in train.txt but blacklisted
    write_layout_lists(root, splits, black)
    return root
