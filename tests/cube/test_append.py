"""Appendable cubes (issue 21): a rerun with new solar days appends them, embeds only the new
(tile, solar day) work, and leaves every chunk already written byte-identical; a killed append
resumes like any run; what would move or change existing chips is refused by name.

The second solar day is a documented copy of the bundled Liverpool scene: the same pixels and
footprint under a new id and a datetime 16 days later (the next pass of WRS-2 path 204), put
with the original into a temporary static catalog (``two_day_catalog``). Its chips differ from
the original's only through the date encodings, which is all these tests need.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import zarr

import geomoe
from geomoe.cube.layout import specs_from_plan
from geomoe.cube.store import Cube, CubeMismatchError, ensure_writable, open_group
from geomoe.embed.lock import store_lock
from geomoe.embed.pipeline import embed_region

from .conftest import LIVERPOOL_ITEM

KW = {"batch_size": 8, "tile_size": 2}
DAY1, DAY2 = "2020-09-27", "2020-10-13"
NEXT_PASS = "LC08_L2SP_204023_20201013_20201022_02_T1"  # a made-up id for the copy


def make_catalog(repo_root: Path, dst: Path, copies: list[tuple[str, _dt.datetime]]) -> Path:
    """A static collection at ``dst`` with the bundled Liverpool item and, for each
    (id, datetime) in ``copies``, a copy of it under that id and acquisition time (asset hrefs
    absolute, into the bundled files). Returns the collection.json."""
    import pystac

    src = repo_root / "catalogs" / "landsat-scenes" / LIVERPOOL_ITEM / f"{LIVERPOOL_ITEM}.json"
    base = pystac.Item.from_file(str(src))
    base.make_asset_hrefs_absolute()
    coll = pystac.Collection(id="liverpool-passes", description="the Liverpool scene and copies",
                             license="CC0-1.0",
                             extent=pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                                  pystac.TemporalExtent([[None, None]])))
    items = [base]
    for new_id, when in copies:
        it = base.clone()
        it.id = new_id
        it.datetime = when
        it.properties["geomoe:test_copy_of"] = LIVERPOOL_ITEM  # documented: not a real scene
        items.append(it)
    for it in items:
        it.clear_links()
        coll.add_item(it)
    coll.normalize_hrefs(str(dst))
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return dst / "collection.json"


@pytest.fixture(scope="module")
def two_day_catalog(repo_root, tmp_path_factory) -> Path:
    t = _dt.datetime(2020, 10, 13, 11, 10, 50, tzinfo=_dt.timezone.utc)
    return make_catalog(repo_root, tmp_path_factory.mktemp("cat2"), [(NEXT_PASS, t)])


@pytest.fixture(scope="module")
def two_day_clean(two_day_catalog, liverpool_aoi, ckpt_xxs, tmp_path_factory):
    """Both solar days embedded in one clean run: what any append must end up equal to."""
    out = tmp_path_factory.mktemp("clean2") / "c.zarr"
    s = embed_region(str(liverpool_aoi), catalog=str(two_day_catalog), checkpoint=ckpt_xxs, out=out, **KW)
    return out, s


def chunk_hashes(out: Path) -> dict[str, str]:
    """sha256 of every chunk file of the data groups (bookkeeping and metadata excluded)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and "/c/" in f"/{p.relative_to(out)}"
            and not str(p.relative_to(out)).startswith("_geomoe")}


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


