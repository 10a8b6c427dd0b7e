"""STAC items + AOI -> batches of 40x40 Landsat chips (uint16 DN) with their metadata.

``plan_chips`` decides which chips exist (no pixel reads); ``iter_chips`` reads them tile by
tile (blocks of 16x16 chips, a bounded number in flight), masks them, and yields ChipBatch.

Decisions:
- Chips under ``min_valid`` are never in ``pixels``; they are reported in ``skipped_index``/
  ``skipped_valid`` of the next batch (a final batch may have N=0 but carry skipped chips).
- Masked pixels (cloud, shadow...) inside a kept chip keep their DN unchanged: the published
  model was trained on unmasked patches, and the valid fraction says how much is masked.
  Fill pixels are 0 already.
- Mosaic: scenes of one CRS and one solar day form one group; per chip the *primary* item is
  the first (by datetime, then id) whose footprint intersects the chip; its ``time`` and
  ``item_id`` are the chip's, and later scenes fill only pixels the earlier ones left invalid.
- Items whose native pixels are not 30 m (the downsampled ~480 m QA scenes) are still read onto
  the 30 m fixed grid by nearest neighbour (pixels repeat); the item grid uses native pixels.
- Order is deterministic: groups by (grid, epsg, day), chips by tile then row, col.
"""

from __future__ import annotations

import collections
import logging
import time as _time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pystac
import shapely.geometry as sg

from geomoe.errors import NoScenesError
from geomoe.chips.grid import (
    CHIP_METERS,
    CHIP_PIXELS,
    GRID_MODES,
    GridError,
    ItemGrid,
    fixed_chips,
    footprint_in_crs,
    item_chips,
    item_datetime,
    item_epsg,
    item_transform_shape,
    make_item_grid,
    solar_day,
    transformer,
)
from geomoe.chips.meta import encode_datetime64, encode_latlon
from geomoe.chips.qa import DEFAULT_MASK_BITS, bitmask
from geomoe.chips.read import TILE_CHIPS, iter_tiles, read_tiles
from geomoe.chips.assets import ItemAssets, PatchUrl, RasterPool, resolve_assets

__all__ = [
    "CHIP_METERS",
    "CHIP_PIXELS",
    "ChipBatch",
    "ChipGroup",
    "ChipPlan",
    "INDEX_DTYPE",
    "iter_chips",
    "load_group",
    "plan_chips",
]

log = logging.getLogger("geomoe.chips.plan")

INDEX_DTYPE = np.dtype([("epsg", np.int32), ("row", np.int64), ("col", np.int64), ("time", "datetime64[s]")])


def _chip_dtype(max_id_len: int) -> np.dtype:
    return np.dtype(
        [("row", np.int64), ("col", np.int64), ("time", "datetime64[s]"), ("item_id", f"U{max(max_id_len, 1)}")]
    )


@dataclass
class ChipGroup:
    """Items of one CRS (and, on the fixed grid, one solar day) and the chips they give.

    ``chips``: structured array (row int64, col int64, time datetime64[s], item_id str),
    one per (row, col) on the fixed grid (the primary item's), one per (item, row, col) on the
    item grid; sorted in reading order.
    """

    epsg: int
    grid: str
    items: list[pystac.Item]
    chips: np.ndarray
    day: np.datetime64 | None = None
    assets: dict[str, ItemAssets] = field(default_factory=dict, repr=False)
    item_grids: dict[str, ItemGrid] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.chips)


@dataclass
class ChipPlan:
    """Every chip the items give inside the AOI, grouped; built without reading pixels."""

    groups: list[ChipGroup]
    seconds: float = 0.0

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)


def _no_index() -> np.ndarray:
    return np.zeros(0, INDEX_DTYPE)


def _no_values() -> np.ndarray:
    return np.zeros(0, np.float32)


def _no_ids() -> np.ndarray:
    return np.zeros(0, str)


