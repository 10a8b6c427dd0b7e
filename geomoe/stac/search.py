"""Search any STAC catalog for Landsat 8/9 Collection 2 Level-2 scenes over an AOI.

Three kinds of catalog, one semantics:

* a STAC API URL (Planetary Computer, Earth Search, a local rustac server): pystac-client
  `/search` with `intersects`, `datetime`, paging; cloud and platform filters are ALSO applied
  client-side because some servers (rustac) silently ignore the `query` extension;
* a static catalog / collection / item collection (path or http URL): walked with pystac, because
  pystac-client cannot search a static catalog (`DoesNotConformTo: ITEM_SEARCH`);
* None: the bundled catalog (package data, `geomoe.resources.bundled_catalog`).

Filters: the item geometry intersects the AOI (antimeridian-aware); the item datetime lies in the
closed interval (items with only start/end_datetime match when the ranges overlap);
`eo:cloud_cover <= max_cloud` (items WITHOUT a cloud cover pass: e.g. BigEarthNet patches, whose
Landsat scene is unknown); the platform is Landsat 8 or 9. Landsat 4-7 scenes are refused with a
warning (they have no coastal band SR_B1, and the model needs all 7 bands): never filled in.
Results are sorted by (datetime, id) and carry absolute asset hrefs.

Cost: each item's JSON is judged as a plain dict (bbox first, against the AOI's bounds and then
the prepared AOI) before anything else, and only the items kept become pystac Items, built
without copying dicts that nothing else holds. A static catalog's item files are read once,
without resolving or caching them in the catalog tree; an API's pages are taken as dicts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pystac
import shapely
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

from geomoe.stac.aoi import AOISource, geometry_intersects, load_aoi
from geomoe.errors import CatalogError, NoScenesError
from geomoe.resources import bundled_catalog

#: The bundled catalog (built by scripts/build_catalog.py); GEOMOE_BUNDLED_CATALOG overrides it.
BUNDLED_CATALOG = Path(os.environ.get("GEOMOE_BUNDLED_CATALOG", bundled_catalog()))
DEFAULT_COLLECTION = "landsat-c2-l2"
SUPPORTED_PLATFORMS = ("landsat-8", "landsat-9")
#: Platforms without SR_B1 (coastal): TM/ETM+ (4, 5, 7) and MSS (1-5).
_NO_COASTAL = {f"landsat-{n}" for n in range(1, 8)}
_ID_PLATFORM = re.compile(r"^L[COTEM](\d{2})_")


class UnsupportedPlatformError(CatalogError, ValueError):
    """Asked for Landsat 4-7, which lack the coastal band (SR_B1) the model needs."""


class LandsatPlatformWarning(UserWarning):
    """Scenes from Landsat 4-7 were found and refused (no coastal band)."""


@dataclass
class CatalogHandle:
    """An opened catalog: kind 'api' (pystac_client.Client) or 'static' (pystac Catalog/Collection/ItemCollection)."""

    kind: str
    href: str
    obj: Any
    collection: str = DEFAULT_COLLECTION


@dataclass
class SearchResult:
    """Items plus what happened: pages fetched (API), items refused and why, seconds taken."""

    items: list[pystac.Item]
    catalog: str
    kind: str
    pages: int = 0
    fetched: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- opening


def open_catalog(catalog: str | Path | CatalogHandle | None = None, *,
                 collection: str = DEFAULT_COLLECTION, timeout: float = 30.0) -> CatalogHandle:
    """Open a STAC API URL, a static catalog (path/URL of catalog/collection/item-collection
    JSON, or a folder holding one), or the bundled catalog (None). Raises CatalogError."""
    if isinstance(catalog, CatalogHandle):
        return catalog
    if catalog is None:
        if not BUNDLED_CATALOG.exists():
            raise CatalogError(
                f"bundled catalog {BUNDLED_CATALOG} is missing: run `python scripts/build_catalog.py` in "
                "the checkout, or pass --catalog with a STAC API URL or catalog.json"
            )
        return _open_static(str(BUNDLED_CATALOG), "bundled", collection)
    text = str(catalog)
    if text.lower().startswith(("http://", "https://")):
        if urlparse(text).path.lower().endswith(".json"):
            return _open_static(text, "static", collection)
        return _open_api(text, collection, timeout)
    path = Path(text).expanduser()
    if path.is_dir():
        for name in ("catalog.json", "collection.json"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise CatalogError(f"{path} holds no catalog.json or collection.json: pass the STAC "
                               "file itself, or build one (scripts/build_catalog.py builds the bundled one)")
    if not path.exists():
        raise CatalogError(f"catalog {path} does not exist: pass a STAC API URL (e.g. "
                           "https://planetarycomputer.microsoft.com/api/stac/v1), a catalog.json "
                           "path, or nothing for the bundled catalog")
    return _open_static(str(path.resolve()), "static", collection)


def _open_static(href: str, kind: str, collection: str) -> CatalogHandle:
    try:
        obj = pystac.read_file(href)
    except pystac.STACTypeError:
        try:  # a FeatureCollection of items (an ItemCollection) is a static catalog too
            obj = pystac.ItemCollection.from_file(href)
        except Exception as exc:
            raise CatalogError(f"{href} is not a STAC catalog, collection or item collection "
                               f"({exc}): pass catalog.json or collection.json") from None
    except (OSError, json.JSONDecodeError, pystac.STACError, Exception) as exc:
        raise CatalogError(f"cannot read static catalog {href} ({type(exc).__name__}: {exc}): "
                           "check the path or URL") from None
    if isinstance(obj, pystac.Item):
        obj = pystac.ItemCollection([obj])
    return CatalogHandle(kind, href, obj, collection)


def _open_api(url: str, collection: str, timeout: float) -> CatalogHandle:
    import pystac_client
    import requests

    try:
        client = pystac_client.Client.open(url, timeout=timeout)
    except (requests.RequestException, pystac_client.exceptions.APIError, OSError,
            pystac.STACError, json.JSONDecodeError, ValueError) as exc:
        raise CatalogError(
            f"cannot reach STAC API {url} ({type(exc).__name__}: {_short(exc)}): check the URL "
            "and the network (Planetary Computer: https://planetarycomputer.microsoft.com/api/"
            "stac/v1, Earth Search: https://earth-search.aws.element84.com/v1), or use a local "
            "catalog.json / the bundled catalog"
        ) from None
    if not client.conforms_to(pystac_client.ConformanceClasses.ITEM_SEARCH):
        # a static catalog served over http without .json in the URL: walk it like one
        return CatalogHandle("static", url, client, collection)
    return CatalogHandle("api", url, client, collection)


def _short(exc: BaseException, n: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= n else text[:n] + "..."


# ----------------------------------------------------------------------------- filters


def parse_datetime(value: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    """An RFC 3339 instant or interval ('a/b', '../b', 'a/..'), a datetime, or a (start, end)
    pair -> aware UTC (start, end), both inclusive; None = open. Date-only ends cover the whole
    day (month, year) like pystac-client does. Raises CatalogError on anything else."""
    if value is None:
        return None, None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise CatalogError(f"datetime {value!r}: pass (start, end), an RFC 3339 interval "
                               "'2020-01-01/2020-12-31', or one instant")
        return _end(value[0], start=True), _end(value[1], start=False)
    if isinstance(value, (dt.datetime, dt.date)):
        return _end(value, start=True), _end(value, start=False)
    if not isinstance(value, str):
        raise CatalogError(f"datetime must be a string, datetime or pair, not {type(value).__name__}")
    text = value.strip()
    if "/" in text:
        a, _, b = text.partition("/")
        start, end = _end(a, start=True), _end(b, start=False)
    else:
        start, end = _end(text, start=True), _end(text, start=False)
    if start and end and start > end:
        raise CatalogError(f"datetime {value!r}: the start is after the end; write start/end")
    return start, end


_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def _end(value: Any, *, start: bool) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else \
            value.astimezone(dt.timezone.utc)
    if isinstance(value, dt.date):
        value = value.isoformat()
    text = str(value).strip()
    if text in ("", ".."):
        return None
    m = _PARTIAL.match(text)
    if m:
        y, mo, d = int(m.group(1)), m.group(2), m.group(3)
        if start:
            return dt.datetime(y, int(mo or 1), int(d or 1), tzinfo=dt.timezone.utc)
        if d:
            first = dt.datetime(y, int(mo), int(d), tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
        elif mo:
            first = dt.datetime(y + int(mo) // 12, int(mo) % 12 + 1, 1, tzinfo=dt.timezone.utc)
        else:
            first = dt.datetime(y + 1, 1, 1, tzinfo=dt.timezone.utc)
        return first - dt.timedelta(microseconds=1)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CatalogError(f"datetime {text!r} is not RFC 3339: use e.g. 2020-09-27T11:10:50Z, "
                           "2020-09-27, or an interval 2020-01-01/2020-12-31 ('..' = open)"
                           ) from None
    return _end(parsed, start=start)


def _fmt(t: dt.datetime | None) -> str:
    return ".." if t is None else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def platform_of(item: pystac.Item | dict) -> str | None:
    """'landsat-8'-style platform from the item's `platform` (any spelling) or its id prefix."""
    props = item.properties if isinstance(item, pystac.Item) else item.get("properties", {})
    raw = props.get("platform") or props.get("eo:platform")
    if raw:
        m = re.search(r"landsat[-_ ]?(\d)", str(raw).lower())
        if m:
            return f"landsat-{m.group(1)}"
        return str(raw).lower()
    item_id = item.id if isinstance(item, pystac.Item) else item.get("id", "")
    m = _ID_PLATFORM.match(item_id or "")
    return f"landsat-{int(m.group(1))}" if m else None


