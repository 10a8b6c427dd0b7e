"""Prefect flow ``embed-region``: plan the cube, embed its tiles in batches (tasks), publish it.

Deploy with ``prefect deploy --name default`` (see prefect.yaml) and run with Prefect's
syntax::

    prefect deployment run 'embed-region/default' --param aoi=catalogs/aois/europe.geojson

(``prefect deployment run embed-region --aoi ...`` is not valid Prefect syntax: Prefect
only knows ``--param key=value`` / ``--params JSON``.) ``geomoe embed-region --aoi ...
--deployment`` triggers the same deployment through ``run_deployment``.

The flow process holds the cube's run lock; tile tasks (threads by default, or Dask
workers through prefect-dask's DaskTaskRunner) write chunk-aligned regions without it.
Every task reads the plan stored in the cube and loads only its tile's items from the cube's
item table (geomoe.cube.items): no catalog search, no planning of other tiles, so a task can
run on any machine that sees the store and the checkpoint.

The flow publishes its progress (artifact ``embed-region-progress``, ``done/total chips``)
as tiles finish and its summary as a table artifact; ``watch_flow_run`` and ``run_summary``
read them for ``geomoe embed-region --deployment`` (docs/deploy.md).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import sys
import threading
import time
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

import cloudpickle
import prefect.runtime
from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact,
                               create_table_artifact, update_progress_artifact)
from prefect.futures import as_completed
from prefect.utilities.annotations import unmapped

from geomoe.device import resolve_device
from geomoe.embed.batching import auto_tiles_per_task, batch_tiles, committed_counts
from geomoe.embed.speed import choose_speed
from geomoe.embed.pipeline import (EmbedRequest, EmbedSummary, Progress, cube_run, embed_tile, prepared_for,
                          search_and_plan)
from geomoe.errors import GeomoeError
from geomoe.cube.stac_item import write_cube_item
from geomoe.cube.layout import CubeTile

# Imported as geomoe.flows.embed_region (prefect.yaml, the CLI), this module is pickled by
# reference like the rest of geomoe, which every Dask worker has installed. Loaded some other way
# (as a script, or from a file path by an older deployment) its name means nothing to a worker:
# ship it by value then.
if __name__ != "geomoe.flows.embed_region":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROGRESS_KEY = "embed-region-progress"  # progress artifact: percent + "done/total chips" line
SUMMARY_KEY = "embed-region-summary"  # table artifact: the run's EmbedSummary fields
PLOT_KEY = "embed-region-plot"


@contextlib.contextmanager
def worker_threads() -> Iterator[int | None]:
    """On a Dask worker: run one tile at a time with torch on the worker's ``nthreads``.

    Dask would run ``nthreads`` tasks at once, each with torch's default thread count: on a
    busy or many-core machine that is many times more compute threads than cores. Tiles
    therefore take turns (a lock on the worker object, which is shared by all of its task
    threads) and each uses all of the worker's threads. Elsewhere (the flow's own thread
    pool) nothing changes. Yields the torch thread count set, or None.
    """
    from geomoe.device import limit_threads

    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a Dask worker
        yield None
        return
    lock = worker.__dict__.setdefault("_geomoe_tile_lock", threading.Lock())
    n = max(1, int(worker.state.nthreads))
    with lock:
        yield limit_threads(n)  # per calling thread: set in the thread that runs the model


def _batch_run_name() -> str:
    """Task run name: the batch's first tile and how many follow, e.g. ``embed-tiles utm30n/0/1 +2``."""
    tiles = prefect.runtime.task_run.parameters.get("tiles") or ["?"]
    return f"embed-tiles {tiles[0]}" + (f" +{len(tiles) - 1}" if len(tiles) > 1 else "")


