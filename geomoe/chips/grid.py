"""Chip grids: which 40x40 chips an item and an AOI give, without reading a pixel.

Two modes (see the contract):

- ``fixed`` (default for scenes): one grid per CRS, chip (row, col) covers
  x in [col*1200, (col+1)*1200) and y in [row*1200, (row+1)*1200) metres, row grows north, so
  the same ground chip has the same (row, col) in every scene and date of that CRS.
  Pixels are the 30 m cells of that grid (chip edges on multiples of 1200 m, pixel edges on
  multiples of 30 m). Landsat's own pixel edges sit on 15 mod 30 m, half a pixel away, so
  loading is nearest-neighbour with the tie resolved like rasterio's ``index()`` (floor): a
  fixed-grid pixel takes the native pixel whose west/north edge passes through its centre.
- ``item``: each item on its own pixel grid, centred: ``n = size // 40`` chips per axis,
  offset ``(size - 40*n) // 2`` pixels (41 -> 0, 42/43 -> 1, 44/45 -> 2), the published
  ``CenterCrop40`` convention. Row 0 is the top (northernmost) row of chips of the item.

Enumeration only visits chips that intersect the AOI *and* an item footprint: the AOI is
clipped to each item first, so the cost grows with the data, not with the AOI's extent.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

import numpy as np
import pystac
import shapely
import shapely.geometry as sg
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features

from geomoe.errors import GeomoeError

CHIP_PIXELS = 40
PIXEL_METERS = 30.0
CHIP_METERS = CHIP_PIXELS * PIXEL_METERS  # 1200.0

GRID_MODES = ("fixed", "item")


class UnknownCRSError(GeomoeError, ValueError):
    """An item carries no usable CRS (proj:code / proj:epsg), so it cannot be put on a grid."""


class GridError(GeomoeError, ValueError):
    """An item's pixel grid cannot be chipped (rotated transform, bad grid mode...)."""


def item_epsg(item: pystac.Item) -> int:
    """EPSG code of an item from ``proj:code`` ("EPSG:32630") or ``proj:epsg`` (item, then assets)."""
    sources = [item.properties] + [a.extra_fields for a in item.assets.values()]
    for props in sources:
        code = props.get("proj:code")
        if code:
            auth, _, num = str(code).partition(":")
            if auth.upper() == "EPSG" and num.isdigit():
                return _checked_epsg(int(num), item)
            raise UnknownCRSError(
                f"item {item.id!r} has proj:code {code!r}; geomoe needs an EPSG code "
                "(e.g. 'EPSG:32630'): fix the item's projection metadata"
            )
        epsg = props.get("proj:epsg")
        if epsg is not None:
            return _checked_epsg(int(epsg), item)
    raise UnknownCRSError(
        f"item {item.id!r} has no proj:code or proj:epsg, so its CRS is unknown: add the "
        "projection extension fields to the item (geomoe never guesses a UTM zone)"
    )


def _checked_epsg(epsg: int, item: pystac.Item) -> int:
    try:
        crs = CRS.from_epsg(epsg)
    except Exception as exc:  # pyproj.exceptions.CRSError
        raise UnknownCRSError(
            f"item {item.id!r} declares EPSG:{epsg}, which PROJ does not know: fix proj:code"
        ) from exc
    if not crs.is_projected:
        raise UnknownCRSError(
            f"item {item.id!r} is in EPSG:{epsg}, not a projected (metre) CRS: chips are 1200 m "
            "on a projected grid; give items in their native UTM / polar stereographic CRS"
        )
    return epsg


def _props_with_asset(item: pystac.Item, asset_key: str | None) -> dict:
    props = dict(item.properties)
    if asset_key is not None and asset_key in item.assets:
        props.update({k: v for k, v in item.assets[asset_key].extra_fields.items() if k.startswith("proj:")})
    return props


def item_transform_shape(
    item: pystac.Item, asset_key: str | None = None
) -> tuple[Affine, tuple[int, int]] | None:
    """The pixel grid (transform, (H, W)) declared by proj:transform / proj:shape, or None."""
    props = _props_with_asset(item, asset_key)
    tr, shp = props.get("proj:transform"), props.get("proj:shape")
    if tr is None or shp is None:
        return None
    return Affine(*tr[:6]), (int(shp[0]), int(shp[1]))


