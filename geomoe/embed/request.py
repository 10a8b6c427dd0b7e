"""The embed-region request: every parameter of a run, defined once.

Each field of :class:`EmbedRequest` carries its default, its help text, its choices or range
(a :class:`geomoe.options.RangeType`) and where it appears (``where``):

- ``"cli"``: an option of ``geomoe embed-region`` (``--batch-size`` for ``batch_size``), built by
  :func:`geomoe.cli.embed.add_request_arguments`;
- ``"flow"``: a parameter of the Prefect flow ``embed-region`` (:mod:`geomoe.flows.embed_region`
  takes its signature from here);
- ``"library"``: an argument of :func:`geomoe.embed.pipeline.embed_region`.

So a new parameter is one new field, and an option cannot reach the CLI without reaching the
flow (tests/flows/test_request.py). The module is light (no torch): the CLI builds its parser
from it on every call.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from geomoe.options import SEARCH_HELP, RangeType, fraction, percent, positive_int
from geomoe.errors import GeomoeError
from geomoe.model.config import POOLINGS

#: where a field appears by default: everywhere
EVERYWHERE = frozenset({"cli", "flow", "library"})


def param(default: Any = dataclasses.MISSING, help: str | None = None, *,
          type: RangeType | None = None, choices: Iterable[str] | None = None,
          where: Iterable[str] = EVERYWHERE, search: bool = False, const: str | None = None) -> Any:
    """A request field: ``default`` (none: required) and how it is offered.

    ``type``: the range a number must lie in (the CLI's argparse type, and :meth:`validate`).
    ``search``: one of the STAC search options every data command shares (help from
    :data:`geomoe.options.SEARCH_HELP`); the CLI adds those with
    :func:`geomoe.cli.common.add_search_arguments`.
    ``const``: the value of the bare option (``--compile`` alone means ``--compile on``).
    """
    return field(default=default, metadata={
        "help": help, "type": type, "choices": None if choices is None else tuple(choices),
        "where": frozenset(where), "search": search, "const": const})


def option(name: str) -> str:
    """The CLI option of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclass
class EmbedRequest:
    """Every parameter of an embed-region run: what defines the cube and how the run is done.

    JSON-able, so flow tasks rebuild it anywhere. Field order is the order of ``--help``.
    """

    aoi: Any = param(help="GeoJSON file, URL, inline GeoJSON or a bundled AOI name (europe, liverpool)")
    out: str = param("cube.zarr", help="output Zarr store (default: cube.zarr)")
    catalog: str | None = param(None, SEARCH_HELP["catalog"], search=True)
    datetime: str | None = param(None, SEARCH_HELP["datetime"], search=True)
    max_cloud: float | None = param(None, SEARCH_HELP["max_cloud"], type=percent, search=True)
    checkpoint: str | None = param(
        None, help="model weights (default: checkpoints/geomoe-demo-S.safetensors; the published "
                   "pretrained_S_best.pth also works)")
    device: str = param("auto", help="auto | cpu | cuda[:N]")
    # auto | fp32 | bf16, auto | on | off: resolved per run by geomoe.embed.speed.choose_speed
    precision: str = param(
        "auto", choices=("auto", "fp32", "bf16"),
        help="auto (default): bf16 where it is fast and the job is large enough to pay for it "
             "(a GPU; a CPU with AVX512-BF16 or AMX, together with --compile), else fp32; the "
             "summary says what ran and why. bf16 on a CPU without native bf16 falls back to "
             "fp32 with a warning (GEOMOE_FORCE_BF16=1 keeps it). Vectors within ~1e-2 "
             "relative of fp32")
    compile: str | bool = param(  # bool: on/off, as the library and older flows pass it
        "auto", choices=("auto", "on", "off"), const="on",
        help="torch.compile the encoder where it runs in bf16. auto (default): for a large job "
             "(geomoe.embed.speed.LARGE_JOB_CHIPS planned chips); on (or bare --compile): "
             "always; off: never. A one-off compile in each process (shorter in later runs, "
             "from inductor's disk cache); no effect in fp32. Figures: benchmarks/README.md")
    batch_size: int = param(256, type=positive_int, help="chips per model call (default 256)")
    min_valid: float = param(
        0.9, type=fraction,
        help="skip chips with a smaller valid-pixel fraction (recorded in valid_fraction)")
    pooling: str = param("mean", choices=POOLINGS)
    dtype: str = param("float32", choices=("float32", "float16"))
    tile_size: int = param(32, type=positive_int, help="tile = Zarr chunk of N x N chips (default 32)")
    read_workers: int = param(
        2, type=positive_int,
        help="raster-reading threads (default 2, at most the cores this process may use; "
             "raise on many-core GPU hosts)")
    threads: int | None = param(
        None, type=positive_int, where={"cli", "flow"},
        help="torch compute threads (default and maximum: the cores this process may use)")
    grid: str | None = param(None, choices=("fixed", "item"),  # = geomoe.chips.grid.GRID_MODES
                             help="override the chip grid mode")
    plot: bool = param(False, where={"cli", "flow"}, help="also write <out>.png (PCs 1-3 as RGB)")
    table_tile: int = param(256, type=positive_int, where={"flow", "library"},
                            help="chips per Zarr chunk of an item-grid (table) group")
    tiles_per_task: int | None = param(
        None, type=positive_int, where={"cli", "flow"},
        help="tiles per Prefect task with --dask-*/--deployment (default: auto, about 8 tasks "
             "per Dask worker, at most 64 tiles each); no effect on a plain run")
    gpu_resource: bool = param(
        False, where={"flow"},
        help="annotate tile tasks with the Dask resource GPU=1, so a Dask scheduler sends them "
             "only to workers started with --resources GPU=1 (one task per GPU)")

    def __post_init__(self) -> None:
        from geomoe.embed.speed import compile_setting

        self.compile = compile_setting(self.compile)

    def validate(self) -> None:
        """Refuse a value outside its field's choices or range, before anything is written.

        The CLI's argparse applies the same checks; this is for what bypasses it: the library,
        the flow, a deployment run's ``--param``."""
        from geomoe.device import check_precision

        check_precision(self.precision)  # its own error class and message
        if "://" in str(self.out):  # else Path() folds s3://b/x into a local folder s3:/b/x
            raise GeomoeError(
                f"out {self.out!r} is a URL: cubes are written to a local (POSIX) path only; "
                "write it locally and copy the store to object storage afterwards")
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None and f.default is None:
                continue
            if meta["choices"] and value not in meta["choices"]:
                raise GeomoeError(f"{f.name} must be one of {', '.join(meta['choices'])}, "
                                  f"not {value!r}")
            if meta["type"] is not None:
                try:
                    meta["type"](str(value))
                except Exception as exc:  # argparse.ArgumentTypeError: "must be an integer >= 1, got 0"
                    name = f"{f.name} ({option(f.name)})" if "cli" in meta["where"] else f.name
                    raise GeomoeError(f"{name}: {exc}") from None

    def arguments(self, *where: str) -> dict[str, Any]:
        """The fields that appear in every one of ``where`` ("cli", "flow", "library"), by name."""
        return {f.name: getattr(self, f.name) for f in request_fields(*where)}

    def with_absolute_paths(self) -> "EmbedRequest":
        """A copy whose local paths are absolute, for a run in another working directory (a
        deployment's worker): ``aoi`` and ``catalog`` where they name an existing file (not
        inline GeoJSON, a URL or a bundled name), ``checkpoint`` if given, and ``out``."""
        def local(value: Any) -> Any:
            return str(Path(value).resolve()) if is_file(value) else value

        return dataclasses.replace(
            self, aoi=local(self.aoi), catalog=local(self.catalog), out=str(Path(self.out).resolve()),
            checkpoint=None if self.checkpoint is None else str(Path(self.checkpoint).resolve()))


def request_fields(*where: str) -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`EmbedRequest` that appear in every one of ``where``, in order."""
    return tuple(f for f in dataclasses.fields(EmbedRequest) if set(where) <= f.metadata["where"])


def is_file(value: Any) -> bool:
    """True when ``value`` names an existing file (inline GeoJSON strings are not paths)."""
    if not isinstance(value, (str, os.PathLike)):
        return False
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # too long / NUL: inline GeoJSON
        return False
