"""Fixed grid on real scenes: lat/lon, pixels vs direct reads, alignment across items, mosaics."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import rasterio
import rasterio.warp
from pyproj import Transformer
from rasterio.transform import rowcol

from geomoe.chips.plan import CHIP_METERS, CHIP_PIXELS, iter_chips, plan_chips
from geomoe.chips.meta import encode_hour, encode_week

from .conftest import LIVERPOOL, chip_pixel_centres, derive_item


def _all(stream):
    batches = list(stream)
    cat = lambda f: np.concatenate([getattr(b, f) for b in batches])  # noqa: E731
    return batches, cat


def _deg(sc: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(sc[:, 0], sc[:, 1]))


def test_liverpool_latlon_inside_raster_bounds(bundled_items, aois, shared_data):
    assert (CHIP_PIXELS, CHIP_METERS) == (40, 1200.0)
    item = bundled_items[LIVERPOOL]
    aoi = aois("liverpool")
    batches, cat = _all(iter_chips([item], aoi=aoi, batch_size=7, min_valid=0.9))
    assert [len(b) for b in batches[:-1]] == [7] * (len(batches) - 1)
    idx, x, y = cat("index"), cat("x"), cat("y")
    assert len(idx) >= 10
    assert set(idx["epsg"]) == {32630}
    np.testing.assert_array_equal(x, (idx["col"] + 0.5) * 1200)
    np.testing.assert_array_equal(y, (idx["row"] + 0.5) * 1200)
    # expected centre lat/lon with pyproj, and inside the raster's WGS84 bounds (the source stack)
    lon_e, lat_e = Transformer.from_crs(32630, 4326, always_xy=True).transform(x, y)
    np.testing.assert_allclose(_deg(cat("lat")), lat_e, atol=1e-4)
    np.testing.assert_allclose(_deg(cat("lon")), lon_e, atol=1e-4)
    src = shared_data / "xlandsat-l2sp" / f"{LIVERPOOL}_SR_stack.tif"
    with rasterio.open(src) as ds:
        w, s, e, n = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    assert np.all((lat_e > s) & (lat_e < n) & (lon_e > w) & (lon_e < e))
    # and inside the AOI's bounds (chips intersect the AOI)
    aw, as_, ae, an = aoi.bounds
    assert np.all((lat_e > as_ - 0.02) & (lat_e < an + 0.02) & (lon_e > aw - 0.02) & (lon_e < ae + 0.02))
    # time metadata from the real datetime 2020-09-27T11:10:50Z (ISO week 39, hour 11)
    assert set(idx["time"].astype(str)) == {"2020-09-27T11:10:50"}
    a_h, a_w = 2 * np.pi * 11 / 24, 2 * np.pi * 39 / 52
    np.testing.assert_allclose(cat("hour"), np.tile([np.sin(a_h), np.cos(a_h)], (len(idx), 1)), atol=1e-6)
    np.testing.assert_allclose(cat("week"), np.tile([np.sin(a_w), np.cos(a_w)], (len(idx), 1)), atol=1e-6)
    assert encode_hour(["2020-09-27T11:10:50Z"]).tolist() == cat("hour")[:1].tolist()
    assert encode_week(["2020-09-27T11:10:50Z"]).tolist() == cat("week")[:1].tolist()


def test_liverpool_pixels_match_direct_read_of_source(bundled_items, shared_data):
    """Every pixel of every chip equals the source stack's pixel at rasterio.index(centre)."""
    item = bundled_items[LIVERPOOL]
    batches, cat = _all(iter_chips([item], min_valid=0.0))
    px, idx = cat("pixels"), cat("index")
    assert px.dtype == np.uint16 and px.shape[1:] == (7, 40, 40)
    src = shared_data / "xlandsat-l2sp" / f"{LIVERPOOL}_SR_stack.tif"
    with rasterio.open(src) as ds:
        stack = ds.read()
        tr = ds.transform
    for k in range(len(idx)):
        xs, ys = chip_pixel_centres(int(idx["row"][k]), int(idx["col"][k]))
        X, Y = np.meshgrid(xs, ys)
        r, c = rowcol(tr, X.ravel(), Y.ravel())
        r, c = np.asarray(r).reshape(40, 40), np.asarray(c).reshape(40, 40)
        inside = (r >= 0) & (r < stack.shape[1]) & (c >= 0) & (c < stack.shape[2])
        exp = np.zeros((7, 40, 40), np.uint16)
        exp[:, inside] = stack[:, r[inside], c[inside]]
        np.testing.assert_array_equal(px[k], exp, err_msg=f"chip {idx[k]}")
    assert (cat("valid") == 1.0).sum() > 40  # the interior chips are whole
    # the published normalisation of the same DN (a model's own: model.preprocess)
    from geomoe.chips.bands import PUBLISHED

    z = PUBLISHED(batches[0].pixels)
    assert z.dtype == np.float32 and z.shape == batches[0].pixels.shape


