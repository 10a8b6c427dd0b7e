"""The cube as an analyst opens it: plain ``xr.open_zarr(path, group=g)``, no warning, CRS and
coordinates decoded, only analyst data in the dataset, provenance on every group, and a
round trip through netCDF that keeps every attribute. Also the worker side of provenance:
the cube names its checkpoint by file name and sha256, workers bring the file themselves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import rioxarray  # noqa: F401  (the .rio accessor, as an analyst imports it)
import xarray as xr
import zarr

import geomoe
from geomoe.cube.conventions import netcdf_attrs
from geomoe.cube.store import CubeMismatchError, open_group
from geomoe.embed.pipeline import EmbedRequest, embed_region, reopen

from .test_crash import RUN

GROUPS = ("utm30n", "chips")


@pytest.fixture(scope="module")
def europe(tmp_path_factory, repo_root, ckpt_xxs):
    """A finished cube with a grid group (Liverpool) and the chip-table group (BigEarthNet)."""
    out = tmp_path_factory.mktemp("analyst") / "europe.zarr"
    aoi = str(repo_root / "catalogs" / "aois" / "europe.geojson")
    embed_region(aoi, checkpoint=ckpt_xxs, out=out, batch_size=64)
    return out, aoi


def _plain_open(path, group):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the consolidated-metadata fallback warns
        return xr.open_zarr(str(path), group=group)


def test_plain_open_no_warning_crs_and_coords(europe):
    out, _ = europe
    ds = _plain_open(out, "utm30n")
    assert ds.rio.crs.to_epsg() == 32630
    assert {"x", "y", "lat", "lon", "time", "spatial_ref"} <= set(ds.coords)
    assert set(ds.data_vars) == {"embedding", "valid_fraction"}  # no bookkeeping
    assert set(ds.dims) == {"time", "y", "x", "dim"}
    assert json.loads(ds.attrs["solar_days"]) == ["2020-09-27"]
    # the same values geomoe's own reader gives
    ref = open_group(out, "utm30n")
    np.testing.assert_array_equal(ds.embedding.values, ref.embedding.values)
    assert np.isfinite(ds.embedding.values).all(-1).sum() > 0
    chips = _plain_open(out, "chips")
    assert set(chips.data_vars) == {"embedding", "valid_fraction"}
    assert {"item_id", "labels", "lat", "lon", "time", "x", "y"} <= set(chips.coords)
    assert set(chips.dims) == {"chip", "dim"}


def test_provenance_on_every_group_checkpoint_by_name(europe, ckpt_xxs):
    from geomoe.model import checkpoint_sha256

    out, _ = europe
    sha = checkpoint_sha256(ckpt_xxs)
    for g in GROUPS:
        a = _plain_open(out, g).attrs
        model = json.loads(a["geomoe:model"])
        assert model["checkpoint"] == ckpt_xxs.name and model["checkpoint_sha256"] == sha
        assert model["size"] == "XXS" and model["pooling"] == "mean"
        assert len(json.loads(a["geomoe:normalisation"])["mean"]) == 7
        assert json.loads(a["geomoe:query"])["catalog"] == "bundled"
        assert json.loads(a["geomoe:chips"])["pixels"] == 40
        assert a["geomoe:version"] == geomoe.__version__
    root = zarr.open_group(str(out), mode="r").attrs.asdict()
    assert root["geomoe:model"]["checkpoint"] == ckpt_xxs.name
    # no metadata file of the store names the folder the checkpoint was in
    where = str(ckpt_xxs.parent)
    assert not [p for p in out.rglob("zarr.json") if where in p.read_text()]
    stac = out.with_name(out.name + ".stac")
    assert not [p for p in stac.iterdir() if where in p.read_text()]
    item = json.loads((stac / f"{GROUPS[0]}.json").read_text())
    assert item["properties"]["emb:runtime_parameters"]["checkpoint"] == ckpt_xxs.name


@pytest.mark.parametrize("group", GROUPS)
def test_netcdf_round_trip_keeps_every_attribute(europe, group, tmp_path):
    out, _ = europe
    ds = xr.open_zarr(str(out), group=group, consolidated=False)  # netCDF only (see above for the open)
    # the Zarr conventions' objects (zarr_conventions, geoemb:chip_layout) are JSON-encoded for
    # netCDF, which holds no objects (docs/conventions.md)
    ds.attrs = netcdf_attrs(ds.attrs)
    assert json.loads(ds.attrs["zarr_conventions"])[0]["name"] == "geoemb:"
    nc = tmp_path / f"{group}.nc"
    ds.to_netcdf(nc)  # the engine xarray picks from what is installed
    with xr.open_dataset(nc) as back:
        assert back.attrs.keys() == ds.attrs.keys() >= {"geomoe:model", "geomoe:query", "geomoe:normalisation"}
        for k, v in ds.attrs.items():
            assert back.attrs[k] == v, k
        assert set(back.variables) == set(ds.variables)
        for name, var in ds.variables.items():
            assert back[name].attrs == var.attrs, name
        np.testing.assert_array_equal(back.embedding.values, ds.embedding.values)
        np.testing.assert_array_equal(back.valid_fraction.values, ds.valid_fraction.values)
        if group == "utm30n":
            assert back.rio.crs.to_epsg() == 32630
        else:
            assert back.item_id.values.tolist() == ds.item_id.values.tolist()


def test_consolidated_metadata_only_while_the_last_run_finished(liverpool_aoi, ckpt_xxs, tmp_path):
    """A killed run leaves no consolidated metadata (the plain open warns: the cube is not
    finished); the rerun that finishes it writes it; a new run drops it before any tile."""
    out = tmp_path / "k.zarr"
    env = {**os.environ, "GEOMOE_FAULT": "after_tile_write:2"}
    proc = subprocess.run([sys.executable, "-c", RUN, str(liverpool_aoi), str(ckpt_xxs), str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "consolidated_metadata" not in json.loads((out / "zarr.json").read_text())
    with pytest.warns(RuntimeWarning, match="consolidated"):
        xr.open_zarr(str(out), group="utm30n")
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2)
    assert s.tiles_already_done == 2 and s.tiles_written == 4
    ds = _plain_open(out, "utm30n")
    assert ds.rio.crs.to_epsg() == 32630 and np.isfinite(ds.valid_fraction.values).sum() == 20
    zarr.open_consolidated(str(out))  # really consolidated, not a silent fallback
    # a new run starts: the previous run's consolidated metadata goes before any tile is written
    prep = reopen(EmbedRequest(aoi=str(liverpool_aoi), out=str(out), checkpoint=str(ckpt_xxs), tile_size=2))
    prep.cube.new_run()
    assert "consolidated_metadata" not in json.loads((out / "zarr.json").read_text())
    # ... and a resumed run that finishes writes it again, groups and bookkeeping included
    embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2)
    meta = json.loads((out / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert {"utm30n", "utm30n/embedding", "_geomoe/utm30n/tile_done"} <= set(meta)
    assert _plain_open(out, "utm30n").rio.crs.to_epsg() == 32630


def test_worker_brings_its_checkpoint_and_it_must_match(europe, ckpt_xxs, ckpt_xxs_other, tmp_path):
    """Workers (geomoe/flows/embed_region.py tile tasks) load the checkpoint named in their request:
    the cube records no path. Any copy of the same file works; another file is refused."""
    out, aoi = europe
    moved = tmp_path / "elsewhere" / "renamed.safetensors"
    moved.parent.mkdir()
    shutil.copy(ckpt_xxs, moved)
    prep = reopen(EmbedRequest(aoi=aoi, out=str(out), checkpoint=str(moved)))
    assert prep.checkpoint == moved
    with pytest.raises(CubeMismatchError, match=r"not the one the cube .* was made with"):
        reopen(EmbedRequest(aoi=aoi, out=str(out), checkpoint=str(ckpt_xxs_other)))
