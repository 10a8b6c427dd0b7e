"""Benchmark: chips/s from local COGs to ChipBatch, and peak memory for a small vs a 4x AOI.

    python benchmarks/bench_chips.py [--scene-px 2400] [--workers 1 2] [--keep DIR]

Generates (in a temp dir) a mosaic of 2x2 synthetic Landsat-like scenes in one UTM zone and one
day: per band a uint16 deflate COG (predictor 2, 512 px blocks, Landsat's half-pixel origin),
plus a QA_PIXEL COG with ~10 % cloud bits, so the path is the real one (mask included).
Correctness is tested on real data in tests/chips; this measures speed and memory only.

Reports:
- chips/s of iter_chips (min_valid=0, every chip read, masked, batched with metadata) for each
  worker count, and of the xarray loaders (odc-stac, stackstac) on the same grid for comparison;
- peak RSS (VmHWM) of a subprocess that iterates a 1-scene AOI vs a 4-scene (4x) AOI, minus the
  RSS after imports: flat means memory does not grow with the AOI. Expect ~130 MB of it to be
  GDAL's block cache, capped at 128 MB by geomoe.chips.assets (the small AOI does not fill it);
- plan time and chip count for the Europe AOI over the bundled catalog.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYS = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22")
EPSG = 32630
X0, Y0 = 400_005.0, 6_000_015.0  # Landsat pixel edges sit on 15 mod 30 m


def make_mosaic(root: Path, scene_px: int) -> list[dict]:
    """2x2 scenes of scene_px^2 px (overlapping by 40 px) -> item dicts with absolute hrefs."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin
    from shapely.geometry import box, mapping

    rng = np.random.default_rng(0)
    t = Transformer.from_crs(EPSG, 4326, always_xy=True)
    items = []
    step = (scene_px - 40) * 30.0
    for si in range(2):
        for sj in range(2):
            sid = f"synth_{si}{sj}"
            d = root / sid
            d.mkdir(parents=True, exist_ok=True)
            x0, y0 = X0 + sj * step, Y0 - si * step
            tr = from_origin(x0, y0, 30, 30)
            prof = dict(driver="COG", dtype="uint16", count=1, height=scene_px, width=scene_px, crs=f"EPSG:{EPSG}",
                        transform=tr, nodata=0, compress="deflate", predictor=2, blocksize=512)
            smooth = np.kron(rng.integers(6000, 20000, (scene_px // 16 + 1, scene_px // 16 + 1)),
                             np.ones((16, 16)))[:scene_px, :scene_px]
            grad = (np.arange(scene_px)[None, :] * 2 + np.arange(scene_px)[:, None]) % 997
            assets = {}
            for b, key in enumerate(KEYS + ("qa_pixel",)):
                p = d / f"{key}.tif"
                if key == "qa_pixel":
                    arr = np.full((scene_px, scene_px), 1 << 6, np.uint16)  # clear
                    cloud = rng.random((scene_px // 40 + 1, scene_px // 40 + 1)) < 0.1
                    arr[np.kron(cloud, np.ones((40, 40), bool))[:scene_px, :scene_px]] = 1 << 3
                    prof_q = dict(prof, nodata=None)
                    with rasterio.open(p, "w", **prof_q) as ds:
                        ds.write(arr[None])
                else:
                    # texture: field + gradient + small noise; compresses ~2x like real L2 SR COGs
                    arr = (smooth + b * 300 + grad + rng.integers(0, 64, (scene_px, scene_px))).astype(np.uint16)
                    with rasterio.open(p, "w", **prof) as ds:
                        ds.write(arr[None])
                assets[key] = {"href": str(p), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                               "roles": ["data"]}
            x1, y1 = x0 + scene_px * 30, y0 - scene_px * 30
            lon, lat = t.transform([x0, x1, x1, x0], [y1, y1, y0, y0])
            geom = box(min(lon), min(lat), max(lon), max(lat))
            items.append({
                "type": "Feature", "stac_version": "1.1.0", "id": sid,
                "geometry": mapping(geom), "bbox": list(geom.bounds),
                "properties": {"datetime": "2020-09-27T11:10:50Z", "platform": "landsat-8",
                               "proj:code": f"EPSG:{EPSG}", "proj:shape": [scene_px, scene_px],
                               "proj:transform": [30, 0, x0, 0, -30, y0], "proj:bbox": [x0, y1, x1, y0]},
                "links": [], "assets": assets, "stac_extensions": [],
            })
    (root / "items.json").write_text(json.dumps(items))
    return items


def aoi_for(items: list[dict], which: str) -> dict:
    """GeoJSON of the first scene's footprint (small) or of all four (4x)."""
    from shapely.geometry import box, mapping, shape
    from shapely.ops import unary_union

    sel = items[:1] if which == "small" else items
    g = unary_union([shape(i["geometry"]) for i in sel])
    b = g.bounds
    return mapping(box(b[0] + 1e-4, b[1] + 1e-4, b[2] - 1e-4, b[3] - 1e-4))


def run_chips(items: list[dict], aoi: dict | None, workers: int, cpu: list | None = None) -> tuple[int, float]:
    import pystac
    import shapely.geometry as sg

    from geomoe.chips.plan import iter_chips, plan_chips

    its = [pystac.Item.from_dict(i) for i in items]
    geom = sg.shape(aoi) if aoi else None
    t, c = time.perf_counter(), time.process_time()
    plan = plan_chips(its, aoi=geom)
    n = 0
    for b in iter_chips(its, plan=plan, min_valid=0.0, batch_size=256, workers=workers):
        n += len(b)
    if cpu is not None:
        cpu.append(time.process_time() - c)  # CPU seconds of all threads of this process
    return n, time.perf_counter() - t


def run_xarray(items: list[dict], loader: str) -> tuple[int, float]:
    """Load the whole mosaic through odc-stac or stackstac on the fixed grid, cut into chips."""
    import warnings

    import pystac

    warnings.filterwarnings("ignore")
    its = [pystac.Item.from_dict(i) for i in items]
    xs = [i["properties"]["proj:bbox"] for i in items]
    bbox = (min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs))
    bbox = (np.floor(bbox[0] / 1200) * 1200, np.floor(bbox[1] / 1200) * 1200,
            np.ceil(bbox[2] / 1200) * 1200, np.ceil(bbox[3] / 1200) * 1200)
    t = time.perf_counter()
    if loader == "odc-stac":
        from geomoe.chips.assets import load_xarray

        da = load_xarray(its, bbox=bbox)
    else:
        import rasterio.enums
        import stackstac

        for it in its:
            it.properties["proj:epsg"] = EPSG
        da = stackstac.stack(its, assets=list(KEYS), epsg=EPSG, resolution=30, bounds=bbox,
                             fill_value=np.uint16(0), dtype="uint16", rescale=False, chunksize=640,
                             resampling=rasterio.enums.Resampling.nearest)
        da = da.groupby("time").first() if da.sizes["time"] > 1 else da
    arr = da.isel(time=0).values if "time" in da.dims else da.values
    c, h, w = arr.shape
    chips = arr.reshape(c, h // 40, 40, w // 40, 40).transpose(1, 3, 0, 2, 4).reshape(-1, c, 40, 40)
    return len(chips), time.perf_counter() - t


def _vm(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (VmHWM is per process image, unlike ru_maxrss
    which Linux carries over from the parent across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(argv: list[str]) -> None:
    """Subprocess entry: iterate one AOI, print JSON with chips, seconds and RSS growth."""
    items = json.loads(Path(argv[0]).read_text())
    which, workers = argv[1], int(argv[2])
    import geomoe.chips.plan  # noqa: F401  (imports before the baseline)
    import pystac  # noqa: F401

    base = _vm("VmHWM")
    n, sec = run_chips(items, aoi_for(items, which), workers)
    peak = _vm("VmHWM")
    print(json.dumps({"chips": n, "seconds": sec, "base_mb": base, "peak_mb": peak, "growth_mb": peak - base}))


def europe_plan() -> tuple[int, float]:
    import pystac

    from geomoe.stac.aoi import load_aoi
    from geomoe.chips.plan import plan_chips

    cat = pystac.Catalog.from_file(str(REPO / "catalogs" / "catalog.json"))
    items = list(cat.get_items(recursive=True))
    aoi = load_aoi(REPO / "catalogs" / "aois" / "europe.geojson")
    t = time.perf_counter()
    plan = plan_chips(items, aoi=aoi)
    return len(plan), time.perf_counter() - t


def bundled_loaders(repeats: int = 5) -> None:
    """The three loaders on the bundled Liverpool scene (96 chips): best of ``repeats``."""
    import warnings

    import rasterio.enums
    import stackstac

    from geomoe.stac.aoi import load_aoi
    from geomoe.stac.search import search
    from geomoe.chips.plan import iter_chips
    from geomoe.chips.assets import load_xarray

    warnings.filterwarnings("ignore")
    items = search(None, load_aoi(REPO / "catalogs" / "aois" / "liverpool.geojson"))
    bbox = (486000, 5920800, 500400, 5930400)

    def best(f):
        b = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            n = f()
            b = min(b, time.perf_counter() - t)
        return n, b

    runs = {
        "iter_chips (mask+metadata)": lambda: sum(len(b) for b in iter_chips(items, min_valid=0.0, workers=1)),
        "odc-stac load+compute": lambda: load_xarray(items, bbox=bbox).values.size // (7 * 1600),
        "stackstac stack+compute": lambda: stackstac.stack(
            items, assets=list(KEYS), resolution=30, bounds=bbox, fill_value=np.uint16(0), dtype="uint16",
            rescale=False, resampling=rasterio.enums.Resampling.nearest).values.size // (7 * 1600),
    }
    for name, f in runs.items():
        n, sec = best(f)
        print(f"  {name:28s} {n:4d} chips in {sec * 1000:6.1f} ms = {n / sec:,.0f} chips/s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene-px", type=int, default=2400)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-xarray", action="store_true", help="skip the odc-stac / stackstac comparison")
    ap.add_argument("--keep", type=Path, help="generate/reuse the synthetic mosaic here")
    args = ap.parse_args()

    tmp = None
    root = args.keep
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="geomoe-bench-chips-")
        root = Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    items = json.loads((root / "items.json").read_text()) if (root / "items.json").exists() else make_mosaic(root, args.scene_px)
    print(f"synthetic mosaic: 4 scenes x {items[0]['properties']['proj:shape'][0]} px, 7 bands + QA, "
          f"deflate COGs in {root} ({time.perf_counter() - t:.1f} s)")
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (shared machine: numbers are provisional)")

    print("\n== peak memory: 1-scene AOI vs 4-scene (4x) AOI, subprocesses, RSS growth after imports ==")
    res = {}
    for which in ("small", "large"):
        out = subprocess.run([sys.executable, __file__, "--child", str(root / "items.json"), which, "2"],
                             capture_output=True, text=True, check=True)
        res[which] = json.loads(out.stdout.strip().splitlines()[-1])
    s, lg = res["small"], res["large"]
    print(f"  {'':12s} {'small':>10s} {'4x':>10s}")
    print(f"  {'chips':12s} {s['chips']:>10d} {lg['chips']:>10d}")
    print(f"  {'seconds':12s} {s['seconds']:>10.2f} {lg['seconds']:>10.2f}")
    print(f"  {'peak RSS MB':12s} {s['peak_mb']:>10.0f} {lg['peak_mb']:>10.0f}")
    print(f"  {'growth MB':12s} {s['growth_mb']:>10.0f} {lg['growth_mb']:>10.0f}   "
          f"(ratio {lg['growth_mb'] / max(s['growth_mb'], 1e-9):.2f} for {lg['chips'] / max(s['chips'], 1):.1f}x chips)")

    print("\n== throughput: local COGs -> ChipBatch (plan + read + mask + metadata) ==")
    for w in args.workers:
        best, cpu = None, []
        for _ in range(args.repeats):
            n, sec = run_chips(items, None, w, cpu)
            best = sec if best is None else min(best, sec)
        print(f"  iter_chips workers={w}: {n} chips in {best:.2f} s wall = {n / best:,.0f} chips/s; "
              f"{n / min(cpu):,.0f} chips per CPU-second (what one uncontended core gives)")
    if not args.no_xarray:
        for loader in ("odc-stac", "stackstac"):
            try:
                n, sec = run_xarray(items, loader)
                print(f"  {loader:9s} load+compute (no mask, no metadata): {n} chips in {sec:.2f} s = {n / sec:,.0f} chips/s")
            except Exception as exc:  # report, do not hide
                print(f"  {loader}: failed: {type(exc).__name__}: {exc}")

    print("\n== loaders on the bundled Liverpool scene (small: per-call overheads dominate) ==")
    bundled_loaders()

    print("\n== plan: Europe AOI over the bundled catalog ==")
    n, sec = europe_plan()
    print(f"  {n} chips planned in {sec * 1000:.0f} ms")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
