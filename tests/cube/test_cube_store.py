"""The Zarr cube store on its own: layout, CRS, NaN semantics, alignment, lock, identity.

Real arrays written through the real Cube API (no model needed): the layout comes from a
chip plan built by hand the same way geomoe.chips.plan.plan_chips reports one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import xarray as xr
import zarr

from geomoe.cube.store import (Cube, CubeMismatchError, CubeWriteError, MisalignedRegionError, ensure_writable,
                         open_group)
from geomoe.embed.lock import CubeLockedError, store_lock
from geomoe.cube.layout import CubeTile, group_name, specs_from_plan

ITEM = types.SimpleNamespace(id="L1", bbox=[-3.2, 53.3, -2.9, 53.5],
                             datetime=__import__("datetime").datetime(2020, 9, 27, 11, 10, 50),
                             properties={}, geometry=None)
IDENTITY = {"checkpoint_sha256": "a" * 64, "model_size": "XXS", "embed_dim": 8, "pooling": "mean"}


def _chips(rows, cols, time, item):
    a = np.empty(len(rows), dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "U8")])
    a["row"], a["col"], a["time"], a["item_id"] = rows, cols, np.datetime64(time, "s"), item
    return a


def _specs(tile=4):
    rr, cc = np.meshgrid(np.arange(4500, 4507), np.arange(300, 311), indexing="ij")
    grp = types.SimpleNamespace(epsg=32630, grid="fixed",
                                chips=_chips(rr.ravel(), cc.ravel(), "2020-09-27T11:10:50", "L1"))
    return specs_from_plan(types.SimpleNamespace(groups=[grp]), [ITEM], tile_size=tile)


def _create(path, identity=IDENTITY, dtype="float32", tile=4):
    ensure_writable(path)  # what embed_region does before taking the lock
    with store_lock(path):
        return Cube.create_or_open(path, _specs(tile), dim=8, dtype=dtype, identity=identity,
                                   attrs={"geomoe:query": {"aoi": {"geometry": None}}}, items=[])


def _fill(cube, run=1, skip=()):
    for tile in cube.pending_tiles():
        spec = cube.specs[tile.group]
        ys, xs = spec.region(tile)
        shape = (1, ys.stop - ys.start, xs.stop - xs.start)
        emb = np.full(shape + (8,), 10 * tile.key[0] + tile.key[1], np.float32)
        valid = np.full(shape, 0.97, np.float32)
        for (i, j) in skip:  # skipped for cloud: valid recorded, embedding NaN
            if ys.start <= i < ys.stop and xs.start <= j < xs.stop:
                emb[0, i - ys.start, j - xs.start] = np.nan
                valid[0, i - ys.start, j - xs.start] = 0.3
        cube.write_grid_tile(tile, emb, valid, run)


def test_group_names():
    assert group_name(32630) == "utm30n" and group_name(32721) == "utm21s"
    assert group_name(3031) == "epsg3031"


def test_layout_crs_coords_and_nan_semantics(tmp_path):
    cube = _create(tmp_path / "c.zarr")
    ds0 = open_group(cube.path, "utm30n")
    # before any tile: everything NaN (never computed), no chunk data stored
    assert np.isnan(ds0.embedding.values).all() and np.isnan(ds0.valid_fraction.values).all()
    assert not (cube.path / "utm30n" / "embedding" / "c").exists()
    _fill(cube, skip=[(1, 2)])
    ds = open_group(cube.path, "utm30n")
    assert ds.embedding.dims == ("time", "y", "x", "dim") and ds.embedding.shape == (1, 7, 11, 8)
    assert ds.embedding.dtype == np.float32
    assert ds.rio.crs.to_epsg() == 32630
    assert ds.embedding.encoding["chunks"] == (1, 4, 4, 8)
    # chip centres on the fixed 1200 m grid, north-up (y descending)
    np.testing.assert_allclose(ds.x.values, (np.arange(300, 311) + 0.5) * 1200)
    np.testing.assert_allclose(ds.y.values, (np.arange(4506, 4499, -1) + 0.5) * 1200)
    assert ds.lat.dims == ("y", "x") and 48 < float(ds.lat.min()) < float(ds.lat.max()) < 49
    assert float(ds.lat[0, 0]) > float(ds.lat[-1, 0])  # north at the top
    # per-tile values landed in their tile
    assert float(ds.embedding[0, 0, 0, 0]) == 0 and float(ds.embedding[0, 6, 10, 0]) == 12
    # skipped-for-cloud: NaN embedding, finite valid fraction (distinguishable from "never")
    assert np.isnan(ds.embedding[0, 1, 2].values).all() and float(ds.valid_fraction[0, 1, 2]) == pytest.approx(0.3)
    assert cube.done_map("utm30n").tolist() == [[[1, 1, 1], [1, 1, 1]]]  # (solar day, tile_y, tile_x)
    assert cube.pending_tiles() == []


def test_float16_on_request(tmp_path):
    cube = _create(tmp_path / "h.zarr", dtype="float16")
    _fill(cube)
    assert open_group(cube.path, "utm30n").embedding.dtype == np.float16


def test_misaligned_region_is_refused_and_store_intact(tmp_path):
    cube = _create(tmp_path / "m.zarr")
    _fill(cube)
    before = open_group(cube.path, "utm30n").embedding.values.copy()
    bad = xr.Dataset({"embedding": (("time", "y", "x", "dim"), np.zeros((1, 3, 4, 8), np.float32))})
    with pytest.raises(MisalignedRegionError, match="not aligned"):
        cube.write_region("utm30n", bad, {"time": slice(0, 1), "y": slice(1, 4), "x": slice(0, 4)})
    # the last partial chunk (y 4:7 of 7) is aligned: allowed
    ok = xr.Dataset({"embedding": (("time", "y", "x", "dim"), np.zeros((1, 3, 4, 8), np.float32))})
    cube.write_region("utm30n", ok, {"time": slice(0, 1), "y": slice(4, 7), "x": slice(0, 4)})
    after = open_group(cube.path, "utm30n").embedding.values
    np.testing.assert_array_equal(after[:, :4], before[:, :4])
    assert (after[:, 4:7, 0:4] == 0).all()


def test_store_of_another_model_is_refused_and_left_intact(tmp_path):
    cube = _create(tmp_path / "o.zarr")
    _fill(cube)
    before = open_group(cube.path, "utm30n").embedding.values.copy()
    other = {**IDENTITY, "checkpoint_sha256": "b" * 64}
    with pytest.raises(CubeMismatchError, match="different model"):
        _create(tmp_path / "o.zarr", identity=other)
    with pytest.raises(CubeMismatchError, match=r"different request for group utm30n.*tile_size=4 \(you asked 2\)"):
        _create(tmp_path / "o.zarr", tile=2)  # another layout = another request
    np.testing.assert_array_equal(open_group(cube.path, "utm30n").embedding.values, before)


def test_unwritable_or_foreign_output(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(CubeWriteError, match="cannot write the cube"):
        _create(f / "c.zarr")
    d = tmp_path / "my-documents"
    d.mkdir()
    (d / "thesis.txt").write_text("precious")
    with pytest.raises(CubeWriteError, match="not a geomoe cube"):
        _create(d)
    assert (d / "thesis.txt").read_text() == "precious"


def test_lock_refuses_second_writer_and_dies_with_its_holder(tmp_path):
    path = tmp_path / "l.zarr"
    path.mkdir()
    with store_lock(path):
        with pytest.raises(CubeLockedError, match="another geomoe run"):
            with store_lock(path):
                pass
    # a holder killed with SIGKILL leaves no stale lock
    code = textwrap.dedent(f"""
        import sys, time
        from geomoe.embed.lock import store_lock
        with store_lock({str(path)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(CubeLockedError):
            with store_lock(path):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
    with store_lock(path):
        pass


def test_tile_parse_roundtrip():
    t = CubeTile("utm30n", (1, 2))
    assert CubeTile.parse(str(t)) == t and str(CubeTile("chips", (3,))) == "chips/3"


def test_root_listing_has_only_zarr_nodes(tmp_path):
    cube = _create(tmp_path / "r.zarr")
    _fill(cube)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr warns about non-Zarr objects in a hierarchy
        names = sorted(zarr.open_group(str(cube.path), mode="r").group_keys())
    assert names == ["_geomoe", "utm30n"] and sorted(zarr.open_group(str(cube.path), mode="r").array_keys()) == ["stac_items"]
    assert not list(cube.path.rglob("*.partial"))
