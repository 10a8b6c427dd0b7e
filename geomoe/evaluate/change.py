"""Change between two dates of an embedding cube: per-chip cosine distance.

For each grid group, each date window (:mod:`geomoe.evaluate.cube_access`: a day, month,
year or START/END) gives every chip a reference embedding: its one valid observation in the
window, or the per-dimension median of several. The change is the cosine distance
``1 - cos(a, b)`` in [0, 2] between the two references, for chips valid in both windows
(NaN elsewhere). Table groups (pre-chipped patches, one date each) have no second date and
are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geomoe.errors import GeomoeError
from geomoe.evaluate import cube_access as ca

MAP_KIND = "change-map"


class ChangeInputError(GeomoeError):
    """The cube or the dates give nothing to compare."""


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` along the last axis of two (..., D) arrays (NaN where either is NaN/zero)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 1.0 - num / den
    # rounding can give -1e-16 for identical vectors
    return np.where(den > 0, np.clip(d, 0.0, 2.0), np.nan).astype(np.float32)


def change(cube: str | Path, date_from: str, date_to: str, out: str | Path, *,
           overwrite: bool = False, plot: bool = True) -> dict[str, Any]:
    """Per-chip cosine distance between two date windows of a cube, as Zarr (+ PNG beside).

    Parameters
    ----------
    cube : str or Path
        An embedding cube with at least one grid group.
    date_from, date_to : str
        Date windows: ``2020-09-27``, ``2020-09``, ``2020`` or ``START/END`` (UTC days,
        both included); several observations of a chip in a window -> per-chip median.
    out : str or Path
        Output Zarr store (``CHANGE.zarr``): a group per grid group with
        ``cosine_distance`` (y, x) float32 in [0, 2] (NaN: not valid at both dates),
        ``n_from`` and ``n_to`` (y, x) observations used, x/y/lat/lon and the CRS
        (``spatial_ref`` for xarray/rioxarray, ``_CRS`` for GDAL/QGIS). The PNG is
        ``CHANGE.png`` beside it.
    overwrite : bool
        Replace an earlier geomoe change map at ``out``; anything else there is refused.
    plot : bool
        Write the PNG.

    Returns
    -------
    dict
        ``groups`` (per group: chips compared, median and 99th percentile distance, dates
        used), ``out``, ``png``.
    """
    from geomoe.cube.reader import open_cube

    out = Path(out)
    png = out.with_suffix(".png")
    if out.suffix.lower() != ".zarr":
        raise ChangeInputError(f"--out {out} must end in .zarr (the PNG goes beside it)")
    ca.check_output(out, MAP_KIND, overwrite=overwrite, option="--out")
    if plot and (png.exists() or png.is_symlink()):
        from geomoe.viz import plotted_cube

        if png.is_symlink() or plotted_cube(png) != str(out.resolve()):
            raise ca.OutputExistsError(f"{png} exists and is not geomoe's plot of {out}: it is "
                                       "never replaced, even with --overwrite; choose another --out")
        if not overwrite:
            raise ca.OutputExistsError(f"{png} already holds geomoe's plot of {out}: pass "
                                       "--overwrite to replace it, or choose another --out")
    wa, wb = ca.parse_window(date_from), ca.parse_window(date_to)
    view = open_cube(cube)
    groups = ca.grid_groups(view)
    if not groups:
        raise ChangeInputError(f"{cube} has only table groups (pre-chipped patches, one date "
                               "each): a change map needs a grid group with two dates")
    maps: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for g in groups:
        ds = view[g]
        ta, tb = ca.time_index(ds, wa), ca.time_index(ds, wb)
        if not len(ta) or not len(tb):
            continue
        ny, nx = ds.sizes["y"], ds.sizes["x"]
        dist = np.full((ny, nx), np.nan, np.float32)
        na = np.zeros((ny, nx), np.int16)
        nb = np.zeros((ny, nx), np.int16)
        for rows in ca.grid_row_blocks(ds):
            ea, na[rows] = ca.read_grid_rows(ds, ta, rows)
            eb, nb[rows] = ca.read_grid_rows(ds, tb, rows)
            dist[rows] = cosine_distance(ea, eb)
        days = lambda t: [str(v)[:10] for v in ds["time"].values[t]]
        attrs = {"from": wa.text, "to": wb.text, "from_dates": days(ta), "to_dates": days(tb),
                 "source_cube": str(Path(cube).resolve()),
                 "composite": "per-chip median of valid observations in each window"}
        m = ca.grid_map_dataset(ds, {"cosine_distance": (("y", "x"), dist),
                                     "n_from": (("y", "x"), na), "n_to": (("y", "x"), nb)}, attrs)
        m["cosine_distance"].attrs.update(
            long_name="cosine distance between the two dates' embeddings", units="1",
            valid_min=0.0, valid_max=2.0)
        maps[g] = m
        fin = dist[np.isfinite(dist)]
        info[g] = {"chips_compared": int(len(fin)), "from_dates": days(ta), "to_dates": days(tb),
                   "median": float(np.median(fin)) if len(fin) else None,
                   "p99": float(np.percentile(fin, 99)) if len(fin) else None}
    if not maps:
        raise ca.WindowError(f"no grid group of {cube} has observations in both {date_from!r} and "
                             f"{date_to!r}; its dates are {ca.describe_times(view)}")
    ca.write_output(out, maps, MAP_KIND, {"from": wa.text, "to": wb.text})
    if plot:
        from geomoe.evaluate.probe_map_plot import plot_change

        plot_change(view, maps, f"change {wa.text} -> {wb.text} in {Path(cube).name}", png,
                    marker=str(out.resolve()))
    return {"out": str(out), "png": str(png) if plot else None, "groups": info}
