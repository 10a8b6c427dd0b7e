"""Labels from any vector file, matched to the chips of an embedding cube.

Rules (documented in docs/analysis.md, "Probes on your labels"):

- The file is anything geopandas reads (GeoPackage, GeoParquet, GeoJSON, Shapefile, ...), in
  any CRS (it must declare one); it is reprojected to each cube group's CRS.
- A **point** takes the chip that contains it (a chip is the 1200 m square around its centre).
- A **polygon** takes, by ``polygon_rule``, the chips it **covers** entirely (``covers``, the
  default: no mixed edge chips) or the chips whose **centre** it holds (``centre``).
- A label column holding lists makes the probe multi-label: list values (GeoParquet,
  GeoJSON arrays), JSON-array text (how GeoPackage and GDAL store string lists, e.g.
  ``["Arable land", "Pastures"]``), or text split by ``separator``. Otherwise each label is
  one class (multi-class).
- Nothing is dropped silently: every feature is either used or counted under one reason of
  :data:`DROP_REASONS`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geomoe.chips.grid import CHIP_METERS
from geomoe.errors import GeomoeError
from geomoe.evaluate import cube_access as ca

POLYGON_RULES = ("covers", "centre")

#: Why a label feature was not used, in the order the checks run.
DROP_REASONS = {
    "empty_class": "the label column is empty (null, blank or an empty list)",
    "no_geometry": "the feature has no (or an empty) geometry",
    "unsupported_geometry": "not a point or polygon (lines are not labels of chips)",
    "outside_cube": "no chip of the cube under it (outside every group, or a polygon too "
                    "small to cover a chip / hold a chip centre under the polygon rule)",
    "no_valid_chip": "its chips hold no embedding at the chosen time: never computed, "
                     "skipped for cloud or fill, or not observed in the --time window",
    "conflicting_classes": "each of its chips is also claimed by a label of another class "
                           "(multi-class only)",
    "class_too_rare": "its class has fewer than 2 chips: it cannot be cross-validated",
}


class LabelFileError(GeomoeError):
    """The labels file cannot be used as given (missing, no CRS, no such column...)."""


@dataclass
class LabelledChips:
    """The labelled chips of a cube and the account of every label feature.

    Attributes
    ----------
    x : (N, D) float32
        Embeddings of the labelled chips (composite over the time window).
    y : (N,) int or (N, C) int8
        Class index (multi-class) or 0/1 per class (multi-label).
    classes : list of str
    multilabel : bool
    group, row, col : (N,) arrays
        Where each chip is: group name; grid row/col, or table chip index and col -1.
    cx, cy : (N,) float
        Chip centre in metres of its group's (table: its own) CRS; used for spatial blocks.
    epsg : (N,) int
    lon, lat : (N,) float
    n_features : int
        Features in the file.
    used : int
        Features that labelled at least one chip.
    dropped : dict
        reason -> number of features (every reason of DROP_REASONS, zeros included).
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    multilabel: bool
    group: np.ndarray
    row: np.ndarray
    col: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    epsg: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    n_features: int = 0
    used: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


