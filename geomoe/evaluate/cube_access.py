"""Reading embeddings out of a cube for analysis: date windows, per-chip composites, blocks.

Built on the public reader (:func:`geomoe.open_cube`) and xarray only, so that probes and
change maps do not depend on how the store is chunked or appended.

Date windows (``--time`` of the probe, ``--from``/``--to`` of change maps):

- ``YYYY-MM-DD``: that UTC day; ``YYYY-MM``: that month; ``YYYY``: that year;
- ``START/END``: every day from START to END, both included (each side any of the above).

A window takes every time slice of the group inside it. A chip with several valid (finite)
observations in the window gets their per-dimension **median** (a composite robust to one odd
date); a chip with none is NaN. With one observation the composite is that observation.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geomoe.chips.grid import CHIP_METERS
from geomoe.errors import GeomoeError, OutputExistsError
from geomoe.atomic import publish, read_json_object

#: Chips read per block when streaming over a group (rows of the grid x columns, or table rows).
BLOCK_CHIPS = 65_536


class WindowError(GeomoeError, ValueError):
    """A date window that cannot be parsed or that holds no time slice of the cube."""


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end) of datetime64[ns], and the text it came from."""

    start: np.datetime64
    end: np.datetime64
    text: str

    def holds(self, times: np.ndarray) -> np.ndarray:
        """Bool mask of ``times`` (datetime64) inside the window."""
        t = np.asarray(times, dtype="datetime64[ns]")
        return (t >= self.start) & (t < self.end)


def _bound(text: str, *, end: bool) -> np.datetime64:
    t = text.strip()
    unit = {4: "Y", 7: "M", 10: "D"}.get(len(t))
    if unit is None:
        raise ValueError(t)
    v = np.datetime64(t, unit)
    if end:
        v = v + np.timedelta64(1, unit)
    return v.astype("datetime64[ns]")


def parse_window(text: str) -> Window:
    """``2020-09-27``, ``2020-09``, ``2020`` or ``START/END`` -> a :class:`Window` (UTC)."""
    s = str(text).strip()
    a, _, b = s.partition("/")
    try:
        start = _bound(a, end=False)
        stop = _bound(b if b else a, end=True)
    except ValueError:
        raise WindowError(
            f"date {text!r} is not a day (YYYY-MM-DD), month (YYYY-MM), year (YYYY) or an "
            "interval START/END of those, e.g. 2020-09-27 or 2020-06-01/2020-08-31") from None
    if stop <= start:
        raise WindowError(f"date window {text!r} ends before it starts: write START/END")
    return Window(start, stop, s)


def grid_groups(cube: Any) -> list[str]:
    """The cube's grid groups (embedding (time, y, x, dim)), in the cube's order."""
    return [g for g in cube.groups if cube[g].embedding.dims[0] == "time"]


def time_index(ds: xr.Dataset, window: Window | None) -> np.ndarray:
    """Indices of a grid group's time slices in ``window`` (all of them for None)."""
    times = ds["time"].values
    if window is None:
        return np.arange(len(times))
    return np.flatnonzero(window.holds(times))


def describe_times(cube: Any) -> str:
    """The cube's dates, for error messages: ``utm30n: 2020-09-27, 2021-09-27``."""
    parts = []
    for g in grid_groups(cube):
        days = sorted({str(t)[:10] for t in cube[g]["time"].values})
        parts.append(f"{g}: {', '.join(days) if days else 'no dates'}")
    return "; ".join(parts) or "no grid groups"


