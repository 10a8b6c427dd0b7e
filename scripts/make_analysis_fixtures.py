"""Real-data fixtures of the cube analyses (probe on vector labels, change maps).

Deterministic: the same bundled data gives the same files (no timestamps; fixed thresholds).

    python scripts/make_analysis_fixtures.py ben-points tests/data/analysis/bigearthnet_labels19.gpkg
    python scripts/make_analysis_fixtures.py liverpool-labels tests/data/analysis/liverpool_weak_labels.gpkg
    python scripts/make_analysis_fixtures.py change-pair /tmp/change-catalog

- ``ben-points``: one point per bundled BigEarthNet-Landsat patch, at the centre of its raster
  (EPSG:4326), with ``labels_19`` = its BigEarthNet 19-class labels as a JSON list (how
  GeoPackage stores a string list; ``[]`` where the patch has no 19-class label: the probe must
  count it, not drop it silently).
- ``liverpool-labels``: **weak** land/water/urban polygons of the bundled Liverpool scene
  (LC08, 2020-09-27), derived from its own pixels, not from any survey:
  reflectance = DN * 2.75e-5 - 0.2; water where NDWI = (green - nir) / (green + nir) > 0.05;
  urban where not water, NDBI = (swir16 - nir) / (swir16 + nir) > -0.25, NDVI < 0.5 and
  red < 0.15 (built-up: SWIR near NIR, little vegetation, darker than sand); the rest land
  (vegetation, fields, beach). Bare fields can pass for urban: these are weak labels.
  The class raster is smoothed by a 15 x 15 pixel majority filter, regions under 400 pixels
  are sieved away, and ``rasterio.features.shapes`` turns it into polygons (EPSG:32630,
  the scene's CRS), kept when at least 1.44 km^2 (one chip).
- ``change-pair``: a static collection with two items over the Liverpool scene: the real
  2020-09-27 scene, and a copy dated 2021-09-27 in which one block of 3 x 2 chips (x 492000 to
  495600 m, y 5924400 to 5926800 m, EPSG:32630; on the fixed 1200 m chip grid) is replaced by
  real pixels of the bundled Greenland scene (LC08 005009, 2015-07-10; its central 120 x 80
  pixels, all seven bands). Everything else is byte-for-byte the same pixels, so a change map
  must light up in that block only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CATALOGS = REPO / "geomoe" / "data" / "catalogs"
LIVERPOOL = "LC08_L2SP_204023_20200927_20201006_02_T1"
GREENLAND = "LC08_L2SP_005009_20150710_20200908_02_T2"
BAND_FILES = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22")

#: The replaced block of the change pair: chip-aligned metres in EPSG:32630 (x0, y0, x1, y1).
CHANGE_BLOCK = (492000.0, 5924400.0, 495600.0, 5926800.0)
CHANGED_DATETIME = "2021-09-27T11:10:50Z"

WATER_NDWI = 0.05
URBAN_NDBI = -0.25
URBAN_NDVI_MAX = 0.5
URBAN_RED_MAX = 0.15


def ben_points(out: Path) -> Path:
    """Points at the bundled BigEarthNet patches' raster centres with their 19-class labels."""
    import geopandas as gpd
    import pystac
    import rasterio
    from pyproj import Transformer
    from shapely.geometry import Point

    from geomoe.evaluate.labels import to_ben19

    coll = pystac.read_file(str(CATALOGS / "bigearthnet-landsat-sample" / "collection.json"))
    rows = []
    for it in sorted(coll.get_items(), key=lambda i: i.id):
        it.make_asset_hrefs_absolute()
        with rasterio.open(it.assets["red"].get_absolute_href()) as src:
            b = src.bounds
            cx, cy = (b.left + b.right) / 2, (b.top + b.bottom) / 2
            lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(cx, cy)
        labels = it.properties.get("bigearthnet:labels_19")
        if labels is None:
            labels = to_ben19(it.properties.get("bigearthnet:labels") or [])
        rows.append({"patch_id": it.id, "labels_19": json.dumps(list(labels)),
                     "n_labels": len(labels), "geometry": Point(round(lon, 7), round(lat, 7))})
    gdf = gpd.GeoDataFrame(rows, crs="EPSG:4326")
    return _save(gdf, out)


def _reflectance(path: Path) -> tuple[np.ndarray, object, object]:
    import rasterio

    with rasterio.open(path) as src:
        dn = src.read(1)
        return np.where(dn > 0, dn * 2.75e-5 - 0.2, np.nan), src.transform, src.crs


