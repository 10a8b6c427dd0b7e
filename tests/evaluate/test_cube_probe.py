"""Probe on an embedding cube with labels from vector files: real cubes (XXS seeded weights),
real labels (BigEarthNet points; weak Liverpool polygons from the scene's own pixels)."""

from __future__ import annotations

import csv
import json
import warnings

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
from shapely.geometry import LineString, Point

import geomoe
from geomoe.cli import main
from geomoe.evaluate.cube_access import OutputExistsError
from geomoe.evaluate.cube_labels import DROP_REASONS, LabelFileError, label_chips
from geomoe.evaluate.cube_probe import random_folds, spatial_blocks, spatial_folds
from geomoe.evaluate.labels import BEN19_CLASSES

from .conftest import ANALYSIS_DATA, fixture_script

BEN_POINTS = ANALYSIS_DATA / "bigearthnet_labels19.gpkg"
LIVERPOOL_POLYGONS = ANALYSIS_DATA / "liverpool_weak_labels.gpkg"


def test_ben_points_on_the_chips_table_cube(ben_table_cube, tmp_path, capsys):
    """The interface: geomoe probe --cube --labels --label-column --report, multi-label."""
    report = tmp_path / "ben.json"
    rc = main(["probe", "--cube", str(ben_table_cube), "--labels", str(BEN_POINTS),
               "--label-column", "labels_19", "--report", str(report), "--folds", "3"])
    assert rc == 0
    assert "random CV" in capsys.readouterr().out
    rep = json.loads(report.read_text())
    ds = geomoe.open_cube(ben_table_cube)["chips"]
    embedded = np.isfinite(ds.embedding.values).all(1)
    pts = gpd.read_file(BEN_POINTS)
    # every point accounted for: 199 labelled patches, one without a label; the cube skipped
    # (NaN) the fill/cloud patches, whose labels are counted, not lost
    assert rep["n_labels_total"] == len(pts) == 200
    assert rep["labels_dropped_by_reason"]["empty_class"] == (pts.labels_19 == "[]").sum() == 1
    assert rep["labels_dropped_by_reason"]["no_valid_chip"] == (~embedded).sum() == 4
    assert rep["n_labels_used"] + rep["n_labels_dropped"] == 200
    assert set(rep["labels_dropped_by_reason"]) == set(DROP_REASONS)
    assert rep["task"] == "cube-multilabel" and set(rep["classes"]) <= set(BEN19_CLASSES)
    for cv in ("cv_random", "cv_spatial"):
        assert rep[cv]["metric"] == "micro_map" and 0 <= rep[cv]["std"] < rep[cv]["mean"] <= 1
        assert rep[cv]["n_folds"] == 3 and len(rep[cv]["folds"]) == 3
    # far above the constant-prior probe (micro AP of a constant = label prevalence)
    y = np.asarray([[c in json.loads(v) for c in rep["classes"]] for v in pts.labels_19 if v != "[]"])
    assert rep["cv_random"]["mean"] > 2 * y.mean()
    # prediction map for every embedded chip, opens in xarray
    m = xr.open_zarr(report.with_suffix(".zarr"), group="chips")
    cls, prob = m["class"].values, m["class_probability"].values
    assert ((cls >= 0) == embedded).all() and rep["n_chips_predicted"] == embedded.sum()
    assert np.nanmin(prob) >= 0 and np.nanmax(prob) <= 1
    assert list(m.class_name.values) == rep["classes"]
    np.testing.assert_allclose(m.lon.values, ds.lon.values)
    rows = list(csv.DictReader(report.with_suffix(".csv").open()))
    assert len(rows) == rep["n_chips"] == rep["n_labels_used"]
    assert report.with_suffix(".png").stat().st_size > 20_000