@task(name="embed-tiles", retries=1, retry_delay_seconds=2, task_run_name=_batch_run_name)
def embed_tiles_task(tiles: list[str], req: dict, run: int, planned: int = 0) -> dict:
    """Read, embed and write a batch of chunk-aligned tiles (:func:`geomoe.embed.batching.batch_tiles`).

    Each tile is committed as it finishes, so a killed worker loses only the unfinished tiles
    of its batch; tiles already recorded as done (a retry, or a rerun of a task Dask moved to
    another worker) are skipped, not rewritten. ``planned``: the run's planned chips, for the
    precision and compile choice "auto" makes on this worker's device
    (:func:`geomoe.embed.speed.choose_speed`)."""
    import torch

    from geomoe.device import cores_available, limit_threads

    with worker_threads() as nthreads:
        if nthreads is None and req.get("threads"):  # not on Dask: the run's --threads
            limit_threads(req["threads"])  # per thread: set in the one that runs the model
        # --read-workers: at most the cores this process may use, as in a plain run
        req = {**req, "read_workers": min(int(req["read_workers"]), cores_available())}
        dev = resolve_device(req["device"])
        speed = choose_speed(dev, req["precision"], req["compile"], planned)
        req = {**req, "precision": speed.precision, "compile": "on" if speed.compile else "off"}
        info = {"pid": os.getpid(), "device": str(dev), "worker_nthreads": nthreads,
                "torch_threads": torch.get_num_threads(), "precision": speed.precision,
                "speed": speed.label()}
        prep = prepared_for(req, run)
        info["read_workers"] = int(prep.request.read_workers)
        per_tile = []  # {tile, embedded, skipped, recovered} in batch order
        for name in tiles:
            t = CubeTile.parse(name)
            if prep.cube.is_done(t):  # pending when the run began: an earlier attempt of this batch
                e, k = committed_counts(prep.cube.path, prep.specs[t.group], t)
                per_tile.append({"tile": name, "embedded": e, "skipped": k, "recovered": True})
            else:
                r = embed_tile(prep, t, run, device=dev)
                per_tile.append({"tile": name, "embedded": r["embedded"], "skipped": r["skipped"],
                                 "recovered": False})
        return {"tiles": per_tile, "embedded": sum(p["embedded"] for p in per_tile),
                "skipped": sum(p["skipped"] for p in per_tile),
                "recovered": sum(p["recovered"] for p in per_tile), **info}


