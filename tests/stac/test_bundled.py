"""The bundled catalog: layout the other parts depend on, reproducible build, search semantics."""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import sys
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.warp import transform_bounds
from shapely.geometry import box, shape

from geomoe.chips.bands import BANDS, COMMON_NAMES
from geomoe.stac.search import parse_datetime, search, search_catalog
from geomoe.cli import main
from geomoe.errors import CatalogError, NoScenesError
from geomoe.evaluate.labels import BEN19_CLASSES, LabelError, to_ben19

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from build_catalog import ben_datetime, build_catalog, main as build_main  # noqa: E402

LIVERPOOL = "LC08_L2SP_204023_20200927_20201006_02_T1"
GREENLAND = "LC08_L2SP_005009_20150710_20200908_02_T2"
COLOMBIA = "LC08_L2SP_008059_20191201_20200825_02_T1"
NO_LABELS = "S2A_MSIL2A_20171208T093351_82_79"
KEYS = [COMMON_NAMES[b] for b in BANDS]


@pytest.fixture(scope="module")
def items(bundled_catalog) -> dict[str, pystac.Item]:
    cat = pystac.Catalog.from_file(str(bundled_catalog))
    return {it.id: it for it in cat.get_items(recursive=True)}


def aoi(repo_root: Path, name: str) -> Path:
    return repo_root / "catalogs" / "aois" / f"{name}.geojson"


def test_layout(items, bundled_catalog, shared_data):
    ben = [it for it in items.values() if it.collection_id == "bigearthnet-landsat-sample"]
    scenes = sorted(it.id for it in items.values() if it.collection_id == "landsat-scenes")
    assert len(ben) == 200 and scenes == sorted([LIVERPOOL, GREENLAND, COLOMBIA])
    sample = (shared_data / "bigearthnet-landsat-sample" / "samples.csv").read_text().split()[1:]
    assert sorted(it.id for it in ben) == sorted(sample)
    for it in items.values():
        p = it.properties
        raw = json.loads(Path(it.get_self_href()).read_text())["properties"]  # pystac drops epsg
        assert raw["proj:code"] == f"EPSG:{raw['proj:epsg']}"
        assert len(p["proj:transform"]) == 6 and len(p["proj:shape"]) == 2
        assert p["platform"] == "landsat-8"
        assert [k for k in KEYS if k in it.assets] == KEYS
        for k in KEYS:
            a = it.assets[k]
            assert not Path(a.href).is_absolute() and a.href.startswith("./")
            rb = a.extra_fields["raster:bands"][0]
            assert (rb["nodata"], rb["data_type"], rb["scale"], rb["offset"]) == (
                0, "uint16", 2.75e-05, -0.2)
            assert a.extra_fields["eo:bands"][0]["common_name"] == k
    for it in ben:
        assert it.properties["geomoe:chip_grid"] == "item"
        assert "eo:cloud_cover" not in it.properties
    for sid in (GREENLAND, COLOMBIA):
        assert "qa_pixel" in items[sid].assets
        assert items[sid].properties["eo:cloud_cover"] > 50
    assert items[LIVERPOOL].datetime == dt.datetime(2020, 9, 27, 11, 10, 50, tzinfo=dt.timezone.utc)
    coll = pystac.Collection.from_file(
        str(bundled_catalog.parent / "bigearthnet-landsat-sample" / "collection.json"))
    assert coll.extra_fields["geomoe:chip_grid"] == "item"
    for folder in ("bigearthnet-landsat-sample", "landsat-scenes", "test-fixtures/manaus-no-coastal"):
        assert (bundled_catalog.parent / folder / "LICENSE").stat().st_size > 200
    assert (bundled_catalog.parent / "NOTICE").exists()