def test_points_take_the_chip_that_contains_them(ben_table_cube, tmp_path):
    """Each BigEarthNet point lands on its own patch's chip (item id = patch id)."""
    cube = geomoe.open_cube(ben_table_cube)
    chips = label_chips(cube, BEN_POINTS, "labels_19")
    pts = gpd.read_file(BEN_POINTS).set_index("patch_id")
    ids = cube["chips"].item_id.values[chips.row]
    assert len(set(ids)) == len(ids) == len(chips)
    for k, pid in enumerate(ids):
        want = set(json.loads(pts.loc[pid, "labels_19"]))
        assert {c for c, v in zip(chips.classes, chips.y[k]) if v} == want
        p = gpd.GeoSeries([pts.loc[pid, "geometry"]], crs=4326).to_crs(int(chips.epsg[k]))[0]
        assert max(abs(p.x - chips.cx[k]), abs(p.y - chips.cy[k])) <= 600
    # the same labels as real lists in GeoParquet, in another CRS: the same chips and targets
    pq = tmp_path / "ben.parquet"
    g = gpd.read_file(BEN_POINTS)
    g["labels_19"] = g["labels_19"].map(json.loads)
    g.to_crs(3035).to_parquet(pq)
    again = label_chips(cube, pq, "labels_19")
    assert again.classes == chips.classes and again.dropped == chips.dropped
    np.testing.assert_array_equal(again.y, chips.y)
    np.testing.assert_array_equal(again.row, chips.row)


def test_label_values_lists_json_text_separator_and_plain():
    from geomoe.evaluate.cube_labels import _parse_values

    assert _parse_values([["a", "b"], '["c"]', "[]", None], None) == ([["a", "b"], ["c"], [], []], True)
    assert _parse_values(["a; b", "", "c"], ";") == ([["a", "b"], [], ["c"]], True)
    assert _parse_values(["water", 3, float("nan"), "[not json"], None) == (
        [["water"], ["3"], [], ["[not json"]], False)


def test_polygon_rules_covers_and_centre(change_pair_cube):
    """covers: chips entirely inside a polygon; centre: chips whose centre it holds."""
    cube = geomoe.open_cube(change_pair_cube[0])
    polys = gpd.read_file(LIVERPOOL_POLYGONS)
    got = {}
    for rule in ("covers", "centre"):
        chips = label_chips(cube, LIVERPOOL_POLYGONS, "class", time="2020-09-27", polygon_rule=rule)
        got[rule] = {(int(r), int(c)): chips.classes[int(k)] for r, c, k in zip(chips.row, chips.col, chips.y)}
        for (r, c), name in got[rule].items():
            ds = cube["utm30n"]
            x, y = float(ds.x[c]), float(ds.y[r])
            box = shapely.box(x - 600, y - 600, x + 600, y + 600)
            mine = polys[polys["class"] == name].union_all()
            assert mine.covers(box) if rule == "covers" else mine.contains(Point(x, y))
    assert set(got["covers"]) < set(got["centre"])
    assert set(got["centre"].values()) == {"land", "urban", "water"}
    assert set(got["covers"].values()) == {"water"}  # the land/urban polygons are too ragged


