"""geomoe similar: top-k GeoParquet, similarity map (Zarr), PNG, index beside the cube."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

import geomoe
from geomoe.cli.app import main
from geomoe.errors import GeomoeError
from geomoe.evaluate.cubechips import PointError
from tests.evaluate.cube_fixtures import (analysis_ckpt, liverpool_grid_cube,  # noqa: F401
                                         liverpool_two_dates_cube, portugal_table_cube)


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _chip_lonlat(cube, i, j):
    ds = geomoe.open_cube(cube)["utm30n"]
    return float(ds.lon[i, j]), float(ds.lat[i, j])


def test_point_on_a_chip_finds_that_chip_first(liverpool_grid_cube, tmp_path):
    import geopandas as gpd
    import xarray as xr

    lon, lat = _chip_lonlat(liverpool_grid_cube, 2, 3)
    out = tmp_path / "top.parquet"
    r = geomoe.similar(liverpool_grid_cube, [f"{lon},{lat}"], k=7, out=out)
    assert r.index_built and r.k == 7 and r.n_chips == 20
    top = gpd.read_parquet(out)
    assert top.crs.to_epsg() == 4326 and len(top) == 7
    assert list(top["rank"]) == list(range(1, 8))
    assert top.score.iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert top.geometry.iloc[0].contains(shapely.Point(lon, lat))
    assert np.all(np.diff(top.score.to_numpy()) <= 0)  # best first
    ds = geomoe.open_cube(liverpool_grid_cube)["utm30n"]
    assert (top.y.iloc[0], top.x.iloc[0]) == (float(ds.y[2]), float(ds.x[3]))
    for col in ("time", "item_id", "group", "score"):
        assert col in top.columns
    # the scores are the cosine with the cube's own vectors, and the map holds every chip's
    e = ds.embedding.values[0].reshape(-1, ds.sizes["dim"])
    cos = _unit(e) @ _unit(ds.embedding.values[0, 2, 3])
    np.testing.assert_allclose(top.score.to_numpy(), np.sort(cos)[::-1][:7], atol=1e-5)
    m = xr.open_zarr(r.map_path, group="utm30n", decode_coords="all")
    assert m.rio.crs.to_epsg() == 32630 and m.similarity.dims == ("time", "y", "x")
    np.testing.assert_allclose(m.similarity.values[0].ravel(), cos, atol=2e-3)  # float16 index
    assert r.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and r.png.stat().st_size > 5000
    # the second query reuses the index kept beside the cube
    r2 = geomoe.similar(liverpool_grid_cube, [(lon, lat)], k=3, out=tmp_path / "again.parquet")
    assert not r2.index_built and r2.index_path == liverpool_grid_cube.with_name("liverpool.zarr.simindex")


def test_negatives_and_the_cli_with_negative_longitudes(liverpool_grid_cube, tmp_path, capsys):
    import geopandas as gpd

    pos = [_chip_lonlat(liverpool_grid_cube, 0, 0), _chip_lonlat(liverpool_grid_cube, 3, 4)]
    neg = _chip_lonlat(liverpool_grid_cube, 1, 2)
    out = tmp_path / "cli.parquet"
    rc = main(["similar", "--cube", str(liverpool_grid_cube), "--at", f"{pos[0][0]},{pos[0][1]}",
               "--at", f"{pos[1][0]},{pos[1][1]}", "--negative", f"{neg[0]},{neg[1]}",
               "--k", "20", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    ds = geomoe.open_cube(liverpool_grid_cube)["utm30n"]
    e = ds.embedding.values[0]
    q = _unit(e[[0, 3], [0, 4]]).mean(0) - _unit(e[1, 2])
    cos = _unit(e.reshape(-1, e.shape[-1])) @ _unit(q)
    top = gpd.read_parquet(out)
    np.testing.assert_allclose(top.score.to_numpy(), np.sort(cos)[::-1], atol=1e-5)


def test_examples_file_in_another_crs_gives_the_same_query(liverpool_grid_cube, tmp_path):
    import geopandas as gpd

    pos = _chip_lonlat(liverpool_grid_cube, 1, 1)
    neg = _chip_lonlat(liverpool_grid_cube, 3, 0)
    pts = gpd.GeoDataFrame({"negative": [False, True]},
                           geometry=gpd.points_from_xy([pos[0], neg[0]], [pos[1], neg[1]]), crs=4326)
    path = tmp_path / "examples.gpkg"
    pts.to_crs(27700).to_file(path)  # British National Grid
    a = geomoe.similar(liverpool_grid_cube, examples=path, k=20, out=tmp_path / "a.parquet")
    b = geomoe.similar(liverpool_grid_cube, [pos], negative=[neg], k=20, out=tmp_path / "b.parquet")
    ta, tb = gpd.read_parquet(a.out), gpd.read_parquet(b.out)
    np.testing.assert_allclose(ta.score, tb.score, atol=1e-6)
    assert list(ta.x) == list(tb.x) and list(ta.y) == list(tb.y)


def test_table_group_point_and_skipped_chip(portugal_table_cube, tmp_path):
    import geopandas as gpd

    ds = geomoe.open_cube(portugal_table_cube)["chips"]
    ok = np.isfinite(ds.embedding.values).all(axis=1)
    k = int(np.nonzero(ok)[0][5])
    r = geomoe.similar(portugal_table_cube, [(float(ds.lon[k]), float(ds.lat[k]))], k=5,
                       out=tmp_path / "pt.parquet")
    top = gpd.read_parquet(r.out)
    assert top.item_id.iloc[0] == str(ds.item_id.values[k]) and top.score.iloc[0] == pytest.approx(1, abs=1e-5)
    assert set(top.group) == {"chips"}
    skipped = int(np.nonzero(~ok)[0][0])
    with pytest.raises(PointError, match="without an embedding"):
        geomoe.similar(portugal_table_cube, [(float(ds.lon[skipped]), float(ds.lat[skipped]))],
                       k=5, out=tmp_path / "skipped.parquet")
    assert not (tmp_path / "skipped.parquet").exists()


def test_outside_points_are_named_and_nothing_is_written(liverpool_grid_cube, tmp_path, capsys):
    out = tmp_path / "none.parquet"
    with pytest.raises(PointError, match=r"positive point 10,50 is outside the cube"):
        geomoe.similar(liverpool_grid_cube, ["10,50"], k=5, out=out)
    inside = _chip_lonlat(liverpool_grid_cube, 0, 0)
    rc = main(["similar", "--cube", str(liverpool_grid_cube), "--at", f"{inside[0]},{inside[1]}",
               "--negative", "-3.5,53.0", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "negative point -3.5,53 is outside the cube" in err and len(err.splitlines()) == 1
    assert not out.exists() and not out.with_suffix(".zarr").exists() and not out.with_suffix(".png").exists()


def test_refuses_outputs_geomoe_did_not_write(liverpool_grid_cube, tmp_path):
    at = [_chip_lonlat(liverpool_grid_cube, 0, 0)]
    out = tmp_path / "top.parquet"
    png = out.with_suffix(".png")
    png.write_bytes(b"my own picture")
    with pytest.raises(GeomoeError, match="geomoe did not write it"):
        geomoe.similar(liverpool_grid_cube, at, k=3, out=out, overwrite=True)
    assert png.read_bytes() == b"my own picture" and not out.exists()
    png.unlink()
    geomoe.similar(liverpool_grid_cube, at, k=3, out=out)
    with pytest.raises(GeomoeError, match="pass --overwrite"):
        geomoe.similar(liverpool_grid_cube, at, k=3, out=out)
    geomoe.similar(liverpool_grid_cube, at, k=4, out=out, overwrite=True)
    # an export is not a similarity result: never replaced by one
    exp = tmp_path / "export.parquet"
    geomoe.export(liverpool_grid_cube, exp)
    with pytest.raises(GeomoeError, match="geomoe export result"):
        geomoe.similar(liverpool_grid_cube, at, k=3, out=exp, overwrite=True)
    # a folder at the index path that geomoe did not make is left alone
    foreign = tmp_path / "idx"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(GeomoeError, match="geomoe did not write it"):
        geomoe.similar(liverpool_grid_cube, at, k=3, out=tmp_path / "x.parquet", index=foreign)
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


def test_two_time_slices_export_and_search(liverpool_two_dates_cube, tmp_path):
    """Every time slice is exported and searched; a point takes its chip at both dates."""
    import geopandas as gpd
    import xarray as xr

    from tests.evaluate.cube_fixtures import LIVERPOOL_ITEM

    cube = liverpool_two_dates_cube
    ds = geomoe.open_cube(cube)["utm30n"]
    assert ds.sizes["time"] == 2
    exp = gpd.read_parquet(geomoe.export(cube, tmp_path / "all.parquet").path)
    assert len(exp) == 40 and exp.time.nunique() == 2
    first = exp.time == exp.time.min()
    assert set(exp.item_id[first]) == {LIVERPOOL_ITEM}
    assert set(exp.item_id[~first]) == {LIVERPOOL_ITEM + "-next-day"}
    lon, lat = float(ds.lon[2, 1]), float(ds.lat[2, 1])
    r = geomoe.similar(cube, [(lon, lat)], k=40, out=tmp_path / "top.parquet")
    top = gpd.read_parquet(r.out)
    e = ds.embedding.values  # (2, 4, 5, D)
    q = _unit(e[:, 2, 1]).mean(0)
    cos = (_unit(e.reshape(-1, e.shape[-1])) @ _unit(q)).reshape(2, 4, 5)
    np.testing.assert_allclose(top.score.to_numpy(), np.sort(cos.ravel())[::-1], atol=1e-5)
    m = xr.open_zarr(r.map_path, group="utm30n")
    np.testing.assert_allclose(m.similarity.values, cos, atol=2e-3)
    assert {(row.y, row.x) for row in top.head(2).itertuples()} == {(float(ds.y[2]), float(ds.x[1]))}
