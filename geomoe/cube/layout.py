"""Cube layout: per-group specs and chunk-aligned tiles.

Why a separate module: the layout (which chip lands at which array index, which tiles
exist) must be the same in the process that creates the cube and in every worker that later
writes a tile. It is planned once, per tile, from the items' footprints
(:mod:`geomoe.cube.tiling`), stored in the cube (:mod:`geomoe.cube.items`) and read back by
workers; :func:`specs_from_plan` builds it from a whole-AOI chip plan (small areas, tests).

Grid groups (fixed chip grid per CRS): index ``i`` along ``y`` counts down from the
northernmost chip row (north-up, y descending), index ``j`` along ``x`` counts east from
the westernmost column; chip (row, col) has its centre at ((col+0.5)*1200, (row+0.5)*1200).
A tile is ``tile_size x tile_size`` chips = exactly one Zarr chunk in y and x, all times.

Table groups (item grid, e.g. BigEarthNet patches): chips sorted by (item id, row, col);
a tile is ``table_tile`` consecutive chips = one chunk along ``chip``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from geomoe.chips.grid import CHIP_METERS

TABLE_GROUP = "chips"


def group_name(epsg: int) -> str:
    """``32630 -> 'utm30n'``, ``32721 -> 'utm21s'``, anything else ``'epsg3031'``."""
    if 32601 <= epsg <= 32660:
        return f"utm{epsg - 32600:02d}n"
    if 32701 <= epsg <= 32760:
        return f"utm{epsg - 32700:02d}s"
    return f"epsg{epsg}"


@dataclass(frozen=True)
class CubeTile:
    """A tile of the output cube, the unit of embedding work: a chunk-aligned region of one
    group (one Zarr chunk in y and x, or along ``chip``). ``key`` is (ty, tx) or (k,)."""

    group: str
    key: tuple[int, ...]

    def __str__(self) -> str:
        return "/".join([self.group, *map(str, self.key)])

    @classmethod
    def parse(cls, text: str) -> "CubeTile":
        group, *key = text.split("/")
        return cls(group, tuple(int(k) for k in key))


@dataclass
class GridSpec:
    """One CRS group on the fixed chip grid: shape, coordinates, time slices and its tiles.

    No per-chip state: ``tile_items`` says which items touch each tile (a spatial join of
    their footprints against the tiles, :mod:`geomoe.cube.tiling`), and the chips of a tile are
    enumerated only when the tile is read. ``tile_estimate`` is the chips per tile estimated
    from footprint areas; ``exact`` (filled as tiles are planned or finish) overrides it.
    """

    name: str
    epsg: int
    row_max: int  # northernmost chip row (index 0 along y)
    col_min: int  # westernmost column (index 0 along x)
    ny: int
    nx: int
    days: np.ndarray  # (T,) datetime64[D] solar day of each slice
    times: np.ndarray  # (T,) datetime64[ns] acquisition time (earliest that day)
    item_ids: list[list[str]]  # per time slice, the STAC items that overlap the group that day
    item_day: dict[str, np.datetime64]  # item id -> its solar day (= time slice)
    time_day: dict[np.datetime64, np.datetime64]  # acquisition time (s) -> solar day
    tile_size: int
    tile_items: dict[tuple[int, int], tuple[str, ...]] = field(repr=False, default_factory=dict)
    tile_estimate: dict[tuple[int, int], int] = field(repr=False, default_factory=dict)
    source: str = ""  # digest of what decides the chips (AOI, items' footprints): fingerprinted
    layout: str = "grid"
    exact: dict[tuple[int, int], int] = field(repr=False, default_factory=dict, compare=False)

    @property
    def x(self) -> np.ndarray:
        return (np.arange(self.col_min, self.col_min + self.nx) + 0.5) * CHIP_METERS

    @property
    def y(self) -> np.ndarray:
        return (self.row_max - np.arange(self.ny) + 0.5) * CHIP_METERS

    @property
    def n_tiles(self) -> tuple[int, int]:
        ts = self.tile_size
        return (-(-self.ny // ts), -(-self.nx // ts))

    def tiles(self) -> list[CubeTile]:
        """Tiles some item footprint overlaps with positive area (the others stay NaN)."""
        return [CubeTile(self.name, k) for k in sorted(self.tile_items)]

    def chip_tiles(self) -> set[tuple[int, int]]:
        """Keys (ty, tx) of :meth:`tiles`."""
        return set(self.tile_items)

    def index_of(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.row_max - np.asarray(row, np.int64), np.asarray(col, np.int64) - self.col_min

    def time_index(self, item_ids: Iterable[str] | None = None, times: Iterable[Any] | None = None) -> np.ndarray:
        """Time-slice index of chips, from their item ids or (skipped chips) acquisition times."""
        if item_ids is not None:
            days = np.array([self.item_day[str(i)] for i in item_ids], dtype="datetime64[D]")
        else:
            days = np.array([self.time_day[np.datetime64(t, "s")] for t in times], dtype="datetime64[D]")
        idx = np.searchsorted(self.days, days)
        idx = np.clip(idx, 0, len(self.days) - 1)
        if not np.all(self.days[idx] == days):
            raise ValueError("chip time outside the planned time slices")
        return idx

    def region(self, tile: CubeTile) -> tuple[slice, slice]:
        """Array slices (y, x) of a tile, clipped to the grid."""
        ty, tx = tile.key
        ts = self.tile_size
        return slice(ty * ts, min((ty + 1) * ts, self.ny)), slice(tx * ts, min((tx + 1) * ts, self.nx))

    def window(self, tile: CubeTile) -> tuple[int, int, int, int]:
        """Chip-grid window (row0, row1, col0, col1), half-open, for ``iter_chips(window=)``."""
        ys, xs = self.region(tile)
        return (self.row_max - ys.stop + 1, self.row_max - ys.start + 1,
                self.col_min + xs.start, self.col_min + xs.stop)

    def tile_item_ids(self, tile: CubeTile) -> set[str]:
        """Items whose footprint (clipped to the AOI) overlaps the tile with positive area;
        an item that an earlier scene of its solar day covers there may give no chip."""
        return set(self.tile_items.get(tuple(tile.key), ()))

    def n_planned(self, tile: CubeTile | None = None) -> int:
        """Chips of a tile (or of the group): exact where the tile was planned, else estimated."""
        if tile is None:
            return sum(self.n_planned(CubeTile(self.name, k)) for k in self.tile_items)
        key = tuple(tile.key)
        if key in self.exact:
            return self.exact[key]
        return int(self.tile_estimate.get(key, 0))

    def is_exact(self, tile: CubeTile | None = None) -> bool:
        """Whether :meth:`n_planned` is exact (for the tile, or for every tile of the group)."""
        if tile is None:
            return all(k in self.exact for k in self.tile_items)
        return tuple(tile.key) in self.exact

    def record_exact(self, tile: CubeTile, n: int) -> None:
        """The tile's chips are now enumerated (``n`` of them): counts stop being estimates."""
        self.exact[tuple(tile.key)] = int(n)


@dataclass
class TableSpec:
    """Item-grid chips (pre-chipped patches) as a table along ``chip``."""

    name: str
    chips: np.ndarray  # sorted: epsg, row, col, time, item_id
    tile_size: int
    layout: str = "table"

    @property
    def n(self) -> int:
        return len(self.chips)

    def tiles(self) -> list[CubeTile]:
        return [CubeTile(self.name, (k,)) for k in range(-(-self.n // self.tile_size))]

    def region(self, tile: CubeTile) -> slice:
        (k,) = tile.key
        return slice(k * self.tile_size, min((k + 1) * self.tile_size, self.n))

    def tile_item_ids(self, tile: CubeTile) -> set[str]:
        return set(self.chips["item_id"][self.region(tile)].tolist())

    def n_planned(self, tile: CubeTile | None = None) -> int:
        if tile is None:
            return self.n
        s = self.region(tile)
        return s.stop - s.start

    def is_exact(self, tile: CubeTile | None = None) -> bool:
        return True  # the table's chips are enumerated when it is planned

    def record_exact(self, tile: CubeTile, n: int) -> None:
        pass

    def lookup(self) -> dict[tuple[str, int, int], int]:
        c = self.chips
        return {(str(a), int(r), int(q)): k for k, (a, r, q) in
                enumerate(zip(c["item_id"], c["row"], c["col"]))}


Spec = GridSpec | TableSpec


def _chip_fields(chips: np.ndarray) -> np.ndarray:
    out = np.empty(len(chips), dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "O")])
    for name in ("row", "col", "time", "item_id"):
        out[name] = chips[name]
    out["item_id"] = np.array([str(v) for v in chips["item_id"]], dtype=object)
    return out


def specs_from_plan(plan: Any, items: Iterable[Any], tile_size: int = 32,
                    table_tile: int = 256) -> list[Spec]:
    """Turn a whole-AOI ``geomoe.chips.plan.ChipPlan`` into cube group specs (exact counts).

    For small plans and tests; ``embed-region`` plans per tile instead
    (:func:`geomoe.cube.tiling.plan_specs`), which never enumerates every chip. The plan has
    one fixed-grid group per (CRS, solar day); the cube has one group per CRS with one time
    slice per solar day. All item-grid chips (any CRS) go to the single table group
    ``chips``. ``items`` (pystac Items) give each item's solar day.
    """
    from geomoe.chips.grid import item_datetime, solar_day

    items = list(items)
    item_day = {it.id: solar_day(it) for it in items}
    time_day = {np.datetime64(item_datetime(it), "s"): solar_day(it) for it in items}
    by_epsg: dict[int, list[np.ndarray]] = {}
    table_parts = []
    for grp in plan.groups:
        chips = _chip_fields(grp.chips)
        if len(chips) == 0:
            continue
        if grp.grid == "item":
            t = np.empty(len(chips), dtype=[("epsg", "i4")] + chips.dtype.descr)
            t["epsg"] = grp.epsg
            for n in chips.dtype.names:
                t[n] = chips[n]
            table_parts.append(t)
        else:
            by_epsg.setdefault(int(grp.epsg), []).append(chips)
    specs: list[Spec] = []
    for epsg in sorted(by_epsg):
        chips = np.concatenate(by_epsg[epsg])
        days = np.array([item_day[i] for i in chips["item_id"]], dtype="datetime64[D]")
        udays = np.unique(days)
        times, ids = [], []
        for d in udays:
            sel = days == d
            times.append(chips["time"][sel].min())
            ids.append(sorted(set(chips["item_id"][sel].tolist())))
        used = set(chips["item_id"].tolist())
        row_max, col_min = int(chips["row"].max()), int(chips["col"].min())
        ty = (row_max - chips["row"]) // tile_size
        tx = (chips["col"] - col_min) // tile_size
        keys, counts = np.unique(np.stack([ty, tx], axis=1), axis=0, return_counts=True)
        tile_items: dict[tuple[int, int], set] = {}
        for a, b, i in zip(ty.tolist(), tx.tolist(), chips["item_id"].tolist()):
            tile_items.setdefault((a, b), set()).add(i)
        h = hashlib.sha256()
        for n in ("row", "col", "time"):
            h.update(np.ascontiguousarray(chips[n]).tobytes())
        h.update("|".join(map(str, chips["item_id"].tolist())).encode())
        specs.append(GridSpec(
            name=group_name(epsg), epsg=epsg, row_max=row_max, col_min=col_min,
            ny=int(chips["row"].max() - chips["row"].min() + 1),
            nx=int(chips["col"].max() - chips["col"].min() + 1),
            days=udays, times=np.array(times, dtype="datetime64[ns]"), item_ids=ids,
            item_day={i: item_day[i] for i in used},
            time_day=time_day, tile_size=tile_size,
            tile_items={k: tuple(sorted(v)) for k, v in tile_items.items()},
            tile_estimate={(int(a), int(b)): int(c) for (a, b), c in zip(keys, counts)},
            source="chips:" + h.hexdigest(),
            exact={(int(a), int(b)): int(c) for (a, b), c in zip(keys, counts)}))
    if table_parts:
        t = np.concatenate(table_parts)
        t = t[np.lexsort((t["col"], t["row"], t["item_id"].astype(str)))]
        specs.append(TableSpec(name=TABLE_GROUP, chips=t, tile_size=table_tile))
    return specs


def grid_key(spec: GridSpec) -> list:
    """What the fingerprint records of a grid group: its geometry, slices, items and source."""
    return [spec.name, spec.layout, int(spec.tile_size), int(spec.epsg), int(spec.row_max),
            int(spec.col_min), int(spec.ny), int(spec.nx), [str(d) for d in spec.days],
            [str(np.datetime64(t, "s")) for t in spec.times], spec.item_ids, spec.source]


def plan_fingerprint(specs: list[Spec]) -> str:
    """sha256 of the plan: a rerun must plan exactly the same chips to resume.

    Grid groups: their geometry, time slices, items and ``source`` (a digest of the AOI and of
    the items' footprints, which decide the chips), so its cost grows with items, not chips.
    Table groups (item grid, small): every chip."""
    h = hashlib.sha256()
    for s in specs:
        if isinstance(s, GridSpec):
            h.update(json.dumps(grid_key(s)).encode())
            continue
        h.update(json.dumps([s.name, s.layout, s.tile_size]).encode())
        c = s.chips
        for n in c.dtype.names:
            col = c[n]
            h.update("|".join(map(str, col.tolist())).encode() if col.dtype == object else
                     np.ascontiguousarray(col).tobytes())
    return h.hexdigest()
