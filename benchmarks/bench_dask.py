"""End-to-end wall time of `geomoe embed-region` with and without Dask on this machine.

Runs the real CLI on a fresh output store each time, alternating the settings, and prints
one line per run (wall seconds including process start, chips/s over the whole command).
Uses the Prefect server in PREFECT_API_URL for the Dask runs when one is set (otherwise each
Dask run starts a temporary one, which adds its start-up time)::

    python benchmarks/bench_dask.py --aoi catalogs/aois/europe.geojson --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> (CLI arguments, extra environment); local-1t: torch on one thread (OMP_NUM_THREADS=1)
SETTINGS = {"local": ([], {}), "local-1t": ([], {"OMP_NUM_THREADS": "1"}),
            "dask-1": (["--dask-workers", "1"], {}), "dask-2": (["--dask-workers", "2"], {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aoi", default="catalogs/aois/europe.geojson")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--settings", default="local,dask-1,dask-2")
    args = ap.parse_args()
    print(f"cpus={len(os.sched_getaffinity(0))} loadavg={os.getloadavg()} "
          f"PREFECT_API_URL={os.environ.get('PREFECT_API_URL', '(none)')}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name in args.settings.split(","):
                out = Path(tmp) / f"{name}-{rep}.zarr"
                t0 = time.perf_counter()
                cli, env = SETTINGS[name]
                res = subprocess.run([sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi", args.aoi,
                                      "--out", str(out), "--json", "--quiet", *cli],
                                     capture_output=True, text=True, env={**os.environ, **env})
                wall = time.perf_counter() - t0
                if res.returncode != 0:
                    sys.exit(f"{name}: exit {res.returncode}\n{res.stderr[-2000:]}")
                s = json.loads(res.stdout)
                chips = s["chips_embedded"] + s["chips_skipped_cloud"]
                print(f"{name:7s} rep {rep}: wall {wall:6.1f} s, {chips} chips, {chips / wall:6.1f} chips/s "
                      f"end to end (flow/library seconds {s['seconds']:.1f}), loadavg {os.getloadavg()[0]:.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
