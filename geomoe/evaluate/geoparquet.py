"""GeoParquet writing for cube chips: WKB polygons in EPSG:4326, streamed in row groups.

Why not ``GeoDataFrame.to_parquet``: an export holds millions of chips; a GeoDataFrame of
them would not fit in memory, and shapely objects cost far more than the rows themselves.
This writer appends row groups with pyarrow and writes the GeoParquet 1.1 ``geo`` metadata
itself (the fields geopandas writes; the file-level bbox only where it is known before the
first row is written, since pyarrow readers take ``geo`` from the schema stored up front).

Every file carries a ``geomoe`` key in its metadata: the mark that lets a later run replace a
file geomoe wrote (with ``overwrite``) and refuse anything else.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geomoe.atomic import publish, tmp_path
from geomoe.errors import OutputExistsError
from geomoe.evaluate.cubechips import ChipBlock, polygon_wkb

MARK = b"geomoe"


def wgs84_projjson() -> dict[str, Any]:
    from pyproj import CRS

    return CRS.from_epsg(4326).to_json_dict()


def geo_metadata(bbox: list[float] | None) -> dict[str, Any]:
    """GeoParquet 1.1 ``geo`` metadata of one WKB polygon column ``geometry`` in EPSG:4326
    (coordinates lon, lat as GeoParquet and geopandas store them)."""
    col: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Polygon"],
                           "crs": wgs84_projjson(), "edges": "planar"}
    if bbox is not None:
        col["bbox"] = bbox
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": col}}


def chip_schema(dim: int | None, extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """geometry, time, item_id, group, valid_fraction, epsg, x, y [, extra...] [, embedding]."""
    fields = [
        pa.field("geometry", pa.binary()),
        pa.field("time", pa.timestamp("us")),
        pa.field("item_id", pa.string()),
        pa.field("group", pa.string()),
        pa.field("valid_fraction", pa.float32()),
        pa.field("epsg", pa.int32()),
        pa.field("x", pa.float64()),
        pa.field("y", pa.float64()),
    ]
    for name, typ in (extra or {}).items():
        fields.append(pa.field(name, typ))
    if dim is not None:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


def block_table(block: ChipBlock, schema: pa.Schema, extra: dict[str, np.ndarray] | None = None) -> pa.Table:
    """A ChipBlock as an Arrow table of ``schema`` (embedding column when the schema has one)."""
    n = len(block)
    data, offsets = polygon_wkb(block.corners)
    geom = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    cols: dict[str, pa.Array] = {
        "geometry": geom,
        "time": pa.array(block.time.astype("datetime64[us]")),
        "item_id": pa.array(block.item_id.astype(str)),
        "group": pa.array(np.full(n, block.group, dtype=object) if isinstance(block.group, str)
                          else np.asarray(block.group, dtype=object).astype(str), pa.string()),
        "valid_fraction": pa.array(block.valid_fraction.astype(np.float32)),
        "epsg": pa.array(block.epsg.astype(np.int32)),
        "x": pa.array(block.x), "y": pa.array(block.y),
    }
    for name, values in (extra or {}).items():
        cols[name] = pa.array(values)
    if "embedding" in schema.names:
        flat = np.ascontiguousarray(block.embedding, dtype=np.float32).reshape(-1)
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), block.embedding.shape[1])
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


def is_geomoe_parquet(path: Path, kind: str) -> bool:
    """True when ``path`` is a Parquet file geomoe wrote as ``kind`` ("export", "similar")."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # not Parquet, unreadable: not ours
        return False
    try:
        return json.loads(meta.get(MARK, b"{}")).get("kind") == kind
    except ValueError:
        return False


def check_output(path: Path, kind: str, *, overwrite: bool, what: str) -> None:
    """Refuse, before anything is written, an output that exists and is not replaceable:
    a file geomoe did not write as ``kind`` (never, even with ``overwrite``), or one it did
    when ``overwrite`` is False."""
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise OutputExistsError(f"{what} {path} exists and is not a file; choose another path")
    if not path.exists():
        return
    other = next((k for k in ("export", "similar") if k != kind and is_geomoe_parquet(path, k)), None)
    if other:
        raise OutputExistsError(
            f"{what} {path} is a geomoe {other} result, not a {kind}; it is not replaced by "
            f"a {kind}: choose another path")
    if not is_geomoe_parquet(path, kind):
        raise OutputExistsError(
            f"{what} {path} exists and geomoe did not write it (no geomoe {kind} mark in its "
            "Parquet metadata); it is never replaced, even with --overwrite: choose another path")
    if not overwrite:
        raise OutputExistsError(
            f"{what} {path} already holds a geomoe {kind}: pass --overwrite to replace it, or "
            "choose another path")


class ChipParquetWriter:
    """Append ChipBlocks to a GeoParquet file in row groups of ``row_group`` rows.

    Written to a temporary name beside ``path`` and renamed on :meth:`close`, so a reader
    (or a crash) never sees a half-written file at ``path``.
    """

    def __init__(self, path: Path, schema: pa.Schema, *, kind: str, info: dict[str, Any],
                 row_group: int = 65_536, compression: str = "zstd", compression_level: int = 1,
                 bbox: list[float] | None = None) -> None:
        self.path = Path(path)
        self.tmp = tmp_path(self.path)
        self.row_group = row_group
        self.mark = json.dumps({"kind": kind, **info}, default=str).encode()
        meta = {b"geo": json.dumps(geo_metadata(bbox)).encode(), MARK: self.mark}
        self.schema = schema.with_metadata(meta)
        floats = [n for n in ("valid_fraction", "x", "y", "score") if n in schema.names]
        if "embedding" in schema.names:
            floats.append("embedding.list.element")
        # dictionaries only where values repeat; byte-stream-split floats compress (and write)
        # faster than dictionary attempts on unique values
        self._writer = pq.ParquetWriter(self.tmp, self.schema, compression=compression,
                                        compression_level=compression_level,
                                        use_dictionary=["item_id", "group"],
                                        use_byte_stream_split=floats,
                                        write_statistics=["time", "group", "valid_fraction", "epsg"])
        self._pending: list[pa.Table] = []
        self._n_pending = 0
        self.rows = 0
        # one row group is encoded and written on a thread while the next is read: pyarrow
        # releases the GIL, so reading and writing overlap on two cores; at most one waits
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geomoe-parquet")
        self._inflight: Future | None = None

    def write(self, block: ChipBlock, extra: dict[str, np.ndarray] | None = None) -> None:
        if len(block) == 0:
            return
        self._pending.append(block_table(block, self.schema, extra))
        self._n_pending += len(block)
        self.rows += len(block)
        if self._n_pending >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending)
            self._pending, self._n_pending = [], 0
            self._wait()
            self._inflight = self._pool.submit(self._writer.write_table, table,
                                               row_group_size=self.row_group)

    def _wait(self) -> None:
        if self._inflight is not None:
            fut, self._inflight = self._inflight, None
            fut.result()  # a write error surfaces here

    def close(self) -> Path:
        """Flush, close and move into place."""
        self._flush()
        self._wait()
        self._pool.shutdown()
        self._writer.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        return publish(self.tmp, self.path)

    def abort(self) -> None:
        try:
            try:
                self._wait()
            finally:
                self._pool.shutdown()
                self._writer.close()
        except Exception:  # the original error matters, not this one
            pass
        finally:
            self.tmp.unlink(missing_ok=True)
