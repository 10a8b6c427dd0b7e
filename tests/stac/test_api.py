"""Search through pystac-client against a REAL local STAC API (rustac) loaded with the real
landsat-c2-l2 items; the static-catalog path on the same items must give the same answer."""

from __future__ import annotations

import json
import socket
import time
import warnings

import pytest

from geomoe.stac.search import (
    LandsatPlatformWarning,
    UnsupportedPlatformError,
    open_catalog,
    search,
    search_catalog,
)
from geomoe.errors import CatalogError, NoScenesError

WORLD = {"type": "Polygon", "coordinates": [[[-180, -85], [180, -85], [180, 85], [-180, 85],
                                             [-180, -85]]]}
#: A polygon written across 180 deg the naive way (165E -> 175W): the small area east of 165E.
ACROSS_180 = {"type": "Polygon", "coordinates": [[[165, -15], [-175, -15], [-175, -5], [165, -5],
                                                  [165, -15]]]}
EAST_OF_165 = {"type": "Polygon", "coordinates": [[[165, -15], [180, -15], [180, -5], [165, -5],
                                                   [165, -15]]]}
NORTH_AMERICA = {"type": "Polygon", "coordinates": [[[-130, 39], [-80, 39], [-80, 50], [-130, 50],
                                                     [-130, 39]]]}
#: Landsat 4-7 ids among the served items (no coastal band).
OLD = {"LE07_L2SP_021030_20100109_02_T1", "LT04_L2SP_002026_19830110_02_T1",
       "LT05_L2SP_010067_19860424_02_T2"}


def ids(items):
    return [it.id for it in items]


def quiet_search(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LandsatPlatformWarning)
        return search_catalog(*args, **kwargs)


def test_server_starts_fast(stac_api):
    assert stac_api.startup_s < 10, stac_api.startup_s


def test_api_pages_and_returns_all_landsat_8_9(stac_api, real_items):
    res = quiet_search(stac_api.url, WORLD, limit=4)
    expected = sorted(it["id"] for it in real_items.items if it["id"] not in OLD)
    assert len(expected) == 17
    assert sorted(ids(res.items)) == expected
    assert res.kind == "api"
    assert res.pages >= 5  # 20 items served 4 per page: paging really happened
    assert res.fetched == 20
    assert set(res.refused) == OLD
    # sorted by (datetime, id), absolute local hrefs
    keys = [(it.datetime, it.id) for it in res.items]
    assert keys == sorted(keys)
    for it in res.items:
        assert it.properties["proj:code"] == f"EPSG:{it.properties['proj:epsg']}"
        assert it.assets["coastal"].href.startswith(str(real_items.root / "assets"))


@pytest.mark.parametrize("kwargs", [
    {},
    {"datetime": "2025-07-22T23:05:00Z/.."},
    {"datetime": "../2024-12-31"},
    {"datetime": "2024-04-17"},
    {"max_cloud": 20},
    {"datetime": "2020-01-01/2025-12-31", "max_cloud": 25.5},
])
@pytest.mark.parametrize("aoi", [WORLD, ACROSS_180, NORTH_AMERICA])
def test_api_equals_static(stac_api, real_items, aoi, kwargs):
    try:
        api = quiet_search(stac_api.url, aoi, limit=3, **kwargs).items
    except NoScenesError:
        api = []
    try:
        static = quiet_search(real_items.static_collection, aoi, **kwargs).items
    except NoScenesError:
        static = []
    assert ids(api) == ids(static)
    assert [it.assets["red"].href for it in api] == [it.assets["red"].href for it in static]


def test_datetime_filter(stac_api):
    items = quiet_search(stac_api.url, WORLD, datetime="2025-07-22T23:05:00Z/..").items
    assert items and all(it.datetime.isoformat() >= "2025-07-22T23:05:00" for it in items)
    assert "LC09_L2SR_084060_20250722_02_T1" not in ids(items)  # 23:03:29, before the start
    day = quiet_search(stac_api.url, WORLD, datetime="2024-04-17").items
    assert ids(day) == ["LC09_L2SP_089087_20240417_02_T2", "LC09_L2SP_089088_20240417_02_T2",
                        "LC09_L2SP_089089_20240417_02_T1", "LC09_L2SP_089090_20240417_02_T1"]


def test_max_cloud_applied_client_side(stac_api):
    """rustac ignores `query`: the cloud filter must still hold."""
    items = quiet_search(stac_api.url, WORLD, max_cloud=10).items
    clouds = {it.id: it.properties["eo:cloud_cover"] for it in items}
    assert clouds and max(clouds.values()) <= 10
    assert "LC09_L2SP_089090_20240417_02_T1" not in clouds  # 97.54 %
    assert "LC09_L2SR_084074_20250722_02_T1" in clouds  # 4.26 %


