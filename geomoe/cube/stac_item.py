"""A STAC Item describing a cube, with the STAC embeddings extension fields.

Fields follow the embeddings extension proposal (emb:type, emb:dimensions, data_type,
gsd, emb:chip_layout, emb:runtime_parameters, processing:datetime, links rel
emb:source-data) so catalogs can index geomoe's output. The model is named by checkpoint file
name and sha256 in emb:runtime_parameters; no emb:model link, since a local checkpoint has no
URL (a path would only hold on the machine that ran). The item is written
beside the store (``cube.zarr`` -> ``cube.zarr.stac-item.json``) so the Zarr hierarchy
stays pure; one asset per cube group, with the open arguments xarray needs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import shapely.geometry as sg
from shapely.ops import unary_union

from geomoe.atomic import atomic_write, read_json_object
from geomoe.cube.store import Cube, CubeWriteError
from geomoe.chips.grid import CHIP_METERS

EMB_EXTENSION = "https://stac-extensions.github.io/embeddings/v0.1.0/schema.json"


def stac_item_path(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_name(p.name + ".stac-item.json")


def check_cube_item_out(out: str | os.PathLike) -> None:
    """Refuse, before a run starts, a file at the item's path that geomoe did not write.

    The item beside a store is rewritten after every run; a geomoe item (its properties carry
    ``processing:software.geomoe``) is safe to replace, anything else is never replaced."""
    path = stac_item_path(out)
    if not (path.exists() or path.is_symlink()):
        return
    doc = read_json_object(path) if path.is_file() and not path.is_symlink() else None
    props = doc.get("properties") if doc is not None else None
    software = props.get("processing:software") if isinstance(props, dict) else None
    if not (isinstance(software, dict) and "geomoe" in software):
        raise CubeWriteError(
            f"{path} exists and is not a STAC item geomoe wrote for a cube; it is where the cube's "
            "item goes and is never replaced: move it, or choose another --out")


def cube_item(cube: Cube) -> dict:
    """The STAC Item (a dict) for ``cube``."""
    attrs = cube.attrs
    ident = attrs["geomoe:identity"]
    items = cube.items()
    aoi = sg.shape(attrs["geomoe:query"]["aoi"]["geometry"])
    foot = unary_union([sg.shape(i["geometry"]) for i in items if i.get("geometry")])
    geom = aoi.intersection(foot) if not foot.is_empty else aoi
    if geom.is_empty:
        geom = aoi
    times = sorted(i["properties"].get("datetime") for i in items if i["properties"].get("datetime"))
    layouts = {s.layout for s in cube.specs.values()}
    chip_layout = {"layout_type": "regular_grid" if layouts == {"grid"} else "variable_grid",
                   "chip_size": [40, 40], "stride": [40, 40],
                   "grid_id": "geomoe-fixed-1200m-per-crs" if "grid" in layouts else "item-grid"}
    name = cube.path.name
    assets = {}
    for g, spec in cube.specs.items():
        assets[g] = {
            "href": f"./{name}", "type": "application/vnd+zarr", "roles": ["data", "embeddings"],
            "title": f"embedding cube group {g} ({spec.layout} layout)",
            "xarray:open_kwargs": {"engine": "zarr", "group": g, "consolidated": False,
                                   "decode_coords": "all"},
        }
        if spec.layout == "grid":
            assets[g]["proj:code"] = f"EPSG:{spec.epsg}"
    model = attrs.get("geomoe:model", {})
    props = {
        "datetime": None,
        "start_datetime": times[0] if times else None,
        "end_datetime": times[-1] if times else None,
        "emb:type": "chip",
        "emb:dimensions": int(ident["embed_dim"]),
        "data_type": ident["dtype"],
        "gsd": CHIP_METERS,
        "emb:chip_layout": chip_layout,
        "emb:temporal_resolution": "single_acquisition",
        "emb:runtime_parameters": {
            "pooling": ident["pooling"], "bands": ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"],
            "chip_pixels": 40, "min_valid": attrs["geomoe:query"].get("min_valid"),
            "normalisation": attrs.get("geomoe:normalisation"),
            "model_size": ident["model_size"], "checkpoint": model.get("checkpoint"),
            "checkpoint_sha256": ident["checkpoint_sha256"],
        },
        "emb:quantization": {"method": "none", "original_dtype": "float32",
                             "quantized_dtype": ident["dtype"]},
        "processing:software": {"geomoe": attrs.get("geomoe:version", "?")},
        "processing:datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "geomoe:query": {k: v for k, v in attrs["geomoe:query"].items() if k != "aoi"},
    }
    links = [{"rel": "emb:source-data", "href": next((l["href"] for l in i.get("links", [])
                                                      if l.get("rel") == "self"), i["id"]),
              "title": i["id"]} for i in items]
    return {
        "type": "Feature", "stac_version": "1.1.0",
        "stac_extensions": [EMB_EXTENSION,
                            "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
                            "https://stac-extensions.github.io/projection/v2.0.0/schema.json"],
        "id": name.removesuffix(".zarr") or "cube",
        "geometry": sg.mapping(geom), "bbox": list(geom.bounds),
        "properties": props, "links": links, "assets": assets,
    }


def write_cube_item(cube: Cube) -> Path:
    """Write the item atomically beside the store; returns its path."""
    return atomic_write(stac_item_path(cube.path), json.dumps(cube_item(cube), indent=1, default=str))