@dataclass
class ChipBatch:
    """N chips and what is known of each: the one chip container of geomoe.

    :func:`iter_chips` yields it (embedding, with every field); the training stream shuffles,
    takes and concatenates it; a probe's labelled set holds one. The model's input is
    ``model.preprocess(batch.pixels)`` plus the four metadata arrays; the z-scoring belongs
    to the weights, not to the chips.

    Attributes
    ----------
    pixels : (N, 7, 40, 40) uint16
        Landsat C2 L2 DN, bands SR_B1..SR_B7; 0 is fill.
    week, hour, lat, lon : (N, 2) float32 or None
        (sin, cos) of acquisition week of year, UTC hour, latitude and longitude
        (geomoe.chips.meta); None where unknown (e.g. loose GeoTIFFs): the model then uses zeros.
    item_id : (N,) str
        The STAC item (scene) each chip was read from, or another name of its source.
    valid : (N,) float32 or None
        Fraction of the chip's pixels that are clear (not cloud, shadow or fill).
    index : (N,) INDEX_DTYPE or None
        Position (epsg, row, col) of the chip on its grid and its acquisition time.
    x, y : (N,) float64 or None
        Chip centre in metres in its CRS (``index["epsg"]``).
    skipped_index, skipped_valid, skipped_item_id : (M,)
        Chips under ``min_valid`` met since the previous batch (never in ``pixels``); the
        item id tells apart pre-chipped patches that share an index. Empty by default.
    """

    pixels: np.ndarray
    week: np.ndarray | None
    hour: np.ndarray | None
    lat: np.ndarray | None
    lon: np.ndarray | None
    item_id: np.ndarray
    valid: np.ndarray | None = None
    index: np.ndarray | None = None
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    skipped_index: np.ndarray = field(default_factory=_no_index)
    skipped_valid: np.ndarray = field(default_factory=_no_values)
    skipped_item_id: np.ndarray = field(default_factory=_no_ids)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def take(self, idx: np.ndarray | slice) -> "ChipBatch":
        """The chips at ``idx`` (indices or a slice) as a new batch; it carries no skipped
        chips (those were reported once, with this batch)."""
        return ChipBatch(**{f: None if getattr(self, f) is None else getattr(self, f)[idx]
                            for f in _PER_CHIP})

    @staticmethod
    def concat(parts: Sequence["ChipBatch"]) -> "ChipBatch":
        """One batch of the chips (and the skipped chips) of ``parts``, in order; a field
        unknown (None) in any part is unknown in the result."""
        out = {}
        for f in _PER_CHIP + _SKIPPED:
            vals = [getattr(p, f) for p in parts]
            out[f] = None if any(v is None for v in vals) else np.concatenate(vals)
        return ChipBatch(**out)


_PER_CHIP = ("pixels", "week", "hour", "lat", "lon", "item_id", "valid", "index", "x", "y")
_SKIPPED = ("skipped_index", "skipped_valid", "skipped_item_id")


# ----------------------------------------------------------------------------- planning


def _as_items(items: Iterable) -> list[pystac.Item]:
    out, seen = [], set()
    for it in items:
        if isinstance(it, dict):
            it = pystac.Item.from_dict(it)
        if not isinstance(it, pystac.Item):
            raise TypeError(f"expected pystac.Item or item dict, got {type(it).__name__}")
        if it.id in seen:
            continue
        seen.add(it.id)
        out.append(it)
    return out


def _as_aoi(aoi) -> sg.base.BaseGeometry | None:
    if aoi is None or isinstance(aoi, sg.base.BaseGeometry):
        return aoi
    from geomoe.stac.aoi import load_aoi

    return load_aoi(aoi)


def checked_inputs(items: Iterable, aoi: Any, grid: str | None) -> tuple[list[pystac.Item], Any]:
    """Items as pystac Items and the AOI as a shapely geometry, refusing no items or an
    unknown grid mode: what every planner checks first."""
    items = _as_items(items)
    if not items:
        raise NoScenesError("no items to chip: the search found no scenes for this AOI and time range")
    if grid is not None and grid not in GRID_MODES:
        raise GridError(f"unknown chip grid {grid!r}: use one of {GRID_MODES}")
    return items, _as_aoi(aoi)


def _local_collection(item: pystac.Item) -> pystac.Collection | None:
    """The item's collection if already loaded or on local disk; never fetched over the network
    (planning must stay cheap and offline: an API item's collection link is a URL)."""
    link = item.get_single_link("collection")
    if link is None:
        return None
    if link.is_resolved():
        target = link.target
        return target if isinstance(target, pystac.Collection) else None
    href = link.get_absolute_href() or ""
    if "://" in href and not href.startswith("file://"):
        return None
    try:
        target = link.resolve_stac_object(item.get_root()).target
    except Exception:  # an unreadable collection file is not an error here
        return None
    return target if isinstance(target, pystac.Collection) else None


