"""The one video layer: probe, decode with timestamps, motion energy, and encode (PyAV).

Frames are identified by their presentation time in seconds (``pts * time_base``, relative to
the stream's own start), never by their index: real files have variable frame rates, non-zero
start times, dropped frames, wrong header frame counts and out-of-order AVI timestamps
(methods §D.3). Decoding is sequential (methods §D.2: seeking only pays for intra-only codecs or
very large steps) and the timestamps a decoder yields are put back in order with a small
reorder window.

Pixel conventions: colour frames are ``H×W×3`` RGB ``uint8`` (``uint16`` for >8-bit sources
when asked); gray frames are ``H×W`` and keep 16 bits for high-bit-depth sources (gray16le
FFV1 thermal, radiometric cameras). The gray path of 8-bit YUV sources reads the Y plane
directly (methods §D.1: about 4× faster than a colour conversion) and expands limited-range
luma to full range exactly as swscale does.
"""

from __future__ import annotations

import heapq
import math
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

import cv2
import numpy as np

from gasdb_tools.errors import VideoError

if TYPE_CHECKING:
    import av

__all__ = [
    "VideoInfo",
    "MotionEnergy",
    "probe",
    "iter_av_frames",
    "frame_to_array",
    "iter_frames",
    "count_frames",
    "motion_energy",
    "MotionMeter",
    "write_video",
]

#: 8-bit pixel formats whose first plane is the luma (Y) plane, one byte per pixel.
_Y_FIRST_8BIT = frozenset({
    "gray", "yuv420p", "yuv422p", "yuv444p", "yuv440p", "yuv411p", "yuv410p", "yuva420p", "yuva422p",
    "yuva444p", "yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p", "nv12", "nv21", "nv16", "nv24",
})
#: Limited (MPEG, 16-235) to full (0-255) luma, rounded like swscale's gray conversion.
_LIMITED_TO_FULL = np.clip(np.rint((np.arange(256) - 16) * (255.0 / 219.0)), 0, 255).astype(np.uint8)
_COLOR_RANGE_JPEG = 2  # AVCOL_RANGE_JPEG (full range)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video stream (header values; see :func:`probe`)."""

    path: str
    width: int
    height: int
    fps: float
    frames_declared: int
    duration_s: float | None
    codec: str
    pix_fmt: str | None


class MotionEnergy(NamedTuple):
    """Per-frame motion energy of a stream (see :func:`motion_energy`).

    Attributes
    ----------
    frame_times : (N,) float64 ndarray
        Time of every decoded frame (s, from the stream start), non-decreasing.
    times : (M,) float64 ndarray
        Mid-point times of the frame intervals that carry an energy sample (M <= N - 1).
    energy : (M,) float64 ndarray
        Mean absolute luma change per second between consecutive frames (DN/s).
    thumbnails : (K, h, w) uint16 ndarray or None
        The downscaled luma of the first K frames (``frame_times[:K]``) when asked for
        (``keep_seconds``): the evidence of :func:`gasdb_tools.sync.estimate_offset_colocation`.
    """

    frame_times: np.ndarray
    times: np.ndarray
    energy: np.ndarray
    thumbnails: np.ndarray | None = None


def _open(path):
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError("video file not found", file=path, fix="check the path")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises many error types (InvalidDataError, ...)
        raise VideoError(f"cannot open the video ({type(exc).__name__}: {exc})", file=path,
                         fix="check that the file is a complete video (e.g. play it with ffplay)") from None
    if not container.streams.video:
        container.close()
        raise VideoError("the file has no video stream", file=path, fix="pass the video file of that camera")
    return container


