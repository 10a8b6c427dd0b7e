"""Nothing lost, nothing silent (issue 20): foreign stores, mixed settings, failed starts, full disk.

Every refusal is checked with a hash of every file (path + bytes) of the store before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from geomoe.cube.store import CubeMismatchError, ForeignStoreError, open_group
from geomoe.embed.pipeline import EmbedRequest, embed_region, prepare, search_and_plan
from geomoe.errors import CheckpointError, RasterReadError
from geomoe.embed.lock import store_lock

from .conftest import LIVERPOOL_ITEM, copy_liverpool_catalog

KW = {"batch_size": 8, "tile_size": 2}


def tree_hash(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (and the set of directories), keyed by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geomoe.cli", "embed-region", *args],
                          capture_output=True, text=True, timeout=240, cwd=cwd)


def _error_lines(stderr: str) -> list[str]:
    """stderr without the progress lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("[embed-region]")]


# ------------------------------------------------------------------ 1. foreign stores
def _xarray_store(path: Path) -> None:
    ds = xr.Dataset({"ndvi": (("y", "x"), np.arange(12, dtype="float32").reshape(3, 4))},
                    coords={"y": [3.0, 2.0, 1.0], "x": [0.0, 1.0, 2.0, 3.0]}, attrs={"owner": "me"})
    ds.to_zarr(str(path), zarr_format=3)


def _bare_group_and_file(path: Path) -> None:
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.attrs["project"] = "thesis"
    g.create_array("counts", shape=(4,), dtype="int32")[:] = [1, 2, 3, 4]
    (path / "notes.txt").write_text("precious notes")


@pytest.mark.parametrize("make", [_xarray_store, _bare_group_and_file])
def test_foreign_zarr_store_is_refused_byte_identical(make, liverpool_aoi, ckpt_xxs, tmp_path):
    out = tmp_path / "theirs.zarr"
    make(out)
    before, mtime = tree_hash(out), out.stat().st_mtime_ns
    with pytest.raises(ForeignStoreError, match=r"theirs\.zarr.*not a geomoe cube.*new or empty --out"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, **KW)
    assert tree_hash(out) == before and out.stat().st_mtime_ns == mtime  # not even a probe file


def test_cli_refuses_foreign_store_one_line(repo_root, ckpt_xxs, tmp_path):
    out = tmp_path / "that_dir"
    _xarray_store(out)
    before = tree_hash(out)
    res = _cli("--aoi", "catalogs/aois/liverpool.geojson", "--out", str(out), "--checkpoint", str(ckpt_xxs),
               cwd=repo_root)
    assert res.returncode != 0
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and str(out) in lines[0] and "--out" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert tree_hash(out) == before


def test_foreign_files_beside_the_store_refused_before_any_work(repo_root, ckpt_xxs, tmp_path):
    """<out>.stac/ and (with --plot) <out>.png are geomoe's to rewrite only when geomoe wrote
    them: someone else's file there stops the run before --out is created."""
    out = tmp_path / "cube.zarr"
    item = tmp_path / "cube.zarr.stac" / "collection.json"
    item.parent.mkdir()
    item.write_text('{"type": "Collection", "id": "my own collection"}')
    res = _cli("--aoi", "catalogs/aois/liverpool.geojson", "--out", str(out), "--checkpoint",
               str(ckpt_xxs), cwd=repo_root)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "cube.zarr.stac/collection.json is not a STAC document geomoe wrote" in res.stderr
    assert item.read_text() == '{"type": "Collection", "id": "my own collection"}' and not out.exists()
    item.unlink()
    item.parent.rmdir()
    item.parent.write_text("a file where the STAC folder goes")
    res = _cli("--aoi", "catalogs/aois/liverpool.geojson", "--out", str(out), "--checkpoint",
               str(ckpt_xxs), cwd=repo_root)
    assert res.returncode == 1 and "is not the STAC folder geomoe writes" in res.stderr, res.stderr
    assert item.parent.read_text() == "a file where the STAC folder goes" and not out.exists()
    item.parent.unlink()
    png = tmp_path / "cube.zarr.png"
    png.write_bytes(b"\x89PNG my holiday photo")
    res = _cli("--aoi", "catalogs/aois/liverpool.geojson", "--out", str(out), "--checkpoint",
               str(ckpt_xxs), "--plot", cwd=repo_root)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "is not a geomoe plot" in res.stderr
    assert png.read_bytes() == b"\x89PNG my holiday photo" and not out.exists()


def _skeleton(aoi: Path, ckpt: Path, out: Path, **kw) -> None:
    """A geomoe skeleton whose creation was cut short (as a run killed during it leaves one)."""
    req = EmbedRequest(aoi=str(aoi), out=str(out), checkpoint=str(ckpt), **{**KW, **kw})
    planned = search_and_plan(req)
    out.mkdir()
    with store_lock(out):
        prepare(req, planned)
    zarr.open_group(str(out), mode="r+").attrs["geomoe:skeleton_complete"] = False


