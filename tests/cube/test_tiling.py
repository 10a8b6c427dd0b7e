"""Per-tile planning (geomoe.cube.tiling) against today's whole-AOI chip enumeration, the plan
fingerprint, the plan/item files a worker opens, and the estimated progress total."""

from __future__ import annotations

import copy
import json
import datetime as dt
import random
import shutil
import warnings

import numpy as np
import pystac
import pytest
import shapely
import shapely.geometry as sg
import zarr
from pyproj import Transformer

from geomoe.chips.plan import plan_chips
from geomoe.cube.items import ItemTable, has_plan_files, load_specs, write_plan_files
from geomoe.cube.layout import CubeTile, GridSpec, plan_fingerprint, specs_from_plan
from geomoe.cube.tiling import plan_specs

from .conftest import LIVERPOOL_ITEM, copy_liverpool_catalog

EPSG = 32630


@pytest.fixture(scope="module")
def liverpool_item(repo_root) -> pystac.Item:
    p = repo_root / "catalogs" / "landsat-scenes" / LIVERPOOL_ITEM / f"{LIVERPOOL_ITEM}.json"
    it = pystac.Item.from_file(str(p))
    it.make_asset_hrefs_absolute()
    return it


def _synthetic(template: pystac.Item, n: int = 9, seed: int = 3) -> list[pystac.Item]:
    """Metadata-only items: rotated, overlapping UTM footprints (edges cross tiles at an
    angle), three per solar day, so the mosaic's priority (earliest scene first) matters."""
    rng = random.Random(seed)
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    out = []
    for k in range(n):
        cx, cy = 500_000 + rng.uniform(-20_000, 20_000), 5_925_000 + rng.uniform(-20_000, 20_000)
        poly = shapely.affinity.rotate(sg.box(cx - 14_000, cy - 9_000, cx + 14_000, cy + 9_000),
                                       rng.uniform(5, 40), origin="center")
        poly = shapely.segmentize(poly, 500.0)
        ll = shapely.transform(poly, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
        it = copy.deepcopy(template)
        it.id = f"SYN_{k:02d}"
        it.clear_links()
        it.geometry, it.bbox = sg.mapping(ll), list(ll.bounds)
        for key in ("proj:transform", "proj:shape"):
            it.properties.pop(key, None)
        it.properties["proj:bbox"] = list(poly.bounds)
        it.datetime = dt.datetime(2020, 9, 3 + 8 * (k // 3), 11, 10, 50 - k)  # 3 scenes a day
        out.append(it)
    return out


def _window_chips(chips: np.ndarray, w) -> np.ndarray:
    r0, r1, c0, c1 = w
    sel = (chips["row"] >= r0) & (chips["row"] < r1) & (chips["col"] >= c0) & (chips["col"] < c1)
    return chips[sel]


def _same_as_full_enumeration(items, aoi, tile_size):
    """Every tile: the chips planned from its window alone are exactly today's full plan's."""
    full = plan_chips(items, aoi=aoi)
    old = specs_from_plan(full, items, tile_size=tile_size)
    new = plan_specs(items, aoi, tile_size=tile_size)
    assert len(old) == len(new)
    n_tiles = 0
    for a, b in zip(old, new):
        assert isinstance(b, GridSpec) and not hasattr(b, "chips")
        assert (a.name, a.epsg, a.row_max, a.col_min, a.ny, a.nx) == (b.name, b.epsg, b.row_max, b.col_min, b.ny, b.nx)
        assert list(a.days) == list(b.days) and list(a.times) == list(b.times)
        assert [t.key for t in a.tiles()] == [t.key for t in b.tiles()]
        for tile in b.tiles():
            # the tile's candidates include every item that gives it a chip today
            assert a.tile_item_ids(tile) <= b.tile_item_ids(tile)
            cands = [it for it in items if it.id in b.tile_item_ids(tile)]
            plan = plan_chips(cands, aoi=aoi, grid="fixed", epsg=b.epsg, window=b.window(tile))
            for g_full in full.groups:
                want = _window_chips(g_full.chips, b.window(tile))
                got = [g for g in plan.groups if g.day == g_full.day]
                if not len(want):
                    assert not got
                    continue
                (g,) = got
                assert g.chips.tolist() == want.tolist()  # same chips, items, times and order
                assert [i.id for i in g.items] == sorted(set(want["item_id"]),
                                                         key=lambda i: [x.id for x in g_full.items].index(i))
            assert len(plan) == a.n_planned(tile)
            n_tiles += 1
    return old, new, n_tiles


@pytest.mark.parametrize("tile_size", [2, 5])
def test_per_tile_plan_equals_full_enumeration_liverpool(liverpool_item, repo_root, tile_size):
    from geomoe.stac.aoi import load_aoi

    for aoi in (load_aoi(repo_root / "catalogs" / "aois" / "liverpool.geojson"), sg.shape(liverpool_item.geometry)):
        old, new, n = _same_as_full_enumeration([liverpool_item], aoi, tile_size)
        assert n >= 1 and old[0].item_ids == new[0].item_ids


def test_per_tile_plan_equals_full_enumeration_synthetic_edges(liverpool_item):
    """Rotated footprints overlapping on one day, edges crossing tiles diagonally, AOI cutting them."""
    items = _synthetic(liverpool_item)
    aoi = sg.Polygon([(-3.45, 53.25), (-2.7, 53.3), (-2.75, 53.75), (-3.3, 53.62)])
    old, new, n = _same_as_full_enumeration(items, aoi, tile_size=4)
    assert n > 50 and len(new[0].days) == 3
    a, b = old[0], new[0]
    # some item overlaps a tile yet gives it no chip (an earlier scene of its day covers it there)
    assert any(a.tile_item_ids(t) < b.tile_item_ids(t) for t in b.tiles())
    exact, est = a.n_planned(), b.n_planned()
    assert not b.is_exact() and 0.8 * exact <= est <= exact  # area-based: edge chips count whole
    tile = b.tiles()[0]
    b.record_exact(tile, a.n_planned(tile))
    assert b.is_exact(tile) and b.n_planned(tile) == a.n_planned(tile)


def test_plan_fingerprint_depends_on_items_aoi_and_grid_only(liverpool_item, tmp_path):
    items = _synthetic(liverpool_item, n=6)
    aoi = sg.box(-3.4, 53.3, -2.8, 53.7)
    fp = plan_fingerprint(plan_specs(items, aoi, tile_size=4))
    assert fp == plan_fingerprint(plan_specs(list(reversed(items)), aoi, tile_size=4))  # order-free
    # a worker's specs, read back from the cube, fingerprint the same
    zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    write_plan_files(tmp_path / "c.zarr", plan_specs(items, aoi, tile_size=4), items)
    assert plan_fingerprint(load_specs(tmp_path / "c.zarr")) == fp
    assert fp != plan_fingerprint(plan_specs(items, aoi, tile_size=5))
    assert fp != plan_fingerprint(plan_specs(items, sg.box(-3.4, 53.3, -2.8, 53.69), tile_size=4))
    moved = copy.deepcopy(items)
    g = sg.shape(moved[2].geometry)
    moved[2].geometry = sg.mapping(shapely.affinity.translate(g, 0.003, 0.0))
    assert fp != plan_fingerprint(plan_specs(moved, aoi, tile_size=4))
    assert fp != plan_fingerprint(plan_specs(items[:-1], aoi, tile_size=4))


def test_progress_total_is_marked_while_estimated():
    from geomoe.embed.pipeline import Progress

    assert Progress(5, 20, 5, 0, 1.0, 15.0, True).line().startswith("5/~20 chips (25%)")
    assert Progress(20, 20, 20, 0, 1.0, 0.0).line().startswith("20/20 chips (100%)")


def test_worker_opens_its_tile_without_the_catalog(repo_root, tmp_path, ckpt_xxs):
    """A finished cube's tile is re-embedded from what the cube stores: the catalog is gone,
    nothing is re-planned, only the tile's items are loaded, and the vectors are identical."""
    from geomoe.embed.pipeline import EmbedRequest, embed_region, embed_tile, reopen

    coll, scene = copy_liverpool_catalog(repo_root, tmp_path, name="worker")
    out = tmp_path / "cube.zarr"
    lines = []
    s = embed_region(str(repo_root / "catalogs" / "aois" / "liverpool.geojson"), catalog=str(coll),
                     checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2, progress=lambda p: lines.append(p.line()))
    assert s.chips_planned == 20 and lines[-1].startswith("20/20 chips")
    assert any("/~" in ln for ln in lines)  # estimated until every tile was planned
    assert has_plan_files(out)
    with warnings.catch_warnings(record=True) as seen:  # stored as Zarr arrays: a walk does not warn
        warnings.simplefilter("always")
        names = [k for k, _ in zarr.open_group(str(out), mode="r", use_consolidated=False).members(max_depth=None)]
    assert not [w for w in seen if "not recognized" in str(w.message)]
    assert {"_geomoe/plan", "_geomoe/item_table"} <= set(names)
    before = zarr.open_array(str(out), path="utm30n/embedding", mode="r")[...]
    (coll.parent / LIVERPOOL_ITEM / f"{LIVERPOOL_ITEM}.json").unlink()
    coll.unlink()  # the catalog is unreachable now; the rasters stay
    done = zarr.open_array(str(out), path="_geomoe/utm30n/tile_done", mode="r+")
    done[:, 1, 1] = 0  # tile (1, 1) to do again, on its every solar day
    req = EmbedRequest(aoi="unused.geojson", catalog=str(coll), out=str(out), checkpoint=str(ckpt_xxs),
                       batch_size=8, tile_size=2)
    prep = reopen(req)
    assert isinstance(prep.items, ItemTable) and prep.items.loaded == 0  # nothing parsed yet
    assert not any(getattr(s, "exact", None) for s in prep.specs.values())  # no tile was planned
    tile = CubeTile("utm30n", (1, 1))
    assert tile in prep.cube.tiles()
    r = embed_tile(prep, tile, run=9, device="cpu")
    assert r["embedded"] + r["skipped"] == 4 and prep.items.loaded == 1
    after = zarr.open_array(str(out), path="utm30n/embedding", mode="r")[...]
    np.testing.assert_array_equal(after, before)
    assert (zarr.open_array(str(out), path="_geomoe/utm30n/tile_done", mode="r")[:, 1, 1] == 9).all()
