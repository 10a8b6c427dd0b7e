"""Prefect flow ``embed-region``: plan the cube, embed its tiles as tasks, publish it.

Deploy with ``prefect deploy --name default`` (see prefect.yaml) and run with Prefect's
syntax::

    prefect deployment run 'embed-region/default' --param aoi=catalogs/aois/europe.geojson

(``prefect deployment run embed-region --aoi ...`` is not valid Prefect syntax: Prefect
only knows ``--param key=value`` / ``--params JSON``.) ``geomoe embed-region --aoi ...
--deployment`` triggers the same deployment through ``run_deployment``.

The flow process holds the cube's run lock; tile tasks (threads by default, or Dask
workers through prefect-dask's DaskTaskRunner) write chunk-aligned regions without it.
Every task re-derives the layout from the items stored in the cube, so a task can run on
any machine that sees the store and the checkpoint.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import cloudpickle
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait
from prefect.utilities.annotations import unmapped

from geomoe.cube import ensure_writable
from geomoe.embed import (EmbedRequest, embed_tile, prepare, prepared_for, resolve_checkpoint,
                          search_and_plan)
from geomoe.lock import store_lock
from geomoe.stac_output import write_cube_item
from geomoe.tiles import Tile

# Dask workers may not have this file on their path: ship the flow module by value
# (geomoe itself is installed on every worker and pickled by reference).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

@task(name="embed-tile", retries=1, retry_delay_seconds=2,
      task_run_name="embed-tile {tile}")
def embed_tile_task(tile: str, req: dict, run: int) -> dict:
    """Read, embed and write one chunk-aligned tile; idempotent (a retry rewrites it whole)."""
    prep = prepared_for(req, run)
    t = Tile.parse(tile)
    if prep.cube.is_done(t):  # a retried task whose first attempt already committed
        return {"tile": tile, "embedded": 0, "skipped": 0, "already_done": True, "pid": os.getpid()}
    return {**embed_tile(prep, t, run, device=req["device"]), "pid": os.getpid()}


def _png_markdown(png: Path, title: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return f"## {title}\n\n![cube preview](data:image/png;base64,{data})\n\n`{png}`\n"


@flow(name="embed-region", log_prints=True)
def embed_region_flow(
    aoi: str,
    catalog: str | None = None,
    datetime: str | None = None,
    checkpoint: str | None = None,
    out: str = "cube.zarr",
    device: str = "auto",
    batch_size: int = 256,
    min_valid: float = 0.9,
    pooling: str = "mean",
    dtype: str = "float32",
    tile_size: int = 32,
    max_cloud: float | None = None,
    gpu_resource: bool = False,
    plot: bool = True,
    compile: bool = False,
    precision: str = "auto",
) -> dict:
    """Embed every chip of ``aoi`` (path, URL or inline GeoJSON) into the Zarr cube ``out``.

    ``gpu_resource``: annotate tile tasks with Dask resource ``GPU=1`` so a Dask scheduler
    sends them only to workers started with ``--resources GPU=1`` (one task per GPU).
    ``precision``: auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16.
    ``compile``: torch.compile the encoder where it runs in bf16 (no effect in fp32).
    """
    import time

    log = get_run_logger()
    t0 = time.perf_counter()
    req = EmbedRequest(aoi=aoi, out=str(out), catalog=catalog, datetime=datetime, max_cloud=max_cloud,
                       checkpoint=checkpoint, device=device, batch_size=batch_size,
                       min_valid=min_valid, pooling=pooling, dtype=dtype, tile_size=tile_size,
                       compile=compile, precision=precision)
    req.validate()
    resolve_checkpoint(req.checkpoint)
    planned = search_and_plan(req)  # bad AOI / no scenes: nothing is created
    ensure_writable(Path(req.out))
    with store_lock(req.out):
        prep = prepare(req, planned)
        req.checkpoint = str(prep.checkpoint.resolve())  # workers load it by this path
        cube = prep.cube
        run = cube.new_run()
        tiles = cube.tiles()
        pending = cube.pending_tiles()
        planned = sum(cube.specs[t.group].n_planned(t) for t in tiles)
        log.info("cube %s: %d chips planned in %d tile(s), %d pending (run %d)",
                 req.out, planned, len(tiles), len(pending), run)
        reqd = dataclasses.asdict(req)
        reqd["out"] = str(Path(req.out).resolve())
        if gpu_resource:
            import dask

            with dask.annotate(resources={"GPU": 1}):
                futures = embed_tile_task.map([str(t) for t in pending], req=unmapped(reqd),
                                              run=unmapped(run))
        else:
            futures = embed_tile_task.map([str(t) for t in pending], req=unmapped(reqd), run=unmapped(run))
        wait(futures)
        results = [f.result() for f in futures]
        missing = cube.pending_tiles()
        if missing:
            raise RuntimeError(f"{len(missing)} tile(s) not completed: {[str(t) for t in missing][:5]}")
        stac = write_cube_item(cube)
        cube.finish()  # consolidated metadata: last, once every tile is done
    embedded = sum(r["embedded"] for r in results)
    skipped = sum(r["skipped"] for r in results)
    seconds = time.perf_counter() - t0
    summary = {
        "out": str(req.out), "groups": list(cube.specs), "chips_planned": planned,
        "chips_embedded": embedded, "chips_skipped_cloud": skipped, "tiles_total": len(tiles),
        "tiles_written": len(pending), "tiles_already_done": len(tiles) - len(pending),
        "seconds": round(seconds, 2), "run": run, "checkpoint_sha256": prep.sha256,
        "precision_requested": precision,  # workers resolve "auto" by their own device
        "stac_item": str(stac), "task_pids": sorted({r["pid"] for r in results}),
    }
    print(f"embedded {embedded:,} chips, skipped {skipped:,} for cloud/fill, "
          f"{len(pending)} tile(s) written, {len(tiles) - len(pending)} already done, "
          f"in {seconds:.1f} s; cube: {req.out}")
    create_table_artifact(key="embed-region-summary",
                          table=[{"key": k, "value": str(v)} for k, v in summary.items()],
                          description="embed-region summary")
    if plot:
        from geomoe.plot import plot_cube

        png = plot_cube(req.out)
        summary["plot"] = str(png)
        create_markdown_artifact(key="embed-region-plot", markdown=_png_markdown(png, "Embedding PCs (RGB)"),
                                 description=f"first three principal components of {req.out}")
    return summary


def dask_task_runner(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1,
                     resources: dict | None = None):
    """A DaskTaskRunner on an existing scheduler (``address``) or a LocalCluster.

    LocalCluster settings: dashboard on a free port (``:0``), worker scratch in
    ``DASK_TEMPORARY_DIRECTORY`` (default: a temp dir), processes (torch + GIL).
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    kwargs: dict[str, Any] = {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
                              "processes": True, "dashboard_address": ":0"}
    if os.environ.get("DASK_TEMPORARY_DIRECTORY"):
        kwargs["local_directory"] = os.environ["DASK_TEMPORARY_DIRECTORY"]
    if resources:
        kwargs["resources"] = resources
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)


def run_with_dask(params: dict, address: str | None = None, n_workers: int = 2,
                  resources: dict | None = None) -> dict:
    """Run the flow with its tile tasks on Dask (used by ``geomoe embed-region --dask-*``).

    ``resources`` (LocalCluster only), e.g. ``{"GPU": 1}``, with ``gpu_resource=True`` in
    ``params``, makes every tile task need one GPU slot: one task per GPU at a time."""
    runner = dask_task_runner(address, n_workers=n_workers, resources=resources)
    return embed_region_flow.with_options(task_runner=runner)(**params)


def trigger_deployment(params: dict, name: str = "embed-region/default", timeout: float | None = None) -> Any:
    """Create a flow run of a deployment on the configured Prefect server (run_deployment).

    ``timeout=None`` waits for the run to finish; ``0`` returns right after scheduling."""
    from prefect.deployments import run_deployment

    return run_deployment(name=name, parameters=params, timeout=timeout, as_subflow=False)


if __name__ == "__main__":  # `python flows/embed_region.py AOI [OUT]` runs the flow once locally
    embed_region_flow(aoi=sys.argv[1], out=sys.argv[2] if len(sys.argv) > 2 else "cube.zarr")