def task_slots() -> int:
    """How many tile batches run at once: the Dask workers of this flow's DaskTaskRunner (each
    runs one batch at a time, :func:`worker_threads`), else 1 (the flow's own threads share one
    process and its cores)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        return 1
    if not isinstance(runner, DaskTaskRunner):
        return 1
    try:
        return max(1, len(runner.client.scheduler_info()["workers"]))
    except Exception:  # scheduler unreachable for a moment: batching stays correct, only coarser
        return 1


class _ProgressArtifact:
    """Publishes ``done/total chips`` as a Prefect progress artifact (UI, ``--deployment``).

    Updated as tiles finish, at most once a second plus the last one, so a large run does not
    flood the API."""

    def __init__(self, total: int, already: int, estimated: int = 0) -> None:
        self.total, self.done, self.new = total, already, 0
        self.estimated = estimated  # tiles whose chip count is still an estimate (total shown ~)
        self.t0 = self.last = time.monotonic()
        self.id = create_progress_artifact(progress=self._pct(), key=PROGRESS_KEY,
                                           description=self._line())

    def _pct(self) -> float:
        return 100.0 * self.done / max(self.total, 1)

    def _line(self) -> str:
        dt = time.monotonic() - self.t0
        rate = self.new / dt if dt > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        return Progress(self.done, self.total, 0, 0, rate, eta, self.estimated > 0).line()

    def add(self, chips: int, estimate: float, was_estimated: bool = False) -> None:
        """A tile finished with ``chips`` chips; ``estimate``: what the total counted for its
        pending work; ``was_estimated``: its count was an estimate until now."""
        self.total = int(round(self.total + chips - estimate))
        self.estimated -= bool(was_estimated)
        self.done += chips
        self.new += chips
        now = time.monotonic()
        if now - self.last >= 1.0 or (self.done >= self.total and not self.estimated):
            self.last = now
            update_progress_artifact(self.id, progress=self._pct(), description=self._line())


def _table_value(v: Any) -> Any:
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)


def _png_markdown(png: Path, title: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return f"## {title}\n\n![cube preview](data:image/png;base64,{data})\n\n`{png}`\n"


def _request_signature(fn: Callable[..., dict]) -> Callable[..., dict]:
    """Give ``fn(**params)`` the flow fields of :class:`EmbedRequest` as its signature (types,
    defaults) and their help as its parameter docs: Prefect's parameter schema, validation and
    UI then follow the one definition, and a new request field is a new flow parameter."""
    from geomoe.embed.request import request_fields

    hints = typing.get_type_hints(EmbedRequest)
    fields = request_fields("flow")
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                           default=inspect.Parameter.empty if f.default is dataclasses.MISSING
                           else f.default) for f in fields],
        return_annotation=dict)
    # Prefect reads parameter docs in Google style ("Args:")
    args = [f"    {f.name}: {' '.join((f.metadata['help'] or '').split())}" for f in fields]
    fn.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\nArgs:\n" + "\n".join(args)
    return fn


@flow(name="embed-region", log_prints=True)
@_request_signature
def embed_region_flow(**params: Any) -> dict:
    """Embed every chip of ``aoi`` (path, URL or inline GeoJSON) into the Zarr cube ``out``.

    Its parameters are the flow fields of :class:`geomoe.embed.request.EmbedRequest`.
    """
    log = get_run_logger()
    t0 = time.perf_counter()
    req = EmbedRequest(**params)
    req.out = str(req.out)
    req.validate()
    device, precision = req.device, req.precision
    planned = search_and_plan(req)  # every cheap check; bad input: nothing is created
    if req.plot:  # a foreign file at <out>.png is refused before any work, not after it
        from geomoe.viz import check_plot_out

        check_plot_out(Path(req.out).with_name(Path(req.out).name + ".png"), Path(req.out))
    info = {"device": device, "precision": precision, "runner": "prefect",
            "flow_run": str(prefect.runtime.flow_run.id)}
    with cube_run(req, planned, info) as (prep, run):  # a failed start leaves no store behind
        req.checkpoint = str(prep.checkpoint.resolve())  # workers load it by this path
        cube = prep.cube
        tiles = cube.tiles()
        pending = cube.pending_tiles()
        planned = sum(cube.specs[t.group].n_planned(t) for t in tiles)
        # what the total counts for each tile's pending work until the tile reports exact counts;
        # the rest is done already (finished tiles, and finished days of appended tiles)
        estimate = {str(t): v for t, v in cube.pending_chips_by_tile(pending).items()}
        already = planned - int(round(sum(estimate.values())))
        estimated = {str(t) for t in pending if not cube.specs[t.group].is_exact(t)}
        n_est = sum(not s.is_exact(t) for s in cube.specs.values() for t in s.tiles())
        log.info("cube %s: %s%d chips planned in %d tile(s), %d pending (run %d)",
                 req.out, "~" if n_est else "", planned, len(tiles), len(pending), run)
        n = int(req.tiles_per_task or auto_tiles_per_task(len(pending), task_slots()))
        batches = [[str(t) for t in b] for b in batch_tiles(pending, n)]
        log.info("%d pending tile(s) in %d task(s) of up to %d tile(s)", len(pending), len(batches), n)
        progress = _ProgressArtifact(planned, already, n_est)
        reqd = dataclasses.asdict(req)
        reqd["out"] = str(Path(req.out).resolve())
        with (dask_gpu_annotation() if req.gpu_resource else contextlib.nullcontext()):
            futures = embed_tiles_task.map(batches, req=unmapped(reqd), run=unmapped(run),
                                           planned=unmapped(planned))
        results, errors = [], []
        for fut in as_completed(futures):
            try:
                r = fut.result()
            except Exception as exc:  # the others still finish and commit their tiles
                errors.append(exc)
                continue
            results.append(r)
            for p in r["tiles"]:  # exact counts now, recovered tiles recounted from the store
                progress.add(p["embedded"] + p["skipped"], estimate[p["tile"]], p["tile"] in estimated)
        if errors:
            raise errors[0]
        missing = cube.pending_tiles()
        if missing:
            raise RuntimeError(f"{len(missing)} tile(s) not completed: {[str(t) for t in missing][:5]}")
        stac = write_cube_item(cube)
        cube.finish()  # consolidated metadata: last, once every tile is done
        planned = progress.total
    s = EmbedSummary(
        out=str(req.out), groups=list(cube.specs), chips_planned=planned,
        chips_embedded=sum(r["embedded"] for r in results),
        chips_skipped_cloud=sum(r["skipped"] for r in results), tiles_total=len(tiles),
        tiles_written=len(pending), tiles_already_done=len(tiles) - len(pending),
        seconds=round(time.perf_counter() - t0, 2), run=run, checkpoint=str(prep.checkpoint),
        checkpoint_sha256=prep.sha256, stac_item=str(stac),
        device=_ran_on(results, "device", lambda: str(resolve_device(device))),
        precision=_ran_on(results, "precision",
                          lambda: choose_speed(resolve_device(device), precision, req.compile, planned).precision),
        speed=_ran_on(results, "speed",
                      lambda: choose_speed(resolve_device(device), precision, req.compile, planned).label()))
    summary = {k: v for k, v in s.to_dict().items() if k != "extra"}
    summary.update(precision_requested=precision, task_pids=sorted({r["pid"] for r in results}),
                   torch_threads=sorted({r["torch_threads"] for r in results}),
                   worker_nthreads=sorted({r["worker_nthreads"] for r in results
                                           if r["worker_nthreads"] is not None}),
                   read_workers=sorted({r["read_workers"] for r in results}),
                   tasks=len(batches), tiles_per_task=n,
                   # tiles a killed worker had committed, which its batch's re-run found done
                   tiles_recovered=sum(r["recovered"] for r in results))
    print(str(s))
    if req.plot:
        from geomoe.viz import plot_cube

        png = plot_cube(req.out)
        summary["plot"] = str(png)
        create_markdown_artifact(key=PLOT_KEY, markdown=_png_markdown(png, "Embedding PCs (RGB)"),
                                 description=f"first three principal components of {req.out}")
    create_table_artifact(key=SUMMARY_KEY,
                          table=[{"key": k, "value": _table_value(v)} for k, v in summary.items()],
                          description="embed-region summary")
    return summary


@contextlib.contextmanager
def dask_gpu_annotation() -> Iterator[None]:
    """Tasks submitted in the body need the Dask resource ``GPU=1`` (``gpu_resource``)."""
    import dask

    with dask.annotate(resources={"GPU": 1}):
        yield


def _ran_on(results: list[dict], key: str, default: Callable[[], str]) -> str:
    """What the tile tasks ran on (``device`` / ``precision``); if none ran, what this process would."""
    seen = sorted({r[key] for r in results})
    if seen:
        return ", ".join(seen)
    try:
        return default()
    except GeomoeError:  # e.g. cuda asked for, no GPU here: the workers would have had one
        return "?"


def summary_from_table(rows: list[dict]) -> EmbedSummary:
    """The EmbedSummary of a finished flow run from its summary table artifact."""
    d = {r["key"]: r["value"] for r in rows}
    names = {f.name for f in dataclasses.fields(EmbedSummary)} - {"extra"}
    kw = {k: d[k] for k in names if k in d}
    if isinstance(kw.get("groups"), str):
        kw["groups"] = json.loads(kw["groups"])
    return EmbedSummary(**kw, extra={k: v for k, v in d.items() if k not in names})


def cores_given(threads: int | None = None) -> int:
    """The cores this run may use: ``threads`` if given, else the CPUs this process may run on."""
    if threads:
        return int(threads)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def dask_task_runner(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1,
                     resources: dict | None = None):
    """A DaskTaskRunner on an existing scheduler (``address``) or a LocalCluster it starts.

    LocalCluster settings: dashboard on a free port (``:0``), worker scratch in
    ``DASK_TEMPORARY_DIRECTORY`` (default: a temp dir), processes (torch + GIL).
    ``run_with_dask`` starts its own cluster instead, to shut it down quietly.
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=_cluster_kwargs(n_workers, threads_per_worker, resources))


