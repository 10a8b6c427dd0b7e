"""``geomoe export``: every embedded chip of a cube as one GeoParquet row.

Why GeoParquet: it is what Clay, Earth Index and Major-TOM publish, and geopandas, DuckDB and
QGIS open it. The cube is read block by block (:mod:`geomoe.evaluate.cubechips`) and written
in row groups, so memory stays flat whatever the cube's size.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from geomoe.cube.reader import open_cube
from geomoe.errors import GeomoeError
from geomoe.evaluate.cubechips import BLOCK_CHIPS, iter_chip_blocks
from geomoe.evaluate.geoparquet import ChipParquetWriter, check_output, chip_schema


@dataclass
class ExportSummary:
    """What an export wrote: ``rows`` embedded chips to ``path`` in ``seconds``."""

    path: Path
    rows: int
    groups: dict[str, int]
    dim: int
    seconds: float

    def __str__(self) -> str:
        per = ", ".join(f"{g} {n}" for g, n in self.groups.items())
        return (f"exported {self.rows} embedded chips ({per}), {self.dim}-d embeddings, in "
                f"{self.seconds:.1f} s -> {self.path}")


def export(cube: str | os.PathLike, to: str | os.PathLike, *, overwrite: bool = False,
           groups: list[str] | None = None, row_group: int = 65_536,
           block_chips: int = BLOCK_CHIPS) -> ExportSummary:
    """Write every embedded chip of a cube to GeoParquet, one row per chip and time.

    Parameters
    ----------
    cube : str or PathLike
        A geomoe cube (``embed-region --out``).
    to : str or PathLike
        The ``.parquet`` file to write. An existing file is replaced only when geomoe wrote
        it as an export and ``overwrite`` is True; anything else there is refused untouched.
    overwrite : bool
        Replace an earlier geomoe export at ``to``.
    groups : list of str, optional
        Only these cube groups (default: all).
    row_group : int
        Rows per Parquet row group (memory holds about one row group).
    block_chips : int
        Chips read from the cube per block.

    Returns
    -------
    ExportSummary
        The rows written (embedded chips: finite embedding), per group, and the time taken.

    Notes
    -----
    Columns: ``geometry`` (WKB polygon of the 1200 m chip in EPSG:4326, lon/lat), ``time``
    (acquisition, UTC), ``item_id`` (the scene the chip's pixels came from), ``group`` (cube
    group), ``valid_fraction``, ``epsg``, ``x``, ``y`` (chip centre in metres of that CRS) and
    ``embedding`` (fixed-size list of float32, the cube's dim). Chips that were skipped for
    cloud or fill, or never computed, have no row.
    """
    t0 = time.perf_counter()
    to = Path(to)
    if to.suffix.lower() not in (".parquet", ".geoparquet"):
        raise GeomoeError(f"--to {to} must end in .parquet (GeoParquet is written)")
    view = open_cube(cube)
    chosen = list(groups) if groups else list(view.groups)
    unknown = [g for g in chosen if g not in view.groups]
    if unknown:
        raise GeomoeError(f"cube {view.path} has no group {', '.join(unknown)}; its groups are "
                          f"{', '.join(view.groups)}")
    check_output(to, "export", overwrite=overwrite, what="--to")
    if not to.parent.is_dir():
        raise GeomoeError(f"--to {to}: folder {to.parent} does not exist; create it first")
    dim = int(view[chosen[0]].sizes["dim"])
    info = {"cube": str(view.path.resolve()),
            "checkpoint_sha256": (view.attrs.get("geomoe:model") or {}).get("checkpoint_sha256")}
    writer = ChipParquetWriter(to, chip_schema(dim), kind="export", info=info, row_group=row_group)
    per: dict[str, int] = {g: 0 for g in chosen}
    try:
        for block in iter_chip_blocks(view, chosen, block_chips=block_chips):
            writer.write(block)
            per[block.group] += len(block)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return ExportSummary(to, writer.rows, per, dim, time.perf_counter() - t0)