def probe(path, *, decode_first: bool = True) -> VideoInfo:
    """Open a video, read its header and (by default) decode its first frame.

    Raises
    ------
    VideoError
        Missing file, not a video, no video stream, or no decodable frame.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if duration is None and container.duration:
            duration = container.duration / 1_000_000
        info = VideoInfo(path=str(path), width=int(ctx.width), height=int(ctx.height),
                         fps=float(rate) if rate else 0.0, frames_declared=int(stream.frames or 0),
                         duration_s=duration, codec=ctx.name, pix_fmt=ctx.pix_fmt)
        if decode_first:
            try:
                next(container.decode(stream))
            except StopIteration:
                raise VideoError("the video stream has no decodable frame", file=path,
                                 fix="re-export the recording; the file may be truncated") from None
            except VideoError:
                raise
            except Exception as exc:
                raise VideoError(f"cannot decode the first frame ({type(exc).__name__}: {exc}; codec {ctx.name})",
                                 file=path, fix="install an FFmpeg build with this codec or re-encode the file") from None
        return info
    finally:
        container.close()


# -- decoding ------------------------------------------------------------------------------------
def _decoded(container, stream, path) -> Iterator:
    """``container.decode(stream)``, with decoder failures turned into :class:`VideoError`."""
    frames = container.decode(stream)
    n = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # av.error.InvalidDataError, EOFError, ...
            raise VideoError(f"decoding failed after {n} frames ({type(exc).__name__}: {exc})", file=path,
                             fix="the file is damaged or truncated: re-export it, or cut it before the damage "
                                 "(ffmpeg -i in -c copy -t SECONDS out)") from None
        n += 1
        yield frame


def _header_duration(container, stream) -> float | None:
    """Duration the header promises (s), or None."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def iter_av_frames(path, *, reorder: int = 16, threads: bool | int = True,
                   check_end: bool = True) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """Decode a video sequentially, yielding ``(t, av.VideoFrame)`` in presentation order.

    ``t`` is the presentation time in seconds relative to the stream's start time (the first
    frame's time when the container has none). Timestamps are put back in order with a heap of
    ``reorder`` frames (packed B-frames in AVI give locally non-monotonic pts, methods §D.3), so
    the yielded times never decrease. A frame without pts continues from the previous one at the
    stream's nominal rate.

    Parameters
    ----------
    path : str or os.PathLike
        The video file.
    reorder : int
        Size of the reorder window, in frames (>= 1).
    threads : bool or int
        FFmpeg's decoding threads (frame/slice threads; the frames are the same whatever the
        number). ``True``: as many as FFmpeg picks (about one per core); ``False`` or ``1``: none
        besides the calling thread; ``n``: at most ``n`` (a caller's share of the cores, see
        :attr:`gasdb_tools.stages.Sink.threads`).
    check_end : bool
        After the last frame, compare where the stream ended with the duration in the header:
        FFmpeg stops silently at a cut or damaged tail (MKV, AVI), so a stream that ends more than
        ``max(2 frame periods, 1 %)`` before its header's duration raises instead of passing for a
        short recording. (Header *frame counts* are not trusted: they are often wrong, methods §D.3.)

    Yields
    ------
    t : float
        Seconds from the stream start.
    frame : av.VideoFrame
        The decoded frame (convert with :func:`frame_to_array`, possibly in another thread).

    Raises
    ------
    VideoError
        The file cannot be opened, decoding fails part-way (damaged data), the stream ends well
        before its header's duration (``check_end``), timestamps are out of order by more than
        ``reorder`` frames, or the stream has no decodable frame.
    """
    if not isinstance(reorder, int) or reorder < 1:
        raise ValueError(f"reorder must be an int >= 1, got {reorder!r}")
    if not isinstance(threads, bool) and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be True, False or an int >= 1, got {threads!r}")
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if threads is True or threads > 1:
            stream.thread_type = "AUTO"
            if threads is not True:
                stream.codec_context.thread_count = threads
        else:
            stream.codec_context.thread_count = 1
        tb = stream.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None and tb else None
        rate = stream.average_rate or stream.guessed_rate
        step = 1.0 / float(rate) if rate else None
        ordered = _TimeOrder(reorder, path)
        for t, frame in ordered(_timed(_decoded(container, stream, path), start, step, path)):
            if start is None:
                start = t
            yield t - start, frame
        if ordered.count == 0:
            raise VideoError("the video stream has no decodable frame", file=path,
                             fix="re-export the recording; the file may be empty or truncated")
        declared = _header_duration(container, stream) if check_end else None
        if declared:
            # lenient: some demuxers give the end time (MKV), others the length from the start
            period = max(step or 0.0, ordered.last_step)  # the last frame lasts about one frame interval
            end = max(ordered.last, ordered.last - start) + period
            if end < declared - max(2 * period, 0.01 * declared):
                raise VideoError(f"the stream ends at {end:.2f} s but its header says {declared:.2f} s: the file is "
                                 f"truncated or damaged ({ordered.count} frames decoded)", file=path,
                                 fix="re-export the recording; to keep the frames before the damage, remux it "
                                     "first: ffmpeg -i in -c copy fixed.mkv")
    finally:
        container.close()


