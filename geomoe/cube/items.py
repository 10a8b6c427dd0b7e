"""What a worker needs to embed any tile of a cube, stored in the cube's ``_geomoe/`` area.

Why: a worker that re-searched the catalog and re-planned the whole AOI paid minutes and GB
per process at continental scale. The process that creates the cube writes, once:

- ``_geomoe/item_table``: the source STAC items as a GeoParquet file (``id``, ``datetime``,
  ``epsg``, ``item``: the item's JSON, ``geometry``: its WGS84 footprint), sorted by id in
  small row groups, so loading a tile's few items reads little more than them;
- ``_geomoe/plan``: the group specs without chips, as JSON: grid geometry, time slices and
  the tile -> items index with each tile's estimated chip count (item-grid table groups with
  their chips, which are few).

Each is the bytes of a one-chunk uint8 Zarr array (the GeoParquet one uncompressed, so its
chunk file IS the Parquet file and is read in place with row-group pruning): a loose file in a
Zarr hierarchy would make zarr warn on every walk (consolidation, ``tree()``). An array counts
as written once its ``geomoe:nbytes`` attribute is set, after its data.

A worker opens these (:func:`load_specs`, :class:`ItemTable`) and never searches the catalog
or plans another tile.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from geomoe.cube.layout import GridSpec, Spec, TableSpec

PLAN_FILE = "_geomoe/plan"
ITEMS_FILE = "_geomoe/item_table"
PLAN_FORMAT = 1
_ROW_GROUP = 64  # items per Parquet row group: a tile's items are read with their groups only


def _write_bytes(path: str | os.PathLike, name: str, data: bytes, compress: bool, what: str) -> None:
    """``data`` as the one-chunk uint8 array ``name`` of the cube at ``path``; complete once
    its ``geomoe:nbytes`` attribute is set (last)."""
    import zarr

    arr = zarr.create_array(str(path), name=name, shape=(max(len(data), 1),), chunks=(max(len(data), 1),),
                            dtype="uint8", fill_value=0, overwrite=True, dimension_names=["byte"],
                            **({} if compress else {"compressors": None}))
    arr[: len(data)] = np.frombuffer(data, np.uint8)
    arr.attrs.update({"description": what, "geomoe:nbytes": len(data)})


def _complete(path: str | os.PathLike, name: str) -> int | None:
    """Bytes held by the array ``name`` if it was written completely, else None."""
    import zarr

    try:
        n = zarr.open_array(str(path), path=name, mode="r").attrs.get("geomoe:nbytes")
    except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError, zarr.errors.ArrayNotFoundError):
        return None
    return None if n is None else int(n)


def _read_bytes(path: str | os.PathLike, name: str) -> bytes:
    import zarr

    n = _complete(path, name)
    if n is None:
        raise FileNotFoundError(f"{Path(path) / name} is missing or unfinished")
    return zarr.open_array(str(path), path=name, mode="r")[:n].tobytes()


# ---------------------------------------------------------------- specs
def spec_to_json(spec: Spec) -> dict[str, Any]:
    """A spec as JSON: grid geometry and tile index (item ids by number), or the table's chips."""
    if isinstance(spec, TableSpec):
        c = spec.chips
        return {"layout": "table", "name": spec.name, "tile_size": int(spec.tile_size),
                "chips": {"epsg": c["epsg"].astype(int).tolist(), "row": c["row"].astype(int).tolist(),
                          "col": c["col"].astype(int).tolist(),
                          "time": c["time"].astype("datetime64[s]").astype(np.int64).tolist(),
                          "item_id": [str(v) for v in c["item_id"]]}}
    ids = sorted(spec.item_day)
    num = {i: k for k, i in enumerate(ids)}
    return {
        "layout": "grid", "name": spec.name, "epsg": int(spec.epsg), "row_max": int(spec.row_max),
        "col_min": int(spec.col_min), "ny": int(spec.ny), "nx": int(spec.nx), "tile_size": int(spec.tile_size),
        "days": [str(d) for d in spec.days],
        "times": spec.times.astype("datetime64[ns]").astype(np.int64).tolist(),
        "item_ids": spec.item_ids, "items": ids, "item_day": [str(spec.item_day[i]) for i in ids],
        "time_day": [[int(np.datetime64(t, "s").astype(np.int64)), str(d)] for t, d in spec.time_day.items()],
        "source": spec.source,
        # [ty, tx, estimated chips, item numbers...] per tile
        "tiles": [[int(k[0]), int(k[1]), int(spec.tile_estimate.get(k, 0)), *(num[i] for i in v)]
                  for k, v in sorted(spec.tile_items.items())],
    }


def spec_from_json(d: dict[str, Any]) -> Spec:
    """Inverse of :func:`spec_to_json`."""
    if d["layout"] == "table":
        c = d["chips"]
        chips = np.empty(len(c["row"]), dtype=[("epsg", "i4"), ("row", "i8"), ("col", "i8"), ("time", "M8[s]"),
                                                ("item_id", "O")])
        chips["epsg"], chips["row"], chips["col"] = c["epsg"], c["row"], c["col"]
        chips["time"] = np.array(c["time"], np.int64).astype("datetime64[s]")
        chips["item_id"] = np.array(c["item_id"], dtype=object)
        return TableSpec(name=d["name"], chips=chips, tile_size=int(d["tile_size"]))
    ids = d["items"]
    return GridSpec(
        name=d["name"], epsg=int(d["epsg"]), row_max=int(d["row_max"]), col_min=int(d["col_min"]),
        ny=int(d["ny"]), nx=int(d["nx"]), days=np.array(d["days"], dtype="datetime64[D]"),
        times=np.array(d["times"], np.int64).astype("datetime64[ns]"), item_ids=[list(v) for v in d["item_ids"]],
        item_day={i: np.datetime64(day, "D") for i, day in zip(ids, d["item_day"])},
        time_day={np.datetime64(int(t), "s"): np.datetime64(day, "D") for t, day in d["time_day"]},
        tile_size=int(d["tile_size"]),
        tile_items={(t[0], t[1]): tuple(ids[k] for k in t[3:]) for t in d["tiles"]},
        tile_estimate={(t[0], t[1]): int(t[2]) for t in d["tiles"]}, source=d["source"])


