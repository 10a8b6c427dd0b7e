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
- bookkeeping, out of the analyst's datasets: ``_geomoe/<group>/tile_done`` (one element per
  tile) and the root's ``stac_items`` array and attributes.

Value semantics: a chip never computed has NaN embedding AND NaN valid_fraction; a chip
skipped for cloud/fill has NaN embedding and a finite valid_fraction (< min_valid).

Crash safety: a tile is one chunk-aligned region write; its chunk files are fsynced, and
only then is ``tile_done[tile]`` set (to the run number) - itself one atomic chunk file
(zarr's LocalStore writes to a temp file and renames). A tile that was killed half-way is
simply rewritten whole on the next run. geomoe itself reads and writes with
``consolidated=False``; consolidated metadata (root ``zarr.json``) is for readers only: a run
removes it when it starts (:meth:`Cube.new_run`) and writes it when it finishes
(:meth:`Cube.finish`), so a store carries it only when its last run finished.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import dataclass
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
FORMAT_VERSION = 2
BOOKKEEPING = "_geomoe"  # group of the tile completion records (not analyst data)
IDENTITY_KEYS = ("checkpoint_sha256", "model_size", "embed_dim", "pooling", "dtype", "min_valid",
                 "mask_bits", "grid", "tile_size", "table_tile", "normalisation")
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


def _grid_dataset(spec: GridSpec, dim: int, dtype: str) -> tuple[xr.Dataset, dict]:
    ts = spec.tile_size
    T = len(spec.times)
    xx, yy = np.meshgrid(spec.x, spec.y)
    lat, lon = _latlon(spec.epsg, xx, yy)
    ds = xr.Dataset(
        {
            "embedding": (("time", "y", "x", "dim"),
                          da.full((T, spec.ny, spec.nx, dim), np.nan, dtype=dtype,
                                  chunks=(1, ts, ts, dim))),
            "valid_fraction": (("time", "y", "x"),
                               da.full((T, spec.ny, spec.nx), np.nan, dtype="float32",
                                       chunks=(1, ts, ts))),
        },
        coords={
            "time": spec.times.astype("datetime64[ns]"),
            "y": spec.y, "x": spec.x, "dim": np.arange(dim),
            "lat": (("y", "x"), lat), "lon": (("y", "x"), lon),
        },
    )
    ds = ds.rio.write_crs(spec.epsg)
    ds.x.attrs.update(standard_name="projection_x_coordinate", units="m", long_name="chip centre x")
    ds.y.attrs.update(standard_name="projection_y_coordinate", units="m", long_name="chip centre y")
    ds.lat.attrs.update(standard_name="latitude", units="degrees_north")
    ds.lon.attrs.update(standard_name="longitude", units="degrees_east")
    ds.valid_fraction.attrs["description"] = (
        "fraction of valid (unmasked, non-fill) pixels; NaN = chip never computed")
    ds.attrs.update(
        layout="grid", epsg=spec.epsg, tile_size=ts, chip_meters=CHIP_METERS,
        row_max=spec.row_max, col_min=spec.col_min,
        stac_item_ids=json.dumps(spec.item_ids),
        solar_days=json.dumps([str(d) for d in spec.days]),  # a list attribute breaks to_netcdf
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
        "time": {"units": "seconds since 1970-01-01", "dtype": "int64"},
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
    """One uint16 per tile, 0 = pending, else the run number that completed it; one chunk per
    tile, so marking a tile done is one atomic chunk-file write."""
    grid = isinstance(spec, GridSpec)
    shape = tuple(spec.n_tiles) if grid else (len(spec.tiles()),)
    g = zarr.open_group(str(path), mode="r+").require_group(BOOKKEEPING).require_group(spec.name)
    arr = g.create_array("tile_done", shape=shape, chunks=(1,) * len(shape), dtype="uint16", fill_value=0,
                         dimension_names=["tile_y", "tile_x"] if grid else ["tile"])
    arr.attrs["description"] = "run number that completed the tile (0 = pending)"


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
            "embedding": (("chip", "dim"), da.full((spec.n, dim), np.nan, dtype=dtype, chunks=(ts, dim))),
            "valid_fraction": (("chip",), da.full((spec.n,), np.nan, dtype="float32", chunks=(ts,))),
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


@dataclass
class Cube:
    """Handle on a cube store plus its layout; creation and tile writes go through here."""

    path: Path
    specs: dict[str, Spec]
    attrs: dict[str, Any]

    # ---------- creation / opening ----------
    @classmethod
    def create_or_open(cls, path: str | os.PathLike, specs: list[Spec], *, dim: int,
                       dtype: str = "float32", identity: dict[str, Any],
                       attrs: dict[str, Any], items: list[dict]) -> "Cube":
        """Create the skeleton (metadata + coordinates, no chunk data) or verify and reuse
        an existing store. Raises CubeMismatchError / ForeignStoreError rather than touch a
        store geomoe did not make for this request. The caller must hold ``store_lock(path)``."""
        path = Path(path)
        if dtype not in ("float32", "float16"):
            raise CubeError(f"dtype must be float32 or float16, not {dtype!r}")
        ensure_writable(path)
        meta = cls.identity_meta(specs, dtype, identity)
        state = cls.check_target(path, meta)
        if state == "resume":
            existing = zarr.open_group(str(path), mode="r").attrs.asdict()
            cube = cls(path, {s.name: s for s in specs}, existing)
            cube._clean_partials()
            return cube
        if state == "rebuild":
            # an unfinished skeleton of this same request (a run killed while creating it):
            # it holds no tile, and check_target made sure it holds nothing but geomoe's nodes
            for child in path.iterdir():  # keep the directory itself: the run lock is on its inode
                if not child.name.startswith(".geomoe-write-test"):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        root = zarr.open_group(str(path), mode="w-", zarr_format=3)
        root.attrs.update({"geomoe:identity": meta, "geomoe:skeleton_complete": False})
        item_map = {it["id"]: it for it in items}
        for spec in specs:
            ds, enc = (_grid_dataset(spec, dim, dtype) if isinstance(spec, GridSpec)
                       else _table_dataset(spec, dim, dtype, item_map))
            ds.attrs.update(group_attrs(attrs))  # provenance where the analyst opens it
            from geomoe.cube.conventions import group_conventions  # geoemb:, proj:, spatial:

            ds.attrs.update(group_conventions(spec, dim=dim, dtype=dtype, attrs=attrs, store_name=path.name))
            ds.to_zarr(str(path), group=spec.name, mode="w", compute=False,
                       consolidated=False, encoding=enc, zarr_format=3)
            _create_tile_done(path, spec)
        full = {
            **attrs,
            "geomoe:identity": meta,
            "geomoe:groups": [s.name for s in specs],
            "geomoe:n_items": len(items),
            "geomoe:runs": 0,
            "geomoe:skeleton_complete": True,
        }
        root = zarr.open_group(str(path), mode="r+")
        # the source STAC items (JSON, one per element): workers rebuild the layout from them
        # without a catalog search; an array, not an attribute, so zarr.json stays small
        arr = root.create_array("stac_items", shape=(max(len(items), 1),), dtype=str,
                                chunks=(max(len(items), 1),), dimension_names=["item"], overwrite=True)
        arr[:] = np.array([json.dumps(it, default=str) for it in items] or ["{}"])
        arr.attrs["description"] = "source STAC items (JSON), one per element"
        root.attrs.update(full)  # last: marks the skeleton complete
        return cls(path, {s.name: s for s in specs}, full)

    @staticmethod
    def identity_meta(specs: list[Spec], dtype: str, identity: dict[str, Any]) -> dict[str, Any]:
        """The ``geomoe:identity`` a store for this request must carry (to create or to resume)."""
        return {"format_version": FORMAT_VERSION, **identity, "dtype": dtype,
                "plan_fingerprint": plan_fingerprint(specs)}

    @classmethod
    def check_target(cls, path: str | os.PathLike, meta: dict[str, Any]) -> str:
        """What a run may do at ``path``, decided read-only: ``"new"`` (absent or empty),
        ``"resume"`` (a complete cube of this identity) or ``"rebuild"`` (an unfinished
        skeleton of this identity, holding no tile). Anything else is refused untouched."""
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
        cls._verify(path, found, meta, complete=complete)
        if complete:
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
                f"({', '.join(IDENTITY_KEYS)}), so it cannot be resumed safely; {keep}: finish it "
                "with the geomoe version that made it, or use another --out")
        diff = [k for k in IDENTITY_KEYS if found.get(k) != wanted.get(k)]
        if diff:
            what = ", ".join(f"{k}={found.get(k)!r} (you asked {wanted.get(k)!r})" for k in diff)
            raise CubeMismatchError(
                f"cube {path} was made with a different model or settings: {what}; {keep}: rerun "
                f"with the same {'/'.join(diff)}, or use another --out for the new settings")
        if found.get("plan_fingerprint") != wanted.get("plan_fingerprint"):
            raise CubeMismatchError(
                f"{path} holds a different request (AOI, datetime, catalog contents or tile size "
                f"differ, so the planned chips differ); {keep}: "
                "use another --out to embed this request")

    @classmethod
    def open(cls, path: str | os.PathLike, specs: list[Spec]) -> "Cube":
        """Open an existing, complete store for tile writes (workers; no lock, no checks
        beyond the plan fingerprint)."""
        path = Path(path)
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        if not attrs.get("geomoe:skeleton_complete"):
            raise CubeError(f"{path} is not a complete geomoe cube")
        if attrs["geomoe:identity"]["plan_fingerprint"] != plan_fingerprint(specs):
            raise CubeMismatchError(f"{path} was planned for a different request")
        return cls(path, {s.name: s for s in specs}, attrs)

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
        """Write consolidated metadata (the root ``zarr.json``), last step of a finished run:
        ``xr.open_zarr(path, group=g)`` then opens without a warning and with one read."""
        import warnings

        with warnings.catch_warnings():  # "not part of the Zarr format 3 specification" (yet)
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(str(self.path))

    def update_attrs(self, extra: dict[str, Any]) -> None:
        root = zarr.open_group(str(self.path), mode="r+")
        root.attrs.update(extra)
        self.attrs.update(extra)

    # ---------- tiles ----------
    def tiles(self) -> list[CubeTile]:
        return [t for s in self.specs.values() for t in s.tiles()]

    def done_map(self, group: str) -> np.ndarray:
        return zarr.open_array(str(self.path), path=tile_done_path(group), mode="r")[...]

    def is_done(self, tile: CubeTile) -> bool:
        return bool(self.done_map(tile.group)[tile.key])

    def pending_tiles(self) -> list[CubeTile]:
        maps = {g: self.done_map(g) for g in self.specs}
        return [t for t in self.tiles() if not maps[t.group][t.key]]

    def write_grid_tile(self, tile: CubeTile, embedding: np.ndarray, valid: np.ndarray, run: int) -> None:
        """embedding (T, h, w, D), valid (T, h, w) for the tile's region (NaN where absent)."""
        spec = self.specs[tile.group]
        assert isinstance(spec, GridSpec)
        ys, xs = spec.region(tile)
        T = len(spec.times)
        region = {"time": slice(0, T), "y": ys, "x": xs}
        ds = xr.Dataset({
            "embedding": (("time", "y", "x", "dim"), embedding.astype(self.attrs["geomoe:identity"]["dtype"])),
            "valid_fraction": (("time", "y", "x"), valid.astype("float32")),
        })
        self.write_region(tile.group, ds, region)
        files = []
        for t in range(T):
            files += [self._chunk(tile.group, "embedding", (t, *tile.key, 0)),
                      self._chunk(tile.group, "valid_fraction", (t, *tile.key))]
        self._commit(tile, files, run)

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

    def _commit(self, tile: CubeTile, files: list[str], run: int) -> None:
        _fsync(files)  # data durable first ...
        fault("after_data_before_commit")
        arr = zarr.open_array(str(self.path), path=tile_done_path(tile.group), mode="r+")
        arr[tile.key] = run  # ... then the completion record (one atomic chunk file)
        _fsync([self._chunk(f"{BOOKKEEPING}/{tile.group}", "tile_done", tile.key)])


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
        n = (ys.stop - ys.start) * (xs.stop - xs.start)
        return len(spec.times) * (f(n * dim * item) + f(n * 4)) + f(2)
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
