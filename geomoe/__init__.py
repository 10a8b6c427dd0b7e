"""geomoe: Landsat Collection 2 archives to analysis-ready embedding cubes."""

import os
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geomoe")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

#: libgomp's spin count geomoe starts torch with (see :func:`_short_openmp_spins`).
OPENMP_SPINCOUNT = "1000"


def _short_openmp_spins() -> None:
    """Let idle OpenMP threads sleep soon instead of spinning, unless the user chose.

    torch's CPU kernels run on libgomp, whose idle threads spin-wait (300,000 spins by
    default) at every parallel region's end. When another process holds one of the cores, a
    descheduled thread stalls its partners' spin and throughput collapses several-fold; a short
    spin keeps most of the quiet-machine speed and none of the collapse
    (benchmarks/bench_threads.py). libgomp reads its environment once, when torch is loaded,
    so this only acts when geomoe is imported before torch (the CLI, flows and workers are).
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)


_short_openmp_spins()