def _check_platforms(platforms: Sequence[str] | None) -> tuple[str, ...]:
    if platforms is None:
        return SUPPORTED_PLATFORMS
    norm = tuple(platform_of({"properties": {"platform": p}}) or p for p in platforms)
    bad = [p for p in norm if p in _NO_COASTAL]
    if bad:
        raise UnsupportedPlatformError(
            f"platform(s) {bad} are not supported: Landsat 4-7 have no coastal band (SR_B1) and "
            "the model needs all 7 bands SR_B1..SR_B7; search Landsat 8 or 9 "
            "(platforms=['landsat-8', 'landsat-9'])"
        )
    other = [p for p in norm if p not in SUPPORTED_PLATFORMS]
    if other:
        raise UnsupportedPlatformError(
            f"platform(s) {other} are not supported: geomoe reads Landsat 8/9 Collection 2 "
            "Level-2 only (platforms=['landsat-8', 'landsat-9'])"
        )
    return norm


def _item_interval(props: dict) -> tuple[dt.datetime | None, dt.datetime | None]:
    if props.get("datetime"):
        t = _end(props["datetime"], start=True)
        return t, t
    return _end(props.get("start_datetime"), start=True), _end(props.get("end_datetime"),
                                                               start=False)


@dataclass
class _Filter:
    aoi: BaseGeometry
    start: dt.datetime | None
    end: dt.datetime | None
    max_cloud: float | None
    platforms: tuple[str, ...]

    def __post_init__(self) -> None:
        shapely.prepare(self.aoi)  # many items are tested against one AOI (in place, harmless)
        self._bounds = self.aoi.bounds

    def reason(self, item: pystac.Item) -> str | None:
        """None if the item passes; the refusal reason for Landsat 4-7; '' for a plain non-match."""
        return self.reason_fields(item.id, item.properties, item.bbox, item.geometry)

    def misses_bbox(self, bbox: Sequence[float] | None) -> bool:
        """True if the item's bbox cannot meet the AOI (a cheap test on the raw JSON)."""
        if not bbox or len(bbox) not in (4, 6):
            return False
        n = len(bbox) // 2
        x0, y0, x1, y1 = bbox[0], bbox[1], bbox[n], bbox[n + 1]
        if x0 > x1:
            return False  # a bbox across 180 deg (west > east) goes to the full test
        ax0, ay0, ax1, ay1 = self._bounds
        if x1 < ax0 or x0 > ax1 or y1 < ay0 or y0 > ay1:
            return True
        return not self.aoi.intersects(box(x0, y0, x1, y1))

    def reason_fields(self, item_id: str, props: dict, bbox: Sequence[float] | None,
                      geometry: dict | None) -> str | None:
        """`reason` on an item's raw fields, so that a JSON dict is judged before it is an Item."""
        if self.misses_bbox(bbox):
            return ""
        if not geometry_intersects(geometry, self.aoi):
            return ""
        a, b = _item_interval(props)
        if (self.start or self.end) and a is None and b is None:
            return ""
        if self.start and b is not None and b < self.start:
            return ""
        if self.end and a is not None and a > self.end:
            return ""
        cloud = props.get("eo:cloud_cover")
        if self.max_cloud is not None and cloud is not None and float(cloud) > self.max_cloud:
            return ""
        plat = platform_of({"id": item_id, "properties": props})
        if plat in _NO_COASTAL:
            return (f"{plat}: no coastal band (SR_B1); the model needs SR_B1..SR_B7, scenes are "
                    "not filled in")
        if plat is not None and plat not in self.platforms:
            return ""
        return None


