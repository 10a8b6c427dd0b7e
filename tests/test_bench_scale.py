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


def test_append_check_counts_changed_chunks_and_pending_pairs(bench):
    """The append case's verdicts: a changed or removed old chunk file is counted, and the
    (tile, day) pairs pending when run 2 started are those no earlier run recorded."""
    g = {"T": 2, "days": ["2024-06-03", "2024-06-05"], "records": {1: 3}}
    before = {"chunks": {"z/embedding/c/0/0/0/0": "a", "z/embedding/c/1/0/0/0": "b", "z/x/c/0": "c"},
              "groups": {"z": g}, "runs": 1, "appends": []}
    after = {"chunks": {"z/embedding/c/0/0/0/0": "a", "z/embedding/c/1/0/0/0": "B",
                        "z/embedding/c/2/0/0/0": "d", "z/valid_fraction/c/2/0/0": "e"},
             "groups": {"z": {"T": 4, "days": g["days"] + ["2024-06-11", "2024-06-13"],
                              "records": {1: 3, 2: 2}}},
             "runs": 2, "appends": [{"days_added": {"z": ["2024-06-11", "2024-06-13"]}}]}
    pairs = {"z": {"tiles": 2, "plan_days": 4, "pairs": {"1:1": 3, "2:1": 1, "2:0": 1, "0:1": 2, "0:0": 1}}}
    r = bench.AppendResult("t", bench.CaseResult("t run 1"), before=before, after=after, pairs=pairs).check()
    assert (r["chunks_same"], r["chunks_changed"], r["chunks_missing"], r["chunks_new"]) == (1, 1, 1, 2)
    assert r["new_slice_chunks"] == 1 and r["days_added"] == 2 and r["days_prefix"] and r["old_records_kept"]
    assert (r["pending_start"], r["pending_start_scenes"], r["done_run2"], r["done_run2_scenes"]) == (5, 3, 2, 1)
    assert (r["pending_end"], r["pairs"], r["T_before"], r["T_after"]) == (3, 8, 2, 4)
    after["groups"]["z"]["records"] = {1: 2, 2: 3}  # a run-1 record overwritten
    after["groups"]["z"]["days"] = ["2024-06-05", "2024-06-03"]
    r = bench.AppendResult("t", bench.CaseResult("t run 1"), before=before, after=after).check()
    assert not r["old_records_kept"] and not r["days_prefix"] and "pending_start" not in r