def test_assets_are_cogs_matching_source(items, shared_data):
    it = items["S2A_MSIL2A_20170613T101031_11_66"]
    src = shared_data / "bigearthnet-landsat-sample" / "images" / f"{it.id}.tif"
    with rasterio.open(src) as s:
        ref = s.read()
        ref_bounds = transform_bounds(s.crs, "EPSG:4326", *s.bounds)
    for i, key in enumerate(KEYS):
        with rasterio.open(it.assets[key].get_absolute_href()) as d:
            assert d.count == 1 and d.dtypes[0] == "uint16" and d.nodata == 0
            assert d.profile["compress"] == "deflate" and d.profile["tiled"]
            assert d.transform == rasterio.Affine(*it.properties["proj:transform"])
            np.testing.assert_array_equal(d.read(1), ref[i])
    assert box(*it.bbox).equals_exact(box(*ref_bounds), 1e-6)
    # QA scenes keep their true ~450-520 m grid
    g = items[GREENLAND]
    with rasterio.open(g.assets["qa_pixel"].get_absolute_href()) as d:
        assert d.shape == (512, 512) and 500 < d.transform.a < 530
        assert d.read(1).dtype == np.uint16


def test_ben_properties(items, shared_data):
    for it in items.values():
        if it.collection_id != "bigearthnet-landsat-sample":
            continue
        p = it.properties
        assert it.datetime == ben_datetime(it.id)
        if it.id == NO_LABELS:
            assert p["bigearthnet:labels_missing"] is True and p["bigearthnet:labels"] == []
            continue
        meta = json.loads((shared_data / "bigearthnet-landsat-sample" / "labels" /
                           f"{it.id}_labels_metadata.json").read_text())
        assert p["bigearthnet:labels"] == meta["labels"]
        assert p["bigearthnet:labels_19"] == to_ben19(meta["labels"])
        assert p["bigearthnet:labels_missing"] is False


def test_five_digit_time_ids():
    assert ben_datetime("S2A_MSIL2A_20170905T95032_17_49") == dt.datetime(
        2017, 9, 5, 9, 50, 32, tzinfo=dt.timezone.utc)
    assert ben_datetime("S2B_MSIL2A_20170613T101031_11_66").hour == 10


def test_labels_19():
    assert len(BEN19_CLASSES) == 19
    assert to_ben19(["Continuous urban fabric", "Discontinuous urban fabric", "Airports"]) == [
        "Urban fabric"]
    assert to_ben19(["Sea and ocean", "Coastal lagoons", "Water bodies", "Peatbogs",
                     "Salines"]) == ["Inland wetlands", "Coastal wetlands", "Inland waters",
                                     "Marine waters"]
    assert to_ben19(["Bare rock", "Burnt areas", "Intertidal flats"]) == []
    with pytest.raises(LabelError, match="unknown BigEarthNet label 'Sea'"):
        to_ben19(["Sea"])


def test_build_is_reproducible(tmp_path, shared_data, bundled_catalog):
    counts = build_catalog(shared_data, tmp_path)
    assert counts["bigearthnet-landsat-sample"] == 200 and counts["landsat-scenes"] == 3
    committed = bundled_catalog.parent
    new_files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    old_files = sorted(p.relative_to(committed) for p in committed.rglob("*")
                       if p.is_file() and p.relative_to(committed).parts[0] != "LICENSES")
    assert new_files == old_files
    _, mismatch, errors = filecmp.cmpfiles(committed, tmp_path, [str(p) for p in new_files],
                                           shallow=False)
    assert mismatch == [] and errors == []
    size = sum((committed / p).stat().st_size for p in old_files)
    assert size < 25e6


def test_europe_returns_all_200_plus_liverpool(repo_root, items):
    res = search_catalog(None, aoi(repo_root, "europe"))
    expected = {i for i, it in items.items() if it.collection_id == "bigearthnet-landsat-sample"}
    assert {it.id for it in res.items} == expected | {LIVERPOOL}
    assert res.kind == "bundled" and res.fetched == 203
    for it in res.items:
        p = it.properties  # both projection fields survive pystac's migration
        assert p["proj:code"] == f"EPSG:{p['proj:epsg']}"
        assert all(Path(a.href).is_absolute() and Path(a.href).exists()
                   for a in it.assets.values())
    keys = [(it.datetime, it.id) for it in res.items]
    assert keys == sorted(keys)


def test_liverpool_aoi(repo_root, items):
    got = search(None, aoi(repo_root, "liverpool"))
    assert [it.id for it in got] == [LIVERPOOL]
    geom = shape(json.loads(aoi(repo_root, "liverpool").read_text())["features"][0]["geometry"])
    assert shape(items[LIVERPOOL].geometry).contains(geom)


