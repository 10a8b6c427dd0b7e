"""Benchmark: CPU milliseconds per item of `geomoe.search`, this checkout vs a baseline commit.

    python benchmarks/bench_search.py [--n 2000] [--baseline-rev a480412] [--repeat 3]

Generates N landsat-c2-l2 items from the real items in ../shared/data/stac-items/ (Landsat 8/9
only; each a copy of a real item with a new id, datetime, footprint moved onto a lon/lat grid
over Europe, and `file://` asset hrefs), then:

- serves them with a real `rustac serve` on 127.0.0.1 and searches the API (pystac-client,
  paging) with a Europe-wide AOI (every item matches) and a small AOI;
- writes them as a static collection (relative asset hrefs, one JSON file per item) and walks
  it with the same two AOIs.

Both implementations run side by side in one process, alternating, so that the ratio holds on
a noisy shared machine. The baseline is the `geomoe/stac/search.py` of ``--baseline-rev``
loaded from git; both are checked to return the same items (ids, order, `to_dict()`).
Reported: CPU time of this process (`time.process_time`, the server's own CPU is not counted)
per item fetched, and wall time.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLLECTION = "landsat-c2-l2"
#: Europe-wide AOI (every generated item); the small one is 1 x 1 deg around the middle item.
EUROPE = {"type": "Polygon", "coordinates": [[[-12, 34], [34, 34], [34, 72], [-12, 72], [-12, 34]]]}


def small_aoi(items: list[dict]) -> dict:
    x0, y0, x1, y1 = items[len(items) // 2]["bbox"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return {"type": "Polygon", "coordinates": [[[cx - .5, cy - .5], [cx + .5, cy - .5],
                                                [cx + .5, cy + .5], [cx - .5, cy + .5],
                                                [cx - .5, cy - .5]]]}


def real_templates(shared: Path) -> list[dict]:
    """The real Landsat 8/9 items in shared/stac-items (deduplicated by id, sorted)."""
    items: dict[str, dict] = {}
    for f in sorted((shared / "stac-items").glob("*/*.json")):
        data = json.loads(f.read_text())
        for it in data if isinstance(data, list) else [data]:
            if it.get("type") == "Feature" and it["id"].startswith(("LC08", "LC09")):
                items.setdefault(it["id"], it)
    return [items[k] for k in sorted(items)]


def _shift(coords, dx: float, dy: float):
    if isinstance(coords[0], (int, float)):
        return [coords[0] + dx, coords[1] + dy, *coords[2:]]
    return [_shift(c, dx, dy) for c in coords]


def make_items(templates: list[dict], n: int, assets_root: Path) -> list[dict]:
    """N item dicts: template i % len, new id/datetime, footprint moved onto a Europe grid."""
    out = []
    cols = 40  # grid of 40 columns x ceil(n / 40) rows, 1 deg x 0.6 deg apart
    t0 = dt.datetime(2023, 5, 1, 10, 30, tzinfo=dt.timezone.utc)
    for i in range(n):
        it = copy.deepcopy(templates[i % len(templates)])
        r, c = divmod(i, cols)
        lon, lat = -10 + c * 1.0 + (r % 3) * 0.3, 36 + (r * 0.6) % 34
        x0, y0, x1, y1 = it["bbox"]
        dx, dy = lon - (x0 + x1) / 2, lat - (y0 + y1) / 2
        it["geometry"]["coordinates"] = _shift(it["geometry"]["coordinates"], dx, dy)
        it["bbox"] = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
        when = t0 + dt.timedelta(days=(i // 97) % 150, minutes=i % 97)
        path, row = 190 + c % 40, 20 + r % 40
        it["id"] = f"{it['id'][:10]}{path:03d}{row:03d}_{when:%Y%m%d}_02_T1_{i:05d}"
        it["properties"]["datetime"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        it["collection"] = COLLECTION
        it["links"] = []
        for key, asset in it["assets"].items():
            name = asset["href"].split("?")[0].rstrip("/").split("/")[-1]
            asset["href"] = (assets_root / it["id"] / name).as_uri()
        out.append(it)
    return out


def write_static(items: list[dict], collection: dict, root: Path) -> Path:
    """A static collection of the items, one JSON per item, asset hrefs relative."""
    coll = copy.deepcopy(collection)
    coll["links"] = [{"rel": "root", "href": "./collection.json", "type": "application/json"}]
    for it in items:
        it = copy.deepcopy(it)
        for asset in it["assets"].values():
            asset["href"] = "../../assets/" + "/".join(asset["href"].split("/")[-2:])
        it["links"] = [{"rel": "collection", "href": "../collection.json"},
                       {"rel": "root", "href": "../collection.json"},
                       {"rel": "parent", "href": "../collection.json"}]
        (root / it["id"]).mkdir(parents=True)
        (root / it["id"] / f"{it['id']}.json").write_text(json.dumps(it))
        coll["links"].append({"rel": "item", "href": f"./{it['id']}/{it['id']}.json",
                              "type": "application/geo+json"})
    (root / "collection.json").write_text(json.dumps(coll))
    return root / "collection.json"


def load_baseline(rev: str):
    """geomoe/stac/search.py as of git ``rev``, imported as a separate module."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:geomoe/stac/search.py"],
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "search_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("geomoe.stac._search_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def serve(collection_json: Path, ndjson: Path):
    from tests.servers import free_port, wait_until_serving

    exe = str(Path(sys.executable).parent / "rustac")
    port = free_port()
    log = collection_json.parent / "rustac.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "serve", "--addr", f"127.0.0.1:{port}",
                                 str(collection_json), str(ndjson)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/collections/{COLLECTION}", proc, log, name="rustac serve",
                       timeout=60, interval=0.1)
    return proc, url