def _by_day(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ds = open_group(out, "utm30n")
    days = json.loads(ds.attrs["solar_days"])
    return {d: (ds.embedding.values[t], ds.valid_fraction.values[t]) for t, d in enumerate(days)}


def _assert_same_day(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[1], want[1])


def test_append_one_solar_day_embeds_only_it_and_keeps_old_chunks(
        liverpool_reference, two_day_catalog, two_day_clean, liverpool_aoi, ckpt_xxs, tmp_path):
    ref, ref_summary = liverpool_reference  # the bundled catalog: day 1 only
    out = tmp_path / "grow.zarr"
    shutil.copytree(ref, out)
    old_chunks, old_values = chunk_hashes(out), _by_day(out)
    assert len(old_chunks) > 0 and list(old_values) == [DAY1]
    seen = []
    s = embed_region(str(liverpool_aoi), catalog=str(two_day_catalog), checkpoint=ckpt_xxs, out=out,
                     progress=seen.append, **KW)
    clean, _ = two_day_clean
    # progress counts the old day as done from the start (an estimate while tile counts are
    # estimated: per-tile planning) and ends exactly at the total
    assert seen[0].done - seen[0].embedded - seen[0].skipped > 0
    assert seen[-1].done == seen[-1].total == s.chips_planned
    want = _by_day(clean)
    new_day_chips = int(np.isfinite(want[DAY2][1]).sum())
    # only the new day's chips were read and embedded; every tile got its new day
    assert s.chips_embedded + s.chips_skipped_cloud == new_day_chips > 0
    assert s.tiles_written == ref_summary.tiles_written and s.run == 2
    # every chunk file that existed is byte-identical, and the old day reads the same
    after = chunk_hashes(out)
    assert {k: after[k] for k in old_chunks} == old_chunks
    assert len(after) > len(old_chunks)
    got = _by_day(out)
    assert list(got) == [DAY1, DAY2]  # appended at the end
    np.testing.assert_array_equal(got[DAY1][0], old_values[DAY1][0])
    np.testing.assert_array_equal(got[DAY1][1], old_values[DAY1][1])
    _assert_same_day(got[DAY2], want[DAY2])  # the append equals a clean two-day run
    done = zarr.open_array(str(out), path="_geomoe/utm30n/tile_done", mode="r")[...]
    assert done.shape == (2, 2, 3) and (done[0] == 1).all() and (done[1] == 2).all()
    cube = geomoe.open_cube(out)
    assert cube.complete and [it["id"] for it in cube.stac_items()] == [LIVERPOOL_ITEM, NEXT_PASS]
    assert cube.attrs["geomoe:appends"][-1]["days_added"] == {"utm30n": [DAY2]}
    # a rerun of the same request has nothing left to do
    s3 = embed_region(str(liverpool_aoi), catalog=str(two_day_catalog), checkpoint=ckpt_xxs, out=out, **KW)
    assert s3.tiles_written == 0 and s3.chips_embedded == 0 and chunk_hashes(out) == after


def test_wider_datetime_appends_an_earlier_day_and_open_cube_sorts(
        two_day_catalog, two_day_clean, liverpool_aoi, ckpt_xxs, tmp_path):
    out = tmp_path / "wider.zarr"
    cat = str(two_day_catalog)
    s1 = embed_region(str(liverpool_aoi), catalog=cat, datetime="2020-10-01/2020-10-31", checkpoint=ckpt_xxs,
                      out=out, **KW)
    first = chunk_hashes(out)
    s2 = embed_region(str(liverpool_aoi), catalog=cat, datetime="2020-09-01/2020-10-31", checkpoint=ckpt_xxs,
                      out=out, **KW)
    assert s2.chips_embedded + s2.chips_skipped_cloud == s1.chips_embedded + s1.chips_skipped_cloud
    after = chunk_hashes(out)
    assert {k: after[k] for k in first} == first
    assert list(_by_day(out)) == [DAY2, DAY1]  # storage order: the order the days came in
    clean = geomoe.open_cube(two_day_clean[0])["utm30n"]
    ds = geomoe.open_cube(out)["utm30n"]  # the reader sorts by time
    assert [str(t)[:10] for t in ds.time.values] == [DAY1, DAY2]
    np.testing.assert_allclose(ds.embedding.values, clean.embedding.values, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ds.valid_fraction.values, clean.valid_fraction.values)
    np.testing.assert_array_equal(ds.lat.values, clean.lat.values)


def test_append_refusals_by_name_leave_the_cube_untouched(
        liverpool_reference, repo_root, two_day_catalog, liverpool_aoi, liverpool_scene_aoi, ckpt_xxs, tmp_path):
    out = tmp_path / "keep.zarr"
    shutil.copytree(liverpool_reference[0], out)
    before = tree_hash(out)
    cat = str(two_day_catalog)
    # a setting that alters vectors: refused by name even though only a new day would be embedded
    with pytest.raises(CubeMismatchError, match=r"pooling='mean' \(you asked 'cls'\).*another --out"):
        embed_region(str(liverpool_aoi), catalog=cat, checkpoint=ckpt_xxs, out=out, pooling="cls", **KW)
    # another AOI moves the grid: refused with the fix
    with pytest.raises(CubeMismatchError, match=r"group utm30n: its chip grid would move \(row_max=.*another --out"):
        embed_region(liverpool_scene_aoi, catalog=cat, checkpoint=ckpt_xxs, out=out, **KW)
    # another AOI that leaves the extent as it is (shifted by about a metre): still another request
    fc = json.loads(Path(liverpool_aoi).read_text())
    ring = fc["features"][0]["geometry"]["coordinates"][0]
    fc["features"][0]["geometry"]["coordinates"][0] = [[x + 1e-5, y] for x, y in ring]
    with pytest.raises(CubeMismatchError, match=r"its AOI is another geometry.*another --out"):
        embed_region(json.dumps(fc["features"][0]["geometry"]), catalog=cat, checkpoint=ckpt_xxs, out=out, **KW)
    # a scene added to a day the cube already holds would change existing chips: the earlier
    # scene of a solar day comes first in its mosaic, so this copy would replace the original
    same_day = make_catalog(repo_root, tmp_path / "cat3", [
        ("LC08_L2SP_204023_20200927_COPY", _dt.datetime(2020, 9, 27, 11, 9, 30, tzinfo=_dt.timezone.utc))])
    with pytest.raises(CubeMismatchError, match=rf"solar day {DAY1} was embedded from scene\(s\) {LIVERPOOL_ITEM} "
                                                r"and is now planned from .*COPY"):
        embed_region(str(liverpool_aoi), catalog=str(same_day), checkpoint=ckpt_xxs, out=out, **KW)
    assert tree_hash(out) == before
    # a cube of the previous format (one completion record per tile, no layout) is not appended to
    doc = json.loads((out / "zarr.json").read_text())
    doc["attributes"]["geomoe:identity"]["format_version"] = 2
    del doc["attributes"]["geomoe:layout"]
    (out / "zarr.json").write_text(json.dumps(doc))
    before = tree_hash(out)
    with pytest.raises(CubeMismatchError, match=r"cube format 2, this geomoe writes 3.*cannot be resumed safely"):
        embed_region(str(liverpool_aoi), catalog=cat, checkpoint=ckpt_xxs, out=out, **KW)
    assert tree_hash(out) == before


APPEND = textwrap.dedent("""
    import sys
    from geomoe.embed.pipeline import embed_region
    embed_region(sys.argv[1], catalog=sys.argv[2], checkpoint=sys.argv[3], out=sys.argv[4], batch_size=8,
                 tile_size=2)
""")


def test_killed_append_resumes_by_tile_and_day(liverpool_reference, two_day_catalog, two_day_clean,
                                               liverpool_aoi, ckpt_xxs, tmp_path):
    """Resume and append are one mechanism: a SIGKILL after 3 tiles of an append leaves those
    3 (tile, new day) records; the rerun writes the other 3 tiles' new day only."""
    out = tmp_path / "killed.zarr"
    shutil.copytree(liverpool_reference[0], out)
    old = chunk_hashes(out)
    env = {**os.environ, "GEOMOE_FAULT": "after_tile_write:3"}
    proc = subprocess.run([sys.executable, "-c", APPEND, str(liverpool_aoi), str(two_day_catalog), str(ckpt_xxs),
                           str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert geomoe.open_cube(out).complete is False
    done = zarr.open_array(str(out), path="_geomoe/utm30n/tile_done", mode="r")[...]
    assert (done[0] == 1).all() and int((done[1] == 2).sum()) == 3 and int((done[1] == 0).sum()) == 3
    s = embed_region(str(liverpool_aoi), catalog=str(two_day_catalog), checkpoint=ckpt_xxs, out=out, **KW)
    assert s.tiles_written == 3 and s.tiles_already_done == 3 and s.run == 3
    after = zarr.open_array(str(out), path="_geomoe/utm30n/tile_done", mode="r")[...]
    assert (after[0] == 1).all() and ((after[1] == 3) == (done[1] == 0)).all()
    assert {k: v for k, v in chunk_hashes(out).items() if k in old} == old
    got, want = _by_day(out), _by_day(two_day_clean[0])
    for d in (DAY1, DAY2):
        _assert_same_day(got[d], want[d])
    assert geomoe.open_cube(out).complete


# ------------------------------------------------------------------ skeleton cost
def _synthetic_specs(rows: int, cols: int, days: int, tile: int = 4):
    """A grid spec of rows x cols chips and ``days`` solar days, from a plan holding only
    the corner chips of each day (the extent is what the skeleton's cost could grow with)."""
    items, groups = [], []
    for d in range(days):
        when = _dt.datetime(2020, 6, 1, 10, 30) + _dt.timedelta(days=8 * d)
        it = types.SimpleNamespace(id=f"S{d}", bbox=[-3.0, 50.0, 3.0, 55.0], datetime=when, properties={},
                                   geometry=None)
        items.append(it)
        c = np.empty(2, dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "U8")])
        c["row"], c["col"] = [5000, 5000 - rows + 1], [300, 300 + cols - 1]
        c["time"], c["item_id"] = np.datetime64(when, "s"), it.id
        groups.append(types.SimpleNamespace(epsg=32630, grid="fixed", chips=c))
    return specs_from_plan(types.SimpleNamespace(groups=groups), items, tile_size=tile)


def _skeleton_seconds(path: Path, specs) -> float:
    ensure_writable(path)
    with store_lock(path):
        t0 = time.perf_counter()
        Cube.create_or_open(path, specs, dim=64, identity={"checkpoint_sha256": "a" * 64}, attrs={}, items=[])
        return time.perf_counter() - t0


def test_skeleton_time_does_not_grow_with_bbox_and_days(tmp_path):
    small = _synthetic_specs(40, 40, 1)  # 100 tiles x 1 day
    large = _synthetic_specs(400, 400, 10)  # 10,000 tiles x 10 days: 1,000x the chunks
    assert large[0].ny == 400 and len(large[0].days) == 10
    _skeleton_seconds(tmp_path / "warm.zarr", small)  # imports, first-call costs
    ts = min(_skeleton_seconds(tmp_path / f"s{k}.zarr", small) for k in range(2))
    tl = min(_skeleton_seconds(tmp_path / f"l{k}.zarr", large) for k in range(2))
    assert tl < 5 * ts + 0.5, (ts, tl)  # the old per-chunk graph grew ~1,000x here
    ds = open_group(tmp_path / "l0.zarr", "utm30n")
    assert ds.embedding.shape == (10, 400, 400, 64) and ds.rio.crs.to_epsg() == 32630
    assert not (tmp_path / "l0.zarr" / "utm30n" / "embedding" / "c").exists()  # metadata only
    assert zarr.open_array(str(tmp_path / "l0.zarr"), path="_geomoe/utm30n/tile_done").shape == (10, 100, 100)


# ------------------------------------------------------------------ new zones, store level
def _two_zone_specs(zones: tuple[int, ...], days: int = 1):
    items, groups = [], []
    for epsg in zones:
        for d in range(days):
            when = _dt.datetime(2020, 6, 1, 10, 30) + _dt.timedelta(days=8 * d)
            it = types.SimpleNamespace(id=f"E{epsg}D{d}", bbox=[-3.0, 50.0, 3.0, 55.0], datetime=when,
                                       properties={}, geometry=None)
            items.append(it)
            rr, cc = np.meshgrid(np.arange(5000, 5007), np.arange(300, 309), indexing="ij")
            c = np.empty(rr.size, dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "U16")])
            c["row"], c["col"], c["time"], c["item_id"] = rr.ravel(), cc.ravel(), np.datetime64(when, "s"), it.id
            groups.append(types.SimpleNamespace(epsg=epsg, grid="fixed", chips=c))
    return specs_from_plan(types.SimpleNamespace(groups=groups), items, tile_size=4)


