"""Build the bundled STAC catalog (`catalogs/`) from the real data in `../shared/data`.

Reproducible: `python scripts/build_catalog.py --source ../shared/data --out geomoe/data/catalogs` rewrites the same files
(no creation timestamps are written; GDAL writes none into the COGs). Layout:

    catalogs/catalog.json                         root, children below
    catalogs/bigearthnet-landsat-sample/          200 BigEarthNet-Landsat patches, one item each
    catalogs/landsat-scenes/                      Liverpool 7-band crop + 2 QA_PIXEL scenes
    catalogs/test-fixtures/manaus-no-coastal/     NOT linked from the root: an LC09 item without
                                                  SR_B1 (`coastal`), for missing-band tests
    catalogs/aois/*.geojson                       AOIs for demos and tests

Every band becomes a single-band uint16 COG (nodata 0, deflate) so every STAC reader (odc-stac,
stackstac, rasterio) can open one asset per band, exactly like Planetary Computer's layout.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape

from geomoe.atomic import atomic_write
from geomoe.chips.bands import BANDS, COMMON_NAMES, NODATA, SR_OFFSET, SR_SCALE
from geomoe.errors import GeomoeError
from geomoe.evaluate.labels import to_ben19

STAC_VERSION = "1.1.0"
EXT_PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EXT_RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
EXT_EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
EXT_CLASS = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

#: OLI band centre wavelengths and widths (um), SR_B1..SR_B7.
_WAVE = {
    "SR_B1": (0.44, 0.02, "Coastal/Aerosol"),
    "SR_B2": (0.48, 0.06, "Visible blue"),
    "SR_B3": (0.56, 0.06, "Visible green"),
    "SR_B4": (0.65, 0.04, "Visible red"),
    "SR_B5": (0.87, 0.03, "Near infrared"),
    "SR_B6": (1.61, 0.09, "Short-wave infrared 1.6"),
    "SR_B7": (2.2, 0.19, "Short-wave infrared 2.2"),
}

#: QA_PIXEL bits the chips reader masks on (same structure as Planetary Computer's items).
_QA_BITS = [
    (0, "fill", "Image or fill data"),
    (1, "dilated_cloud", "Dilated cloud"),
    (2, "cirrus", "Cirrus mask"),
    (3, "cloud", "Cloud mask"),
    (4, "cloud_shadow", "Cloud shadow mask"),
    (5, "snow", "Snow/Ice mask"),
    (6, "clear", "Cloud or dilated cloud bits set"),
    (7, "water", "Water mask"),
]

BEN_ID = re.compile(r"^S2[AB]_MSIL2A_(\d{8})T(\d{5,6})_\d+_\d+$")

LANDSAT_PROVIDERS = [
    {"name": "USGS", "roles": ["producer", "licensor"], "url": "https://www.usgs.gov/landsat-missions"},
]


class CatalogBuildError(GeomoeError):
    """The source data for the bundled catalog is missing or not what the builder expects."""


# ----------------------------------------------------------------------------- helpers


def ben_datetime(item_id: str) -> dt.datetime:
    """Sentinel-2 acquisition time from a BigEarthNet id, UTC.

    Some ids carry a 5-digit time (`T95032` = 09:50:32: the leading zero was lost upstream).
    """
    m = BEN_ID.match(item_id)
    if not m:
        raise CatalogBuildError(
            f"{item_id!r} is not a BigEarthNet id like S2A_MSIL2A_20170613T101031_11_66"
        )
    day, hms = m.groups()
    hms = hms.zfill(6)
    return dt.datetime.strptime(day + hms, "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_cog(path: Path, data: np.ndarray, crs: Any, transform: Any, nodata: int | None) -> None:
    """One band (H, W) uint16 -> a deflate COG (tiles 256 px; tiny rasters become one tile)."""
    def write(tmp: Path) -> None:
        # rasterio writes COG-driver files through an in-memory copy (GDAL COG is CreateCopy-only)
        with rasterio.open(tmp, "w", driver="COG", width=data.shape[1], height=data.shape[0],
                           count=1, dtype="uint16", crs=crs, transform=transform, nodata=nodata,
                           compress="DEFLATE", predictor=2, blocksize=256, overviews="NONE") as cog:
            cog.write(data.astype(np.uint16, copy=False), 1)

    atomic_write(path, write)


def _footprint(crs: Any, bounds: tuple[float, float, float, float], densify: int = 1) -> dict:
    """Raster bounds -> WGS84 polygon GeoJSON (edges densified for large rasters)."""
    minx, miny, maxx, maxy = bounds
    ring = []
    for (x0, y0), (x1, y1) in [((minx, miny), (maxx, miny)), ((maxx, miny), (maxx, maxy)),
                               ((maxx, maxy), (minx, maxy)), ((minx, maxy), (minx, miny))]:
        for k in range(densify):
            f = k / densify
            ring.append((x0 + (x1 - x0) * f, y0 + (y1 - y0) * f))
    ring.append(ring[0])
    geom = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    return _round_geom(geom)


def _round_geom(geom: dict, nd: int = 7) -> dict:
    def r(c: Any) -> Any:
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            return [round(float(v), nd) for v in c]
        return [r(v) for v in c]

    return {"type": geom["type"], "coordinates": r(geom["coordinates"])}


def _bbox(geom: dict) -> list[float]:
    return [round(v, 7) for v in shape(geom).bounds]


def _proj_props(epsg: int, shape_hw: tuple[int, int], transform: Any) -> dict:
    h, w = shape_hw
    t = transform
    minx, maxy = t.c, t.f
    maxx, miny = t.c + t.a * w, t.f + t.e * h
    return {
        "proj:code": f"EPSG:{epsg}",
        "proj:epsg": epsg,  # stackstac 0.5 reads only proj:epsg
        "proj:shape": [h, w],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "proj:bbox": [minx, miny, maxx, maxy],
    }


def _write_band_cogs(folder: Path, data: np.ndarray, crs: Any, transform: Any) -> dict[str, dict]:
    """Write a (7, H, W) SR_B1..SR_B7 DN stack as one 30 m COG per band; their asset dicts by key."""
    assets = {}
    for i, band in enumerate(BANDS):
        key = COMMON_NAMES[band]
        _write_cog(folder / f"{key}.tif", data[i], crs, transform, NODATA)
        assets[key] = _band_asset(band, f"./{key}.tif", 30.0)
    return assets


def _band_asset(band: str, href: str, gsd: float) -> dict:
    centre, fwhm, desc = _WAVE[band]
    return {
        "href": href,
        "type": COG_TYPE,
        "title": f"{desc} ({band})",
        "roles": ["data", "reflectance"],
        "eo:bands": [{"name": band, "common_name": COMMON_NAMES[band],
                      "center_wavelength": centre, "full_width_half_max": fwhm}],
        "raster:bands": [{"nodata": NODATA, "data_type": "uint16", "scale": SR_SCALE,
                          "offset": SR_OFFSET, "spatial_resolution": gsd, "unit": "DN"}],
    }


def _qa_asset(href: str, gsd: float) -> dict:
    return {
        "href": href,
        "type": COG_TYPE,
        "title": "Pixel Quality Assessment Band (QA_PIXEL)",
        "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
        "raster:bands": [{"nodata": 1, "data_type": "uint16", "unit": "bit index",
                          "spatial_resolution": gsd}],
        "classification:bitfields": [
            {"name": name, "offset": off, "length": 1, "description": desc,
             "classes": [{"name": f"not_{name}", "value": 0}, {"name": name, "value": 1}]}
            for off, name, desc in _QA_BITS
        ],
    }


def _item(item_id: str, geom: dict, props: dict, assets: dict, collection: str,
          extensions: list[str]) -> dict:
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": item_id,
        "geometry": geom,
        "bbox": _bbox(geom),
        "properties": props,
        "links": [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
        ],
        "assets": assets,
        "collection": collection,
    }


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _collection(cid: str, title: str, description: str, items: list[dict], license_: str,
                providers: list[dict], extra: dict, root: bool = True) -> dict:
    bboxes = np.array([it["bbox"] for it in items])
    times = sorted(it["properties"]["datetime"] for it in items)
    links = [{"rel": "root", "href": "../catalog.json" if root else "./collection.json",
              "type": "application/json"}]
    if root:
        links.append({"rel": "parent", "href": "../catalog.json", "type": "application/json"})
    links += [{"rel": "license", "href": "./LICENSE", "type": "text/plain"}]
    links += [{"rel": "item", "href": f"./{it['id']}/{it['id']}.json",
               "type": "application/geo+json"} for it in sorted(items, key=lambda i: i["id"])]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": cid,
        "title": title,
        "description": description,
        "license": license_,
        "providers": providers,
        "extent": {
            "spatial": {"bbox": [[float(bboxes[:, 0].min()), float(bboxes[:, 1].min()),
                                  float(bboxes[:, 2].max()), float(bboxes[:, 3].max())]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        **extra,
        "links": links,
    }


# ----------------------------------------------------------------------------- BigEarthNet


def build_bigearthnet(source: Path, out: Path) -> list[dict]:
    """200 patches -> one item each, 7 single-band COGs, labels as properties."""
    src = source / "bigearthnet-landsat-sample"
    images = sorted((src / "images").glob("*.tif"))
    if len(images) == 0:
        raise CatalogBuildError(f"no BigEarthNet images under {src / 'images'}: pass --source "
                                "pointing at the shared data folder")
    cid = "bigearthnet-landsat-sample"
    items = []
    for img in images:
        item_id = img.stem
        when = ben_datetime(item_id)
        with rasterio.open(img) as ds:
            if ds.count != 7:
                raise CatalogBuildError(f"{img} has {ds.count} bands, expected 7 (SR_B1..SR_B7)")
            data = ds.read()
            crs, transform, epsg = ds.crs, ds.transform, ds.crs.to_epsg()
            bounds = ds.bounds
        folder = out / cid / item_id
        assets = _write_band_cogs(folder, data, crs, transform)
        label_file = src / "labels" / f"{item_id}_labels_metadata.json"
        props: dict[str, Any] = {"datetime": _iso(when)}
        if label_file.exists():
            meta = json.loads(label_file.read_text())
            labels = list(meta["labels"])
            props["bigearthnet:labels"] = labels
            props["bigearthnet:labels_19"] = to_ben19(labels)
            props["bigearthnet:labels_missing"] = False
            props["bigearthnet:tile_source"] = meta.get("tile_source")
        else:
            props["bigearthnet:labels"] = []
            props["bigearthnet:labels_19"] = []
            props["bigearthnet:labels_missing"] = True
        props.update({
            "geomoe:datetime_source": "sentinel-2 acquisition in the patch id; the Landsat "
                                      "scene's own date (within about 2 months) is unknown",
            "geomoe:chip_grid": "item",
            "platform": "landsat-8",
            "instruments": ["oli"],
            "constellation": "landsat",
            "gsd": 30.0,
            **_proj_props(epsg, data.shape[1:], transform),
        })
        geom = _footprint(crs, tuple(bounds))
        items.append(_item(item_id, geom, props, assets, cid, [EXT_PROJ, EXT_RASTER, EXT_EO]))
    for it in items:
        _dump(out / cid / it["id"] / f"{it['id']}.json", it)
    coll = _collection(
        cid, "BigEarthNet-Landsat sample (200 patches)",
        "200 BigEarthNet-Landsat patches (41-45 px, 30 m, Landsat 8 OLI SR_B1..SR_B7 DN) from the "
        "geo-moe-mae sample_dataset, with their BigEarthNet CORINE labels (43 classes) and the "
        "19-class nomenclature. `datetime` is the Sentinel-2 acquisition encoded in the patch id; "
        "the matching Landsat scene (least cloudy within about +-2 months) has no stored date. "
        "One patch (S2A_MSIL2A_20171208T093351_82_79) has no label file: "
        "`bigearthnet:labels_missing` is true there.",
        items, "MIT AND CDLA-Permissive-1.0",
        [{"name": "BigEarthNet (TU Berlin)", "roles": ["licensor"], "url": "https://bigearth.net"},
         {"name": "geo-moe-mae authors", "roles": ["processor"],
          "url": "https://github.com/AlbughdadiM/geo-moe-mae"},
         *LANDSAT_PROVIDERS],
        {"geomoe:chip_grid": "item"},
    )
    _dump(out / cid / "collection.json", coll)
    (out / cid / "LICENSE").write_text(BEN_LICENSE)
    return items


# ----------------------------------------------------------------------------- Landsat scenes


def _mtl_value(text: str, key: str) -> str:
    m = re.search(rf"^\s*{key} = \"?([^\"\n]+)\"?$", text, re.M)
    if not m:
        raise CatalogBuildError(f"MTL has no {key}")
    return m.group(1).strip()


def _mtl_datetime(text: str) -> dt.datetime:
    day = _mtl_value(text, "DATE_ACQUIRED")
    hms = _mtl_value(text, "SCENE_CENTER_TIME").rstrip("Z")[:8]
    return dt.datetime.strptime(f"{day}T{hms}", "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=dt.timezone.utc)


def _landsat_props(when: dt.datetime, platform: str, epsg: int, shape_hw: tuple[int, int],
                   transform: Any, gsd: float, cloud: float | None, extra: dict) -> dict:
    props: dict[str, Any] = {
        "datetime": _iso(when),
        "platform": platform,
        "instruments": ["oli", "tirs"],
        "constellation": "landsat",
        "gsd": gsd,
    }
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    props.update(extra)
    props.update(_proj_props(epsg, shape_hw, transform))
    return props


def build_liverpool(source: Path, out: Path, cid: str = "landsat-scenes") -> dict:
    """The xlandsat Liverpool crop: 7 SR bands at 30 m, split into per-band COGs."""
    src = source / "xlandsat-l2sp"
    stacks = sorted(src.glob("*204023*_SR_stack.tif"))
    tars = sorted(src.glob("*204023*-cropped.tar.gz"))
    if not stacks or not tars:
        raise CatalogBuildError(f"Liverpool crop (*204023*) not found in {src}")
    with tarfile.open(tars[0]) as tf:
        mtl_name = next(n for n in tf.getnames() if n.endswith("_MTL.txt"))
        mtl = tf.extractfile(mtl_name).read().decode()
    item_id = mtl_name.removesuffix("_MTL.txt")
    when = _mtl_datetime(mtl)
    cloud = float(_mtl_value(mtl, "CLOUD_COVER"))
    with rasterio.open(stacks[0]) as ds:
        data = ds.read()
        descs = list(ds.descriptions)
        crs, transform, epsg, bounds = ds.crs, ds.transform, ds.crs.to_epsg(), ds.bounds
    if descs != list(BANDS):
        raise CatalogBuildError(f"{stacks[0]} bands are {descs}, expected {list(BANDS)}")
    folder = out / cid / item_id
    assets = _write_band_cogs(folder, data, crs, transform)
    props = _landsat_props(when, "landsat-8", epsg, data.shape[1:], transform, 30.0, cloud, {
        "landsat:wrs_path": "204", "landsat:wrs_row": "023",
        "landsat:collection_category": "T1", "landsat:collection_number": "02",
        "landsat:correction": "L2SP",
        "geomoe:note": "267x433 px crop (xlandsat sample) of the full scene; eo:cloud_cover is "
                       "the full scene's (MTL CLOUD_COVER). Georeferenced from the MTL "
                       "CORNER_*_PROJECTION_* values (pixel-centre corners, origin shifted by "
                       "half a pixel); the MTL's CORNER_*_LAT/LON are the full scene's.",
    })
    geom = _footprint(crs, tuple(bounds), densify=4)
    item = _item(item_id, geom, props, assets, cid, [EXT_PROJ, EXT_RASTER, EXT_EO])
    _dump(folder / f"{item_id}.json", item)
    return item


def build_qa_scene(scene_dir: Path, out: Path, cid: str = "landsat-scenes") -> dict:
    """A stactools test scene (512x512, ~450-520 m pixels): SR bands + QA_PIXEL as COGs."""
    stac_src = next(scene_dir.glob("*_SR_stac.json"))
    usgs = json.loads(stac_src.read_text())
    item_id = usgs["id"]
    mtl = next(scene_dir.glob("*_MTL.txt")).read_text()
    when = _mtl_datetime(mtl)  # the USGS 0.7 item has a date only; MTL has the centre time
    folder = out / cid / item_id
    assets = {}
    gsd = None
    for band in (*BANDS, "QA_PIXEL"):
        tif = scene_dir / f"{item_id}_{band}.TIF"
        with rasterio.open(tif) as ds:
            data = ds.read(1)
            crs, transform, epsg = ds.crs, ds.transform, ds.crs.to_epsg()
            shape_hw = data.shape
        gsd = round(float(abs(transform.a) + abs(transform.e)) / 2, 2)
        if band == "QA_PIXEL":
            _write_cog(folder / "qa_pixel.tif", data, crs, transform, 1)
            assets["qa_pixel"] = _qa_asset("./qa_pixel.tif", gsd)
        else:
            key = COMMON_NAMES[band]
            _write_cog(folder / f"{key}.tif", data, crs, transform, NODATA)
            assets[key] = _band_asset(band, f"./{key}.tif", gsd)
    p = usgs["properties"]
    geom = _round_geom(usgs["geometry"])  # the real data footprint (the raster corners are fill)
    props = _landsat_props(when, "landsat-8", epsg, shape_hw, transform, gsd,
                           float(p["eo:cloud_cover"]), {
        "view:sun_azimuth": p.get("eo:sun_azimuth"),
        "view:sun_elevation": p.get("eo:sun_elevation"),
        "landsat:cloud_cover_land": p.get("landsat:cloud_cover_land"),
        "landsat:wrs_path": p["landsat:wrs_path"].zfill(3),
        "landsat:wrs_row": p["landsat:wrs_row"].zfill(3),
        "landsat:scene_id": p.get("landsat:scene_id"),
        "landsat:collection_category": p.get("landsat:collection_category"),
        "landsat:collection_number": p.get("landsat:collection_number"),
        "landsat:correction": "L2SP",
        "geomoe:note": f"whole scene downsampled to 512x512 ({gsd} m pixels) by the stactools "
                       "landsat test data; true transform kept. Metadata from the real USGS "
                       "STAC item and MTL.",
    })
    item = _item(item_id, geom, props, assets, cid, [EXT_PROJ, EXT_RASTER, EXT_EO, EXT_CLASS])
    _dump(folder / f"{item_id}.json", item)
    return item


def build_landsat_scenes(source: Path, out: Path) -> list[dict]:
    cid = "landsat-scenes"
    items = [build_liverpool(source, out, cid)]
    for scene_dir in sorted((source / "landsat-scenes-qa").iterdir()):
        if scene_dir.is_dir():
            items.append(build_qa_scene(scene_dir, out, cid))
    coll = _collection(
        cid, "Landsat 8 Collection 2 Level-2 scenes",
        "Real Landsat 8 C2 L2 surface reflectance: a 30 m 7-band crop over Liverpool (xlandsat "
        "sample data, CC0) and two whole scenes downsampled to 512x512 with their QA_PIXEL band "
        "(Greenland 2015, Colombia 2019; stactools-packages/landsat test data, Apache-2.0).",
        items, "CC0-1.0 AND Apache-2.0", [*LANDSAT_PROVIDERS,
                           {"name": "xlandsat", "roles": ["processor"],
                            "url": "https://github.com/compgeolab/xlandsat"},
                           {"name": "stactools-packages/landsat", "roles": ["processor"],
                            "url": "https://github.com/stactools-packages/landsat"}],
        {"geomoe:chip_grid": "fixed"},
    )
    _dump(out / cid / "collection.json", coll)
    (out / cid / "LICENSE").write_text(SCENES_LICENSE)
    return items


def build_manaus_fixture(source: Path, out: Path) -> dict:
    """Test fixture: a 64x64 crop of the Manaus LC09 stack, which lacks SR_B1 (`coastal`)."""
    cid = "manaus-no-coastal"
    src = source / "xlandsat-l2sp"
    stack = next(src.glob("*231062*_SR_stack.tif"))
    item_id = stack.name.removesuffix("_SR_stack.tif")
    win = Window(200, 200, 64, 64)
    with rasterio.open(stack) as ds:
        data = ds.read(window=win)
        t = ds.transform  # (window_transform warns on rasterio 1.4: affine `*` deprecation)
        transform = rasterio.Affine(t.a, t.b, t.c + t.a * win.col_off, t.d, t.e,
                                    t.f + t.e * win.row_off)
        crs, epsg = ds.crs, ds.crs.to_epsg()
        descs = list(ds.descriptions)
    folder = out / "test-fixtures" / cid / item_id
    assets = {}
    for i, band in enumerate(descs):
        key = COMMON_NAMES[band]
        _write_cog(folder / f"{key}.tif", data[i], crs, transform, NODATA)
        assets[key] = _band_asset(band, f"./{key}.tif", 30.0)
    h, w = data.shape[1:]
    bounds = (transform.c, transform.f + transform.e * h, transform.c + transform.a * w,
              transform.f)
    with tarfile.open(next(src.glob("*231062*-cropped.tar.gz"))) as tf:
        mtl_name = next(n for n in tf.getnames() if n.endswith("_MTL.txt"))
        when = _mtl_datetime(tf.extractfile(mtl_name).read().decode())
    props = _landsat_props(when, "landsat-9", epsg, (h, w), transform, 30.0, None, {
        "geomoe:note": "TEST FIXTURE: 64x64 crop of the xlandsat Manaus sample, which has no "
                       "SR_B1; the `coastal` asset is deliberately absent.",
    })
    geom = _footprint(crs, bounds)
    item = _item(item_id, geom, props, assets, cid, [EXT_PROJ, EXT_RASTER, EXT_EO])
    item["links"] = [
        {"rel": "root", "href": "../collection.json", "type": "application/json"},
        {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        {"rel": "parent", "href": "../collection.json", "type": "application/json"},
    ]
    _dump(folder / f"{item_id}.json", item)
    coll = _collection(cid, "Test fixture: Landsat 9 item without the coastal band",
                       "For missing-band error tests only; not linked from catalogs/catalog.json.",
                       [item], "CC0-1.0", LANDSAT_PROVIDERS, {}, root=False)
    _dump(out / "test-fixtures" / cid / "collection.json", coll)
    (out / "test-fixtures" / cid / "LICENSE").write_text(XLANDSAT_LICENSE)
    return item


# ----------------------------------------------------------------------------- AOIs


def _fc(name: str, geom: dict, description: str, crs: str | None = None) -> dict:
    fc: dict[str, Any] = {"type": "FeatureCollection", "name": name}
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    fc["features"] = [{"type": "Feature", "properties": {"name": name, "description": description},
                       "geometry": geom}]
    return fc


def build_aois(out: Path, ben_items: list[dict], liverpool: dict) -> None:
    folder = out / "aois"
    union = np.array([it["bbox"] for it in [*ben_items, liverpool]])
    minx, miny = np.floor(union[:, :2].min(axis=0) - 1.0)
    maxx, maxy = np.ceil(union[:, 2:].max(axis=0) + 1.0)
    _dump(folder / "europe.geojson", _fc(
        "europe", mapping(box(minx, miny, maxx, maxy)),
        "Covers all 200 BigEarthNet-Landsat sample patches and the Liverpool crop."))
    lb = liverpool["bbox"]
    w, s, e, n = lb
    # the middle of the crop: the Mersey estuary and Liverpool/Birkenhead (inside the raster)
    cx, cy = (w + e) / 2, (s + n) / 2
    dx, dy = (e - w) * 0.2, (n - s) * 0.25
    _dump(folder / "liverpool.geojson", _fc(
        "liverpool", _round_geom(mapping(box(cx - dx, cy - dy, cx + dx, cy + dy)), 5),
        "Inside the Liverpool LC08 crop (2020-09-27)."))
    _dump(folder / "empty.geojson", _fc(
        "empty", mapping(box(-35.0, 30.0, -33.0, 32.0)),
        "Open North Atlantic: no bundled scene covers it (a 'no scenes' result)."))
    # crosses the antimeridian, written as GeoJSON RFC 7946 says (split into two polygons)
    _dump(folder / "antimeridian.geojson", _fc(
        "antimeridian",
        {"type": "MultiPolygon", "coordinates": [
            [[[170.0, -20.0], [180.0, -20.0], [180.0, -10.0], [170.0, -10.0], [170.0, -20.0]]],
            [[[-180.0, -20.0], [-170.0, -20.0], [-170.0, -10.0], [-180.0, -10.0],
              [-180.0, -20.0]]]]},
        "Fiji/Vanuatu region, 170E..170W: crosses the antimeridian, split in two (RFC 7946)."))
    (folder / "NOTICE").write_text(
        "AOIs written by geomoe's catalog builder (scripts/build_catalog.py); public domain (CC0).\n")


# ----------------------------------------------------------------------------- root


def build_catalog(source: Path | str, out: Path | str) -> dict[str, int]:
    """Regenerate the whole bundled catalog under `out`; returns item counts per collection."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise CatalogBuildError(f"source folder {source} does not exist: pass --source with the "
                                "shared data folder (../shared/data beside the checkout)")
    for sub in ("bigearthnet-landsat-sample", "landsat-scenes", "test-fixtures", "aois"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    ben = build_bigearthnet(source, out)
    scenes = build_landsat_scenes(source, out)
    build_manaus_fixture(source, out)
    build_aois(out, ben, scenes[0])
    root = {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": "geomoe-bundled",
        "title": "geomoe bundled catalog",
        "description": "Real Landsat C2 L2 data shipped with geomoe for demos and tests. Built by "
                       "scripts/build_catalog.py from ../shared/data.",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            {"rel": "child", "href": "./bigearthnet-landsat-sample/collection.json",
             "type": "application/json", "title": "BigEarthNet-Landsat sample"},
            {"rel": "child", "href": "./landsat-scenes/collection.json",
             "type": "application/json", "title": "Landsat 8 C2 L2 scenes"},
        ],
    }
    _dump(out / "catalog.json", root)
    (out / "NOTICE").write_text(ROOT_NOTICE)
    return {"bigearthnet-landsat-sample": len(ben), "landsat-scenes": len(scenes),
            "test-fixtures/manaus-no-coastal": 1}


