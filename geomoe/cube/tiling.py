"""Cube planning per tile: cost grows with items and tiles, never with chips.

Why: enumerating every chip of a continent into arrays costs time and memory per chip, in
every process that plans (the creating run and each worker). Here a fixed-grid (one CRS)
group is planned from its items' footprints alone (measured: benchmarks/bench_planning.py):

- each item's footprint in the zone CRS, clipped to the AOI (as
  :func:`geomoe.chips.grid.footprint_in_crs` gives it), goes into a GeoDataFrame;
- the group's extent is the footprints' bounds snapped to the 1200 m chip grid;
- which items touch which tile (one Zarr chunk in y and x) is a spatial join of the footprints
  against the tile boxes, kept where the overlap has a positive area (so a tile listed holds at
  least one chip: a chip is planned exactly where a footprint overlaps it with positive area);
- a tile's chip count is estimated from the overlap areas (area / 1200 m squared per solar
  day, capped at the tile's cells) and made exact when the tile is read: only then are its chips
  enumerated, by :func:`geomoe.chips.plan.plan_chips` with the tile's window, with exactly the
  chip rule of a whole-AOI plan, so the cube's vectors do not depend on this.

Item-grid items (pre-chipped patches, a small table) are still planned chip by chip.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pystac
import shapely

from geomoe.chips.grid import CHIP_METERS, footprint_in_crs, item_datetime, item_epsg, solar_day
from geomoe.cube.layout import GridSpec, Spec, TableSpec, group_name, specs_from_plan

__all__ = ["plan_specs", "polygonal", "item_digest"]


def polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The areal part of a geometry (an intersection may add lines or points): a (multi)polygon."""
    if geom.is_empty or geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def item_digest(item: pystac.Item) -> str:
    """sha256 of what places an item's chips: id, datetime, geometry, bbox and proj fields."""
    props = {k: v for k, v in item.properties.items() if k.startswith("proj:") or k == "datetime"
             or k == "start_datetime"}
    assets = {k: {f: v for f, v in a.extra_fields.items() if f.startswith("proj:")}
              for k, a in sorted(item.assets.items())}
    doc = [item.id, props, item.geometry, item.bbox, {k: v for k, v in assets.items() if v}]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def plan_specs(items: Sequence, aoi: Any = None, grid: str | None = None, tile_size: int = 32,
               table_tile: int = 256) -> list[Spec]:
    """Cube group specs of ``items`` inside ``aoi``, planned per tile (no chip enumeration).

    Parameters
    ----------
    items : sequence of pystac.Item or dict
        Landsat C2 L2 scenes, as for :func:`geomoe.plan_chips`.
    aoi : shapely geometry or AOI source, optional
        EPSG:4326; None: the whole items.
    grid : {"fixed", "item"}, optional
        As for :func:`geomoe.plan_chips`.
    tile_size : int
        Grid tile edge in chips (one Zarr chunk in y and x).
    table_tile : int
        Chips per tile of the chip-table group.

    Returns
    -------
    list of GridSpec and TableSpec
        One GridSpec per CRS (sorted by EPSG code) with ``tile_items`` and ``tile_estimate``
        per tile, then the table group if any item is on the item grid.

    Raises
    ------
    geomoe.errors.MissingBandError, UnknownCRSError, geomoe.errors.NoScenesError
        Before any pixel is read.
    """
    from geomoe.chips.assets import resolve_assets
    from geomoe.chips.plan import _grid_mode, checked_inputs, plan_chips

    items, aoi = checked_inputs(items, aoi, grid)
    fixed: dict[int, list[pystac.Item]] = collections.defaultdict(list)
    on_item_grid: list[pystac.Item] = []
    time_day = {}
    for it in items:
        epsg = item_epsg(it)
        resolve_assets(it)  # MissingBandError before any read
        time_day[np.datetime64(item_datetime(it), "s")] = solar_day(it)
        if _grid_mode(it, grid) == "item":
            on_item_grid.append(it)
        else:
            fixed[epsg].append(it)
    aoi_wkb = b"" if aoi is None else shapely.to_wkb(aoi, hex=False)
    specs: list[Spec] = []
    for epsg in sorted(fixed):
        spec = _grid_spec(epsg, fixed[epsg], aoi, aoi_wkb, int(tile_size), time_day)
        if spec is not None:
            specs.append(spec)
    if on_item_grid:
        plan = plan_chips(on_item_grid, aoi=aoi, grid="item")
        specs += [s for s in specs_from_plan(plan, on_item_grid, tile_size=tile_size, table_tile=table_tile)
                  if isinstance(s, TableSpec)]
    return specs


