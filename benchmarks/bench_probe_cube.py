"""Benchmark: probe + prediction map over a synthetic 1 M-chip cube (target <= 60 s).

    python benchmarks/bench_probe_cube.py [--side 1000] [--dim 144] [--labels 2000] [--keep DIR]

The cube is written through geomoe's own store (geomoe.cube.store.Cube: the real layout,
one utm30n grid group of side x side chips, one date, 32 x 32 chip tiles, float32, as
embed-region writes it) but holds synthetic vectors instead of model output: ten classes laid
out in irregular spatial regions (Voronoi cells), each chip its class's random centroid plus
an offset shared by its 8 x 8 chip block plus its own Gaussian noise, so the probe has something
to learn and neighbouring chips are alike (random CV leaks; spatial CV does not). Labels: ``--labels`` random points over
the grid (GeoPackage, EPSG:4326), labelled with the class of the region they fall in, 2 % of
them outside the cube. Timed: ``geomoe.probe(cube=..., labels=...)`` end to end (label
matching, both cross-validations, fit, prediction of every chip, REPORT.zarr, .json, .csv,
.png), after a first untimed run has warmed the page cache. Writing the cube is not timed.
The CPU model, its flags and the load average are printed: on a shared machine the figures
move with what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe  # benchmarks/machine.py: CPU model, cores, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EPSG = 32630
N_CLASSES = 10
SIGMA = 6.0  # per-dimension spread of the block offsets and of the chip noise (centroids: 1)


def class_field(side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side) class per chip: nearest of N_CLASSES * 4 random seeds (Voronoi regions)."""
    seeds = rng.uniform(0, side, (N_CLASSES * 4, 2))
    labels = np.arange(len(seeds)) % N_CLASSES
    out = np.empty((side, side), np.int16)
    cols = np.arange(side)
    for r in range(side):
        d = (seeds[:, 0, None] - r) ** 2 + (seeds[:, 1, None] - cols[None]) ** 2
        out[r] = labels[d.argmin(0)]
    return out


def make_cube(path: Path, side: int, dim: int, seed: int = 0) -> np.ndarray:
    """Write the synthetic cube; returns the class field (side, side)."""
    from geomoe.cube.layout import CubeTile, GridSpec
    from geomoe.cube.store import Cube

    rng = np.random.default_rng(seed)
    field = class_field(side, rng)
    centroids = rng.normal(0, 1, (N_CLASSES, dim)).astype(np.float32)
    row_max, col_min = 4950, 400  # a real utm30n neighbourhood (northern England)
    rows, cols = np.meshgrid(row_max - np.arange(side), col_min + np.arange(side), indexing="ij")
    t = np.datetime64("2020-09-27T11:10:50", "s")
    item = "synthetic-item"
    chips = np.empty(side * side, dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "O")])
    chips["row"], chips["col"], chips["time"], chips["item_id"] = rows.ravel(), cols.ravel(), t, item
    day = t.astype("datetime64[D]")
    spec = GridSpec(name="utm30n", epsg=EPSG, row_max=row_max, col_min=col_min, ny=side, nx=side,
                    days=np.array([day]), times=np.array([t]).astype("datetime64[ns]"),
                    item_ids=[[item]], item_day={item: day}, time_day={t: day}, tile_size=32,
                    chips=chips)
    identity = {"checkpoint_sha256": "synthetic", "model_size": "S", "embed_dim": dim,
                "pooling": "mean", "min_valid": 0.9, "grid": "fixed", "tile_size": 32,
                "table_tile": 256, "normalisation": {}}
    attrs = {"geomoe:model": {"size": "S", "checkpoint": "synthetic", "checkpoint_sha256": "synthetic",
                              "pooling": "mean"}}
    cube = Cube.create_or_open(path, [spec], dim=dim, identity=identity, attrs=attrs,
                               items=[{"id": item}])
    run = cube.new_run({"device": "synthetic"})
    ts = 32
    for a in range(-(-side // ts)):
        for b in range(-(-side // ts)):
            f = field[a * ts:(a + 1) * ts, b * ts:(b + 1) * ts]
            # one shared offset per 8 x 8 chips (neighbours alike: random CV leaks) + chip noise
            off = rng.normal(0, SIGMA, (-(-f.shape[0] // 8), -(-f.shape[1] // 8), dim))
            off = np.repeat(np.repeat(off, 8, 0), 8, 1)[:f.shape[0], :f.shape[1]]
            emb = (centroids[f] + off + rng.normal(0, SIGMA, f.shape + (dim,))).astype(np.float32)
            cube.write_grid_tile(CubeTile("utm30n", (a, b)), emb[None], np.ones((1,) + f.shape), run)
    cube.finish()
    return field


def make_labels(path: Path, cube_path: Path, field: np.ndarray, n: int, seed: int = 1) -> None:
    import geopandas as gpd

    import geomoe

    ds = geomoe.open_cube(cube_path)["utm30n"]
    x, y = ds.x.values, ds.y.values
    rng = np.random.default_rng(seed)
    r, c = rng.integers(0, len(y), n), rng.integers(0, len(x), n)
    px, py = x[c] + rng.uniform(-590, 590, n), y[r] + rng.uniform(-590, 590, n)
    cls = np.asarray([f"class{v}" for v in field[r, c]], dtype=object)
    out = rng.random(n) < 0.02
    px[out] -= 5e6  # far west of the grid: counted as outside_cube
    gdf = gpd.GeoDataFrame({"cls": cls}, geometry=gpd.points_from_xy(px, py), crs=EPSG).to_crs(4326)
    gdf.to_file(path, driver="GPKG")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=1000, help="chips per side (1000: 1 M chips)")
    p.add_argument("--dim", type=int, default=144, help="embedding size (S model: 144)")
    p.add_argument("--labels", type=int, default=2000)
    p.add_argument("--keep", type=Path, default=None, help="work here (kept) instead of a temp dir")
    a = p.parse_args()
    import geomoe

    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-probe-"))
    work.mkdir(parents=True, exist_ok=True)
    cube, labels = work / "synthetic.zarr", work / "labels.gpkg"
    print(f"machine: {describe()}; load average {os.getloadavg()}")
    t0 = time.perf_counter()
    if not cube.exists():
        field = make_cube(cube, a.side, a.dim)
        make_labels(labels, cube, field, a.labels)
    print(f"cube {a.side} x {a.side} = {a.side ** 2:,} chips, dim {a.dim}: written in "
          f"{time.perf_counter() - t0:.1f} s (not timed)")
    times = []
    for k in range(2):  # first: warm the page cache; second: timed
        t = time.perf_counter()
        rep = geomoe.probe(cube=cube, labels=labels, label_column="cls",
                           report=work / "report.json", overwrite=True)
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(rep["summary"])
    print(f"probe + prediction map: {times[1]:.1f} s (first, cold: {times[0]:.1f} s); "
          f"{rep['n_chips_predicted']:,} chips predicted; peak RSS {rss:.0f} MiB; target <= 60 s")
    print(json.dumps({"side": a.side, "chips": a.side ** 2, "dim": a.dim, "labels": a.labels,
                      "seconds": round(times[1], 2), "seconds_cold": round(times[0], 2),
                      "peak_rss_mib": round(rss), "cv_random": rep["cv_random"]["mean"],
                      "cv_spatial": rep["cv_spatial"]["mean"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
