"""The embedded chips of a cube, streamed in chunk-aligned blocks: what export and similarity
search read.

Why one module: both walk every embedded chip (all groups, all times) without loading the
cube, and both need the same per-chip facts (chip polygon in EPSG:4326, time, source item).
It reads through :func:`geomoe.open_cube` (xarray only: dims, coords, attrs), never the store's
files, so it follows the cube layout wherever the store puts its chunks.

Item of a grid chip: a grid time slice mosaics the scenes of one solar day (the group's
``stac_item_ids`` attribute lists them per slice). The planner gives each chip to the *first*
scene (by acquisition time, then id) whose footprint inside the query AOI touches the chip
(:func:`geomoe.chips.plan.plan_chips`); this module applies the same rule to the items stored
in the cube, so a chip's ``item_id`` is the scene its pixels came from (later scenes of the day
only fill pixels the first left invalid). A slice of one scene needs no geometry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xarray as xr
from pyproj import Transformer

from geomoe.cube.reader import CubeView
from geomoe.errors import GeomoeError

#: a block holds at most about this many chips (one time slice, whole chunks): memory stays flat
BLOCK_CHIPS = 32_768
HALF = 600.0  # half a chip side, metres (chips are 1200 m)
MAP_BYTES = 256 * 2**20  # cache of per-slice item maps (int16 per chip of the group)


class PointError(GeomoeError, ValueError):
    """A query point is outside the cube or on a chip without an embedding."""


@dataclass
class ChipBlock:
    """Embedded chips of one block (one group, one time slice or a run of table chips).

    ``t``, ``i``, ``j`` locate each chip in its group: grid groups (time, y, x) indices;
    the table group ``t = -1, i = chip index, j = -1``. ``embedding`` (n, D) keeps the cube's
    dtype (float32 or float16); every row is finite.
    """

    group: str | np.ndarray  # the group, or (n,) object: one per row (a mixed selection)
    t: np.ndarray  # (n,) int32
    i: np.ndarray  # (n,) int32
    j: np.ndarray  # (n,) int32
    time: np.ndarray  # (n,) datetime64[ns]
    epsg: np.ndarray  # (n,) int32
    x: np.ndarray  # (n,) float64, chip centre in its CRS, metres
    y: np.ndarray
    item_id: np.ndarray  # (n,) object (str)
    valid_fraction: np.ndarray  # (n,) float32
    embedding: np.ndarray  # (n, D)
    corners: np.ndarray  # (n, 4, 2) float64 lon, lat: NW, SW, SE, NE

    def __len__(self) -> int:
        return len(self.t)


def group_epsg(ds: xr.Dataset) -> int:
    """EPSG code of a grid group (its ``spatial_ref``; ``epsg`` attribute as fallback)."""
    crs = ds.rio.crs
    code = crs.to_epsg() if crs is not None else None
    return int(code if code is not None else ds.attrs["epsg"])


@lru_cache(maxsize=64)
def _to_wgs84(epsg: int) -> Transformer:
    return Transformer.from_crs(int(epsg), 4326, always_xy=True)


@lru_cache(maxsize=64)
def _from_wgs84(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, int(epsg), always_xy=True)


def chip_corners(epsg: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Corners (n, 4, 2) in lon/lat of 1200 m chips centred at x, y (metres of ``epsg``),
    counter-clockwise from the north-west: NW, SW, SE, NE. A 1200 m edge bends by far less
    than a millimetre in lon/lat, so the four corners are the polygon."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    cx = np.stack([x - HALF, x - HALF, x + HALF, x + HALF], axis=1)
    cy = np.stack([y + HALF, y - HALF, y - HALF, y + HALF], axis=1)
    lon, lat = _to_wgs84(epsg).transform(cx.ravel(), cy.ravel())
    return np.stack([np.asarray(lon).reshape(cx.shape), np.asarray(lat).reshape(cy.shape)], axis=2)


def _lattice(epsg: int, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chip-corner lattice (h+1, w+1) in lon/lat for chip centres xs (w,), ys (h,) descending:
    one transform per block, shared by its chips (and by every time slice)."""
    gx = np.concatenate([xs - HALF, xs[-1:] + HALF])
    gy = np.concatenate([ys + HALF, ys[-1:] - HALF])
    XX, YY = np.meshgrid(gx, gy)
    lon, lat = _to_wgs84(epsg).transform(XX.ravel(), YY.ravel())
    return np.asarray(lon).reshape(XX.shape), np.asarray(lat).reshape(XX.shape)