ROOT_NOTICE = """geomoe bundled catalog: data and attribution

Built by scripts/build_catalog.py from real data. Landsat imagery
courtesy of the U.S. Geological Survey (public domain). Per-folder terms:

- bigearthnet-landsat-sample/: patches from the geo-moe-mae repository's sample_dataset
  (MIT licence, code and sample files); BigEarthNet labels under CDLA-Permissive-1.0
  (BigEarthNet, TU Berlin, https://bigearth.net). See bigearthnet-landsat-sample/LICENSE.
- landsat-scenes/: Liverpool crop from the xlandsat project sample data (CC0-1.0);
  Greenland and Colombia scenes from stactools-packages/landsat test data (Apache-2.0,
  full text in LICENSES/Apache-2.0.txt).
  See landsat-scenes/LICENSE.
- test-fixtures/: a crop of the xlandsat Manaus sample (CC0-1.0), for tests.
- aois/: written by geomoe (CC0-1.0).
The STAC metadata written by geomoe is CC0-1.0. LICENSES/ holds full licence texts (kept by
hand; the builder does not rewrite it).
"""

BEN_LICENSE = """BigEarthNet-Landsat sample (200 patches)

Imagery: Landsat 8 OLI Collection 2 Level-2, courtesy of the U.S. Geological Survey (public
domain). Patch extraction and sample: the geo-moe-mae repository's sample_dataset
(https://github.com/AlbughdadiM/geo-moe-mae), MIT License, copyright the geo-moe-mae authors:

  Permission is hereby granted, free of charge, to any person obtaining a copy of this software
  and associated documentation files (the "Software"), to deal in the Software without
  restriction, including without limitation the rights to use, copy, modify, merge, publish,
  distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
  Software is furnished to do so, subject to the following conditions:

  The above copyright notice and this permission notice shall be included in all copies or
  substantial portions of the Software.

  THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
  BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
  NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
  DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
  OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

Labels: BigEarthNet (Sumbul et al.; TU Berlin, https://bigearth.net), Community Data License
Agreement - Permissive, Version 1.0 (CDLA-Permissive-1.0, https://cdla.dev/permissive-1-0/).
Derived from CORINE Land Cover (Copernicus Land Monitoring Service, European Environment Agency).

Changes by geomoe: each 7-band patch split into 7 single-band deflate COGs with nodata 0 (pixel
values unchanged); labels copied into the STAC items and mapped to the 19-class nomenclature
(geomoe/evaluate/labels.py); `datetime` parsed from the patch id (the Sentinel-2 acquisition).
"""