def test_weak_polygons_probe_on_a_grid_cube(change_pair_cube, tmp_path):
    cube, _ = change_pair_cube
    report = tmp_path / "liv.json"
    rep = geomoe.probe(cube=cube, labels=LIVERPOOL_POLYGONS, label_column="class", report=report,
                       time="2020-09-27", polygon_rule="centre")
    assert rep["task"] == "cube-multiclass" and rep["classes"] == ["land", "urban", "water"]
    # the small land polygon at the east edge holds only the centre of a partial (skipped) chip
    assert rep["n_labels_used"] == 3 and rep["labels_dropped_by_reason"]["no_valid_chip"] == 1
    assert rep["n_labels_dropped"] == 1
    assert rep["cv_spatial"]["n_blocks"] >= 4 and rep["cv_spatial"]["block_size_m"] == 6000
    for cv in ("cv_random", "cv_spatial"):
        assert rep[cv]["metric"] == "accuracy" and 0 <= rep[cv]["mean"] <= 1 and rep[cv]["std"] >= 0
    m = xr.open_zarr(report.with_suffix(".zarr"), group="utm30n")
    assert m.rio.crs.to_epsg() == 32630 and m["class"].dims == ("y", "x")
    # GDAL (what QGIS opens it with) reads the map with its CRS and chip grid
    import rasterio

    with rasterio.open(f'ZARR:"{report.with_suffix(".zarr")}":/utm30n/class') as src:
        assert src.crs.to_epsg() == 32630 and src.transform.a == 1200 and src.transform.e == -1200
        assert src.transform.c == float(m.x[0]) - 600 and src.transform.f == float(m.y[0]) + 600
        np.testing.assert_array_equal(src.read(1), m["class"].values)
    # the map, fitted on all labels, gives most labelled chips their label
    rows = list(csv.DictReader(report.with_suffix(".csv").open()))
    cls = m["class"].values
    hit = [rep["classes"][cls[int(r["row_or_chip"]), int(r["col"])]] == r["label"] for r in rows]
    assert np.mean(hit) >= 0.9
    # the map covers the cube's embedded chips at that date, and nothing else
    emb = geomoe.open_cube(cube)["utm30n"].embedding.isel(time=0).values
    assert ((cls >= 0) == np.isfinite(emb).all(-1)).all()


def test_every_dropped_label_is_counted_by_reason(change_pair_cube, tmp_path):
    """Labels in another CRS (web mercator) with every kind of problem, each counted."""
    cube = geomoe.open_cube(change_pair_cube[0])
    ds = cube["utm30n"]
    emb = ds.embedding.isel(time=0).values
    ok = np.isfinite(emb).all(-1)
    xs, ys = ds.x.values, ds.y.values
    r_ok, c_ok = np.nonzero(ok)
    r_nan, c_nan = np.nonzero(~ok)

    def at(r, c, dx=100.0):
        return Point(xs[c] + dx, ys[r] - dx)

    feats = []  # (class, geometry in EPSG:32630)
    for i in range(6):  # 3 + 3 good labels of two classes, distinct chips
        feats.append(("a" if i < 3 else "b", at(r_ok[i], c_ok[i])))
    feats += [("", at(r_ok[10], c_ok[10])),                       # empty_class
              ("a", None),                                          # no_geometry
              ("a", LineString([(xs[2], ys[2]), (xs[3], ys[3])])),  # unsupported_geometry
              ("a", Point(xs[0] - 50_000, ys[0])),                  # outside_cube
              ("a", at(r_nan[0], c_nan[0])),                        # no_valid_chip
              ("a", at(r_ok[20], c_ok[20])), ("b", at(r_ok[20], c_ok[20], 300.0)),  # conflict x2
              ("c", at(r_ok[30], c_ok[30]))]                        # class_too_rare
    gdf = gpd.GeoDataFrame({"cls": [f[0] for f in feats]}, geometry=[f[1] for f in feats],
                           crs=32630).to_crs(3857)
    path = tmp_path / "mixed.geojson"
    gdf.to_file(path, driver="GeoJSON")
    chips = label_chips(cube, path, "cls", time="2020-09-27")
    assert chips.used == 6 and chips.n_features == len(feats)
    assert chips.dropped == {"empty_class": 1, "no_geometry": 1, "unsupported_geometry": 1,
                             "outside_cube": 1, "no_valid_chip": 1, "conflicting_classes": 2,
                             "class_too_rare": 1}
    assert chips.classes == ["a", "b"] and list(np.bincount(chips.y)) == [3, 3]
    got = sorted(zip(chips.row.tolist(), chips.col.tolist()))
    assert got == sorted(zip(r_ok[:6].tolist(), c_ok[:6].tolist()))
    with pytest.raises(LabelFileError, match="'nope' is not a column.*cls"):
        label_chips(cube, path, "nope")
    with warnings.catch_warnings():  # pyogrio warns that the file will have no CRS: the point
        warnings.simplefilter("ignore")
        gdf.set_crs(None, allow_override=True).to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(LabelFileError, match="declares no CRS"):
        label_chips(cube, tmp_path / "nocrs.gpkg", "cls")