# ----------------------------------------------------------------------------- search


def search(catalog: str | Path | CatalogHandle | None, aoi: AOISource,
           datetime: Any = None, max_cloud: float | None = None,
           platforms: Sequence[str] | None = None, *, collection: str | None = None,
           limit: int = 100, timeout: float = 30.0) -> list[pystac.Item]:
    """Landsat 8/9 Collection 2 Level-2 scenes of a STAC catalog that meet an AOI.

    Parameters
    ----------
    catalog : str, Path, CatalogHandle or None
        STAC API URL, static catalog or collection (file or URL); None: the bundled catalog.
    aoi : str, Path, dict or shapely geometry
        GeoJSON file, URL, inline GeoJSON or geometry (see :func:`geomoe.stac.aoi.load_aoi`);
        points and lines are allowed here.
    datetime : str or datetime, optional
        RFC 3339 instant or interval, e.g. "2020-01-01/2020-12-31"; ".." leaves an end open,
        and a partial date ("2020", "2020-06") covers its whole year or month.
    max_cloud : float, optional
        Largest ``eo:cloud_cover`` in percent (0-100); items without it pass.
    platforms : sequence of str, optional
        A subset of ("landsat-8", "landsat-9"); None: both.
    collection : str, optional
        Collection id on a STAC API (default "landsat-c2-l2").
    limit : int
        Items per page of a STAC API search.
    timeout : float
        Seconds to wait for a remote catalog.

    Returns
    -------
    list of pystac.Item
        Sorted by (datetime, id), asset hrefs absolute.

    Raises
    ------
    geomoe.errors.NoScenesError
        Nothing matches (the message names the filters).
    geomoe.errors.CatalogError
        The catalog cannot be opened or searched.
    geomoe.errors.AOIError
        The AOI is unusable.
    UnsupportedPlatformError
        ``platforms`` names Landsat 4-7.
    """
    return search_catalog(catalog, aoi, datetime=datetime, max_cloud=max_cloud,
                          platforms=platforms, collection=collection, limit=limit,
                          timeout=timeout).items


