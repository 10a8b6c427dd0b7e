"""Scale benchmark (issue 21): `geomoe embed-region` over a synthetic European Landsat archive.

Not a timed test: it generates a realistic catalog by itself, serves it with ``rustac serve``
on 127.0.0.1 and runs the real ``geomoe embed-region`` CLI against it, one subprocess per
case, with limits so that no case runs for hours. Results (and the machine) go to stdout and
``--out``; figures belong in benchmarks/README.md and benchmarks/results/.

The catalog
-----------
* Footprints on a WRS-2-like grid (:func:`wrs2_centre`): 233 descending paths, 248 rows, row
  60 on the equator; a scene centre is a point of a circular sun-synchronous orbit
  (inclination 98.2 deg, 98.88 min period, Earth rotating underneath), geocentric latitude
  converted to geodetic, path 1's descending node at 64.60 deg W and paths 360/233 deg apart
  westwards. Checked against 22 real Landsat 4-9 items (../shared/data/stac-items and the two
  whole bundled scenes): footprint centres within 0.02 deg of latitude and 0.035 deg of
  longitude (0.09 deg at 80 N). A footprint is a 185 km (across
  track) x 180 km (along track) rectangle about the centre, turned to the ground track's
  heading; only scenes that touch land are kept (benchmarks/aois/land-europe.geojson, Natural
  Earth 1:110m), as Landsat acquires over land and coasts. The image grid is the footprint's
  bounding box in the UTM zone of the centre (north), on Landsat's 30 m grid (edges at 15 m
  mod 30, as real C2 L2 rasters).
* Landsat 8 and 9 together image every path once every 8 days; pass k is the window
  [2024-06-03 + 8k days, +8 days): path p is imaged on day 8k + (7 (p-1) mod 16) mod 8 of it
  (adjacent paths are 7 days apart), by Landsat 8 or 9 alternately, at 10:30 local solar time
  of the centre. One served catalog holds 8 passes; a case of n passes selects them with
  ``--datetime``.
* Items are copies of a real Planetary Computer ``landsat-c2-l2`` item
  (../shared/data/stac-items/pystac-client-cassettes/LC09_L2SR_084073_20250722_02_T1.json):
  id, datetime, platform, WRS path/row, scene id, cloud cover, ``proj:*`` (code, epsg, shape,
  transform, bbox), bbox and geometry rewritten; every other field and asset as in the
  original (the cloud hrefs of the non-SR assets are never opened).
* The 7 SR band assets are ``file://`` hrefs to small GDAL VRTs (one per path/row and band,
  shared by all passes) over the bundled real scene LC08_L2SP_008059 (a whole Landsat 8 scene
  downsampled to 512 x 512 px, with its real fill collar), stretched (nearest) to the
  synthetic scene's shape and georeferenced on its grid: real Landsat DN, not matching the
  geography. The items carry no ``qa_pixel``: the bundled QA rasters are 80-92 % cloud, snow
  or fill, so a run would skip nearly every chip; without QA the reader masks fill only.
  ``file://`` because pystac resolves a bare absolute path against the API URL.

What a case measures (``--cases poland-1,poland-8,europe-1,europe-8``)
--------------------------------------------------------------------
One ``python -m geomoe.cli embed-region`` subprocess (fp32, CPU) per case, started through a
small wrapper (:data:`CLI_WRAPPER`) that prints a timestamped marker on stderr when a few
named functions return (:data:`MARKED`: search, chip planning, the skeleton). A function
that no longer exists is reported ``n/a`` and the CLI still runs. The parent samples the RSS
of the CLI's whole process tree every 0.2 s (from /proc) and parses the CLI's progress lines
``[embed-region] <done>/<total> chips`` (a ``~`` before either number, an estimate, is
accepted). It reports: items found, planned chips (the first progress line's total), time to
plan (the search-and-plan function's return; search alone), peak RSS up to then and overall,
skeleton time, time to the first progress line with done > 0 ("first embedded chip"), and
chips/s between the first and the last progress line. The case is stopped (SIGTERM to its
process group, then SIGKILL) after ``--max-chips`` chips, ``--run-s`` seconds after the first
chip, ``--case-timeout`` seconds in all, or at ``--max-rss-gb``; why it stopped is printed.

Then a worker start-up probe (a fresh process, as a Prefect/Dask tile task starts): import
geomoe, ``geomoe.embed.pipeline.prepared_for(request, run)`` on the case's cube (the flow's
``embed_tile_task`` path), then read the first batch of one pending tile
(``geomoe.embed.pipeline.iter_tile_batches``); time and RSS of each step. It needs a cube
whose skeleton exists: a case stopped before that has no worker figures.

Append cases (``--cases poland-1+1,europe-1+1``: ``<aoi>-<n>+<m>``)
---------------------------------------------------------------
Appending to a cube, measured without embedding a whole continent: run 1 is the case of n
passes, stopped at the limits above (SIGTERM: the CLI keeps every finished tile). Then the
store is read (:func:`store_state`, zarr only): sha256 of every chunk file of the data groups
(not ``_geomoe/``, not ``zarr.json``), each grid group's time-axis length and ``solar_days``,
and its (tile, solar day) completion records. Run 2 is the same command with the ``--datetime``
window of n + m passes on the same ``--out``, stopped at the same limits, ``--max-chips``
counted from its first progress line (its ``done`` starts at what run 1 finished). It reports
run 2's planning time, skeleton extension (``Cube.create_or_open`` on the existing store), first
embedded chip, chips/s and peak RSS; the plan's (tile, solar day) pairs pending when run 2
started and those it finished, all and those with a scene of that day on the tile (a probe
process counts them with the plan run 2 stored, ``prepared_for``); and the checks: every chunk
file hashed after run 1 byte-identical, run 1's records kept, the time axis grown by the days
``geomoe:appends`` lists, the old ``solar_days`` a prefix of the new, and chunk files at the new
time indices. Run 1 and run 2 also get columns in the main table (run 2's "chips done"
includes run 1's), and the worker probe runs on the cube after run 2.

Interfaces used (so a rewrite of planning or the store fails here with a clear message):
the ``geomoe embed-region`` CLI and its progress lines; optional markers on
``geomoe.stac.search.search``, ``geomoe.chips.plan.plan_chips``,
``geomoe.embed.pipeline.search_and_plan``, ``geomoe.cube.store.Cube.create_or_open``; the worker
probe's ``geomoe.embed.request.EmbedRequest``, ``geomoe.embed.pipeline.prepared_for`` and
``iter_tile_batches``, ``Prepared.cube.pending_tiles()``; for append cases the store's layout
(``geomoe:groups``, ``<group>/time``, the ``solar_days`` attribute, ``_geomoe/<group>/tile_done``,
``geomoe:appends``) and the cube's ``specs``, ``done_map``, ``plan_times`` and ``days``.

Run (from the checkout)::

    PYTHONPATH=$PWD python benchmarks/bench_scale.py --cases poland-1,poland-8,europe-1 \\
        --out benchmarks/results/scale.txt
    PYTHONPATH=$PWD python benchmarks/bench_scale.py --cases poland-1+1,europe-1+1 \\
        --out benchmarks/results/scale-append.txt

Needs ``rustac`` (the Python package's CLI; ``--rustac`` to name it) and the bundled data.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TEMPLATE = "stac-items/pystac-client-cassettes/LC09_L2SR_084073_20250722_02_T1.json"
SOURCE_SCENE = ROOT / "geomoe/data/catalogs/landsat-scenes/LC08_L2SP_008059_20191201_20200825_02_T1"
SR_KEYS = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22")
DROPPED_KEYS = ("qa_pixel", "qa_radsat", "qa_aerosol")
AOIS = {
    "poland": ROOT / "benchmarks/aois/poland.geojson",
    "europe": ROOT / "geomoe/data/catalogs/aois/europe.geojson",
}
LAND = ROOT / "benchmarks/aois/land-europe.geojson"  # Landsat acquires over land and coasts only
FIRST_DAY = dt.date(2024, 6, 3)
MAX_PASSES = 8

# ---------------------------------------------------------------------------- WRS-2 model
INCLINATION = math.radians(98.2)
N_PATHS, N_ROWS = 233, 248
EARTH_TURN_PER_ORBIT = 360.0 * 98.88 / 1436.07  # deg the Earth turns during one orbit
NODE_PATH1 = -64.60  # longitude of path 1's descending node (row 60)
E2 = 0.00669438  # WGS84 first eccentricity squared
SCENE_ACROSS_M, SCENE_ALONG_M = 185_000.0, 180_000.0


def wrs2_centre(path: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate WRS-2 scene centres (descending, daytime rows) -> (lon, lat) degrees."""
    u = np.radians(180.0 - (60.0 - np.asarray(row, float)) * 360.0 / N_ROWS)  # argument of latitude
    lat_gc = np.arcsin(np.sin(INCLINATION) * np.sin(u))
    lat = np.degrees(np.arctan(np.tan(lat_gc) / (1.0 - E2)))
    dlon = np.degrees(np.arctan2(np.cos(INCLINATION) * np.sin(u), np.cos(u))) - 180.0
    dlon -= EARTH_TURN_PER_ORBIT * (np.degrees(u) - 180.0) / 360.0
    lon = NODE_PATH1 - (np.asarray(path, float) - 1.0) * 360.0 / N_PATHS + dlon
    return (lon + 180.0) % 360.0 - 180.0, lat