def _cluster_kwargs(n_workers: int, threads_per_worker: int, resources: dict | None) -> dict:
    kwargs: dict[str, Any] = {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
                              "processes": True, "dashboard_address": ":0"}
    if os.environ.get("DASK_TEMPORARY_DIRECTORY"):
        kwargs["local_directory"] = os.environ["DASK_TEMPORARY_DIRECTORY"]
    if resources:
        kwargs["resources"] = resources
    return kwargs


@contextlib.contextmanager
def quiet_dask() -> Iterator[None]:
    """Dask at WARNING: its INFO lines (cluster start, every connection, shutdown) are noise
    for a CLI user. The environment variable reaches the worker processes; an explicit
    ``DASK_LOGGING__DISTRIBUTED`` of the user wins."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    level = logging.getLevelName(os.environ["DASK_LOGGING__DISTRIBUTED"].upper())
    lg = logging.getLogger("distributed")
    old = lg.level
    lg.setLevel(level if isinstance(level, int) else logging.WARNING)
    try:
        yield
    finally:
        lg.setLevel(old)


@contextlib.contextmanager
def shared_api() -> Iterator[dict[str, str]]:
    """The Prefect API for the flow and its Dask workers; yields the workers' extra env.

    Without ``PREFECT_API_URL`` every process would start a temporary server of its own (one
    for the flow, one per Dask worker: slow, noisy, and the workers hang at shutdown). Here
    the flow's temporary server is started first and the workers are pointed at it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings

    url = PREFECT_API_URL.value()
    if url or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        yield {"PREFECT_API_URL": url} if url else {}
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same instance Prefect's own client would start
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield {"PREFECT_API_URL": server.api_url}


