"""The cube's STAC documents, written beside the store in ``<out>.stac/``.

- ``collection.json``: a Collection with the fields of the STAC embeddings extension proposal
  (github.com/geo-embeddings/embeddings-stac-specification: ``emb:type``, ``emb:dimensions``,
  ``data_type``, ``gsd``, ``emb:chip_layout``; links ``emb:model`` and ``emb:source-data``;
  ``item_assets.embeddings``);
- ``<group>.json``: one Item per cube group, its asset keyed ``embeddings`` (the store, with the
  arguments ``xarray.open_zarr`` needs), ``emb:runtime_parameters``, the source scenes as
  ``emb:source-data`` links and, for grid groups, the ``proj:`` fields of the chip grid;
- ``model.json``: a STAC MLM Item (github.com/stac-extensions/mlm) describing the model: name,
  architecture, input bands and shape, normalisation (from the checkpoint), output shape,
  total parameters, framework. The checkpoint is named by file name and sha256 (a path would
  only hold on the machine that ran).

The Zarr groups point at the same MLM Item (``geoemb:model``, :mod:`geomoe.cube.conventions`).
The folder is geomoe's: each document carries ``processing:software.geomoe``, and a folder or
file there that geomoe did not write is refused before a run starts, never replaced.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import shapely.geometry as sg
from shapely.ops import unary_union

from geomoe.atomic import atomic_write, read_json_object, remove_stale_tmp
from geomoe.chips.grid import CHIP_METERS, CHIP_PIXELS
from geomoe.cube.conventions import LANDSAT_GSD, chip_layout, grid_transform, source_data, stac_dir_name
from geomoe.cube.store import Cube, CubeWriteError

EMB_EXTENSION = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
MLM_EXTENSION = "https://stac-extensions.github.io/mlm/v1.5.1/schema.json"
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
ITEM_ASSETS_EXTENSION = "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
BANDS = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]
ZARR_TYPE = "application/vnd+zarr"


def stac_dir(out: str | os.PathLike) -> Path:
    """``cube.zarr`` -> ``cube.zarr.stac`` (beside the store, so the Zarr hierarchy stays pure)."""
    p = Path(out)
    return p.with_name(stac_dir_name(p.name))


def collection_path(out: str | os.PathLike) -> Path:
    return stac_dir(out) / "collection.json"


def stac_item_path(out: str | os.PathLike, group: str) -> Path:
    """The Item of one cube group."""
    return stac_dir(out) / f"{group}.json"


def model_item_path(out: str | os.PathLike) -> Path:
    return stac_dir(out) / "model.json"


def _is_geomoe_document(doc: dict | None) -> bool:
    if not isinstance(doc, dict):
        return False
    where = doc.get("properties") if doc.get("type") == "Feature" else doc
    software = where.get("processing:software") if isinstance(where, dict) else None
    return isinstance(software, dict) and "geomoe" in software


def check_cube_item_out(out: str | os.PathLike) -> None:
    """Refuse, before a run starts, anything at the STAC folder's place that geomoe did not
    write: a file instead of the folder, or a file in it that is not a geomoe STAC document.

    The folder beside a store is rewritten after every run; geomoe's documents (they carry
    ``processing:software.geomoe``) are safe to replace, anything else is never replaced."""
    folder = stac_dir(out)
    if not (folder.exists() or folder.is_symlink()):
        return
    if folder.is_symlink() or not folder.is_dir():
        raise CubeWriteError(
            f"{folder} exists and is not the STAC folder geomoe writes for a cube; it is where the "
            "cube's STAC documents go and is never replaced: move it, or choose another --out")
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") and ".tmp-" in p.name:
            continue  # a temp file of geomoe's own atomic write, killed mid-save
        doc = read_json_object(p) if p.is_file() and not p.is_symlink() else None
        if not _is_geomoe_document(doc):
            raise CubeWriteError(
                f"{p} is not a STAC document geomoe wrote for a cube; {folder} is where the cube's "
                "STAC documents go and nothing geomoe did not write is replaced: move it, or "
                "choose another --out")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _footprint(cube: Cube, items: list[dict]) -> Any:
    aoi = sg.shape(cube.attrs["geomoe:query"]["aoi"]["geometry"])
    foot = unary_union([sg.shape(i["geometry"]) for i in items if i.get("geometry")]) if items else None
    geom = aoi.intersection(foot) if foot is not None and not foot.is_empty else aoi
    return aoi if geom.is_empty else geom


def _times(items: list[dict]) -> list[str]:
    return sorted(i["properties"]["datetime"] for i in items if i.get("properties", {}).get("datetime"))


def _group_items(cube: Cube, group: str, items: list[dict]) -> list[dict]:
    spec = cube.specs[group]
    if spec.layout == "grid":
        ids = {i for day in spec.item_ids for i in day}
    else:
        ids = set(str(i) for i in spec.chips["item_id"])
    return [i for i in items if i["id"] in ids]


def _self_href(item: dict) -> str:
    return next((lk["href"] for lk in item.get("links", []) if lk.get("rel") == "self"), item["id"])


def model_item(cube: Cube) -> dict:
    """The STAC MLM Item (a dict) of the model that embedded ``cube``."""
    attrs = cube.attrs
    ident = attrs["geomoe:identity"]
    model = attrs.get("geomoe:model", {})
    cfg = dict(model.get("config") or {})
    norm = attrs.get("geomoe:normalisation") or {}
    total, encoder = _parameters(cfg)
    size = cfg.get("size") or ident.get("model_size")
    sha = ident["checkpoint_sha256"]
    name = model.get("checkpoint") or "checkpoint"
    meta_input = [{"name": field, "bands": [],
                   "input": {"shape": [-1, 2], "dim_order": ["batch", "encoding"], "data_type": "float32"},
                   "description": f"{field} of the acquisition as (sin, cos) (geomoe.chips.meta)"}
                  for field in cfg.get("metadata_order", ("week", "hour", "lat", "lon"))]
    props = {
        "datetime": attrs.get("geomoe:created") or _now(),
        "description": (f"geomoe's Mixture-of-Experts masked autoencoder, size {size}: one "
                        f"{int(ident['embed_dim'])}-dimensional vector per 40 x 40 pixel Landsat "
                        "chip, from the 7 surface-reflectance bands and the acquisition's week, "
                        "hour, latitude and longitude"),
        "mlm:name": f"geomoe-moe-mae-{size}",
        "mlm:architecture": "Vision Transformer (masked autoencoder, Mixture of Experts)",
        "mlm:tasks": ["similarity-search", "classification"],
        "mlm:framework": "PyTorch",
        "mlm:framework_version": _torch_version(),
        "mlm:total_parameters": total,
        "mlm:pretrained": True,
        "mlm:pretrained_source": "Landsat 8/9 Collection 2 Level-2 (self-supervised masked reconstruction)",
        "mlm:batch_size_suggestion": 256,
        "mlm:input": [{
            "name": "chips",
            "bands": list(cfg.get("bands") or BANDS),
            "input": {"shape": [-1, int(cfg.get("in_chans", 7)), int(cfg.get("img_size", CHIP_PIXELS)),
                                int(cfg.get("img_size", CHIP_PIXELS))],
                      "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
            "value_scaling": [{"type": "z-score", "mean": float(m), "stddev": float(s)}
                              for m, s in zip(norm.get("mean", []), norm.get("std", []))],
            "description": "raw Landsat C2 L2 DN of SR_B1..SR_B7 (no scale/offset), z-scored per "
                           "band with the checkpoint's statistics",
            "pre_processing_function": {"format": "python",
                                        "expression": "geomoe.model.mae:MoEMAE.preprocess"},
        }, *meta_input],
        "mlm:output": [{
            "name": "embedding",
            "tasks": ["similarity-search", "classification"],
            "result": {"shape": [-1, int(ident["embed_dim"])], "dim_order": ["batch", "embedding"],
                       "data_type": "float32"},
            "description": f"{ident['pooling']} pooling of the encoder tokens",
            "post_processing_function": None,
        }],
        "mlm:hyperparameters": {"pooling": ident["pooling"], "encoder_parameters": encoder,
                                **{k: v for k, v in cfg.items() if k not in ("norm_mean", "norm_std")}},
        "processing:software": {"geomoe": attrs.get("geomoe:version", "?")},
    }
    fmt = "safetensors" if name.endswith(".safetensors") else "pytorch"
    asset = {"href": f"./{name}", "type": f"application/octet-stream; application={fmt}",
             "title": f"checkpoint {name} (by name: not shipped beside the cube)",
             "roles": ["mlm:model", "mlm:weights", "data"],
             "file:checksum": "1220" + sha}  # multihash: sha2-256
    if fmt == "pytorch":
        asset["mlm:artifact_type"] = "torch.save"
    return {
        "type": "Feature", "stac_version": "1.1.0",
        "stac_extensions": [MLM_EXTENSION, PROCESSING_EXTENSION, FILE_EXTENSION],
        "id": f"geomoe-{size}-{sha[:12]}", "geometry": None,
        "properties": props, "assets": {"model": asset},
        "links": [{"rel": "collection", "href": "./collection.json", "type": "application/json"},
                  {"rel": "root", "href": "./collection.json", "type": "application/json"}],
    }


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except Exception:  # pragma: no cover - torch is a dependency
        return "?"


def _parameters(cfg: dict) -> tuple[int | None, int | None]:
    """(total, encoder) parameters of the model ``cfg`` describes, counted on the meta device
    (no memory, no weights needed)."""
    try:
        import torch

        from geomoe.model.config import ModelConfig
        from geomoe.model.mae import MoEMAE

        with torch.device("meta"):
            m = MoEMAE(ModelConfig.from_dict(cfg))
        return int(sum(p.numel() for p in m.parameters())), int(m.encoder_num_params())
    except Exception:
        return None, None


def group_item(cube: Cube, group: str, items: list[dict], cube_id: str) -> dict:
    """The STAC Item (a dict) of one cube group."""
    attrs = cube.attrs
    ident = attrs["geomoe:identity"]
    spec = cube.specs[group]
    mine = _group_items(cube, group, items)
    geom = _footprint(cube, mine)
    times = _times(mine)
    model = attrs.get("geomoe:model", {})
    props: dict[str, Any] = {
        "datetime": None,
        "start_datetime": times[0] if times else None,
        "end_datetime": times[-1] if times else None,
        "emb:runtime_parameters": {
            "pooling": ident["pooling"], "bands": BANDS, "chip_pixels": CHIP_PIXELS,
            "min_valid": attrs["geomoe:query"].get("min_valid"),
            "normalisation": attrs.get("geomoe:normalisation"),
            "model_size": ident["model_size"], "checkpoint": model.get("checkpoint"),
            "checkpoint_sha256": ident["checkpoint_sha256"],
        },
        "processing:software": {"geomoe": attrs.get("geomoe:version", "?")},
        "processing:datetime": _now(),
        "geomoe:group": group,
        "geomoe:layout": spec.layout,
        "geomoe:query": {k: v for k, v in attrs["geomoe:query"].items() if k != "aoi"},
    }
    if ident["dtype"] != "float32":
        props["emb:quantization"] = {"method": "cast", "original_dtype": "float32",
                                     "quantized_dtype": ident["dtype"]}
    if spec.layout == "grid":
        props.update({"proj:code": f"EPSG:{int(spec.epsg)}", "proj:shape": [int(spec.ny), int(spec.nx)],
                      "proj:transform": grid_transform(spec)})
    store = cube.path.name
    asset = {"href": f"../{store}", "type": ZARR_TYPE, "roles": ["data"],
             "title": f"embeddings of cube group {group} ({spec.layout} layout)",
             "xarray:open_kwargs": {"engine": "zarr", "group": group, "consolidated": False,
                                    "decode_coords": "all"}}
    links = [{"rel": "collection", "href": "./collection.json", "type": "application/json"},
             {"rel": "parent", "href": "./collection.json", "type": "application/json"},
             {"rel": "root", "href": "./collection.json", "type": "application/json"},
             {"rel": "emb:model", "href": "./model.json", "type": "application/geo+json",
              "title": "the model, as a STAC MLM Item"}]
    links += [{"rel": "emb:source-data", "href": _self_href(i), "title": i["id"]} for i in mine]
    return {
        "type": "Feature", "stac_version": "1.1.0",
        "stac_extensions": [EMB_EXTENSION, PROCESSING_EXTENSION]
        + ([PROJECTION_EXTENSION] if spec.layout == "grid" else []),
        "id": f"{cube_id}-{group}", "collection": cube_id,
        "geometry": sg.mapping(geom), "bbox": list(geom.bounds),
        "properties": props, "links": links, "assets": {"embeddings": asset},
    }


def cube_collection(cube: Cube, cube_id: str, items: list[dict]) -> dict:
    """The STAC Collection (a dict) of ``cube``."""
    attrs = cube.attrs
    ident = attrs["geomoe:identity"]
    geom = _footprint(cube, items)
    times = _times(items)
    layouts = {s.layout for s in cube.specs.values()}
    layout = chip_layout("grid" if layouts == {"grid"} else "table")
    if layouts != {"grid"}:  # the emb: extension's enum has no "irregular"
        layout = {**layout, "layout_type": "variable_grid"}
    fields = {"emb:type": "chip", "emb:dimensions": int(ident["embed_dim"]), "data_type": ident["dtype"]}
    links = [{"rel": "root", "href": "./collection.json", "type": "application/json"},
             {"rel": "emb:model", "href": "./model.json", "type": "application/geo+json",
              "title": "the model, as a STAC MLM Item"}]
    links += [{"rel": "emb:source-data", "href": h, "title": "source data"}
              for h in source_data(attrs["geomoe:query"])]
    links += [{"rel": "item", "href": f"./{g}.json", "type": "application/geo+json", "title": g}
              for g in cube.specs]
    return {
        "type": "Collection", "stac_version": "1.1.0",
        "stac_extensions": [EMB_EXTENSION, ITEM_ASSETS_EXTENSION, PROCESSING_EXTENSION],
        "id": cube_id, "title": f"geomoe embedding cube {cube.path.name}",
        "description": ("Chip embeddings of Landsat 8/9 Collection 2 Level-2 scenes by geomoe: one "
                        "vector per 40 x 40 pixel (1200 m) chip and solar day, in a Zarr store with "
                        "one group per CRS."),
        "license": "other",
        "extent": {"spatial": {"bbox": [list(geom.bounds)]},
                   "temporal": {"interval": [[times[0] if times else None, times[-1] if times else None]]}},
        **fields,
        "gsd": CHIP_METERS,
        "emb:chip_layout": layout,
        "emb:temporal_resolution": "single_acquisition",
        "emb:fit_for_use": ["retrieval", "classification", "change_detection"],
        "item_assets": {"embeddings": {"type": ZARR_TYPE, "roles": ["data"],
                                       "title": "chip embeddings (a group of the Zarr store)"}},
        "summaries": {k: [v] for k, v in fields.items()} | {"gsd": [CHIP_METERS]},
        "processing:software": {"geomoe": attrs.get("geomoe:version", "?")},
        "geomoe:pixel_gsd": LANDSAT_GSD,
        "links": links,
    }


def cube_stac(cube: Cube) -> dict[str, dict]:
    """Every STAC document of ``cube``, by file name in its STAC folder."""
    items = cube.items()
    cube_id = cube.path.name.removesuffix(".zarr") or "cube"
    docs = {"collection.json": cube_collection(cube, cube_id, items), "model.json": model_item(cube)}
    for g in cube.specs:
        docs[f"{g}.json"] = group_item(cube, g, items, cube_id)
    return docs


def write_cube_item(cube: Cube) -> Path:
    """Write the cube's STAC documents atomically into ``<store>.stac/`` (the Items first, the
    Collection last); returns the Collection's path."""
    folder = stac_dir(cube.path)
    folder.mkdir(exist_ok=True)
    remove_stale_tmp(folder)
    docs = cube_stac(cube)
    coll = docs.pop("collection.json")
    for name, doc in docs.items():
        atomic_write(folder / name, json.dumps(doc, indent=1, default=str))
    return atomic_write(folder / "collection.json", json.dumps(coll, indent=1, default=str))