def search_catalog(catalog: str | Path | CatalogHandle | None, aoi: AOISource,
                   datetime: Any = None, max_cloud: float | None = None,
                   platforms: Sequence[str] | None = None, *, collection: str | None = None,
                   limit: int = 100, timeout: float = 30.0) -> SearchResult:
    """Like `search`, returning a SearchResult (pages fetched, refused items, timing)."""
    t0 = time.perf_counter()
    geom = load_aoi(aoi)
    start, end = parse_datetime(datetime)
    if max_cloud is not None and not (0 <= float(max_cloud) <= 100):
        raise CatalogError(f"max_cloud={max_cloud} is not a percentage: pass 0..100")
    plats = _check_platforms(platforms)
    handle = open_catalog(catalog, collection=collection or DEFAULT_COLLECTION, timeout=timeout)
    if collection:
        handle.collection = collection
    filt = _Filter(geom, start, end, None if max_cloud is None else float(max_cloud), plats)
    with warnings.catch_warnings():
        # pystac's storage-extension migration warns for every non-cloud (local) href: noise
        warnings.filterwarnings("ignore", message="Could not parse bucket/account",
                                category=UserWarning)
        if handle.kind == "api":
            result = _search_api(handle, filt, limit)
        else:
            result = _search_static(handle, filt)
    result.seconds = time.perf_counter() - t0
    if result.refused:
        warnings.warn(LandsatPlatformWarning(
            f"refused {len(result.refused)} Landsat 4-7 scene(s) without a coastal band "
            f"(SR_B1): {sorted(result.refused)[:5]}{' ...' if len(result.refused) > 5 else ''}"
        ), stacklevel=3)
    if not result.items:
        raise NoScenesError(_no_scenes_message(handle, geom, start, end, max_cloud, result))
    return result


