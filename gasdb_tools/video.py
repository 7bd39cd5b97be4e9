"""The one video layer: probe, decode with timestamps, and encode (PyAV).

Frames are identified by their presentation time in seconds (``pts * time_base``, relative to
the stream's own start), never by their index: real files have variable frame rates, non-zero
start times, dropped frames and wrong header frame counts (see ``docs``/methods §D).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from gasdb_tools.errors import VideoError

__all__ = ["VideoInfo", "probe", "write_video"]


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


def write_video(path, frames: Iterable[np.ndarray], *, fps: float, codec: str = "libx264",
                crf: int = 12, gop: int = 50) -> int:
    """Encode frames (H×W uint8 gray or H×W×3 uint8 RGB) to a video file with exact CFR timestamps.

    Gray frames are encoded as the Y plane of ``yuv420p`` (H.264) or as ``gray`` (FFV1), which
    decoders return unchanged up to the codec's loss. Returns the number of frames written.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    n = 0
    with av.open(str(tmp), mode="w") as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(frame)
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                if codec == "ffv1":
                    stream.pix_fmt = "gray" if frame.ndim == 2 else "bgr0"
                else:
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.gop_size = gop
                    if codec == "libx264":
                        stream.options = {"crf": str(crf), "preset": "veryfast"}
            fmt = "gray" if frame.ndim == 2 else "rgb24"
            vf = av.VideoFrame.from_ndarray(frame, format=fmt)
            vf.pts = n
            for packet in stream.encode(vf):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError("write_video got no frames")
    tmp.replace(path)
    return n
