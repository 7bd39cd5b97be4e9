"""Gas-sensor streams recorded beside the cameras, and their readings attached to frame pairs.

Rigs increasingly log gas sensors (metal-oxide MQ sensors, PIDs, ...) next to the cameras. A
recording can carry such a stream (``gasdb add ... --sensors S.csv``): a CSV file with a header,
one row per reading,

* ``t`` -- seconds on the **thermal clock** (0 = the first thermal frame), increasing; a stream
  on another clock is shifted with ``sensor_offset_s`` (``t_thermal = t + sensor_offset_s``);
* one column per channel, named by the header (``MQ2``, ``MQ135``, ``CH4_ppm``, ...), numbers.

``extract`` attaches to each pair the reading nearest in time (:func:`nearest`), with ``|dt|``.
A pair whose nearest reading is farther than ``max_dt`` gets none (so a gap in the log never
passes off an old reading as current), and readings outside the video's time span are counted
and reported, not silently attached (:func:`attach_report`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gasdb_tools.errors import FormatError

__all__ = ["TIME_COLUMN", "SensorStream", "read_sensor_csv", "nearest", "attach_report", "default_max_dt",
           "pair_columns"]

#: The time column of a sensor CSV (seconds on the thermal clock).
TIME_COLUMN = "t"


@dataclass(frozen=True)
class SensorStream:
    """Readings of named channels: ``times`` (n,) seconds, ``values`` (n, channels) float64."""

    channels: tuple
    times: np.ndarray
    values: np.ndarray

    @property
    def period(self) -> float:
        """Median time between readings (inf for fewer than two)."""
        return float(np.median(np.diff(self.times))) if len(self.times) > 1 else math.inf


def read_sensor_csv(path, *, offset_s: float = 0.0) -> SensorStream:
    """Read and check a sensor CSV (see the module docstring).

    Raises
    ------
    FormatError
        Naming the file, the line and the column: no ``t`` column, no channel, a value that is not
        a finite number, times that do not increase, a channel name used twice, not UTF-8.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
    >>> _ = p.write_text("t,MQ2,MQ135\\n0.0,560,284\\n0.5,565,290\\n")
    >>> s = read_sensor_csv(p)
    >>> s.channels, s.times.tolist(), s.values[1].tolist()
    (('MQ2', 'MQ135'), [0.0, 0.5], [565.0, 290.0])
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise FormatError("sensor file not found", file=path, fix="check the path") from None
    except UnicodeDecodeError:
        raise FormatError("not UTF-8 text", file=path, fix="save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if TIME_COLUMN not in header:
        raise FormatError(f"no {TIME_COLUMN!r} column (seconds on the thermal clock)", file=path, field="line 1",
                          fix=f"name the time column {TIME_COLUMN!r}; the other columns are the channels")
    channels = tuple(h for h in header if h != TIME_COLUMN)
    if not channels or any(not c for c in channels):
        raise FormatError("every column but 't' must be a named channel", file=path, field="line 1",
                          fix="give each channel a name in the header")
    if len(set(channels)) != len(channels):
        raise FormatError("a channel name is used twice", file=path, field="line 1", fix="rename one of them")
    t_col = header.index(TIME_COLUMN)
    cols = [header.index(c) for c in channels]
    times, rows = [], []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not v.strip() for v in row):
            continue
        if len(row) != len(header):
            raise FormatError(f"{len(row)} fields, the header has {len(header)}", file=path, field=f"line {lineno}",
                              fix="repair the row")
        try:
            values = [float(row[t_col])] + [float(row[c]) for c in cols]
        except ValueError:
            bad = next(h for h, v in zip(header, row) if not _is_number(v))
            raise FormatError(f"{row[header.index(bad)]!r} is not a number", file=path,
                              field=f"line {lineno}, column {bad}", fix="write plain numbers (a dot as decimal point)"
                              ) from None
        if not all(math.isfinite(v) for v in values):
            raise FormatError("a value is not finite", file=path, field=f"line {lineno}", fix="remove or repair the row")
        if times and values[0] <= times[-1]:
            raise FormatError(f"time {values[0]} does not increase (previous {times[-1]})", file=path,
                              field=f"line {lineno}, column {TIME_COLUMN}", fix="sort the rows by time, drop repeats")
        times.append(values[0])
        rows.append(values[1:])
    if not times:
        raise FormatError("no readings", file=path, fix="the file holds only a header")
    return SensorStream(channels, np.asarray(times, np.float64) + float(offset_s),
                        np.asarray(rows, np.float64).reshape(len(rows), len(channels)))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def default_max_dt(stream: SensorStream) -> float:
    """The largest accepted ``|dt|``: one sensor period (a reading is current until the next one)."""
    return stream.period if math.isfinite(stream.period) else 1.0


def nearest(stream: SensorStream, times, *, max_dt: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of the reading nearest to each time (-1 when farther than ``max_dt``) and ``|dt|``.

    >>> s = SensorStream(("a",), np.array([0.0, 1.0, 2.0]), np.array([[1.0], [2.0], [3.0]]))
    >>> idx, dt = nearest(s, [0.2, 1.6, 9.0], max_dt=1.0)
    >>> idx.tolist(), dt.round(2).tolist()
    ([0, 2, -1], [0.2, 0.4, 7.0])
    """
    t = np.asarray(times, np.float64)
    max_dt = default_max_dt(stream) if max_dt is None else float(max_dt)
    right = np.clip(np.searchsorted(stream.times, t), 0, len(stream.times) - 1)
    left = np.clip(right - 1, 0, len(stream.times) - 1)
    pick = np.where(np.abs(stream.times[left] - t) <= np.abs(stream.times[right] - t), left, right)
    dt = np.abs(stream.times[pick] - t)
    return np.where(dt <= max_dt, pick, -1), dt


def attach_report(stream: SensorStream, pair_times, video_span: tuple[float, float], *,
                  max_dt: float | None = None) -> dict:
    """What attaching a stream to pairs does: pairs with and without a reading, readings outside the video.

    ``video_span`` is the thermal video's (first, last) frame time.
    """
    idx, dt = nearest(stream, pair_times, max_dt=max_dt)
    lo, hi = video_span
    return {"channels": list(stream.channels), "readings": int(len(stream.times)),
            "pairs_with_reading": int((idx >= 0).sum()), "pairs_without_reading": int((idx < 0).sum()),
            "readings_before_video": int((stream.times < lo).sum()),
            "readings_after_video": int((stream.times > hi).sum()),
            "max_dt_s": float(default_max_dt(stream) if max_dt is None else max_dt),
            "largest_attached_dt_s": float(dt[idx >= 0].max()) if (idx >= 0).any() else None}


def pair_columns(stream: SensorStream, pairs, *, max_dt: float | None = None) -> dict[str, dict]:
    """``{pair_id: {"sensor_t", "sensor_dt", "sensor:<channel>", ...}}`` for pairs given as
    ``{"pair_id", "t_thermal"}`` rows; a pair without a reading near enough gets empty values."""
    pairs = list(pairs)
    idx, dt = nearest(stream, [float(p["t_thermal"]) for p in pairs], max_dt=max_dt)
    out = {}
    for p, k, d in zip(pairs, idx, dt):
        if k < 0:
            out[p["pair_id"]] = {"sensor_t": "", "sensor_dt": "", **{f"sensor:{c}": "" for c in stream.channels}}
        else:
            out[p["pair_id"]] = {"sensor_t": repr(float(stream.times[k])), "sensor_dt": repr(round(float(d), 6)),
                                 **{f"sensor:{c}": repr(float(v)) for c, v in zip(stream.channels, stream.values[k])}}
    return out