@dataclass
class Scene:
    path: int
    row: int
    lon: float
    lat: float
    footprint: object  # shapely Polygon, lon/lat
    epsg: int
    transform: tuple[float, ...]
    shape: tuple[int, int]
    proj_bbox: tuple[float, float, float, float]


def _footprint(path: int, row: int):
    """A scene's footprint polygon (lon/lat) about its centre, along the ground track."""
    import pyproj
    import shapely.geometry as sg

    geod = pyproj.Geod(ellps="WGS84")
    lon, lat = (float(v) for v in wrs2_centre(path, row))
    (lon_a, lon_b), (lat_a, lat_b) = wrs2_centre(np.array([path, path]), np.array([row - 0.5, row + 0.5]))
    heading, _, _ = geod.inv(lon_a, lat_a, lon_b, lat_b)  # along track, southwards
    half_diag = math.hypot(SCENE_ACROSS_M, SCENE_ALONG_M) / 2
    off = math.degrees(math.atan2(SCENE_ACROSS_M, SCENE_ALONG_M))
    az = [heading - off, heading + off, heading + 180 - off, heading + 180 + off]
    lons, lats, _ = geod.fwd([lon] * 4, [lat] * 4, az, [half_diag] * 4)
    return lon, lat, sg.Polygon(list(zip(lons, lats)))


