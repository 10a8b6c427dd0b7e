"""Metadata encodings against values worked out by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from geomoe.chips.meta import encode_datetime64, encode_hour, encode_latlon, encode_week, week_of_year


def test_week_iso_and_angle():
    # 2020-09-27 is a Sunday in ISO week 39; 2021-01-01 belongs to ISO week 53 of 2020.
    assert list(week_of_year(["2020-09-27T11:10:50Z", "2021-01-01T00:00:00Z"])) == [39, 53]
    w = encode_week([dt.datetime(2020, 9, 27, 11, 10, 50, tzinfo=dt.timezone.utc)])
    a = 2 * np.pi * 39 / 52
    np.testing.assert_allclose(w, [[np.sin(a), np.cos(a)]], atol=1e-6)
    assert w.dtype == np.float32 and w.shape == (1, 2)


def test_hour_from_real_datetime_not_filename_digit():
    # Liverpool 11:10:50 UTC -> hour 11 (the published code would have read one digit: "1").
    h = encode_hour(["2020-09-27T11:10:50Z"])
    a = 2 * np.pi * 11 / 24
    np.testing.assert_allclose(h, [[np.sin(a), np.cos(a)]], atol=1e-6)
    # a time zone offset is converted to UTC first: 12:30+02:00 is 10:30 UTC
    h2 = encode_hour([dt.datetime(2020, 1, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))])
    a2 = 2 * np.pi * 10 / 24
    np.testing.assert_allclose(h2, [[np.sin(a2), np.cos(a2)]], atol=1e-6)


def test_latlon_radians():
    lat, lon = encode_latlon([0.0, 90.0, 53.4], [180.0, -90.0, -3.0])
    np.testing.assert_allclose(lat[0], [0, 1], atol=1e-6)
    np.testing.assert_allclose(lat[1], [1, 0], atol=1e-6)
    np.testing.assert_allclose(lon[0], [0, -1], atol=1e-6)
    np.testing.assert_allclose(lon[1], [-1, 0], atol=1e-6)
    np.testing.assert_allclose(lat[2], [np.sin(np.radians(53.4)), np.cos(np.radians(53.4))], atol=1e-6)
    with pytest.raises(ValueError):
        encode_latlon([91.0], [0.0])


def test_datetime64_fast_path_matches():
    t = np.array(["2020-09-27T11:10:50", "2017-06-13T10:10:31", "2020-09-27T11:10:50"], "datetime64[s]")
    w, h = encode_datetime64(t)
    np.testing.assert_allclose(w, encode_week(t), atol=0)
    np.testing.assert_allclose(h, encode_hour(t), atol=0)
