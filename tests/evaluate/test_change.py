"""Change maps on a real two-date cube: the Liverpool scene and a copy a year later with one
block of chips replaced by real Greenland pixels (scripts/make_analysis_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import geomoe
from geomoe.cli import main
from geomoe.evaluate.change import cosine_distance
from geomoe.evaluate.cube_access import OutputExistsError, WindowError, composite, parse_window


def _block_mask(ds: xr.Dataset, block: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = block
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    return (xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)


def test_change_map_lights_up_exactly_the_replaced_block(change_pair_cube, tmp_path, capsys):
    cube, block = change_pair_cube
    out = tmp_path / "change.zarr"
    assert main(["change", "--cube", str(cube), "--from", "2020-09-27", "--to", "2021-09-27",
                 "--out", str(out)]) == 0
    assert "chips compared" in capsys.readouterr().out
    m = xr.open_zarr(out, group="utm30n")
    d = m.cosine_distance.values
    src = geomoe.open_cube(cube)["utm30n"]
    valid = np.isfinite(src.embedding.values).all(-1)  # (time, y, x)
    assert (np.isfinite(d) == (valid[0] & valid[1])).all()  # NaN unless valid at both dates
    inside = _block_mask(m, block)
    assert inside.sum() == 6 and np.isfinite(d[inside]).all()
    top = np.argsort(np.nan_to_num(d, nan=-1).ravel())[::-1][:6]
    assert set(top) == set(np.flatnonzero(inside.ravel()))  # the six highest: the block
    assert np.nanmax(d[~inside]) < 0.05 * d[inside].min()   # low everywhere else
    assert m.rio.crs.to_epsg() == 32630 and (m.n_from.values[inside] == 1).all()
    import rasterio

    with rasterio.open(f'ZARR:"{out}":/utm30n/cosine_distance') as src:  # GDAL, as QGIS opens it
        assert src.crs.to_epsg() == 32630 and src.transform.a == 1200
        np.testing.assert_array_equal(src.read(1), d)
    png = out.with_suffix(".png")
    assert png.stat().st_size > 10_000
    import matplotlib.image as mpimg

    assert mpimg.imread(png).std() > 0.05


def test_windows_and_the_median_composite(change_pair_cube, tmp_path):
    cube, block = change_pair_cube
    # both dates in one window: a chip's reference is the median of its two observations
    res = geomoe.change(cube, "2020/2021", "2021-09", tmp_path / "c.zarr", plot=False)
    m = xr.open_zarr(tmp_path / "c.zarr", group="utm30n")
    inside = _block_mask(m, block)
    assert (m.n_from.values[inside] == 2).all() and (m.n_to.values[inside] == 1).all()
    emb = geomoe.open_cube(cube)["utm30n"].embedding.values
    r, c = np.argwhere(inside)[0]
    want = cosine_distance(np.median(emb[:, r, c], axis=0), emb[1, r, c])
    assert m.cosine_distance.values[r, c] == pytest.approx(float(want), rel=1e-5)
    assert res["groups"]["utm30n"]["from_dates"] == ["2020-09-27", "2021-09-27"]
    with pytest.raises(WindowError, match="utm30n: 2020-09-27, 2021-09-27"):
        geomoe.change(cube, "2019", "2021", tmp_path / "none.zarr")
    assert not (tmp_path / "none.zarr").exists()


def test_composite_takes_the_median_of_valid_observations_only():
    block = np.array([[[1.0, 1.0]], [[np.nan, np.nan]], [[3.0, 5.0]], [[2.0, 2.0]]])  # (T=4, 1, D=2)
    emb, n = composite(block)
    assert n.tolist() == [3] and emb.tolist() == [[2.0, 2.0]]
    emb, n = composite(np.full((2, 1, 2), np.nan))
    assert n.tolist() == [0] and np.isnan(emb).all()


def test_parse_window():
    w = parse_window("2020-09")
    assert w.holds(np.array(["2020-09-30T23:00", "2020-10-01T00:00"], dtype="datetime64[ns]")).tolist() == [True, False]
    w = parse_window("2020-09-27/2021")
    assert w.holds(np.array(["2020-09-27T11:10", "2021-12-31T23:59", "2022-01-01"], dtype="datetime64[ns]")).tolist() == [True, True, False]
    for bad in ("27/09/2020", "2021/2020", "soon"):
        with pytest.raises(WindowError):
            parse_window(bad)


def test_change_refuses_what_it_did_not_write(change_pair_cube, tmp_path):
    cube, _ = change_pair_cube
    out = tmp_path / "x.zarr"
    out.mkdir()
    (out / "data").write_text("someone's")
    with pytest.raises(OutputExistsError, match="not a geomoe change-map"):
        geomoe.change(cube, "2020", "2021", out, overwrite=True)
    assert (out / "data").read_text() == "someone's"
    ours = tmp_path / "y.zarr"
    geomoe.change(cube, "2020", "2021", ours)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        geomoe.change(cube, "2020", "2021", ours)
    geomoe.change(cube, "2020", "2021", ours, overwrite=True)
    assert xr.open_zarr(ours, group="utm30n").cosine_distance.notnull().sum() > 0


def test_cli_errors_are_one_line_and_write_nothing(change_pair_cube, tmp_path, capsys):
    cube, _ = change_pair_cube
    out = tmp_path / "c.zarr"
    assert main(["change", "--cube", str(cube), "--from", "soon", "--to", "2021", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("geomoe change: error: date 'soon'")
    assert main(["change", "--cube", str(tmp_path / "none.zarr"), "--from", "2020", "--to", "2021",
                 "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".png").exists()
