"""Fixtures for the chips tests: the bundled catalog's items and helpers to derive items in tmp."""

from __future__ import annotations

import copy
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.windows import Window

LIVERPOOL = "LC08_L2SP_204023_20200927_20201006_02_T1"
GREENLAND = "LC08_L2SP_005009_20150710_20200908_02_T2"
COLOMBIA = "LC08_L2SP_008059_20191201_20200825_02_T1"


@pytest.fixture(scope="session")
def bundled_items(bundled_catalog: Path) -> dict[str, pystac.Item]:
    """Every item of the bundled catalog by id (absolute hrefs through the items' self links)."""
    if not bundled_catalog.is_file():
        pytest.fail(f"bundled catalog missing at {bundled_catalog}")
    cat = pystac.Catalog.from_file(str(bundled_catalog))
    items = {}
    for it in cat.get_items(recursive=True):
        for a in it.assets.values():
            a.href = a.get_absolute_href()
        items[it.id] = it
    return items


@pytest.fixture(scope="session")
def aois(repo_root: Path):
    from geomoe.stac.aoi import load_aoi

    return lambda name: load_aoi(repo_root / "catalogs" / "aois" / f"{name}.geojson")


def derive_item(
    src: pystac.Item,
    out_dir: Path,
    new_id: str,
    window: tuple[int, int, int, int] | None = None,
    when: dt.datetime | None = None,
    drop: tuple[str, ...] = (),
) -> pystac.Item:
    """A copy of ``src`` with its rasters cropped to ``window`` = (row0, col0, h, w), in ``out_dir``."""
    from pyproj import Transformer
    from shapely.geometry import box, mapping

    out_dir.mkdir(parents=True, exist_ok=True)
    it = copy.deepcopy(src)
    it.id = new_id
    it.clear_links()
    for key in list(it.assets):
        if key in drop:
            del it.assets[key]
            continue
        a = it.assets[key]
        dst = out_dir / f"{key}.tif"
        if window is None:
            shutil.copy(a.href, dst)
        else:
            r0, c0, h, w = window
            with rasterio.open(a.href) as ds:
                prof = ds.profile.copy()
                data = ds.read(window=Window(c0, r0, w, h))
                tr = ds.window_transform(Window(c0, r0, w, h))
            prof.update(height=h, width=w, transform=tr, driver="GTiff", tiled=False)
            prof.pop("blockxsize", None), prof.pop("blockysize", None)
            with rasterio.open(dst, "w", **prof) as out:
                out.write(data)
        a.href = str(dst)
    if window is not None:
        with rasterio.open(next(iter(it.assets.values())).href) as ds:
            tr, (h, w), epsg = ds.transform, (ds.height, ds.width), ds.crs.to_epsg()
        it.properties["proj:transform"] = list(tr)[:6]
        it.properties["proj:shape"] = [h, w]
        x0, y1 = tr.c, tr.f
        x1, y0 = x0 + tr.a * w, y1 + tr.e * h
        it.properties["proj:bbox"] = [x0, y0, x1, y1]
        t = Transformer.from_crs(epsg, 4326, always_xy=True)
        lon, lat = t.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
        geom = box(min(lon), min(lat), max(lon), max(lat))
        it.geometry, it.bbox = mapping(geom), list(geom.bounds)
    if when is not None:
        it.datetime = when
    return it


def chip_pixel_centres(row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-grid pixel centres (x (40,), y (40,)) of chip (row, col): y from north to south."""
    xs = col * 1200.0 + 15.0 + 30.0 * np.arange(40)
    ys = (row + 1) * 1200.0 - 15.0 - 30.0 * np.arange(40)
    return xs, ys
