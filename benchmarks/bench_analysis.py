"""Similarity search and GeoParquet export on a large synthetic cube.

What it does:

1. Writes a synthetic cube of ``--chips`` chips in the real layout: the skeleton (group
   ``utm30n``, 1200 m grid, x/y/lat/lon, CRS, provenance, completion records) is made by
   geomoe's own cube code (``Cube.create_or_open``); the embeddings are random normal vectors
   (``--dim``, ``--dtype``) written with zarr into the same arrays, chunk row by chunk row,
   with ``--nan-fraction`` of the chips left NaN (as if skipped for cloud).
2. Export: ``geomoe.export`` in a fresh process; chips/s and the process's resident memory
   sampled every 0.5 s (flat memory = the same peak at 20 % and at 100 % of the rows).
3. Similarity: the index build (time, size on disk, peak RSS) in one process, then
   ``--queries`` queries of ``geomoe.similar(k=100)`` in another (peak RSS of the whole
   process, torch included), each at a random embedded chip. Per query: the search (index
   scan + exact re-scoring of the candidates from the cube) and the total with the outputs
   (top-k GeoParquet, the map as Zarr, the PNG).
4. The alternatives the index was chosen against, for one query each: an exact scan straight
   over the cube's compressed chunks (no index), and FAISS's float16 scalar quantizer
   (``IndexScalarQuantizer(QT_fp16)``) streamed over the same index file.

Run: ``python benchmarks/bench_analysis.py --chips 10000000 --workdir /tmp/bench-analysis``
(about 3 GB of cube, 3 GB of index and 6 GB of Parquet at 144-d float16 per 10 M chips). Prints
a report; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import describe  # benchmarks/machine.py: CPU model, cores, flags

REPO = Path(__file__).resolve().parents[1]


def make_cube(path: Path, n_chips: int, dim: int, dtype: str, tile: int, nan_fraction: float,
              seed: int = 0) -> dict:
    """The synthetic cube (see the module docstring); returns its size and counts."""
    import zarr

    from geomoe.cube.layout import GridSpec
    from geomoe.cube.store import Cube, tile_done_path

    side = int(math.ceil(math.sqrt(n_chips)))
    ny, nx = side, int(math.ceil(n_chips / side))
    row_max, col_min = 4920, 300  # chip rows/cols of UTM 30N around 54 N, 3 W
    day = np.datetime64("2020-09-27", "D")
    t = np.datetime64("2020-09-27T11:10:50", "s")
    item = "SYNTHETIC_LC08_20200927"
    corner = np.zeros(4, dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "O")])
    corner["row"] = [row_max, row_max, row_max - ny + 1, row_max - ny + 1]
    corner["col"] = [col_min, col_min + nx - 1, col_min, col_min + nx - 1]
    corner["time"], corner["item_id"] = t, item
    spec = GridSpec(name="utm30n", epsg=32630, row_max=row_max, col_min=col_min, ny=ny, nx=nx,
                    days=np.array([day]), times=np.array([t], dtype="datetime64[ns]"),
                    item_ids=[[item]], item_day={item: day}, time_day={t: day},
                    tile_size=tile, chips=corner)
    t0 = time.perf_counter()
    cube = Cube.create_or_open(path, [spec], dim=dim, dtype=dtype,
                               identity={"checkpoint_sha256": "synthetic", "embed_dim": dim},
                               attrs={"geomoe:model": {"size": "synthetic", "checkpoint": None},
                                      "geomoe:query": {"aoi": None}}, items=[])
    t_skel = time.perf_counter() - t0
    g = zarr.open_group(str(path), path="utm30n", mode="r+")
    emb, vf = g["embedding"], g["valid_fraction"]
    rng = np.random.default_rng(seed)
    n_emb = 0
    for y0 in range(0, ny, tile):
        y1 = min(y0 + tile, ny)
        e = rng.standard_normal((1, y1 - y0, nx, dim), dtype=np.float32)
        skip = rng.random((1, y1 - y0, nx)) < nan_fraction
        e[skip] = np.nan
        emb[0:1, y0:y1] = e.astype(dtype)
        v = np.where(skip, 0.5, 1.0).astype(np.float32)
        vf[0:1, y0:y1] = v
        n_emb += int((~skip).sum())
    done = zarr.open_array(str(path), path=tile_done_path("utm30n"), mode="r+")
    done[...] = 1
    cube.new_run({"synthetic": True})
    cube.finish()
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"chips": ny * nx, "embedded": n_emb, "ny": ny, "nx": nx, "dim": dim, "dtype": dtype,
            "skeleton_s": round(t_skel, 1), "write_s": round(time.perf_counter() - t0, 1),
            "bytes": size}


# ------------------------------------------------------------------ measured in fresh processes
_RSS_SAMPLER = r"""
import threading, time, json, resource, os
samples = []
def _rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
def _loop():
    t0 = time.perf_counter()
    while True:
        samples.append((time.perf_counter() - t0, _rss()))
        time.sleep(0.5)
threading.Thread(target=_loop, daemon=True).start()
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""


