"""AOI loading: every GeoJSON shape users have, declared CRSs, the antimeridian, and bad input."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pyproj import Transformer
from shapely.geometry import Point, box

from geomoe.stac.aoi import load_aoi
from geomoe.errors import AOIError

SQUARE = {"type": "Polygon", "coordinates": [[[-3.1, 53.45], [-3.0, 53.45], [-3.0, 53.5],
                                              [-3.1, 53.5], [-3.1, 53.45]]]}


def fc(geom, crs=None):
    out = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {}, "geometry": geom}]}
    if crs:
        out["crs"] = {"type": "name", "properties": {"name": crs}}
    return out


def projected(geom, epsg):
    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return {"type": "Polygon",
            "coordinates": [[list(tr.transform(x, y)) for x, y in geom["coordinates"][0]]]}


@pytest.mark.parametrize("form", ["geometry", "feature", "collection", "string", "file", "url"])
def test_forms_give_same_geometry(form, tmp_path):
    obj = {"geometry": SQUARE, "feature": {"type": "Feature", "properties": {}, "geometry": SQUARE},
           }.get(form, fc(SQUARE))
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(obj))
    if form == "string":
        src = json.dumps(obj)
    elif form == "file":
        src = path
    elif form == "url":
        handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            geom = load_aoi(f"http://127.0.0.1:{server.server_address[1]}/aoi.geojson")
        finally:
            server.shutdown()
            server.server_close()
        assert geom.equals(box(-3.1, 53.45, -3.0, 53.5))
        return
    else:
        src = obj
    assert load_aoi(src).equals(box(-3.1, 53.45, -3.0, 53.5))


@pytest.mark.parametrize("crs,epsg", [
    ("EPSG:3857", 3857), ("urn:ogc:def:crs:EPSG::32630", 32630), ("EPSG:27700", 27700),
])
def test_declared_crs_is_honoured(crs, epsg):
    geom = load_aoi(fc(projected(SQUARE, epsg), crs))
    ref = box(-3.1, 53.45, -3.0, 53.5)
    # densified reprojection: the same area to within a few metres
    assert geom.symmetric_difference(ref).area < 1e-3 * ref.area
    assert geom.bounds == pytest.approx(ref.bounds, abs=2e-4)


def test_crs84_and_feature_collection_union():
    two = {"type": "FeatureCollection",
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
           "features": [{"type": "Feature", "properties": {}, "geometry": SQUARE},
                        {"type": "Feature", "properties": {},
                         "geometry": {"type": "Point", "coordinates": [10.0, 50.0]}}]}
    geom = load_aoi(two)
    assert geom.intersects(box(-3.09, 53.46, -3.01, 53.49))
    assert geom.intersects(Point(10.0, 50.0)) and not geom.intersects(Point(5.0, 52.0))
    assert geom.bounds == (-3.1, 50.0, 10.0, 53.5)


@pytest.mark.parametrize("coords", [
    [[170, -20], [-170, -20], [-170, -10], [170, -10], [170, -20]],  # jumps across 180
    [[170, -20], [190, -20], [190, -10], [170, -10], [170, -20]],  # runs past 180
])
def test_antimeridian_split(coords):
    geom = load_aoi({"type": "Polygon", "coordinates": [coords]})
    assert geom.geom_type == "MultiPolygon"
    parts = sorted(p.bounds for p in geom.geoms)
    assert parts == [(-180.0, -20.0, -170.0, -10.0), (170.0, -20.0, 180.0, -10.0)]
    assert geom.area == pytest.approx(200.0)  # not the 3400 deg^2 band the long way round


def test_bundled_antimeridian_aoi(repo_root):
    geom = load_aoi(repo_root / "catalogs" / "aois" / "antimeridian.geojson")
    assert geom.area == pytest.approx(200.0)
    assert not geom.intersects(box(-169, -20, 169, -10))


def test_antimeridian_from_utm_60s():
    """A UTM 60S rectangle straddling 180 deg reprojects into two valid lon/lat parts."""
    ring = [[700000, 8000000], [900000, 8000000], [900000, 8100000], [700000, 8100000],
            [700000, 8000000]]
    geom = load_aoi(fc({"type": "Polygon", "coordinates": [ring]}, "EPSG:32760"))
    assert geom.geom_type == "MultiPolygon" and geom.is_valid
    west, east = sorted(geom.geoms, key=lambda p: p.bounds[0])
    assert west.bounds[0] == -180.0 and east.bounds[2] == 180.0
    assert 178.5 < east.bounds[0] < 180 and -180 < west.bounds[2] < -178.5


@pytest.mark.parametrize("src,match", [
    ('{"type": "Polygon"', "not valid JSON"),
    ("[1, 2]", "not GeoJSON"),
    ('{"foo": 1}', "not GeoJSON"),
    ('{"type": "Blob"}', "type 'Blob'"),
    ('{"type": "FeatureCollection", "features": []}', "no features"),
    ('{"type": "Feature", "properties": {}, "geometry": null}', "no geometry"),
    ('{"type": "Polygon", "coordinates": []}', "empty geometry"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1]]]}', "malformed Polygon"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}',
     "Self-intersection.*Fix Geometries"),
    ('{"type": "Polygon", "coordinates": [[[500000, 5900000], [500100, 5900000], '
     '[500100, 5900100], [500000, 5900000]]]}', "look projected.*Declare the CRS"),
    (json.dumps(fc(SQUARE, "EPSG:999999")), "unknown CRS 'EPSG:999999'"),
    (json.dumps({**fc(SQUARE), "crs": {"type": "bogus"}}), "'crs' member I cannot read"),
    ("/no/such/file.geojson", "does not exist"),
    ("http://127.0.0.1:9/aoi.geojson", "cannot download AOI"),
])
def test_bad_aoi_errors(src, match):
    with pytest.raises(AOIError, match=match):
        load_aoi(src)


def test_bad_file_content(tmp_path):
    f = tmp_path / "bad.geojson"
    f.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(AOIError, match="UTF-8"):
        load_aoi(f)
    with pytest.raises(AOIError, match="is a folder"):
        load_aoi(tmp_path)


@pytest.mark.parametrize("geom", [
    {"type": "Point", "coordinates": [-3.0, 53.4]},
    {"type": "LineString", "coordinates": [[-3.1, 53.4], [-3.0, 53.45]]},
    {"type": "MultiPoint", "coordinates": [[-3.1, 53.4], [-3.0, 53.45]]},
])
def test_point_or_line_aoi_for_embedding_says_how_to_buffer(geom):
    kind = geom["type"]
    with pytest.raises(AOIError, match=f"is a {kind}, which has no area.*Polygon.*buffer.*metres.*UTM.*buffer"):
        load_aoi(fc(geom), area=True)
    assert load_aoi(fc(geom)).geom_type == kind  # a catalog search may still use it


def test_point_aoi_refused_by_embed_region_before_anything_is_written(tmp_path, capsys):
    from geomoe.cli import main

    out = tmp_path / "cube.zarr"
    assert main(["embed-region", "--aoi", '{"type": "Point", "coordinates": [-3.0, 53.4]}',
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("geomoe embed-region: error: the inline GeoJSON is a Point, which has no area")
    assert "no chip footprint" not in err and not out.exists()


def test_bundled_aoi_by_name_from_any_directory(tmp_path, monkeypatch, repo_root):
    from geomoe.resources import aoi_names

    monkeypatch.chdir(tmp_path)  # no catalogs/ here: the name resolves to the package's data
    assert {"europe", "liverpool"} <= set(aoi_names())
    for name in ("europe", "liverpool"):
        assert load_aoi(name).equals(load_aoi(repo_root / "catalogs" / "aois" / f"{name}.geojson"))


def test_a_file_in_the_working_directory_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "liverpool").write_text(json.dumps(SQUARE))
    assert load_aoi("liverpool").equals(box(-3.1, 53.45, -3.0, 53.5))


def test_unknown_name_lists_the_bundled_aois(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AOIError, match=r"'atlantis' is neither a file.*europe.*liverpool"):
        load_aoi("atlantis")
    assert list(tmp_path.iterdir()) == []
