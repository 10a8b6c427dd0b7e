"""Bad input: specific errors that name the problem, raised before any partial output."""

from __future__ import annotations

import copy
import json

import pystac
import pytest

from geomoe.chips.plan import iter_chips, plan_chips
from geomoe.errors import GeomoeError, MissingBandError, NoScenesError, RasterReadError
from geomoe.chips.grid import UnknownCRSError, item_epsg

from .conftest import LIVERPOOL, derive_item


def test_missing_coastal_band_names_band_and_item(repo_root):
    fx = repo_root / "catalogs" / "test-fixtures" / "manaus-no-coastal"
    (path,) = fx.glob("*/*.json")
    item = pystac.Item.from_file(str(path))
    with pytest.raises(MissingBandError) as ei:
        plan_chips([item])
    msg = str(ei.value)
    assert "SR_B1" in msg and "coastal" in msg and item.id in msg
    with pytest.raises(MissingBandError):
        list(iter_chips([item]))


def test_landsat7_is_refused_with_a_reason(shared_data):
    path = shared_data / "stac-items" / "stactools-landsat-examples" / "LE07_L2SP_021030_20100109_02_T1.json"
    item = pystac.Item.from_dict(json.loads(path.read_text()))
    with pytest.raises(MissingBandError, match="landsat-7 has no coastal band"):
        plan_chips([item])


def test_missing_band_in_a_mixed_list_fails_before_any_read(bundled_items, tmp_path):
    good = bundled_items[LIVERPOOL]
    bad = derive_item(good, tmp_path / "bad", "no-swir22", drop=("swir22",))
    with pytest.raises(MissingBandError, match="SR_B7.*swir22|swir22"):
        iter_chips([good, bad])  # raised at the call, no batch produced


def test_truncated_geotiff_names_the_file(bundled_items, tmp_path):
    item = derive_item(bundled_items[LIVERPOOL], tmp_path / "trunc", "truncated")
    red = tmp_path / "trunc" / "red.tif"
    data = red.read_bytes()
    red.write_bytes(data[: len(data) // 2])
    with pytest.raises(RasterReadError) as ei:
        for _ in iter_chips([item]):
            pass
    assert str(red) in str(ei.value)


def test_corrupt_geotiff_names_the_file(bundled_items, tmp_path):
    item = derive_item(bundled_items[LIVERPOOL], tmp_path / "corrupt", "corrupt")
    nir = tmp_path / "corrupt" / "nir08.tif"
    nir.write_bytes(b"this is not a GeoTIFF" * 100)
    with pytest.raises(RasterReadError, match="nir08.tif"):
        list(iter_chips([item]))


def test_unknown_crs(bundled_items):
    item = copy.deepcopy(bundled_items[LIVERPOOL])
    for k in ("proj:code", "proj:epsg"):
        item.properties.pop(k, None)
    with pytest.raises(UnknownCRSError, match="no proj:code or proj:epsg"):
        plan_chips([item])
    item.properties["proj:code"] = "EPSG:999999"
    with pytest.raises(UnknownCRSError, match="999999"):
        plan_chips([item])
    item.properties["proj:code"] = "EPSG:4326"
    with pytest.raises(UnknownCRSError, match="not a projected"):
        plan_chips([item])
    assert isinstance(UnknownCRSError("x"), GeomoeError)
    # proj:code wins; polar stereographic is a CRS like any other (its own group)
    item.properties["proj:code"] = "EPSG:3031"
    assert item_epsg(item) == 3031


def test_no_items_is_no_scenes():
    with pytest.raises(NoScenesError):
        plan_chips([])


def test_bad_arguments(bundled_items):
    item = bundled_items[LIVERPOOL]
    with pytest.raises(GeomoeError, match="unknown chip grid"):
        plan_chips([item], grid="hexagons")
    with pytest.raises(ValueError):
        iter_chips([item], min_valid=1.5)
