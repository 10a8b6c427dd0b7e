"""Conventions that let other tools find a cube's embeddings: the geo-embeddings, proj: and
spatial: Zarr conventions on each group (beside the CF spatial_ref), and the STAC Collection,
group Items and MLM model Item beside the store. No JSON-schema package is available offline,
so the exact field names and values of the convention texts are tested (docs/conventions.md)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
import zarr

from geomoe.cube.conventions import (GEOEMB_CONVENTION, LANDSAT_C2_L2, PROJ_CONVENTION, SPATIAL_CONVENTION,
                                     group_conventions, netcdf_attrs)

GEOEMB_REQUIRED = ("geoemb:type", "geoemb:dimensions", "geoemb:model", "geoemb:source_data",
                   "geoemb:data_type", "geoemb:chip_layout")


@pytest.fixture(scope="module")
def cube(liverpool_reference):
    out, _ = liverpool_reference
    return out


def _attrs(out: Path, group: str) -> dict:
    return json.loads((out / group / "zarr.json").read_text())["attributes"]


def test_grid_group_has_the_zarr_conventions(cube):
    a = _attrs(cube, "utm30n")
    assert a["zarr_conventions"] == [GEOEMB_CONVENTION, PROJ_CONVENTION, SPATIAL_CONVENTION]
    assert [c["uuid"] for c in a["zarr_conventions"]] == [
        "61c12cc5-0e28-4056-999a-480cf3fb7e4c", "f17cb550-5864-4468-aeb7-f3180cfb622f",
        "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4"]
    assert set(GEOEMB_REQUIRED) <= set(a)
    assert (a["geoemb:type"], a["geoemb:dimensions"], a["geoemb:data_type"]) == ("chip", 108, "float32")
    assert a["geoemb:source_data"] == [LANDSAT_C2_L2]  # the bundled catalog has no public URL
    assert a["geoemb:chip_layout"] == {"layout_type": "regular_grid", "chip_size": [40, 40],
                                       "stride": [40, 40], "grid_id": "geomoe-fixed-1200m"}
    assert a["geoemb:spatial_layout"] == "utm_zones" and a["geoemb:gsd"] == 30.0
    # proj: and spatial: agree with the CF spatial_ref and the coordinates rioxarray reads
    ds = xr.open_zarr(str(cube), group="utm30n", consolidated=False)
    assert a["proj:code"] == "EPSG:32630" == ds.rio.crs.to_string()
    assert a["spatial:dimensions"] == ["y", "x"] and a["spatial:registration"] == "pixel"
    assert a["spatial:shape"] == [ds.sizes["y"], ds.sizes["x"]]
    assert a["spatial:transform"] == pytest.approx(list(ds.rio.transform())[:6])
    assert a["spatial:bbox"] == pytest.approx(list(ds.rio.bounds()))
    assert "spatial_ref" in ds.coords and ds.embedding.attrs.get("grid_mapping", "spatial_ref") == "spatial_ref"
    # geoemb:model resolves, from the group's metadata file, to the MLM Item beside the store
    model = Path(urljoin((cube / "utm30n" / "zarr.json").as_uri(), a["geoemb:model"])[len("file://"):])
    assert model == cube.with_name(cube.name + ".stac") / "model.json" and model.is_file()
    # readers that go through zarr see the same objects
    assert zarr.open_group(str(cube), path="utm30n", mode="r").attrs["geoemb:chip_layout"]["chip_size"] == [40, 40]


def test_table_group_has_geoemb_only():
    spec = types.SimpleNamespace(layout="table")
    a = group_conventions(spec, dim=144, dtype="float16",
                          attrs={"geomoe:query": {"catalog": "https://example.org/stac/v1"},
                                 "geomoe:version": "1.0"}, store_name="c.zarr")
    assert a["zarr_conventions"] == [GEOEMB_CONVENTION]
    assert not [k for k in a if k.startswith(("proj:", "spatial:"))] and "geoemb:spatial_layout" not in a
    assert a["geoemb:chip_layout"] == {"layout_type": "irregular", "chip_size": [40, 40]}
    assert a["geoemb:data_type"] == "float16" and a["geoemb:model"] == "../../c.zarr.stac/model.json"
    assert a["geoemb:source_data"] == [LANDSAT_C2_L2, "https://example.org/stac/v1/collections/landsat-c2-l2"]
    nc = netcdf_attrs(a)  # netCDF holds no objects (netCDF3 no string lists): JSON text there
    assert json.loads(nc["zarr_conventions"]) == a["zarr_conventions"]
    assert json.loads(nc["geoemb:chip_layout"]) == a["geoemb:chip_layout"]
    assert json.loads(nc["geoemb:source_data"]) == a["geoemb:source_data"]
    assert nc["geoemb:dimensions"] == 144 and nc["geoemb:type"] == "chip"


def test_stac_collection_group_items_and_model(cube, ckpt_xxs):
    from geomoe.model import checkpoint_sha256, load_checkpoint

    stac = cube.with_name(cube.name + ".stac")
    assert sorted(p.name for p in stac.iterdir()) == ["collection.json", "model.json", "utm30n.json"]
    coll = json.loads((stac / "collection.json").read_text())
    assert coll["type"] == "Collection" and coll["id"] == "liverpool"
    assert "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json" in coll["stac_extensions"]
    assert (coll["emb:type"], coll["emb:dimensions"], coll["data_type"]) == ("chip", 108, "float32")
    assert coll["emb:chip_layout"]["layout_type"] == "regular_grid" and coll["gsd"] == 1200.0
    assert coll["item_assets"]["embeddings"]["roles"] == ["data"]
    rels = {lk["rel"]: lk["href"] for lk in coll["links"]}
    assert rels["emb:model"] == "./model.json" and rels["emb:source-data"] == LANDSAT_C2_L2
    assert [lk["href"] for lk in coll["links"] if lk["rel"] == "item"] == ["./utm30n.json"]

    item = json.loads((stac / "utm30n.json").read_text())
    assert item["collection"] == "liverpool" and list(item["assets"]) == ["embeddings"]
    assert item["properties"]["proj:code"] == "EPSG:32630"
    asset = item["assets"]["embeddings"]
    ds = xr.open_zarr(str((stac / asset["href"]).resolve()), **{k: v for k, v in asset["xarray:open_kwargs"].items()
                                                                 if k != "engine"})
    assert ds.sizes["dim"] == 108 and np.isfinite(ds.embedding.values).any()
    assert any(lk["rel"] == "emb:model" and lk["href"] == "./model.json" for lk in item["links"])

    mlm = json.loads((stac / "model.json").read_text())
    p = mlm["properties"]
    assert "https://stac-extensions.github.io/mlm/v1.5.1/schema.json" in mlm["stac_extensions"]
    assert p["mlm:name"] == "geomoe-moe-mae-XXS" and "Mixture of Experts" in p["mlm:architecture"]
    assert p["mlm:framework"] == "PyTorch" and p["mlm:pretrained"] is True
    model = load_checkpoint(ckpt_xxs)
    assert p["mlm:total_parameters"] == sum(t.numel() for t in model.parameters())
    chips = p["mlm:input"][0]
    assert chips["bands"] == ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]
    assert chips["input"] == {"shape": [-1, 7, 40, 40], "dim_order": ["batch", "channel", "height", "width"],
                              "data_type": "float32"}
    norm = model.normalisation.to_dict()
    assert [v["mean"] for v in chips["value_scaling"]] == pytest.approx(list(norm["mean"]))
    assert [v["stddev"] for v in chips["value_scaling"]] == pytest.approx(list(norm["std"]))
    assert {v["type"] for v in chips["value_scaling"]} == {"z-score"}
    assert [i["name"] for i in p["mlm:input"][1:]] == ["week", "hour", "lat", "lon"]
    assert p["mlm:output"][0]["result"]["shape"] == [-1, 108]
    asset = mlm["assets"]["model"]
    assert "mlm:model" in asset["roles"] and asset["file:checksum"] == "1220" + checkpoint_sha256(ckpt_xxs)
    assert str(ckpt_xxs.parent) not in (stac / "model.json").read_text()  # named, not located


def test_a_killed_stac_write_does_not_block_the_next_run(cube, tmp_path):
    """geomoe's own temp file of a write killed mid-save is not someone else's file."""
    from geomoe.cube.stac_item import check_cube_item_out

    out = tmp_path / cube.name
    (tmp_path / f"{cube.name}.stac").mkdir()
    for p in cube.with_name(cube.name + ".stac").iterdir():
        (tmp_path / f"{cube.name}.stac" / p.name).write_bytes(p.read_bytes())
    (tmp_path / f"{cube.name}.stac" / ".model.json.tmp-999999999").write_text('{"partial')
    check_cube_item_out(out)  # no error
