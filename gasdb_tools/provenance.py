"""Provenance: what made each derived artifact, so that staleness is computed, never remembered.

Every stage records, per pair (or per recording), two short digests in the index:

``<stage>_digest``
    the identity of what it wrote: sha256 of the output files' bytes, combined;
``<stage>_inputs``
    the recipe it was made from: the digests of its inputs (the upstream stage's
    ``<stage>_digest``, a calibration's geometry, ...) and its parameters.

An output is **done** when its recorded recipe equals the recipe computed now from the index
(:func:`recipe` of the current upstream digests and the recorded parameters), **stale** when an
input changed, **missing** when it was never made (or its file is gone) and **failed** when its
recording's ``<stage>_error`` is set. A rerun redoes exactly the stale and missing outputs, and
because recipes chain through output digests, a change cascades only as far as the outputs
really change (a recalibration that gives the same warp re-aligns but does not re-enhance).

Digests are the first 128 bits of sha256 (32 hex characters): plenty to tell versions of one
artifact apart, and short enough to keep ``pairs.csv`` readable.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

__all__ = ["DIGEST_CHARS", "STATES", "digest", "bytes_digest", "combine", "recipe", "matrix_key", "state"]

DIGEST_CHARS = 32
#: What :func:`state` can say about an output.
STATES = ("done", "stale", "missing", "failed", "n/a")


def _canonical(value):
    if isinstance(value, np.ndarray):
        return _canonical(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if not math.isfinite(value):
            return repr(value)
        return float(f"{value:.12g}") + 0.0  # 12 significant digits: stable across platforms, no "-0.0"
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def digest(*parts) -> str:
    """Digest of JSON-like ``parts`` (dicts by sorted key, floats to 12 significant digits).

    >>> digest({"b": 1, "a": 0.1 + 0.2}) == digest({"a": 0.3, "b": 1})
    True
    >>> len(digest("x"))
    32
    """
    blob = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def bytes_digest(data: bytes) -> str:
    """Digest of raw bytes (a file's content as written).

    >>> bytes_digest(b"abc")
    'ba7816bf8f01cfea414140de5dae2223'
    """
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def combine(*digests: str) -> str:
    """One digest for several outputs written together (e.g. an aligned frame and its valid mask)."""
    return digest(*digests)


def recipe(stage: str, *inputs, params=None) -> str:
    """The recipe digest of a stage's output: its name, the digests of its inputs and its parameters."""
    return digest(stage, list(inputs), params)


def matrix_key(matrix) -> list:
    """A 3x3 transform as nested floats normalised so that ``[2, 2] == 1`` (for digests).

    >>> matrix_key(np.eye(3) * 2)
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    m = np.asarray(matrix, np.float64)
    m = m / m[2, 2]
    return [[float(f"{v:.12g}") + 0.0 for v in row] for row in m]


def state(*, recorded: str, expected: str | None, have_output: bool, error: str = "") -> str:
    """``done``, ``stale``, ``missing`` or ``failed`` for one output (see the module docstring).

    ``expected`` None means the stage does not apply (``n/a``, e.g. aligning a thermal camera alone).

    >>> state(recorded="a", expected="a", have_output=True), state(recorded="a", expected="b", have_output=True)
    ('done', 'stale')
    """
    if expected is None:
        return "n/a"
    if error:
        return "failed"
    if not have_output or not recorded:
        return "missing"
    return "done" if recorded == expected else "stale"
