"""Geo-temporal metadata encodings the MoE-MAE takes beside the pixels.

Each quantity becomes an angle and is returned as (sin, cos) so that the model sees a
continuous, periodic signal (week 52 is next to week 1, 23 h next to 0 h).

Decisions (documented because the published code got one of them wrong):
- week: ISO 8601 week-of-year (1..53) of the UTC acquisition datetime, angle 2*pi*week/52.
- hour: the integer UTC hour (0..23) of the real acquisition datetime, angle 2*pi*hour/24.
  The published code parsed one digit of the file name; we compute from the datetime. We keep
  whole hours (minutes dropped) because the published model was trained on whole hours and
  Landsat overpasses of one place fall within minutes of the same time every day anyway.
- lat, lon: WGS84 degrees converted to radians; the angle is the radian value itself.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence

import numpy as np

_TWO_PI = 2.0 * np.pi


def _sincos(angle: np.ndarray) -> np.ndarray:
    """Angles (N,) -> (N, 2) float32 [sin, cos]."""
    angle = np.asarray(angle, dtype=np.float64).reshape(-1)
    return np.stack([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


def _to_datetimes(times: Iterable) -> list[_dt.datetime]:
    """Accept datetime objects, ISO strings or numpy datetime64 values (all taken as UTC)."""
    out: list[_dt.datetime] = []
    for t in np.atleast_1d(np.asarray(times, dtype=object)):
        if isinstance(t, np.datetime64):
            t = t.astype("datetime64[s]").astype(_dt.datetime)
        elif isinstance(t, str):
            t = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        elif isinstance(t, _dt.date) and not isinstance(t, _dt.datetime):
            t = _dt.datetime(t.year, t.month, t.day)
        if not isinstance(t, _dt.datetime):
            raise TypeError(f"cannot read a datetime from {t!r}")
        if t.tzinfo is not None:
            t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        out.append(t)
    return out


def week_of_year(times: Iterable) -> np.ndarray:
    """ISO week numbers (N,) int64 of the UTC datetimes."""
    return np.array([t.isocalendar()[1] for t in _to_datetimes(times)], dtype=np.int64)


def hour_of_day(times: Iterable) -> np.ndarray:
    """Integer UTC hours (N,) int64 of the datetimes."""
    return np.array([t.hour for t in _to_datetimes(times)], dtype=np.int64)


def encode_week(times: Iterable) -> np.ndarray:
    """UTC datetimes (N,) -> (N, 2) float32 (sin, cos) of 2*pi*iso_week/52."""
    return _sincos(_TWO_PI * week_of_year(times) / 52.0)


def encode_hour(times: Iterable) -> np.ndarray:
    """UTC datetimes (N,) -> (N, 2) float32 (sin, cos) of 2*pi*utc_hour/24."""
    return _sincos(_TWO_PI * hour_of_day(times) / 24.0)


def encode_latlon(
    lat: Sequence[float] | np.ndarray, lon: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 degrees (N,), (N,) -> ((N, 2), (N, 2)) float32 (sin, cos) of lat and lon in radians."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon differ in length: {lat.shape} vs {lon.shape}")
    if np.any(np.abs(lat) > 90) or not np.all(np.isfinite(lat)) or not np.all(np.isfinite(lon)):
        raise ValueError("lat must be finite degrees in [-90, 90] and lon finite degrees")
    return _sincos(np.deg2rad(lat)), _sincos(np.deg2rad(lon))


def encode_datetime64(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fast path for datetime64 arrays (N,) -> (week (N,2), hour (N,2)); same rules as above."""
    times = np.asarray(times, dtype="datetime64[s]")
    if times.size == 0:
        z = np.zeros((0, 2), np.float32)
        return z, z.copy()
    uniq, inv = np.unique(times, return_inverse=True)
    return encode_week(uniq)[inv], encode_hour(uniq)[inv]