def write_specs(path: str | os.PathLike, specs: list[Spec]) -> None:
    """Store the plan (``_geomoe/plan``) in the cube at ``path``."""
    doc = {"format": PLAN_FORMAT, "groups": [spec_to_json(s) for s in specs]}
    _write_bytes(path, PLAN_FILE, json.dumps(doc, separators=(",", ":")).encode(), True,
                 "geomoe's plan (JSON): group specs and the tile -> items index, for workers")


def load_specs(path: str | os.PathLike) -> list[Spec] | None:
    """The specs stored in the cube at ``path``, or None where it has none (an older cube)."""
    if _complete(path, PLAN_FILE) is None:
        return None
    doc = json.loads(_read_bytes(path, PLAN_FILE))
    if doc.get("format") != PLAN_FORMAT:
        return None
    return [spec_from_json(g) for g in doc["groups"]]


# ---------------------------------------------------------------- items
def write_item_table(path: str | os.PathLike, items: Iterable[Any]) -> None:
    """Write the source items as ``_geomoe/items.parquet`` (GeoParquet, one row per item)."""
    import geopandas as gpd
    import shapely.geometry as sg

    from geomoe.chips.grid import item_datetime, item_epsg

    rows = []
    for it in items:
        d = it.to_dict(transform_hrefs=False) if hasattr(it, "to_dict") else it
        rows.append(d)
    rows.sort(key=lambda d: d["id"])
    import pystac

    objs = [pystac.Item.from_dict(d, preserve_dict=True) for d in rows]
    df = gpd.GeoDataFrame(
        {"id": [d["id"] for d in rows],
         "datetime": np.array([np.datetime64(item_datetime(o), "us") for o in objs]),
         "epsg": np.array([_epsg_or_0(item_epsg, o) for o in objs], np.int32),
         "item": [json.dumps(d, default=str) for d in rows]},
        geometry=[sg.shape(d["geometry"]) if d.get("geometry") else None for d in rows], crs=4326)
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False, row_group_size=_ROW_GROUP)
    _write_bytes(path, ITEMS_FILE, buf.getvalue(), False,
                 "source STAC items: the bytes of a GeoParquet file (id, datetime, epsg, item JSON, geometry)")


def _epsg_or_0(fn, item) -> int:
    try:
        return int(fn(item))
    except Exception:  # an item's CRS error surfaces at planning, not here
        return 0


class ItemTable:
    """The cube's source items, loaded by id on demand (a worker loads only its tile's).

    ``get(ids)`` returns pystac Items; loaded ones are kept (a worker's next tile often shares
    them). Thread-safe. ``loaded`` counts the items parsed so far."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._source: Any = None

    def exists(self) -> bool:
        return _complete(self.path, ITEMS_FILE) is not None

    def _parquet(self) -> Any:
        """The Parquet source: the chunk file itself where it is plain (read in place),
        else its bytes."""
        if self._source is None:
            import pyarrow as pa

            n = _complete(self.path, ITEMS_FILE)
            if n is None:
                raise FileNotFoundError(f"{self.path} has no complete item table ({ITEMS_FILE})")
            chunk = self.path / ITEMS_FILE / "c" / "0"
            self._source = (str(chunk) if chunk.is_file() and chunk.stat().st_size == n
                            else pa.BufferReader(_read_bytes(self.path, ITEMS_FILE)))
        return self._source

    @property
    def loaded(self) -> int:
        return len(self._cache)

    def get(self, ids: Iterable[str]) -> list[Any]:
        """Items with these ids, in the order given (KeyError names a missing id)."""
        import pyarrow.parquet as pq
        import pystac

        ids = [str(i) for i in ids]
        with self._lock:
            missing = sorted(set(i for i in ids if i not in self._cache))
            if missing:
                t = pq.read_table(self._parquet(), columns=["id", "item"], filters=[("id", "in", missing)])
                for i, doc in zip(t.column("id").to_pylist(), t.column("item").to_pylist()):
                    self._cache[i] = pystac.Item.from_dict(json.loads(doc), preserve_dict=False)
            absent = [i for i in ids if i not in self._cache]
            if absent:
                raise KeyError(f"items {absent[:5]} are not in the item table of {self.path}")
            return [self._cache[i] for i in ids]

    def __getitem__(self, item_id: str) -> Any:
        return self.get([item_id])[0]

    def ids(self) -> list[str]:
        import pyarrow.parquet as pq

        return pq.read_table(self._parquet(), columns=["id"]).column("id").to_pylist()


def write_plan_files(path: str | os.PathLike, specs: list[Spec], items: Iterable[Any]) -> None:
    """Both files a worker needs; the item table first, so a plan file implies the table."""
    write_item_table(path, items)
    write_specs(path, specs)


def has_plan_files(path: str | os.PathLike) -> bool:
    """Whether the cube at ``path`` holds both, completely written."""
    return _complete(path, ITEMS_FILE) is not None and _complete(path, PLAN_FILE) is not None