def run_with_dask(params: dict, address: str | None = None, n_workers: int = 2,
                  resources: dict | None = None, threads: int | None = None) -> dict:
    """Run the flow with its tile tasks on Dask (used by ``geomoe embed-region --dask-*``).

    A LocalCluster of ``n_workers`` processes gets ``max(1, cores // n_workers)`` threads per
    worker, ``cores`` being ``threads`` (default: the ``threads`` parameter, the CLI's
    ``--threads``) or the CPUs this process may use, so workers x threads
    never exceed it; each tile task runs torch on its worker's threads (:func:`worker_threads`).
    ``resources`` (LocalCluster only), e.g. ``{"GPU": 1}``, with ``gpu_resource=True`` in
    ``params``, makes every tile task need one GPU slot: one task per GPU at a time.
    Shutdown order: the flow's Dask client closes first, then the cluster, then the API.
    """
    from prefect_dask import DaskTaskRunner

    with quiet_dask(), shared_api() as env:
        if address:
            return embed_region_flow.with_options(task_runner=DaskTaskRunner(address=address))(**params)
        from distributed import LocalCluster

        tpw = max(1, cores_given(threads or params.get("threads")) // max(1, n_workers))
        with LocalCluster(**_cluster_kwargs(n_workers, tpw, resources), env=env) as cluster:
            try:
                runner = DaskTaskRunner(address=cluster.scheduler_address)
                return embed_region_flow.with_options(task_runner=runner)(**params)
            finally:
                cluster.sync(_close_workers, cluster, WORKER_CLOSE_S)


# A worker process needs several seconds to exit after its last task (interpreter and
# Prefect shutdown); the nanny's default is to SIGKILL it after 4 s, which logs a warning and
# can surface a CommClosedError traceback. Waiting a little longer lets it exit by itself.
WORKER_CLOSE_S = 30.0


async def _close_workers(cluster: Any, timeout: float) -> None:
    import asyncio

    await asyncio.gather(*(w.close(timeout=timeout) for w in list(cluster.workers.values())))


# ---------------------------------------------------------------- the deployment, seen from the CLI
def trigger_deployment(params: dict, name: str = "embed-region/default", timeout: float | None = None) -> Any:
    """Create a flow run of a deployment on the configured Prefect server (run_deployment).

    ``timeout=None`` waits for the run to finish; ``0`` returns right after scheduling.
    A deployment the server does not know is a GeomoeError naming the fix."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    try:
        return run_deployment(name=name, parameters=params, timeout=timeout, as_subflow=False)
    except ObjectNotFound:
        raise GeomoeError(
            f"deployment {name!r} not found on the Prefect server "
            f"{PREFECT_API_URL.value() or '(none: PREFECT_API_URL is not set)'}: set PREFECT_API_URL "
            f"and run `prefect deploy --all` from the geomoe checkout (docs/deploy.md, Prefect deployments)"
        ) from None


def flow_run_url(run_id: Any) -> str:
    """The flow run's page in the Prefect UI (or its API address when no UI URL is known)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.utilities.urls import url_for

    return (url_for("flow-run", obj_id=str(run_id))
            or f"{PREFECT_API_URL.value()}/flow_runs/{run_id}")


def _latest_artifact(client: Any, run_id: Any, key: str) -> Any:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    arts = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[key])))
    return max(arts, key=lambda a: a.updated or a.created) if arts else None


