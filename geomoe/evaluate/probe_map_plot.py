"""PNGs of analysis maps: the probe's prediction map with its labels, and change maps.

Grid groups are drawn in their own CRS (metres), one panel per group, chips as pixels;
the table group is drawn as one square marker per chip at its longitude/latitude.
No pyplot: a notebook's backend stays as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geomoe.atomic import atomic_write
from geomoe.chips.grid import CHIP_METERS

MAX_PANELS = 4
METRIC_NAMES = {"micro_map": "micro mAP", "accuracy": "accuracy"}


def _colours(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return np.asarray([cmap(i % cmap.N) for i in range(n)])


def _extent(ds: Any) -> list[float]:
    size = float(ds.attrs.get("chip_meters", CHIP_METERS))
    x, y = ds["x"].values, ds["y"].values
    return [x[0] - size / 2, x[-1] + size / 2, y[-1] - size / 2, y[0] + size / 2]


def plot_probe_map(cube: Any, maps: dict[str, Any], classes: list[str], labels: str | Path,
                   column: str, rep: dict[str, Any], png: Path) -> None:
    """Predicted class per chip (faded where the probe is unsure) with the labels drawn on top."""
    import geopandas as gpd
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    cols = _colours(len(classes))
    groups = list(maps)[:MAX_PANELS]
    fig = Figure(figsize=(max(11.0, 7.5 * len(groups)), 8.0))
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    gdf = gpd.read_parquet(labels) if Path(labels).suffix.lower() in (".parquet", ".geoparquet") \
        else gpd.read_file(labels)
    first = gdf[column].map(_first_class)
    for ax, g in zip(axes, groups):
        m = maps[g]
        cls, prob = m["class"].values, m["probability"].values
        if cls.ndim == 2:
            rgba = np.ones(cls.shape + (4,))
            ok = cls >= 0
            rgba[ok] = cols[cls[ok]]
            rgba[ok, 3] = 0.35 + 0.65 * np.clip(prob[ok], 0, 1)
            rgba[~ok] = (0.85, 0.85, 0.85, 1.0)
            ax.imshow(rgba, extent=_extent(cube[g]), interpolation="nearest")
            lab = gdf.to_crs(cube[g].rio.crs)
            ax.set_xlabel(f"x (m, EPSG:{cube[g].rio.crs.to_epsg()})")
            ax.set_ylabel("y (m)")
        else:
            ok = cls >= 0
            lon, lat = m["lon"].values, m["lat"].values
            ax.scatter(lon[~ok], lat[~ok], s=30, marker="s", color=(0.8, 0.8, 0.8))
            c = cols[cls[ok]].copy()
            c[:, 3] = 0.35 + 0.65 * np.clip(prob[ok], 0, 1)
            ax.scatter(lon[ok], lat[ok], s=60, marker="s", color=c)
            lab = gdf.to_crs(4326)
            ax.set_xlabel("longitude")
            ax.set_ylabel("latitude")
        _draw_labels(ax, lab, first, classes, cols)
        ax.set_title(f"{g}: predicted class (faded = low probability), labels outlined", fontsize=9)
    handles = [Patch(color=cols[k], label=c if len(c) <= 36 else c[:34] + "..")
               for k, c in enumerate(classes)]
    handles.append(Patch(color=(0.85, 0.85, 0.85), label="no embedding"))
    ncol = min(3, len(handles))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7)
    r, s = rep["cv_random"], rep["cv_spatial"]
    fmt = lambda cv: "n/a" if cv["mean"] is None else f"{100 * cv['mean']:.1f}+-{100 * cv['std']:.1f}"
    metric = METRIC_NAMES.get(r["metric"], r["metric"])
    fig.suptitle(f"linear probe on {Path(rep['cube']).name}: {rep['n_labels_used']} labels, "
                 f"{rep['n_chips']} chips\n{metric} random CV {fmt(r)}, spatial CV {fmt(s)} "
                 f"({s.get('block_size_m', 0):g} m blocks)", fontsize=10)
    fig.tight_layout(rect=(0, 0.02 + 0.022 * -(-len(handles) // ncol), 1, 0.93))
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))


def _first_class(v: Any) -> str | None:
    """The class a label is drawn in: its first (multi-label: lists, JSON lists, ';' text)."""
    if isinstance(v, str) and v.strip().startswith("["):
        from geomoe.evaluate.cube_labels import _json_list

        v = _json_list(v) if _json_list(v) is not None else v
    if isinstance(v, (list, tuple, np.ndarray)):
        return str(v[0]) if len(v) else None
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v)
    return s.split(";")[0].strip() or None


def _draw_labels(ax: Any, gdf: Any, first: Any, classes: list[str], cols: np.ndarray) -> None:
    """Points as class-coloured dots ringed in black, polygons as class-coloured outlines."""
    import shapely

    idx = {c: k for k, c in enumerate(classes)}
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    pts: dict[int, list[np.ndarray]] = {}
    for geom, c in zip(gdf.geometry.values, first.values):
        if geom is None or geom.is_empty:
            continue
        k = idx.get(c, -1)
        if geom.geom_type in ("Point", "MultiPoint"):
            pts.setdefault(k, []).append(shapely.get_coordinates(geom))
        elif geom.geom_type in ("Polygon", "MultiPolygon"):
            colour = cols[k] if k >= 0 else (0, 0, 0, 1)
            parts = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
            for p in parts:
                x, y = p.exterior.xy
                ax.plot(x, y, color="black", linewidth=2.4, zorder=3)
                ax.plot(x, y, color=colour, linewidth=1.4, zorder=4)
    for k, xys in pts.items():  # one scatter per class: thousands of points stay quick
        xy = np.concatenate(xys)
        ax.scatter(xy[:, 0], xy[:, 1], s=22, color=cols[k] if k >= 0 else (0, 0, 0, 1),
                   edgecolors="black", linewidths=0.8, zorder=3)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def plot_change(cube: Any, maps: dict[str, Any], title: str, png: Path, marker: str) -> None:
    """Cosine distance per chip (grey: not valid at both dates), one panel per grid group."""
    import matplotlib
    from matplotlib.figure import Figure

    groups = list(maps)[:MAX_PANELS]
    fig = Figure(figsize=(7.5 * len(groups), 7))
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad=(0.8, 0.8, 0.8))
    for ax, g in zip(axes, groups):
        d = maps[g]["cosine_distance"].values
        fin = d[np.isfinite(d)]
        vmax = float(np.percentile(fin, 99.5)) if len(fin) else 1.0
        im = ax.imshow(np.ma.masked_invalid(d), extent=_extent(cube[g]), cmap=cmap, vmin=0,
                       vmax=max(vmax, 1e-6), interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label="cosine distance (1 - cos)")
        ax.set_title(f"{g}: {int(np.isfinite(d).sum())} chips valid at both dates", fontsize=9)
        ax.set_xlabel(f"x (m, EPSG:{cube[g].rio.crs.to_epsg()})")
        ax.set_ylabel("y (m)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from geomoe.viz import PNG_KEY

    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=90, format="png",
                                              metadata={PNG_KEY: marker}))