def _grid_mode(item: pystac.Item, grid: str | None) -> str:
    mode = grid or item.properties.get("geomoe:chip_grid")
    if mode is None:
        coll = _local_collection(item)
        mode = coll.extra_fields.get("geomoe:chip_grid") if coll is not None else None
    mode = mode or "fixed"
    if mode not in GRID_MODES:
        raise GridError(f"unknown chip grid {mode!r} (item {item.id!r}): use one of {GRID_MODES}")
    return mode


def _sort_chips(chips: np.ndarray, by_item: bool) -> np.ndarray:
    tr = chips["row"] // TILE_CHIPS
    tc = chips["col"] // TILE_CHIPS
    keys = [chips["col"], chips["row"], tc, tr]
    if by_item:
        keys.append(chips["item_id"])
    return chips[np.lexsort(keys)]


def plan_chips(items: Sequence, aoi=None, grid: str | None = None, *, pool: RasterPool | None = None,
               patch_url: PatchUrl | None = None, epsg: int | None = None,
               window: tuple[int, int, int, int] | None = None) -> ChipPlan:
    """Decide every chip of ``items`` inside ``aoi``, without reading pixels.

    Chips are 40 x 40 pixels of 30 m (1200 m). Items are grouped by CRS (and, on the fixed
    grid, by solar day); where scenes of a group overlap, each chip comes from the earliest.

    Parameters
    ----------
    items : sequence of pystac.Item or dict
        Landsat 8/9 Collection 2 Level-2 scenes with the 7 SR bands, e.g. from :func:`search`.
    aoi : shapely geometry or AOI source, optional
        EPSG:4326, or anything :func:`geomoe.stac.aoi.load_aoi` reads; None: the whole items.
    grid : {"fixed", "item"}, optional
        "fixed": one 1200 m grid per CRS, aligned to multiples of 1200 m, so chips of different
        scenes and dates line up; "item": each scene's own pixel grid (pre-chipped patches).
        None: the item property ``geomoe:chip_grid``, else "fixed".
    pool : RasterPool, optional
        Open raster handles to reuse (item-grid planning reads raster headers).
    patch_url : callable str -> str, optional
        Rewrites an asset href when a header must be read (see geomoe.chips.assets.PatchUrl);
        default: :func:`geomoe.chips.assets.default_patch_url` (signs Planetary Computer hrefs).
    epsg : int, optional
        Plan only the fixed-grid items of this CRS (needed with ``window``).
    window : tuple of int, optional
        (row0, row1, col0, col1), half-open chip indices of the fixed grid of ``epsg``: plan
        only this window (one cube tile). Each footprint is clipped to the window's box before
        its chips are enumerated, so the cost grows with the window, not with the scenes; the
        chips inside are exactly those of the whole plan, and a group keeps only the items that
        give a chip inside. Item-grid items are planned as without it.

    Returns
    -------
    ChipPlan
        ``groups`` (one per CRS and day or per item grid), each with its ``items`` and
        ``chips`` (a structured array of row, col, time, item_id); ``len(plan)`` chips in all.

    Raises
    ------
    geomoe.errors.MissingBandError, UnknownCRSError, geomoe.errors.NoScenesError
        Before any pixel is read.
    """
    t0 = _time.perf_counter()
    items, aoi = checked_inputs(items, aoi, grid)
    if window is not None and epsg is None:
        raise ValueError("plan_chips(window=...) needs the epsg of the window's grid")
    clip = None
    if window is not None:
        r0, r1, c0, c1 = window
        clip = sg.box(c0 * CHIP_METERS, r0 * CHIP_METERS, c1 * CHIP_METERS, r1 * CHIP_METERS)
    own_pool = pool is None
    pool = pool or RasterPool(patch_url=patch_url)
    try:
        buckets: dict[tuple, list[pystac.Item]] = collections.defaultdict(list)
        assets: dict[str, ItemAssets] = {}
        only_epsg = epsg
        for it in items:
            item_epsg_ = item_epsg(it)
            assets[it.id] = resolve_assets(it)  # MissingBandError before any read
            item_datetime(it)
            mode = _grid_mode(it, grid)
            if mode == "fixed" and only_epsg is not None and item_epsg_ != only_epsg:
                continue
            key = (mode, item_epsg_, solar_day(it) if mode == "fixed" else None)
            buckets[key].append(it)
        groups: list[ChipGroup] = []
        id_len = max(len(it.id) for it in items)
        for key in sorted(buckets, key=lambda k: (k[0], k[1], str(k[2]))):
            mode, epsg, day = key
            its = sorted(buckets[key], key=lambda i: (item_datetime(i), i.id))
            parts, item_grids = [], {}
            for prio, it in enumerate(its):
                t = np.datetime64(item_datetime(it), "s")
                if mode == "fixed":
                    fp = footprint_in_crs(it, epsg, aoi)
                    if clip is not None:
                        fp = fp.intersection(clip)
                    rows, cols = fixed_chips(fp)
                else:
                    ig = _item_grid(it, assets[it.id], epsg, pool)
                    item_grids[it.id] = ig
                    geom = footprint_in_crs(it, epsg, aoi) if aoi is not None else None
                    rows, cols = item_chips(ig, geom)
                if rows.size == 0:
                    continue
                c = np.empty(rows.size, _chip_dtype(id_len))
                c["row"], c["col"], c["time"], c["item_id"] = rows, cols, t, it.id
                parts.append((prio, c))
            if not parts:
                continue
            chips = np.concatenate([c for _, c in parts])
            if mode == "fixed" and len(parts) > 1:
                prio = np.concatenate([np.full(len(c), p) for p, c in parts])
                order = np.lexsort([prio, chips["col"], chips["row"]])
                chips = chips[order]
                first = np.ones(len(chips), bool)
                first[1:] = (chips["row"][1:] != chips["row"][:-1]) | (chips["col"][1:] != chips["col"][:-1])
                chips = chips[first]
            chips = _sort_chips(chips, by_item=(mode == "item"))
            used = set(np.unique(chips["item_id"]).tolist())
            groups.append(
                ChipGroup(
                    epsg=epsg,
                    grid=mode,
                    items=[i for i in its if i.id in used],
                    chips=chips,
                    day=day,
                    assets={i.id: assets[i.id] for i in its if i.id in used},
                    item_grids={k: v for k, v in item_grids.items() if k in used},
                )
            )
        return ChipPlan(groups=groups, seconds=_time.perf_counter() - t0)
    finally:
        if own_pool:
            pool.close()


