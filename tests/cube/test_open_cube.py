"""``geomoe.open_cube``: the public reader of a cube returns what its docstring documents, on
a real Liverpool cube (XXS seeded checkpoint), writes nothing and needs no torch."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import geomoe
from geomoe.cube.store import open_group, tile_done_path
from geomoe.cube.reader import CubeView
from geomoe.errors import CubeError

from .conftest import LIVERPOOL_ITEM


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_open_cube_documented_view(liverpool_reference, ckpt_xxs):
    out, summary = liverpool_reference
    before = _tree_digest(out)
    cube = geomoe.open_cube(out)
    assert isinstance(cube, CubeView) and cube.path == Path(out)
    assert cube.groups == ("utm30n",) and list(cube) == ["utm30n"] and len(cube) == 1

    # group name -> lazy Dataset, what the cube module's reader gives (CRS decoded)
    ds = cube["utm30n"]
    assert cube.group("utm30n") is ds and dict(cube.items()) == {"utm30n": ds}
    assert set(ds.data_vars) == {"embedding", "valid_fraction"}
    assert ds.embedding.dims == ("time", "y", "x", "dim")
    assert ds.sizes["dim"] == cube.attrs["geomoe:identity"]["embed_dim"] == geomoe.load_model(ckpt_xxs).embed_dim
    assert ds.embedding.chunks is not None  # lazy: nothing loaded by opening
    assert ds.rio.crs.to_epsg() == 32630
    ref = open_group(out, "utm30n")
    np.testing.assert_array_equal(ds.embedding.values, ref.embedding.values)
    assert np.isfinite(ds.embedding.values).all(-1).sum() == summary.chips_embedded

    # provenance decoded from JSON (the groups carry it as JSON strings)
    model = cube.attrs["geomoe:model"]
    assert model["checkpoint_sha256"] == summary.checkpoint_sha256
    assert model["checkpoint"] == Path(ckpt_xxs).name and model["size"] == "XXS"
    assert json.loads(ds.attrs["geomoe:model"]) == model
    norm = cube.attrs["geomoe:normalisation"]
    assert len(norm["mean"]) == len(norm["std"]) == 7
    assert cube.attrs["geomoe:query"]["aoi"]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert cube.attrs["geomoe:chips"] == {"pixels": 40, "meters": 1200.0,
                                          "bands": [f"SR_B{i}" for i in range(1, 8)]}
    assert cube.attrs["geomoe:runs"] == len(cube.attrs["geomoe:run_log"]) >= 1
    assert not {"geomoe:groups", "geomoe:n_items", "geomoe:skeleton_complete"} & set(cube.attrs)

    assert [it["id"] for it in cube.stac_items()] == [LIVERPOOL_ITEM]
    assert cube.complete is True
    assert "utm30n" in repr(cube) and summary.checkpoint_sha256[:12] in repr(cube)
    with pytest.raises(KeyError, match="no group 'utm31n'.*utm30n"):
        cube["utm31n"]
    assert _tree_digest(out) == before  # opened and read: nothing written


def test_open_cube_sees_an_unfinished_cube(liverpool_reference, tmp_path):
    out = tmp_path / "partial.zarr"
    shutil.copytree(liverpool_reference[0], out)
    root = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    root.attrs["geomoe:runs"] = root.attrs["geomoe:runs"] + 1  # a run started and was killed
    done = zarr.open_array(str(out), path=tile_done_path("utm30n"), mode="r+")
    done[0, 0, 0] = 0  # ... before this (solar day, tile)'s completion record
    cube = geomoe.open_cube(out)
    assert cube.complete is False
    assert cube["utm30n"].embedding.shape[-1] > 0  # the finished tiles still read


def test_open_cube_refuses_what_is_not_a_cube(tmp_path):
    with pytest.raises(CubeError, match="does not exist"):
        geomoe.open_cube(tmp_path / "missing.zarr")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(CubeError, match="is a file"):
        geomoe.open_cube(tmp_path / "file.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CubeError, match="not a geomoe cube"):
        geomoe.open_cube(tmp_path / "empty")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(CubeError, match="not a complete geomoe cube"):
        geomoe.open_cube(tmp_path / "foreign.zarr")


def test_open_cube_needs_no_torch(liverpool_reference):
    code = ("import json, sys, geomoe\n"
            f"c = geomoe.open_cube({str(liverpool_reference[0])!r})\n"
            "v = float(c['utm30n'].valid_fraction.mean())\n"
            "print(json.dumps(['torch' in sys.modules, c.complete]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [False, True]
