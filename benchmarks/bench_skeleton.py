"""Cube skeleton cost at continental size (issue 21): creating, reopening and appending to the
Zarr store for a synthetic Europe-sized layout, with no embedding.

The layout comes from a chip plan that holds only the corner chips of each zone and solar day
(what the skeleton's cost could grow with is the extent x days, not the chips): by default 9
UTM zones of 3,300 x 420 chips (rows x cols), 60 solar days, tile size 32, 256-D float32.

Measured, each the best of ``--repeat`` runs into a fresh directory:
- ``create``: :meth:`geomoe.cube.store.Cube.create_or_open` on an empty --out;
- ``reopen``: the same call on the finished skeleton (a rerun with nothing new: the checks);
- ``append``: the same call with ``--append-days`` more solar days per zone (resize along time);
- files and bytes the skeleton holds.

``--code DIR`` runs the same measurement with the geomoe found in DIR (e.g. the main checkout,
to compare with an older store), in a subprocess, killed after ``--timeout`` seconds.

    PYTHONPATH=$PWD python benchmarks/bench_skeleton.py
    PYTHONPATH=$PWD python benchmarks/bench_skeleton.py --zones 1 --days 8 --code /work/main
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from machine import describe  # benchmarks/machine.py: CPU model, cores, flags


def europe_specs(zones: int, rows: int, cols: int, days: int, tile: int):
    """Grid specs of ``zones`` UTM zones (32629...), each rows x cols chips and ``days`` days."""
    import numpy as np

    from geomoe.cube.layout import specs_from_plan

    items, groups = [], []
    for z in range(zones):
        epsg = 32629 + z
        lon = -9.0 + 6 * z
        for d in range(days):
            when = _dt.datetime(2020, 5, 1, 10, 30) + _dt.timedelta(days=d)
            it = types.SimpleNamespace(id=f"Z{z}D{d}", bbox=[lon - 1, 45.0, lon + 1, 50.0], datetime=when,
                                       properties={}, geometry=None)
            items.append(it)
            c = np.empty(2, dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "U16")])
            c["row"], c["col"] = [5000, 5000 - rows + 1], [200, 200 + cols - 1]
            c["time"], c["item_id"] = np.datetime64(when, "s"), it.id
            groups.append(types.SimpleNamespace(epsg=epsg, grid="fixed", chips=c))
    return specs_from_plan(types.SimpleNamespace(groups=groups), items, tile_size=tile)


def measure(args: argparse.Namespace) -> dict:
    from geomoe.cube.store import Cube, ensure_writable
    from geomoe.embed.lock import store_lock

    t0 = time.perf_counter()
    specs = europe_specs(args.zones, args.rows, args.cols, args.days, args.tile)
    plan_s = time.perf_counter() - t0
    more = europe_specs(args.zones, args.rows, args.cols, args.days + args.append_days, args.tile)
    ident = {"checkpoint_sha256": "0" * 64, "model_size": "S", "embed_dim": args.dim, "pooling": "mean"}

    def call(path: Path, sp) -> float:
        ensure_writable(path)
        with store_lock(path):
            t = time.perf_counter()
            Cube.create_or_open(path, sp, dim=args.dim, identity=ident, attrs={}, items=[])
            return time.perf_counter() - t

    root = Path(tempfile.mkdtemp(prefix="bench-skeleton-", dir=args.tmp))
    try:
        create, reopen, append = [], [], []
        for k in range(args.repeat):
            p = root / f"c{k}.zarr"
            create.append(call(p, specs))
            if k == 0:
                files = [f for f in p.rglob("*") if f.is_file()]
                n_files, n_bytes = len(files), sum(f.stat().st_size for f in files)
            try:
                reopen.append(call(p, specs))
                if args.append_days:
                    append.append(call(p, more))
            except Exception as exc:  # an older store may refuse the grown plan
                append.append(f"refused: {type(exc).__name__}")
            shutil.rmtree(p)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    s = specs[0]
    chunks = sum(len(x.days) * -(-x.ny // x.tile_size) * -(-x.nx // x.tile_size) for x in specs)
    best = lambda v: min((x for x in v if isinstance(x, float)), default=None) if v else None  # noqa: E731
    return {"zones": len(specs), "rows": s.ny, "cols": s.nx, "days": len(s.days), "tile": s.tile_size,
            "dim": args.dim, "tile_day_chunks": chunks, "plan_s": round(plan_s, 3),
            "create_s": best(create), "reopen_s": best(reopen), "append_s": best(append),
            "append_days": args.append_days, "append_notes": [x for x in append if isinstance(x, str)][:1],
            "skeleton_files": n_files, "skeleton_bytes": n_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zones", type=int, default=9)
    ap.add_argument("--rows", type=int, default=3300)
    ap.add_argument("--cols", type=int, default=420)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--append-days", type=int, default=8)
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tmp", default=None, help="directory for the stores (default: the system's)")
    ap.add_argument("--code", default=None, help="run with the geomoe in this directory (subprocess)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args()
    if args.code:
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--code")
        del argv[i:i + 2]
        env = {**os.environ, "PYTHONPATH": str(Path(args.code).resolve())}
        t0 = time.perf_counter()
        try:
            res = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--json"], env=env,
                                 capture_output=True, text=True, timeout=args.timeout)
            out = res.stdout.strip().splitlines()[-1] if res.returncode == 0 else res.stderr[-2000:]
        except subprocess.TimeoutExpired:
            out = f"killed after {args.timeout:.0f} s ({time.perf_counter() - t0:.0f} s)"
        print(f"code: {args.code}\n{out}")
        return
    r = measure(args)
    if args.json:
        print(json.dumps(r))
        return
    import xarray
    import zarr

    print(f"machine: {describe()}; python {platform.python_version()}, zarr {zarr.__version__}, "
          f"xarray {xarray.__version__}")
    print(f"layout: {r['zones']} zones x {r['rows']} x {r['cols']} chips, {r['days']} solar days, tile "
          f"{r['tile']}, dim {r['dim']}: {r['tile_day_chunks']:,} (tile, day) chunks per variable")
    print(f"plan (synthetic specs, not the skeleton): {r['plan_s']:.2f} s")
    print(f"create skeleton: {r['create_s']:.2f} s  ({r['skeleton_files']} files, {r['skeleton_bytes']:,} bytes)")
    print(f"reopen, nothing new: {r['reopen_s']:.2f} s")
    if r["append_s"] is not None:
        print(f"append {r['append_days']} solar days to every zone: {r['append_s']:.2f} s")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