def test_spatial_folds_hold_out_whole_blocks():
    from geomoe.evaluate.cube_labels import LabelledChips

    rng = np.random.default_rng(0)
    n = 200
    cx, cy = rng.uniform(0, 60_000, n), rng.uniform(0, 30_000, n)
    chips = LabelledChips(x=np.zeros((n, 2)), y=rng.integers(0, 3, n), classes=["a", "b", "c"],
                          multilabel=False, group=np.array(["g"] * n, dtype=object),
                          row=np.zeros(n, int), col=np.zeros(n, int), cx=cx, cy=cy,
                          epsg=np.full(n, 32630), lon=cx, lat=cy)
    blocks = spatial_blocks(chips, 6000.0)
    assert len(np.unique(blocks)) == 50  # 10 x 5 blocks of 6 km
    folds, k = spatial_folds(blocks, 5, seed=0)
    assert k == 5
    for b in np.unique(blocks):
        assert len(np.unique(folds[blocks == b])) == 1  # a block never straddles folds
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= np.bincount(blocks).max()
    rf, kr = random_folds(chips.y, False, 5, seed=0)
    assert kr == 5 and any(len(np.unique(rf[blocks == b])) > 1 for b in np.unique(blocks))


def test_outputs_not_geomoes_are_refused_before_any_work(change_pair_cube, tmp_path):
    cube, _ = change_pair_cube
    report = tmp_path / "r.json"
    foreign = report.with_suffix(".zarr")
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not a geomoe probe-map"):
        geomoe.probe(cube=cube, labels=LIVERPOOL_POLYGONS, label_column="class", report=report,
                     time="2020-09-27", polygon_rule="centre", overwrite=True)
    assert not report.exists() and (foreign / "mine.txt").read_text() == "keep"
    with pytest.raises(Exception, match="missing: --label-column"):
        geomoe.probe(cube=cube, labels=LIVERPOOL_POLYGONS, report=report)


def test_fixture_script_is_deterministic(tmp_path):
    """The committed label fixtures are what scripts/make_analysis_fixtures.py makes."""
    mod = fixture_script()
    for make, name, key in ((mod.ben_points, "bigearthnet_labels19.gpkg", "patch_id"),
                            (mod.liverpool_labels, "liverpool_weak_labels.gpkg", "class")):
        new = gpd.read_file(make(tmp_path / name))
        old = gpd.read_file(ANALYSIS_DATA / name)
        assert new.crs == old.crs and list(new.columns) == list(old.columns)
        assert (new.drop(columns="geometry") == old.drop(columns="geometry")).all().all()
        assert new.geometry.geom_equals_exact(old.geometry, 1e-6).all(), key


def test_chips_table_case_sees_what_the_bundled_sample_probe_sees(ben_table_cube, ben_data, xxs_checkpoint):
    """The bundled-sample probe (`geomoe probe`, re-embedding) and the cube probe on the chips
    table of the same collection with the BigEarthNet points: the same 195 patches, the same
    19-class labels and the same embeddings (same checkpoint)."""
    from geomoe.evaluate.probe import embed_data, load_probe_model

    cube = geomoe.open_cube(ben_table_cube)
    chips = label_chips(cube, BEN_POINTS, "labels_19")
    ids = [str(i) for i in cube["chips"].item_id.values[chips.row]]
    pos = {str(i): k for k, i in enumerate(ben_data.chips.item_id)}
    assert sorted(ids) == sorted(pos) and len(ids) == 195
    k = [pos[i] for i in ids]
    col = [BEN19_CLASSES.index(c) for c in chips.classes]
    np.testing.assert_array_equal(chips.y, ben_data.y[k][:, col])
    assert ben_data.y[k].sum() == chips.y.sum()  # no label outside the classes seen
    model, _ = load_probe_model(xxs_checkpoint)
    np.testing.assert_allclose(chips.x, embed_data(model, ben_data)[k], atol=1e-5)
