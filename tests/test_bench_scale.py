"""benchmarks/bench_scale.py's synthetic catalog: WRS-2 geometry close to real items, and items
that geomoe searches, plans and reads as it would real landsat-c2-l2 items (so that the scale
benchmark measures geomoe, not a broken catalog)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def bench():
    if not (SHARED / "stac-items").is_dir():
        pytest.skip("needs ../shared/data (the real STAC items)")
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = mod  # its dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_scale", None)


def test_wrs2_centres_match_real_items(bench):
    """Every real Landsat 8/9 item in ../shared/data/stac-items has its footprint centre within
    0.05 deg of the model's centre for its path/row."""
    n = 0
    for f in sorted((SHARED / "stac-items").glob("*/*.json")):
        d = json.loads(f.read_text())
        p = d.get("properties", {}) if isinstance(d, dict) else {}
        if "landsat:wrs_path" not in p or d.get("geometry") is None:
            continue
        lon, lat = bench.wrs2_centre(int(p["landsat:wrs_path"]), int(p["landsat:wrs_row"]))
        c = np.asarray(d["geometry"]["coordinates"][0][:-1]).mean(axis=0)
        assert abs(float(lon) - c[0]) < 0.05 and abs(float(lat) - c[1]) < 0.05, d["id"]
        n += 1
    assert n >= 10


def test_generated_items_search_plan_and_read(bench, tmp_path):
    """One pass over a small AOI in Poland: search keeps every item, plan_chips plans chips,
    and the VRT assets have the items' proj:shape and hold real (non-fill) DN."""
    import rasterio
    import shapely.geometry as sg

    from geomoe.chips.plan import plan_chips
    from geomoe.stac.search import search

    aoi = sg.box(19.0, 51.5, 19.6, 51.9)
    ndjson, n_items, n_scenes = bench.build_catalog(tmp_path, aoi, passes=2)
    assert n_items == 2 * n_scenes and n_scenes >= 1
    fc = tmp_path / "items.json"
    fc.write_text(json.dumps({"type": "FeatureCollection",
                              "features": [json.loads(ln) for ln in ndjson.read_text().splitlines()]}))
    items = search(str(fc), aoi, datetime="2024-06-03/2024-06-10")
    assert len(items) == n_scenes
    assert {it.properties["platform"] for it in items} <= {"landsat-8", "landsat-9"}
    plan = plan_chips(items, aoi=aoi)
    assert len(plan) > 0
    it = items[0]
    with rasterio.open(it.assets["red"].href[len("file://"):]) as ds:
        assert [ds.height, ds.width] == it.properties["proj:shape"]
        assert ds.crs.to_epsg() == it.properties["proj:epsg"]
        h, w = ds.height // 2, ds.width // 2
        assert ds.read(1, window=((h, h + 40), (w, w + 40))).min() > 0
