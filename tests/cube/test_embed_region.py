"""embed_region end to end on the bundled catalog (real Landsat COGs, real model weights)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
import zarr
from pyproj import Transformer

from geomoe.cube.store import CubeMismatchError, open_group
from geomoe.embed.pipeline import embed_region, resolve_checkpoint
from geomoe.errors import AOIError, CheckpointError, NoScenesError
from geomoe.embed.lock import CubeLockedError, store_lock

from .conftest import LIVERPOOL_ITEM, copy_liverpool_catalog


def test_liverpool_cube_layout_coords_and_attrs(liverpool_reference, repo_root, ckpt_xxs):
    out, s = liverpool_reference
    assert s.chips_planned == 20 and s.chips_embedded + s.chips_skipped_cloud == 20
    assert s.tiles_total == 6 and s.tiles_written == 6 and s.groups == ["utm30n"]
    ds = open_group(out, "utm30n")
    assert ds.rio.crs.to_epsg() == 32630
    assert ds.embedding.dims == ("time", "y", "x", "dim") and ds.sizes["dim"] == 108
    assert str(ds.time.values[0])[:19] == "2020-09-27T11:10:50"
    assert json.loads(ds.attrs["stac_item_ids"]) == [[LIVERPOOL_ITEM]]
    emb = ds.embedding.values
    ok = np.isfinite(emb).all(-1)
    assert ok.sum() == s.chips_embedded and np.isfinite(ds.valid_fraction.values).sum() == 20
    # spot-check coordinates against the source raster, independently of geomoe
    with rasterio.open(repo_root / "catalogs" / "landsat-scenes" / LIVERPOOL_ITEM / "red.tif") as r:
        left, bottom, right, top = r.bounds
        assert r.crs.to_epsg() == 32630
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    assert (xx > left).all() and (xx < right).all() and (yy > bottom).all() and (yy < top).all()
    lon, lat = Transformer.from_crs(32630, 4326, always_xy=True).transform(xx, yy)
    np.testing.assert_allclose(ds.lat.values, lat, atol=1e-9)
    np.testing.assert_allclose(ds.lon.values, lon, atol=1e-9)
    assert 53.45 < lat.min() < lat.max() < 53.52 and -3.15 < lon.min() < lon.max() < -3.04  # Liverpool Bay
    assert np.all(np.diff(ds.y.values) < 0) and np.all(np.diff(ds.x.values) == 1200)
    # reproducibility attributes
    root = zarr.open_group(str(out), mode="r").attrs.asdict()
    from geomoe.model import checkpoint_sha256

    assert root["geomoe:identity"]["checkpoint_sha256"] == checkpoint_sha256(ckpt_xxs)
    assert root["geomoe:model"]["size"] == "XXS" and root["geomoe:identity"]["pooling"] == "mean"
    assert len(root["geomoe:normalisation"]["mean"]) == 7 and root["geomoe:version"]
    assert root["geomoe:query"]["catalog"] == "bundled" and root["geomoe:query"]["aoi"]["geometry"]["type"] == "Polygon"
    # the STAC collection and group item beside the store
    stac = out.with_name(out.name + ".stac")
    coll = json.loads((stac / "collection.json").read_text())
    assert coll["emb:type"] == "chip" and coll["emb:dimensions"] == 108 and coll["data_type"] == "float32"
    assert coll["emb:chip_layout"]["layout_type"] == "regular_grid" and coll["gsd"] == 1200.0
    item = json.loads((stac / "utm30n.json").read_text())
    assert item["assets"]["embeddings"]["xarray:open_kwargs"]["group"] == "utm30n"
    assert any(lk["rel"] == "emb:source-data" for lk in item["links"])


def test_embeddings_equal_the_model_on_the_same_chips(liverpool_reference, liverpool_aoi, ckpt_xxs):
    """Each stored vector is model.embed of that chip (placement and pooling are right)."""
    from geomoe.stac.aoi import load_aoi
    from geomoe.stac.search import search
    from geomoe.chips.plan import iter_chips
    from geomoe.model import load_checkpoint

    out, _ = liverpool_reference
    ds = open_group(out, "utm30n")
    model = load_checkpoint(ckpt_xxs)
    aoi = load_aoi(str(liverpool_aoi))
    n = 0
    for b in iter_chips(search(None, aoi), aoi=aoi, batch_size=64):
        with torch.inference_mode():
            e = model.embed(torch.from_numpy(model.preprocess(b.pixels)), week=torch.from_numpy(b.week),
                            hour=torch.from_numpy(b.hour), lat=torch.from_numpy(b.lat),
                            lon=torch.from_numpy(b.lon), pooling="mean").numpy()
        for k in range(len(b)):
            got = ds.embedding.sel(x=b.x[k], y=b.y[k]).isel(time=0).values
            np.testing.assert_allclose(got, e[k], rtol=1e-4, atol=1e-5)
            n += 1
    assert n == 20


def test_rerun_resumes_nothing_to_do_and_data_unchanged(liverpool_reference, liverpool_aoi, ckpt_xxs, tmp_path):
    ref, _ = liverpool_reference
    out = tmp_path / "copy.zarr"
    shutil.copytree(ref, out)
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2)
    assert s.tiles_written == 0 and s.tiles_already_done == 6 and s.chips_embedded == 0 and s.run == 2
    np.testing.assert_array_equal(open_group(out, "utm30n").embedding.values,
                                  open_group(ref, "utm30n").embedding.values)


def test_compile_has_no_effect_in_fp32_on_cpu(liverpool_reference, liverpool_aoi, ckpt_xxs, tmp_path):
    """--compile acts where the model runs in bf16; a CPU fp32 cube is the same, embedded eager."""
    from geomoe.embed.pipeline import get_model
    from geomoe.model import checkpoint_sha256

    ref, _ = liverpool_reference
    out = tmp_path / "compiled.zarr"
    embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2, compile=True)
    np.testing.assert_array_equal(open_group(out, "utm30n").embedding.values,
                                  open_group(ref, "utm30n").embedding.values)
    model = get_model(ckpt_xxs, checkpoint_sha256(ckpt_xxs), torch.device("cpu"), compile=True)
    assert model._compiled_encode is None


def test_other_model_or_locked_store_refused_data_intact(liverpool_reference, liverpool_aoi, ckpt_xxs,
                                                         ckpt_xxs_other, tmp_path):
    ref, _ = liverpool_reference
    out = tmp_path / "copy.zarr"
    shutil.copytree(ref, out)
    before = open_group(out, "utm30n").embedding.values
    with pytest.raises(CubeMismatchError, match="different model.*checkpoint_sha256"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs_other, out=out, batch_size=8, tile_size=2)
    with pytest.raises(CubeMismatchError, match="pooling"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2, pooling="cls")
    with store_lock(out):  # another run holds the store
        with pytest.raises(CubeLockedError):
            embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2)
    np.testing.assert_array_equal(open_group(out, "utm30n").embedding.values, before)


def test_checkpoint_errors_name_the_file(tmp_path, monkeypatch, liverpool_aoi):
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        embed_region(str(liverpool_aoi), checkpoint=tmp_path / "nope.safetensors", out=tmp_path / "c.zarr")
    import geomoe.resources

    monkeypatch.chdir(tmp_path)  # no checkpoints/ here, and the shipped demo checkpoint gone
    monkeypatch.setattr(geomoe.resources, "demo_checkpoint",
                        lambda: tmp_path / "gone" / "geomoe-demo-S.safetensors")
    with pytest.raises(CheckpointError, match=r"geomoe-demo-S\.safetensors.*--checkpoint"):
        resolve_checkpoint(None)
    assert not (tmp_path / "c.zarr").exists()


def test_bad_aoi_and_empty_search_create_nothing(tmp_path, repo_root, ckpt_xxs):
    with pytest.raises(AOIError):
        embed_region('{"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}', checkpoint=ckpt_xxs,
                     out=tmp_path / "a.zarr")
    with pytest.raises(NoScenesError):
        embed_region(str(repo_root / "catalogs" / "aois" / "empty.geojson"), checkpoint=ckpt_xxs,
                     out=tmp_path / "b.zarr")
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_item_grid_patches_go_to_the_chip_table(portugal_aoi, ckpt_xxs, tmp_path, repo_root):
    out = tmp_path / "pt.zarr"
    s = embed_region(portugal_aoi, checkpoint=ckpt_xxs, out=out, batch_size=16, table_tile=8)
    assert s.groups == ["chips"] and s.chips_planned >= 10
    ds = open_group(out, "chips")
    assert ds.embedding.dims == ("chip", "dim")
    ids = [str(v) for v in ds.item_id.values.tolist()]
    assert len(set(ids)) == len(ids) == s.chips_planned  # one centred chip per patch
    ok = np.isfinite(ds.embedding.values).all(1)
    assert ok.sum() == s.chips_embedded and np.isfinite(ds.valid_fraction.values).sum() == s.chips_planned
    assert (ds.valid_fraction.values[~ok] < 0.9).all()  # the others were skipped for cloud/fill
    # every patch's valid fraction (kept or skipped) is its own, read directly with the chips API
    from geomoe.stac.search import search
    from geomoe.chips.plan import iter_chips

    direct = {}
    for b in iter_chips(search(None, portugal_aoi), aoi=portugal_aoi, min_valid=0.0):
        direct.update(zip(b.item_id.tolist(), b.valid.tolist()))
    assert (~ok).any()  # the AOI holds patches skipped for fill, so the check below covers them
    assert [direct[i] for i in ids] == pytest.approx(ds.valid_fraction.values.tolist())
    # per-chip coordinates: centre of each patch raster (checked with rasterio)
    src = repo_root / "catalogs" / "bigearthnet-landsat-sample"
    for k in range(0, len(ids), 5):
        tif = src / ids[k] / "red.tif"
        with rasterio.open(tif) as r:
            assert r.bounds.left < float(ds.x[k]) < r.bounds.right
            assert r.bounds.bottom < float(ds.y[k]) < r.bounds.top
            assert int(ds.epsg[k]) == r.crs.to_epsg()
        assert 36.5 < float(ds.lat[k]) < 40.5 and -9.5 < float(ds.lon[k]) < -6.5
    assert all(lbl for lbl, k in zip(ds.labels.values.tolist(), ok) if k)


def test_cli_progress_summary_and_plot(liverpool_scene_aoi, ckpt_xxs, tmp_path):
    out = tmp_path / "scene.zarr"
    res = subprocess.run([sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi", liverpool_scene_aoi,
                          "--checkpoint", str(ckpt_xxs), "--out", str(out), "--batch-size", "32",
                          "--tile-size", "4", "--plot"], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "[embed-region]" in res.stderr and "chips/s" in res.stderr and "ETA" in res.stderr
    assert "embedded" in res.stdout and "skipped" in res.stdout and str(out) in res.stdout
    png = out.with_name(out.name + ".png")
    assert png.stat().st_size > 10_000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.std() > 0.05  # a picture, not a blank canvas
    res = subprocess.run([sys.executable, "-m", "geomoe.cli", "plot", str(out), "--out", str(tmp_path / "p.png")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and (tmp_path / "p.png").exists()
    bad = subprocess.run([sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi", liverpool_scene_aoi,
                          "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "x.zarr")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "missing.pth" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.timeout(180)
def test_corrupt_raster_fails_cleanly_without_hang_store_consistent(repo_root, ckpt_xxs, tmp_path,
                                                                       liverpool_aoi):
    """A truncated COG read in the reader thread surfaces as RasterReadError (the writer and
    reader threads stop, no hang). The run fails before any tile is finished, so the store it
    created is removed: a failed start leaves nothing behind (a store holding finished tiles
    is kept: tests/cube/test_data_safety.py::test_failure_while_resuming_keeps_finished_tiles)."""
    from geomoe.errors import RasterReadError

    _, dst = copy_liverpool_catalog(repo_root, tmp_path, name="corrupt")
    data = (dst / "nir08.tif").read_bytes()
    (dst / "nir08.tif").write_bytes(data[: len(data) // 3])  # truncated: later tiles fail to read
    out = tmp_path / "c.zarr"
    with pytest.raises(RasterReadError):
        embed_region(str(liverpool_aoi), catalog=str(tmp_path / "cat" / "collection.json"),
                     checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2)
    assert not out.exists()


def test_bf16_on_cpu_compiled_cube_close_to_fp32(liverpool_scene_aoi, ckpt_xxs, tmp_path, monkeypatch):
    """--precision bf16 --compile on CPU: full chunks go through the compiled bf16 graph, the
    vectors stay within bf16 rounding of the fp32 cube, and the summary says which ran."""
    import geomoe.model.compile as gc

    compiled_chunks = []
    run_compiled = gc.run_compiled
    monkeypatch.setattr(gc, "run_compiled", lambda m, x, meta: compiled_chunks.append(len(x)) or run_compiled(m, x, meta))
    kw = {"checkpoint": ckpt_xxs, "batch_size": 64, "min_valid": 0.0, "device": "cpu"}  # 96 chips, one tile
    fp32 = embed_region(liverpool_scene_aoi, out=tmp_path / "fp32.zarr", **kw)
    assert compiled_chunks == []
    bf16 = embed_region(liverpool_scene_aoi, out=tmp_path / "bf16.zarr", precision="bf16", compile=True, **kw)
    assert compiled_chunks == [32, 32, 32]  # batches of 64 + 32 chips, in chunks of 32
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16") and "bf16" in str(bf16)
    assert bf16.chips_embedded == fp32.chips_embedded == fp32.chips_planned == 96
    a = open_group(tmp_path / "fp32.zarr", "utm30n").embedding.values
    b = open_group(tmp_path / "bf16.zarr", "utm30n").embedding.values
    ok = np.isfinite(a).all(-1)
    assert (np.isfinite(b).all(-1) == ok).all()
    rel = np.linalg.norm(b[ok] - a[ok], axis=-1) / np.linalg.norm(a[ok], axis=-1)
    assert 1e-4 < np.median(rel) and rel.max() < 2e-2, (np.median(rel), rel.max())  # measured 3.7e-3, 5.9e-3


def test_unknown_precision_refused_before_any_write(liverpool_aoi, ckpt_xxs, tmp_path):
    from geomoe.errors import GeomoeError

    with pytest.raises(GeomoeError, match="unknown precision 'fp16': use one of auto, fp32, bf16"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=tmp_path / "x.zarr", precision="fp16")
    assert not (tmp_path / "x.zarr").exists()
