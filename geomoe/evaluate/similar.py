"""``geomoe similar``: chips that look like a few examples, over a whole cube.

The query is the mean of the positive examples' unit embeddings, minus the mean of the
negatives' when given (the anchors' positives-minus-negatives). A point takes the chip that
contains it, in every group and at every time where that chip is embedded (each a vector of
the mean). Scores are cosine similarities against every embedded chip of the cube (all groups,
all times), scanned from the index kept beside the cube (:mod:`geomoe.evaluate.simindex`).

Outputs, side by side: ``TOP.parquet`` (the top k, GeoParquet, best first), ``TOP.zarr`` (the
similarity of every chip, one group per cube group, opens in xarray with its CRS) and
``TOP.png`` (the map per group with the examples and the top k drawn on it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from geomoe.atomic import atomic_write, publish
from geomoe.cube.reader import CubeView, open_cube
from geomoe.errors import GeomoeError
from geomoe.evaluate.cubechips import (ChipBlock, ItemLookup, PointError, undasked, chip_corners,
                                       group_epsg, is_grid, locate)
from geomoe.evaluate.geoparquet import (ChipParquetWriter, OutputExistsError, check_output,
                                        chip_schema, is_geomoe_parquet)
from geomoe.evaluate.cube_access import OUTPUT_KEY, output_kind
from geomoe.evaluate.simindex import SimIndex, open_index, scan

Point = tuple[float, float]
#: what the similarity map's root says it is (geomoe.evaluate.cube_access.OUTPUT_KEY)
MAP_KIND = "similarity-map"


def parse_point(text: str) -> Point:
    """``"LON,LAT"`` -> (lon, lat) in degrees, range-checked."""
    try:
        lon, lat = (float(v) for v in str(text).split(","))
    except ValueError:
        raise PointError(f"point {text!r} is not LON,LAT (two numbers in degrees, e.g. "
                         "-3.07,53.48)") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90) or not np.isfinite([lon, lat]).all():
        raise PointError(f"point {text!r} is outside lon -180..180, lat -90..90: give LON,LAT")
    return lon, lat


def _points(values: Sequence[Any] | None) -> list[Point]:
    out = []
    for v in values or []:
        out.append(parse_point(v) if isinstance(v, str) else parse_point(f"{v[0]},{v[1]}"))
    return out


def read_examples(path: str | os.PathLike) -> tuple[list[Point], list[Point]]:
    """Points of a vector file (any format and CRS geopandas reads) as (positives, negatives).

    A boolean or 0/1 column ``negative`` marks negatives; without it every feature is a
    positive. Lines and polygons count by their representative point (inside the shape).
    """
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise GeomoeError(f"--examples {p} does not exist")
    try:
        gdf = gpd.read_file(p)
    except Exception as exc:  # fiona/pyogrio errors vary by driver
        raise GeomoeError(f"--examples {p} cannot be read as a vector file: {exc}") from None
    if gdf.crs is None:
        raise GeomoeError(f"--examples {p} has no CRS: write it with one (e.g. EPSG:4326)")
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()].to_crs(4326)
    if len(gdf) == 0:
        raise GeomoeError(f"--examples {p} holds no geometry")
    pts = gdf.geometry.representative_point()
    neg = (gdf["negative"].fillna(0).astype(bool).to_numpy() if "negative" in gdf.columns
           else np.zeros(len(gdf), bool))
    xy = list(zip(pts.x.tolist(), pts.y.tolist()))
    return [q for q, n in zip(xy, neg) if not n], [q for q, n in zip(xy, neg) if n]


def _example_vectors(cube: CubeView, points: list[Point], role: str) -> tuple[np.ndarray, list[dict]]:
    """Unit vectors (m, D) of every embedded chip under the points; a point outside the cube
    or on chips without an embedding is an error naming it."""
    vecs, where = [], []
    for lon, lat in points:
        hits = locate(cube, lon, lat)
        name = f"{role} point {lon:g},{lat:g}"
        if not hits:
            raise PointError(f"{name} is outside the cube {cube.path} (no chip of its groups "
                             f"{', '.join(cube.groups)} contains it): pick a point inside the cube")
        got = [h for h in hits if len(h.vectors)]
        if not got:
            raise PointError(f"{name} lies on a chip without an embedding (skipped for cloud or "
                             "fill, or not computed yet) in every group and time: pick another point")
        for h in got:
            v = h.vectors / np.maximum(np.linalg.norm(h.vectors, axis=1, keepdims=True), 1e-12)
            vecs.append(v)
            where.append({"lon": lon, "lat": lat, "group": h.group, "y": h.i, "x": h.j,
                          "times": len(h.vectors)})
    return np.concatenate(vecs), where


def query_vector(cube: CubeView, at: list[Point], negative: list[Point]) -> tuple[np.ndarray, list[dict]]:
    """(D,) float32 query: mean positive unit vector minus mean negative unit vector."""
    if not at:
        raise GeomoeError("give at least one positive example: --at LON,LAT or --examples FILE")
    pos, wp = _example_vectors(cube, at, "positive")
    q = pos.mean(0)
    wn: list[dict] = []
    if negative:
        neg, wn = _example_vectors(cube, negative, "negative")
        q = q - neg.mean(0)
    if not np.linalg.norm(q) > 1e-6:
        raise GeomoeError("the positive and negative examples cancel out (their mean embeddings "
                          "are equal): choose other examples")
    return q.astype(np.float32), [{**w, "role": "positive"} for w in wp] + [{**w, "role": "negative"} for w in wn]


@dataclass
class SimilarResult:
    """A similarity query's outputs and numbers."""

    out: Path
    map_path: Path
    png: Path
    k: int
    n_chips: int
    top_score: float
    index_path: Path
    index_built: bool
    seconds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        built = "built" if self.index_built else "reused"
        return (f"top {self.k} of {self.n_chips} embedded chips (best score {self.top_score:.4f}) "
                f"-> {self.out}; map {self.map_path}, {self.png}; index {self.index_path} ({built})")