def item_bounds(item: pystac.Item, asset_key: str | None = None) -> tuple[float, float, float, float] | None:
    """Raster bounds in the item's CRS from proj:bbox or proj:transform+shape, or None."""
    ts = item_transform_shape(item, asset_key)
    if ts is not None:
        tr, (h, w) = ts
        xs = [tr.c, tr.c + tr.a * w]
        ys = [tr.f, tr.f + tr.e * h]
        return min(xs), min(ys), max(xs), max(ys)
    bb = _props_with_asset(item, asset_key).get("proj:bbox")
    if bb is not None and len(bb) >= 4:
        return float(bb[0]), float(bb[1]), float(bb[-3] if len(bb) == 6 else bb[2]), float(bb[-2] if len(bb) == 6 else bb[3])
    return None


_TRANSFORMERS: dict[tuple[int, int], Transformer] = {}


def transformer(src: int, dst: int) -> Transformer:
    """Cached always_xy pyproj transformer between two EPSG codes."""
    key = (src, dst)
    t = _TRANSFORMERS.get(key)
    if t is None:
        t = _TRANSFORMERS[key] = Transformer.from_crs(src, dst, always_xy=True)
    return t


def _reproject(geom: sg.base.BaseGeometry, src: int, dst: int, max_seg: float) -> sg.base.BaseGeometry:
    """Reproject a geometry, densifying first so straight edges stay faithful."""
    if geom.is_empty:
        return geom
    geom = shapely.segmentize(geom, max_seg)
    t = transformer(src, dst)
    out = shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    if not out.is_valid:
        out = shapely.make_valid(out)
    return out


def footprint_in_crs(item: pystac.Item, epsg: int, aoi: sg.base.BaseGeometry | None = None) -> sg.base.BaseGeometry:
    """The part of the item (and of the AOI, WGS84) that holds data, as a geometry in ``epsg``.

    The AOI is clipped to the item in WGS84 first (with a margin), so a continent-sized AOI
    costs no more than a small one and never reaches far outside the item's UTM zone.
    """
    geom_ll = sg.shape(item.geometry) if item.geometry else None
    bounds = item_bounds(item)
    rect = sg.box(*bounds) if bounds is not None else None
    if geom_ll is None and rect is None:
        raise GridError(f"item {item.id!r} has neither geometry nor proj:bbox/transform: cannot place it")
    if geom_ll is None:
        geom_ll = _reproject(rect, epsg, 4326, 1000.0)
    if aoi is not None:
        # part by part, so an item split at the antimeridian does not clip the AOI to the globe
        pieces = []
        for part in getattr(geom_ll, "geoms", [geom_ll]):
            minx, miny, maxx, maxy = part.bounds
            m = 0.05  # degrees: covers lon/lat-vs-UTM edge curvature of a Landsat scene
            clip = aoi.intersection(sg.box(minx - m, max(miny - m, -90), maxx + m, min(maxy + m, 90)))
            if clip.is_empty or clip.area == 0:
                continue
            pieces.append(_reproject(part, 4326, epsg, 0.01).intersection(_reproject(clip, 4326, epsg, 0.01)))
        fp = shapely.union_all(pieces) if pieces else sg.Polygon()
    else:
        fp = _reproject(geom_ll, 4326, epsg, 0.01)
    if rect is not None:
        fp = fp.intersection(rect)
    return fp