def _grid_spec(epsg: int, its: list[pystac.Item], aoi, aoi_wkb: bytes, ts: int,
               time_day: dict) -> GridSpec | None:
    import geopandas as gpd

    rows = []
    for it in its:
        fp = polygonal(footprint_in_crs(it, epsg, aoi))
        if fp.is_empty or fp.area <= 0:
            continue
        rows.append((it.id, solar_day(it), np.datetime64(item_datetime(it), "s"), item_digest(it), fp))
    if not rows:
        return None
    rows.sort(key=lambda r: (r[2], r[0]))  # priority order of the mosaic: (datetime, id)
    fps = gpd.GeoDataFrame({"id": [r[0] for r in rows], "day": np.array([r[1] for r in rows], "datetime64[D]"),
                            "time": np.array([r[2] for r in rows], "datetime64[s]")},
                           geometry=[r[4] for r in rows], crs=epsg)
    minx, miny, maxx, maxy = fps.total_bounds
    col_min, col_max = math.floor(minx / CHIP_METERS), math.ceil(maxx / CHIP_METERS) - 1
    row_min, row_max = math.floor(miny / CHIP_METERS), math.ceil(maxy / CHIP_METERS) - 1
    ny, nx = row_max - row_min + 1, col_max - col_min + 1
    nty, ntx = -(-ny // ts), -(-nx // ts)
    ty, tx = (a.ravel() for a in np.meshgrid(np.arange(nty), np.arange(ntx), indexing="ij"))
    r0 = row_max - np.minimum((ty + 1) * ts, ny) + 1
    r1 = row_max - ty * ts + 1
    c0 = col_min + tx * ts
    c1 = col_min + np.minimum((tx + 1) * ts, nx)
    boxes = shapely.box(c0 * CHIP_METERS, r0 * CHIP_METERS, c1 * CHIP_METERS, r1 * CHIP_METERS)
    tiles = gpd.GeoDataFrame({"ty": ty, "tx": tx}, geometry=boxes, crs=epsg)
    pairs = gpd.sjoin(fps, tiles, how="inner", predicate="intersects")
    left = pairs.index.to_numpy()
    right = pairs["index_right"].to_numpy()
    fp_all = np.asarray(fps.geometry.array)
    shapely.prepare(fp_all)
    fp_arr = fp_all[left]
    box_arr = boxes[right]
    inside = shapely.contains(fp_arr, box_arr)  # the whole tile: no intersection to compute
    area = shapely.area(box_arr).astype(np.float64)
    edge = ~inside
    if edge.any():  # clip_by_rect: same areas as intersection, several times faster on a box
        bounds = shapely.bounds(box_arr[edge])
        area[edge] = [shapely.clip_by_rect(f, *r).area for f, r in zip(fp_arr[edge], bounds.tolist())]
    keep = area > 0
    left, right, area = left[keep], right[keep], area[keep]
    cells = ((r1 - r0) * (c1 - c0))[right]
    # estimate: per (tile, day) the footprints' area in chips (overlaps of one day's scenes
    # counted twice), capped at the tile's cells; exact once the tile is read
    by_td: dict[tuple[int, np.datetime64], float] = collections.defaultdict(float)
    cap: dict[int, int] = {}
    tile_items: dict[int, list[int]] = collections.defaultdict(list)
    days = fps["day"].to_numpy().astype("datetime64[D]")  # pandas keeps at least seconds
    for li, ri, a, c in zip(left.tolist(), right.tolist(), area.tolist(), cells.tolist()):
        by_td[(ri, days[li])] += a / (CHIP_METERS * CHIP_METERS)
        cap[ri] = c
        tile_items[ri].append(li)
    estimate: dict[tuple[int, int], int] = collections.defaultdict(int)
    for (ri, _), a in by_td.items():
        # a positive-area overlap holds at least one chip
        estimate[(int(ty[ri]), int(tx[ri]))] += min(max(math.ceil(a - 1e-9), 1), cap[ri])
    ids = fps["id"].tolist()
    used = sorted({li for v in tile_items.values() for li in v})
    udays = np.unique(days[used])
    times, per_day = [], []
    tvals = fps["time"].to_numpy().astype("datetime64[s]")
    for d in udays:
        sel = [li for li in used if days[li] == d]
        times.append(min(tvals[li] for li in sel))
        per_day.append(sorted(ids[li] for li in sel))
    h = hashlib.sha256(aoi_wkb)
    for li in used:
        h.update(rows[li][3].encode())
    return GridSpec(
        name=group_name(epsg), epsg=epsg, row_max=row_max, col_min=col_min, ny=ny, nx=nx,
        days=udays.astype("datetime64[D]"), times=np.array(times, dtype="datetime64[ns]"), item_ids=per_day,
        item_day={ids[li]: days[li] for li in used}, time_day=dict(time_day), tile_size=ts,
        tile_items={(int(ty[ri]), int(tx[ri])): tuple(ids[li] for li in sorted(v)) for ri, v in tile_items.items()},
        tile_estimate=dict(estimate), source="footprints:" + h.hexdigest())
