"""Item grid (BigEarthNet centre crops) and QA_PIXEL masking on the real QA scenes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import box

from geomoe.chips.plan import iter_chips, plan_chips
from geomoe.chips.qa import bitmask

from .conftest import COLOMBIA, GREENLAND, chip_pixel_centres


def _cat(batches, f):
    return np.concatenate([getattr(b, f) for b in batches])


def test_bigearthnet_item_grid_is_the_exact_centre_crop(bundled_items, shared_data):
    items = [i for i in bundled_items.values() if i.id.startswith("S2")]
    assert len(items) == 200
    plan = plan_chips(items)  # the collection declares geomoe:chip_grid = item
    assert {g.grid for g in plan.groups} == {"item"} and len(plan) == 200
    batches = list(iter_chips(items, min_valid=0.0, batch_size=64))
    px, idx, ids = _cat(batches, "pixels"), _cat(batches, "index"), _cat(batches, "item_id")
    assert len(px) == 200 and set(idx["row"]) == {0} and set(idx["col"]) == {0}
    sizes = set()
    for k, iid in enumerate(ids):
        with rasterio.open(shared_data / "bigearthnet-landsat-sample" / "images" / f"{iid}.tif") as ds:
            img = ds.read()
        h, w = img.shape[1:]
        sizes.add(h)
        top, left = (h - 40) // 2, (w - 40) // 2  # 41 -> 0, 43 -> 1, 45 -> 2 (published CenterCrop40)
        np.testing.assert_array_equal(px[k], img[:, top : top + 40, left : left + 40], err_msg=iid)
    assert {41, 45} <= sizes
    # the all-fill patch is reported as skipped under the default threshold, never in pixels
    batches = list(iter_chips(items, batch_size=256))
    kept = set(_cat(batches, "item_id"))
    assert "S2A_MSIL2A_20170613T101032_67_54" not in kept
    s_idx, s_val = _cat(batches, "skipped_index"), _cat(batches, "skipped_valid")
    assert len(kept) + len(s_idx) == 200 and np.all(s_val < 0.9)
    assert s_idx.dtype.names == ("epsg", "row", "col", "time")


def _direct_valid_fraction(scene_dir, mask=0b11111):
    """Item-grid valid fraction per chip computed straight from the source files with numpy."""
    bands = []
    for b in range(1, 8):
        (f,) = scene_dir.glob(f"*_SR_B{b}.TIF")
        with rasterio.open(f) as ds:
            bands.append(ds.read(1))
    (q,) = scene_dir.glob("*_QA_PIXEL.TIF")
    with rasterio.open(q) as ds:
        qa = ds.read(1)
    valid = np.all(np.stack(bands) != 0, axis=0) & ((qa & mask) == 0)
    off = (512 - 480) // 2
    v = valid[off : off + 480, off : off + 480].reshape(12, 40, 12, 40).mean(axis=(1, 3))
    return v, valid, qa


@pytest.mark.parametrize("scene,folder", [(GREENLAND, "greenland-LC08_L2SP_005009_20150710"),
                                          (COLOMBIA, "colombia-LC08_L2SP_008059_20191201")])
def test_qa_valid_fraction_matches_numpy(bundled_items, shared_data, scene, folder):
    item = bundled_items[scene]
    exp, _, _ = _direct_valid_fraction(shared_data / "landsat-scenes-qa" / folder)
    batches = list(iter_chips([item], grid="item", min_valid=0.0))
    idx, val = _cat(batches, "index"), _cat(batches, "valid")
    assert len(idx) == 144
    np.testing.assert_allclose(val, exp[idx["row"], idx["col"]], atol=1e-6)
    # default threshold: kept + skipped = planned, skipped carry their fraction
    batches = list(iter_chips([item], grid="item"))
    kept, skipped = _cat(batches, "valid"), _cat(batches, "skipped_valid")
    assert len(kept) + len(skipped) == 144
    assert len(kept) == int((exp >= 0.9).sum()) and np.all(kept >= 0.9) and np.all(skipped < 0.9)
    # configurable bits: masking only fill keeps at least as many chips
    only_fill = list(iter_chips([item], grid="item", mask_bits=("fill",)))
    assert len(_cat(only_fill, "valid")) >= len(kept)


def test_qa_on_fixed_grid_matches_nearest_sampling(bundled_items, shared_data):
    """~450 m QA scene on the 30 m fixed grid: valid fraction = numpy on the nearest-sampled QA."""
    item = bundled_items[COLOMBIA]
    folder = shared_data / "landsat-scenes-qa" / "colombia-LC08_L2SP_008059_20191201"
    _, valid, _ = _direct_valid_fraction(folder)
    (q,) = folder.glob("*_QA_PIXEL.TIF")
    with rasterio.open(q) as ds:
        tr = ds.transform
    plan = plan_chips([item])
    chips = plan.groups[0].chips
    r0, c0 = int(np.median(chips["row"])) - 12, int(np.median(chips["col"])) - 12
    win = (r0, r0 + 24, c0, c0 + 24)  # 576 chips (29 km) in the middle of the scene
    batches = list(iter_chips([item], plan=plan, min_valid=0.0, window=win))
    rng = np.random.default_rng(0)
    rows = rng.integers(win[0], win[1], 40)
    cols = rng.integers(win[2], win[3], 40)
    idx, val = _cat(batches, "index"), _cat(batches, "valid")
    assert len(idx) == 576 and 0.0 < val.mean() < 1.0  # a mix of cloud and clear
    got = {(r, c): v for r, c, v in zip(idx["row"], idx["col"], val)}
    for r, c in zip(rows, cols):
        xs, ys = chip_pixel_centres(int(r), int(c))
        X, Y = np.meshgrid(xs, ys)
        rr, cc = rasterio.transform.rowcol(tr, X.ravel(), Y.ravel())
        rr, cc = np.asarray(rr), np.asarray(cc)
        ok = (rr >= 0) & (rr < 512) & (cc >= 0) & (cc < 512)
        v = np.zeros(rr.shape, bool)
        v[ok] = valid[rr[ok], cc[ok]]
        assert got[(r, c)] == pytest.approx(v.mean(), abs=1e-6), (r, c)


def test_all_cloud_area_yields_zero_chips_and_says_so(bundled_items, shared_data, caplog):
    item = bundled_items[COLOMBIA]
    folder = shared_data / "landsat-scenes-qa" / "colombia-LC08_L2SP_008059_20191201"
    exp, valid, qa = _direct_valid_fraction(folder)
    # an item chip (40 px of ~450 m, 18 km) entirely masked by cloud bits 1-4 and free of fill
    off = 16
    masked = ((qa & 0b11110) != 0) & ((qa & 1) == 0)
    mblock = masked[off : off + 480, off : off + 480].reshape(12, 40, 12, 40).mean(axis=(1, 3))
    cand = [(r, c) for r in range(12) for c in range(12) if mblock[r, c] == 1.0]
    assert cand, "the Colombia scene (81 % cloud) has fully clouded 18 km blocks"
    r, c = cand[len(cand) // 2]
    with rasterio.open(next(folder.glob("*_QA_PIXEL.TIF"))) as ds:
        tr = ds.transform
    # AOI: the block's inner part, 5 px (> 2 km) inside so every 1200 m chip touching it is cloud
    x0, y0 = tr * (off + 40 * c + 5, off + 40 * r + 5)
    x1, y1 = tr * (off + 40 * c + 35, off + 40 * r + 35)
    t = Transformer.from_crs(32618, 4326, always_xy=True)
    lon, lat = t.transform([x0, x1], [y0, y1])
    aoi = box(min(lon), min(lat), max(lon), max(lat))
    plan = plan_chips([item], aoi=aoi)
    assert len(plan) > 100  # many 1200 m chips planned over the cloudy area
    with caplog.at_level(logging.WARNING, logger="geomoe.chips.plan"):
        stream = iter_chips([item], aoi=aoi, plan=plan)
        batches = list(stream)
    assert sum(len(b) for b in batches) == 0
    assert stream.stats["kept"] == 0 and stream.stats["skipped"] == len(plan)
    assert sum(len(b.skipped_index) for b in batches) == len(plan)  # reported, in an N=0 batch
    assert all(b.pixels.shape == (0, 7, 40, 40) for b in batches)
    assert "0 chips kept" in caplog.text and COLOMBIA in caplog.text


def test_bitmask_names_and_numbers():
    assert bitmask((0, 1, 2, 3, 4)) == 0b11111
    assert bitmask(("fill", "cloud", "cloud_shadow")) == 0b11001
    with pytest.raises(ValueError):
        bitmask((16,))