def _no_scenes_message(handle: CatalogHandle, geom: BaseGeometry, start: dt.datetime | None,
                       end: dt.datetime | None, max_cloud: float | None,
                       result: SearchResult) -> str:
    b = ", ".join(f"{v:.4f}" for v in geom.bounds)
    when = "any time" if start is None and end is None else f"{_fmt(start)}/{_fmt(end)}"
    name = "the bundled catalog" if handle.kind == "bundled" else handle.href
    msg = (f"no scenes in {name} for the AOI (lon/lat bounds {b}), datetime {when}"
           + (f", max cloud {max_cloud}%" if max_cloud is not None else ""))
    if result.refused:
        msg += (f"; {len(result.refused)} Landsat 4-7 scene(s) were refused (no coastal band "
                "SR_B1): search a period with Landsat 8 (2013-) or 9 (2021-)")
    else:
        msg += ": widen the AOI or the datetime interval, raise --max-cloud, or search another "
        msg += "catalog (a STAC API such as Planetary Computer)"
    return msg


def _search_api(handle: CatalogHandle, filt: _Filter, limit: int) -> SearchResult:
    import pystac_client
    import requests

    client = handle.obj
    params: dict[str, Any] = {
        "collections": [handle.collection],
        "intersects": mapping(filt.aoi),
        "limit": int(limit),
    }
    if filt.start or filt.end:
        params["datetime"] = f"{_fmt(filt.start)}/{_fmt(filt.end)}"
    if client.conforms_to(pystac_client.ConformanceClasses.QUERY):
        query: dict[str, Any] = {"platform": {"in": list(filt.platforms)}}
        if filt.max_cloud is not None:
            query["eo:cloud_cover"] = {"lte": filt.max_cloud}
        params["query"] = query
    result = SearchResult([], handle.href, "api")
    kept: dict[str, pystac.Item] = {}

    def build(d: dict) -> pystac.Item:  # as pystac-client's pages() builds it, minus the copies
        return pystac.Item.from_dict(_Owned(d), root=client, preserve_dict=False)

    try:
        # page dicts, not pages(): pystac-client's ItemCollection deep-copies every item twice
        for page in client.search(**params).pages_as_dicts():
            result.pages += 1
            for d in page.get("features", []):
                result.fetched += 1
                _keep_dict(d, build, filt, result, kept)
    except (requests.RequestException, pystac_client.exceptions.APIError, OSError,
            json.JSONDecodeError) as exc:
        raise CatalogError(
            f"search on STAC API {handle.href} failed after {result.pages} page(s) "
            f"({type(exc).__name__}: {_short(exc)}): check the URL, the collection id "
            f"{handle.collection!r} and the network; nothing was returned"
        ) from None
    result.items = _finish(kept.values(), handle.href)
    return result


class _Owned(dict):
    """An item's JSON dict that nothing else holds (just parsed, used once): pystac's migration
    deep-copies what it is given, which for an owned dict is wasted work, so its "deep copy" is a
    shallow one. The Item built from it takes over its nested dicts."""

    def __deepcopy__(self, memo: dict) -> _Owned:
        return _Owned(self)


def _search_static(handle: CatalogHandle, filt: _Filter) -> SearchResult:
    result = SearchResult([], handle.href, handle.kind)
    kept: dict[str, pystac.Item] = {}
    obj = handle.obj
    try:
        if isinstance(obj, pystac.ItemCollection):
            for item in obj.items:  # built when the file was opened: shared, copied if kept
                result.fetched += 1
                _keep(item, filt, result, kept, shared=True)
        else:
            _walk_static(obj, filt, result, kept)
    except (OSError, json.JSONDecodeError, pystac.STACError) as exc:
        raise CatalogError(f"cannot walk static catalog {handle.href} ({type(exc).__name__}: "
                           f"{_short(exc)}): a linked item or collection is missing or corrupt; "
                           "rebuild it (scripts/build_catalog.py for the bundled one)") from None
    result.items = _finish(kept.values(), handle.href)
    return result