def timed(fn, *args, **kwargs):
    c0, w0 = time.process_time(), time.perf_counter()
    res = fn(*args, **kwargs)
    return res, time.process_time() - c0, time.perf_counter() - w0


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="items to generate")
    ap.add_argument("--baseline-rev", default="a480412", help="git revision of the baseline")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each")
    ap.add_argument("--limit", type=int, default=250, help="items per API page")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()

    import geomoe.stac.search as new

    old = load_baseline(args.baseline_rev)
    tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
    templates = real_templates(args.shared)
    items = make_items(templates, args.n, tmp / "assets")
    coll = json.loads((args.shared / "stac-items" / "stactools-landsat-examples" /
                       "collection.json").read_text())
    coll["id"] = COLLECTION
    coll["links"] = [l for l in coll["links"] if l["rel"] not in
                     ("item", "child", "root", "self", "parent")]
    (tmp / "collection.json").write_text(json.dumps(coll))
    (tmp / "items.ndjson").write_text("".join(json.dumps(it) + "\n" for it in items))
    static = write_static(items, coll, tmp / "static")
    proc, url = serve(tmp / "collection.json", tmp / "items.ndjson")
    print(f"# benchmarks/bench_search.py --n {args.n} --baseline-rev {args.baseline_rev} "
          f"--repeat {args.repeat} --limit {args.limit}, "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit "
          f"{subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}")
    flags = " ".join(sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
    print(f"# CPU: {cpu_model()}; os.cpu_count()={os.cpu_count()}; flags: {flags or '?'}; "
          f"load average before {os.getloadavg()[0]:.2f} (shared machine: compare the ratio)")
    print(f"# {len(items)} items from {len(templates)} real templates; API: rustac serve, "
          f"{args.limit} per page; static: one JSON file per item")
    results = {}
    try:
        small = small_aoi(items)
        cases = [("api", url, "europe", EUROPE), ("api", url, "small", small),
                 ("static", static, "europe", EUROPE), ("static", static, "small", small)]
        for kind, cat, name, aoi in cases:
            row = {"old": [], "new": []}
            got = {}
            for _ in range(args.repeat):
                for label, mod in (("old", old), ("new", new)):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res, cpu, wall = timed(mod.search_catalog, str(cat), aoi, limit=args.limit)
                    row[label].append((cpu, wall, res.fetched, len(res.items)))
                    got[label] = res.items
            a, b = got["old"], got["new"]
            same = ([i.id for i in a] == [i.id for i in b]
                    and all(x.to_dict() == y.to_dict() for x, y in zip(a, b)))
            out = {}
            for label in ("old", "new"):
                cpu = min(r[0] for r in row[label])
                wall = min(r[1] for r in row[label])
                fetched, kept = row[label][0][2], row[label][0][3]
                per = max(fetched, 1)
                out[label] = {"cpu_s": cpu, "wall_s": wall, "fetched": fetched, "items": kept,
                              "cpu_ms_per_item_fetched": 1000 * cpu / per,
                              "cpu_ms_per_item_in_catalog": 1000 * cpu / len(items)}
                print(f"[{kind:6s} {name:6s}] {label}: {kept:5d} items kept of {fetched:5d} "
                      f"fetched; CPU {cpu:6.2f} s = {1000 * cpu / per:6.2f} ms/item fetched "
                      f"({1000 * cpu / len(items):5.2f} ms per catalog item); wall {wall:6.2f} s")
            print(f"[{kind:6s} {name:6s}] new/old CPU {out['new']['cpu_s'] / out['old']['cpu_s']:.2f}x; "
                  f"same items, order and to_dict(): {same}")
            results[f"{kind}/{name}"] = {**out, "same": same}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps({"n": args.n, "results": results}))


if __name__ == "__main__":
    main()
