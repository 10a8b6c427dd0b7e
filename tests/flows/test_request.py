"""One request for embed-region: the CLI's options and the flow's parameters both come from
EmbedRequest, and every option of `geomoe embed-region` reaches the flow (before, --grid,
--read-workers, --threads and --plot were dropped on the way to --dask-* / --deployment)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
from pathlib import Path

import pytest

from geomoe.cli import build_parser
from geomoe.cli.embed import flow_params, request_from_args
from geomoe.embed.request import EmbedRequest, option, request_fields
from geomoe.errors import GeomoeError

#: Options of `geomoe embed-region` that say how to run or print, not what to compute.
RUN_MODE = {"--help", "--json", "--quiet", "--deployment", "--dask-address", "--dask-workers"}


def _embed_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["embed-region"]


def _sample_argv(repo_root: Path, ckpt: Path) -> tuple[list[str], dict]:
    """A command line giving every request option a value other than its default, and the
    flow parameters it must produce (local paths made absolute)."""
    aoi = repo_root / "catalogs" / "aois" / "liverpool.geojson"
    catalog = repo_root / "catalogs" / "catalog.json"
    values = {  # field: (argv after the option, expected flow parameter)
        "aoi": ([os.path.relpath(aoi)], str(aoi.resolve())),
        "out": (["rel/cube.zarr"], str(Path.cwd() / "rel" / "cube.zarr")),
        "catalog": ([os.path.relpath(catalog)], str(catalog.resolve())),
        "datetime": (["2020-01-01/.."], "2020-01-01/.."),
        "max_cloud": (["50"], 50.0),
        "checkpoint": ([str(ckpt)], str(ckpt.resolve())),
        "device": (["cpu"], "cpu"),
        "precision": (["fp32"], "fp32"),
        "compile": ([], "on"),  # the bare option
        "batch_size": (["8"], 8),
        "min_valid": (["0.5"], 0.5),
        "pooling": (["cls"], "cls"),
        "dtype": (["float16"], "float16"),
        "tile_size": (["2"], 2),
        "read_workers": (["1"], 1),
        "threads": (["1"], 1),
        "grid": (["item"], "item"),
        "plot": ([], True),
        "tiles_per_task": (["3"], 3),
    }
    argv = ["embed-region"]
    for name, (vals, _) in values.items():
        argv += [option(name), *vals]
    return argv, {k: v for k, (_, v) in values.items()}


def test_every_cli_option_reaches_the_flow(repo_root, flow_ckpt, embed_flow_module):
    cli = {f.name for f in request_fields("cli")}
    flow = {f.name for f in request_fields("flow")}
    assert cli <= flow, f"CLI options that are no flow parameter: {sorted(cli - flow)}"
    # every option of the real parser is a request field or a run-mode option
    opts = {a.option_strings[-1]: a for a in _embed_parser()._actions if a.option_strings}
    assert set(opts) == {option(n) for n in cli} | RUN_MODE, set(opts) ^ ({option(n) for n in cli} | RUN_MODE)
    for f in request_fields("cli"):  # the option is the field: default, choices, range
        a = opts[option(f.name)]
        assert a.dest == f.name and a.required == (f.default is dataclasses.MISSING)
        if f.default is not dataclasses.MISSING:
            assert a.default == f.default, f.name
        assert a.choices == (None if f.metadata["choices"] is None else list(f.metadata["choices"]))
        if f.metadata["type"] is not None:
            assert a.type is f.metadata["type"], f.name

    argv, want = _sample_argv(repo_root, flow_ckpt)
    assert set(want) == cli, "give the new option a sample value in _sample_argv"
    params = flow_params(build_parser().parse_args(argv))
    assert params == want
    for name, value in want.items():
        default = EmbedRequest.__dataclass_fields__[name].default
        assert value != default, f"the sample of {name} must not be its default"
    # the flow takes exactly those parameters: signature and Prefect's schema (UI, deployments)
    fn = embed_flow_module.embed_region_flow
    inspect.signature(fn.fn).bind(**params)
    assert set(inspect.signature(fn.fn).parameters) == flow
    props = fn.parameters.model_dump()["properties"]
    assert set(props) == flow
    assert props["batch_size"]["description"] == "chips per model call (default 256)"
    assert props["max_cloud"]["description"] == "max eo:cloud_cover (percent, 0-100)"


def test_a_flow_run_from_the_command_line_uses_grid_read_workers_threads_and_plot(
        prefect_server, repo_root, flow_ckpt, embed_flow_module, tmp_path):
    """Through the flow function for real: the options that used to be dropped take effect."""
    import zarr

    out = tmp_path / "item.zarr"
    args = build_parser().parse_args([
        "embed-region", "--aoi", str(repo_root / "catalogs" / "aois" / "liverpool.geojson"),
        "--out", str(out), "--checkpoint", str(flow_ckpt), "--device", "cpu", "--tile-size", "2",
        "--batch-size", "8", "--grid", "item", "--read-workers", "1", "--threads", "1", "--plot"])
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what the tile tasks run with unless --threads reaches them
    try:
        with prefect_server.settings():
            summary = embed_flow_module.embed_region_flow(**flow_params(args))
    finally:
        torch.set_num_threads(before)
    attrs = zarr.open_group(str(out), mode="r").attrs.asdict()
    assert attrs["geomoe:identity"]["grid"] == "item"  # the default plans the fixed grid
    assert attrs["geomoe:query"]["grid"] == "item"
    assert summary["read_workers"] == [1] and summary["torch_threads"] == [1]
    assert summary["chips_embedded"] > 0
    assert Path(summary["plot"]) == out.with_name("item.zarr.png") and Path(summary["plot"]).is_file()


def test_plain_run_and_flow_share_the_request(repo_root, flow_ckpt):
    args = build_parser().parse_args(["embed-region", "--aoi", "x.geojson", "--grid", "item",
                                      "--read-workers", "3"])
    req = request_from_args(args)
    assert (req.grid, req.read_workers, req.plot, req.threads) == ("item", 3, False, None)
    assert json.loads(json.dumps(dataclasses.asdict(req))) == dataclasses.asdict(req)  # tasks get it as JSON


def test_embed_region_takes_the_library_fields():
    from geomoe.embed.pipeline import embed_region

    sig = inspect.signature(embed_region).parameters
    lib = {f.name: (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
           for f in request_fields("library")}
    got = {n: p.default for n, p in sig.items() if n not in ("progress", "prefetch")}
    assert got == lib


def test_choices_are_the_library_names():
    from geomoe.device import PRECISIONS
    from geomoe.chips.grid import GRID_MODES
    from geomoe.model import POOLINGS

    meta = {f.name: f.metadata for f in dataclasses.fields(EmbedRequest)}
    assert meta["pooling"]["choices"] == tuple(POOLINGS)
    assert meta["grid"]["choices"] == tuple(GRID_MODES)
    assert meta["precision"]["choices"] == tuple(PRECISIONS)


@pytest.mark.parametrize("field,value,message", [
    ("read_workers", 0, r"read_workers \(--read-workers\): must be an integer >= 1, got 0"),
    ("grid", "diagonal", "grid must be one of fixed, item, not 'diagonal'"),
    ("max_cloud", 120.0, r"max_cloud \(--max-cloud\): must be a number in \[0, 100\]"),
    ("threads", 0, r"threads \(--threads\): must be an integer >= 1"),
    ("table_tile", 0, r"table_tile: must be an integer >= 1"),
])
def test_request_refuses_what_the_cli_would(field, value, message):
    """A deployment run's --param bypasses argparse: the request applies the same ranges."""
    with pytest.raises(GeomoeError, match=message):
        EmbedRequest(aoi="x", **{field: value}).validate()