def test_lazy_xarray_path_matches_chips(bundled_items):
    from geomoe.chips.assets import load_xarray

    item = bundled_items[LIVERPOOL]
    _, cat = _all(iter_chips([item], min_valid=0.0))
    px, idx = cat("pixels"), cat("index")
    r0, r1 = int(idx["row"].min()), int(idx["row"].max()) + 1
    c0, c1 = int(idx["col"].min()), int(idx["col"].max()) + 1
    da = load_xarray([item], bbox=(c0 * 1200, r0 * 1200, c1 * 1200, r1 * 1200))
    assert da.dtype == np.uint16 and da.sizes["band"] == 7
    arr = da.isel(time=0).values  # (7, H, W), north at the top
    assert arr.shape == (7, (r1 - r0) * 40, (c1 - c0) * 40)
    for k in range(len(idx)):
        i, j = (r1 - 1 - int(idx["row"][k])) * 40, (int(idx["col"][k]) - c0) * 40
        np.testing.assert_array_equal(arr[:, i : i + 40, j : j + 40], px[k])
    # the same through a plan group
    from geomoe.chips.plan import load_group

    da2 = load_group(plan_chips([item]).groups[0])
    np.testing.assert_array_equal(da2.isel(time=0).values, arr)


def test_fixed_grid_lines_up_across_items(bundled_items, tmp_path):
    """A crop with another origin and date gives the same (row, col) for the same ground chip."""
    item = bundled_items[LIVERPOOL]
    other = derive_item(item, tmp_path / "crop", "crop", window=(37, 53, 200, 300),
                        when=dt.datetime(2021, 3, 1, 11, 0, tzinfo=dt.timezone.utc))
    plan = plan_chips([item, other])
    assert len(plan.groups) == 2  # two solar days, never mosaicked together
    _, cat = _all(iter_chips([item, other], min_valid=1.0))
    idx, px, ids = cat("index"), cat("pixels"), cat("item_id")
    a = {(r, c): k for k, (r, c, i) in enumerate(zip(idx["row"], idx["col"], ids)) if i == item.id}
    b = {(r, c): k for k, (r, c, i) in enumerate(zip(idx["row"], idx["col"], ids)) if i == "crop"}
    common = sorted(set(a) & set(b))
    assert len(common) >= 20
    for key in common:
        np.testing.assert_array_equal(px[a[key]], px[b[key]])


def test_same_day_scenes_mosaic_to_one_chip_each(bundled_items, tmp_path):
    item = bundled_items[LIVERPOOL]
    west = derive_item(item, tmp_path / "w", "a-west", window=(0, 0, 267, 250))
    east = derive_item(item, tmp_path / "e", "b-east", window=(0, 180, 267, 253))
    plan = plan_chips([west, east])
    assert len(plan.groups) == 1 and len(plan.groups[0].items) == 2
    whole = plan_chips([item])
    key = lambda p: sorted(zip(p.groups[0].chips["row"], p.groups[0].chips["col"]))  # noqa: E731
    assert key(plan) == key(whole)
    _, cat = _all(iter_chips([west, east], min_valid=0.0))
    _, ref = _all(iter_chips([item], min_valid=0.0))
    np.testing.assert_array_equal(cat("index"), ref("index"))
    np.testing.assert_array_equal(cat("pixels"), ref("pixels"))
    np.testing.assert_array_equal(cat("valid"), ref("valid"))
    # one chip per (epsg, day, row, col); primary item = first by datetime then id whose footprint covers it
    assert set(cat("item_id")) == {"a-west", "b-east"}


