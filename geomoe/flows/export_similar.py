"""Prefect flows for reading cubes: ``export`` (GeoParquet of every embedded chip) and
``similar`` (similarity search from example points).

Deployments (prefect.yaml): ``export/geoparquet`` and ``similar/query``. Thin: the work is
:func:`geomoe.evaluate.export.export` and :func:`geomoe.evaluate.similar.similar`; the flows add
artifacts (a summary, the top rows, the map PNG inline). Run with Prefect's syntax, e.g.::

    prefect deployment run 'similar/query' --param cube=cube.zarr \\
        --param 'at=["-3.07,53.48"]' --param out=top.parquet
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

EXPORT_KEY = "export-summary"
SIMILAR_KEY = "similar-top"
SIMILAR_PNG_KEY = "similar-map"


@flow(name="export", log_prints=True)
def export_flow(cube: str, to: str, overwrite: bool = False,
                groups: list[str] | None = None) -> dict[str, Any]:
    """Write every embedded chip of ``cube`` to the GeoParquet file ``to``."""
    from geomoe.evaluate.export import export

    s = export(cube, to, overwrite=overwrite, groups=groups)
    summary = {"path": str(s.path), "rows": s.rows, "groups": s.groups, "dim": s.dim,
               "seconds": round(s.seconds, 3)}
    create_table_artifact(key=EXPORT_KEY, description=f"export of {cube}",
                          table=[{"key": k, "value": str(v)} for k, v in summary.items()])
    get_run_logger().info("%s", s)
    return summary


@flow(name="similar", log_prints=True)
def similar_flow(cube: str, out: str, at: list[str] | None = None,
                 negative: list[str] | None = None, examples: str | None = None, k: int = 100,
                 index: str | None = None, rebuild_index: bool = False,
                 overwrite: bool = False) -> dict[str, Any]:
    """Top ``k`` chips of ``cube`` like the ``at`` points ("LON,LAT"), minus ``negative``."""
    import geopandas as gpd

    from geomoe.evaluate.similar import similar

    r = similar(cube, at or [], negative=negative or [], examples=examples, k=k, out=out,
                index=index, rebuild_index=rebuild_index, overwrite=overwrite)
    top = gpd.read_parquet(r.out)
    rows = [{"rank": int(t.rank), "score": round(float(t.score), 6), "group": t.group,
             "time": str(t.time), "item_id": t.item_id, "x": t.x, "y": t.y}
            for t in top.head(50).itertuples()]
    create_table_artifact(key=SIMILAR_KEY, table=rows, description=f"top {r.k} of {r.n_chips} chips")
    png = Path(r.png)
    data = base64.b64encode(png.read_bytes()).decode()
    create_markdown_artifact(key=SIMILAR_PNG_KEY, description="similarity map",
                             markdown=f"## Similarity map\n\n![map](data:image/png;base64,{data})\n\n`{png}`\n")
    get_run_logger().info("%s", r)
    return {"out": str(r.out), "map": str(r.map_path), "png": str(r.png), "k": r.k,
            "n_chips": r.n_chips, "top_score": r.top_score, "index": str(r.index_path),
            "index_built": r.index_built, "seconds": {k_: round(v, 3) for k_, v in r.seconds.items()}}
