"""Two-camera recordings of scenes whose motion does or does not tell the start offset (sync tests).

Each scene is a function of world time returning a gray image in [0, 1]; :func:`write_scene` renders
it through two "cameras" (RGB: the scene itself; thermal: an inverted, gamma-changed view), each
with its own sensor noise, frame rate and start time, and encodes both with libx264, so the
motion energies the tests correlate come from real decoded video (keyframe pulses included).
With ``t_rgb = t_thermal + offset_s``, thermal frame ``k`` shows world time ``START + k / fps``
and RGB frame ``k`` world time ``START - offset_s + k / fps``.

Ambiguous (no offset can be told from motion alone):
  ``slideshow``  a new still every 2 s (periodic),
  ``pan``        a constant-speed pan over a uniform random texture,
  ``static``     a still scene, sensor noise only.
Unambiguous (one sharp event both cameras see):
  ``flash``      a lamp on for 0.2 s,
  ``clap``       a hand-sized blob moving fast for 0.4 s,
  ``heat``       a hot object (a heater) on for 1 s.
Ambiguous to the motion energy, told by where things move (co-location):
  ``walk``       a person-sized blob crossing the view at a constant speed, with the thermal camera
                 jittering by up to 2 px on its own (the TNO Duine sequence's situation).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gasdb_tools.video import write_video

SIZE = (160, 128)
START = 1.0
AMBIGUOUS = ("slideshow", "pan", "static")
EVENTS = ("flash", "clap", "heat")
WALKS = ("walk",)


def _texture(rng, w, h, blur=3.0):
    x = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), blur)
    return (x - x.min()) / (x.max() - x.min())


def scene(kind: str, seed: int, seconds: float):
    """``t -> (H, W) float32 image in [0, 1]`` for world times in ``[0, seconds]``."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    if kind == "slideshow":
        slides = [_texture(rng, w, h) for _ in range(int(seconds / 2.0) + 2)]
        return lambda t: slides[int(t // 2.0)]
    if kind == "pan":
        strip = _texture(rng, w + int(40 * seconds) + 2, h)
        return lambda t: strip[:, int(round(40 * t)):int(round(40 * t)) + w]
    base = _texture(rng, w, h)
    if kind == "static":
        return lambda t: base
    if kind == "walk":
        def walker(t):
            img = base.copy()
            cv2.ellipse(img, (int(round(10 + 12 * t)), 70), (4, 10), 0, 0, 360, 1.0, -1)
            return img
        return walker
    if kind not in EVENTS:
        raise ValueError(f"unknown scene {kind!r}")

    def frame(t):
        img = base.copy()
        if kind == "flash" and 3.0 <= t < 3.2:
            img[20:50, 20:50] = 1.0
        elif kind == "clap" and 2.6 <= t < 3.0:
            cv2.circle(img, (int(40 + 200 * (t - 2.6)), 70), 12, 1.0, -1)
        elif kind == "heat" and 3.3 <= t < 4.3:
            cv2.circle(img, (100, 60), 16, 1.0, -1)
        return img

    return frame


def write_scene(folder, kind: str, *, seed: int = 0, offset_s: float = 0.0, seconds: float = 10.0,
                fps_rgb: float = 30.0, fps_thermal: float = 25.0) -> Path:
    """Write ``folder/rgb.mp4`` and ``folder/thermal.mp4`` of a scene; returns ``folder``."""
    folder = Path(folder)
    world = scene(kind, seed, seconds + START + abs(offset_s) + 1)
    noise = np.random.default_rng(seed + 100)

    def render(t, thermal):
        g = world(t)
        if thermal:
            g = 1 - g ** 0.7
            if kind == "walk":  # the thermal camera's own jitter
                g = np.roll(g, int(noise.integers(-2, 3)), axis=0)
        g = g + noise.normal(0, 0.02, g.shape)
        return np.clip(g * 255, 0, 255).astype(np.uint8)

    write_video(folder / "thermal.mp4", (render(START + k / fps_thermal, True)
                                         for k in range(int(seconds * fps_thermal))), fps=fps_thermal)
    write_video(folder / "rgb.mp4", (render(START - offset_s + k / fps_rgb, False)
                                     for k in range(int(seconds * fps_rgb))), fps=fps_rgb)
    return folder