def test_europe_aoi_enumerates_only_data_bearing_chips(bundled_items, aois):
    items = list(bundled_items.values())
    t = time.perf_counter()
    plan = plan_chips(items, aoi=aois("europe"))
    seconds = time.perf_counter() - t
    # a 44 x 33 degree AOI is ~ 3 million fixed-grid chips; only the data's are enumerated
    n_ben = sum(1 for i in items if i.id.startswith("S2"))
    assert n_ben == 200
    liverpool_all = len(plan_chips([bundled_items[LIVERPOOL]]))
    assert len(plan) == n_ben + liverpool_all
    assert seconds < 3.0, seconds
    assert {g.grid for g in plan.groups} == {"fixed", "item"}
    assert all(g.day is not None for g in plan.groups if g.grid == "fixed")
    # the empty (open ocean) and antimeridian AOIs plan zero chips without error
    assert len(plan_chips(items, aoi=aois("empty"))) == 0
    assert len(plan_chips(items, aoi=aois("antimeridian"))) == 0


def test_window_epsg_and_determinism(bundled_items):
    item = bundled_items[LIVERPOOL]
    plan = plan_chips([item])
    rows, cols = plan.groups[0].chips["row"], plan.groups[0].chips["col"]
    win = (int(rows.min()), int(rows.min()) + 3, int(cols.min()), int(cols.min()) + 5)
    _, cat = _all(iter_chips([item], plan=plan, window=win, min_valid=0.0))
    idx = cat("index")
    assert len(idx) == 15
    assert np.all((idx["row"] >= win[0]) & (idx["row"] < win[1]) & (idx["col"] >= win[2]) & (idx["col"] < win[3]))
    assert len(list(iter_chips([item], plan=plan, epsg=32631))) == 0
    _, again = _all(iter_chips([item], plan=plan, window=win, min_valid=0.0, workers=1))
    np.testing.assert_array_equal(again("index"), idx)
    np.testing.assert_array_equal(again("pixels"), cat("pixels"))


def test_search_then_chips_end_to_end(aois, shared_data):
    """The public path: bundled-catalog search with the Liverpool AOI, then iter_chips."""
    from geomoe.stac.search import search

    aoi = aois("liverpool")
    items = search(None, aoi)
    assert [i.id for i in items] == [LIVERPOOL]
    batches = list(iter_chips(items, aoi=aoi, batch_size=256, min_valid=0.9))
    n = sum(len(b) for b in batches)
    assert n == len(plan_chips(items, aoi=aoi)) and n > 0  # Liverpool chips are cloud-free and whole
    lat = np.concatenate([_deg(b.lat) for b in batches])
    lon = np.concatenate([_deg(b.lon) for b in batches])
    src = shared_data / "xlandsat-l2sp" / f"{LIVERPOOL}_SR_stack.tif"
    with rasterio.open(src) as ds:
        w, s, e, nn = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    assert np.all((lat > s) & (lat < nn) & (lon > w) & (lon < e))


def test_zones_are_never_mixed(bundled_items):
    """Scenes in different UTM zones form separate groups; each chip carries its own EPSG."""
    from .conftest import COLOMBIA, GREENLAND

    items = [bundled_items[GREENLAND], bundled_items[COLOMBIA], bundled_items[LIVERPOOL]]
    plan = plan_chips(items)
    assert sorted(g.epsg for g in plan.groups) == [32618, 32624, 32630]
    for g in plan.groups:
        assert {i.id for i in g.items} == set(g.chips["item_id"]) and len(g.items) == 1
    # one tile of the Greenland group only
    g = next(g for g in plan.groups if g.epsg == 32624)
    r, c = int(np.median(g.chips["row"])), int(np.median(g.chips["col"]))
    batches = list(iter_chips(items, plan=plan, epsg=32624, window=(r, r + 4, c, c + 4), min_valid=0.0))
    idx = np.concatenate([b.index for b in batches])
    assert len(idx) == 16 and set(idx["epsg"]) == {32624}
    assert set(np.concatenate([b.item_id for b in batches])) == {GREENLAND}