def read_labels(path: str | Path, column: str):
    """The labels file as a GeoDataFrame (with a CRS and ``column``)."""
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise LabelFileError(f"--labels {p} does not exist: pass a vector file geopandas reads "
                             "(GeoPackage, GeoParquet, GeoJSON, Shapefile)")
    try:
        if p.suffix.lower() in (".parquet", ".geoparquet"):
            gdf = gpd.read_parquet(p)
        else:
            gdf = gpd.read_file(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise LabelFileError(f"--labels {p} cannot be read as a vector file ({exc}); use a "
                             "GeoPackage, GeoParquet, GeoJSON or Shapefile") from None
    if column not in gdf.columns or column == gdf.geometry.name:
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        raise LabelFileError(f"--label-column {column!r} is not a column of {p}; its columns "
                             f"are: {', '.join(map(str, cols)) or '(none)'}")
    if gdf.crs is None:
        raise LabelFileError(f"{p} declares no CRS: set one (e.g. gdf.set_crs('EPSG:4326') "
                             "and save again) so its coordinates can be matched to the cube")
    return gdf


def _json_list(v: str) -> list | None:
    """``'["a", "b"]'`` -> ["a", "b"]; anything else -> None."""
    t = v.strip()
    if not (t.startswith("[") and t.endswith("]")):
        return None
    try:
        got = json.loads(t)
    except ValueError:
        return None
    return got if isinstance(got, list) else None


def _parse_values(values: Any, separator: str | None) -> tuple[list[list[str]], bool]:
    """Each feature's classes, and whether the column is multi-label."""
    out: list[list[str]] = []
    multilabel = separator is not None
    for v in values:
        if isinstance(v, str) and separator is None and _json_list(v) is not None:
            v = _json_list(v)
        if isinstance(v, (list, tuple, np.ndarray)):
            multilabel = True
            items = [str(a).strip() for a in v if a is not None and str(a).strip()]
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            items = []
        else:
            s = str(v).strip()
            if separator is not None:
                items = [a.strip() for a in s.split(separator) if a.strip()]
            else:
                items = [s] if s else []
        out.append(items)
    return out, multilabel


def _grid_hits(ds: Any, geoms: Any, rule: str) -> list[list[tuple[int, int]]]:
    """(row, col) of the chips each geometry labels on one grid group."""
    import shapely

    xs, ys = ds["x"].values, ds["y"].values
    size = float(ds.attrs.get("chip_meters", CHIP_METERS))
    left, top = xs[0] - size / 2, ys[0] + size / 2
    nx, ny = len(xs), len(ys)
    hits: list[list[tuple[int, int]]] = []
    for g in geoms:
        if g.geom_type in ("Point", "MultiPoint"):
            pts = shapely.get_coordinates(g)
            c = np.floor((pts[:, 0] - left) / size).astype(np.int64)
            r = np.floor((top - pts[:, 1]) / size).astype(np.int64)
            ok = (c >= 0) & (c < nx) & (r >= 0) & (r < ny)
            hits.append(sorted(set(zip(r[ok].tolist(), c[ok].tolist()))))
            continue
        x0, y0, x1, y1 = g.bounds
        c0, c1 = max(0, int(np.floor((x0 - left) / size))), min(nx - 1, int(np.floor((x1 - left) / size)))
        r0, r1 = max(0, int(np.floor((top - y1) / size))), min(ny - 1, int(np.floor((top - y0) / size)))
        if c0 > c1 or r0 > r1:
            hits.append([])
            continue
        rr, cc = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        cxs, cys = xs[cc], ys[rr]
        inside = _polygon_rule(g, cxs, cys, size, rule)
        hits.append(list(zip(rr[inside].tolist(), cc[inside].tolist())))
    return hits


def _polygon_rule(g: Any, cx: np.ndarray, cy: np.ndarray, size: float, rule: str) -> np.ndarray:
    import shapely

    if rule == "centre":
        return shapely.contains_xy(g, cx, cy)
    h = size / 2
    boxes = shapely.box(cx - h, cy - h, cx + h, cy + h)
    shapely.prepare(g)
    return shapely.covers(g, boxes)


def _table_hits(cx: np.ndarray, cy: np.ndarray, geoms: Any, rule: str,
                size: float) -> list[list[int]]:
    """Indices into (cx, cy) of the table chips each geometry labels (one CRS)."""
    import shapely

    h = size / 2
    hits: list[list[int]] = []
    for g in geoms:
        if g.geom_type in ("Point", "MultiPoint"):
            got: set[int] = set()
            for px, py in shapely.get_coordinates(g):
                d = np.maximum(np.abs(cx - px), np.abs(cy - py))
                k = int(np.argmin(d)) if len(d) else -1
                if k >= 0 and d[k] <= h:
                    got.add(k)
            hits.append(sorted(got))
            continue
        x0, y0, x1, y1 = g.bounds
        cand = np.flatnonzero((cx + h >= x0) & (cx - h <= x1) & (cy + h >= y0) & (cy - h <= y1))
        inside = _polygon_rule(g, cx[cand], cy[cand], size, rule) if len(cand) else np.zeros(0, bool)
        hits.append(cand[inside].tolist())
    return hits


def label_chips(cube: Any, labels: str | Path, column: str, *, time: str | None = None,
                polygon_rule: str = "covers", separator: str | None = None) -> LabelledChips:
    """Match the features of a vector file to the cube's chips and read their embeddings.

    Parameters
    ----------
    cube : CubeView
        From :func:`geomoe.open_cube`.
    labels : str or Path
        Vector file (any CRS; points or polygons).
    column : str
        The label column: a class name per feature, or a list of classes (multi-label).
    time : str, optional
        Date window of grid groups (see :mod:`geomoe.evaluate.cube_access`); table chips are
        kept when acquired in it. None: every date (composite where a chip has several).
    polygon_rule : {"covers", "centre"}
        Chips a polygon labels: those it covers entirely, or those whose centre it holds.
    separator : str, optional
        Split string labels on it (multi-label from a text column, e.g. ``";"``).

    Returns
    -------
    LabelledChips
        One row per labelled chip (N of them), and the account of every feature.
    """
    import shapely

    if polygon_rule not in POLYGON_RULES:
        raise LabelFileError(f"unknown polygon rule {polygon_rule!r}: choose covers or centre")
    window = ca.parse_window(time) if time else None
    gdf = read_labels(labels, column)
    n = len(gdf)
    classes_of, multilabel = _parse_values(gdf[column].tolist(), separator)
    reason: list[str | None] = [None] * n
    geoms = gdf.geometry.values
    for k in range(n):
        g = geoms[k]
        if not classes_of[k]:
            reason[k] = "empty_class"
        elif g is None or shapely.is_empty(g):
            reason[k] = "no_geometry"
        elif g.geom_type not in ("Point", "MultiPoint", "Polygon", "MultiPolygon"):
            reason[k] = "unsupported_geometry"
    live = [k for k in range(n) if reason[k] is None]

    # chip key -> feature indices; key = (group, row, col); table chips: (group, idx, -1)
    chips_of: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    times_ok = False
    for gname in cube.groups:
        ds = cube[gname]
        sub = gdf.iloc[live]
        if ds.embedding.dims[0] == "time":
            tidx = ca.time_index(ds, window)
            times_ok |= len(tidx) > 0
            proj = sub.to_crs(ds.rio.crs).geometry.values
            for k, hit in zip(live, _grid_hits(ds, proj, polygon_rule)):
                chips_of[k] += [(gname, r, c) for r, c in hit]
        else:
            times_ok |= bool(ca.table_selection(ds, window).any())
            epsg = ds["epsg"].values
            size = float(ds.attrs.get("chip_meters", CHIP_METERS))
            for e in np.unique(epsg):
                idx = np.flatnonzero(epsg == e)
                cx, cy = ds["x"].values[idx], ds["y"].values[idx]
                ok = np.isfinite(cx) & np.isfinite(cy)
                idx, cx, cy = idx[ok], cx[ok], cy[ok]
                proj = sub.to_crs(int(e)).geometry.values
                for k, hit in zip(live, _table_hits(cx, cy, proj, polygon_rule, size)):
                    chips_of[k] += [(gname, int(idx[h]), -1) for h in hit]
    if window is not None and not times_ok:
        raise ca.WindowError(f"--time {time}: the cube has no observation in that window; its "
                             f"dates are {ca.describe_times(cube)}")
    for k in live:
        if not chips_of.get(k):
            reason[k] = "outside_cube"

    # embeddings of every touched chip; NaN ones do not count
    keys = sorted({key for k in range(n) if reason[k] is None for key in chips_of[k]})
    emb = _read_chips(cube, keys, window)
    valid = {key: bool(np.isfinite(e).all()) for key, e in zip(keys, emb)}
    row_of = {key: i for i, key in enumerate(keys)}
    for k in range(n):
        if reason[k] is None:
            chips_of[k] = [key for key in chips_of[k] if valid[key]]
            if not chips_of[k]:
                reason[k] = "no_valid_chip"

    # classes per chip
    chip_classes: dict[tuple, set[str]] = defaultdict(set)
    chip_feats: dict[tuple, set[int]] = defaultdict(set)
    for k in range(n):
        if reason[k] is None:
            for key in chips_of[k]:
                chip_classes[key].update(classes_of[k])
                chip_feats[key].add(k)
    if not multilabel:
        bad = {key for key, cs in chip_classes.items() if len(cs) > 1}
        for k in range(n):
            if reason[k] is None and all(key in bad for key in chips_of[k]):
                reason[k] = "conflicting_classes"
        for key in bad:
            del chip_classes[key]
        # classes with fewer than 2 chips cannot be cross-validated
        count: dict[str, int] = defaultdict(int)
        for cs in chip_classes.values():
            count[next(iter(cs))] += 1
        rare = {c for c, m in count.items() if m < 2}
        for k in range(n):
            if reason[k] is None and classes_of[k][0] in rare:
                reason[k] = "class_too_rare"
        chip_classes = {key: cs for key, cs in chip_classes.items() if not cs & rare}
    used = sum(1 for r in reason if r is None)
    dropped = {r: sum(1 for x in reason if x == r) for r in DROP_REASONS}

    chip_keys = sorted(chip_classes)
    classes = sorted({c for cs in chip_classes.values() for c in cs})
    cidx = {c: i for i, c in enumerate(classes)}
    if multilabel:
        y = np.zeros((len(chip_keys), len(classes)), np.int8)
        for i, key in enumerate(chip_keys):
            y[i, [cidx[c] for c in chip_classes[key]]] = 1
    else:
        y = np.asarray([cidx[next(iter(chip_classes[key]))] for key in chip_keys], dtype=np.int64)
    x = (emb[[row_of[key] for key in chip_keys]] if chip_keys
         else np.zeros((0, cube[cube.groups[0]].sizes["dim"]), np.float32))
    loc = _locate(cube, chip_keys)
    return LabelledChips(x=x.astype(np.float32), y=y, classes=classes, multilabel=multilabel,
                         group=np.asarray([k[0] for k in chip_keys], dtype=object),
                         row=np.asarray([k[1] for k in chip_keys], dtype=np.int64),
                         col=np.asarray([k[2] for k in chip_keys], dtype=np.int64),
                         **loc, n_features=n, used=used, dropped=dropped)



def _positions_by_group(keys: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    """Positions in ``keys`` (group, row, col) of each group's chips, in order."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_group[key[0]].append(i)
    return {g: np.asarray(ii) for g, ii in by_group.items()}

def _read_chips(cube: Any, keys: list[tuple[str, int, int]], window: Any) -> np.ndarray:
    """Embeddings (K, D) of chip keys, in order (table chips outside the window are NaN)."""
    if not keys:
        return np.zeros((0, 0), np.float32)
    dim = cube[keys[0][0]].sizes["dim"]
    out = np.full((len(keys), dim), np.nan, np.float32)
    for gname, ii in _positions_by_group(keys).items():
        ds = cube[gname]
        rows = np.asarray([keys[i][1] for i in ii])
        if ds.embedding.dims[0] == "time":
            cols = np.asarray([keys[i][2] for i in ii])
            out[ii] = ca.read_grid_points(ds, ca.time_index(ds, window), rows, cols)
        else:
            e = ca.read_table(ds, rows)
            e[~ca.table_selection(ds, window)[rows]] = np.nan
            out[ii] = e
    return out


def _locate(cube: Any, keys: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    """Centre (metres, own CRS), EPSG and lon/lat of each chip key."""
    m = len(keys)
    out = {k: np.full(m, np.nan) for k in ("cx", "cy", "lon", "lat")}
    out["epsg"] = np.zeros(m, np.int64)
    for gname, ii in _positions_by_group(keys).items():
        ds = cube[gname]
        r = np.asarray([keys[i][1] for i in ii])
        c = np.asarray([keys[i][2] for i in ii])
        if ds.embedding.dims[0] == "time":
            out["cx"][ii], out["cy"][ii] = ds["x"].values[c], ds["y"].values[r]
            out["lon"][ii], out["lat"][ii] = ds["lon"].values[r, c], ds["lat"].values[r, c]
            out["epsg"][ii] = int(ds.rio.crs.to_epsg())
        else:
            out["cx"][ii], out["cy"][ii] = ds["x"].values[r], ds["y"].values[r]
            out["lon"][ii], out["lat"][ii] = ds["lon"].values[r], ds["lat"].values[r]
            out["epsg"][ii] = ds["epsg"].values[r]
    return out
