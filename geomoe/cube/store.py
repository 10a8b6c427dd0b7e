"""The embedding cube: a Zarr v3 store, one group per CRS, written tile by tile.

Layout (``xr.open_zarr(path, group=...)``; consolidated metadata is written when a run finishes):

- grid groups (``utm30n``, ``epsg3031``, ...): ``embedding(time, y, x, dim)``,
  ``valid_fraction(time, y, x)``, 1-D ``x``/``y`` chip centres (y descending, north-up),
  ``time`` one slice per solar day, 2-D ``lat``/``lon``, ``spatial_ref`` (rioxarray CRS; named
  in the data variables' ``coordinates``, so xarray's default decoding makes it a coordinate).
- the table group ``chips`` (item-grid collections): ``embedding(chip, dim)``,
  ``valid_fraction(chip)``, per-chip ``x, y, lat, lon, time, item_id, epsg, row, col``,
  ``labels`` / ``labels_19`` (``;``-joined) where items carry them.
- every group carries the provenance attributes (model, checkpoint file name and sha256,
  pooling, normalisation, query, ...; dicts JSON-encoded so they survive ``to_netcdf``).
- bookkeeping, out of the analyst's datasets: ``_geomoe/<group>/tile_done`` and the root's
  ``stac_items`` array and attributes. For a grid group ``tile_done`` is (time, tile_y, tile_x):
  one record per (tile, solar day), so resuming a killed run and appending new solar days are
  the same thing (pending work = the plan's (tile, day) pairs not yet recorded). The chip table
  keeps one record per tile.

Value semantics: a chip never computed has NaN embedding AND NaN valid_fraction; a chip
skipped for cloud/fill has NaN embedding and a finite valid_fraction (< min_valid). ``lat`` /
``lon`` are written with a tile's first write (NaN where no tile was written); ``x``, ``y`` and
``spatial_ref`` give every position exactly.

Skeleton: the arrays are created as metadata only (no chunk is written, no per-chunk task
graph), so creating or extending a cube costs the same whatever the bbox and number of days.

Appending: a rerun whose plan has new solar days resizes the group along ``time`` and puts
them at the end (storage order is the order they were added; :func:`geomoe.open_cube` sorts by
time); a plan with a new CRS adds a group. Chunks are one tile x one solar day, so nothing
already written is rewritten. The grid extent of a group is fixed when it is created.

Crash safety: a tile's pending days are one chunk-aligned write; its chunk files are fsynced,
and only then are their ``tile_done`` records set (to the run number) - each record chunk one
atomic file (zarr's LocalStore writes to a temp file and renames). A tile that was killed
half-way is simply rewritten on the next run. geomoe itself reads and writes with
``consolidated=False``; consolidated metadata (root ``zarr.json``) is for readers only: a run
removes it when it starts (:meth:`Cube.new_run`, and before extending a skeleton) and writes it
when it finishes (:meth:`Cube.finish`), so a store carries it only when its last run finished.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from pyproj import Transformer

from geomoe.atomic import read_json_object
from geomoe.errors import CubeError
from geomoe.testing import fault
from geomoe.chips.grid import CHIP_METERS
from geomoe.cube.layout import CubeTile, GridSpec, Spec, TableSpec, plan_fingerprint

# 2: every setting that changes which chips are embedded or their vectors in the identity;
#    tile_done in _geomoe/, provenance on every group, consolidated metadata
# 3: appendable: tile_done per (solar day, tile), group extents in geomoe:layout instead of a
#    fingerprint of every chip, metadata-only skeleton, lat/lon written per tile
FORMAT_VERSION = 3
BOOKKEEPING = "_geomoe"  # group of the tile completion records (not analyst data)
IDENTITY_KEYS = ("checkpoint_sha256", "model_size", "embed_dim", "pooling", "dtype", "min_valid",
                 "mask_bits", "grid", "tile_size", "table_tile", "normalisation")
#: the grid-group fields that fix where a chip lands (a rerun may not change them)
EXTENT_KEYS = ("epsg", "row_max", "col_min", "ny", "nx", "tile_size")
#: solar days per chunk of a grid group's completion records (one file per tile and 32 days)
DONE_TIME_CHUNK = 32
#: what a geomoe skeleton holds at its root (besides one directory per group)
_SKELETON_ROOT = ("zarr.json", "stac_items")


class CubeWriteError(CubeError):
    """The output location cannot be created or written."""


class CubeMismatchError(CubeError):
    """The store was written by another model/checkpoint or for another request."""


class ForeignStoreError(CubeWriteError):
    """The output location holds data geomoe did not write; it is refused and left untouched."""


class CubeDiskFullError(CubeWriteError):
    """The disk filled up during a run; the finished tiles are kept and a rerun resumes."""


class MisalignedRegionError(CubeError):
    """A region write does not cover whole Zarr chunks (parallel writers would lose data)."""


def _probe_write(directory: Path) -> None:
    """Create and remove an empty file in ``directory`` (raises OSError where that fails)."""
    probe = directory / f".geomoe-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def ensure_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_write(path)
    except OSError as exc:
        raise CubeWriteError(
            f"cannot write the cube to {path}: {exc.strerror or exc}; "
            "choose a writable --out location"
        ) from None


def check_writable(path: Path) -> None:
    """Like :func:`ensure_writable`, but creates nothing: checks ``path`` if it exists, else the
    nearest existing parent (a failed start must not leave an empty --out behind)."""
    path = Path(path).absolute()
    if path.is_dir() and any(path.iterdir()):
        return  # not probed: a foreign store is refused untouched, a cube is probed when taken
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        if not target.is_dir():
            raise NotADirectoryError(20, f"{target} is not a directory")
        _probe_write(target)
    except OSError as exc:
        raise CubeWriteError(
            f"cannot write the cube to {path}: {exc.strerror or exc}"
            f"{'' if target == path else f' (in {target})'}; choose a writable --out location"
        ) from None


def _fsync(paths: list[str]) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue  # all-NaN chunks are not stored (write_empty_chunks=False)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in {os.path.dirname(p) for p in paths}:
        if os.path.isdir(d):
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def check_aligned(region: dict[str, slice], chunks: dict[str, int], sizes: dict[str, int]) -> None:
    """Refuse a region that starts or ends inside a chunk (except at the array's end)."""
    for dim, sl in region.items():
        c, n = chunks[dim], sizes[dim]
        start, stop = sl.start or 0, n if sl.stop is None else sl.stop
        if start % c or (stop % c and stop != n) or not 0 <= start < stop <= n:
            raise MisalignedRegionError(
                f"region {dim}={start}:{stop} is not aligned to the Zarr chunk size {c} "
                f"(dimension length {n}); writes must cover whole chunks"
            )


def _latlon(epsg: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    lon, lat = tr.transform(x, y)
    return np.asarray(lat, np.float64), np.asarray(lon, np.float64)


def _lazy_nan(shape: tuple[int, ...], dtype: str) -> da.Array:
    """A NaN array as ONE dask chunk: ``to_zarr(compute=False)`` then writes metadata only and
    builds a one-task graph, however many Zarr chunks the array has."""
    return da.full(shape, np.nan, dtype=dtype, chunks=shape)


def _grid_dataset(spec: GridSpec, dim: int, dtype: str) -> tuple[xr.Dataset, dict]:
    """The skeleton of a grid group: 1-D coordinates written, everything else metadata only."""
    ts = spec.tile_size
    T = len(spec.days)
    ds = xr.Dataset(
        {
            "embedding": (("time", "y", "x", "dim"), _lazy_nan((T, spec.ny, spec.nx, dim), dtype)),
            "valid_fraction": (("time", "y", "x"), _lazy_nan((T, spec.ny, spec.nx), "float32")),
        },
        coords={
            "time": np.asarray(spec.times).astype("datetime64[ns]"),
            "y": spec.y, "x": spec.x, "dim": np.arange(dim),
            # 2-D and large for a continent: filled tile by tile (Cube.write_grid_tile)
            "lat": (("y", "x"), _lazy_nan((spec.ny, spec.nx), "float64")),
            "lon": (("y", "x"), _lazy_nan((spec.ny, spec.nx), "float64")),
        },
    )
    ds = ds.rio.write_crs(spec.epsg)
    ds.x.attrs.update(standard_name="projection_x_coordinate", units="m", long_name="chip centre x")
    ds.y.attrs.update(standard_name="projection_y_coordinate", units="m", long_name="chip centre y")
    ds.lat.attrs.update(standard_name="latitude", units="degrees_north",
                        description="written with the tile's first write; NaN where no tile was")
    ds.lon.attrs.update(standard_name="longitude", units="degrees_east",
                        description="written with the tile's first write; NaN where no tile was")
    ds.valid_fraction.attrs["description"] = (
        "fraction of valid (unmasked, non-fill) pixels; NaN = chip never computed")
    ds.attrs.update(
        layout="grid", epsg=spec.epsg, tile_size=ts, chip_meters=CHIP_METERS,
        row_max=spec.row_max, col_min=spec.col_min,
        # storage order of the time slices (appended days go last); a list attribute breaks
        # to_netcdf, hence JSON
        stac_item_ids=json.dumps([list(map(str, ids)) for ids in spec.item_ids]),
        solar_days=json.dumps([str(d) for d in spec.days]),
    )
    # naming spatial_ref in "coordinates" makes xarray's default decode_coords=True keep it a
    # coordinate, so a plain xr.open_zarr gives ds.rio.crs (grid_mapping alone needs "all")
    for v in ("embedding", "valid_fraction"):
        ds[v].attrs["coordinates"] = "lat lon spatial_ref"
    enc = {
        # an explicit encoding replaces rioxarray's grid_mapping entry: merge it back in
        "embedding": {"chunks": (1, ts, ts, dim), "dtype": dtype, "_FillValue": np.nan,
                      "grid_mapping": "spatial_ref"},
        "valid_fraction": {"chunks": (1, ts, ts), "_FillValue": np.nan, "grid_mapping": "spatial_ref"},
        "lat": {"chunks": (ts, ts), "_FillValue": np.nan},
        "lon": {"chunks": (ts, ts), "_FillValue": np.nan},
        # one chunk per slice: appending a day adds a file, rewrites none
        "time": {"units": "seconds since 1970-01-01", "dtype": "int64", "chunks": (1,)},
    }
    return ds, enc


def group_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Provenance attributes for a data group: strings and numbers as they are, everything
    else (dicts, lists, booleans, None) JSON-encoded, because netCDF attributes cannot hold
    them and an analyst's ``ds.to_netcdf()`` must work."""
    return {k: v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else json.dumps(v)
            for k, v in attrs.items()}


def tile_done_path(group: str) -> str:
    """Where a group's completion records live: a bookkeeping group the analyst never opens."""
    return f"{BOOKKEEPING}/{group}/tile_done"


def _create_tile_done(path: Path, spec: Spec) -> None:
    """Completion records, uint16, 0 = pending, else the run number that completed it.

    Grid groups: (time, tile_y, tile_x), one chunk per tile and :data:`DONE_TIME_CHUNK` days,
    resizable along time (appended days). Table group: one element per tile. Each tile's
    records are their own chunk files, so tiles are committed independently and atomically."""
    grid = isinstance(spec, GridSpec)
    if grid:
        nty, ntx = -(-spec.ny // spec.tile_size), -(-spec.nx // spec.tile_size)
        shape, chunks = (len(spec.days), nty, ntx), (DONE_TIME_CHUNK, 1, 1)
        dims = ["time", "tile_y", "tile_x"]
    else:
        shape = (len(spec.tiles()),)
        chunks, dims = (1,), ["tile"]
    g = zarr.open_group(str(path), mode="r+").require_group(BOOKKEEPING).require_group(spec.name)
    arr = g.create_array("tile_done", shape=shape, chunks=chunks, dtype="uint16", fill_value=0,
                         dimension_names=dims, overwrite=True)
    arr.attrs["description"] = ("run number that completed the (solar day, tile) (0 = pending)" if grid
                                else "run number that completed the tile (0 = pending)")
    if grid:  # exact chip counts as tiles are read (planning only estimates them): progress
        counts = g.create_array("tile_chips", shape=(nty, ntx), chunks=(1, 1), dtype="int64",
                                fill_value=-1, dimension_names=["tile_y", "tile_x"], overwrite=True)
        counts.attrs["description"] = "chips of the tile over the planned solar days (-1 = not yet counted)"


def spec_layout(spec: Spec) -> dict[str, Any]:
    """What fixes where a group's chips land: a rerun must plan the same, or be refused."""
    if isinstance(spec, GridSpec):
        return {"layout": "grid", **{k: int(getattr(spec, k)) for k in EXTENT_KEYS}}
    return {"layout": "table", "tile_size": int(spec.tile_size), "n": int(spec.n),
            "fingerprint": plan_fingerprint([spec])}


def spec_days(spec: Spec) -> dict[str, list[str]]:
    """Solar day -> the sorted STAC item ids mosaicked into it (grid groups; {} for the table)."""
    if not isinstance(spec, GridSpec):
        return {}
    return {str(d): sorted(map(str, ids)) for d, ids in zip(spec.days, spec.item_ids)}


def _group_days(path: Path, group: str) -> list[tuple[str, list[str]]] | None:
    """A stored grid group's (solar day, item ids) in storage order, or None if unreadable."""
    doc = read_json_object(path / group / "zarr.json")
    if doc is None:
        return None
    a = doc.get("attributes", {})
    try:
        days = json.loads(a["solar_days"])
        ids = json.loads(a["stac_item_ids"])
    except (KeyError, TypeError, ValueError):
        return None
    return [(str(d), sorted(map(str, i))) for d, i in zip(days, ids)]


def _table_xy(spec: TableSpec, items: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    """Planned chip centres from the item's own grid (centred 40 px chips); the real
    centres reported by the chip reader overwrite these when the chip is embedded."""
    c = spec.chips
    x = np.full(spec.n, np.nan)
    y = np.full(spec.n, np.nan)
    for k in range(spec.n):
        props = items.get(str(c["item_id"][k]), {}).get("properties", {})
        tr, shape = props.get("proj:transform"), props.get("proj:shape")
        if not tr or not shape:
            continue
        h, w = shape
        off_r, off_c = (h - (h // 40) * 40) // 2, (w - (w // 40) * 40) // 2
        pr, pc = off_r + c["row"][k] * 40 + 20, off_c + c["col"][k] * 40 + 20
        x[k] = tr[2] + pc * tr[0] + pr * tr[1]
        y[k] = tr[5] + pc * tr[3] + pr * tr[4]
    return x, y


def _table_dataset(spec: TableSpec, dim: int, dtype: str, items: dict[str, dict]) -> tuple[xr.Dataset, dict]:
    ts = spec.tile_size
    c = spec.chips
    x, y = _table_xy(spec, items)
    lat = np.full(spec.n, np.nan)
    lon = np.full(spec.n, np.nan)
    for epsg in np.unique(c["epsg"]):
        sel = (c["epsg"] == epsg) & np.isfinite(x)
        lat[sel], lon[sel] = _latlon(int(epsg), x[sel], y[sel])
    ids = [str(v) for v in c["item_id"]]

    def labels(key: str) -> np.ndarray | None:
        vals = [items.get(i, {}).get("properties", {}).get(key) for i in ids]
        if all(v is None for v in vals):
            return None
        return np.array([";".join(v) if v else "" for v in vals], dtype=object)

    coords: dict[str, Any] = {
        "x": ("chip", x), "y": ("chip", y), "lat": ("chip", lat), "lon": ("chip", lon),
        "time": ("chip", c["time"].astype("datetime64[ns]")),
        "item_id": ("chip", np.array(ids, dtype=object)),
        "epsg": ("chip", c["epsg"].astype("int32")),
        "row": ("chip", c["row"].astype("int64")), "col": ("chip", c["col"].astype("int64")),
        "dim": np.arange(dim),
    }
    for name, key in (("labels", "bigearthnet:labels"), ("labels_19", "bigearthnet:labels_19")):
        v = labels(key)
        if v is not None:
            coords[name] = ("chip", v)
    ds = xr.Dataset(
        {
            "embedding": (("chip", "dim"), _lazy_nan((spec.n, dim), dtype)),
            "valid_fraction": (("chip",), _lazy_nan((spec.n,), "float32")),
        },
        coords=coords,
    )
    ds.attrs.update(layout="table", tile_size=ts, chip_meters=CHIP_METERS,
                    description="item-grid chips (pre-chipped patches); x/y in each chip's own EPSG")
    enc = {
        "embedding": {"chunks": (ts, dim), "dtype": dtype, "_FillValue": np.nan},
        "valid_fraction": {"chunks": (ts,), "_FillValue": np.nan},
        "x": {"chunks": (ts,)}, "y": {"chunks": (ts,)}, "lat": {"chunks": (ts,)}, "lon": {"chunks": (ts,)},
        "time": {"units": "seconds since 1970-01-01", "dtype": "int64"},
    }
    return ds, enc


def _stored_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of :meth:`Cube.identity_meta` kept as ``geomoe:identity`` (the layout goes to
    ``geomoe:layout``, the days to each group's ``solar_days`` / ``stac_item_ids``)."""
    return {k: v for k, v in meta.items() if k not in ("layout", "days")}


def _found_plan(path: Path, attrs: dict[str, Any]) -> tuple[dict, dict]:
    """The stored (layout per group, {group: {day: item ids}}) of a cube's root attributes."""
    layout = attrs.get("geomoe:layout") or {}
    days = {}
    for g, rec in layout.items():
        if rec.get("layout") == "grid":
            days[g] = dict(_group_days(path, g) or [])
    return layout, days


def _plan_conflict(path: Path, found_layout: dict, found_days: dict, want_layout: dict,
                   want_days: dict) -> str | None:
    """Why a plan cannot go into a cube that holds ``found_*`` (None: it can, possibly by
    appending solar days and groups). Existing chips may neither move nor change."""
    for g, want in want_layout.items():
        have = found_layout.get(g)
        if have is None or have == want:
            continue
        if want.get("layout") == "grid" and have.get("layout") == "grid":
            what = ", ".join(f"{k}={have.get(k)} (you asked {want.get(k)})" for k in EXTENT_KEYS
                             if have.get(k) != want.get(k))
            return (f"{path} holds a different request for group {g}: its chip grid would move "
                    f"({what}); the AOI, or the footprints of the scenes that reach it, changed the "
                    "group's extent, which is fixed when the group is created")
        return (f"{path} holds a different request for group {g}: the chip table (item-grid "
                "patches) was planned from other scenes or another AOI, and new scenes are not "
                "appended to the chip table")
    for g, days in want_days.items():
        for day, ids in days.items():
            had = found_days.get(g, {}).get(day)
            if had is not None and sorted(had) != sorted(ids):
                return (f"{path} holds a different request for group {g}: solar day {day} was "
                        f"embedded from scene(s) {', '.join(had)} and is now planned from "
                        f"{', '.join(ids)}; a cube appends only new solar days")
    return None


def _aoi_geometry(attrs: dict[str, Any]) -> Any:
    aoi = (attrs.get("geomoe:query") or {}).get("aoi")
    geom = aoi.get("geometry") if isinstance(aoi, dict) else None
    return None if geom is None else json.loads(json.dumps(geom))  # tuples -> lists, as stored


def _check_same_aoi(path: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    """A cube covers one AOI: chips a new AOI adds inside tiles already done would never be
    embedded, so another AOI is refused even where it leaves the grid extent as it is."""
    a, b = _aoi_geometry(found), _aoi_geometry(wanted)
    if a is not None and b is not None and a != b:
        raise CubeMismatchError(
            f"{path} holds a different request: its AOI is another geometry (the cube covers "
            "the AOI it was made for; appending adds solar days and zones of that AOI only); its "
            "data is left untouched: use another --out for this AOI")


def _is_geomoe_group(path: Path) -> bool:
    """A group directory a geomoe skeleton step made (e.g. one an interrupted append left)."""
    doc = read_json_object(path / "zarr.json")
    return (doc is not None and doc.get("node_type") == "group"
            and isinstance(doc.get("attributes"), dict)
            and doc["attributes"].get("layout") in ("grid", "table", None)
            and all(p.is_dir() or p.name == "zarr.json" for p in path.iterdir()))


@dataclass
class Cube:
    """Handle on a cube store plus its layout; creation and tile writes go through here.

    ``days`` maps each grid group to its stored solar days (``YYYY-MM-DD``) in storage order:
    index ``t`` along ``time`` is ``days[group][t]``."""

    path: Path
    specs: dict[str, Spec]
    attrs: dict[str, Any]
    days: dict[str, list[str]] = field(default_factory=dict)

    # ---------- creation / opening ----------
    @classmethod
    def create_or_open(cls, path: str | os.PathLike, specs: list[Spec], *, dim: int,
                       dtype: str = "float32", identity: dict[str, Any],
                       attrs: dict[str, Any], items: list[dict]) -> "Cube":
        """Create the skeleton (metadata + 1-D coordinates, no chunk data), or verify an
        existing store and extend it with the plan's new solar days and groups.

        Raises CubeMismatchError / ForeignStoreError rather than touch a store geomoe did not
        make, or one whose existing chips this plan would move or change. The cost does not
        depend on the number of chunks. The caller must hold ``store_lock(path)``."""
        path = Path(path)
        if dtype not in ("float32", "float16"):
            raise CubeError(f"dtype must be float32 or float16, not {dtype!r}")
        ensure_writable(path)
        meta = cls.identity_meta(specs, dtype, identity)
        state = cls.check_target(path, meta)
        if state == "resume":
            existing = zarr.open_group(str(path), mode="r", use_consolidated=False).attrs.asdict()
            _check_same_aoi(path, existing, attrs)
            cube = cls(path, {s.name: s for s in specs}, existing)
            cube._clean_partials()
            cube._extend(specs, dim, dtype, attrs, items)
            cube.load_tile_chips()
            return cube
        if state == "rebuild":
            # an unfinished skeleton of this same request (a run killed while creating it):
            # it holds no tile, and check_target made sure it holds nothing but geomoe's nodes
            for child in path.iterdir():  # keep the directory itself: the run lock is on its inode
                if not child.name.startswith(".geomoe-write-test"):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        root = zarr.open_group(str(path), mode="w-", zarr_format=3)
        root.attrs.update({"geomoe:identity": _stored_identity(meta), "geomoe:skeleton_complete": False})
        item_map = {it["id"]: it for it in items}
        cube = cls(path, {s.name: s for s in specs}, {})
        for spec in specs:
            cube._create_group(spec, dim, dtype, attrs, item_map)
        _write_items(path, items)
        full = {
            **attrs,
            "geomoe:identity": _stored_identity(meta),
            "geomoe:groups": [s.name for s in specs],
            "geomoe:layout": meta["layout"],
            "geomoe:n_items": len(items),
            "geomoe:runs": 0,
            "geomoe:skeleton_complete": True,
        }
        zarr.open_group(str(path), mode="r+").attrs.update(full)  # last: marks the skeleton complete
        cube.attrs = full
        cube.days = {s.name: [str(d) for d in s.days] for s in specs if isinstance(s, GridSpec)}
        return cube

    def _create_group(self, spec: Spec, dim: int, dtype: str, attrs: dict[str, Any],
                      item_map: dict[str, dict]) -> None:
        """One group's skeleton: metadata only, plus its 1-D coordinates (mode "w": a group an
        interrupted append left half made is made again)."""
        ds, enc = (_grid_dataset(spec, dim, dtype) if isinstance(spec, GridSpec)
                   else _table_dataset(spec, dim, dtype, item_map))
        ds.attrs.update(group_attrs(attrs))  # provenance where the analyst opens it
        from geomoe.cube.conventions import group_conventions  # geoemb:, proj:, spatial:

        ds.attrs.update(group_conventions(spec, dim=dim, dtype=dtype, attrs=attrs, store_name=self.path.name))
        ds.to_zarr(str(self.path), group=spec.name, mode="w", compute=False,
                   consolidated=False, encoding=enc, zarr_format=3)
        _create_tile_done(self.path, spec)

    def _extend(self, specs: list[Spec], dim: int, dtype: str, attrs: dict[str, Any],
                items: list[dict]) -> None:
        """Add the plan's new groups, new solar days (resized along time, at the end) and new
        source items; existing chunks are not touched. Every step can be redone: the group's
        ``solar_days`` attribute (written last) is what says which slices exist."""
        root_attrs = zarr.open_group(str(self.path), mode="r", use_consolidated=False).attrs.asdict()
        groups = list(root_attrs.get("geomoe:groups", []))
        layout = dict(root_attrs.get("geomoe:layout") or {})
        new_groups = [s for s in specs if s.name not in groups]
        grow: dict[str, tuple[list, list[int]]] = {}
        for s in specs:
            if s.name in groups and isinstance(s, GridSpec):
                stored = _group_days(self.path, s.name) or []
                have = {d for d, _ in stored}
                add = [k for k, d in enumerate(s.days) if str(d) not in have]
                n = zarr.open_array(str(self.path), path=f"{s.name}/time", mode="r").shape[0]
                if add or n != len(stored):
                    grow[s.name] = (stored, add)
        known = {it.get("id") for it in read_items(self.path)}
        new_items = [it for it in items if it["id"] not in known]
        if new_groups or grow or new_items:
            # drop the consolidated metadata first: readers see the live store while it changes
            root = zarr.open_group(str(self.path), mode="r+", use_consolidated=False)
            root.attrs.update({"geomoe:groups": groups})
            item_map = {it["id"]: it for it in items}
            for s in new_groups:
                self._create_group(s, dim, dtype, attrs, item_map)
            for name, (stored, add) in grow.items():
                self._append_days(self.specs[name], stored, add)
            if new_items:
                _write_items(self.path, [*read_items(self.path), *new_items])
            log = [*root_attrs.get("geomoe:appends", []), {
                "before_run": int(root_attrs.get("geomoe:runs", 0)) + 1,
                "groups_added": [s.name for s in new_groups],
                "days_added": {n: [str(self.specs[n].days[k]) for k in add] for n, (_, add) in grow.items() if add},
                "items_added": len(new_items), "query": attrs.get("geomoe:query")}]
            extra = {"geomoe:groups": groups + [s.name for s in new_groups],
                     "geomoe:layout": {**layout, **{s.name: spec_layout(s) for s in new_groups}},
                     "geomoe:n_items": len(known) + len(new_items), "geomoe:appends": log}
            root.attrs.update(extra)
            self.attrs.update(extra)
        self.days = {s.name: [d for d, _ in _group_days(self.path, s.name) or []]
                     for s in specs if isinstance(s, GridSpec)}

    def _append_days(self, spec: GridSpec, stored: list[tuple[str, list[str]]], add: list[int]) -> None:
        """Resize a grid group along time to its stored days + ``add`` (plan indices), write
        their times, then record them in the group's attributes (the commit of the append)."""
        T = len(stored) + len(add)
        g = spec.name
        for var in ("embedding", "valid_fraction", "time"):
            arr = zarr.open_array(str(self.path), path=f"{g}/{var}", mode="r+")
            arr.resize((T, *arr.shape[1:]))
        done = zarr.open_array(str(self.path), path=tile_done_path(g), mode="r+")
        done.resize((T, *done.shape[1:]))
        if add:
            secs = np.asarray(spec.times)[add].astype("datetime64[s]").astype("int64")
            zarr.open_array(str(self.path), path=f"{g}/time", mode="r+")[len(stored):] = secs
        days = [d for d, _ in stored] + [str(spec.days[k]) for k in add]
        ids = [i for _, i in stored] + [sorted(map(str, spec.item_ids[k])) for k in add]
        grp = zarr.open_group(str(self.path), path=g, mode="r+", use_consolidated=False)
        grp.attrs.update({"solar_days": json.dumps(days), "stac_item_ids": json.dumps(ids)})

    @staticmethod
    def identity_meta(specs: list[Spec], dtype: str, identity: dict[str, Any]) -> dict[str, Any]:
        """What a store for this request must carry (to create, resume or append): the
        identity, plus each group's ``layout`` (extent) and solar ``days`` with their items."""
        return {"format_version": FORMAT_VERSION, **identity, "dtype": dtype,
                "layout": {s.name: spec_layout(s) for s in specs},
                "days": {s.name: spec_days(s) for s in specs if isinstance(s, GridSpec)}}

    @classmethod
    def check_target(cls, path: str | os.PathLike, meta: dict[str, Any]) -> str:
        """What a run may do at ``path``, decided read-only: ``"new"`` (absent or empty),
        ``"resume"`` (a complete cube of this identity whose chips the plan neither moves nor
        changes: it resumes and appends) or ``"rebuild"`` (an unfinished skeleton of this
        identity, holding no tile). Anything else is refused untouched."""
        path = Path(path)
        if not path.exists():
            return "new"
        if not path.is_dir():
            raise CubeWriteError(f"cannot write the cube to {path}: it is a file, not a directory; "
                                 "choose a new or empty --out")
        entries = sorted(p.name for p in path.iterdir() if not p.name.startswith(".geomoe-write-test"))
        if not entries:
            return "new"
        attrs = _root_attrs(path)
        found = attrs.get("geomoe:identity") if attrs is not None else None
        if not isinstance(found, dict):
            what = ("a Zarr store geomoe did not write (no geomoe:identity)" if attrs is not None
                    else "no zarr.json" if "zarr.json" not in entries else "an unreadable zarr.json")
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ForeignStoreError(
                f"{path} exists and is not a geomoe cube ({what}; it holds {shown}); refusing to "
                "write into it, it is left untouched: choose a new or empty --out")
        complete = bool(attrs.get("geomoe:skeleton_complete"))
        layout, days = _found_plan(path, attrs)
        cls._verify(path, {**found, "layout": layout, "days": days}, meta, complete=complete)
        if complete:
            groups = set(attrs.get("geomoe:groups", []))
            for g in meta.get("layout", {}):
                for d in (path / g, path / BOOKKEEPING / g):
                    if g not in groups and d.exists() and not _is_geomoe_group(d):
                        raise ForeignStoreError(
                            f"{path} is a geomoe cube, but {d.relative_to(path)}, where this run "
                            "would add the group it plans, holds data geomoe did not write; it is "
                            "left untouched: move it away, or choose a new --out")
            return "resume"
        extra = [e for e in entries if e not in _SKELETON_ROOT and not e.endswith(".partial")
                 and not (path / e / "zarr.json").is_file()]
        if extra:
            raise ForeignStoreError(
                f"{path} holds an unfinished geomoe cube and other files ({', '.join(extra[:5])}); "
                "refusing to write into it, it is left untouched: choose a new or empty --out")
        return "rebuild"

    @staticmethod
    def _verify(path: Path, found: dict, wanted: dict, complete: bool = True) -> None:
        keep = ("its data is left untouched" if complete else
                "it is an unfinished skeleton (no embeddings) that an interrupted run left; "
                "it is left untouched")
        if found.get("format_version", 1) != wanted.get("format_version"):
            raise CubeMismatchError(
                f"{path} was made by another geomoe version (cube format "
                f"{found.get('format_version', 1)}, this geomoe writes {wanted.get('format_version')}) "
                "whose identity does not record every setting that shapes the vectors "
                f"({', '.join(IDENTITY_KEYS)}), or whose layout cannot be appended to, so it cannot "
                f"be resumed safely; {keep}: finish it with the geomoe version that made it, or use "
                "another --out")
        diff = [k for k in IDENTITY_KEYS if found.get(k) != wanted.get(k)]
        if diff:
            what = ", ".join(f"{k}={found.get(k)!r} (you asked {wanted.get(k)!r})" for k in diff)
            raise CubeMismatchError(
                f"cube {path} was made with a different model or settings: {what}; {keep}: rerun "
                f"with the same {'/'.join(diff)}, or use another --out for the new settings")
        why = _plan_conflict(path, found.get("layout", {}), found.get("days", {}),
                             wanted.get("layout", {}), wanted.get("days", {}))
        if why:
            raise CubeMismatchError(f"{why}; {keep}: use another --out to embed this request")

    @classmethod
    def open(cls, path: str | os.PathLike, specs: list[Spec]) -> "Cube":
        """Open an existing, complete store for tile writes (workers; no lock). The plan must
        fit the store as it is: same extents, and its solar days already added."""
        path = Path(path)
        attrs = zarr.open_group(str(path), mode="r", use_consolidated=False).attrs.asdict()
        if not attrs.get("geomoe:skeleton_complete"):
            raise CubeError(f"{path} is not a complete geomoe cube")
        layout, days = _found_plan(path, attrs)
        want_layout = {s.name: spec_layout(s) for s in specs}
        want_days = {s.name: spec_days(s) for s in specs if isinstance(s, GridSpec)}
        why = _plan_conflict(path, layout, days, want_layout, want_days)
        missing = [f"{g}/{d}" for g, dd in want_days.items() for d in dd if d not in days.get(g, {})]
        missing += [g for g in want_layout if g not in layout]
        if why or missing:
            raise CubeMismatchError(why or f"{path} was planned for a different request (it lacks "
                                           f"{', '.join(missing[:5])}): run embed-region on it first")
        cube = cls(path, {s.name: s for s in specs}, attrs)
        cube.days = {s.name: [d for d, _ in _group_days(path, s.name) or []]
                     for s in specs if isinstance(s, GridSpec)}
        return cube

    def record_tile_chips(self, tile: CubeTile, n: int) -> None:
        """A grid tile's exact chip count over the plan's days (kept for later runs' totals)."""
        arr = zarr.open_array(str(self.path), path=f"{BOOKKEEPING}/{tile.group}/tile_chips", mode="r+")
        arr[tuple(tile.key)] = int(n)

    def load_tile_chips(self) -> None:
        """Make the specs' counts exact for the finished tiles an earlier run counted (the run's
        own process; workers do not need them)."""
        for spec in self.specs.values():
            if not isinstance(spec, GridSpec):
                continue
            try:
                counts = zarr.open_array(str(self.path), path=f"{BOOKKEEPING}/{spec.name}/tile_chips",
                                         mode="r")[...]
            except (FileNotFoundError, KeyError, ValueError):
                continue
            done = self.done_map(spec.name)
            for ty, tx in np.argwhere(counts >= 0):
                tile = CubeTile(spec.name, (int(ty), int(tx)))
                if tuple(tile.key) in spec.tile_items and not self.pending_times(tile, done):
                    spec.record_exact(tile, int(counts[ty, tx]))

    def _clean_partials(self) -> None:
        """Remove temp files a killed zarr write left behind (never visible to readers)."""
        for p in glob.glob(str(self.path / "**" / "*.partial"), recursive=True):
            os.unlink(p)

    def new_run(self, info: dict[str, Any] | None = None) -> int:
        """Register a new run; its number is stored in ``tile_done`` of every tile it writes.

        ``info`` (e.g. device, precision: settings outside the identity) is appended to the
        ``geomoe:run_log`` attribute, so the cube says how each run's tiles were computed.
        Also drops the consolidated metadata of the previous run (the root's ``zarr.json`` is
        rewritten from the non-consolidated view), before any tile of this run is written: a
        store carries consolidated metadata only while its last run has finished
        (:meth:`finish`), so a killed run leaves none that could describe it as complete."""
        root = zarr.open_group(str(self.path), mode="r+", use_consolidated=False)
        n = int(root.attrs.get("geomoe:runs", 0)) + 1
        extra: dict[str, Any] = {"geomoe:runs": n}
        if info is not None:
            extra["geomoe:run_log"] = [*root.attrs.get("geomoe:run_log", []), {"run": n, **info}]
        root.attrs.update(extra)  # one zarr.json write
        self.attrs.update(extra)
        return n

    def items(self) -> list[dict]:
        """The source STAC items the cube was planned from (dicts)."""
        return read_items(self.path)

    def finish(self) -> None:
        """Record that the current run finished every pending (tile, day) and write
        consolidated metadata (the root ``zarr.json``), last step of a finished run:
        ``xr.open_zarr(path, group=g)`` then opens without a warning and with one read."""
        import warnings

        root = zarr.open_group(str(self.path), mode="r+", use_consolidated=False)
        root.attrs.update({"geomoe:finished_run": int(root.attrs.get("geomoe:runs", 0))})
        with warnings.catch_warnings():  # "not part of the Zarr format 3 specification" (yet)
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(str(self.path))

    def update_attrs(self, extra: dict[str, Any]) -> None:
        root = zarr.open_group(str(self.path), mode="r+")
        root.attrs.update(extra)
        self.attrs.update(extra)

    # ---------- tiles and their (tile, solar day) work ----------
    def tiles(self) -> list[CubeTile]:
        return [t for s in self.specs.values() for t in s.tiles()]

    def done_map(self, group: str) -> np.ndarray:
        """Completion records: (time, tile_y, tile_x) for a grid group, (tile,) for the table."""
        return zarr.open_array(str(self.path), path=tile_done_path(group), mode="r")[...]

    def plan_times(self, group: str) -> np.ndarray:
        """Storage time indices of the plan's solar days of a grid group (plan order)."""
        index = {d: t for t, d in enumerate(self.days[group])}
        return np.array([index[str(d)] for d in self.specs[group].days], dtype=np.int64)

    def pending_times(self, tile: CubeTile, done: np.ndarray | None = None) -> list[int]:
        """Storage time indices of the plan's solar days that ``tile`` (grid) still lacks.

        ``done``: the group's :meth:`done_map`, if already read (else the tile's records are)."""
        ty, tx = tile.key
        if done is None:
            col = zarr.open_array(str(self.path), path=tile_done_path(tile.group), mode="r")[:, ty, tx]
        else:
            col = done[:, ty, tx]
        return sorted(int(t) for t in self.plan_times(tile.group) if not col[t])

    def pending_items(self, tile: CubeTile, times: list[int]) -> set[str]:
        """The ids of the items to read for ``tile``'s pending ``times`` (its items of those days)."""
        spec = self.specs[tile.group]
        days = {self.days[tile.group][t] for t in times}
        return {i for i in spec.tile_item_ids(tile) if str(spec.item_day[i]) in days}

    def pending_chips_by_tile(self, tiles: list[CubeTile]) -> dict[CubeTile, float]:
        """Each tile's planned chips still to embed, for progress: a grid tile's count times
        the share of its solar days (those its items are on) not yet done; each group's records
        are read once."""
        maps: dict[str, np.ndarray] = {}
        out: dict[CubeTile, float] = {}
        for tile in tiles:
            spec = self.specs[tile.group]
            if tile.group not in maps:
                maps[tile.group] = self.done_map(tile.group)
            done = maps[tile.group]
            if not isinstance(spec, GridSpec):
                out[tile] = 0.0 if done[tile.key] else float(spec.n_planned(tile))
                continue
            days = {str(spec.item_day[i]) for i in spec.tile_item_ids(tile)}
            out[tile] = 0.0
            if days:
                pend = {self.days[tile.group][t] for t in self.pending_times(tile, done)}
                out[tile] = spec.n_planned(tile) * len(days & pend) / len(days)
        return out

    def is_done(self, tile: CubeTile) -> bool:
        if isinstance(self.specs[tile.group], GridSpec):
            return not self.pending_times(tile)
        return bool(zarr.open_array(str(self.path), path=tile_done_path(tile.group), mode="r")[tile.key])

    def pending_tiles(self) -> list[CubeTile]:
        """Tiles with work left: a grid tile lacking any of the plan's solar days, a table
        tile not written."""
        out = []
        for g, spec in self.specs.items():
            done = self.done_map(g)
            if isinstance(spec, GridSpec):
                sub = done[self.plan_times(g)]
                out += [t for t in spec.tiles() if not sub[:, t.key[0], t.key[1]].all()]
            else:
                out += [t for t in spec.tiles() if not done[t.key]]
        return out

    def write_grid_tile(self, tile: CubeTile, embedding: np.ndarray, valid: np.ndarray, run: int,
                        times: list[int] | None = None) -> None:
        """embedding (len(times), h, w, D), valid (len(times), h, w) for the tile's region
        (NaN where absent) at storage time indices ``times`` (default: the plan's days), then
        their completion records. Other days' chunks are not touched."""
        spec = self.specs[tile.group]
        assert isinstance(spec, GridSpec)
        times = [int(t) for t in (self.plan_times(tile.group) if times is None else times)]
        if len(embedding) != len(times) or len(valid) != len(times):
            raise ValueError(f"{len(times)} time slices to write, {len(embedding)} given")
        ys, xs = spec.region(tile)
        ty, tx = tile.key
        g = tile.group
        emb = zarr.open_array(str(self.path), path=f"{g}/embedding", mode="r+")
        val = zarr.open_array(str(self.path), path=f"{g}/valid_fraction", mode="r+")
        for arr in (emb, val):
            dims = arr.metadata.dimension_names
            check_aligned({"y": ys, "x": xs}, dict(zip(dims, arr.chunks)), dict(zip(dims, arr.shape)))
        files = self._write_latlon(tile, ys, xs)
        dtype = self.attrs["geomoe:identity"]["dtype"]
        k = 0
        while k < len(times):  # contiguous runs of time indices: one write each
            e = k + 1
            while e < len(times) and times[e] == times[e - 1] + 1:
                e += 1
            t0, t1 = times[k], times[e - 1] + 1
            emb[t0:t1, ys, xs, :] = np.asarray(embedding[k:e], dtype=dtype)
            val[t0:t1, ys, xs] = np.asarray(valid[k:e], dtype=np.float32)
            k = e
        for t in times:
            files += [self._chunk(g, "embedding", (t, ty, tx, 0)), self._chunk(g, "valid_fraction", (t, ty, tx))]
        self._commit(tile, files, run, times)

    def _write_latlon(self, tile: CubeTile, ys: slice, xs: slice) -> list[str]:
        """The tile's lat/lon chunk, on its first write (deterministic; never rewritten)."""
        spec = self.specs[tile.group]
        files = [self._chunk(tile.group, v, tile.key) for v in ("lat", "lon")]
        if all(os.path.exists(f) for f in files):
            return []
        xx, yy = np.meshgrid(spec.x[xs], spec.y[ys])
        lat, lon = _latlon(spec.epsg, xx, yy)
        zarr.open_array(str(self.path), path=f"{tile.group}/lat", mode="r+")[ys, xs] = lat
        zarr.open_array(str(self.path), path=f"{tile.group}/lon", mode="r+")[ys, xs] = lon
        return files

    def write_table_tile(self, tile: CubeTile, embedding: np.ndarray, valid: np.ndarray,
                         x: np.ndarray, y: np.ndarray, run: int) -> None:
        """embedding (n, D), valid/x/y (n,) for the tile's chips (planned order)."""
        spec = self.specs[tile.group]
        assert isinstance(spec, TableSpec)
        region = {"chip": spec.region(tile)}
        lat = np.full(len(x), np.nan)
        lon = np.full(len(x), np.nan)
        ep = spec.chips["epsg"][region["chip"]]
        for e in np.unique(ep):
            sel = (ep == e) & np.isfinite(x)
            lat[sel], lon[sel] = _latlon(int(e), x[sel], y[sel])
        ds = xr.Dataset({
            "embedding": (("chip", "dim"), embedding.astype(self.attrs["geomoe:identity"]["dtype"])),
            "valid_fraction": (("chip",), valid.astype("float32")),
            "x": (("chip",), x), "y": (("chip",), y), "lat": (("chip",), lat), "lon": (("chip",), lon),
        })
        self.write_region(tile.group, ds, region)
        (k,) = tile.key
        files = [self._chunk(tile.group, "embedding", (k, 0)), self._chunk(tile.group, "valid_fraction", (k,))]
        files += [self._chunk(tile.group, v, (k,)) for v in ("x", "y", "lat", "lon")]
        self._commit(tile, files, run)

    def write_region(self, group: str, ds: xr.Dataset, region: dict[str, slice]) -> None:
        """Chunk-aligned region write; alignment is checked against the STORED chunking."""
        g = zarr.open_group(str(self.path), path=group, mode="r")
        for name in ds.data_vars:
            arr = g[name]
            dims = arr.metadata.dimension_names
            check_aligned({d: region[d] for d in dims if d in region},
                          dict(zip(dims, arr.chunks)), dict(zip(dims, arr.shape)))
        ds.to_zarr(str(self.path), group=group, region=region, mode="r+", consolidated=False)

    def _chunk(self, group: str, var: str, idx: tuple[int, ...]) -> str:
        return str(self.path / group / var / "c" / "/".join(map(str, idx)))

    def _commit(self, tile: CubeTile, files: list[str], run: int, times: list[int] | None = None) -> None:
        _fsync(files)  # data durable first ...
        fault("after_data_before_commit")
        arr = zarr.open_array(str(self.path), path=tile_done_path(tile.group), mode="r+")
        rec = f"{BOOKKEEPING}/{tile.group}"
        if times is None:  # a table tile: one record
            arr[tile.key] = run  # ... then the completion record (one atomic chunk file)
            _fsync([self._chunk(rec, "tile_done", tile.key)])
            return
        ty, tx = tile.key
        col = arr[:, ty, tx]
        col[times] = run
        T = len(col)
        written = []
        for c in sorted({t // DONE_TIME_CHUNK for t in times}):  # one atomic file per chunk
            lo, hi = c * DONE_TIME_CHUNK, min((c + 1) * DONE_TIME_CHUNK, T)
            arr[lo:hi, ty, tx] = col[lo:hi]
            written.append(self._chunk(rec, "tile_done", (c, ty, tx)))
        _fsync(written)


def _write_items(path: Path, items: list[dict]) -> None:
    """The source STAC items (JSON, one per element) at the root: workers rebuild the layout
    from them without a catalog search; an array, not an attribute, so zarr.json stays small.
    Appended items go after the existing ones (``geomoe:n_items`` says how many are valid)."""
    n = max(len(items), 1)
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    if "stac_items" in root.array_keys():
        arr = zarr.open_array(str(path), path="stac_items", mode="r+")
        if arr.shape[0] < n:
            arr.resize((n,))
    else:
        arr = root.create_array("stac_items", shape=(n,), dtype=str, chunks=(n,),
                                dimension_names=["item"], overwrite=True)
        arr.attrs["description"] = "source STAC items (JSON), one per element"
    arr[:len(items) or 1] = np.array([json.dumps(it, default=str) for it in items] or ["{}"])


def _root_attrs(path: Path) -> dict[str, Any] | None:
    """Attributes of the Zarr v3 root at ``path`` read as plain JSON (no zarr needed), or None."""
    doc = read_json_object(path / "zarr.json")
    if doc is None:
        return None
    attrs = doc.get("attributes", {})
    return attrs if isinstance(attrs, dict) else {}


def tile_bytes(spec: Spec, tile: CubeTile, dim: int, dtype: str, block: int = 1) -> int:
    """Bytes one tile's chunk files take at most: uncompressed (chunks compress), each file
    rounded up to the filesystem's ``block`` size. For a full-disk estimate."""
    item = np.dtype(dtype).itemsize

    def f(n: int) -> int:
        return -(-n // block) * block

    if isinstance(spec, GridSpec):
        ys, xs = spec.region(tile)
        n = (ys.stop - ys.start) * (xs.stop - xs.start)  # every day (an append needs fewer), lat/lon
        return len(spec.days) * (f(n * dim * item) + f(n * 4)) + 2 * f(n * 8) + f(2 * DONE_TIME_CHUNK)
    sl = spec.region(tile)
    n = sl.stop - sl.start
    return f(n * dim * item) + f(n * 4) + 4 * f(n * 8) + f(2)


def read_items(path: str | os.PathLike) -> list[dict]:
    """Source STAC items stored in a cube (``stac_items`` array at the root)."""
    n = int(zarr.open_group(str(path), mode="r").attrs.get("geomoe:n_items", 0))
    vals = zarr.open_array(str(path), path="stac_items", mode="r")[...]
    return [json.loads(str(v)) for v in vals[:n]]


def open_group(path: str | os.PathLike, group: str) -> xr.Dataset:
    """Open one group of a cube lazily, CRS decoded, whether or not its last run finished
    (analysts' plain ``xr.open_zarr(path, group=g)`` needs the consolidated metadata of a
    finished run to open without a warning)."""
    return xr.open_zarr(str(path), group=group, consolidated=False, decode_coords="all")


def cube_groups(path: str | os.PathLike) -> list[str]:
    """Group names of a cube, from its root attributes (no listing needed)."""
    try:
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise CubeError(f"{path} is not a geomoe cube: {exc}") from None
    if "geomoe:groups" not in attrs:
        raise CubeError(f"{path} is not a complete geomoe cube (no geomoe:groups attribute)")
    return list(attrs["geomoe:groups"])
