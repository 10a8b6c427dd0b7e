"""geomoe: Landsat Collection 2 archives to analysis-ready embedding cubes.

The public API, one function per step of the pipeline::

    import geomoe
    items = geomoe.search(None, "catalogs/aois/liverpool.geojson")   # None: the bundled catalog
    summary = geomoe.embed_region("catalogs/aois/liverpool.geojson", out="cube.zarr")
    cube = geomoe.open_cube("cube.zarr")
    ds = cube["utm30n"]                     # xarray Dataset: embedding (time, y, x, dim)

``search`` and ``load_aoi`` find the data, ``plan_chips`` and ``iter_chips`` cut it into
40 x 40 pixel chips, ``load_model`` loads a checkpoint, ``embed_region`` writes a cube,
``open_cube`` reads one, ``pretrain`` trains a model and ``probe`` evaluates one (or probes a
cube with labels from a vector file); on a cube, ``change`` maps change between two dates,
``similar`` finds chips like examples and ``export`` writes its chips to GeoParquet. The names
are imported on first use, so ``import geomoe`` itself does not load torch.
"""

import os
import sys
from typing import TYPE_CHECKING

from geomoe.version import __version__  # noqa: E402,F401

#: libgomp's spin count geomoe starts torch with (see :func:`_short_openmp_spins`).
OPENMP_SPINCOUNT = "1000"


def _short_openmp_spins() -> None:
    """Let idle OpenMP threads sleep soon instead of spinning, unless the user chose.

    torch's CPU kernels run on libgomp, whose idle threads spin-wait (300,000 spins by
    default) at every parallel region's end. When another process holds one of the cores, a
    descheduled thread stalls its partners' spin and throughput collapses several-fold; a short
    spin keeps most of the quiet-machine speed and avoids most of the collapse
    (benchmarks/bench_threads.py). libgomp reads its environment once, when torch is loaded,
    so this only acts when geomoe is imported before torch (the CLI, flows and workers are).
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)


_short_openmp_spins()


# ------------------------------------------------------------------------------ public API
#: The public API: one function per pipeline step. Everything else is reached through its
#: module (``geomoe.chips.plan.ChipPlan``, ``geomoe.cube.store.open_group``, ...) and may change.
__all__ = [
    "search",
    "load_aoi",
    "plan_chips",
    "iter_chips",
    "load_model",
    "embed_region",
    "open_cube",
    "pretrain",
    "probe",
    "change",
    "export",
    "similar",
]

#: public name -> (module, attribute). Resolved on first use (PEP 562), so ``import geomoe``
#: stays light (no torch, xarray or prefect) and the OpenMP setting above still precedes torch.
_PUBLIC = {
    "search": ("geomoe.stac.search", "search"),
    "load_aoi": ("geomoe.stac.aoi", "load_aoi"),
    "plan_chips": ("geomoe.chips.plan", "plan_chips"),
    "iter_chips": ("geomoe.chips.plan", "iter_chips"),
    "load_model": ("geomoe.api", "load_model"),
    "embed_region": ("geomoe.embed.pipeline", "embed_region"),
    "open_cube": ("geomoe.cube.reader", "open_cube"),
    "pretrain": ("geomoe.api", "pretrain"),
    "probe": ("geomoe.evaluate.probe", "run_probe"),
    "change": ("geomoe.evaluate.change", "change"),
    "export": ("geomoe.evaluate.export", "export"),
    "similar": ("geomoe.evaluate.similar", "similar"),
}


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'geomoe' has no attribute {name!r}")
    from importlib import import_module

    module, attr = _PUBLIC[name]
    obj = getattr(import_module(module), attr)
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from geomoe.stac.aoi import load_aoi
    from geomoe.api import load_model, pretrain
    from geomoe.stac.search import search
    from geomoe.chips.plan import iter_chips, plan_chips
    from geomoe.cube.reader import open_cube
    from geomoe.embed.pipeline import embed_region
    from geomoe.evaluate.probe import run_probe as probe
    from geomoe.evaluate.change import change
    from geomoe.evaluate.export import export
    from geomoe.evaluate.similar import similar