def test_unfinished_skeleton_other_settings_refused_same_settings_rebuilt(liverpool_aoi, ckpt_xxs, tmp_path):
    out = tmp_path / "skel.zarr"
    _skeleton(liverpool_aoi, ckpt_xxs, out, min_valid=0.5)
    before = tree_hash(out)
    with pytest.raises(CubeMismatchError, match=r"min_valid=0\.5 \(you asked 0\.9\).*unfinished skeleton"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, **KW)
    assert tree_hash(out) == before
    (out / "mine.txt").write_text("not geomoe's")  # an unfinished skeleton with a stranger inside
    with pytest.raises(ForeignStoreError, match="mine.txt"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, min_valid=0.5, **KW)
    (out / "mine.txt").unlink()
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, min_valid=0.5, **KW)
    assert s.tiles_written == 6 and s.run == 1  # geomoe's own unfinished skeleton: rebuilt


# ------------------------------------------------------------------ 2. identity
PARTIAL = textwrap.dedent("""
    import sys
    from geomoe.embed.pipeline import embed_region
    embed_region(sys.argv[1], checkpoint=sys.argv[2], out=sys.argv[3], batch_size=8, tile_size=2)
""")


def test_resume_with_other_min_valid_refused_by_name_midway(liverpool_reference, liverpool_aoi, ckpt_xxs,
                                                            tmp_path):
    out = tmp_path / "partial.zarr"
    env = {**os.environ, "GEOMOE_FAULT": "after_tile_write:2"}
    proc = subprocess.run([sys.executable, "-c", PARTIAL, str(liverpool_aoi), str(ckpt_xxs), str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, proc.stderr  # killed after 2 of 6 tiles
    before = tree_hash(out)
    with pytest.raises(CubeMismatchError, match=r"made with .*min_valid=0\.9 \(you asked 0\.0\).*same min_valid"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, min_valid=0.0, **KW)
    assert tree_hash(out) == before
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, **KW)  # same settings: resumes
    assert s.tiles_already_done == 2 and s.tiles_written == 4
    ref, _ = liverpool_reference
    np.testing.assert_array_equal(open_group(out, "utm30n").valid_fraction.values,
                                  open_group(ref, "utm30n").valid_fraction.values)


@pytest.mark.parametrize("change,names", [
    ({"min_valid": 0.0}, ["min_valid=0.9 (you asked 0.0)"]),
    ({"pooling": "cls"}, ["pooling='mean' (you asked 'cls')"]),
    ({"tile_size": 4}, ["tile_size=2 (you asked 4)"]),
    ({"min_valid": 0.5, "pooling": "patch_mean", "dtype": "float16"},
     ["min_valid=0.9 (you asked 0.5)", "pooling='mean' (you asked 'patch_mean')",
      "dtype='float32' (you asked 'float16')"]),
])
def test_finished_cube_other_settings_refused_by_name(change, names, liverpool_reference, liverpool_aoi,
                                                      ckpt_xxs, tmp_path):
    ref, _ = liverpool_reference
    out = tmp_path / "done.zarr"
    shutil.copytree(ref, out)
    before = tree_hash(out)
    with pytest.raises(CubeMismatchError) as info:
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, **{**KW, **change})
    msg = str(info.value)
    assert all(n in msg for n in names), msg
    assert str(out) in msg and "another --out" in msg
    assert tree_hash(out) == before


def test_precision_and_device_are_recorded_per_run_not_identity(liverpool_reference, liverpool_aoi, ckpt_xxs,
                                                                tmp_path):
    ref, _ = liverpool_reference
    out = tmp_path / "runs.zarr"
    shutil.copytree(ref, out)
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, device="cpu", precision="bf16", **KW)
    assert s.run == 2 and s.device == "cpu"  # resumed: precision is not part of the identity
    log = zarr.open_group(str(out), mode="r").attrs["geomoe:run_log"]
    assert [(r["run"], r["device"], r["precision"]) for r in log] == [(1, "cpu", "fp32"), (2, "cpu", s.precision)]
    ident = zarr.open_group(str(out), mode="r").attrs["geomoe:identity"]
    assert ident["min_valid"] == 0.9 and ident["mask_bits"] == [0, 1, 2, 3, 4] and ident["grid"] == "fixed"
    assert ident["tile_size"] == 2 and ident["table_tile"] == 256 and len(ident["normalisation"]["std"]) == 7
    assert "precision" not in ident and "device" not in ident


def test_cube_of_older_format_refused(liverpool_reference, liverpool_aoi, ckpt_xxs, tmp_path):
    """A cube whose identity predates min_valid & co cannot be known to match: refused, untouched."""
    ref, _ = liverpool_reference
    out = tmp_path / "old.zarr"
    shutil.copytree(ref, out)
    doc = json.loads((out / "zarr.json").read_text())
    ident = doc["attributes"]["geomoe:identity"]
    doc["attributes"]["geomoe:identity"] = {k: ident[k] for k in ("checkpoint_sha256", "model_size", "embed_dim",
                                                                   "pooling", "dtype")}
    doc["attributes"]["geomoe:identity"]["format_version"] = 1
    (out / "zarr.json").write_text(json.dumps(doc))
    before = tree_hash(out)
    with pytest.raises(CubeMismatchError, match=r"cube format 1.*cannot be resumed safely.*another --out"):
        embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, **KW)
    assert tree_hash(out) == before


