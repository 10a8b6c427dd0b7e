"""geomoe export: GeoParquet of every embedded chip, read back by geopandas and DuckDB."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from geomoe.cli.app import main
from geomoe.errors import GeomoeError
from tests.evaluate.cube_fixtures import analysis_ckpt, liverpool_grid_cube, portugal_table_cube  # noqa: F401


def _embedded(cube_path, group):
    import geomoe

    ds = geomoe.open_cube(cube_path)[group]
    e = ds.embedding.values
    return ds, e, np.isfinite(e).all(axis=-1)


def test_export_grid_cube_opens_in_geopandas_and_duckdb(liverpool_grid_cube, tmp_path):
    import duckdb
    import geopandas as gpd

    out = tmp_path / "liv.parquet"
    s = __import__("geomoe").export(liverpool_grid_cube, out)
    ds, e, ok = _embedded(liverpool_grid_cube, "utm30n")
    assert s.rows == int(ok.sum()) == 20
    gdf = gpd.read_parquet(out)
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 20
    for col in ("time", "item_id", "group", "valid_fraction", "embedding", "epsg", "x", "y"):
        assert col in gdf.columns
    assert set(gdf.item_id) == {"LC08_L2SP_204023_20200927_20201006_02_T1"}
    assert set(gdf.group) == {"utm30n"} and set(gdf.epsg) == {32630}
    # each row is its chip: polygon holds the cube's chip centre, and carries the cube's vector
    t, i, j = np.nonzero(ok)
    for r, row in enumerate(gdf.itertuples()):
        ii = int(np.nonzero(ds.y.values == row.y)[0][0])
        jj = int(np.nonzero(ds.x.values == row.x)[0][0])
        centre = shapely.Point(float(ds.lon[ii, jj]), float(ds.lat[ii, jj]))
        assert row.geometry.contains(centre)
        np.testing.assert_array_equal(np.asarray(row.embedding, np.float32), e[0, ii, jj])
        assert row.valid_fraction == pytest.approx(float(ds.valid_fraction[0, ii, jj]))
    area_km2 = gdf.to_crs(32630).area / 1e6
    np.testing.assert_allclose(area_km2, 1.44, rtol=1e-3)  # 1200 m chips
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    col = geo["columns"]["geometry"]
    assert geo["version"] == "1.1.0" and col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    con = duckdb.connect()
    n, n_items, dim, tmin = con.execute(
        f"SELECT count(*), count(DISTINCT item_id), min(len(embedding)), min(time) FROM '{out}'").fetchone()
    assert (n, n_items, dim) == (20, 1, e.shape[-1]) and str(tmin).startswith("2020-09-27")
    wkb = [bytes(r[0]) for r in con.execute(f"SELECT geometry FROM '{out}'").fetchall()]
    geoms = shapely.from_wkb(wkb)
    assert all(g.geom_type == "Polygon" and g.is_valid for g in geoms)


def test_export_table_cube_leaves_out_skipped_chips(portugal_table_cube, tmp_path):
    import geopandas as gpd

    out = tmp_path / "pt.parquet"
    __import__("geomoe").export(portugal_table_cube, out)
    ds, _, ok = _embedded(portugal_table_cube, "chips")
    gdf = gpd.read_parquet(out)
    assert len(gdf) == int(ok.sum()) == 29 and (~ok).sum() == 2
    assert sorted(gdf.item_id) == sorted(str(v) for v in ds.item_id.values[ok])
    centres = gpd.points_from_xy(ds.lon.values[ok], ds.lat.values[ok])
    by_id = dict(zip((str(v) for v in ds.item_id.values[ok]), centres))
    assert all(row.geometry.contains(by_id[row.item_id]) for row in gdf.itertuples())


def test_export_streams_in_row_groups(liverpool_grid_cube, tmp_path):
    """Blocks of whole chunks and bounded row groups: memory holds one row group, not the cube."""
    out = tmp_path / "small-groups.parquet"
    __import__("geomoe").export(liverpool_grid_cube, out, row_group=6, block_chips=4)
    md = pq.read_metadata(out)
    assert md.num_rows == 20 and md.num_row_groups >= 3
    assert max(md.row_group(k).num_rows for k in range(md.num_row_groups)) <= 6 + 4


def test_export_refuses_files_it_did_not_write(liverpool_grid_cube, tmp_path, capsys):
    foreign = tmp_path / "mine.parquet"
    foreign.write_bytes(b"PAR1 not geomoe's")
    rc = main(["export", "--cube", str(liverpool_grid_cube), "--to", str(foreign), "--overwrite"])
    assert rc == 1 and "geomoe did not write it" in capsys.readouterr().err
    assert foreign.read_bytes() == b"PAR1 not geomoe's"
    ours = tmp_path / "ours.parquet"
    assert main(["export", "--cube", str(liverpool_grid_cube), "--to", str(ours)]) == 0
    before = ours.read_bytes()
    with pytest.raises(GeomoeError, match="pass --overwrite"):
        __import__("geomoe").export(liverpool_grid_cube, ours)
    assert ours.read_bytes() == before
    assert main(["export", "--cube", str(liverpool_grid_cube), "--to", str(ours), "--overwrite"]) == 0
    assert pq.read_metadata(ours).num_rows == 20
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_item_of_each_chip_follows_the_planner_on_a_two_scene_day(repo_root, analysis_ckpt, tmp_path):
    """Two scenes of one solar day in one slice: each chip's item_id is the scene the planner
    took its pixels from (the earlier scene where its footprint reaches, else the later)."""
    import geopandas as gpd
    import pystac
    import shapely.geometry as sg

    from geomoe.chips.plan import plan_chips
    from geomoe.embed.pipeline import embed_region
    from geomoe.stac.aoi import load_aoi
    from tests.cube.conftest import copy_liverpool_catalog

    coll_path, scene = copy_liverpool_catalog(repo_root, tmp_path, name="two-scenes")
    coll = pystac.Collection.from_file(str(coll_path))
    (item,) = list(coll.get_items())
    full = sg.shape(item.geometry)
    minx, miny, maxx, maxy = full.bounds
    west = item.clone()
    west.id = item.id + "-west-early"
    west.geometry = sg.mapping(full.intersection(sg.box(minx, miny, -3.095, maxy)))
    late = item.clone()
    late.id = item.id + "-late"
    late.datetime = item.datetime.replace(minute=item.datetime.minute + 1)
    coll.remove_item(item.id)
    for it in (west, late):
        it.make_asset_hrefs_absolute()
        coll.add_item(it)
    coll.normalize_hrefs(str(tmp_path / "cat"))
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    aoi = str(repo_root / "catalogs" / "aois" / "liverpool.geojson")
    cube = tmp_path / "two.zarr"
    embed_region(aoi, catalog=str(coll_path), checkpoint=analysis_ckpt, out=cube, batch_size=8,
                 tile_size=2)
    out = tmp_path / "two.parquet"
    geomoe_export = __import__("geomoe").export
    geomoe_export(cube, out)
    gdf = gpd.read_parquet(out)
    items = [west, late]
    plan = plan_chips(items, aoi=load_aoi(aoi), grid="fixed")
    planned = {(int(r) + 0.5, int(c) + 0.5): str(i) for g in plan.groups
               for r, c, i in zip(g.chips["row"], g.chips["col"], g.chips["item_id"])}
    got = {(row.y / 1200, row.x / 1200): row.item_id for row in gdf.itertuples()}
    assert got == planned
    assert set(got.values()) == {west.id, late.id}  # both scenes own chips