def _open(path: Path, specs) -> Cube:
    ensure_writable(path)
    with store_lock(path):
        return Cube.create_or_open(path, specs, dim=8, identity={"checkpoint_sha256": "a" * 64}, attrs={}, items=[])


def _fill_all(cube: Cube, run: int, value: float) -> None:
    for tile in cube.pending_tiles():
        spec = cube.specs[tile.group]
        ys, xs = spec.region(tile)
        times = cube.pending_times(tile)
        shape = (len(times), ys.stop - ys.start, xs.stop - xs.start)
        cube.write_grid_tile(tile, np.full(shape + (8,), value, np.float32), np.full(shape, 1.0, np.float32),
                             run, times=times)


def test_new_zone_becomes_a_new_group_and_old_group_is_untouched(tmp_path):
    out = tmp_path / "zones.zarr"
    cube = _open(out, _two_zone_specs((32630,)))
    _fill_all(cube, cube.new_run(), 1.0)
    old = chunk_hashes(out)
    # an interrupted append left a half-made utm31n group: geomoe's own, made again
    zarr.open_group(str(out), mode="r+", use_consolidated=False).create_group("utm31n")
    cube = _open(out, _two_zone_specs((32630, 32631), days=2))
    assert zarr.open_group(str(out), mode="r").attrs["geomoe:groups"] == ["utm30n", "utm31n"]
    assert cube.days == {"utm30n": ["2020-06-01", "2020-06-09"], "utm31n": ["2020-06-01", "2020-06-09"]}
    pend = cube.pending_tiles()
    assert {t.group for t in pend} == {"utm30n", "utm31n"} and len(pend) == 2 * 6
    assert all(cube.pending_times(t) == ([1] if t.group == "utm30n" else [0, 1]) for t in pend)
    _fill_all(cube, cube.new_run(), 2.0)
    after = chunk_hashes(out)
    assert {k: after[k] for k in old} == old
    v30 = open_group(out, "utm30n").embedding.values
    assert (v30[0] == 1).all() and (v30[1] == 2).all()
    assert open_group(out, "utm31n").rio.crs.to_epsg() == 32631 and cube.pending_tiles() == []