def watch_flow_run(run_id: Any, on_line: Callable[[str], None], poll_s: float = 1.0,
                   hint_after_s: float = 15.0) -> Any:
    """Poll a flow run until it is final; report state changes and the flow's progress line.

    ``on_line`` gets "Scheduled" / "Running" style lines when the state changes, a hint when
    the run is still waiting for a worker after ``hint_after_s``, and the progress artifact's
    ``done/total chips`` line when it changes (polled every ``poll_s``). Returns the final
    flow run."""
    from prefect.client.orchestration import get_client

    last_state = last_line = None
    t0, hinted = time.monotonic(), False
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            state = run.state
            if state is not None and state.name != last_state:
                last_state = state.name
                on_line(f"flow run {run.name}: {state.name}")
            if (state is not None and state.is_scheduled() and not hinted
                    and time.monotonic() - t0 > hint_after_s):
                hinted = True
                on_line(f"still {state.name} after {hint_after_s:.0f} s: is a worker of pool "
                        f"{run.work_pool_name!r} running? (prefect worker start --pool "
                        f"{run.work_pool_name})")
            art = _latest_artifact(client, run.id, PROGRESS_KEY)
            if art is not None and art.description and art.description != last_line:
                last_line = art.description
                on_line(last_line)
            if state is not None and state.is_final():
                return run
            time.sleep(poll_s)


def run_summary(run_id: Any) -> EmbedSummary:
    """The EmbedSummary a finished flow run published as its summary table artifact."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        art = _latest_artifact(client, run_id, SUMMARY_KEY)
    if art is None:
        raise GeomoeError(f"flow run {run_id} completed but published no {SUMMARY_KEY!r} artifact "
                          f"(a deployment of an older embed-region flow?): {flow_run_url(run_id)}")
    rows = json.loads(art.data) if isinstance(art.data, str) else art.data
    return summary_from_table(rows)


if __name__ == "__main__":  # `python -m geomoe.flows.embed_region AOI [OUT]` runs the flow once locally
    embed_region_flow(aoi=sys.argv[1], out=sys.argv[2] if len(sys.argv) > 2 else "cube.zarr")
