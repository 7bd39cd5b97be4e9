"""Rig simulator: paired RGB + thermal recordings of a gas leak with exact ground truth.

A fixed two-camera rig looks at a textured outdoor-like scene (sky, ground, buildings, tanks,
pipes, trees). Both cameras see the same geometry, so edges coincide after the rig's homography,
but with different intensities (colour vs temperature, with some polarity flips) and different
sharpness. A gas plume, visible **only in thermal**, is a turbulent concentration field made of
puffs emitted from a fixed source and advected by a slowly veering wind; it changes the thermal
background by ``contrast * C`` grey levels (darker for an absorbing plume, brighter for an
emitting one). Thermal frames get sensor noise and a slow global drift. Optional distractors: a
warm person walking through both views, and a water spray (cold and white).

Ground truth is exact: per-thermal-frame gas masks (``contrast * C >= mask_threshold_dn``),
the homography mapping thermal pixels to RGB pixels, the start offset between the streams
(``t_rgb = t_thermal + offset_s``) and their frame rates.

Everything is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gasdb_tools import __version__
from gasdb_tools.fsutil import write_json
from gasdb_tools.imaging import write_image
from gasdb_tools.progress import progress
from gasdb_tools.scenes import SCENES
from gasdb_tools.video import write_video

__all__ = ["SynthRig", "random_homography", "write_recording", "synthesize", "render_visible_smoke"]

_QUARTER = 4  # plume field is computed at 1/4 resolution, then upsampled


def random_homography(rng: np.random.Generator, size: tuple[int, int], *, max_scale: float = 0.03,
                      max_rot_deg: float = 3.0, max_shift: float = 30.0, max_jitter: float = 3.0) -> np.ndarray:
    """A random rig homography (thermal px -> RGB px): a few % scale, a few degrees, tens of px.

    Built as a similarity about the image centre plus a shift, then each projected corner moved by
    up to ``max_jitter`` px (a small perspective part).
    """
    w, h = size
    c = np.array([w / 2, h / 2])
    s = 1 + rng.uniform(-max_scale, max_scale)
    a = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg))
    t = rng.uniform(-max_shift, max_shift, size=2)
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    moved = (corners - c) @ rot.T + c + t + rng.uniform(-max_jitter, max_jitter, size=(4, 2))
    return cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32)).astype(np.float64)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scales=(64, 16, 4), weights=(1.0, 0.5, 0.25)):
    """Fractal value noise in roughly [-1, 1]: sum of upsampled random grids."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    for scale, weight in zip(scales, weights):
        grid = rng.standard_normal((h // scale + 2, w // scale + 2)).astype(np.float32)
        out += weight * cv2.resize(grid, (w + 2 * scale, h + 2 * scale), interpolation=cv2.INTER_CUBIC)[:h, :w]
    return out / np.float32(sum(weights))


@dataclass
class _Puffs:
    birth: np.ndarray  # world time of emission (s)
    jitter: np.ndarray  # (n, 2) random-walk direction per puff (px / sqrt(s))
    strength: np.ndarray  # (n,) relative puff strength


@dataclass
class SynthRig:
    """One simulated recording: a fixed rig, a scene, a leak.

    Parameters
    ----------
    seed : int
        Everything random derives from it.
    size : (width, height)
        Frame size of both cameras (Gas-DB: 640x512).
    rgb_fps, thermal_fps : float
        Frame rates of the two streams.
    offset_s : float or None
        Start offset: the thermal camera starts ``offset_s`` seconds after the RGB camera, so a
        thermal frame at thermal time ``t`` shows the instant ``t_rgb = t + offset_s``.
        ``None`` draws one in [0.3, 1.5] s.
    contrast : float
        Plume contrast in grey levels at unit concentration (8-16 is faint, 32+ is clear).
    polarity : {'absorbing', 'emitting'}
        Absorbing plumes darken the thermal background, emitting plumes brighten it.
    leak_start_s : float or None
        Thermal time at which the leak starts (masks are empty before). ``None``: 1.0 s.
    distractors : bool
        A warm person walks through both views.
    spray : bool
        A water spray (visible in RGB as white mist, in thermal as a cold streaky region; not gas).
    sync_lamp : bool
        A lamp that both cameras see, switched on and off at irregular times (a flash / heat event,
        how rigs are synchronised in practice; methods §D.3). Its switch times are in ``truth()``.
    noise_sigma : float
        Thermal sensor noise (grey levels).
    mask_threshold_dn : float
        A pixel is gas in the truth mask when the plume changes it by at least this much.
    rig_homography : (3, 3) array or None
        The rig's thermal -> RGB homography; ``None`` draws one from the seed. Recordings of one
        fixed rig share it (see :func:`synthesize`).

    Examples
    --------
    >>> rig = SynthRig(seed=1, size=(160, 128))
    >>> frame, mask = rig.thermal(rig.leak_start_s + 1.0)
    >>> frame.shape, frame.dtype, bool(mask.any())
    ((128, 160), dtype('uint8'), True)
    >>> bool(rig.thermal(0.0)[1].any())
    False
    """

    seed: int = 0
    size: tuple[int, int] = (640, 512)
    rgb_fps: float = 30.0
    thermal_fps: float = 25.0
    offset_s: float | None = None
    contrast: float = 20.0
    polarity: str = "absorbing"
    leak_start_s: float | None = None
    distractors: bool = True
    spray: bool = False
    sync_lamp: bool = True
    noise_sigma: float = 1.5
    mask_threshold_dn: float = 2.5
    rig_homography: np.ndarray | None = field(default=None, repr=False)
    homography: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.polarity not in ("absorbing", "emitting"):
            raise ValueError(f"polarity must be 'absorbing' or 'emitting', got {self.polarity!r}")
        w, h = self.size
        if w < 64 or h < 64:
            raise ValueError(f"size must be at least 64x64, got {self.size}")
        rng = np.random.default_rng(self.seed)
        if self.offset_s is None:
            self.offset_s = float(np.round(rng.uniform(0.3, 1.5), 3))
        if self.leak_start_s is None:
            self.leak_start_s = 1.0
        drawn = random_homography(rng, self.size, max_shift=30.0 * w / 640)
        if self.rig_homography is None:
            self.homography = drawn
        else:
            self.homography = np.array(self.rig_homography, dtype=np.float64)
            if self.homography.shape != (3, 3):
                raise ValueError(f"rig_homography must be 3x3, got shape {self.homography.shape}")
        self._margin = m = int(round(0.15 * max(w, h)))
        self._to_world = np.array([[1, 0, m], [0, 1, m], [0, 0, 1]], np.float64)  # RGB px -> world px
        self._rgb_world, self._thermal_world = self._draw_world(rng)
        self._rgb_bg = np.ascontiguousarray(self._rgb_world[m:m + h, m:m + w])
        self._thermal_bg = cv2.warpPerspective(self._thermal_world, self._to_world @ self.homography, (w, h),
                                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                               borderMode=cv2.BORDER_REFLECT)
        self._thermal_bg = cv2.GaussianBlur(self._thermal_bg, (0, 0), 1.0)  # thermal optics are softer
        # Leak: source in the lower middle of the thermal view, wind mostly sideways and upwards.
        self.source_xy = (float(rng.uniform(0.35, 0.65) * w), float(rng.uniform(0.55, 0.75) * h))
        speed = rng.uniform(0.05, 0.09) * w  # px/s
        angle = rng.uniform(-0.6, 0.6) + (0 if rng.random() < 0.5 else np.pi)
        self._wind0 = (speed * np.cos(angle), -abs(speed * np.sin(angle)) - 0.02 * h)
        self._veer = (rng.uniform(0.2, 0.5), rng.uniform(4.0, 9.0), rng.uniform(0, 2 * np.pi))
        self._dt = 0.01
        self._rng_seed = int(rng.integers(2**31))
        self._turbulence = 1.0 + 0.45 * _smooth_noise(np.random.default_rng(self._rng_seed),
                                                      (2 * h // _QUARTER, 2 * w // _QUARTER), scales=(16, 6, 2))
        self._puffs: _Puffs | None = None
        self._wind_table = None
        self._drift = (rng.uniform(1.0, 2.5), rng.uniform(5.0, 9.0), rng.uniform(0, 2 * np.pi))
        self._person = (rng.uniform(0.2, 0.8), rng.uniform(0.5, 0.9) * h)  # phase, ground row
        # lamp: irregular on/off durations (aperiodic, so cross-correlation has one peak), thermal clock
        lamp_rng = np.random.default_rng(self._rng_seed + 3)
        durations = np.column_stack([lamp_rng.uniform(0.4, 1.4, 64), lamp_rng.uniform(0.12, 0.4, 64)]).ravel()
        self.lamp_switches_s = tuple(float(v) for v in np.round(0.25 + np.cumsum(durations) - durations[0], 3))
        lx, ly = rng.uniform(0.05, 0.85) * w, rng.uniform(0.05, 0.2) * h
        self._lamp_rgb = np.array([[lx, ly], [lx + 0.1 * w, ly], [lx + 0.1 * w, ly + 0.12 * h], [lx, ly + 0.12 * h]])

    # -- scene ------------------------------------------------------------------------------------
    def _draw_world(self, rng):
        w, h = self.size
        m = self._margin
        W, H = w + 2 * m, h + 2 * m
        rgb = np.zeros((H, W, 3), np.float32)
        th = np.zeros((H, W), np.float32)
        horizon = int(m + rng.uniform(0.25, 0.38) * h)
        sky = np.linspace(0, 1, horizon)[:, None]
        rgb[:horizon] = np.array([120, 160, 215]) + sky[:, :, None] * np.array([60, 50, 25])
        th[:horizon] = 40 + 15 * sky
        ground = _smooth_noise(rng, (H - horizon, W))
        rgb[horizon:] = np.array([95, 110, 70]) + 25 * ground[..., None]
        th[horizon:] = 120 + 10 * ground

        def box(x0, y0, x1, y1, colour, temp):
            cv2.rectangle(rgb, (x0, y0), (x1, y1), colour, -1)
            cv2.rectangle(th, (x0, y0), (x1, y1), float(temp), -1)

        # buildings with windows along the horizon
        f = min(w / 640, h / 512)  # scene scale for small frames
        x = int(rng.uniform(0, 40 * f))
        while x < W - 40 * f:
            bw, bh = int(rng.uniform(60, 150) * f), int(rng.uniform(0.1, 0.35) * h)
            shade = rng.uniform(90, 200)
            temp = rng.uniform(100, 170)
            box(x, horizon - bh, x + bw, horizon + 6, (shade, shade * 0.95, shade * 0.9), temp)
            for wy in range(horizon - bh + int(10 * f), horizon - int(10 * f), max(int(22 * f), 4)):
                for wx in range(x + int(8 * f), x + bw - int(12 * f), max(int(20 * f), 4)):
                    if rng.random() < 0.7:
                        lit = rng.random() < 0.3
                        box(wx, wy, wx + max(int(9 * f), 1), wy + max(int(12 * f), 1), (230, 220, 150) if lit else (50, 60, 75),
                            temp + (25 if lit else -18))
            x += bw + int(rng.uniform(5, 40) * f) + 1
        # storage tanks, pipes, poles, trees in the foreground
        for _ in range(int(rng.integers(2, 4))):
            cx, cy = int(rng.uniform(0.1, 0.9) * W), int(horizon + rng.uniform(0.15, 0.45) * (H - horizon))
            rx, ry = int(rng.uniform(35, 70) * f), int(rng.uniform(45, 90) * f)
            grey = rng.uniform(170, 235)
            cv2.ellipse(rgb, (cx, cy), (rx, ry), 0, 0, 360, (grey, grey, grey), -1)
            cv2.ellipse(th, (cx, cy), (rx, ry), 0, 0, 360, float(rng.uniform(60, 100)), -1)
            cv2.ellipse(rgb, (cx, cy), (rx, ry), 0, 0, 360, (60, 60, 60), 3)
            cv2.ellipse(th, (cx, cy), (rx, ry), 0, 0, 360, 150.0, 3)
        for _ in range(int(rng.integers(3, 6))):
            y = int(horizon + rng.uniform(0.1, 0.9) * (H - horizon))
            x0, x1 = sorted(rng.uniform(0, W, 2).astype(int))
            thick = max(int(rng.integers(6, 16) * f), 2)
            cv2.line(rgb, (x0, y), (x1, y), (150, 40, 30), thick)
            cv2.line(th, (x0, y), (x1, y), float(rng.uniform(160, 210)), thick)
        for _ in range(int(rng.integers(4, 8))):
            x0 = int(rng.uniform(0, W))
            top = horizon - int(rng.uniform(40, 120) * f)
            cv2.line(rgb, (x0, top), (x0, horizon + int(30 * f)), (70, 70, 70), max(int(5 * f), 1))
            cv2.line(th, (x0, top), (x0, horizon + int(30 * f)), 95.0, max(int(5 * f), 1))
        for _ in range(int(rng.integers(3, 7))):
            cx, cy = int(rng.uniform(0, W)), int(horizon - rng.uniform(0, 40) * f)
            r = int(rng.uniform(20, 45) * f)
            cv2.circle(rgb, (cx, cy), r, (40, 90, 35), -1)
            cv2.circle(th, (cx, cy), r, float(rng.uniform(85, 105)), -1)
        rgb += 8 * _smooth_noise(rng, (H, W), scales=(8, 2), weights=(1.0, 1.0))[..., None]
        th += 3 * _smooth_noise(rng, (H, W), scales=(8, 3), weights=(1.0, 0.5))
        return np.clip(rgb, 0, 255).astype(np.float32), th

    # -- time ------------------------------------------------------------------------------------
    @property
    def leak_start_rgb_s(self) -> float:
        """RGB (world) time at which the leak starts."""
        return self.leak_start_s + self.offset_s

    def _displacement(self, t_world) -> np.ndarray:
        """Integral of the veering wind from 0 to t (px), shape (..., 2); tabulated once per length."""
        t = np.asarray(t_world, np.float64)
        t_max = float(np.max(t)) if t.size else 0.0
        if getattr(self, "_wind_table", None) is None or self._wind_table[0][-1] < t_max:
            amp, period, phase = self._veer
            grid = np.arange(0, max(t_max, 0) + 30.0, self._dt)
            # wind(t) = R(theta(t)) wind0 with theta = amp * sin(2 pi t / P + phase), integrated numerically
            theta = amp * np.sin(2 * np.pi * grid / period + phase)
            wx, wy = self._wind0
            vx = wx * np.cos(theta) - wy * np.sin(theta)
            vy = wx * np.sin(theta) + wy * np.cos(theta)
            cx = np.concatenate([[0], np.cumsum(vx[:-1]) * self._dt])
            cy = np.concatenate([[0], np.cumsum(vy[:-1]) * self._dt])
            self._wind_table = (grid, cx, cy)
        grid, cx, cy = self._wind_table
        return np.stack([np.interp(t, grid, cx), np.interp(t, grid, cy)], axis=-1)

    def _puffs_until(self, t_world: float) -> _Puffs:
        rate = 14.0  # puffs per second
        start = self.leak_start_rgb_s
        need = int(np.ceil(max(t_world - start, 0) * rate)) + 1
        if self._puffs is None or len(self._puffs.birth) < need:
            n = max(need, 64)
            rng = np.random.default_rng(self._rng_seed + 1)
            births = start + np.arange(n) / rate + rng.uniform(0, 0.5 / rate, n)
            self._puffs = _Puffs(birth=births, jitter=rng.standard_normal((n, 2)) * 6.0,
                                 strength=rng.uniform(0.6, 1.0, n))
        return self._puffs

    def concentration(self, t_world: float) -> np.ndarray:
        """Gas concentration field (H×W float32, >= 0) in thermal pixel coordinates at world time."""
        w, h = self.size
        qw, qh = w // _QUARTER, h // _QUARTER
        if t_world < self.leak_start_rgb_s:
            return np.zeros((h, w), np.float32)
        puffs = self._puffs_until(t_world)
        alive = (puffs.birth <= t_world) & (puffs.birth > t_world - 9.0)
        birth, jitter, strength = puffs.birth[alive], puffs.jitter[alive], puffs.strength[alive]
        if birth.size == 0:
            return np.zeros((h, w), np.float32)
        age = t_world - birth
        pos = (np.array(self.source_xy) + self._displacement(np.full_like(birth, t_world))
               - self._displacement(birth) + jitter * np.sqrt(age)[:, None]) / _QUARTER
        radius = (3.0 + 9.0 * age) / _QUARTER + 0.5
        amp = strength * np.exp(-age / 3.0) * np.minimum(1.0, age / 0.3 + 0.2)
        ys, xs = np.mgrid[0:qh, 0:qw].astype(np.float32)
        field_q = np.zeros((qh, qw), np.float32)
        for (px, py), r, a in zip(pos, radius, amp):
            x0, x1 = int(max(px - 3 * r, 0)), int(min(px + 3 * r + 1, qw))
            y0, y1 = int(max(py - 3 * r, 0)), int(min(py + 3 * r + 1, qh))
            if x0 >= x1 or y0 >= y1:
                continue
            d2 = (xs[y0:y1, x0:x1] - px) ** 2 + (ys[y0:y1, x0:x1] - py) ** 2
            field_q[y0:y1, x0:x1] += np.float32(a) * np.exp(-d2 / np.float32(2 * r * r))
        # turbulence: a texture advected with the wind
        shift = self._displacement(np.array(t_world)) / _QUARTER
        tq = self._turbulence
        oy = int(np.floor(shift[1])) % (tq.shape[0] - qh)
        ox = int(np.floor(shift[0])) % (tq.shape[1] - qw)
        field_q *= np.clip(tq[oy:oy + qh, ox:ox + qw], 0.1, None)
        return cv2.resize(field_q, (w, h), interpolation=cv2.INTER_LINEAR)

    def _person_polygon(self, t_world: float):
        """Outline of the walking person in RGB pixel coordinates, or None when out of view."""
        if not self.distractors:
            return None
        w, h = self.size
        phase, ground = self._person
        period = 6.0
        u = ((t_world / period + phase) % 1.0)
        x = -0.2 * w + 1.4 * w * (u + 0.08 * np.sin(2 * np.pi * 2 * u))  # walks with varying speed
        ph = 0.22 * h
        pw = 0.06 * w
        body = cv2.ellipse2Poly((int(x), int(ground - ph / 2)), (int(pw / 2), int(ph / 2)), 0, 0, 360, 10)
        return body.astype(np.float64)

    def _lamp_on(self, t_world: float) -> bool:
        if not self.sync_lamp:
            return False
        import bisect

        return bisect.bisect_right(self.lamp_switches_s, t_world - self.offset_s) % 2 == 1

    def _spray_region(self, t_world: float):
        """Water-spray streaks that flutter continuously (each at its own, unrelated frequency), so the
        spray moves like real spray and never forms a periodic signal a sync estimate could lock onto."""
        if not self.spray:
            return None
        w, h = self.size
        rng = np.random.default_rng(self._rng_seed + 7)
        n = 40
        y0 = rng.uniform(0.4, 0.9, n) * h
        dx0, dy0 = rng.uniform(-60, 60, n), rng.uniform(40, 120, n)
        freq = rng.uniform(0.35, 2.3, (n, 3))  # Hz: incommensurate per streak and per coordinate
        phase = rng.uniform(0, 2 * np.pi, (n, 3))
        wobble = np.sin(2 * np.pi * freq * t_world + phase)
        field_ = np.zeros((h, w), np.float32)
        x0 = int(0.75 * w)
        for k in range(n):
            y = int(y0[k] + 0.04 * h * wobble[k, 0])
            end = (x0 + int(dx0[k] + 25 * wobble[k, 1]), y - int(dy0[k] * (1 + 0.3 * wobble[k, 2])))
            cv2.line(field_, (x0, y), end, 1.0, 2)
        return cv2.GaussianBlur(field_, (0, 0), 3.0)

    # -- frames ----------------------------------------------------------------------------------
    def rgb(self, t_rgb: float) -> np.ndarray:
        """RGB frame (H×W×3 uint8) at RGB time ``t_rgb``. Gas is invisible here."""
        frame = self._rgb_bg.copy()
        person = self._person_polygon(t_rgb)
        if person is not None:
            cv2.fillPoly(frame, [np.round(person).astype(np.int32)], (200, 60, 40))
        spray = self._spray_region(t_rgb)
        if spray is not None:
            frame += 180 * spray[..., None] * (1 - frame / 255)
        if self._lamp_on(t_rgb):
            cv2.fillPoly(frame, [np.round(self._lamp_rgb).astype(np.int32)], (255, 250, 220))
        rng = np.random.default_rng((self.seed, int(round(t_rgb * 1000)) % 2**32, 1))
        frame += rng.normal(0, 2.0, frame.shape[:2]).astype(np.float32)[..., None]
        return np.clip(np.rint(frame), 0, 255).astype(np.uint8)

    def thermal(self, t_thermal: float) -> tuple[np.ndarray, np.ndarray]:
        """Thermal frame (H×W uint8) and exact gas mask (H×W bool) at thermal time ``t_thermal``."""
        t_world = t_thermal + self.offset_s
        frame = self._thermal_bg.copy()
        person = self._person_polygon(t_world)
        if person is not None:
            pts = cv2.perspectiveTransform(person[None].astype(np.float64), np.linalg.inv(self.homography))[0]
            cv2.fillPoly(frame, [np.round(pts).astype(np.int32)], 215.0)
        spray = self._spray_region(t_world)
        if spray is not None:
            sp = cv2.warpPerspective(spray, self.homography, self.size, flags=cv2.WARP_INVERSE_MAP)
            frame -= 50 * sp
        if self._lamp_on(t_world):
            pts = cv2.perspectiveTransform(self._lamp_rgb[None], np.linalg.inv(self.homography))[0]
            cv2.fillPoly(frame, [np.round(pts).astype(np.int32)], 245.0)
        plume = self.contrast * self.concentration(t_world)
        frame += -plume if self.polarity == "absorbing" else plume
        amp, period, phase = self._drift
        frame += amp * np.sin(2 * np.pi * t_world / period + phase)
        rng = np.random.default_rng((self.seed, int(round(t_thermal * 1000)) % 2**32, 2))
        frame += rng.normal(0, self.noise_sigma, frame.shape).astype(np.float32)
        mask = plume >= self.mask_threshold_dn
        return np.clip(np.rint(frame), 0, 255).astype(np.uint8), mask

    def truth(self, seconds: float) -> dict:
        """JSON-ready description of the recording's ground truth (see :func:`write_recording`)."""
        n_th = int(np.floor(seconds * self.thermal_fps))
        n_rgb = int(np.floor((seconds + self.offset_s) * self.rgb_fps))
        return {
            "generator": f"gasdb-tools {__version__} synth",
            "seed": self.seed,
            "size": list(self.size),
            "homography_thermal_to_rgb": self.homography.tolist(),
            "offset_s": self.offset_s,
            "offset_convention": "t_rgb = t_thermal + offset_s",
            "rgb_fps": self.rgb_fps,
            "thermal_fps": self.thermal_fps,
            "rgb_frames": n_rgb,
            "thermal_frames": n_th,
            "leak_start_s": self.leak_start_s,
            "leak_start_rgb_s": self.leak_start_rgb_s,
            "source_xy_thermal": list(self.source_xy),
            "contrast_dn": self.contrast,
            "polarity": self.polarity,
            "mask_threshold_dn": self.mask_threshold_dn,
            "noise_sigma_dn": self.noise_sigma,
            "distractors": (["person"] if self.distractors else []) + (["spray"] if self.spray else []),
            "sync_lamp_switches_thermal_s": [t for t in self.lamp_switches_s if t <= seconds] if self.sync_lamp else [],
            "masks": "masks/{thermal_frame:06d}.png",
            "mask_values": {"0": "background", "1": "gas"},
        }


def write_recording(out_dir, rig: SynthRig, seconds: float = 4.0) -> dict:
    """Write ``rgb.mp4``, ``thermal.mp4`` and ``truth/`` (masks + ``truth.json``) for one rig.

    Thermal frame ``k`` is at thermal time ``k / thermal_fps``; its mask is
    ``truth/masks/{k:06d}.png`` (0 background, 1 gas). Returns the truth dict.
    """
    out = Path(out_dir)
    truth = rig.truth(seconds)
    masks_dir = out / "truth" / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)

    def thermal_frames():
        for k in range(truth["thermal_frames"]):
            frame, mask = rig.thermal(k / rig.thermal_fps)
            write_image(masks_dir / f"{k:06d}.png", mask.astype(np.uint8), compression=1)
            yield frame

    write_video(out / "thermal.mp4", thermal_frames(), fps=rig.thermal_fps)
    write_video(out / "rgb.mp4", (rig.rgb(j / rig.rgb_fps) for j in range(truth["rgb_frames"])), fps=rig.rgb_fps)
    write_json(out / "truth" / "truth.json", truth)
    return truth


#: (rgb_fps, thermal_fps) used in turn by :func:`synthesize`: always different rates.
_RATES = ((30.0, 25.0), (25.0, 30.0), (30.0, 15.0))


def synthesize(out, *, recordings: int = 2, seconds: float = 4.0, seed: int = 0, size=(640, 512),
               contrast: float = 20.0, scenes=None) -> list[dict]:
    """Write ``recordings`` simulated recordings of one fixed rig into ``out/synthNN/``.

    Returns one dict per recording with ``id``, ``dir``, ``scene`` and the truth. All recordings
    share the rig's homography (drawn from ``seed``), as the takes of a fixed two-camera rig do;
    recording ``i`` has its own scene and leak from seed ``seed + i``, cycles through frame-rate
    pairs that always differ between the streams, and alternates plume polarity. A listing is
    written to ``out/recordings.json``.
    """
    if recordings < 1:
        raise ValueError(f"recordings must be >= 1, got {recordings}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    out = Path(out)
    scenes = list(scenes) if scenes else [s for s in SCENES if s != "other"]
    listing = []
    w = size[0]
    rig_h = random_homography(np.random.default_rng(seed), tuple(size), max_shift=30.0 * w / 640)
    for i in progress(range(recordings), total=recordings, desc="synth", unit="rec"):
        rgb_fps, thermal_fps = _RATES[i % len(_RATES)]
        rig = SynthRig(seed=seed + i, size=tuple(size), rgb_fps=rgb_fps, thermal_fps=thermal_fps,
                       contrast=contrast, rig_homography=rig_h, polarity="absorbing" if i % 2 == 0 else "emitting", spray=(i % 3 == 2))
        rec_id = f"synth{i + 1:02d}"
        truth = write_recording(out / rec_id, rig, seconds)
        listing.append({"id": rec_id, "dir": rec_id, "scene": scenes[i % len(scenes)], "truth": truth})
    write_json(out / "recordings.json", [{k: v for k, v in r.items() if k != "truth"} for r in listing])
    return listing


def render_visible_smoke(size=(160, 128), *, seed: int = 0, opacity: float = 0.85,
                         mask_alpha: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image of a visible smoke plume over an outdoor-like background, with its exact mask.

    For smoke-segmentation pretraining tests (the benchmark harness's smoke -> gas transfer): a
    plume of Gaussian puffs rises from a random source along a drifting path, widening with
    height and broken up by fractal noise; it is composited over a sky/ground background as grey-
    white smoke with opacity ``alpha``. The mask is ``alpha >= mask_alpha``.

    Parameters
    ----------
    size : (width, height)
    seed : int
        Everything random derives from it.
    opacity : float
        Peak smoke opacity in (0, 1].
    mask_alpha : float
        Opacity from which a pixel is smoke in the mask.

    Returns
    -------
    rgb : (H, W, 3) uint8
    mask : (H, W) bool

    Examples
    --------
    >>> rgb, mask = render_visible_smoke((96, 64), seed=3)
    >>> rgb.shape, mask.shape, bool(mask.any()), bool((~mask).any())
    ((64, 96, 3), (64, 96), True, True)
    """
    w, h = size
    if w < 16 or h < 16:
        raise ValueError(f"size must be at least 16x16, got {size}")
    if not 0 < opacity <= 1 or not 0 < mask_alpha < opacity:
        raise ValueError(f"need 0 < mask_alpha < opacity <= 1, got opacity={opacity}, mask_alpha={mask_alpha}")
    rng = np.random.default_rng(seed)
    scale = max(1, min(w, h) // 32)
    horizon = int(rng.uniform(0.3, 0.5) * h)
    bg = np.empty((h, w, 3), np.float32)
    sky = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    bg[:horizon] = np.array([110, 150, 205], np.float32) + sky * np.array([60, 50, 30], np.float32)
    bg[horizon:] = np.array([90, 105, 65], np.float32)
    bg += 18 * _smooth_noise(rng, (h, w), scales=(4 * scale, scale), weights=(1.0, 0.5))[..., None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    density = np.zeros((h, w), np.float32)
    x, y = rng.uniform(0.25, 0.75) * w, rng.uniform(0.75, 0.92) * h
    drift = rng.uniform(-0.6, 0.6)
    steps = 24
    for i in range(steps):
        r = (0.03 + 0.12 * i / steps) * min(w, h) + 1.0
        density += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / np.float32(2 * r * r))
        y -= 0.7 * h / steps
        x += drift * r * 0.5 + rng.normal(0, 0.3 * r)
    turbulence = np.clip(1.0 + 0.6 * _smooth_noise(rng, (h, w), scales=(2 * scale, scale), weights=(1.0, 0.6)), 0, None)
    alpha = np.clip(opacity * density / max(float(density.max()), 1e-6) * 1.6 * turbulence, 0.0, opacity)
    colour = np.float32(rng.uniform(195, 235))
    rgb = (1 - alpha[..., None]) * bg + alpha[..., None] * colour
    rgb += rng.normal(0, 2.0, (h, w, 1)).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), alpha >= mask_alpha
