"""Attributes that let other tools find a cube group's embeddings: Zarr conventions.

Each data group of a cube carries, beside geomoe's own provenance and the CF ``spatial_ref``
that rioxarray reads:

- the geo-embeddings convention (``geoemb:``, github.com/geo-embeddings/embeddings-zarr-convention,
  tag v1): ``geoemb:type`` "chip", ``geoemb:dimensions``, ``geoemb:model`` (a reference to the
  STAC MLM Item written beside the store), ``geoemb:source_data``, ``geoemb:data_type``,
  ``geoemb:chip_layout``, ``geoemb:gsd`` and, on grid groups, ``geoemb:spatial_layout``
  "utm_zones" (one group per UTM zone);
- on grid groups, the ``proj:`` convention (github.com/zarr-experimental/geo-proj, v1):
  ``proj:code``; and the ``spatial:`` convention (github.com/zarr-conventions/spatial, v1):
  ``spatial:dimensions``, ``spatial:transform``, ``spatial:shape``, ``spatial:bbox``,
  ``spatial:registration``, describing the chip grid (one cell = one chip);
- ``zarr_conventions``: the registration objects of the conventions used, as their schemas
  require them.

The chip-table group (item-grid chips, each in its own CRS) has no single grid, so it carries
the ``geoemb:`` attributes only. Field names and values follow the convention texts; see
docs/conventions.md for the sources and for where geomoe departs from them.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from geomoe.chips.grid import CHIP_METERS, CHIP_PIXELS

#: Registration objects, as each convention's schema (v1 tags) fixes them.
GEOEMB_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/geo-embeddings/embeddings-zarr-convention/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/geo-embeddings/embeddings-zarr-convention/blob/v1/README.md",
    "uuid": "61c12cc5-0e28-4056-999a-480cf3fb7e4c",
    "name": "geoemb:",
    "description": "Geoembeddings convention for geospatial embedding arrays with model provenance",
}
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
}
SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}
#: The source data of every cube: Landsat 8/9 Collection 2 Level-2 surface reflectance.
LANDSAT_C2_L2 = "https://www.usgs.gov/landsat-missions/landsat-collection-2-level-2-science-products"
#: Landsat's ground sample distance (m): a chip is CHIP_PIXELS of it on a side.
LANDSAT_GSD = CHIP_METERS / CHIP_PIXELS


def stac_dir_name(store_name: str) -> str:
    """The folder of the cube's STAC documents, beside the store: ``cube.zarr.stac``."""
    return f"{store_name}.stac"


def model_reference(store_name: str) -> str:
    """``geoemb:model`` of a group: the MLM Item beside the store, as a reference relative to
    the group's own metadata file (``cube.zarr/<group>/zarr.json``)."""
    return posixpath.join("..", "..", stac_dir_name(store_name), "model.json")


def source_data(query: dict[str, Any]) -> list[str]:
    """``geoemb:source_data``: Landsat C2 L2, and the STAC API collection searched if it has a
    URL (a local catalog has none that holds beyond this machine)."""
    out = [LANDSAT_C2_L2]
    catalog = str((query or {}).get("catalog") or "")
    if catalog.lower().startswith(("http://", "https://")):
        out.append(catalog if catalog.lower().endswith(".json")
                   else f"{catalog.rstrip('/')}/collections/landsat-c2-l2")
    return out


def chip_layout(layout: str) -> dict[str, Any]:
    """``geoemb:chip_layout``: 40 x 40 pixel chips side by side, on geomoe's fixed 1200 m grid
    (grid groups) or each item's own grid (the chip table)."""
    if layout == "grid":
        return {"layout_type": "regular_grid", "chip_size": [CHIP_PIXELS, CHIP_PIXELS],
                "stride": [CHIP_PIXELS, CHIP_PIXELS], "grid_id": "geomoe-fixed-1200m"}
    return {"layout_type": "irregular", "chip_size": [CHIP_PIXELS, CHIP_PIXELS]}


def grid_transform(spec: Any) -> list[float]:
    """``spatial:transform`` of a grid group, [a, b, c, d, e, f] (rasterio's order): one cell is
    one chip (CHIP_METERS), (c, f) the north-west corner of the first chip."""
    x0 = float(spec.col_min) * CHIP_METERS
    y0 = float(spec.row_max + 1) * CHIP_METERS
    return [float(CHIP_METERS), 0.0, x0, 0.0, -float(CHIP_METERS), y0]


def group_conventions(spec: Any, *, dim: int, dtype: str, attrs: dict[str, Any],
                      store_name: str) -> dict[str, Any]:
    """The convention attributes of one cube group.

    Parameters
    ----------
    spec : geomoe.cube.layout.GridSpec or TableSpec
        The group.
    dim : int
        Embedding dimensions.
    dtype : str
        Storage type of the embeddings ("float32" or "float16").
    attrs : dict
        The cube's provenance attributes (``geomoe:query``, ``geomoe:version``).
    store_name : str
        The store's directory name (``cube.zarr``), for the model reference.

    Returns
    -------
    dict
        Attributes to add to the group (JSON values; lists and objects as the conventions
        define them).
    """
    grid = getattr(spec, "layout", "grid") == "grid"
    out: dict[str, Any] = {
        "zarr_conventions": [GEOEMB_CONVENTION] + ([PROJ_CONVENTION, SPATIAL_CONVENTION] if grid else []),
        "geoemb:type": "chip",
        "geoemb:dimensions": int(dim),
        "geoemb:model": model_reference(store_name),
        "geoemb:source_data": source_data(attrs.get("geomoe:query", {})),
        "geoemb:data_type": str(dtype),
        "geoemb:gsd": LANDSAT_GSD,
        "geoemb:chip_layout": chip_layout("grid" if grid else "table"),
        "geoemb:build_version": f"geomoe {attrs.get('geomoe:version', '?')}",
    }
    if grid:
        t = grid_transform(spec)
        x0, y1 = t[2], t[5]
        x1, y0 = x0 + spec.nx * CHIP_METERS, y1 - spec.ny * CHIP_METERS
        out.update({
            "geoemb:spatial_layout": "utm_zones",
            "proj:code": f"EPSG:{int(spec.epsg)}",
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": t,
            "spatial:shape": [int(spec.ny), int(spec.nx)],
            "spatial:bbox": [x0, y0, x1, y1],
            "spatial:registration": "pixel",
        })
    return out


def netcdf_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with every list and object JSON-encoded, for ``ds.to_netcdf()``: netCDF holds
    strings and numbers (netCDF3 not even lists of strings), not the arrays and objects the
    Zarr conventions need. Strings and numbers are kept as they are.

    ``ds.attrs = netcdf_attrs(ds.attrs)`` before writing a cube group to netCDF."""
    return {k: v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else json.dumps(v)
            for k, v in attrs.items()}
