"""Pack the real TNO visual + thermal sequences into a two-camera recording with a known truth.

The TNO FEL sequences (``../shared/data/tno_sequences``, see its README) are consecutive frames
with no timestamps: here consecutive ids are ``1 / SCENE_FPS`` s apart. :func:`pack_sequence`
writes them as two videos with different frame rates and a known start offset:

* ``thermal.mp4`` at ``SCENE_FPS`` (10 fps): every thermal frame from id ``first + START_FRAMES``
  on, optionally warped by a known transform ``W`` (thermal px -> warped px);
* ``rgb.mp4`` at ``SCENE_FPS / 2`` (5 fps): every other visual frame from id ``first``.

So ``t_rgb = t_thermal + OFFSET_S`` with ``OFFSET_S = START_FRAMES / SCENE_FPS`` (0.2 s), and a
calibration ``H`` of the unwarped recording and ``H_w`` of the warped one satisfy ``H_w @ W = H``.
The default warp is a zoom (a narrower thermal field of view) with a small rotation and shift,
so the warped frames have no border (the videos carry no valid-pixel mask).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gasdb_tools.registration import fit_model, image_corners, transform_points
from gasdb_tools.video import write_video

SEQUENCES = ("Duine_sequence", "Tree_sequence")
SCENE_FPS = 10.0
START_FRAMES = 2
OFFSET_S = START_FRAMES / SCENE_FPS
SIZE = (360, 270)


def known_warp(size=SIZE, *, scale=1.07, deg=1.5, shift=(3.0, -2.0), corner_jitter=None) -> np.ndarray:
    """Thermal px -> warped px: a zoom about the centre by ``scale``, a rotation and a shift.

    ``corner_jitter`` (4, 2) px moves the corners further (a homography). The warped frame must
    sample the source frame everywhere (no border); a warp that would leave one raises.
    """
    w, h = size
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    a = np.deg2rad(deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = rot
    m[:2, 2] = c - rot @ c + np.asarray(shift)
    if corner_jitter is not None:
        corners = image_corners(size)
        m = fit_model(corners, transform_points(m, corners) + np.asarray(corner_jitter), "homography")
    src = transform_points(np.linalg.inv(m), image_corners(size))
    if src.min() < 0 or (src[:, 0] > w - 1).any() or (src[:, 1] > h - 1).any():
        raise ValueError("the warp would leave part of the warped frame without thermal pixels")
    return m


def load_sequence(root, name):
    """(visual frames, thermal frames) of one sequence, uint8 gray, in id order."""
    folder = Path(root) / name
    visual = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((folder / "visual").glob("*.png"))]
    thermal = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((folder / "thermal").glob("*.png"))]
    if not visual or len(visual) != len(thermal):
        raise FileNotFoundError(f"{folder}: expected as many visual/*.png as thermal/*.png frames")
    return visual, thermal


def pack_sequence(root, name, out, *, warp=None, thermal_ids=(START_FRAMES, 1), rgb_ids=(0, 2)) -> Path:
    """Write ``out/rgb.mp4`` and ``out/thermal.mp4`` of one sequence (module docstring); returns ``out``.

    ``thermal_ids`` / ``rgb_ids`` = (first, step): each stream holds every ``step``-th frame from the
    ``first``-th on, at ``SCENE_FPS / step``, so ``t_rgb = t_thermal + (first_thermal - first_rgb) / SCENE_FPS``
    (:func:`packed_offset`). The defaults are the packing of the module docstring.
    """
    visual, thermal = load_sequence(root, name)
    out = Path(out)
    if warp is not None:
        size = (thermal[0].shape[1], thermal[0].shape[0])
        thermal = [cv2.warpPerspective(f, np.asarray(warp, np.float64), size, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE) for f in thermal]
    (t0, t_step), (r0, r_step) = thermal_ids, rgb_ids
    write_video(out / "thermal.mp4", thermal[t0::t_step], fps=SCENE_FPS / t_step)
    write_video(out / "rgb.mp4", [cv2.cvtColor(f, cv2.COLOR_GRAY2RGB) for f in visual[r0::r_step]],
                fps=SCENE_FPS / r_step)
    return out


def packed_offset(thermal_ids=(START_FRAMES, 1), rgb_ids=(0, 2)) -> float:
    """The true ``offset_s`` of a :func:`pack_sequence` packing."""
    return (thermal_ids[0] - rgb_ids[0]) / SCENE_FPS