def out_paths(out: Path) -> tuple[Path, Path, Path]:
    return out, out.with_suffix(".zarr"), out.with_suffix(".png")


def check_outputs(out: Path, *, overwrite: bool) -> None:
    """Refuse before writing: a foreign file at any of the three paths, or a geomoe result
    without ``overwrite``."""
    if out.suffix.lower() != ".parquet":
        raise GeomoeError(f"--out {out} must end in .parquet (the .zarr map and .png go beside it)")
    check_output(out, "similar", overwrite=overwrite, what="--out")
    ours = out.exists() and is_geomoe_parquet(out, "similar")
    _, zmap, png = out_paths(out)
    for p in (zmap, png):
        if p.exists() and not ours:
            raise OutputExistsError(f"{p} exists and geomoe did not write it beside a similarity "
                                    f"result {out}; it is never replaced: choose another --out")
    if zmap.exists() and output_kind(zmap) != MAP_KIND:
        raise OutputExistsError(f"{zmap} exists and is not a geomoe similarity map; it is never "
                                "replaced: choose another --out")
    if not out.parent.is_dir():
        raise GeomoeError(f"--out {out}: folder {out.parent} does not exist; create it first")


def _top_block(cube: CubeView, loc: np.ndarray, items: ItemLookup) -> ChipBlock:
    """A ChipBlock (no embeddings) of locator rows (group, t, i, j), in their order."""
    n = len(loc)
    f = {"t": loc[:, 1].copy(), "i": loc[:, 2].copy(), "j": loc[:, 3].copy(),
         "time": np.empty(n, "datetime64[ns]"), "epsg": np.zeros(n, np.int32),
         "x": np.zeros(n), "y": np.zeros(n), "item_id": np.empty(n, object),
         "valid_fraction": np.zeros(n, np.float32), "corners": np.zeros((n, 4, 2))}
    groups = np.empty(n, object)
    for gk, g in enumerate(cube.groups):
        m = np.nonzero(loc[:, 0] == gk)[0]
        if not len(m):
            continue
        ds = cube[g]
        groups[m] = g
        t, i, j = loc[m, 1], loc[m, 2], loc[m, 3]
        if is_grid(ds):
            import xarray as xr

            epsg = group_epsg(ds)
            f["time"][m] = ds.time.values[t]
            f["x"][m], f["y"][m] = ds.x.values[j], ds.y.values[i]
            f["epsg"][m] = epsg
            vf = ds.valid_fraction.isel(time=xr.DataArray(t, dims="p"), y=xr.DataArray(i, dims="p"),
                                        x=xr.DataArray(j, dims="p")).values
            f["valid_fraction"][m] = vf
            for tt in np.unique(t):
                mm = m[t == tt]
                f["item_id"][mm] = items.grid_items(g, int(tt), loc[mm, 2], loc[mm, 3])
            f["corners"][m] = chip_corners(epsg, f["x"][m], f["y"][m])
        else:
            sub = ds.isel(chip=i)
            f["time"][m] = sub.time.values
            f["x"][m], f["y"][m] = sub.x.values, sub.y.values
            f["epsg"][m] = sub.epsg.values
            f["item_id"][m] = [str(v) for v in sub.item_id.values]
            f["valid_fraction"][m] = sub.valid_fraction.values
            for code in np.unique(f["epsg"][m]):
                mm = m[f["epsg"][m] == code]
                f["corners"][mm] = chip_corners(int(code), f["x"][mm], f["y"][mm])
    return ChipBlock(group=groups, embedding=np.zeros((n, 0), np.float32), **f)