def liverpool_labels(out: Path) -> Path:
    """Weak land/water/urban polygons of the Liverpool scene from its own pixels."""
    import geopandas as gpd
    import rasterio.features
    from scipy import ndimage
    from shapely.geometry import shape

    scene = CATALOGS / "landsat-scenes" / LIVERPOOL
    g, transform, crs = _reflectance(scene / "green.tif")
    nir, _, _ = _reflectance(scene / "nir08.tif")
    sw, _, _ = _reflectance(scene / "swir16.tif")
    red, _, _ = _reflectance(scene / "red.tif")
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = (g - nir) / (g + nir)
        ndbi = (sw - nir) / (sw + nir)
        ndvi = (nir - red) / (nir + red)
    cls = np.full(g.shape, 1, np.uint8)  # 1 land
    cls[(ndbi > URBAN_NDBI) & (ndvi < URBAN_NDVI_MAX) & (red < URBAN_RED_MAX)] = 3  # urban
    cls[ndwi > WATER_NDWI] = 2  # water
    valid = np.isfinite(g) & np.isfinite(nir) & np.isfinite(sw) & np.isfinite(red)
    cls[~valid] = 0
    # majority filter: the most frequent class in a 15 x 15 window
    votes = np.stack([ndimage.uniform_filter((cls == k).astype(np.float32), 15, mode="nearest")
                      for k in range(4)])
    smooth = votes.argmax(0).astype(np.uint8)
    smooth = rasterio.features.sieve(smooth, size=400)
    names = {1: "land", 2: "water", 3: "urban"}
    rows = []
    for geom, v in rasterio.features.shapes(smooth, transform=transform):
        if int(v) in names:
            poly = shape(geom)
            if poly.area >= 1200.0 * 1200.0:
                rows.append({"class": names[int(v)], "area_km2": round(poly.area / 1e6, 3),
                             "geometry": poly})
    gdf = gpd.GeoDataFrame(rows, crs=crs)
    gdf = gdf.sort_values(["class", "area_km2"], ascending=[True, False]).reset_index(drop=True)
    return _save(gdf, out)


def _save(gdf, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    gdf.to_file(out, driver="GPKG")
    return out


def change_pair(dst: Path) -> tuple[Path, tuple[float, float, float, float]]:
    """A two-item static collection: the Liverpool scene and a changed copy a year later.

    Returns the collection.json and the replaced block's bounds (EPSG:32630 metres).
    """
    import pystac
    import rasterio

    dst = Path(dst)
    src_dir = CATALOGS / "landsat-scenes" / LIVERPOOL
    a_dir = dst / LIVERPOOL
    shutil.copytree(src_dir, a_dir)
    b_id = f"{LIVERPOOL}-block-changed"
    b_dir = dst / b_id
    b_dir.mkdir(parents=True)
    x0, y0, x1, y1 = CHANGE_BLOCK
    for name in BAND_FILES:
        with rasterio.open(src_dir / f"{name}.tif") as src:
            arr, profile, tr = src.read(1), src.profile, src.transform
        # native pixels the fixed grid's pixels of the block take (west/north edge rule)
        c0 = int(round((x0 + 15 - tr.c) / tr.a))
        c1 = int(round((x1 - 15 - tr.c) / tr.a)) + 1
        r0 = int(round((y1 - 15 - tr.f) / tr.e))
        r1 = int(round((y0 + 15 - tr.f) / tr.e)) + 1
        with rasterio.open(CATALOGS / "landsat-scenes" / GREENLAND / f"{name}.tif") as g:
            h, w = r1 - r0, c1 - c0
            gr0, gc0 = (g.height - h) // 2, (g.width - w) // 2
            patch = g.read(1, window=((gr0, gr0 + h), (gc0, gc0 + w)))
        if (patch == 0).any():
            raise RuntimeError("the Greenland window holds fill pixels: choose another window")
        arr = arr.copy()
        arr[r0:r1, c0:c1] = patch
        with rasterio.open(b_dir / f"{name}.tif", "w", **profile) as out:
            out.write(arr, 1)
    item_a = pystac.Item.from_file(str(a_dir / f"{LIVERPOOL}.json"))
    d = json.loads((a_dir / f"{LIVERPOOL}.json").read_text())
    d["id"] = b_id
    d["properties"]["datetime"] = CHANGED_DATETIME
    d["properties"]["geomoe:fixture"] = (
        f"copy of {LIVERPOOL} with the block {CHANGE_BLOCK} (EPSG:32630) replaced by real pixels "
        f"of {GREENLAND}; made by scripts/make_analysis_fixtures.py")
    d["links"] = []
    (b_dir / f"{b_id}.json").write_text(json.dumps(d, indent=1))
    item_b = pystac.Item.from_file(str(b_dir / f"{b_id}.json"))
    coll = pystac.Collection(id="liverpool-change-pair", license="CC0-1.0",
                             description="Liverpool scene and a copy with one block replaced",
                             extent=pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                                  pystac.TemporalExtent([[None, None]])))
    for it in (item_a, item_b):
        it.make_asset_hrefs_absolute()
        coll.add_item(it)
    coll.normalize_hrefs(str(dst))
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return dst / "collection.json", CHANGE_BLOCK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["ben-points", "liverpool-labels", "change-pair"])
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    if a.what == "ben-points":
        print(ben_points(a.out))
    elif a.what == "liverpool-labels":
        print(liverpool_labels(a.out))
    else:
        print(change_pair(a.out)[0])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