XLANDSAT_LICENSE = """Landsat 8/9 crops from the xlandsat project sample data (https://github.com/compgeolab/xlandsat),
distributed under CC0-1.0 (public domain dedication). Landsat imagery courtesy of the U.S.
Geological Survey (public domain). Changes: georeferenced from the MTL corner coordinates and
split into single-band COGs.
"""

SCENES_LICENSE = XLANDSAT_LICENSE + """
Greenland (LC08_L2SP_005009_20150710) and Colombia (LC08_L2SP_008059_20191201) scenes: from the
stactools-packages/landsat test data (https://github.com/stactools-packages/landsat),
Apache License 2.0 (full text: ../LICENSES/Apache-2.0.txt). Landsat imagery courtesy of
the U.S. Geological Survey (public domain). Changes: rasters re-written as COGs unchanged in
value and transform; the USGS STAC 0.7 item re-written as a STAC 1.1 item (projection, raster,
eo, classification extensions) with the scene-centre time from the MTL.
"""


def main(argv: list[str] | None = None) -> int:
    import argparse

    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description="Rebuild geomoe's bundled STAC catalog from the shared real data.")
    p.add_argument("--source", default=str(repo.parent / "shared" / "data"),
                   help="real data folder (default: ../shared/data beside the checkout)")
    p.add_argument("--out", default=str(repo / "geomoe" / "data" / "catalogs"),
                   help="output folder (default: the bundled catalog, geomoe/data/catalogs)")
    args = p.parse_args(argv)
    try:
        counts = build_catalog(args.source, args.out)
    except CatalogBuildError as exc:
        print(f"build_catalog: error: {exc}", file=sys.stderr)
        return 1
    for name, n in counts.items():
        print(f"{name}: {n} items")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