def polygon_wkb(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ISO WKB of closed 4-corner polygons, built in one numpy pass (no per-geometry objects).

    Parameters
    ----------
    corners : ndarray (n, 4, 2)
        lon, lat of each polygon's corners.

    Returns
    -------
    data : ndarray (n * 93,) uint8
        The concatenated WKB (little-endian Polygon, one ring of 5 points).
    offsets : ndarray (n + 1,) int32
        Start of each geometry in ``data`` (Arrow binary layout).
    """
    n = len(corners)
    rec = np.zeros(n, dtype=np.dtype([("bo", "u1"), ("type", "<u4"), ("nrings", "<u4"),
                                      ("npts", "<u4"), ("xy", "<f8", (10,))]))
    rec["bo"], rec["type"], rec["nrings"], rec["npts"] = 1, 3, 1, 5
    ring = np.concatenate([corners, corners[:, :1]], axis=1)  # closed: 5 points
    rec["xy"] = ring.reshape(n, 10)
    size = rec.dtype.itemsize  # 93
    return rec.view(np.uint8), np.arange(n + 1, dtype=np.int64).astype(np.int32) * size


class ItemLookup:
    """Which source item each grid chip came from (see the module docstring for the rule)."""

    def __init__(self, cube: CubeView) -> None:
        self.cube = cube
        self._items: dict[str, object] | None = None
        self._aoi = None
        self._slices: dict[str, list] = {}
        self._maps: OrderedDict[tuple[str, int], tuple[np.ndarray | None, list[str]]] = OrderedDict()

    def _load_items(self) -> dict[str, object]:
        if self._items is None:
            import pystac

            self._items = {}
            for d in self.cube.stac_items():
                if d.get("id"):
                    self._items[d["id"]] = pystac.Item.from_dict(d)
            aoi = (self.cube.attrs.get("geomoe:query") or {}).get("aoi") or {}
            if isinstance(aoi, dict) and aoi.get("geometry"):
                from geomoe.stac.aoi import load_aoi

                self._aoi = load_aoi(aoi["geometry"])
        return self._items

    def slice_map(self, group: str, t: int) -> tuple[np.ndarray | None, list[str]]:
        """(codes (ny, nx) int16 into ``names``, -1 = none; or None when one item covers the
        slice, names) for time slice ``t`` of a grid group."""
        key = (group, t)
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        ds = self.cube[group]
        if group not in self._slices:
            self._slices[group] = json.loads(ds.attrs.get("stac_item_ids", "[]"))
        per_slice = self._slices[group]
        ids = [str(v) for v in per_slice[t]] if t < len(per_slice) else []
        self._maps[key] = (None, ids) if len(ids) <= 1 else self._priority_map(ds, ids)
        # bounded memory: least recently used maps go (recomputed if needed again)
        while sum(m.nbytes for m, _ in self._maps.values() if m is not None) > MAP_BYTES and len(self._maps) > 1:
            self._maps.popitem(last=False)
        return self._maps[key]

    def _priority_map(self, ds: xr.Dataset, ids: list[str]) -> tuple[np.ndarray, list[str]]:
        from geomoe.chips.grid import CHIP_METERS, fixed_chips, footprint_in_crs, item_datetime

        items = self._load_items()
        known = sorted((items[i] for i in ids if i in items), key=lambda it: (item_datetime(it), it.id))
        names = [it.id for it in known]
        epsg = group_epsg(ds)
        x0, y0 = float(ds.x[0]), float(ds.y[0])
        codes = np.full((ds.sizes["y"], ds.sizes["x"]), -1, np.int16)
        for k in range(len(known) - 1, -1, -1):  # the earliest scene is written last: it wins
            rows, cols = fixed_chips(footprint_in_crs(known[k], epsg, self._aoi))
            i = np.rint((y0 - (rows + 0.5) * CHIP_METERS) / CHIP_METERS).astype(np.int64)
            j = np.rint(((cols + 0.5) * CHIP_METERS - x0) / CHIP_METERS).astype(np.int64)
            ok = (i >= 0) & (i < codes.shape[0]) & (j >= 0) & (j < codes.shape[1])
            codes[i[ok], j[ok]] = k
        return codes, names

    def grid_items(self, group: str, t: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Item id (object array) of grid chips (i, j) of slice ``t``; "" where not determinable."""
        codes, names = self.slice_map(group, t)
        if codes is None:
            return np.full(len(i), names[0] if names else "", dtype=object)
        lut = np.array(names + [""], dtype=object)
        c = codes[i, j]
        return lut[np.where(c < 0, len(names), c)]


def _chunk_starts(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    out, s = [], 0
    for c in chunks:
        out.append((s, s + c))
        s += c
    return out


def undasked(cube: CubeView, group: str) -> xr.Dataset:
    """The group opened without dask: whole-chunk reads go straight to zarr (several times
    faster per block than a dask graph); the chunking is read from ``cube[group]``."""
    return xr.open_zarr(str(cube.path), group=group, consolidated=False, chunks=None,
                        decode_coords="all")


def _grid_blocks(cube: CubeView, group: str, items: ItemLookup, block_chips: int) -> Iterator[ChipBlock]:
    ds = cube[group]
    raw = undasked(cube, group)
    emb, vf = raw["embedding"], raw["valid_fraction"]
    epsg = group_epsg(ds)
    xs_all, ys_all = ds.x.values.astype(np.float64), ds.y.values.astype(np.float64)
    times = ds.time.values.astype("datetime64[ns]")
    chunks = ds["embedding"].chunks
    ychunks = chunks[1] if chunks else (ds.sizes["y"],)
    xchunks = chunks[2] if chunks else (ds.sizes["x"],)
    # blocks: whole y-chunk bands, split along x into runs of whole chunks of <= block_chips
    bands = []
    for y0, y1 in _chunk_starts(ychunks):
        run: list[tuple[int, int]] = []
        for x0, x1 in _chunk_starts(xchunks):
            if run and (y1 - y0) * (x1 - run[0][0]) > block_chips:
                bands.append((y0, y1, run[0][0], run[-1][1]))
                run = []
            run.append((x0, x1))
        if run:
            bands.append((y0, y1, run[0][0], run[-1][1]))
    for y0, y1, x0, x1 in bands:  # bands outer: one corner lattice at a time, shared by all times
        lattice = None
        for t in range(len(times)):
            e = np.asarray(emb[t, y0:y1, x0:x1].values)
            ok = np.isfinite(e).all(axis=-1)
            if not ok.any():
                continue
            ii, jj = np.nonzero(ok)
            v = np.asarray(vf[t, y0:y1, x0:x1].values)
            if lattice is None:
                lattice = _lattice(epsg, xs_all[x0:x1], ys_all[y0:y1])
            lon, lat = lattice
            corners = np.stack([
                np.stack([lon[ii, jj], lat[ii, jj]], 1),  # NW
                np.stack([lon[ii + 1, jj], lat[ii + 1, jj]], 1),  # SW
                np.stack([lon[ii + 1, jj + 1], lat[ii + 1, jj + 1]], 1),  # SE
                np.stack([lon[ii, jj + 1], lat[ii, jj + 1]], 1),  # NE
            ], axis=1)
            gi, gj = (ii + y0).astype(np.int32), (jj + x0).astype(np.int32)
            n = len(ii)
            yield ChipBlock(
                group=group, t=np.full(n, t, np.int32), i=gi, j=gj,
                time=np.full(n, times[t]), epsg=np.full(n, epsg, np.int32),
                x=xs_all[gj], y=ys_all[gi], item_id=items.grid_items(group, t, gi, gj),
                valid_fraction=v[ii, jj].astype(np.float32), embedding=e[ok], corners=corners)


def _table_blocks(cube: CubeView, group: str, block_chips: int) -> Iterator[ChipBlock]:
    chunks = cube[group]["embedding"].chunks
    ds = undasked(cube, group)
    n_all = ds.sizes["chip"]
    step = max(1, min(block_chips, n_all))
    if chunks:
        c = chunks[0][0]
        step = max(c, (step // c) * c)
    for s in range(0, n_all, step):
        sl = slice(s, min(s + step, n_all))
        part = ds.isel(chip=sl)
        e = np.asarray(part["embedding"].values)
        ok = np.isfinite(e).all(axis=-1)
        if not ok.any():
            continue
        idx = np.nonzero(ok)[0]
        x = part["x"].values[idx].astype(np.float64)
        y = part["y"].values[idx].astype(np.float64)
        ep = part["epsg"].values[idx].astype(np.int32)
        corners = np.full((len(idx), 4, 2), np.nan)
        for code in np.unique(ep):
            m = ep == code
            corners[m] = chip_corners(int(code), x[m], y[m])
        n = len(idx)
        yield ChipBlock(
            group=group, t=np.full(n, -1, np.int32), i=(idx + s).astype(np.int32),
            j=np.full(n, -1, np.int32), time=part["time"].values[idx].astype("datetime64[ns]"),
            epsg=ep, x=x, y=y, item_id=np.asarray(part["item_id"].values[idx], dtype=object),
            valid_fraction=part["valid_fraction"].values[idx].astype(np.float32),
            embedding=e[ok], corners=corners)


def is_grid(ds: xr.Dataset) -> bool:
    return "chip" not in ds["embedding"].dims


def iter_chip_blocks(cube: CubeView, groups: Sequence[str] | None = None, *,
                     block_chips: int = BLOCK_CHIPS) -> Iterator[ChipBlock]:
    """Every embedded chip of ``cube`` (finite embedding), group by group, in blocks.

    Parameters
    ----------
    cube : CubeView
        From :func:`geomoe.open_cube`.
    groups : sequence of str, optional
        Default: all of ``cube.groups``, in order.
    block_chips : int
        Upper bound on a block's chips (whole chunks: a single chunk may exceed it).

    Yields
    ------
    ChipBlock
        Chips in a deterministic order: group, band of chunk rows (y), time slice, x.
    """
    items = ItemLookup(cube)
    for g in groups or cube.groups:
        ds = cube[g]
        yield from (_grid_blocks(cube, g, items, block_chips) if is_grid(ds)
                    else _table_blocks(cube, g, block_chips))


@dataclass
class PointHit:
    """Where a lon/lat point falls: the chip of one group (``t`` = -1 for the table group,
    whose chip has one time), and its finite embeddings at each embedded time."""

    group: str
    i: int
    j: int
    times: list[int]
    vectors: np.ndarray  # (m, D) float32, m >= 0


def locate(cube: CubeView, lon: float, lat: float) -> list[PointHit]:
    """The chips containing a lon/lat point in every group (empty: the point is outside).

    Parameters
    ----------
    cube : CubeView
    lon, lat : float
        Degrees, EPSG:4326.

    Returns
    -------
    list of PointHit
        One per group whose chips contain the point; its ``vectors`` are the embedded times
        (may be empty: the chip was skipped for cloud or fill, or never computed).
    """
    hits = []
    for g in cube.groups:
        ds = cube[g]
        if is_grid(ds):
            epsg = group_epsg(ds)
            X, Y = _from_wgs84(epsg).transform(lon, lat)
            x0, y0 = float(ds.x[0]) - HALF, float(ds.y[0]) + HALF
            j, i = int(np.floor((X - x0) / 1200.0)), int(np.floor((y0 - Y) / 1200.0))
            if not (0 <= i < ds.sizes["y"] and 0 <= j < ds.sizes["x"]):
                continue
            e = np.asarray(ds["embedding"][:, i, j].values, np.float32)  # (T, D)
            ok = np.isfinite(e).all(axis=1)
            hits.append(PointHit(g, i, j, np.nonzero(ok)[0].tolist(), e[ok]))
        else:
            x, y, ep = ds["x"].values, ds["y"].values, ds["epsg"].values
            for code in np.unique(ep):
                X, Y = _from_wgs84(int(code)).transform(lon, lat)
                m = np.nonzero((ep == code) & (np.abs(x - X) <= HALF) & (np.abs(y - Y) <= HALF))[0]
                for k in m[:1]:
                    e = np.asarray(ds["embedding"][int(k)].values, np.float32)[None]
                    ok = np.isfinite(e).all(axis=1)
                    hits.append(PointHit(g, int(k), -1, [-1] if ok[0] else [], e[ok]))
    return hits
