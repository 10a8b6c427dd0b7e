"""Reading Landsat band assets: asset resolution, raster handles, windowed reads onto a grid.

Loader choice, on evidence (benchmarks/bench_chips.py; figures in benchmarks/README.md):

- on a synthetic mosaic of deflate COGs, direct windowed reads (this module +
  geomoe.chips.read, QA mask, metadata and batching included) were several times faster than
  odc-stac and stackstac loading the same grid (neither of which masks or builds metadata);
  on the small bundled Liverpool scene per-call overheads dominate and the three are close.
- stackstac 0.5.1 also fails on items with only ``proj:code`` ("Cannot pick a common CRS"),
  builds a 268x434 grid for the 267x433 scene without ``resolution=``, needs ``rescale=False``
  and ``fill_value=np.uint16(0)`` for uint16, and absolute hrefs. odc-stac reads ``proj:code``
  and the native grid correctly.

So the chip path reads with rasterio directly: the fixed grid is a whole-pixel shift of
Landsat's own 30 m grid, so no warp is needed, there is no dask graph per tile, and each COG
block is decoded once (see geomoe.chips.read). odc-stac stays available for analysts as
:func:`load_xarray` / ``geomoe.chips.plan.load_group`` (lazy, dask-backed); it picks exactly the same
nearest pixels as this reader (tests/chips/test_fixed_grid.py checks it bit for bit).
"""

from __future__ import annotations

import collections
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import pystac
import rasterio
import rasterio.errors
from rasterio.windows import Window

from geomoe.chips.bands import BANDS, COMMON_NAMES
from geomoe.errors import GeomoeError, MissingBandError, RasterReadError, require_extra

#: QA_PIXEL asset keys, in the order tried.
QA_KEYS: tuple[str, ...] = ("qa_pixel", "QA_PIXEL")

def _cache_bytes() -> int:
    """GDAL block cache size in bytes: the user's GDAL_CACHEMAX (MB if < 100000, as GDAL reads it), else 128 MB."""
    v = os.environ.get("GDAL_CACHEMAX", "")
    if v.isdigit():
        n = int(v)
        return n * 1024 * 1024 if n < 100_000 else n
    return 128 * 1024 * 1024


#: GDAL settings for cloud COGs: no directory listing, no sidecar probing, bigger cache.
GDAL_ENV: dict[str, object] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # GDAL's block cache defaults to 5 % of RAM and grows with every block decoded, so peak
    # memory would grow with the AOI; 128 MB holds a tile row of blocks for reuse, and keeps
    # memory flat (measured in benchmarks/bench_chips.py). A user's GDAL_CACHEMAX wins.
    # (rasterio passes an int straight to GDALSetCacheMax64, i.e. in bytes)
    "GDAL_CACHEMAX": _cache_bytes(),
}


class RasterFormatError(GeomoeError, ValueError):
    """A band raster is readable but not Landsat C2 L2 DN (wrong dtype, CRS mismatch...)."""


@dataclass(frozen=True)
class ItemAssets:
    """Where an item's 7 SR bands (SR_B1..SR_B7 order) and optional QA_PIXEL live."""

    item_id: str
    keys: tuple[str, ...]
    hrefs: tuple[str, ...]
    qa_href: str | None


def band_keys(item: pystac.Item) -> tuple[str, ...]:
    """Asset keys of SR_B1..SR_B7 in ``item``; MissingBandError names the first band absent."""
    keys = []
    for band in BANDS:
        cands = (COMMON_NAMES[band], band, band.lower())
        key = next((k for k in cands if k in item.assets), None)
        if key is None:
            platform = str(item.properties.get("platform", "")).lower()
            hint = ""
            if band == "SR_B1" and any(p in platform for p in ("landsat-4", "landsat-5", "landsat-7")):
                hint = f" ({platform} has no coastal band; geomoe needs Landsat 8 or 9)"
            raise MissingBandError(
                f"item {item.id!r} has no asset for band {band} ({COMMON_NAMES[band]}){hint}: "
                f"expected one of the asset keys {cands}, found {sorted(item.assets)}. "
                "Use Landsat 8/9 Collection 2 Level-2 items with all 7 SR bands."
            )
        keys.append(key)
    return tuple(keys)


def _href(item: pystac.Item, key: str) -> str:
    asset = item.assets[key]
    href = asset.get_absolute_href() or asset.href
    if not (href.startswith(("/", "http://", "https://", "s3://", "gs://", "file://", "/vsi")) or ":\\" in href):
        raise RasterReadError(
            f"item {item.id!r} asset {key!r} has the relative href {asset.href!r} and the item has no "
            "self link to resolve it: open the catalog from its file (geomoe.stac.search.search returns "
            "absolute hrefs) or make the hrefs absolute"
        )
    return href


#: Rewrites an asset href right before its file is opened, as odc-stac's ``patch_url``: e.g. a
#: signer that appends a token. Applied at open time, never at search or plan time, because such
#: tokens expire (Planetary Computer's after about 45 minutes).
PatchUrl = Callable[[str], str]