def candidates(k: int) -> int:
    """Chips the index scan keeps for the exact re-scoring: the float16 index reorders only
    chips whose scores differ by less than its rounding, so twice k suffices unless more than
    k chips tie with the k-th to that precision (then any of them is as good a k-th)."""
    return max(2 * k, k + 16)


def rerank(cube: CubeView, loc: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 cosine of the candidate chips from the cube's own vectors; the best ``k``
    (locator rows, scores), best first (ties: index order)."""
    import xarray as xr

    qn = q / np.linalg.norm(q)
    exact = np.full(len(loc), -np.inf, np.float32)
    for gk, g in enumerate(cube.groups):
        m = np.nonzero(loc[:, 0] == gk)[0]
        if not len(m):
            continue
        ds = undasked(cube, g)  # point reads straight from zarr: only the chunks touched
        if is_grid(ds):
            e = ds.embedding.isel(time=xr.DataArray(loc[m, 1], dims="p"),
                                  y=xr.DataArray(loc[m, 2], dims="p"),
                                  x=xr.DataArray(loc[m, 3], dims="p")).values
        else:
            e = ds.embedding.isel(chip=xr.DataArray(loc[m, 2], dims="p")).values
        e = np.asarray(e, np.float32)
        exact[m] = (e @ qn) / np.maximum(np.linalg.norm(e, axis=1), 1e-12)
    order = np.lexsort((np.arange(len(loc)), -exact))[:k]
    return loc[order], exact[order]


def _write_top(path: Path, block: ChipBlock, scores: np.ndarray, info: dict) -> None:
    schema = chip_schema(None, {"score": pa.float32(), "rank": pa.int32()})
    c = block.corners
    bbox = ([float(c[..., 0].min()), float(c[..., 1].min()), float(c[..., 0].max()), float(c[..., 1].max())]
            if len(block) else None)
    w = ChipParquetWriter(path, schema, kind="similar", info=info, bbox=bbox)
    try:
        w.write(block, {"score": scores.astype(np.float32),
                        "rank": np.arange(1, len(block) + 1, dtype=np.int32)})
        w.close()
    except BaseException:
        w.abort()
        raise


MAP_CHUNK = 512  # map chunks: 1 time x 512 x 512 chips


def _write_map(path: Path, cube: CubeView, index: SimIndex, scores: np.ndarray, info: dict) -> dict[str, np.ndarray]:
    """The similarity of every chip per group (NaN where no embedding), written as Zarr in
    one pass over the index's locator, chunk by chunk: memory holds one (y, x) plane per
    grid group, never the (time, y, x) map. Returns, per group, what the PNG shows: the
    maximum over time (grid) or each chip's score (table)."""
    import dask.array as da
    import xarray as xr
    import zarr

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        arrays, shown = {}, {}
        desc = "cosine similarity of the chip's embedding to the query; NaN: no embedding"
        for g in cube.groups:
            ds = cube[g]
            if is_grid(ds):
                shape = (ds.sizes["time"], ds.sizes["y"], ds.sizes["x"])
                chunks = (1, min(shape[1], MAP_CHUNK), min(shape[2], MAP_CHUNK))
                out = xr.Dataset({"similarity": (("time", "y", "x"),
                                                 da.full(shape, np.nan, np.float32, chunks=chunks))},
                                 coords={"time": ds.time.values, "y": ds.y.values, "x": ds.x.values})
                out = out.rio.write_crs(group_epsg(ds))
                out["similarity"].attrs["coordinates"] = "spatial_ref"
                shown[g] = np.full(shape[1:], np.nan, np.float32)
            else:
                # the chip index of the cube's table; its item ids stay in the cube
                shape = (ds.sizes["chip"],)
                chunks = (min(shape[0], MAP_CHUNK * MAP_CHUNK),)
                coords = {c: ("chip", ds[c].values) for c in ("x", "y", "lat", "lon", "epsg", "time")}
                out = xr.Dataset({"similarity": (("chip",), da.full(shape, np.nan, np.float32, chunks=chunks))},
                                 coords=coords)
                shown[g] = np.full(shape, np.nan, np.float32)
            out["similarity"].attrs.update(description=desc, units="1")
            out.attrs.update({"group": g, "query": json.dumps(info["query"]), "cube": info["cube"]})
            out.to_zarr(str(tmp), group=g, mode="w", compute=False, consolidated=False, zarr_format=3,
                        encoding={"similarity": {"chunks": chunks}})
            arrays[g] = zarr.open_array(str(tmp), path=f"{g}/similarity", mode="r+")
        step = 1 << 20
        with open(index.chips, "rb") as f:
            for off in range(0, index.n, step):
                loc = np.frombuffer(f.read(min(step, index.n - off) * 16), "<i4").reshape(-1, 4)
                sc = scores[off:off + len(loc)].astype(np.float32)
                for gk, g in enumerate(cube.groups):
                    m = loc[:, 0] == gk
                    if not m.any():
                        continue
                    if shown[g].ndim == 2:
                        t, i, j = loc[m, 1], loc[m, 2], loc[m, 3]
                        arrays[g].vindex[t, i, j] = sc[m]
                        np.fmax.at(shown[g], (i, j), sc[m])
                    else:
                        arrays[g].vindex[loc[m, 2]] = sc[m]
                        shown[g][loc[m, 2]] = sc[m]
        root = zarr.open_group(str(tmp), mode="r+")
        root.attrs.update({OUTPUT_KEY: MAP_KIND, "groups": list(cube.groups), **info})
        import warnings

        with warnings.catch_warnings():  # "not part of the Zarr format 3 specification" (yet)
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(str(tmp))  # plain xr.open_zarr(group=...) opens quietly
        publish(tmp, path)  # replaces a geomoe map beside a geomoe result (checked first)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return shown


def _coarsen_max(img: np.ndarray, most: int = 1000) -> tuple[np.ndarray, int]:
    """Block maximum down to at most ``most`` pixels a side (the figure has far fewer):
    keeps the PNG's memory and time small on continental maps; returns (image, factor)."""
    f = max(1, -(-max(img.shape) // most))
    if f == 1:
        return img, 1
    h, w = -(-img.shape[0] // f) * f, -(-img.shape[1] // f) * f
    pad = np.full((h, w), np.nan, np.float32)
    pad[: img.shape[0], : img.shape[1]] = img
    blocks = pad.reshape(h // f, f, w // f, f)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
            return np.nanmax(blocks, axis=(1, 3)), f


def _plot(png: Path, cube: CubeView, maps: dict[str, np.ndarray], where: list[dict],
          top: ChipBlock, k: int) -> None:
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    groups = list(cube.groups)
    rng = np.random.default_rng(0)
    finite = [m[np.isfinite(m)] for m in maps.values()]
    finite = np.concatenate([v if len(v) <= 1_000_000 else rng.choice(v, 1_000_000, replace=False)
                             for v in finite] + [np.zeros(0, np.float32)])
    lo = float(np.percentile(finite, 2)) if len(finite) else -1.0
    hi = max([float(np.max(m[np.isfinite(m)])) for m in maps.values() if np.isfinite(m).any()] or [1.0])
    if not hi > lo:
        lo, hi = lo - 0.01, hi + 0.01  # a constant map still gets a colour scale
    fig = Figure(figsize=(5.5 * len(groups), 5))
    axes = fig.subplots(1, len(groups), squeeze=False)
    gper = np.asarray(top.group)
    for ax, g in zip(axes[0], groups):
        ds, m = cube[g], maps[g]
        if is_grid(ds):
            img, f = _coarsen_max(m)
            x, y = ds.x.values, ds.y.values
            ext = (x[0] - 600, x[-1] + 600, y[-1] - 600, y[0] + 600)
            im = ax.imshow(img, extent=ext, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            sel = gper == g
            ax.scatter(top.x[sel], top.y[sel], s=30, facecolors="none", edgecolors="orange",
                       linewidths=1.2, marker="s", label=f"top {k}")
            for w in where:
                if w["group"] == g:
                    ax.scatter(x[w["x"]], y[w["y"]], s=90, marker="+" if w["role"] == "positive" else "x",
                               c="red" if w["role"] == "negative" else "white", linewidths=2,
                               label=w["role"])
            ax.locator_params(axis="x", nbins=4)  # UTM metres: long tick labels
            ax.set_xlabel(f"x (m, EPSG:{group_epsg(ds)})")
            ax.set_ylabel("y (m)")
            ax.set_title(f"{g}: max over {ds.sizes['time']} time slice(s)"
                         + (f"\n(max of {f} x {f} chips per pixel)" if f > 1 else ""))
        else:
            im = ax.scatter(ds.lon.values, ds.lat.values, c=m, cmap="viridis", vmin=lo, vmax=hi, s=25)
            ax.set_xlabel("lon")
            ax.set_ylabel("lat")
            ax.set_title(f"{g}: chips")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            uniq = dict(zip(labels, handles))
            ax.legend(uniq.values(), uniq.keys(), loc="lower right", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity (2nd percentile to max)")
    fig.suptitle(f"similarity to the query: {cube.path.name}")
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))


def similar(cube: str | os.PathLike, at: Sequence[Any] | None = None, *,
            negative: Sequence[Any] | None = None, examples: str | os.PathLike | None = None,
            k: int = 100, out: str | os.PathLike, index: str | os.PathLike | None = None,
            rebuild_index: bool = False, overwrite: bool = False) -> SimilarResult:
    """Find the chips of a cube most similar to example points.

    Parameters
    ----------
    cube : str or PathLike
        A geomoe cube.
    at : sequence of "LON,LAT" or (lon, lat), optional
        Positive examples (degrees, EPSG:4326); each takes the chip containing it, at every
        embedded time, in every group.
    negative : sequence of "LON,LAT" or (lon, lat), optional
        Negative examples: their mean unit embedding is subtracted from the positives'.
    examples : str or PathLike, optional
        A vector file of example points (any CRS); a ``negative`` column marks negatives.
    k : int
        Rows in the result (best first).
    out : str or PathLike
        ``TOP.parquet``; ``TOP.zarr`` (map) and ``TOP.png`` are written beside it.
    index : str or PathLike, optional
        Where the similarity index is kept (default ``<cube>.simindex`` beside the cube);
        built on first use and whenever the cube changed.
    rebuild_index : bool
        Build the index again even when it looks current.
    overwrite : bool
        Replace an earlier geomoe result at ``out`` (foreign files are never replaced).

    Returns
    -------
    SimilarResult
        Paths, the number of chips scanned, the best score and timings (s).

    Raises
    ------
    geomoe.evaluate.cubechips.PointError
        A point is outside the cube or on a chip without an embedding (names the point).
    """
    t0 = time.perf_counter()
    if int(k) < 1:
        raise GeomoeError(f"--k must be at least 1, not {k}")
    outp = Path(out)
    check_outputs(outp, overwrite=overwrite)
    view = open_cube(cube)
    pos, neg = _points(at), _points(negative)
    if examples is not None:
        ep, en = read_examples(examples)
        pos, neg = pos + ep, neg + en
    q, where = query_vector(view, pos, neg)
    t_query = time.perf_counter()
    idx, built = open_index(view, Path(index) if index is not None else None, rebuild=rebuild_index)
    if idx.n == 0:
        raise GeomoeError(f"cube {view.path} holds no embedded chip to search")
    t_index = time.perf_counter()
    rows, _, scores = scan(idx, q, candidates(int(k)))
    t_scan = time.perf_counter()
    loc = idx.locate(rows)
    loc, top_scores = rerank(view, loc, q, int(k))
    t_search = time.perf_counter()
    top = _top_block(view, loc, ItemLookup(view))
    info = {"cube": str(view.path.resolve()), "k": int(k), "n_chips": idx.n,
            "query": {"positive": [list(p) for p in pos], "negative": [list(p) for p in neg],
                      "rule": "mean positive unit embedding minus mean negative unit embedding"}}
    _, zmap, png = out_paths(outp)
    _write_top(outp, top, top_scores, info)
    maps = _write_map(zmap, view, idx, scores, info)
    _plot(png, view, maps, where, top, int(k))
    t_end = time.perf_counter()
    return SimilarResult(outp, zmap, png, len(loc), idx.n, float(top_scores[0]), idx.path, built,
                         {"query": t_query - t0, "index": t_index - t_query, "scan": t_scan - t_index,
                          "search": t_search - t_index, "outputs": t_end - t_search, "total": t_end - t0})
