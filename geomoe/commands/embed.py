"""`geomoe embed-region`: AOI -> embedding cube, locally, on Dask, or via a Prefect deployment.

Without a server: ``geomoe embed-region --aoi catalogs/aois/europe.geojson [--out cube.zarr]``.
``--dask-address tcp://host:8786`` / ``--dask-workers N`` run the Prefect flow with its tile
tasks on Dask; ``--deployment [NAME]`` asks the configured Prefect server to run the
deployment (``embed-region/default``) instead. Those two paths live in flows/ (geomoe itself
never imports Prefect) and are loaded from the source checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from geomoe.commands import add_search_arguments, fraction, positive_int
from geomoe.errors import GeomoeError
from geomoe.model.config import POOLINGS

_REPO = Path(__file__).resolve().parents[2]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed-region", help="embed every chip of an AOI into a Zarr cube",
        description="Search the catalog for the AOI, chip the scenes, embed them with the "
                    "MoE-MAE and write a resumable Zarr cube (rerun the same command to resume).")
    p.add_argument("--aoi", required=True, help="GeoJSON file, URL or inline GeoJSON")
    p.add_argument("--out", default="cube.zarr", help="output Zarr store (default: cube.zarr)")
    add_search_arguments(p)
    p.add_argument("--checkpoint", default=None,
                   help="model weights (default: checkpoints/geomoe-demo-S.safetensors; the published "
                        "pretrained_S_best.pth also works)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 autocast on CUDA, fp32 on CPU. bf16 on a CPU pays off "
                        "with --compile where the CPU has AVX512-BF16 or AMX; elsewhere it falls back "
                        "to fp32 with a warning (GEOMOE_FORCE_BF16=1 keeps it). Vectors within ~1e-2 "
                        "relative of fp32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder where it runs in bf16: CUDA, or --precision bf16 "
                        "(~2x on an H100 after 45-60 s of compiling, 40-50 s on CPU, ~8 s on CPU reruns; "
                        "no effect in fp32)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="chips per model call (default 256)")
    p.add_argument("--min-valid", type=fraction, default=0.9,
                   help="skip chips with a smaller valid-pixel fraction (recorded in valid_fraction)")
    p.add_argument("--pooling", default="mean", choices=POOLINGS)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--tile-size", type=positive_int, default=32, help="tile = Zarr chunk of N x N chips (default 32)")
    p.add_argument("--read-workers", type=positive_int, default=2,
                   help="raster-reading threads (default 2, at most the cores this process may use; "
                        "raise on many-core GPU hosts)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch compute threads (default and maximum: the cores this process may use)")
    p.add_argument("--grid", default=None, choices=["fixed", "item"], help="override the chip grid mode")
    p.add_argument("--plot", action="store_true", help="also write <out>.png (PCs 1-3 as RGB)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--deployment", nargs="?", const="embed-region/default", default=None,
                   help="run through the Prefect deployment (default embed-region/default) on the "
                        "server in PREFECT_API_URL and wait for it")
    g.add_argument("--dask-address", default=None, help="run tile tasks on this Dask scheduler")
    g.add_argument("--dask-workers", type=positive_int, default=None,
                   help="run tile tasks on a local Dask cluster of N worker processes")
    p.set_defaults(func=_run, on_interrupt=_interrupted)


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupt kept (printed by geomoe.cli on Ctrl-C / SIGTERM)."""
    if args.deployment:
        return ("stopped waiting; the flow run on the server was not cancelled by this "
                "(see it in the Prefect UI)")
    return (f"every tile finished so far is kept in {args.out}; rerun the same command to resume "
            "(finished tiles are skipped)")


def _load_flows():
    for base in (Path.cwd(), _REPO):
        f = base / "flows" / "embed_region.py"
        if f.is_file():
            spec = importlib.util.spec_from_file_location("flows.embed_region", f)
            mod = importlib.util.module_from_spec(spec)
            sys.modules["flows.embed_region"] = mod
            spec.loader.exec_module(mod)
            return mod
    raise GeomoeError("flows/embed_region.py not found: run from the geomoe source checkout "
                      "to use --deployment or --dask-*")