def test_empty_and_antimeridian_are_no_scenes(repo_root):
    with pytest.raises(NoScenesError, match=r"bundled catalog.*-35\.0000, 30\.0000"):
        search(None, aoi(repo_root, "empty"))
    with pytest.raises(NoScenesError, match="no scenes"):
        search(None, aoi(repo_root, "antimeridian"))


def test_bundled_filters(repo_root):
    june = search(None, aoi(repo_root, "europe"), datetime="2017-06-01/2017-06-30")
    assert len(june) == 10 and all(it.datetime.month == 6 for it in june)
    assert [it.id for it in search(None, aoi(repo_root, "europe"), datetime="2020")] == [LIVERPOOL]
    # max_cloud: Liverpool (6.23 %) out; BigEarthNet patches have no cloud cover and pass
    low = search(None, aoi(repo_root, "europe"), max_cloud=5)
    assert len(low) == 200 and LIVERPOOL not in {it.id for it in low}
    world = '{"type": "Polygon", "coordinates": [[[-180, -80], [180, -80], [180, 80], [-180, 80], [-180, -80]]]}'
    assert {it.id for it in search(None, world, max_cloud=60, datetime="../2016")} == {GREENLAND}


def test_bad_filters():
    with pytest.raises(CatalogError, match="not RFC 3339"):
        parse_datetime("last tuesday")
    with pytest.raises(CatalogError, match="start is after the end"):
        parse_datetime("2021-01-01/2020-01-01")
    assert parse_datetime("2020-02")[1] == dt.datetime(2020, 2, 29, 23, 59, 59, 999999,
                                                       tzinfo=dt.timezone.utc)
    with pytest.raises(CatalogError, match="not a percentage"):
        search(None, '{"type": "Point", "coordinates": [0, 0]}', max_cloud=150)


def test_manaus_fixture_lacks_coastal(repo_root):
    coll = repo_root / "catalogs" / "test-fixtures" / "manaus-no-coastal" / "collection.json"
    world = '{"type": "Polygon", "coordinates": [[[-70, -10], [-50, -10], [-50, 0], [-70, 0], [-70, -10]]]}'
    got = search(coll, world)
    assert len(got) == 1 and "coastal" not in got[0].assets and "blue" in got[0].assets
    assert got[0].properties["platform"] == "landsat-9"


def test_cli_search_and_build(repo_root, capsys, tmp_path, shared_data):
    assert main(["catalog", "search", "--aoi", str(aoi(repo_root, "liverpool"))]) == 0
    assert capsys.readouterr().out.split() == [LIVERPOOL]
    assert main(["catalog", "search", "--aoi", str(aoi(repo_root, "empty"))]) == 1
    assert "no scenes" in capsys.readouterr().err
    assert build_main(["--source", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_search_by_name_and_build_writes_the_catalog_the_library_reads(tmp_path, monkeypatch,
                                                                          capsys):
    from geomoe.stac.search import BUNDLED_CATALOG

    monkeypatch.chdir(tmp_path)  # the named AOI and the bundled catalog come from the package
    assert main(["catalog", "search", "--aoi", "liverpool"]) == 0
    assert capsys.readouterr().out.split() == [LIVERPOOL]
    # the maintainer script writes by default the catalog the package reads
    assert (REPO / "geomoe" / "data" / "catalogs").resolve() == BUNDLED_CATALOG.parent.resolve()


def test_static_catalog_over_http(repo_root):
    """The same bundled catalog served by a real HTTP server: same ids, absolute http hrefs."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(Quiet, directory=str(repo_root / "catalogs")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/catalog.json"
        res = search_catalog(url, aoi(repo_root, "liverpool"))
    finally:
        server.shutdown()
        server.server_close()
    assert res.kind == "static" and [it.id for it in res.items] == [LIVERPOOL]
    href = res.items[0].assets["coastal"].href
    assert href == url.replace("catalog.json", f"landsat-scenes/{LIVERPOOL}/coastal.tif")