def composite(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-chip median over the time axis of valid observations.

    Parameters
    ----------
    block : (T, ..., D) float
        Embeddings; a chip is valid at a time when all its D values are finite.

    Returns
    -------
    emb : (..., D) float32
        The median of the valid observations (NaN where there is none).
    n : (...) int16
        How many observations each chip's composite used.
    """
    block = np.asarray(block, dtype=np.float32)
    valid = np.isfinite(block).all(-1)
    n = valid.sum(0).astype(np.int16)
    if block.shape[0] == 1:
        return block[0], n
    masked = np.where(valid[..., None], block, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": those chips stay NaN
        emb = np.nanmedian(masked, axis=0).astype(np.float32)
    return emb, n


def grid_row_blocks(ds: xr.Dataset, block_chips: int = BLOCK_CHIPS) -> Iterator[slice]:
    """Row slices of a grid group, whole chunk rows, about ``block_chips`` chips each."""
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    chunks = ds.embedding.chunks
    step = chunks[1][0] if chunks else 1
    rows = max(step, (max(1, block_chips // max(nx, 1)) // step) * step)
    for r in range(0, ny, rows):
        yield slice(r, min(ny, r + rows))


def read_grid_rows(ds: xr.Dataset, tidx: np.ndarray, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """Composite embeddings (h, nx, D) float32 and observation counts (h, nx) of some rows."""
    block = ds.embedding.isel(time=xr.DataArray(tidx, dims="time"), y=rows).values
    return composite(block)


def read_grid_points(ds: xr.Dataset, tidx: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray) -> np.ndarray:
    """Composite embeddings (K, D) of chips at (rows, cols), reading only the row blocks that
    hold them."""
    out = np.full((len(rows), ds.sizes["dim"]), np.nan, np.float32)
    if not len(rows):
        return out
    for sl in grid_row_blocks(ds):
        sel = (rows >= sl.start) & (rows < sl.stop)
        if not sel.any():
            continue
        lo, hi = int(rows[sel].min()), int(rows[sel].max()) + 1
        emb, _ = read_grid_rows(ds, tidx, slice(lo, hi))
        out[sel] = emb[rows[sel] - lo, cols[sel]]
    return out


def table_selection(ds: xr.Dataset, window: Window | None) -> np.ndarray:
    """Bool mask (chip,) of table chips whose acquisition time is in ``window``."""
    if window is None:
        return np.ones(ds.sizes["chip"], dtype=bool)
    return window.holds(ds["time"].values)


def read_table(ds: xr.Dataset, idx: np.ndarray) -> np.ndarray:
    """Embeddings (K, D) float32 of table chips ``idx`` (sorted reads, block by block)."""
    out = np.full((len(idx), ds.sizes["dim"]), np.nan, np.float32)
    n = ds.sizes["chip"]
    for s in range(0, n, BLOCK_CHIPS):
        sel = (idx >= s) & (idx < s + BLOCK_CHIPS)
        if sel.any():
            emb = ds.embedding.isel(chip=slice(s, min(n, s + BLOCK_CHIPS))).values
            out[sel] = emb[idx[sel] - s]
    return out


# ------------------------------------------------------------------ analysis outputs (Zarr)
#: Root attribute that marks a Zarr store as a geomoe analysis output (its value: the kind).
OUTPUT_KEY = "geomoe:analysis"


def output_kind(path: Path) -> str | None:
    """The kind of geomoe analysis output a Zarr store at ``path`` is (format 2 or 3), None if
    not one."""
    v3 = read_json_object(path / "zarr.json")
    attrs = (v3.get("attributes") if v3 is not None else read_json_object(path / ".zattrs")) or {}
    kind = attrs.get(OUTPUT_KEY) if isinstance(attrs, dict) else None
    return kind if isinstance(kind, str) else None


def check_output(path: Path, kind: str, *, overwrite: bool, option: str) -> None:
    """Refuse, before any work, to replace anything but a geomoe output of the same ``kind``
    (and that one only with ``overwrite``)."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_dir() or output_kind(path) != kind:
        raise OutputExistsError(
            f"{option} {path} exists and is not a geomoe {kind} store: it is never replaced, "
            "even with --overwrite; choose another path")
    if not overwrite:
        raise OutputExistsError(
            f"{option} {path} already holds a geomoe {kind}: pass --overwrite to replace it, "
            "or choose another path")


def write_output(path: Path, groups: dict[str, xr.Dataset], kind: str, attrs: dict[str, Any]) -> None:
    """Write ``groups`` as one Zarr store (group per cube group), replacing only a previous
    output of the same kind; written under a temporary name and renamed into place.

    Zarr format 2, with consolidated metadata: the format GDAL's Zarr driver (and so QGIS)
    reads most widely; xarray reads both."""
    import shutil

    import zarr

    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists() or tmp.is_symlink():  # a killed earlier write of ours, or someone's
        if tmp.is_symlink() or not tmp.is_dir() or output_kind(tmp) != kind:
            raise OutputExistsError(f"{tmp} is in the way and geomoe did not write it: move it")
        shutil.rmtree(tmp)
    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    root.attrs.update({OUTPUT_KEY: kind, **{k: json.dumps(v) if not isinstance(v, str) else v
                                             for k, v in attrs.items()}})
    for name, ds in groups.items():
        ds.to_zarr(str(tmp), group=name, mode="w", consolidated=False, zarr_format=2)
    with warnings.catch_warnings():  # consolidated: xarray and GDAL open it with one read
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(tmp), zarr_format=2)
    publish(tmp, path)  # replaces geomoe's own earlier output (checked by the caller)


def gdal_crs_attrs(epsg: int) -> dict[str, Any]:
    """The ``_CRS`` attribute GDAL's Zarr driver (QGIS) reads, beside CF's ``spatial_ref``."""
    from pyproj import CRS

    crs = CRS.from_epsg(int(epsg))
    return {"_CRS": {"url": f"http://www.opengis.net/def/crs/EPSG/0/{int(epsg)}", "wkt": crs.to_wkt()}}


def grid_map_dataset(src: xr.Dataset, data: dict[str, tuple[tuple[str, ...], np.ndarray]],
                     attrs: dict[str, Any]) -> xr.Dataset:
    """A 2-D map (y, x) on a grid group's chip grid: its x/y/lat/lon and CRS (CF + GDAL)."""
    ds = xr.Dataset({k: (dims, v) for k, (dims, v) in data.items()},
                    coords={"y": src["y"].values, "x": src["x"].values,
                            "lat": (("y", "x"), src["lat"].values),
                            "lon": (("y", "x"), src["lon"].values)})
    epsg = int(src.rio.crs.to_epsg())
    ds = ds.rio.write_crs(epsg)
    for c in ("x", "y"):
        ds[c].attrs.update(src[c].attrs)
    for k, (dims, _) in data.items():
        if dims[-2:] == ("y", "x"):
            ds[k].encoding["grid_mapping"] = "spatial_ref"
            ds[k].attrs.update(coordinates="lat lon spatial_ref",
                               **gdal_crs_attrs(epsg))
    ds.attrs.update({k: v if isinstance(v, (str, int, float)) else json.dumps(v)
                     for k, v in attrs.items()})
    ds.attrs.update(epsg=epsg, chip_meters=float(src.attrs.get("chip_meters", CHIP_METERS)))
    return ds