def _item_grid(item: pystac.Item, assets: ItemAssets, epsg: int, pool: RasterPool) -> ItemGrid:
    ts = item_transform_shape(item, assets.keys[0])
    if ts is None:  # no proj:transform/shape: read the header (cheap, no pixels)
        ds = pool.open(assets.hrefs[0], epsg)
        ts = ds.transform, (ds.height, ds.width)
    return make_item_grid(ts[0], ts[1], item.id)


# ----------------------------------------------------------------------------- reading


def _index(epsg: np.ndarray, chips: np.ndarray) -> np.ndarray:
    idx = np.empty(len(chips), INDEX_DTYPE)
    idx["epsg"], idx["row"], idx["col"], idx["time"] = epsg, chips["row"], chips["col"], chips["time"]
    return idx


class ChipIterator:
    """Iterator of ChipBatch returned by :func:`iter_chips`; ``stats`` counts kept/skipped chips.

    Reads bands on ``workers`` reader threads with at most ``workers + prefetch`` tiles queued
    (geomoe.chips.read), so memory is bounded by a few tiles plus one batch whatever the AOI size.
    """

    def __init__(self, plan: ChipPlan, batch_size: int, min_valid: float, epsg, window, mask_bits,
                 workers: int, prefetch: int, patch_url: PatchUrl | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= min_valid <= 1.0:
            raise ValueError(f"min_valid must be in [0, 1], got {min_valid}")
        self.plan = plan
        self.patch_url = patch_url
        self.stats = {"planned": len(plan), "kept": 0, "skipped": 0, "zero_chip_items": []}
        self._gen = self._run(batch_size, min_valid, epsg, window, bitmask(mask_bits), max(1, workers), max(0, prefetch))

    def __iter__(self) -> ChipIterator:
        return self

    def __next__(self) -> ChipBatch:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _run(self, batch_size, min_valid, epsg, window, mask, workers, prefetch) -> Iterator[ChipBatch]:
        kept: list[tuple] = []  # (pixels, valid, chips, epsg, x, y) pieces
        n_kept = 0
        skipped: list[tuple] = []
        per_item_kept: collections.Counter = collections.Counter()
        per_item_planned: collections.Counter = collections.Counter()
        results = read_tiles(iter_tiles(self.plan, epsg, window), workers, prefetch, mask, self.patch_url)
        try:
            for res in results:
                ok = res.valid >= min_valid
                ids = res.chips["item_id"]
                per_item_planned.update(ids.tolist())
                per_item_kept.update(ids[ok].tolist())
                if not ok.all():
                    bad = ~ok
                    skipped.append((_index(np.int32(res.group.epsg), res.chips[bad]), res.valid[bad], ids[bad]))
                    self.stats["skipped"] += int(bad.sum())
                if ok.any():
                    part = (res.pixels[ok] if not ok.all() else res.pixels, res.valid[ok], res.chips[ok],
                            res.group.epsg, res.x[ok], res.y[ok])
                    kept.append(part)
                    n_kept += int(ok.sum())
                while n_kept >= batch_size:
                    batch, kept, n_kept = self._take(kept, batch_size, skipped)
                    skipped = []
                    self.stats["kept"] += len(batch)
                    yield batch
            if n_kept or skipped:
                batch, kept, n_kept = self._take(kept, n_kept, skipped)
                self.stats["kept"] += len(batch)
                yield batch
            zero = sorted(i for i in per_item_planned if per_item_kept[i] == 0)
            self.stats["zero_chip_items"] = zero
            self.stats["planned"] = self.stats["kept"] + self.stats["skipped"]
            if self.stats["planned"] == 0:
                log.warning("no chips: the AOI (and epsg/window) intersects no item footprint")
            elif self.stats["kept"] == 0:
                log.warning(
                    "0 chips kept of %d planned: every chip is under min_valid=%.2f (cloud, shadow or "
                    "fill) in scene(s) %s",
                    self.stats["skipped"], min_valid, ", ".join(zero[:10]),
                )
            elif zero:
                log.warning(
                    "%d scene(s) gave 0 chips over min_valid=%.2f: %s", len(zero), min_valid, ", ".join(zero[:10])
                )
        finally:
            results.close()  # stops the reader threads and closes the rasters

    @staticmethod
    def _take(kept: list, n: int, skipped: list) -> tuple[ChipBatch, list, int]:
        """Cut the first n kept chips into a batch; returns (batch, rest, n_rest)."""
        take, rest, got = [], [], 0
        for part in kept:
            k = len(part[1])
            if got >= n:
                rest.append(part)
            elif got + k <= n:
                take.append(part)
                got += k
            else:
                m = n - got
                take.append(tuple(p[:m] if isinstance(p, np.ndarray) else p for p in part))
                rest.append(tuple(p[m:] if isinstance(p, np.ndarray) else p for p in part))
                got = n
        n_rest = sum(len(p[1]) for p in rest)
        if take:
            pixels = np.concatenate([p[0] for p in take])
            valid = np.concatenate([p[1] for p in take]).astype(np.float32)
            chips = np.concatenate([p[2] for p in take])
            epsg = np.concatenate([np.full(len(p[1]), p[3], np.int32) for p in take])
            x = np.concatenate([p[4] for p in take]).astype(np.float64)
            y = np.concatenate([p[5] for p in take]).astype(np.float64)
        else:
            pixels = np.zeros((0, 7, CHIP_PIXELS, CHIP_PIXELS), np.uint16)
            valid = np.zeros(0, np.float32)
            chips = np.zeros(0, _chip_dtype(1))
            epsg = np.zeros(0, np.int32)
            x = y = np.zeros(0, np.float64)
        lat = np.zeros(len(x))
        lon = np.zeros(len(x))
        for e in np.unique(epsg):
            s = epsg == e
            lon[s], lat[s] = transformer(int(e), 4326).transform(x[s], y[s])
        lat_e, lon_e = encode_latlon(lat, lon)
        week, hour = encode_datetime64(chips["time"])
        if skipped:
            s_idx = np.concatenate([s[0] for s in skipped])
            s_val = np.concatenate([s[1] for s in skipped]).astype(np.float32)
            s_ids = np.concatenate([s[2] for s in skipped]).astype(str)
        else:
            s_idx, s_val, s_ids = np.zeros(0, INDEX_DTYPE), np.zeros(0, np.float32), np.zeros(0, str)
        batch = ChipBatch(
            pixels=pixels,
            week=week,
            hour=hour,
            lat=lat_e,
            lon=lon_e,
            valid=valid,
            index=_index(epsg, chips),
            x=x,
            y=y,
            item_id=chips["item_id"].astype(str),
            skipped_index=s_idx,
            skipped_valid=s_val,
            skipped_item_id=s_ids,
        )
        return batch, rest, n_rest


def load_group(group: ChipGroup, window: tuple[int, int, int, int] | None = None, *,
               patch_url: PatchUrl | None = None):
    """Lazy dask-backed xarray (time, band, y, x) uint16 DN of a fixed-grid group, for analysts.

    Covers the group's chips (or ``window`` = (row0, row1, col0, col1), half-open) on exactly
    the fixed 30 m grid, via odc-stac (geomoe.chips.assets.load_xarray); pixels equal iter_chips'.
    """
    from geomoe.chips.assets import load_xarray

    if group.grid != "fixed":
        raise GridError("load_group needs a fixed-grid group; item-grid chips have no shared grid")
    if window is None:
        c = group.chips
        window = (int(c["row"].min()), int(c["row"].max()) + 1, int(c["col"].min()), int(c["col"].max()) + 1)
    r0, r1, c0, c1 = window
    bbox = (c0 * CHIP_METERS, r0 * CHIP_METERS, c1 * CHIP_METERS, r1 * CHIP_METERS)
    return load_xarray(group.items, bbox=bbox, epsg=group.epsg, patch_url=patch_url)


def iter_chips(
    items: Sequence,
    aoi=None,
    batch_size: int = 256,
    min_valid: float = 0.9,
    grid: str | None = None,
    epsg: int | None = None,
    window: tuple[int, int, int, int] | None = None,
    mask_bits: Iterable[int | str] = DEFAULT_MASK_BITS,
    *,
    plan: ChipPlan | None = None,
    workers: int = 2,
    prefetch: int = 1,
    patch_url: PatchUrl | None = None,
) -> ChipIterator:
    """Read the chips of ``items`` inside ``aoi`` in batches, lazily, tile by tile.

    Parameters
    ----------
    items : sequence of pystac.Item or dict
        Landsat 8/9 Collection 2 Level-2 scenes, as for :func:`plan_chips`.
    aoi : shapely geometry or AOI source, optional
        EPSG:4326; None: the whole items.
    batch_size : int
        Chips per batch (the last batch of the stream may be smaller).
    min_valid : float
        Fraction in [0, 1]: chips with fewer valid pixels are skipped and reported in the
        batch's ``skipped_*`` fields. A pixel is invalid where ``mask_bits`` are set in
        QA_PIXEL or a band holds the fill value 0.
    grid : {"fixed", "item"}, optional
        As for :func:`plan_chips`.
    epsg : int, optional
        Only the group of this CRS.
    window : tuple of int, optional
        (row0, row1, col0, col1), half-open, in chip indices of the group's grid: one tile.
    mask_bits : iterable of int or str
        QA_PIXEL bits (or names such as "cloud") that mark a pixel invalid; default fill,
        dilated cloud, cirrus, cloud and cloud shadow.
    plan : ChipPlan, optional
        A plan from :func:`plan_chips` of the same items, AOI and grid, to avoid planning again.
    workers : int
        Raster-reading threads.
    prefetch : int
        Batches read ahead of the consumer.
    patch_url : callable str -> str, optional
        Rewrites each asset href when its file is opened, as odc-stac's ``patch_url`` (e.g. a
        signer); default :func:`geomoe.chips.assets.default_patch_url` signs Planetary Computer hrefs.

    Returns
    -------
    iterable of ChipBatch
        Each batch: ``pixels`` (N, 7, 40, 40) uint16 DN of SR_B1..SR_B7; ``week``, ``hour``,
        ``lat``, ``lon`` (N, 2) float32 (sin, cos) acquisition metadata; ``valid`` (N,) float32
        valid fraction; ``x``, ``y`` (N,) float64 chip centres in metres of the chip's CRS;
        ``index`` (N,) (epsg, row, col, time); ``item_id`` (N,) str. The model's input is
        ``model.preprocess(batch.pixels)``, (N, 7, 40, 40) float32.

    Raises
    ------
    geomoe.errors.MissingBandError, UnknownCRSError, geomoe.errors.NoScenesError
        Here, before any pixel is read.
    """
    if plan is None:
        plan = plan_chips(items, aoi=aoi, grid=grid, patch_url=patch_url)
    return ChipIterator(plan, batch_size, min_valid, epsg, window, mask_bits, workers, prefetch, patch_url)