def _walk_static(cat: pystac.Catalog, filt: _Filter, result: SearchResult,
                 kept: dict[str, pystac.Item]) -> None:
    """`cat.get_items(recursive=True)` in the same order, but each item file is read as a dict
    and judged on it: only the items that pass become pystac Items, and none is cached in the
    catalog tree (so the handle can be searched again without copies)."""
    root = cat.get_root()
    stac_io = (root._stac_io if root is not None else None) or cat._stac_io or \
        pystac.StacIO.default()
    for link in cat.links[:]:
        if link.rel != pystac.RelType.ITEM:
            continue
        if link.is_resolved():  # an item already in memory (built or read before): shared
            result.fetched += 1
            _keep(link.target, filt, result, kept, shared=True)
            continue
        href = link.get_absolute_href()
        if href is None:
            raise pystac.STACError(f"item link {link.href!r} of {cat.id!r} cannot be made absolute")
        d = stac_io.read_json(href)
        if not isinstance(d, dict) or d.get("type") != "Feature":
            raise pystac.STACError(f"{href} is not a STAC item")
        result.fetched += 1

        def build(d: dict, href: str = href) -> pystac.Item:  # as Link.resolve_stac_object does
            item = stac_io.stac_object_from_dict(_Owned(d), href=href, root=root,
                                                 preserve_dict=False)
            # resolve's second set_self_href(href), without Item's rewrite of every relative
            # asset href (same href: nothing to rewrite); it moves the self link last
            pystac.STACObject.set_self_href(item, href)
            if root is not None:
                item.set_root(root)
            if item._allow_parent_to_override_href:
                item.set_parent(cat)
            return item

        _keep_dict(d, build, filt, result, kept)
    for child in cat.get_children():
        _walk_static(child, filt, result, kept)


def _keep_dict(d: dict, build: Any, filt: _Filter, result: SearchResult,
               kept: dict[str, pystac.Item]) -> None:
    """Judge an item's JSON dict; build the pystac Item (with ``build``) only if it passes."""
    if filt.misses_bbox(d.get("bbox")):
        return
    if not str(d.get("stac_version", "")).startswith("1."):
        # pre-1.0 JSON may take fields from its collection on migration: judge the Item
        _keep(build(d), filt, result, kept, shared=False)
        return
    why = filt.reason_fields(d.get("id", ""), d.get("properties") or {}, d.get("bbox"),
                             d.get("geometry"))
    if why is None:
        item = build(d)
        kept[f"{item.collection_id}/{item.id}"] = item
    elif why:
        result.refused[d.get("id", "")] = why


def _keep(item: pystac.Item, filt: _Filter, result: SearchResult,
          kept: dict[str, pystac.Item], *, shared: bool) -> None:
    why = filt.reason(item)
    if why is None:
        kept[f"{item.collection_id}/{item.id}"] = item.clone() if shared else item
    elif why:
        result.refused[item.id] = why


def _finish(items: Iterable[pystac.Item], href: str) -> list[pystac.Item]:
    """Both proj fields and absolute asset hrefs, sorted by (datetime, id). The items are this
    search's own (built from dicts, or cloned from a shared catalog): edited in place."""
    out = []
    for item in items:
        _both_proj_fields(item.properties)
        self_href: str | None = None
        for key, asset in item.assets.items():
            _both_proj_fields(asset.extra_fields)
            if _is_relative(asset.href):
                if self_href is None:
                    self_href = item.get_self_href()
                absolute = None if self_href is None else \
                    pystac.utils.make_absolute_href(asset.href, self_href)
                if absolute is None or _is_relative(absolute):
                    raise CatalogError(f"item {item.id} in {href}: asset {key!r} has the "
                                       f"relative href {asset.href!r} and the item has no self "
                                       "link to resolve it: write absolute hrefs in the catalog")
                asset.href = absolute
        out.append(item)
    out.sort(key=lambda it: (_sort_time(it), it.id))
    return out


def _both_proj_fields(fields: dict) -> None:
    """Keep `proj:code` AND `proj:epsg`: pystac 1.15 migrates epsg to code on read (dropping
    epsg), while stackstac 0.5 reads only `proj:epsg`; readers may rely on either."""
    code, epsg = fields.get("proj:code"), fields.get("proj:epsg")
    if epsg is None and isinstance(code, str) and code.upper().startswith("EPSG:"):
        try:
            fields["proj:epsg"] = int(code.split(":", 1)[1])
        except ValueError:
            pass
    elif code is None and epsg is not None:
        fields["proj:code"] = f"EPSG:{int(epsg)}"


_ABSOLUTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "file://", "az://", "abfs://", "/")


def _is_relative(href: str) -> bool:
    if href.startswith(_ABSOLUTE_PREFIXES):  # the common case, without urlparse
        return False
    return not (urlparse(href).scheme in ("http", "https", "s3", "gs", "file", "az", "abfs")
                or os.path.isabs(href))


def _sort_time(item: pystac.Item) -> dt.datetime:
    a, _ = _item_interval(item.properties)
    return a or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