def run_child(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", _RSS_SAMPLER + code], capture_output=True,
                         text=True, env=env, timeout=3600)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_export(cube: Path, out: Path) -> dict:
    code = f"""
import geomoe, geomoe.evaluate.export, pyarrow.parquet, xarray
time.sleep(0.6)
samples.clear()  # from here: the export itself, imports done
s = geomoe.export({str(cube)!r}, {str(out)!r}, overwrite=True)
n = len(samples)
print(json.dumps({{"rows": s.rows, "seconds": s.seconds, "peak_rss": peak(),
    "rss_at_20pct": max(r for _, r in samples[: max(1, n // 5)]),
    "rss_start": samples[0][1],
    "rss_after_20pct": max(r for _, r in samples[max(1, n // 5):] or samples)}}))
"""
    r = run_child(code)
    r["chips_per_s"] = r["rows"] / r["seconds"]
    r["file_bytes"] = out.stat().st_size
    return r


def bench_index(cube: Path) -> dict:
    code = f"""
import geomoe, time
from geomoe.evaluate.simindex import default_index_path, build_index
view = geomoe.open_cube({str(cube)!r})
t0 = time.perf_counter()
idx = build_index(view, default_index_path(view))
print(json.dumps({{"seconds": time.perf_counter() - t0, "n": idx.n, "bytes": idx.size_bytes(),
                   "peak_rss": peak()}}))
"""
    return run_child(code)


def bench_queries(cube: Path, workdir: Path, n_queries: int, k: int = 100) -> dict:
    code = f"""
import geomoe, numpy as np
view = geomoe.open_cube({str(cube)!r})
ds = view["utm30n"]
rng = np.random.default_rng(1)
out = []
while len(out) < {n_queries}:
    i, j = int(rng.integers(ds.sizes["y"])), int(rng.integers(ds.sizes["x"]))
    if not np.isfinite(ds.embedding[0, i, j, 0].values):
        continue
    r = geomoe.similar({str(cube)!r}, [(float(ds.lon[i, j]), float(ds.lat[i, j]))], k={k},
                       out={str(workdir)!r} + f"/top{{len(out)}}.parquet", overwrite=True)
    import geopandas as gpd
    top = gpd.read_parquet(r.out)
    own = bool(top.y.iloc[0] == float(ds.y[i]) and top.x.iloc[0] == float(ds.x[j]))
    out.append({{**r.seconds, "built": r.index_built, "own_chip_first": own,
                 "top_score": r.top_score}})
print(json.dumps({{"queries": out, "peak_rss": peak()}}))
"""
    return run_child(code)


def bench_search_only(cube: Path, n_queries: int, k: int = 100) -> dict:
    """The search alone (query vector, index scan, exact re-scoring), no outputs: its time and
    the peak RSS of a process that does only that (torch loaded)."""
    code = f"""
import geomoe, numpy as np, time
from geomoe.evaluate.similar import query_vector, candidates, rerank
from geomoe.evaluate.simindex import open_index, scan
view = geomoe.open_cube({str(cube)!r})
ds = view["utm30n"]
idx, built = open_index(view)
rng = np.random.default_rng(2)
times = []
while len(times) < {n_queries}:
    i, j = int(rng.integers(ds.sizes["y"])), int(rng.integers(ds.sizes["x"]))
    if not np.isfinite(ds.embedding[0, i, j, 0].values):
        continue
    t0 = time.perf_counter()
    q, _ = query_vector(view, [(float(ds.lon[i, j]), float(ds.lat[i, j]))], [])
    rows, _, scores = scan(idx, q, candidates({k}))
    loc, top = rerank(view, idx.locate(rows), q, {k})
    times.append(time.perf_counter() - t0)
    assert loc[0, 2] == i and loc[0, 3] == j
print(json.dumps({{"seconds": times, "peak_rss": peak(), "built": built}}))
"""
    return run_child(code)