def _timed(frames, start: float | None, step: float | None, path) -> Iterator[tuple[float, object]]:
    """``(pts time, frame)``; a frame without pts continues from the previous one at ``step``."""
    prev = None
    for n, frame in enumerate(frames):
        t = frame.time
        if t is None:
            if prev is None:
                t = start if start is not None else 0.0
            elif step is not None:
                t = prev + step
            else:
                raise VideoError(f"frame {n} has no timestamp and the stream declares no frame rate", file=path,
                                 fix="remux with timestamps: ffmpeg -fflags +genpts -i in -c copy out.mkv")
        prev = t
        yield float(t), frame


class _TimeOrder:
    """Put ``(t, item)`` pairs back in time order through a heap of ``window`` items.

    Decoders hand frames over in presentation order except for files with broken timestamps
    (packed B-frames in AVI: Δt down to -17 ms, methods §D.3). A frame that arrives after a later
    one has already left the window cannot be placed and raises :class:`VideoError`. After the
    iteration, ``count``, ``last`` (the last time) and ``last_step`` (the last interval) are set.
    """

    def __init__(self, window: int, path=None):
        self.window = window
        self.path = path
        self.count = 0
        self.last = -math.inf
        self.last_step = 0.0

    def __call__(self, items):
        heap: list = []
        for t, item in items:
            if t < self.last:
                raise VideoError(f"timestamps out of order by more than {self.window} frames ({t:.3f} s arrives "
                                 f"after {self.last:.3f} s)", file=self.path,
                                 fix="remux with fresh timestamps: ffmpeg -fflags +genpts -i in -c copy out.mkv")
            heapq.heappush(heap, (t, self.count, item))
            self.count += 1
            if len(heap) > self.window:
                yield self._pop(heap)
        while heap:
            yield self._pop(heap)

    def _pop(self, heap):
        t, _, item = heapq.heappop(heap)
        if self.last > -math.inf:
            self.last_step = t - self.last
        self.last = t
        return t, item


def _bit_depth(frame) -> int:
    return max(c.bits for c in frame.format.components)


