"""Fixtures for the catalog tests: the real landsat-c2-l2 items, served by a REAL rustac STAC API
on 127.0.0.1 and written as a static collection, with hrefs rewritten to local files."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port, wait_until_serving

COLLECTION = "landsat-c2-l2"


def load_real_items(shared_data: Path) -> list[dict]:
    """Every real landsat-c2-l2 item in ../shared/data/stac-items (deduplicated by id)."""
    items: dict[str, dict] = {}
    for f in sorted((shared_data / "stac-items").glob("*/*.json")):
        data = json.loads(f.read_text())
        for it in data if isinstance(data, list) else [data]:
            if it.get("type") == "Feature":
                items.setdefault(it["id"], it)
    return [items[k] for k in sorted(items)]


@dataclass
class RealItems:
    root: Path
    items: list[dict]  # as served: absolute local asset hrefs
    collection_json: Path  # for the API: a collection without item links
    ndjson: Path
    static_collection: Path  # the same items as a static collection (relative hrefs)


@pytest.fixture(scope="session")
def real_items(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> RealItems:
    root = tmp_path_factory.mktemp("stac")
    assets_root = root / "assets"
    served, static = [], []
    for it in load_real_items(shared_data):
        it = copy.deepcopy(it)
        it["links"] = []
        it["collection"] = COLLECTION
        rel = copy.deepcopy(it)
        for key, asset in it["assets"].items():
            name = asset["href"].split("?")[0].rstrip("/").split("/")[-1]
            # local mirror layout (search never reads pixels, so the files need not exist)
            asset["href"] = str(assets_root / it["id"] / name)
            rel["assets"][key]["href"] = f"../../assets/{it['id']}/{name}"
        served.append(it)
        static.append(rel)
    coll = json.loads((shared_data / "stac-items" / "stactools-landsat-examples" /
                       "collection.json").read_text())
    coll["id"] = COLLECTION
    coll["links"] = [l for l in coll["links"] if l["rel"] not in
                     ("item", "child", "root", "self", "parent")]
    api_coll = root / "collection.json"
    api_coll.write_text(json.dumps(coll))
    ndjson = root / "items.ndjson"
    ndjson.write_text("".join(json.dumps(it) + "\n" for it in served))

    sdir = root / "static"
    scoll = copy.deepcopy(coll)
    scoll["links"] = [{"rel": "root", "href": "./collection.json", "type": "application/json"}]
    for it in static:
        scoll["links"].append({"rel": "item", "href": f"./{it['id']}/{it['id']}.json",
                               "type": "application/geo+json"})
        it["links"] = [{"rel": "collection", "href": "../collection.json"},
                       {"rel": "root", "href": "../collection.json"},
                       {"rel": "parent", "href": "../collection.json"}]
        (sdir / it["id"]).mkdir(parents=True)
        (sdir / it["id"] / f"{it['id']}.json").write_text(json.dumps(it))
    (sdir / "collection.json").write_text(json.dumps(scoll))
    return RealItems(root, served, api_coll, ndjson, sdir / "collection.json")


@dataclass
class Server:
    url: str
    startup_s: float
    requests_log: Path


def _rustac() -> str:
    exe = shutil.which("rustac") or str(Path(sys.executable).parent / "rustac")
    if not os.path.exists(exe):
        pytest.fail("rustac is not installed in the venv: pip install rustac")
    return exe


@pytest.fixture(scope="session")
def stac_api(real_items: RealItems, tmp_path_factory: pytest.TempPathFactory):
    """A real rustac STAC API (in-memory backend) on a free 127.0.0.1 port; stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("rustac") / "server.log"
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [_rustac(), "serve", "--addr", f"127.0.0.1:{port}",
             str(real_items.collection_json), str(real_items.ndjson)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(f"{url}/collections/{COLLECTION}", proc, log, name="rustac serve",
                           timeout=20, interval=0.05)
        yield Server(url, time.perf_counter() - t0, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
