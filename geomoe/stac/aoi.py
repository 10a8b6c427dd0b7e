"""Areas of interest: any GeoJSON a user has, as one shapely geometry in WGS84 longitude/latitude.

Accepts the name of a bundled AOI (``"europe"``, ``"liverpool"``: see
`geomoe.resources.aoi_names`), a path, an http(s) URL, an inline GeoJSON string, a dict, or a
shapely geometry; a Geometry, Feature or FeatureCollection; and honours a declared CRS (the
legacy GeoJSON 2008 `crs` member, which QGIS/GDAL still write for EPSG:3857 or UTM files).
Polygons that cross the antimeridian come back split at +-180 deg as a MultiPolygon (RFC 7946
section 3.1.9), so that both STAC APIs and local intersection tests see the small area the user
meant rather than a band around the globe.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from geomoe.errors import AOIError

AOISource = str | Path | dict | BaseGeometry

_WGS84_NAMES = {
    "urn:ogc:def:crs:ogc:1.3:crs84", "crs84", "ogc:crs84", "epsg:4326",
    "urn:ogc:def:crs:epsg::4326", "http://www.opengis.net/def/crs/ogc/1.3/crs84",
}
_FIX_VALID = ("fix it in QGIS (Vector > Geometry Tools > Fix Geometries) or with "
              "shapely.make_valid, then pass the repaired file")


def load_aoi(src: AOISource, *, timeout: float = 20.0, area: bool = False) -> BaseGeometry:
    """Read an area of interest as a valid shapely geometry in EPSG:4326.

    Parameters
    ----------
    src : str, Path, dict or shapely geometry
        GeoJSON file, http(s) URL, inline GeoJSON text or dict (Geometry, Feature or
        FeatureCollection), or a geometry. Coordinates in another CRS are reprojected when the
        GeoJSON names it (``crs`` member); a geometry crossing the antimeridian is split.
    timeout : float
        Seconds to wait for a URL.
    area : bool
        Also refuse points and lines, which have no area (embedding and pretraining need chips
        inside the AOI; a catalog search may use them).

    Returns
    -------
    shapely.geometry.base.BaseGeometry
        Valid and non-empty, coordinates (lon, lat) in degrees.

    Raises
    ------
    geomoe.errors.AOIError
        Names what is wrong (unreadable file, invalid JSON, not GeoJSON, unknown CRS, empty or
        self-intersecting geometry, coordinates out of range) and how to fix it.
    """
    if isinstance(src, BaseGeometry):
        label, geom = "the shapely geometry", src
    else:
        label, obj = _read(src, timeout)
        geom, crs = _parse(obj, label)
        if crs is not None and not _is_wgs84(crs):
            geom = _to_wgs84(geom, crs, label)
    out = _finish(geom, label)
    if area and out.area == 0:
        raise AOIError(
            f"{label} is a {out.geom_type}, which has no area, so no chip lies inside it: pass a "
            "GeoJSON Polygon, or buffer the point/line in metres first: project it to its UTM "
            "zone (EPSG:326NN north, 327NN south) with pyproj, shapely .buffer(2000) for 2 km, "
            "project back to EPSG:4326 and save that polygon as GeoJSON")
    return out


# ----------------------------------------------------------------------------- reading


def _read(src: str | Path | dict, timeout: float) -> tuple[str, Any]:
    if isinstance(src, dict):
        return "the GeoJSON dict", src
    text: str
    if isinstance(src, Path):
        label, text = _read_file(src)
    elif isinstance(src, str):
        stripped = src.strip()
        if stripped.startswith(("{", "[")):
            label, text = "the inline GeoJSON", stripped
        elif stripped.lower().startswith(("http://", "https://")):
            label, text = stripped, _read_url(stripped, timeout)
        else:
            label, text = _read_path_or_name(stripped)
    else:
        raise AOIError(f"AOI must be a path, URL, GeoJSON string or dict, not {type(src).__name__}")
    try:
        return label, json.loads(text)
    except json.JSONDecodeError as exc:
        raise AOIError(
            f"{label} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
            "pass a GeoJSON Geometry, Feature or FeatureCollection"
        ) from None


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _read_path_or_name(text: str) -> tuple[str, str]:
    """A file path, or a bare name (no folder, no suffix) of a bundled AOI when no such file exists."""
    path = Path(text).expanduser()
    if path.exists() or not _NAME.fullmatch(text):
        return _read_file(path)
    from geomoe.resources import aoi_names, bundled_aoi

    named = bundled_aoi(text)
    if named is None:
        raise AOIError(f"AOI {text!r} is neither a file (relative paths are relative to "
                       f"{Path.cwd()}) nor a bundled AOI ({', '.join(aoi_names())}): pass a "
                       "GeoJSON file, URL or one of those names")
    return f"the bundled AOI {text!r}", _read_file(named)[1]


def _read_file(path: Path) -> tuple[str, str]:
    if not path.exists():
        raise AOIError(f"AOI file {path} does not exist: check the path (relative paths are "
                       f"relative to {Path.cwd()})")
    if path.is_dir():
        raise AOIError(f"AOI {path} is a folder: pass a .geojson file")
    try:
        return str(path), path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AOIError(f"cannot read AOI file {path} ({exc}): pass a UTF-8 GeoJSON file") from None


def _read_url(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
            return resp.read().decode("utf-8")
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        raise AOIError(f"cannot download AOI from {url} ({exc}): check the URL, or save the "
                       "file and pass its path") from None


# ----------------------------------------------------------------------------- parsing

_GEOM_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
               "MultiPolygon", "GeometryCollection"}


def _parse(obj: Any, label: str) -> tuple[BaseGeometry, CRS | None]:
    if not isinstance(obj, dict) or "type" not in obj:
        raise AOIError(f"{label} is not GeoJSON (no 'type' member): pass a Geometry, Feature or "
                       "FeatureCollection")
    crs = _declared_crs(obj, label)
    kind = obj["type"]
    if kind == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list) or not feats:
            raise AOIError(f"{label} is a FeatureCollection with no features: add at least one "
                           "polygon feature")
        geoms = [_geometry(f, label, i) for i, f in enumerate(feats)]
        for i, f in enumerate(feats):  # per-feature crs members are legacy too; honour if equal
            fc = _declared_crs(f, label) if isinstance(f, dict) else None
            if fc is not None and crs is not None and fc != crs:
                raise AOIError(f"{label}: feature {i} declares a different CRS from the "
                               "collection: reproject to one CRS")
            crs = crs or fc
        geom = shapely.union_all(geoms) if len(geoms) > 1 else geoms[0]
        return geom, crs
    if kind == "Feature":
        return _geometry(obj, label, None), crs
    if kind in _GEOM_TYPES:
        return _shape(obj, label), crs
    raise AOIError(f"{label} has GeoJSON type {kind!r}: expected a Geometry, Feature or "
                   "FeatureCollection")


def _geometry(feature: Any, label: str, index: int | None) -> BaseGeometry:
    where = label if index is None else f"{label} (feature {index})"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise AOIError(f"{where} is not a GeoJSON Feature: each member of 'features' needs "
                       "type 'Feature' and a 'geometry'")
    geom = feature.get("geometry")
    if not geom:
        raise AOIError(f"{where} has no geometry (null): draw a polygon for the area")
    return _shape(geom, where)


def _shape(obj: Any, label: str) -> BaseGeometry:
    if not isinstance(obj, dict) or obj.get("type") not in _GEOM_TYPES:
        raise AOIError(f"{label}: geometry type {obj.get('type') if isinstance(obj, dict) else obj!r} "
                       f"is not a GeoJSON geometry ({', '.join(sorted(_GEOM_TYPES))})")
    try:
        geom = shape(obj)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise AOIError(f"{label}: malformed {obj.get('type')} coordinates ({exc}): polygons "
                       "need closed rings of [x, y] pairs, at least 4 positions each") from None
    return geom


def _declared_crs(obj: dict, label: str) -> CRS | None:
    """The legacy `crs` member ({"type": "name", "properties": {"name": ...}}) as a pyproj CRS."""
    member = obj.get("crs")
    if member is None:
        return None
    name: Any = None
    if isinstance(member, dict):
        props = member.get("properties") or {}
        if member.get("type") == "name":
            name = props.get("name")
        elif member.get("type", "").upper() == "EPSG":
            name = f"EPSG:{props.get('code')}"
        elif member.get("type") in ("link", "url"):
            name = props.get("href")
    elif isinstance(member, str):
        name = member
    if not name:
        raise AOIError(f"{label} has a 'crs' member I cannot read ({member!r}): use "
                       '{"type": "name", "properties": {"name": "EPSG:<code>"}} or reproject to '
                       "EPSG:4326 and drop it")
    if str(name).strip().lower() in _WGS84_NAMES:
        return CRS.from_epsg(4326)
    try:
        return CRS.from_user_input(name)
    except CRSError:
        raise AOIError(f"{label} declares an unknown CRS {name!r}: use an EPSG code such as "
                       "'EPSG:32630' or 'urn:ogc:def:crs:EPSG::3857', or reproject to EPSG:4326"
                       ) from None


def _is_wgs84(crs: CRS) -> bool:
    return crs.to_epsg() == 4326 or crs.equals(CRS.from_user_input("OGC:CRS84"))


def _to_wgs84(geom: BaseGeometry, crs: CRS, label: str) -> BaseGeometry:
    """Reproject, densifying edges first so long straight edges stay straight on the ground."""
    try:
        tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    except CRSError as exc:
        raise AOIError(f"{label}: cannot reproject from {crs.name} to EPSG:4326 ({exc}): "
                       "reproject the file to EPSG:4326") from None
    if crs.is_projected:
        minx, miny, maxx, maxy = geom.bounds
        step = max(maxx - minx, maxy - miny) / 50 or 1.0
        geom = shapely.segmentize(geom, step)
    def project(c: np.ndarray) -> np.ndarray:
        x, y = tr.transform(c[:, 0], c[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(geom, project)
    if not out.is_empty:
        coords = shapely.get_coordinates(out)
        if not (abs(coords).max() < 1e30):
            raise AOIError(f"{label}: coordinates fall outside the area of use of {crs.name}: "
                           "check that the declared CRS is the one the coordinates are in")
    return out


# ----------------------------------------------------------------------------- checks


def _finish(geom: BaseGeometry, label: str) -> BaseGeometry:
    if geom.is_empty:
        raise AOIError(f"{label} has an empty geometry: draw at least one polygon")
    coords = shapely.get_coordinates(geom)
    lat_ok = (abs(coords[:, 1]) <= 90.0).all()
    lon_ok = (coords[:, 0] >= -360.0).all() and (coords[:, 0] <= 360.0).all()
    if not (lat_ok and lon_ok):
        raise AOIError(
            f"{label} has coordinates outside longitude/latitude range (e.g. "
            f"{coords[0].tolist()}): they look projected (metres). Declare the CRS with a 'crs' "
            'member ({"type": "name", "properties": {"name": "EPSG:<code>"}}) or reproject the '
            "file to EPSG:4326"
        )
    # unwrap first: a valid polygon across 180 deg looks self-intersecting in plain lon/lat
    out = split_antimeridian(geom)
    if not out.is_valid:
        raise AOIError(f"{label} is not a valid geometry ({explain_validity(out)}), e.g. a "
                       f"self-intersecting (bow-tie) polygon: {_FIX_VALID}")
    if out.is_empty:
        raise AOIError(f"{label} has an empty geometry: draw at least one polygon")
    return out


def split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """Return `geom` with longitudes in [-180, 180], polygons that cross 180 deg split in two.

    A ring crosses the antimeridian when two consecutive vertices are more than 180 deg of
    longitude apart (e.g. 170 -> -170) or when longitudes run past 180 (e.g. 170..190). Such rings
    are unwrapped to a continuous longitude range, then cut at 180 deg and shifted back.
    """
    if geom.geom_type == "GeometryCollection":
        return shapely.union_all([split_antimeridian(g) for g in geom.geoms])
    if geom.geom_type == "MultiPolygon":
        parts = [split_antimeridian(p) for p in geom.geoms]
        return geom if all(a is b for a, b in zip(parts, geom.geoms)) else _multi(parts)
    if geom.geom_type != "Polygon":
        return _wrap_lons(geom)
    shell = _unwrap(list(geom.exterior.coords))
    lons = [x for x, _ in shell]
    if min(lons) >= -180.0 and max(lons) <= 180.0 and shell == list(geom.exterior.coords):
        return geom
    holes = [_unwrap(list(r.coords), ref=shell[0][0]) for r in geom.interiors]
    poly = Polygon(shell, holes)
    if not poly.is_valid:
        return poly  # the caller reports it as invalid (self-intersection) with the fix
    return _cut_and_wrap(poly)


def _unwrap(ring: list[tuple[float, ...]], ref: float | None = None) -> list[tuple[float, float]]:
    out = []
    prev = ref
    shift = 0.0
    prev_raw = None
    for x, y, *_ in ring:
        on_seam = prev_raw is not None and abs(x) == 180.0 and abs(prev_raw) == 180.0
        prev_raw = x
        if prev is not None and not on_seam:  # -180 -> 180 runs along the seam: no crossing
            while x + shift - prev > 180.0:
                shift -= 360.0
            while x + shift - prev < -180.0:
                shift += 360.0
        out.append((x + shift, y))
        prev = x + shift
    return out


def _cut_and_wrap(poly: Polygon) -> BaseGeometry:
    parts = []
    for k in range(-2, 3):
        window = box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        piece = poly.intersection(window)
        if piece.is_empty or piece.area == 0:
            continue
        piece = shapely.transform(piece, lambda c, k=k: c - [360.0 * k, 0.0])
        parts.extend(getattr(piece, "geoms", [piece]))
    polys = [p for p in parts if p.geom_type == "Polygon"]
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _wrap_lons(geom: BaseGeometry) -> BaseGeometry:
    """Points and lines: bring longitudes into [-180, 180) (no splitting needed)."""
    coords = shapely.get_coordinates(geom)
    if (coords[:, 0] >= -180).all() and (coords[:, 0] <= 180).all():
        return geom

    def fix(c: np.ndarray) -> np.ndarray:
        c = c.copy()
        c[:, 0] = (c[:, 0] + 180.0) % 360.0 - 180.0
        return c

    return shapely.transform(geom, fix)


def _multi(parts: list[BaseGeometry]) -> BaseGeometry:
    polys = []
    for p in parts:
        polys.extend(getattr(p, "geoms", [p]))
    merged = shapely.union_all(polys)
    return merged


def geometry_intersects(item_geometry: dict | None, aoi: BaseGeometry) -> bool:
    """Whether a STAC item's GeoJSON geometry meets the AOI (antimeridian-aware on both sides)."""
    if not item_geometry:
        return False
    try:
        geom = split_antimeridian(shape(item_geometry))
    except (AOIError, ValueError, TypeError):
        return False
    return bool(geom.intersects(aoi))
