"""Planning cost: per-tile cube planning (geomoe.cube.tiling.plan_specs) vs whole-AOI chip
enumeration (geomoe.chips.plan.plan_chips, what embed-region planned with before), side by side
in one process on the same synthetic items.

Items: metadata-only copies of the bundled Liverpool scene with WRS-2-like footprints (a
185 x 180 km rectangle turned 12 degrees) laid out on a grid of paths and rows in UTM 33N,
one solar day per pass; the AOI covers them all. Nothing is read from a raster: planning never
reads pixels.

Each (size, planner) runs in a fresh process (after one small warm-up call), which reports
wall time (no tracing), the peak RSS growth over the process before planning (VmHWM - VmRSS,
GEOS and numpy included), the tracemalloc peak (Python and numpy allocations; a second run
with tracing on), the chips planned (whole enumeration) or estimated (per tile), and tiles. Whole enumeration is skipped above --max-full items: it costs hundreds of bytes
per chip and a Landsat scene holds about 23,000 chips.

    PYTHONPATH=$PWD python benchmarks/bench_planning.py [--sizes 25,50,100,200,500] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import shapely
import shapely.geometry as sg
from pyproj import Transformer
from machine import describe  # benchmarks/machine.py: CPU model, cores, flags

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = (REPO / "geomoe" / "data" / "catalogs" / "landsat-scenes" / "LC08_L2SP_204023_20200927_20201006_02_T1"
            / "LC08_L2SP_204023_20200927_20201006_02_T1.json")
EPSG = 32633


def synthetic_items(n: int) -> list:
    """``n`` items: 10 x 10 path/row grids per pass, passes 8 days apart."""
    import pystac

    tmpl = pystac.Item.from_file(str(TEMPLATE))
    tmpl.make_asset_hrefs_absolute()
    tmpl.clear_links()
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    out = []
    for k in range(n):
        p, r = (k % 100) % 10, (k % 100) // 10
        cx, cy = 200_000 + 110_000 * p, 5_100_000 + 161_000 * r  # WRS-2 spacing near 50 N
        rect = shapely.affinity.rotate(sg.box(cx - 92_500, cy - 90_000, cx + 92_500, cy + 90_000), 12,
                                       origin="center")
        rect = shapely.segmentize(rect, 5_000.0)
        ll = shapely.transform(rect, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
        it = copy.deepcopy(tmpl)
        when = dt.datetime(2020, 6, 1, 10, 0) + dt.timedelta(days=8 * (k // 100), seconds=p * 30 + r)
        it.id = f"LC08_L2SP_{190 + p:03d}{20 + r:03d}_{when:%Y%m%d}_SYN{k:05d}"  # Landsat-like: path/row first
        it.geometry, it.bbox = sg.mapping(ll), list(ll.bounds)
        for key in ("proj:transform", "proj:shape"):
            it.properties.pop(key, None)
        it.properties["proj:code"], it.properties["proj:epsg"] = f"EPSG:{EPSG}", EPSG
        it.properties["proj:bbox"] = list(rect.bounds)
        it.datetime = when
        out.append(it)
    return out


def run(fn, trace: bool) -> tuple[float, float, object]:
    gc.collect()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    res = fn()
    dt_ = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else float("nan")
    if trace:
        tracemalloc.stop()
    return dt_, peak, res


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def case(n: int, planner: str, tile_size: int) -> dict:
    """One measurement in this (fresh) process."""
    from geomoe.chips.plan import plan_chips
    from geomoe.cube.tiling import plan_specs

    aoi = sg.box(0.0, 44.0, 40.0, 64.0)  # holds every footprint
    if planner == "new":
        fn = lambda its: plan_specs(its, aoi, tile_size=tile_size)  # noqa: E731
    else:
        fn = lambda its: plan_chips(its, aoi=aoi)  # noqa: E731
    fn(synthetic_items(1))  # warm-up: imports, PROJ
    items = synthetic_items(n)
    gc.collect()
    base = _rss_kib("VmRSS")
    t, _, res = run(lambda: fn(items), trace=False)
    rss = (_rss_kib("VmHWM") - base) / 1024
    if planner == "new":
        chips, tiles = f"~{sum(s.n_planned() for s in res):,}", sum(len(s.tiles()) for s in res)
    else:
        chips, tiles = f"{len(res):,}", None
    del res
    _, peak, _ = run(lambda: fn(items), trace=True)
    return {"items": n, "planner": planner, "chips": chips, "tiles": tiles, "seconds": round(t, 3),
            "rss_growth_mib": round(rss, 1), "tracemalloc_peak_mib": round(peak, 1)}


def prepare_store(n: int, store: Path, tile_size: int) -> None:
    """What the run that creates a cube stores for workers: the plan and the item table."""
    import zarr

    from geomoe.cube.items import write_plan_files
    from geomoe.cube.tiling import plan_specs

    items = synthetic_items(n)
    zarr.open_group(str(store), mode="w", zarr_format=3)
    write_plan_files(store, plan_specs(items, sg.box(0.0, 44.0, 40.0, 64.0), tile_size=tile_size), items)


def worker(n: int, store: Path) -> dict:
    """A worker's start-up for the busiest tile: read the plan, load the tile's items, list its
    chips (no model, no pixels). In a fresh process; imports are done before the clock starts."""
    import geopandas  # noqa: F401
    import pyarrow.dataset  # noqa: F401  (what a filtered read_table uses)
    import pyarrow.parquet  # noqa: F401
    import pystac  # noqa: F401
    import zarr  # noqa: F401

    from geomoe.chips.plan import plan_chips
    from geomoe.cube.items import ItemTable, load_specs
    from geomoe.cube.layout import CubeTile

    gc.collect()
    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    specs = load_specs(store)
    spec = specs[0]
    key = max(spec.tile_items, key=lambda k: len(spec.tile_items[k]))
    tile = CubeTile(spec.name, key)
    items = ItemTable(store).get(sorted(spec.tile_item_ids(tile)))
    t_open = time.perf_counter() - t0
    plan = plan_chips(items, aoi=sg.box(0.0, 44.0, 40.0, 64.0), grid="fixed", epsg=spec.epsg,
                      window=spec.window(tile))
    return {"items": n, "tile_items": len(items), "tile_chips": len(plan), "open_s": round(t_open, 3),
            "open_and_plan_tile_s": round(time.perf_counter() - t0, 3),
            "rss_growth_mib": round((_rss_kib("VmHWM") - base) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="25,50,100,200,500")
    ap.add_argument("--max-full", type=int, default=100)
    ap.add_argument("--tile-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--case", nargs=2, metavar=("N", "PLANNER"), help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        n, what = int(args.case[0]), args.case[1]
        if what == "prepare":
            prepare_store(n, args.store, args.tile_size)
        elif what == "worker":
            print(json.dumps(worker(n, args.store)))
        else:
            print(json.dumps(case(n, what, args.tile_size)))
        return
    import subprocess
    import sys

    rows = []
    head = (f"{'items':>6} {'planner':<18} {'chips':>12} {'tiles':>6} {'time s':>8} {'RSS+ MiB':>9} "
            f"{'traced MiB':>10}")
    lines = [f"machine: {describe()}", f"date: {dt.date.today()}, tile size {args.tile_size} chips", "", head]
    print("\n".join(lines), flush=True)
    for n in map(int, args.sizes.split(",")):
        for planner in ("new", "today") if n <= args.max_full else ("new",):
            out = subprocess.run([sys.executable, __file__, "--case", str(n), planner,
                                  "--tile-size", str(args.tile_size)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            name = "per-tile (new)" if planner == "new" else "whole AOI (today)"
            line = (f"{n:>6} {name:<18} {r['chips']:>12} {r['tiles'] or '':>6} {r['seconds']:>8.2f} "
                    f"{r['rss_growth_mib']:>9.1f} {r['tracemalloc_peak_mib']:>10.1f}")
            rows.append(r)
            lines.append(line)
            print(line, flush=True)
    import tempfile

    n = max(map(int, args.sizes.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "cube.zarr"
        for what in ("prepare", "worker"):
            out = subprocess.run([sys.executable, __file__, "--case", str(n), what, "--store", str(store),
                                  "--tile-size", str(args.tile_size)], capture_output=True, text=True, check=True)
        w = json.loads(out.stdout.strip().splitlines()[-1])
    lines += ["", f"worker start-up, {n} items (busiest tile: {w['tile_items']} items, {w['tile_chips']:,} chips): "
              f"open plan + load its items {w['open_s']:.2f} s, + list its chips {w['open_and_plan_tile_s']:.2f} s, "
              f"RSS+ {w['rss_growth_mib']:.1f} MiB"]
    print(lines[-1], flush=True)
    rows.append({"worker": w})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n\n" + json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
