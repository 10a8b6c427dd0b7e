"""`geomoe embed-region`: AOI -> embedding cube, locally, on Dask, or via a Prefect deployment.

Without a server: ``geomoe embed-region --aoi europe [--out cube.zarr]`` (a bundled AOI by name,
or any GeoJSON file, URL or string).
``--dask-address tcp://host:8786`` / ``--dask-workers N`` run the Prefect flow with its tile
tasks on Dask; ``--deployment [NAME]`` asks the configured Prefect server to run the
deployment (``embed-region/default``) instead. Those two paths live in geomoe.flows, imported
only then: geomoe outside geomoe.flows never imports Prefect.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from geomoe.cli.common import add_search_arguments
from geomoe.options import positive_int
from geomoe.embed.request import EmbedRequest, option, request_fields
from geomoe.errors import GeomoeError
from geomoe.model.config import POOLINGS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed-region", help="embed every chip of an AOI into a Zarr cube",
        description="Search the catalog for the AOI, chip the scenes, embed them with the "
                    "MoE-MAE and write a resumable Zarr cube (rerun the same command to resume).")
    add_request_arguments(p)
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


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    """One option per CLI field of :class:`EmbedRequest`, in field order, with the field's
    default, help, choices and range; --catalog/--datetime/--max-cloud as every data command
    has them (:func:`add_search_arguments`)."""
    search_added = False
    for f in request_fields("cli"):
        meta = f.metadata
        if meta["search"]:
            if not search_added:
                add_search_arguments(p)
                search_added = True
            continue
        kw: dict = {"help": meta["help"]}
        if f.default is dataclasses.MISSING:
            kw["required"] = True
        elif isinstance(f.default, bool):
            kw["action"] = "store_true"
        else:
            kw["default"] = f.default
        if meta["type"] is not None:
            kw["type"] = meta["type"]
        if meta["choices"] is not None:
            kw["choices"] = list(meta["choices"])
        if meta.get("const") is not None:
            kw.update(nargs="?", const=meta["const"])
        p.add_argument(option(f.name), **kw)


def request_from_args(args: argparse.Namespace) -> EmbedRequest:
    """The request a parsed ``geomoe embed-region`` command line asks for."""
    return EmbedRequest(**{f.name: getattr(args, f.name) for f in request_fields("cli")})


def flow_params(args: argparse.Namespace) -> dict:
    """The flow parameters of a command line: every option that is a flow parameter, with local
    paths absolute (a deployment's worker runs elsewhere). Flow parameters without an option
    (``table_tile``, ``gpu_resource``) are left to the flow or the deployment."""
    return request_from_args(args).with_absolute_paths().arguments("cli", "flow")


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupt kept (printed by geomoe.cli on Ctrl-C / SIGTERM)."""
    if args.deployment:
        return ("stopped waiting; the flow run on the server was not cancelled by this "
                "(see it in the Prefect UI)")
    return (f"every tile finished so far is kept in {args.out}; rerun the same command to resume "
            "(finished tiles are skipped)")


def _load_flows():
    """geomoe.flows.embed_region, imported only for ``--dask-*`` / ``--deployment``: the plain
    path never imports Prefect."""
    from geomoe.errors import require_extra

    require_extra(("prefect", "prefect_dask", "distributed"), "prefect",
                  "running through Prefect (--deployment, --dask-*)")
    import geomoe.flows.embed_region as mod

    return mod


class _Printer:
    """At most one progress line per second, plus the last one."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0 or (p.done >= p.total and not p.estimated):  # an estimate may be low
            self.last = now
            print(f"[embed-region] {p.line()}", file=sys.stderr, flush=True)


def _say(line: str) -> None:
    print(f"[embed-region] {line}", file=sys.stderr, flush=True)


def _run_deployment(args: argparse.Namespace) -> int:
    """Trigger the deployment, show its state and progress, end with the local run's summary."""
    mod = _load_flows()
    run = mod.trigger_deployment(flow_params(args), name=args.deployment, timeout=0)
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
    _print_summary(s, args)
    if not args.json:
        print(f"flow run: {url}")
    return 0


def _print_summary(s, args: argparse.Namespace) -> None:
    print(json.dumps(s.to_dict(), indent=1) if args.json else str(s))
    if s.extra.get("plot") and not args.json:
        print(f"plot: {s.extra['plot']}")


def _run(args: argparse.Namespace) -> int:
    if args.deployment:
        return _run_deployment(args)
    if args.dask_address or args.dask_workers:
        mod = _load_flows()
        summary = mod.run_with_dask(flow_params(args), address=args.dask_address,
                                    n_workers=args.dask_workers or 2)
        _print_summary(mod.summary_from_table([{"key": k, "value": v} for k, v in summary.items()]), args)
        return 0
    from geomoe.device import cores_available, limit_threads
    from geomoe.embed.pipeline import embed_region

    req = request_from_args(args)
    if req.plot:  # a foreign file at <out>.png is refused before any work, not after it
        from geomoe.viz import check_plot_out

        check_plot_out(Path(req.out).with_name(Path(req.out).name + ".png"), Path(req.out))
    limit_threads(req.threads)
    s = embed_region(**{**req.arguments("cli", "library"),
                        "read_workers": min(req.read_workers, cores_available())},
                     progress=None if args.quiet else _Printer())
    if req.plot:
        from geomoe.viz import plot_cube

        s.extra["plot"] = str(plot_cube(s.out))
    _print_summary(s, args)
    print(f"open it: xr.open_zarr({s.out!r}, group={s.groups[0]!r})", file=sys.stderr)
    return 0