# ------------------------------------------------------------------ 3. failed starts leave nothing
def test_bad_checkpoint_creates_no_out(liverpool_aoi, tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(os.urandom(4096))
    out = tmp_path / "new" / "dir" / "c.zarr"
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        embed_region(str(liverpool_aoi), checkpoint=bad, out=out, **KW)
    assert not (tmp_path / "new").exists()


def test_missing_cog_creates_no_out_and_names_the_file(repo_root, liverpool_aoi, ckpt_xxs, tmp_path):
    catalog, scene = copy_liverpool_catalog(repo_root, tmp_path)
    (scene / "swir16.tif").unlink()
    out = tmp_path / "c.zarr"
    with pytest.raises(RasterReadError, match=r"swir16\.tif.*does not exist"):
        embed_region(str(liverpool_aoi), catalog=str(catalog), checkpoint=ckpt_xxs, out=out, **KW)
    assert not out.exists()
    res = _cli("--aoi", str(liverpool_aoi), "--catalog", str(catalog), "--checkpoint", str(ckpt_xxs),
               "--out", str(out), cwd=tmp_path)
    assert res.returncode == 1 and "swir16.tif" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_failure_while_resuming_keeps_finished_tiles(repo_root, liverpool_reference, liverpool_aoi, ckpt_xxs,
                                                     tmp_path):
    """A store this run did not create is never removed: a read error on resume keeps the done tiles."""
    catalog, scene = copy_liverpool_catalog(repo_root, tmp_path)
    out = tmp_path / "c.zarr"
    env = {**os.environ, "GEOMOE_FAULT": "after_tile_write:2"}
    proc = subprocess.run([sys.executable, "-c", PARTIAL, str(liverpool_aoi), str(ckpt_xxs), str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, proc.stderr
    data = (scene / "nir08.tif").read_bytes()
    (scene / "nir08.tif").write_bytes(data[: len(data) // 3])  # header intact, pixels truncated
    with pytest.raises(RasterReadError):
        embed_region(str(liverpool_aoi), catalog=str(catalog), checkpoint=ckpt_xxs, out=out, **KW)
    done = zarr.open_array(str(out), path="_geomoe/utm30n/tile_done", mode="r")[0]  # the one solar day
    assert int((done > 0).sum()) == 2
    got = open_group(out, "utm30n").valid_fraction.values[0]  # consistent: done tiles whole, others NaN
    want = open_group(liverpool_reference[0], "utm30n").valid_fraction.values[0]
    for ty in range(done.shape[0]):
        for tx in range(done.shape[1]):
            g, w = (a[2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2] for a in (got, want))
            if done[ty, tx]:
                np.testing.assert_array_equal(g, w)
            else:
                assert np.isnan(g).all()


# ------------------------------------------------------------------ 4. full disk
@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 112 KiB tmpfs: room for the Liverpool skeleton (84 KiB) and a tile or two, not all 6."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=112k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_one_line_then_rerun_resumes(small_tmpfs, liverpool_reference, liverpool_aoi, ckpt_xxs):
    out = small_tmpfs / "c.zarr"
    res = _cli("--aoi", str(liverpool_aoi), "--checkpoint", str(ckpt_xxs), "--out", str(out),
               "--batch-size", "8", "--tile-size", "2", cwd=small_tmpfs.parent)
    assert res.returncode == 1, res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    msg = lines[0]
    assert "no space left" in msg and str(out) in msg and "more are needed" in msg and "estimate" in msg
    assert "rerun the same command" in msg, msg
    # free space (grow the filesystem) and rerun: it resumes and the cube is complete and exact
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, **KW)
    ref, ref_summary = liverpool_reference
    kept = s.tiles_already_done
    assert (f"keeping the {kept} tile(s)" in msg) if kept else ("starts over" in msg)
    assert s.tiles_written == 6 - kept
    np.testing.assert_allclose(open_group(out, "utm30n").embedding.values,
                               open_group(ref, "utm30n").embedding.values, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(open_group(out, "utm30n").valid_fraction.values,
                                  open_group(ref, "utm30n").valid_fraction.values)
    assert not list(out.rglob("*.partial"))



def test_url_out_is_refused_before_anything_is_written(ckpt_xxs, tmp_path):
    """``--out s3://bucket/x.zarr`` is not a local path: pathlib would fold it into a local
    folder ``s3:/bucket/x.zarr`` and the run would report success on the wrong storage."""
    res = _cli("--aoi", "liverpool", "--out", "s3://bucket/x.zarr", "--checkpoint", str(ckpt_xxs),
               cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and "s3://bucket/x.zarr" in lines[0] and "local" in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []
