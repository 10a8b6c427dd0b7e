"""Cube layout planning: chip plan -> per-group specs and chunk-aligned tiles.

Why a separate module: the layout (which chip lands at which array index, which tiles
exist) must be computed identically by the process that creates the cube and by every
worker that later writes a tile, so it is a pure function of the chip plan.

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
    """One CRS group on the fixed chip grid: shape, coordinates and time slices."""

    name: str
    epsg: int
    row_max: int  # northernmost chip row (index 0 along y)
    col_min: int  # westernmost chip column (index 0 along x)
    ny: int
    nx: int
    days: np.ndarray  # (T,) datetime64[D] solar day of each slice
    times: np.ndarray  # (T,) datetime64[ns] acquisition time (earliest that day)
    item_ids: list[list[str]]  # per time slice, the STAC items mosaicked into it
    item_day: dict[str, np.datetime64]  # item id -> its solar day (= time slice)
    time_day: dict[np.datetime64, np.datetime64]  # acquisition time (s) -> solar day
    tile_size: int
    chips: np.ndarray = field(repr=False)  # planned chips (row, col, time, item_id)
    layout: str = "grid"

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
        nty, ntx = self.n_tiles
        planned = self.chip_tiles()
        return [CubeTile(self.name, (a, b)) for a in range(nty) for b in range(ntx) if (a, b) in planned]

    def chip_tiles(self) -> set[tuple[int, int]]:
        """Tiles holding at least one planned chip (others stay NaN and are never read)."""
        i, j = self.index_of(self.chips["row"], self.chips["col"])
        return set(zip((i // self.tile_size).tolist(), (j // self.tile_size).tolist()))

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
        row0, row1, col0, col1 = self.window(tile)
        c = self.chips
        sel = (c["row"] >= row0) & (c["row"] < row1) & (c["col"] >= col0) & (c["col"] < col1)
        return set(c["item_id"][sel].tolist())

    def n_planned(self, tile: CubeTile | None = None) -> int:
        if tile is None:
            return len(self.chips)
        row0, row1, col0, col1 = self.window(tile)
        c = self.chips
        return int(np.sum((c["row"] >= row0) & (c["row"] < row1) & (c["col"] >= col0) & (c["col"] < col1)))


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
    """Turn a ``geomoe.chips.plan.ChipPlan`` into cube group specs.

    The plan has one fixed-grid group per (CRS, solar day); the cube has one group per
    CRS with one time slice per solar day. All item-grid chips (any CRS) go to the single
    table group ``chips``. ``items`` (pystac Items) give each item's solar day.
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
        specs.append(GridSpec(
            name=group_name(epsg), epsg=epsg,
            row_max=int(chips["row"].max()), col_min=int(chips["col"].min()),
            ny=int(chips["row"].max() - chips["row"].min() + 1),
            nx=int(chips["col"].max() - chips["col"].min() + 1),
            days=udays, times=np.array(times, dtype="datetime64[ns]"), item_ids=ids,
            item_day={i: item_day[i] for i in used},
            time_day=time_day,
            tile_size=tile_size, chips=chips))
    if table_parts:
        t = np.concatenate(table_parts)
        t = t[np.lexsort((t["col"], t["row"], t["item_id"].astype(str)))]
        specs.append(TableSpec(name=TABLE_GROUP, chips=t, tile_size=table_tile))
    return specs


def plan_fingerprint(specs: list[Spec]) -> str:
    """sha256 over every planned chip: a rerun must plan exactly the same chips to resume."""
    h = hashlib.sha256()
    for s in specs:
        h.update(json.dumps([s.name, s.layout, s.tile_size]).encode())
        c = s.chips
        for n in c.dtype.names:
            col = c[n]
            h.update("|".join(map(str, col.tolist())).encode() if col.dtype == object else
                     np.ascontiguousarray(col).tobytes())
    return h.hexdigest()