def test_foreign_directory_where_a_new_group_goes_is_refused_untouched(tmp_path):
    out = tmp_path / "f.zarr"
    _open(out, _two_zone_specs((32630,)))
    (out / "utm31n").mkdir()
    (out / "utm31n" / "notes.txt").write_text("mine")
    before = tree_hash(out)
    from geomoe.cube.store import ForeignStoreError

    with pytest.raises(ForeignStoreError, match=r"utm31n.*holds data geomoe did not write"):
        _open(out, _two_zone_specs((32630, 32631)))
    assert tree_hash(out) == before


def test_chip_table_is_not_appended_to(tmp_path):
    """The item-grid table keeps one record per tile: new scenes there are refused by name."""
    def table(ids):
        items, groups = [], []
        for k, i in enumerate(ids):
            when = _dt.datetime(2020, 6, 1 + k, 10, 30)
            items.append(types.SimpleNamespace(id=i, bbox=[-9.0, 38.0, -8.0, 39.0], datetime=when, properties={},
                                               geometry=None))
            c = np.empty(4, dtype=[("row", "i8"), ("col", "i8"), ("time", "M8[s]"), ("item_id", "U16")])
            c["row"], c["col"], c["time"], c["item_id"] = [0, 0, 1, 1], [0, 1, 0, 1], np.datetime64(when, "s"), i
            groups.append(types.SimpleNamespace(epsg=32629, grid="item", chips=c))
        return specs_from_plan(types.SimpleNamespace(groups=groups), items, tile_size=4, table_tile=4)

    out = tmp_path / "t.zarr"
    _open(out, table(["P1"]))
    before = tree_hash(out)
    with pytest.raises(CubeMismatchError, match=r"group chips: the chip table .* not appended to the chip table"):
        _open(out, table(["P1", "P2"]))
    assert tree_hash(out) == before
    assert _open(out, table(["P1"])).pending_tiles()  # the same table resumes