def scenes_for(aoi, land=None) -> list[Scene]:
    """Every daytime WRS-2-like scene whose footprint meets ``aoi`` (and ``land``, if given),
    lon/lat geometries."""
    import pyproj

    minx, miny, maxx, maxy = aoi.bounds
    out = []
    for row in range(1, 123):
        _, lat = wrs2_centre(1, row)
        if not (miny - 2.5 <= float(lat) <= maxy + 2.5):
            continue
        for path in range(1, N_PATHS + 1):
            lon, _ = wrs2_centre(path, row)
            if not (minx - 5 <= float(lon) <= maxx + 5):
                continue
            lon, lat, fp = _footprint(path, row)
            if not fp.intersects(aoi) or (land is not None and not fp.intersects(land)):
                continue
            zone = int((lon + 180) // 6) + 1
            epsg = 32600 + zone
            tr = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
            xs, ys = tr.transform(*np.asarray(fp.exterior.coords).T)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
            x0 = math.floor((x0 - 15) / 30) * 30 + 15
            x1 = math.ceil((x1 - 15) / 30) * 30 + 15
            y0 = math.floor((y0 - 15) / 30) * 30 + 15
            y1 = math.ceil((y1 - 15) / 30) * 30 + 15
            shape = (int(round((y1 - y0) / 30)), int(round((x1 - x0) / 30)))
            out.append(Scene(path, row, lon, lat, fp, epsg, (30.0, 0.0, float(x0), 0.0, -30.0, float(y1)),
                             shape, (float(x0), float(y0), float(x1), float(y1))))
    return out


def acquisition(scene: Scene, k: int) -> tuple[dt.datetime, str]:
    """(UTC datetime, platform) of ``scene``'s pass ``k`` (see the module docstring)."""
    off16 = (7 * (scene.path - 1)) % 16
    day = 8 * k + off16 % 8
    plat = "landsat-8" if (day - off16) % 16 == 0 else "landsat-9"
    utc_h = 10.5 - scene.lon / 15.0
    t = dt.datetime.combine(FIRST_DAY, dt.time(0), dt.timezone.utc) + dt.timedelta(days=day, hours=utc_h)
    return t, plat


# ---------------------------------------------------------------------------- catalog
VRT = """<VRTDataset rasterXSize="{w}" rasterYSize="{h}">
  <SRS>EPSG:{epsg}</SRS>
  <GeoTransform>{x0:.1f}, 30.0, 0.0, {y0:.1f}, 0.0, -30.0</GeoTransform>
  <VRTRasterBand dataType="UInt16" band="1">
    <NoDataValue>0</NoDataValue>
    <SimpleSource>
      <SourceFilename relativeToVRT="0">{src}</SourceFilename>
      <SourceBand>1</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{sw}" ySize="{sh}"/>
      <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
    </SimpleSource>
  </VRTRasterBand>
</VRTDataset>
"""


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def build_catalog(workdir: Path, aoi, land=None, passes: int = MAX_PASSES) -> tuple[Path, int, int]:
    """Write ``items.ndjson`` and the VRTs under ``workdir`` -> (path, n items, n scenes)."""
    import rasterio
    import shapely.geometry as sg

    template = json.loads((SHARED / TEMPLATE).read_text())
    src_shape = {}
    for key in SR_KEYS:
        with rasterio.open(SOURCE_SCENE / f"{key}.tif") as ds:
            src_shape[key] = (ds.width, ds.height)
    scenes = scenes_for(aoi, land)
    vrt_dir = workdir / "vrt"
    vrt_dir.mkdir(parents=True, exist_ok=True)
    out = workdir / "items.ndjson"
    n = 0
    with open(out, "w") as f:
        for s in scenes:
            pr = f"{s.path:03d}{s.row:03d}"
            hrefs = {}
            for key in SR_KEYS:
                p = vrt_dir / f"{pr}_{key}.vrt"
                sw, sh = src_shape[key]
                p.write_text(VRT.format(w=s.shape[1], h=s.shape[0], epsg=s.epsg, x0=s.transform[2],
                                        y0=s.transform[5], src=SOURCE_SCENE / f"{key}.tif", sw=sw, sh=sh))
                hrefs[key] = p.resolve().as_uri()
            for k in range(passes):
                t, plat = acquisition(s, k)
                sat = "LC08" if plat == "landsat-8" else "LC09"
                ymd = t.strftime("%Y%m%d")
                item_id = f"{sat}_L2SP_{pr}_{ymd}_02_T1"
                d = json.loads(json.dumps(template))
                d["id"] = item_id
                d["geometry"] = sg.mapping(s.footprint)
                d["geometry"]["coordinates"] = [[list(c) for c in d["geometry"]["coordinates"][0]]]
                d["bbox"] = list(s.footprint.bounds)
                d["links"] = [ln for ln in d["links"] if ln["rel"] in ("cite-as",)]
                p = d["properties"]
                p.update({
                    "datetime": t.isoformat().replace("+00:00", "Z"), "platform": plat,
                    "proj:epsg": s.epsg, "proj:code": f"EPSG:{s.epsg}", "proj:shape": list(s.shape),
                    "proj:transform": list(s.transform), "proj:bbox": list(s.proj_bbox),
                    "landsat:wrs_path": f"{s.path:03d}", "landsat:wrs_row": f"{s.row:03d}",
                    "landsat:scene_id": f"{sat[0]}C{sat[3]}{pr}{t.strftime('%Y%j')}LGN00",
                    "landsat:correction": "L2SP",
                    "eo:cloud_cover": round(60 * _unit(item_id), 2),
                })
                for key in DROPPED_KEYS:
                    d["assets"].pop(key, None)
                for key in SR_KEYS:
                    d["assets"][key]["href"] = hrefs[key]
                f.write(json.dumps(d) + "\n")
                n += 1
    return out, n, len(scenes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(ndjson: Path, rustac: str, timeout: float = 120.0):
    """``rustac serve`` of ``ndjson`` on 127.0.0.1 -> its URL, until the block ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([rustac, "serve", "--create-collections", "--addr", f"127.0.0.1:{port}",
                             str(ndjson)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"rustac serve exited ({proc.returncode}): "
                                 f"{proc.stderr.read().decode()[-500:]}")
            try:
                with urllib.request.urlopen(url + "/collections/landsat-c2-l2", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"rustac serve did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------- process tree RSS
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    kids, total, todo = _children(), 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


# ---------------------------------------------------------------------------- the CLI case
#: Functions whose return is marked on stderr: (label, module, attribute path).
MARKED = (
    ("search", "geomoe.stac.search", "search"),
    ("plan_chips", "geomoe.chips.plan", "plan_chips"),
    ("search_and_plan", "geomoe.embed.pipeline", "search_and_plan"),
    ("skeleton", "geomoe.cube.store", "Cube.create_or_open"),
)

#: Runs the real CLI (geomoe.cli.app.main) after wrapping the MARKED functions, where present.
CLI_WRAPPER = textwrap.dedent("""
    import importlib, json, sys, time
    MARKED = json.loads(sys.argv[1])
    def mark(label, what, t0, extra=""):
        print(f"[bench-mark] {label} {what} {time.time():.3f} {time.time() - t0:.3f} {extra}",
              file=sys.stderr, flush=True)
    def wrap(label, fn):
        def wrapper(*a, **k):
            t0 = time.time()
            mark(label, "start", t0)
            out = fn(*a, **k)
            n = len(out) if label == "search" and hasattr(out, "__len__") else ""
            mark(label, "end", t0, n)
            return out
        return wrapper
    for label, mod, attr in MARKED:
        try:
            obj = importlib.import_module(mod)
            *owner, name = attr.split(".")
            for o in owner:
                obj = getattr(obj, o)
            fn = getattr(obj, name)
        except (ImportError, AttributeError):
            print(f"[bench-mark] {label} missing {mod}.{attr}", file=sys.stderr, flush=True)
            continue
        w = wrap(label, fn)
        setattr(obj, name, staticmethod(w) if isinstance(obj, type) else w)
    from geomoe.cli.app import main
    sys.argv = ["geomoe"] + sys.argv[2:]
    sys.exit(main())
""")

PROGRESS = re.compile(r"\[embed-region\] (~?)([\d,]+)/(~?)([\d,]+) chips")


@dataclass
class CaseResult:
    name: str
    items: int | None = None
    planned: int | None = None
    planned_estimate: bool = False
    search_s: float | None = None
    search_dur: float | None = None
    plan_chips_dur: float | None = None
    plan_s: float | None = None
    plan_rss: int | None = None
    peak_rss: int = 0
    skeleton_s: float | None = None
    first_chip_s: float | None = None
    chips_per_s: float | None = None
    chips_done: int = 0
    first_done: int | None = None  # done on the first progress line (includes earlier runs' chips)
    wall_s: float = 0.0
    stopped: str = ""
    missing: list[str] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)  # "label dur s (ended at t s)", in order
    tail: list[str] = field(default_factory=list)
    worker: dict | None = None


def run_case(name: str, aoi: Path, url: str, datetime: str, out: Path, args,
             relative: bool = False) -> CaseResult:
    """One ``geomoe embed-region`` subprocess, watched and stopped at the limits.

    ``relative``: count ``--max-chips`` from the first progress line (a run on an existing cube,
    whose ``done`` starts at the chips earlier runs finished)."""
    res = CaseResult(name)
    cmd = [sys.executable, "-c", CLI_WRAPPER, json.dumps(MARKED), "embed-region", "--aoi", str(aoi),
           "--catalog", url, "--datetime", datetime, "--out", str(out), "--device", "cpu",
           "--precision", "fp32", *args.cli_args]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    state = {"peak": 0, "rss_stop": False}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            r = tree_rss(proc.pid)
            state["peak"] = max(state["peak"], r)
            if r > args.max_rss_gb * 1e9 and not state["rss_stop"]:
                state["rss_stop"] = True
                stop(f"RSS {r / 1e9:.1f} GB > --max-rss-gb {args.max_rss_gb}")
            done.wait(0.2)

    def stop(why: str) -> None:
        if not res.stopped:
            res.stopped = why
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        def hard() -> None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        threading.Timer(15, hard).start()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    watchdog = threading.Timer(args.case_timeout, lambda: stop(f"--case-timeout {args.case_timeout:.0f} s"))
    watchdog.start()
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    skel_start = None
    try:
        for line in proc.stdout:
            now = time.time() - t0
            line = line.rstrip("\n")
            if line.startswith("[bench-mark]"):
                parts = line.split()
                label, what = parts[1], parts[2]
                if what == "end" and first is None:  # not the per-tile calls while embedding
                    res.marks.append(f"{label} {float(parts[4]):.1f} s (ended at {now:.1f} s)")
                if what == "missing":
                    res.missing.append(parts[3])
                elif what == "end" and label == "search" and res.plan_s is None:
                    res.search_s, res.search_dur = now, float(parts[4])
                    if len(parts) > 5 and parts[5].isdigit():
                        res.items = int(parts[5])
                elif what == "end" and label == "plan_chips" and res.plan_s is None:
                    # the AOI's planning; later calls plan one tile's chips while embedding
                    res.plan_chips_dur = (res.plan_chips_dur or 0.0) + float(parts[4])
                elif what == "end" and label == "search_and_plan":
                    res.plan_s, res.plan_rss = now, state["peak"]
                elif what == "start" and label == "skeleton":
                    skel_start = float(parts[3])
                elif what == "end" and label == "skeleton" and skel_start is not None:
                    res.skeleton_s = float(parts[3]) - skel_start
                continue
            m = PROGRESS.search(line)
            if m:
                d, total = int(m.group(2).replace(",", "")), int(m.group(4).replace(",", ""))
                res.planned, res.planned_estimate = total, bool(m.group(3))
                res.chips_done = d
                if d > 0 and first is None:
                    first = (now, d)
                    res.first_chip_s, res.first_done = now, d
                last = (now, d)
                if d - (first[1] if relative and first is not None else 0) >= args.max_chips:
                    stop(f"--max-chips {args.max_chips}")
                elif first is not None and now - first[0] >= args.run_s:
                    stop(f"--run-s {args.run_s:.0f} s after the first chip")
                continue
            res.tail = (res.tail + [line])[-6:]
        proc.wait()
    finally:
        watchdog.cancel()
        done.set()
        sampler.join()
    res.wall_s = time.time() - t0
    res.peak_rss = state["peak"]
    if first is not None and last is not None and last[0] > first[0]:
        res.chips_per_s = (last[1] - first[1]) / (last[0] - first[0])
    if not res.stopped:
        res.stopped = f"CLI exited {proc.returncode}" + (" (finished)" if proc.returncode == 0 else "")
    return res


# ---------------------------------------------------------------------------- worker probe
WORKER_PROBE = textwrap.dedent("""
    import dataclasses, json, resource, sys, time
    def rss():
        with open("/proc/self/statm") as f:
            import os
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    t0 = time.time()
    try:
        from geomoe.embed.request import EmbedRequest
        from geomoe.embed.pipeline import prepared_for, iter_tile_batches
    except ImportError as exc:
        print(json.dumps({"error": f"interface missing: {exc}; update WORKER_PROBE in bench_scale.py"}))
        sys.exit(0)
    import torch, zarr  # what a task imports anyway
    t_import, rss_import = time.time() - t0, rss()
    a = json.loads(sys.argv[1])
    req = dataclasses.asdict(EmbedRequest(**a))
    try:
        log = zarr.open_group(a["out"], mode="r").attrs.get("geomoe:run_log", [])
        run = int(log[-1]["run"]) if log else 1
    except Exception:
        run = 1
    t1 = time.time()
    prep = prepared_for(req, run)
    t_open, rss_open = time.time() - t1, rss()
    tiles = prep.cube.pending_tiles() or prep.cube.tiles()
    tile = tiles[len(tiles) // 2]
    t2 = time.time()
    batch = next(iter(iter_tile_batches(prep, tile, int(req.get("batch_size", 256)))), None)
    t_tile = time.time() - t2
    print(json.dumps({"import_s": t_import, "rss_import": rss_import, "open_s": t_open,
                      "rss_open": rss_open, "first_batch_s": t_tile, "tile": str(tile),
                      "batch_chips": 0 if batch is None else len(batch),
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "run": run}))
""")


def run_probe(script: str, arg: dict, timeout: float, what: str, *, check_rc: bool = True) -> dict:
    """Run a probe script in a fresh process; its last JSON line, or {"error": ...}
    (``check_rc=False``: a JSON line counts even if the process then failed)."""
    try:
        p = subprocess.run([sys.executable, "-c", script, json.dumps(arg)], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{what} still running after {timeout:.0f} s (killed)"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if (check_rc and p.returncode) or not lines:
        return {"error": f"{what} failed (rc {p.returncode}): {p.stderr.strip()[-400:]}"}
    return json.loads(lines[-1])


def worker_probe(aoi: Path, url: str, datetime: str, out: Path, timeout: float) -> dict:
    """Start-up of a tile task on ``out`` in a fresh process (see the module docstring)."""
    if not (out / "zarr.json").exists() and not (out / ".zgroup").exists():
        return {"error": "no cube skeleton (the case stopped before it)"}
    a = {"aoi": str(aoi), "catalog": url, "datetime": datetime, "out": str(out.resolve()),
         "device": "cpu", "precision": "fp32"}
    t0 = time.time()
    r = run_probe(WORKER_PROBE, a, timeout, "worker start-up probe", check_rc=False)
    if "error" not in r:
        r["wall_s"] = time.time() - t0
    return r


# ---------------------------------------------------------------------------- append cases
def store_state(out: Path) -> dict:
    """What an append must keep or grow, read from the store itself (zarr, no geomoe): sha256 of
    every chunk file of the data groups (not ``_geomoe/`` bookkeeping, not ``zarr.json``), and
    per grid group its time-axis length, ``solar_days`` attribute and completion records
    (``_geomoe/<group>/tile_done``: how many (tile, day) pairs each run recorded)."""
    import zarr

    chunks = {}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if p.is_file() and "/c/" in f"/{rel}" and not rel.startswith("_geomoe"):
            chunks[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    groups = {}
    root = zarr.open_group(str(out), mode="r", use_consolidated=False)
    for g in root.attrs.get("geomoe:groups", []):
        grp = zarr.open_group(str(out), path=g, mode="r", use_consolidated=False)
        if "solar_days" not in grp.attrs:  # the chip table: no time axis
            continue
        done = zarr.open_array(str(out), path=f"_geomoe/{g}/tile_done", mode="r")[...]
        runs, n = np.unique(done[done > 0], return_counts=True)
        groups[g] = {"T": int(zarr.open_array(str(out), path=f"{g}/time", mode="r").shape[0]),
                     "days": json.loads(grp.attrs["solar_days"]),
                     "records": {int(r): int(k) for r, k in zip(runs, n)}}
    return {"chunks": chunks, "groups": groups, "runs": int(root.attrs.get("geomoe:runs", 0)),
            "appends": root.attrs.get("geomoe:appends", [])}


#: Counts the plan's (tile, solar day) pairs of a cube by completion record, in a fresh process,
#: with the plan the last run stored (geomoe.embed.pipeline.prepared_for, no catalog search).
PAIRS_PROBE = textwrap.dedent("""
    import dataclasses, json, sys
    from collections import Counter
    from geomoe.embed.request import EmbedRequest
    from geomoe.embed.pipeline import prepared_for
    a = json.loads(sys.argv[1])
    cube = prepared_for(dataclasses.asdict(EmbedRequest(**a["request"])), a["run"]).cube
    out = {}
    for g, spec in cube.specs.items():
        if not hasattr(spec, "item_day"):
            continue
        done, times, days = cube.done_map(g), cube.plan_times(g), cube.days[g]
        c = Counter()
        for tile in spec.tiles():
            ty, tx = tile.key
            have = {str(spec.item_day[i]) for i in spec.tile_item_ids(tile)}
            for t in times:
                c[f"{int(done[t, ty, tx])}:{int(days[t] in have)}"] += 1
        out[g] = {"tiles": len(spec.tiles()), "plan_days": len(times), "pairs": dict(c)}
    print(json.dumps(out))
""")


def pairs_probe(aoi: Path, url: str, datetime: str, out: Path, run: int, timeout: float) -> dict:
    """{group: {tiles, plan_days, pairs: {"<run or 0>:<has scenes 0/1>": n}}} (see PAIRS_PROBE)."""
    a = {"request": {"aoi": str(aoi), "catalog": url, "datetime": datetime, "out": str(out.resolve()),
                     "device": "cpu", "precision": "fp32"}, "run": run}
    return run_probe(PAIRS_PROBE, a, timeout, "pairs probe")


@dataclass
class AppendResult:
    name: str
    first: CaseResult  # the run on the first window
    second: CaseResult | None = None  # the rerun on the wider window, same --out
    before: dict | None = None  # store_state after the first run
    after: dict | None = None  # store_state after the second
    pairs: dict | None = None  # pairs_probe after the second
    error: str = ""

    def check(self) -> dict:
        """Figures and verdicts of the append (None where a run stopped before there)."""
        b, a = self.before or {}, self.after or {}
        bc, ac = b.get("chunks", {}), a.get("chunks", {})
        same = sum(1 for k, h in bc.items() if ac.get(k) == h)
        missing = sum(1 for k in bc if k not in ac)
        bg, ag = b.get("groups", {}), a.get("groups", {})
        run2 = a.get("runs")
        r = {
            "records_before": sum(sum(g["records"].values()) for g in bg.values()),
            "chunks_before": len(bc), "chunks_same": same, "chunks_changed": len(bc) - same - missing,
            "chunks_missing": missing, "chunks_new": len(set(ac) - set(bc)),
            "T_before": sum(g["T"] for g in bg.values()), "T_after": sum(g["T"] for g in ag.values()),
            "groups": f"{len(bg)} -> {len(ag)}",
            "days_prefix": all(ag.get(g, {}).get("days", [])[:len(v["days"])] == v["days"] for g, v in bg.items()),
            "old_records_kept": all(ag.get(g, {}).get("records", {}).get(k, 0) == n
                                    for g, v in bg.items() for k, n in v["records"].items()),
            "days_added": sum(len(d) for e in a.get("appends", [])[len(b.get("appends", [])):]
                              for d in (e.get("days_added") or {}).values()),
        }
        # new chunk files along time: embedding chunks at a time index past the old axis
        r["new_slice_chunks"] = sum(
            1 for k in set(ac) - set(bc) if k.split("/")[1:3] == ["embedding", "c"]
            and int(k.split("/")[3]) >= bg.get(k.split("/")[0], {}).get("T", 0))
        if self.pairs and "error" not in self.pairs and run2:
            c = {"pending_start": 0, "pending_start_scenes": 0, "done_run2": 0, "done_run2_scenes": 0,
                 "pending_end": 0, "pending_end_scenes": 0, "pairs": 0}
            for g in self.pairs.values():
                for key, n in g["pairs"].items():
                    rec, scenes = (int(v) for v in key.split(":"))
                    c["pairs"] += n
                    if rec == 0 or rec >= run2:  # not done before this run
                        c["pending_start"] += n
                        c["pending_start_scenes"] += n * scenes
                    if rec == run2:
                        c["done_run2"] += n
                        c["done_run2_scenes"] += n * scenes
                    if rec == 0:
                        c["pending_end"] += n
                        c["pending_end_scenes"] += n * scenes
            c["tiles"] = sum(g["tiles"] for g in self.pairs.values())
            r.update(c)
        return r


def run_append_case(name: str, aoi: Path, url: str, when1: str, when2: str, out: Path, args,
                    say) -> AppendResult:
    """Embed the first window (stopped at the limits: SIGTERM keeps the finished tiles), hash the
    store, rerun on the wider window with the same --out (stopped likewise), hash and compare."""
    r = AppendResult(name, run_case(name + " run 1", aoi, url, when1, out, args))
    say(f"run 1 (--datetime {when1}): stopped: {r.first.stopped}; wall {r.first.wall_s:.1f} s; "
        f"chips done {r.first.chips_done:,}")
    if not (out / "zarr.json").exists():
        r.error = "run 1 left no cube (stopped before the skeleton)"
        return r
    r.before = store_state(out)
    n_rec = sum(sum(g["records"].values()) for g in r.before["groups"].values())
    say(f"after run 1: {len(r.before['chunks']):,} chunk files hashed, {n_rec:,} finished (tile, solar day) "
        f"records, groups " + ", ".join(f"{g} (T={v['T']})" for g, v in r.before["groups"].items()))
    if n_rec == 0:
        say("warning: run 1 finished no tile; the byte-identity check below covers no old chunk")
    r.second = run_case(name + " run 2", aoi, url, when2, out, args, relative=True)
    s2 = r.second
    say(f"run 2 (--datetime {when2}, same --out): stopped: {s2.stopped}; wall {s2.wall_s:.1f} s")
    if s2.marks:
        say("run 2 stages (duration, end since start): " + "; ".join(s2.marks))
    if s2.first_chip_s is None and s2.tail:
        say("run 2 last CLI lines: " + " | ".join(s2.tail))
    r.after = store_state(out)
    if r.after["runs"] >= 2:
        r.pairs = pairs_probe(aoi, url, when2, out, r.after["runs"], args.worker_timeout)
        if "error" in r.pairs:
            say(f"pairs probe: {r.pairs['error']}")
    say(f"append check: {json.dumps(r.check())}")
    return r


def append_table(results: list[AppendResult]) -> str:
    def c(r: AppendResult, key: str, fmt: str = "{:,}") -> str:
        v = r.check().get(key)
        return "n/a" if v is None else fmt.format(v)

    def s2(fn):
        return lambda r: "n/a" if r.second is None else fn(r.second)

    rows = [
        ("run 1: chips done (progress) / wall", lambda r: f"{r.first.chips_done:,} / {_s(r.first.wall_s)}"),
        ("run 1: finished (tile, day) records", lambda r: c(r, "records_before")),
        ("run 1: chunk files hashed", lambda r: c(r, "chunks_before")),
        ("run 2: search + plan done (from start)", s2(lambda x: _s(x.plan_s))),
        ("run 2: skeleton extension (create_or_open)", s2(lambda x: _s(x.skeleton_s))),
        ("run 2: first embedded chip", s2(lambda x: _s(x.first_chip_s))),
        ("run 2: chips/s once running", s2(lambda x: "n/a" if x.chips_per_s is None else f"{x.chips_per_s:,.1f}")),
        ("run 2: chips after the first line", s2(lambda x: "n/a" if x.first_done is None
                                                  else f"{x.chips_done - x.first_done:,}")),
        ("run 2: peak RSS (process tree)", s2(lambda x: _gb(x.peak_rss))),
        ("run 2: stopped by", s2(lambda x: x.stopped)),
        ("plan: tiles / (tile, day) pairs", lambda r: f"{c(r, 'tiles')} / {c(r, 'pairs')}"),
        ("pairs pending at run 2 start (with scenes)",
         lambda r: f"{c(r, 'pending_start')} ({c(r, 'pending_start_scenes')})"),
        ("pairs done by run 2 (with scenes)", lambda r: f"{c(r, 'done_run2')} ({c(r, 'done_run2_scenes')})"),
        ("time slices, all groups: before -> after", lambda r: f"{c(r, 'T_before')} -> {c(r, 'T_after')}"),
        ("solar days added (geomoe:appends) / old solar_days a prefix",
         lambda r: f"{c(r, 'days_added')} / {c(r, 'days_prefix', '{}')}"),
        ("old chunk files byte-identical", lambda r: f"{c(r, 'chunks_same')} of {c(r, 'chunks_before')} "
                                                     f"(changed {c(r, 'chunks_changed')}, gone {c(r, 'chunks_missing')})"),
        ("run 1 records kept", lambda r: c(r, "old_records_kept", "{}")),
        ("new chunk files (embedding, new time slices)",
         lambda r: f"{c(r, 'chunks_new')} ({c(r, 'new_slice_chunks')})"),
    ]
    head = "| | " + " | ".join(r.name for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for label, fn in rows:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- report
def machine() -> str:
    info = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    flags = set(info.get("flags", "").split())
    fl = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512/amx"
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    return (f"{info.get('model name', platform.processor())} (CPU family {info.get('cpu family', '?')}, "
            f"model {info.get('model', '?')}), {os.cpu_count()} cores, flags: {fl}{mem}; "
            f"Python {platform.python_version()}")


def remove_cube(out: Path) -> None:
    """Remove a case's cube and its STAC item (this benchmark's own files under --workdir)."""
    for p in (out, out.with_name(out.name + ".stac-item.json")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _gb(b: int | None) -> str:
    return "n/a" if not b else f"{b / 1e9:.2f} GB"


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} s"


def table(results: list[CaseResult]) -> str:
    rows = [
        ("items", lambda r: "n/a" if r.items is None else f"{r.items:,}"),
        ("planned chips", lambda r: "n/a" if r.planned is None else
         f"{'~' if r.planned_estimate else ''}{r.planned / 1e6:.2f} M"),
        ("search itself", lambda r: _s(r.search_dur)),
        ("plan_chips itself (the AOI's)", lambda r: _s(r.plan_chips_dur)),
        ("search + plan done (from start)", lambda r: _s(r.plan_s)),
        ("peak RSS to then", lambda r: _gb(r.plan_rss)),
        ("skeleton", lambda r: _s(r.skeleton_s)),
        ("first embedded chip", lambda r: _s(r.first_chip_s)),
        ("chips/s once running", lambda r: "n/a" if r.chips_per_s is None else f"{r.chips_per_s:,.1f}"),
        ("chips done when stopped", lambda r: f"{r.chips_done:,}"),
        ("peak RSS (process tree)", lambda r: _gb(r.peak_rss)),
        ("worker: open cube (prepared_for)", lambda r: _w(r, "open_s")),
        ("worker: first batch of a tile", lambda r: _w(r, "first_batch_s")),
        ("worker: import geomoe+torch", lambda r: _w(r, "import_s")),
        ("worker: RSS after import / open / peak", lambda r: _w(r, "rss")),
        ("case wall time", lambda r: _s(r.wall_s)),
    ]
    head = "| | " + " | ".join(r.name for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for label, fn in rows:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")
    return "\n".join(lines)


def _w(r: CaseResult, key: str) -> str:
    w = r.worker
    if not w:
        return "not run"
    if "error" in w:
        return "n/a"
    if key == "rss":
        return f"{_gb(w['rss_import'])} / {_gb(w['rss_open'])} / {_gb(w['peak_rss'])}"
    return _s(w[key])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="poland-1,poland-8,europe-1",
                    help="comma-separated <aoi>-<passes>, aoi in poland/europe, passes 1..8; "
                         "<aoi>-<n>+<m>: an append case (n passes, then n + m on the same --out)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/geomoe-bench-scale"),
                    help="catalog, VRTs and cubes (the cubes are removed after each case)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    ap.add_argument("--rustac", default=shutil.which("rustac") or str(Path(sys.executable).with_name("rustac")))
    ap.add_argument("--max-chips", type=int, default=3000, help="stop a case after this many chips")
    ap.add_argument("--run-s", type=float, default=60.0, help="stop a case this long after its first chip")
    ap.add_argument("--case-timeout", type=float, default=900.0, help="stop a case after this long in all")
    ap.add_argument("--max-rss-gb", type=float, default=8.0, help="stop a case whose process tree grows past this")
    ap.add_argument("--worker-timeout", type=float, default=300.0, help="limit of the worker start-up probe")
    ap.add_argument("--no-worker", action="store_true", help="skip the worker start-up probe")
    ap.add_argument("--keep-cubes", action="store_true")
    ap.add_argument("--cli-args", default="", help="extra embed-region options, e.g. '--threads 1'")
    args = ap.parse_args(argv)
    args.cli_args = args.cli_args.split()

    import shapely.geometry as sg
    from shapely.ops import unary_union

    cases = []  # (name, aoi, passes, passes added by the rerun: 0 for a plain case)
    for c in args.cases.split(","):
        m = re.fullmatch(r"(poland|europe)-(\d)(?:\+(\d))?", c.strip())
        extra = int(m.group(3) or 0) if m else 0
        if not m or not 1 <= int(m.group(2)) <= MAX_PASSES or (m.group(3) and not 1 <= extra) \
                or int(m.group(2)) + extra > MAX_PASSES:
            ap.error(f"case {c!r}: expected <poland|europe>-<passes>[+<passes added>], "
                     f"1..{MAX_PASSES} passes in all")
        cases.append((c.strip(), m.group(1), int(m.group(2)), extra))
    if not Path(args.rustac).exists() and not shutil.which(args.rustac):
        ap.error(f"rustac not found at {args.rustac}: install the rustac Python package or pass --rustac")
    for p in (SHARED / TEMPLATE, SOURCE_SCENE):
        if not p.exists():
            raise SystemExit(f"missing {p}: the benchmark needs ../shared/data and the bundled scenes")

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"# geomoe scale benchmark (benchmarks/bench_scale.py), {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    say(f"machine: {machine()}")
    say(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    try:
        git = ["git", "-C", str(ROOT)]
        rev = subprocess.run([*git, "log", "-1", "--format=%h %ad %s", "--date=short", "--", "geomoe"],
                             capture_output=True, text=True).stdout.strip()[:110]
        branch = subprocess.run([*git, "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "geomoe"], capture_output=True,
                               text=True).stdout.strip()
        rev = f"branch {branch}, geomoe/ last changed in {rev}" + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        rev = "?"
    say(f"code: {rev}")
    say(f"limits per case: --max-chips {args.max_chips}, --run-s {args.run_s:.0f}, --case-timeout "
        f"{args.case_timeout:.0f}, --max-rss-gb {args.max_rss_gb}; embed-region --device cpu --precision fp32 "
        + " ".join(args.cli_args))

    import geopandas as gpd

    geoms = {k: unary_union(gpd.read_file(p).to_crs(4326).geometry.values) for k, p in AOIS.items()}
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    need = unary_union([geoms[a] for _, a, _, _ in cases])
    land = unary_union(gpd.read_file(LAND).geometry.values)
    ndjson, n_items, n_scenes = build_catalog(args.workdir, need, land)
    say(f"catalog: {n_scenes} WRS-2-like scenes x {MAX_PASSES} passes = {n_items:,} items, "
        f"{n_scenes * len(SR_KEYS):,} VRTs, built in {time.time() - t0:.1f} s "
        f"({ndjson.stat().st_size / 1e6:.0f} MB ndjson)")
    results: list[CaseResult] = []
    appended: list[AppendResult] = []
    with serve(ndjson, args.rustac) as url:
        say(f"served by rustac serve at {url}")
        for name, aoi_name, passes, extra in cases:
            window = {k: f"{FIRST_DAY.isoformat()}T00:00:00Z/"
                         f"{(FIRST_DAY + dt.timedelta(days=8 * k)).isoformat()}T00:00:00Z"
                      for k in (passes, passes + extra)}
            when = window[passes]
            out = args.workdir / f"cube-{name.replace('+', '-plus-')}.zarr"
            remove_cube(out)
            say(f"\n## {name}: --aoi {AOIS[aoi_name].relative_to(ROOT)} --datetime {when} "
                + (f"then {window[passes + extra]}, same --out " if extra else "")
                + f"(load average {os.getloadavg()[0]:.2f})")
            try:
                if extra:
                    a = run_append_case(name, AOIS[aoi_name], url, when, window[passes + extra], out, args, say)
                    if a.error:
                        say(f"append case incomplete: {a.error}")
                    appended.append(a)
                    results.append(a.first)
                    when, r = window[passes + extra], a.second
                else:
                    r = run_case(name, AOIS[aoi_name], url, when, out, args)
                    say(f"stopped: {r.stopped}; wall {r.wall_s:.1f} s")
                    if r.missing:
                        say(f"markers missing (n/a below): {', '.join(r.missing)}")
                    if r.marks:
                        say("stages (duration, end since start): " + "; ".join(r.marks))
                    if r.first_chip_s is None and r.tail:
                        say("last CLI lines: " + " | ".join(r.tail))
                if r is not None:
                    if not args.no_worker:
                        r.worker = worker_probe(AOIS[aoi_name], url, when, out, args.worker_timeout)
                        say(f"worker start-up: {json.dumps(r.worker)}")
                    results.append(r)
            except Exception as exc:  # one broken case must not lose the others' figures
                say(f"case {name} failed: {type(exc).__name__}: {exc}")
            finally:
                if not args.keep_cubes:
                    remove_cube(out)
    say("\n## Summary\n")
    if results:
        say(table(results))
    if appended:
        say("\n## Append (a run on the first window, stopped; a rerun on the wider window, same --out)\n")
        say(append_table(appended))
    say(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