def _y_plane(frame) -> np.ndarray:
    """The luma plane of an 8-bit Y-first frame as an ``H×W`` uint8 view (no copy)."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width]


def _full_range(frame) -> bool:
    name = frame.format.name
    return name == "gray" or name.startswith("yuvj") or int(frame.color_range) == _COLOR_RANGE_JPEG


def frame_to_array(frame, *, gray: bool = False, keep_16bit: bool = True, channel_order: str = "rgb") -> np.ndarray:
    """Convert a decoded PyAV frame to a numpy image.

    Parameters
    ----------
    frame : av.VideoFrame
        A frame from :func:`iter_av_frames`.
    gray : bool
        ``True``: ``H×W`` luma. For 8-bit YUV/gray sources this is the Y plane itself (limited
        range expanded to 0-255, as swscale's gray conversion does), the fast path of methods §D.1.
        ``False``: ``H×W×3`` RGB via swscale (honouring the frame's colour space and range).
    channel_order : {'rgb', 'bgr'}
        Colour channel order; ``bgr`` (OpenCV's, from the same swscale conversion) saves the
        PNG writer a conversion pass (:func:`gasdb_tools.imaging.encode_png` ``channel_order``).
    keep_16bit : bool
        For sources deeper than 8 bits (e.g. gray16le FFV1 thermal): ``True`` returns ``uint16``
        (gray16le samples unchanged; other depths scaled to 16 bits by swscale), ``False`` 8 bits.

    Returns
    -------
    ndarray
        ``uint8`` or ``uint16``, ``H×W`` (gray) or ``H×W×3`` (RGB), C-contiguous and owning its data.
    """
    name = frame.format.name
    deep = _bit_depth(frame) > 8
    if gray:
        if deep:
            if keep_16bit:
                return np.ascontiguousarray(frame.to_ndarray(format="gray16le"))
            return np.ascontiguousarray(frame.to_ndarray(format="gray"))
        if name in _Y_FIRST_8BIT:
            y = _y_plane(frame)
            return y.copy() if _full_range(frame) else cv2.LUT(y, _LIMITED_TO_FULL)
        return np.ascontiguousarray(frame.to_ndarray(format="gray"))
    kwargs = {}
    if int(frame.color_range) == _COLOR_RANGE_JPEG and not name.startswith("yuvj"):
        kwargs["src_color_range"] = _COLOR_RANGE_JPEG
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    fmt = ("rgb48le" if deep and keep_16bit else "rgb24").replace("rgb", channel_order)
    return np.ascontiguousarray(frame.to_ndarray(format=fmt, **kwargs))


def iter_frames(path, *, gray: bool = False, keep_16bit: bool = True,
                reorder: int = 16) -> Iterator[tuple[float, np.ndarray]]:
    """Decode a video sequentially, yielding ``(t_seconds, image)`` in time order.

    See :func:`iter_av_frames` for the timestamps and :func:`frame_to_array` for the pixels.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = tempfile.mkdtemp() + "/ramp.mp4"
    >>> _ = write_video(path, [np.full((64, 64), 40 * k, np.uint8) for k in range(5)], fps=25)
    >>> [(round(t, 2), int(img.mean())) for t, img in iter_frames(path, gray=True)]
    [(0.0, 0), (0.04, 40), (0.08, 80), (0.12, 120), (0.16, 160)]
    """
    for t, frame in iter_av_frames(path, reorder=reorder):
        yield t, frame_to_array(frame, gray=gray, keep_16bit=keep_16bit)


def count_frames(path) -> int:
    """Number of frames that actually decode (header counts are often wrong, methods §D.3)."""
    return sum(1 for _ in iter_av_frames(path))


#: 8-bit planar YUV formats whose planes 1 and 2 are the chroma planes (U, V).
_PLANAR_YUV_8BIT = frozenset(n for n in _Y_FIRST_8BIT if n.startswith(("yuv", "yuvj")))


def _planes_small(frame, size: tuple[int, int], chroma: bool) -> list[np.ndarray]:
    """Luma (and, for planar YUV, the two chroma planes) downscaled to ``size``, float32."""
    if _bit_depth(frame) <= 8 and frame.format.name in _Y_FIRST_8BIT:
        planes = [_y_plane(frame)]
        if chroma and frame.format.name in _PLANAR_YUV_8BIT:
            for plane in frame.planes[1:3]:
                h = plane.buffer_size // plane.line_size
                w = plane.width
                planes.append(np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w])
    else:
        planes = [frame_to_array(frame, gray=True)]
    return [cv2.resize(p, size, interpolation=cv2.INTER_AREA).astype(np.float32) for p in planes]


def _change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute change between two small planes, ignoring a global level change.

    The median is ``np.median``'s, from one partition (without its per-call overhead, a third
    of this function's time on 80×64 planes)."""
    d = (b - a).reshape(-1)
    k = d.size // 2
    part = np.partition(d, (k - 1, k))
    med = part[k - 1:k + 1].mean() if d.size % 2 == 0 else part[k]
    d -= med
    return float(np.abs(d, out=d).mean())


def motion_energy(path, *, size: tuple[int, int] = (80, 64), chroma: bool = True,
                  max_seconds: float | None = None, keep_seconds: float = 0.0) -> MotionEnergy:
    """Decode a stream and measure how much its picture changes over time.

    For each pair of consecutive frames the energy is the mean absolute difference of the planes
    downscaled to ``size`` (INTER_AREA) after removing the difference's median (a global level
    change, such as thermal drift, gain control or a shutter event, is not motion), summed over
    the luma and, for planar YUV, the chroma planes (a red coat on green grass barely changes the
    luma), and divided by the time between the frames (a dropped frame is not a jump). It is
    placed at the interval's mid-point. Cross-correlating the energies of the two cameras of a rig
    gives their start offset (:func:`gasdb_tools.sync.estimate_offset`, methods §D.3).

    Parameters
    ----------
    path : str or os.PathLike
        The video file.
    size : (width, height)
        Working resolution; 80×64 is enough and runs at the Y-plane decode speed.
    chroma : bool
        Add the chroma planes' change for planar YUV sources.
    max_seconds : float, optional
        Stop after this many seconds of the stream (the whole stream when ``None``).
    keep_seconds : float
        Keep the downscaled luma of the frames in the stream's first ``keep_seconds`` (``thumbnails``).

    Returns
    -------
    MotionEnergy
        ``frame_times`` of every decoded frame, and ``times``/``energy`` per frame interval
        (intervals of zero length, i.e. repeated timestamps, carry no sample).
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
    meter = MotionMeter(size=size, chroma=chroma, keep_seconds=keep_seconds)
    frames = iter_av_frames(path)
    try:
        for t, frame in frames:
            if max_seconds is not None and t > max_seconds:
                break
            meter.add(t, frame)
    finally:
        frames.close()
    return meter.result()


class MotionMeter:
    """:func:`motion_energy` gathered one frame at a time, for a pass that decodes the stream anyway.

    ``add(t, frame)`` for every decoded frame in time order, then ``result()``: the same
    :class:`MotionEnergy` as :func:`motion_energy` on the same frames (same planes, same sums).
    Memory: two small planes plus three doubles per frame (24 bytes: 1.7 MB for 24 minutes at 25 fps),
    plus a 10 kB luma plane per frame of the first ``keep_seconds`` (250 kB a second at 25 fps).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = tempfile.mkdtemp() + "/ramp.mp4"
    >>> _ = write_video(path, [np.full((64, 64), 40 * k, np.uint8) for k in range(5)], fps=25)
    >>> meter = MotionMeter()
    >>> for t, frame in iter_av_frames(path):
    ...     meter.add(t, frame)
    >>> np.array_equal(meter.result().energy, motion_energy(path).energy)
    True
    """

    def __init__(self, *, size: tuple[int, int] = (80, 64), chroma: bool = True, keep_seconds: float = 0.0):
        self.size, self.chroma = tuple(size), chroma
        self.keep_seconds = float(keep_seconds)
        self.thumbnails: list[np.ndarray] = []
        self.frame_times = array("d")
        self.times = array("d")
        self.energy = array("d")
        self._prev = self._prev_t = None

    def add(self, t: float, frame) -> None:
        """Measure one decoded frame (``av.VideoFrame``) at time ``t`` (s)."""
        small = _planes_small(frame, self.size, self.chroma)
        if self.keep_seconds > 0 and len(self.thumbnails) == len(self.frame_times) \
                and t - (self.frame_times[0] if self.frame_times else t) <= self.keep_seconds:
            self.thumbnails.append(small[0].astype(np.uint16))  # area averages of 8/16-bit pixels: integers
        self.frame_times.append(t)
        prev, prev_t = self._prev, self._prev_t
        if prev is not None and t > prev_t and len(prev) == len(small):
            self.times.append(0.5 * (t + prev_t))
            self.energy.append(sum(_change(a, b) for a, b in zip(prev, small)) / (t - prev_t))
        self._prev, self._prev_t = small, t

    def result(self) -> MotionEnergy:
        thumbnails = np.stack(self.thumbnails) if self.thumbnails else None
        return MotionEnergy(np.array(self.frame_times, np.float64), np.array(self.times, np.float64),
                            np.array(self.energy, np.float64), thumbnails)


# -- encoding ------------------------------------------------------------------------------------
def write_video(path, frames: Iterable[np.ndarray], *, fps: float, codec: str = "libx264",
                crf: int = 12, gop: int = 50, times: Iterable[float] | None = None) -> int:
    """Encode frames to a video file; returns the number of frames written.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; the container follows the suffix (``.mp4``, ``.mkv``, ``.avi``). Written to a
        temporary name and renamed when complete.
    frames : iterable of ndarray
        ``H×W`` uint8 gray, ``H×W×3`` uint8 RGB, or ``H×W`` uint16 (needs ``codec="ffv1"``, stored
        as gray16le, lossless).
    fps : float
        Nominal frame rate. Frames get exact CFR timestamps ``k / fps`` unless ``times`` is given.
    codec : str
        ``libx264`` (gray is encoded as the Y plane of ``yuv420p``), ``ffv1`` (lossless: ``gray``,
        ``gray16le`` or ``bgr0``), ``mjpeg``, ``mpeg4``, ...
    crf, gop : int
        libx264 quality and keyframe interval.
    times : iterable of float, optional
        Presentation time of each frame in seconds (strictly increasing; stored with millisecond
        resolution). Makes variable-rate files, gaps (dropped frames) and non-zero start times.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    time_iter = iter(times) if times is not None else None
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    n = 0
    last_pts = None
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = None
            for frame in frames:
                frame = np.ascontiguousarray(frame)
                if frame.dtype == np.uint16 and (frame.ndim != 2 or codec != "ffv1"):
                    raise ValueError("uint16 frames must be H×W gray and need codec='ffv1' (lossless gray16le)")
                if frame.dtype not in (np.uint8, np.uint16):
                    raise TypeError(f"frames must be uint8 or uint16, got {frame.dtype}")
                if stream is None:
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    if time_iter is not None:
                        stream.time_base = Fraction(1, 1000)
                        stream.codec_context.time_base = Fraction(1, 1000)
                    if codec == "ffv1":
                        stream.pix_fmt = ("gray16le" if frame.dtype == np.uint16 else "gray") if frame.ndim == 2 \
                            else "bgr0"
                    else:
                        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
                        stream.codec_context.gop_size = gop
                        if codec == "libx264":
                            stream.options = {"crf": str(crf), "preset": "veryfast"}
                fmt = ("gray16le" if frame.dtype == np.uint16 else "gray") if frame.ndim == 2 else "rgb24"
                vf = av.VideoFrame.from_ndarray(frame, format=fmt)
                if time_iter is not None:
                    t = next(time_iter, None)
                    if t is None:
                        raise ValueError(f"times has fewer entries than frames ({n})")
                    pts = int(round(float(t) * 1000))
                    if last_pts is not None and pts <= last_pts:
                        raise ValueError(f"times must increase by >= 1 ms; got {t} after {last_pts / 1000}")
                    vf.pts, last_pts = pts, pts
                    vf.time_base = Fraction(1, 1000)
                else:
                    vf.pts = n
                for packet in stream.encode(vf):
                    container.mux(packet)
                n += 1
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError("write_video got no frames")
    tmp.replace(path)
    return n