class _Printer:
    """At most one progress line per second, plus the last one."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0 or p.done >= p.total:
            self.last = now
            print(f"[embed-region] {p.line()}", file=sys.stderr, flush=True)


def _params(args: argparse.Namespace) -> dict:
    from geomoe.embed import is_file

    aoi = args.aoi
    if is_file(aoi):
        aoi = str(Path(aoi).resolve())
    return {"aoi": aoi, "catalog": args.catalog, "datetime": args.datetime,
            "checkpoint": None if args.checkpoint is None else str(Path(args.checkpoint).resolve()),
            "out": str(Path(args.out).resolve()), "device": args.device,
            "batch_size": args.batch_size, "min_valid": args.min_valid, "pooling": args.pooling,
            "dtype": args.dtype, "tile_size": args.tile_size, "max_cloud": args.max_cloud,
            "compile": args.compile, "precision": args.precision}


def _say(line: str) -> None:
    print(f"[embed-region] {line}", file=sys.stderr, flush=True)


def _run_deployment(args: argparse.Namespace) -> int:
    """Trigger the deployment, show its state and progress, end with the local run's summary."""
    mod = _load_flows()
    run = mod.trigger_deployment(_params(args), name=args.deployment, timeout=0)
    url = mod.flow_run_url(run.id)
    _say(f"flow run {run.name} of {args.deployment}: {url}")
    try:
        run = mod.watch_flow_run(run.id, (lambda line: None) if args.quiet else _say)
    except KeyboardInterrupt:
        _say(f"stopped watching; flow run {run.name} goes on on the server: {url} "
             f"(cancel: prefect flow-run cancel {run.id})")
        return 130
    state = run.state
    if not state.is_completed():
        msg = (state.message or "no message").strip().splitlines()[0]
        raise GeomoeError(f"flow run {run.name} of {args.deployment} ended {state.name}: {msg}; "
                          f"logs: {url}")
    s = mod.run_summary(run.id)
    s.extra["flow_run_url"] = url
    print(json.dumps(s.to_dict(), indent=1) if args.json else f"{s}\nflow run: {url}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.deployment:
        return _run_deployment(args)
    if args.dask_address or args.dask_workers:
        mod = _load_flows()
        summary = mod.run_with_dask(_params(args), address=args.dask_address,
                                    n_workers=args.dask_workers or 2,
                                    threads=getattr(args, "threads", None))
        s = mod.summary_from_table([{"key": k, "value": v} for k, v in summary.items()])
        print(json.dumps(s.to_dict(), indent=1) if args.json else str(s))
        return 0
    from geomoe.device import cores_available, limit_threads
    from geomoe.embed import embed_region

    if args.plot:  # a foreign file at <out>.png is refused before any work, not after it
        from geomoe.plot import check_plot_out

        check_plot_out(Path(args.out).with_name(Path(args.out).name + ".png"), Path(args.out))
    limit_threads(args.threads)
    s = embed_region(args.aoi, catalog=args.catalog, datetime=args.datetime, checkpoint=args.checkpoint,
                     out=args.out, device=args.device, batch_size=args.batch_size,
                     min_valid=args.min_valid, pooling=args.pooling, dtype=args.dtype,
                     progress=None if args.quiet else _Printer(), max_cloud=args.max_cloud,
                     tile_size=args.tile_size, grid=args.grid,
                     read_workers=min(args.read_workers, cores_available()),
                     compile=args.compile, precision=args.precision)
    if args.plot:
        from geomoe.plot import plot_cube

        s.extra["plot"] = str(plot_cube(s.out))
    print(json.dumps(s.to_dict(), indent=1) if args.json else str(s))
    if args.plot and not args.json:
        print(f"plot: {s.extra['plot']}")
    print(f"open it: xr.open_zarr({s.out!r}, group={s.groups[0]!r})", file=sys.stderr)
    return 0