class SignerMissingError(GeomoeError, ImportError):
    """Assets need a signer whose package (an optional extra) is not installed."""


def is_planetary_computer(href: str) -> bool:
    """Whether `href` lies in Planetary Computer blob storage (readable only with a SAS token)."""
    return urlparse(href).netloc.endswith(".blob.core.windows.net")


def planetary_computer_patch_url() -> PatchUrl:
    """Planetary Computer's signer (``planetary_computer.sign_url``) as a `patch_url`.

    Raises SignerMissingError, naming ``pip install 'geomoe[pc]'``, when the extra is missing.
    """
    try:
        import planetary_computer
    except ImportError:
        raise SignerMissingError(
            "Planetary Computer assets need a SAS token, and the signer is not installed: "
            "pip install 'geomoe[pc]' (hrefs are signed when each file is opened), or search "
            "another catalog") from None
    return planetary_computer.sign_url


def default_patch_url(href: str) -> str:
    """The `patch_url` used when none is given: unsigned Planetary Computer hrefs are signed
    (:func:`planetary_computer_patch_url`), every other href is returned unchanged."""
    if is_planetary_computer(href) and "?" not in href:
        return planetary_computer_patch_url()(href)
    return href


def resolve_assets(item: pystac.Item) -> ItemAssets:
    """The band and QA hrefs of an item (absolute), or MissingBandError before any read."""
    keys = band_keys(item)
    qa_key = next((k for k in QA_KEYS if k in item.assets), None)
    return ItemAssets(
        item_id=item.id,
        keys=keys,
        hrefs=tuple(_href(item, k) for k in keys),
        qa_href=_href(item, qa_key) if qa_key else None,
    )


def _vsi(href: str) -> str:
    if href.startswith(("http://", "https://")) and not href.startswith("/vsi"):
        return "/vsicurl/" + href
    if href.startswith("file://"):
        return href[len("file://"):]
    return href


class RasterPool:
    """Open rasterio datasets, one set per thread (GDAL handles are not thread-safe).

    At most ``max_open`` handles per thread (least recently used closed first), so a run over
    thousands of scenes holds a bounded number of files open. ``patch_url`` rewrites each href
    as its file is opened (default :func:`default_patch_url`).
    """

    def __init__(self, epsg_check: bool = True, max_open: int = 64, *,
                 patch_url: PatchUrl | None = None) -> None:
        self._local = threading.local()
        self.patch_url = patch_url or default_patch_url
        self._all: set = set()
        self._lock = threading.Lock()
        self.epsg_check = epsg_check
        self.max_open = max_open

    def open(self, href: str, epsg: int | None = None):
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = collections.OrderedDict()
        ds = cache.get(href)
        if ds is not None:
            cache.move_to_end(href)
        else:
            try:
                ds = rasterio.open(_vsi(self.patch_url(href)))  # sign at open, not at plan time
            except (rasterio.errors.RasterioError, OSError) as exc:
                raise RasterReadError(
                    f"cannot open raster {href}: {_detail(exc)}. The file is missing, corrupt or truncated: "
                    "re-download it or drop the item"
                ) from exc
            if ds.dtypes[0] != "uint16":
                ds.close()
                raise RasterFormatError(
                    f"raster {href} holds {ds.dtypes[0]}, not uint16 DN: geomoe reads Landsat C2 L2 "
                    "digital numbers unscaled; point the item at the SR DN COGs"
                )
            if epsg is not None and self.epsg_check and ds.crs is not None:
                file_epsg = ds.crs.to_epsg()
                if file_epsg is not None and file_epsg != epsg:
                    ds.close()
                    raise RasterFormatError(
                        f"raster {href} is in EPSG:{file_epsg} but its item says EPSG:{epsg}: "
                        "fix the item's proj:code so zones are never mixed"
                    )
            cache[href] = ds
            with self._lock:
                self._all.add(ds)
            while len(cache) > self.max_open:
                _, old = cache.popitem(last=False)
                with self._lock:
                    self._all.discard(old)
                old.close()
        return ds

    def close(self) -> None:
        with self._lock:
            for ds in self._all:
                try:
                    ds.close()
                except Exception:
                    pass
            self._all.clear()


def _detail(exc: BaseException) -> str:
    """rasterio's message plus GDAL's underlying one (which names the TIFF problem)."""
    cause = exc.__cause__ or exc.__context__
    return f"{exc} ({cause})" if cause is not None and str(cause) not in str(exc) else str(exc)


def _read(ds, window: Window, href: str, out: np.ndarray | None = None) -> np.ndarray:
    """Band 1 of a window; RasterReadError names the file. Call inside ``rasterio.Env(**GDAL_ENV)``."""
    try:
        return ds.read(1, window=window, out=out)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise RasterReadError(
            f"cannot read raster {href} (window {window}): {_detail(exc)}. The file is corrupt or truncated: "
            "re-download it or drop the item"
        ) from exc