def bench_alternatives(cube: Path) -> dict:
    """One query each: exact scan over the cube's chunks; FAISS fp16 SQ over the index file."""
    code = f"""
import geomoe, numpy as np, time
from geomoe.evaluate.simindex import default_index_path, open_index, SCAN_ROWS, scan
view = geomoe.open_cube({str(cube)!r})
ds = view["utm30n"]
rng = np.random.default_rng(7)
q = rng.standard_normal(ds.sizes["dim"]).astype(np.float32); q /= np.linalg.norm(q)
emb = ds.embedding.data
t0 = time.perf_counter()
best = np.zeros(0, np.float32)
for y0 in range(0, ds.sizes["y"], emb.chunks[1][0]):
    e = np.asarray(emb[0, y0:y0 + emb.chunks[1][0]].compute(), np.float32).reshape(-1, ds.sizes["dim"])
    ok = np.isfinite(e[:, 0])
    s = (e[ok] @ q) / np.linalg.norm(e[ok], axis=1)
    best = np.concatenate([best, np.partition(s, -100)[-100:] if len(s) > 100 else s])
    best = np.partition(best, -100)[-100:]
t_stream = time.perf_counter() - t0
idx, _ = open_index(view)
import faiss, torch  # imports outside the timings
from geomoe.device import limit_threads
limit_threads()
faiss.omp_set_num_threads(1)
t0 = time.perf_counter()
sq = faiss.IndexScalarQuantizer(idx.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
buf = np.empty(SCAN_ROWS * idx.dim, np.float16)
fbest = []
with open(idx.vectors, "rb", buffering=0) as f:
    while True:
        m = f.readinto(memoryview(buf).cast("B")) // (2 * idx.dim)
        if not m:
            break
        sq.reset(); sq.add_sa_codes(buf[: m * idx.dim].view(np.uint8).reshape(m, -1))
        D, I = sq.search(q[None], 100)
        fbest.append(D[0])
t_faiss = time.perf_counter() - t0
t0 = time.perf_counter()
rows, top, scores = scan(idx, q, 100)
t_scan = time.perf_counter() - t0
print(json.dumps({{"stream_cube_s": t_stream, "faiss_fp16_s": t_faiss, "index_scan_s": t_scan,
                   "agree": bool(abs(float(np.sort(best)[-1]) - float(top[0])) < 2e-3)}}))
"""
    return run_child(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=144, help="embedding size (144: model S)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--tile", type=int, default=32, help="chunk side in chips (embed-region's default)")
    ap.add_argument("--nan-fraction", type=float, default=0.05)
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--workdir", default="/tmp/bench-analysis")
    ap.add_argument("--reuse", action="store_true", help="reuse a cube already at --workdir")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--out", default=None, help="also write the report here")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cube = work / "synthetic.zarr"
    lines = [f"bench_analysis: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"machine: {describe()}",
             f"load average at start: {os.getloadavg()[0]:.2f} (shared machine: other jobs ran beside)"]
    if args.reuse and cube.exists():
        info = json.loads((work / "cube.json").read_text())
    else:
        if cube.exists():
            import shutil

            shutil.rmtree(cube)
            shutil.rmtree(work / "synthetic.zarr.simindex", ignore_errors=True)
        info = make_cube(cube, args.chips, args.dim, args.dtype, args.tile, args.nan_fraction)
        (work / "cube.json").write_text(json.dumps(info))
    lines.append(f"cube: {info['chips']:,} chips ({info['ny']} x {info['nx']}, 1 time slice), "
                 f"{info['embedded']:,} embedded, {info['dim']}-d {info['dtype']}, chunks "
                 f"{args.tile} x {args.tile} chips; {info['bytes'] / 2**30:.2f} GiB on disk; "
                 f"written in {info['write_s']} s (skeleton {info['skeleton_s']} s)")
    print("\n".join(lines), flush=True)

    def say(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    if not args.skip_export:
        e = bench_export(cube, work / "export.parquet")
        say(f"export: {e['rows']:,} rows in {e['seconds']:.1f} s = {e['chips_per_s']:,.0f} chips/s; "
            f"Parquet {e['file_bytes'] / 2**30:.2f} GiB; RSS {e['rss_start'] / 2**20:.0f} MiB at the start "
            f"(imports done), max in the first 20 % of the run "
            f"{e['rss_at_20pct'] / 2**20:.0f} MiB, after it {e['rss_after_20pct'] / 2**20:.0f} MiB, "
            f"peak {e['peak_rss'] / 2**20:.0f} MiB")
        (work / "export.parquet").unlink()
    b = bench_index(cube)
    say(f"index build: {b['n']:,} chips in {b['seconds']:.1f} s, {b['bytes'] / 2**30:.2f} GiB on "
        f"disk, peak RSS {b['peak_rss'] / 2**20:.0f} MiB")
    so = bench_search_only(cube, args.queries)
    say(f"search only (query vector + index scan + exact re-score), {len(so['seconds'])} queries, "
        f"one process: " + ", ".join(f"{t:.2f}" for t in so["seconds"]) + " s; peak RSS "
        f"{so['peak_rss'] / 2**20:.0f} MiB; own chip first in every query")
    q = bench_queries(cube, work, args.queries)
    for n, r in enumerate(q["queries"]):
        say(f"query {n}: search {r['search']:.2f} s (index scan {r['scan']:.2f} s + exact re-score from the cube), "
            f"query vector {r['query']:.2f} s, outputs {r['outputs']:.2f} s, total {r['total']:.2f} s; "
            f"own chip first: {r['own_chip_first']}, top score {r['top_score']:.4f}, index "
            f"{'built' if r['built'] else 'reused'}")
    say(f"geomoe.similar with outputs: peak RSS of the process (torch, geopandas, matplotlib loaded) "
        f"{q['peak_rss'] / 2**20:.0f} MiB")
    a = bench_alternatives(cube)
    say(f"alternatives, one top-100 query each: exact scan over the cube's chunks (no index) "
        f"{a['stream_cube_s']:.1f} s; FAISS IndexScalarQuantizer(QT_fp16) streamed over the index "
        f"file {a['faiss_fp16_s']:.2f} s (top-100 only, no map); geomoe's index scan (all scores "
        f"+ top-100) {a['index_scan_s']:.2f} s; best scores agree: {a['agree']}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