def test_abandoned_stream_stops_its_reader_threads(bundled_items):
    import threading

    item = bundled_items[LIVERPOOL]
    before = {t.name for t in threading.enumerate()}
    stream = iter_chips([item], batch_size=4, min_valid=0.0, workers=2)
    first = next(stream)
    assert len(first) == 4
    assert any(t.name.startswith("geomoe-read") for t in threading.enumerate())
    stream.close()
    left = {t.name for t in threading.enumerate()} - before
    assert not any(n.startswith("geomoe-read") for n in left), left


def test_plan_real_api_items_offline(shared_data):
    """Real Planetary Computer items (remote hrefs): planning reads nothing and fetches nothing;
    consecutive rows of one path on one day mosaic into one chip per (row, col); zones apart."""
    import json

    import pystac

    items = {}
    for f in sorted((shared_data / "stac-items").rglob("*.json")):
        d = json.loads(f.read_text())
        for x in d.get("features", [d]) if isinstance(d, dict) else d:
            if isinstance(x, dict) and x.get("type") == "Feature" and x["id"].startswith("LC09_L2S") \
                    and x["assets"]["red"]["href"].startswith("http"):
                items[x["id"]] = pystac.Item.from_dict(x)
    items = list(items.values())
    assert len(items) >= 10
    t = time.perf_counter()
    plan = plan_chips(items)
    assert time.perf_counter() - t < 10  # no network: collection links are URLs and are not fetched
    per_item = sum(len(plan_chips([i])) for i in items)
    assert len(plan) < per_item  # overlaps of same-day scenes counted once
    for g in plan.groups:
        rc = g.chips["row"] * 10**7 + g.chips["col"]
        assert len(np.unique(rc)) == len(rc)
        assert {int(i.properties.get("proj:epsg") or i.properties["proj:code"].split(":")[1]) for i in g.items} == {g.epsg}
    assert len({g.epsg for g in plan.groups}) >= 3


def test_chip_batch_take_and_concat_keep_every_field_in_step(bundled_items):
    """The one chip container: selections and concatenations keep each chip's fields together;
    skipped chips are reported once (concat keeps them, a selection carries none)."""
    from geomoe.chips.plan import ChipBatch

    batches = list(iter_chips([bundled_items[LIVERPOOL]], batch_size=7, min_valid=0.9))
    assert sum(len(b.skipped_valid) for b in batches) > 0  # some Liverpool chips are cloudy
    whole = ChipBatch.concat(batches)
    assert len(whole) == sum(len(b) for b in batches)
    assert len(whole.skipped_index) == len(whole.skipped_valid) == sum(len(b.skipped_valid) for b in batches)
    order = np.random.default_rng(0).permutation(len(whole))
    sub = whole.take(order[:5])
    for f in ("pixels", "week", "hour", "lat", "lon", "item_id", "valid", "index", "x", "y"):
        np.testing.assert_array_equal(getattr(sub, f), getattr(whole, f)[order[:5]], err_msg=f)
    assert len(sub.skipped_index) == len(sub.skipped_valid) == len(sub.skipped_item_id) == 0
    # a field unknown in one part (loose GeoTIFFs carry no metadata) is unknown in the result
    bare = ChipBatch(pixels=sub.pixels, week=None, hour=None, lat=None, lon=None, item_id=sub.item_id)
    both = ChipBatch.concat([sub, bare])
    assert len(both) == 10 and both.week is None and both.index is None
    np.testing.assert_array_equal(both.pixels[5:], sub.pixels)