def read_onto_grid(
    ds, href: str, x0: float, ytop: float, nrows: int, ncols: int, res: float = 30.0,
    out: np.ndarray | None = None,
) -> np.ndarray | None:
    """Band 1 of ``ds`` sampled (nearest) onto a north-up grid of ``res`` m pixels -> (nrows, ncols) uint16.

    The output pixel centred at (x, y) takes the source pixel ``rasterio.index(x, y)`` (floor),
    so a 30 m Landsat raster maps by a whole-pixel shift and coarser rasters (the downsampled
    QA scenes, ~480 m) repeat pixels. Outside the raster: 0 (fill). None if no overlap at all.
    ``out``: optional C-contiguous (nrows, ncols) uint16 array to fill (saves a copy).
    """
    t = ds.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise RasterFormatError(f"raster {href} is not north-up (transform {tuple(t)[:6]}); geomoe reads north-up rasters")
    xs = x0 + res * (np.arange(ncols) + 0.5)
    ys = ytop - res * (np.arange(nrows) + 0.5)
    sc = np.floor((xs - t.c) / t.a).astype(np.int64)
    sr = np.floor((ys - t.f) / t.e).astype(np.int64)
    okc = np.nonzero((sc >= 0) & (sc < ds.width))[0]
    okr = np.nonzero((sr >= 0) & (sr < ds.height))[0]
    if okc.size == 0 or okr.size == 0:
        return None
    c_lo, c_hi = int(sc[okc[0]]), int(sc[okc[-1]]) + 1
    r_lo, r_hi = int(sr[okr[0]]), int(sr[okr[-1]]) + 1
    win = Window(c_lo, r_lo, c_hi - c_lo, r_hi - r_lo)
    shift = (r_hi - r_lo, c_hi - c_lo) == (okr.size, okc.size)  # whole-pixel shift of a same-res grid
    full = okc.size == ncols and okr.size == nrows
    if shift and full:
        return _read(ds, win, href, out=out)
    if out is None:
        out = np.zeros((nrows, ncols), np.uint16)
    else:
        out[...] = 0
    data = _read(ds, win, href)
    if not shift:
        data = data[np.ix_(sr[okr] - r_lo, sc[okc] - c_lo)]
    out[okr[0] : okr[-1] + 1, okc[0] : okc[-1] + 1] = data
    return out


def load_xarray(items, bbox=None, epsg: int | None = None, resolution: float = 30.0, chunk: int = 640,
                *, patch_url: PatchUrl | None = None):
    """Lazy dask-backed xarray (time, band, y, x) uint16 DN of items of one CRS, via odc-stac.

    For analysts: same bands (SR_B1..SR_B7 order), raw DN, nodata 0, nearest resampling,
    one time step per solar day. ``bbox`` (minx, miny, maxx, maxy) in the CRS is snapped out
    to 1200 m so the pixels are exactly the fixed chip grid's; None = the items' union.
    ``patch_url`` as for :class:`RasterPool` (odc-stac applies it when it opens each file).
    """
    require_extra(("odc.stac", "odc.geo"), "odc", "the xarray loader (load_xarray, load_group)")
    import odc.stac
    from odc.geo.geobox import GeoBox

    from geomoe.chips.grid import CHIP_METERS, item_bounds, item_epsg

    items = list(items)
    epsgs = {item_epsg(it) for it in items}
    if epsg is None:
        if len(epsgs) != 1:
            raise RasterFormatError(f"items span CRSs {sorted(epsgs)}: pass epsg= (geomoe never mixes zones)")
        epsg = epsgs.pop()
    items = [it for it in items if item_epsg(it) == epsg]
    keys = {band_keys(it) for it in items}
    if len(keys) != 1:
        raise RasterFormatError("items name their band assets differently; load them separately")
    keys_t = keys.pop()
    if bbox is None:
        bs = [item_bounds(it) for it in items]
        if any(b is None for b in bs):
            raise RasterFormatError("pass bbox=: some items have no proj:bbox/proj:transform")
        bbox = (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))
    m = CHIP_METERS
    snapped = (
        math.floor(bbox[0] / m) * m,
        math.floor(bbox[1] / m) * m,
        math.ceil(bbox[2] / m) * m,
        math.ceil(bbox[3] / m) * m,
    )
    gb = GeoBox.from_bbox(snapped, crs=f"EPSG:{epsg}", resolution=resolution)
    ds = odc.stac.load(
        items,
        bands=list(keys_t),
        geobox=gb,
        groupby="solar_day",
        resampling="nearest",
        dtype="uint16",
        nodata=0,
        chunks={"x": chunk, "y": chunk},
        patch_url=patch_url or default_patch_url,
    )
    da = ds[list(keys_t)].to_array("band").transpose("time", "band", "y", "x")
    return da.assign_coords(band=list(BANDS))