def fixed_chips(geom: sg.base.BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-grid chips (rows (K,), cols (K,) int64) whose 1200 m square intersects ``geom``.

    Rasterised at chip resolution over the geometry's bounds only; chips touched only on the
    boundary are kept when their intersection with ``geom`` has non-zero area.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if geom.is_empty or geom.area <= 0:
        return empty
    minx, miny, maxx, maxy = geom.bounds
    c0, c1 = math.floor(minx / CHIP_METERS), math.ceil(maxx / CHIP_METERS)
    r0, r1 = math.floor(miny / CHIP_METERS), math.ceil(maxy / CHIP_METERS)
    nr, nc = max(r1 - r0, 1), max(c1 - c0, 1)
    tr = Affine(CHIP_METERS, 0, c0 * CHIP_METERS, 0, -CHIP_METERS, r1 * CHIP_METERS)
    touched = features.rasterize([(geom, 1)], out_shape=(nr, nc), transform=tr, all_touched=True, dtype="uint8")
    inner = features.rasterize([(geom, 1)], out_shape=(nr, nc), transform=tr, all_touched=False, dtype="uint8")
    keep = inner.astype(bool)
    edge_i, edge_j = np.nonzero(touched.astype(bool) & ~keep)
    if edge_i.size:
        x0 = (c0 + edge_j) * CHIP_METERS
        y0 = (r1 - 1 - edge_i) * CHIP_METERS
        boxes = shapely.box(x0, y0, x0 + CHIP_METERS, y0 + CHIP_METERS)
        shapely.prepare(geom)
        hit = shapely.area(shapely.intersection(boxes, geom)) > 0
        keep[edge_i[hit], edge_j[hit]] = True
    ii, jj = np.nonzero(keep)
    return (r1 - 1 - ii).astype(np.int64), (c0 + jj).astype(np.int64)


@dataclass(frozen=True)
class ItemGrid:
    """An item's own chip grid: native transform, size, chips per axis and centring offsets."""

    transform: Affine
    shape: tuple[int, int]
    n_rows: int
    n_cols: int
    off_row: int
    off_col: int

    def chip_window(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel (r, c) of chip (row, col) in the item's raster."""
        return self.off_row + CHIP_PIXELS * row, self.off_col + CHIP_PIXELS * col

    def chip_centre(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chip centres (x, y) in the item's CRS."""
        pr = self.off_row + CHIP_PIXELS * np.asarray(row) + CHIP_PIXELS / 2
        pc = self.off_col + CHIP_PIXELS * np.asarray(col) + CHIP_PIXELS / 2
        t = self.transform
        return t.c + t.a * pc + t.b * pr, t.f + t.d * pc + t.e * pr


def make_item_grid(transform: Affine, shape: tuple[int, int], item_id: str = "?") -> ItemGrid:
    """Centred chip layout of a raster (H, W): ``(H - 40*(H//40)) // 2`` rows of offset."""
    if transform.b != 0 or transform.d != 0:
        raise GridError(f"item {item_id!r} has a rotated pixel grid; geomoe chips north-up rasters only")
    h, w = shape
    nr, nc = h // CHIP_PIXELS, w // CHIP_PIXELS
    return ItemGrid(transform, (h, w), nr, nc, (h - CHIP_PIXELS * nr) // 2, (w - CHIP_PIXELS * nc) // 2)


def item_chips(grid: ItemGrid, geom: sg.base.BaseGeometry | None) -> tuple[np.ndarray, np.ndarray]:
    """Item-grid chips (rows, cols) whose square intersects ``geom`` (None = all chips)."""
    rr, cc = np.meshgrid(np.arange(grid.n_rows), np.arange(grid.n_cols), indexing="ij")
    rr, cc = rr.ravel().astype(np.int64), cc.ravel().astype(np.int64)
    if geom is None or rr.size == 0:
        return rr, cc
    if geom.is_empty:
        return rr[:0], cc[:0]
    t = grid.transform
    pr, pc = grid.off_row + CHIP_PIXELS * rr, grid.off_col + CHIP_PIXELS * cc
    xa, ya = t.c + t.a * pc, t.f + t.e * pr
    xb, yb = xa + t.a * CHIP_PIXELS, ya + t.e * CHIP_PIXELS
    boxes = shapely.box(np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb))
    shapely.prepare(geom)
    hit = shapely.area(shapely.intersection(boxes, geom)) > 0
    return rr[hit], cc[hit]


def item_datetime(item: pystac.Item) -> _dt.datetime:
    """The item's acquisition datetime as naive UTC (start_datetime when datetime is null)."""
    t = item.datetime
    if t is None:
        s = item.properties.get("start_datetime")
        if not s:
            raise GridError(f"item {item.id!r} has no datetime: the chips' week/hour need one")
        t = _dt.datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t


def solar_day(item: pystac.Item) -> np.datetime64:
    """Local solar date of the acquisition: UTC datetime + centre longitude / 15 h.

    Scenes of one path on one overpass share it even when they straddle UTC midnight.
    """
    t = item_datetime(item)
    if item.bbox:
        lon = (item.bbox[0] + item.bbox[2]) / 2
        if item.bbox[0] > item.bbox[2]:  # crosses the antimeridian
            lon = ((item.bbox[0] + item.bbox[2] + 360) / 2 + 180) % 360 - 180
    elif item.geometry:
        lon = sg.shape(item.geometry).centroid.x
    else:
        lon = 0.0
    return np.datetime64((t + _dt.timedelta(hours=lon / 15.0)).date(), "D")