def test_landsat7_refused_with_message(stac_api):
    aoi = {"type": "Polygon", "coordinates": [[[-86, 42.5], [-84, 42.5], [-84, 44], [-86, 44],
                                               [-86, 42.5]]]}  # Michigan: only the LE07 scene
    with pytest.warns(LandsatPlatformWarning, match="LE07_L2SP_021030"):
        with pytest.raises(NoScenesError, match="Landsat 4-7 scene.*refused.*coastal"):
            search(stac_api.url, aoi)
    with pytest.warns(LandsatPlatformWarning, match="without a coastal band"):
        got = search(stac_api.url, NORTH_AMERICA)
    assert ids(got) == ["LC08_L2SP_047027_20201204_02_T1", "LC08_L2SP_033032_20231008_02_T1"]
    with pytest.raises(UnsupportedPlatformError, match="Landsat 4-7 have no coastal band"):
        search(stac_api.url, NORTH_AMERICA, platforms=["landsat-7"])


def test_platform_subset(stac_api):
    items = quiet_search(stac_api.url, WORLD, platforms=["landsat-8"]).items
    assert ids(items) == ["LC08_L2SP_047027_20201204_02_T1", "LC08_L2SP_033032_20231008_02_T1"]


def test_antimeridian_aoi(stac_api):
    across = ids(quiet_search(stac_api.url, ACROSS_180).items)
    east = ids(quiet_search(stac_api.url, EAST_OF_165).items)
    assert across == east
    assert set(across) == {"LC09_L2SP_084068_20250722_02_T2", "LC09_L2SP_084069_20250722_02_T2",
                           "LC09_L2SR_084067_20250722_02_T1"}
    assert len(across) == 3  # the naive reading (a band the long way round) would give 13+


def test_aoi_in_another_crs(stac_api, tmp_path):
    """A UTM 58S file (legacy `crs` member) finds the same scenes as its lon/lat twin."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", "EPSG:32758", always_xy=True)
    ring = [tr.transform(x, y) for x, y in [(164.5, -12.0), (165.5, -12.0), (165.5, -11.0),
                                            (164.5, -11.0), (164.5, -12.0)]]
    f = tmp_path / "utm.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection",
                             "crs": {"type": "name",
                                     "properties": {"name": "urn:ogc:def:crs:EPSG::32758"}},
                             "features": [{"type": "Feature", "properties": {},
                                           "geometry": {"type": "Polygon",
                                                        "coordinates": [ring]}}]}))
    lonlat = {"type": "Polygon", "coordinates": [[[164.5, -12], [165.5, -12], [165.5, -11],
                                                  [164.5, -11], [164.5, -12]]]}
    a = ids(search(stac_api.url, f))
    assert a == ids(search(stac_api.url, lonlat))
    assert set(a) == {"LC09_L2SP_084068_20250722_02_T2", "LC09_L2SR_084067_20250722_02_T1"}


def test_empty_result_is_no_scenes(stac_api):
    aoi = {"type": "Polygon", "coordinates": [[[-35, 30], [-33, 30], [-33, 32], [-35, 32],
                                               [-35, 30]]]}
    with pytest.raises(NoScenesError) as exc:
        search(stac_api.url, aoi, datetime="2020-01-01/2020-12-31")
    msg = str(exc.value)
    assert "-35.0000, 30.0000, -33.0000, 32.0000" in msg and stac_api.url in msg
    assert "2020-01-01T00:00:00" in msg and "widen" in msg


def test_unreachable_api_fails_fast():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/stac/v1"
    t0 = time.perf_counter()
    with pytest.raises(CatalogError, match=f"cannot reach STAC API {url}"):
        search(url, WORLD)
    assert time.perf_counter() - t0 < 5


def test_unknown_collection_is_no_scenes(stac_api):
    with pytest.raises((NoScenesError, CatalogError)):
        search(stac_api.url, WORLD, collection="no-such-collection")


def test_open_catalog_kinds(stac_api, real_items, bundled_catalog):
    assert open_catalog(stac_api.url).kind == "api"
    assert open_catalog(real_items.static_collection).kind == "static"
    assert open_catalog(real_items.static_collection.parent).kind == "static"
    assert open_catalog(None).kind == "bundled"
    with pytest.raises(CatalogError, match="does not exist"):
        open_catalog(real_items.root / "nope.json")


def test_broken_static_catalog_errors(real_items, tmp_path):
    import shutil

    copy = tmp_path / "static"
    shutil.copytree(real_items.static_collection.parent, copy)
    victim = next(p for p in sorted(copy.glob("*/*.json")))
    victim.unlink()
    with pytest.raises(CatalogError, match="cannot walk static catalog.*missing or corrupt"):
        search(copy / "collection.json", WORLD)
    (copy / "collection.json").write_text("{not json")
    with pytest.raises(CatalogError, match="cannot read static catalog"):
        search(copy / "collection.json", WORLD)
    (copy / "collection.json").write_text('{"type": "Feature"}')
    with pytest.raises(CatalogError):
        search(copy / "collection.json", WORLD)
