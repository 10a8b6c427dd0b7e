"""Fixtures for cube / embed tests: a real (seeded, explicitly created) checkpoint and AOIs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import seeded_checkpoint

LIVERPOOL_ITEM = "LC08_L2SP_204023_20200927_20201006_02_T1"


@pytest.fixture(scope="session")
def ckpt_xxs(tmp_path_factory) -> Path:
    """A real geomoe checkpoint (XXS, seed 0): honest test input, not the demo weights."""
    return seeded_checkpoint(tmp_path_factory.mktemp("ckpt") / "xxs-seed0.safetensors", seed=0)


@pytest.fixture(scope="session")
def ckpt_xxs_other(tmp_path_factory) -> Path:
    """A second, different model (seed 1): a store written by it must not be resumed by ckpt_xxs."""
    return seeded_checkpoint(tmp_path_factory.mktemp("ckpt1") / "xxs-seed1.safetensors", seed=1)


@pytest.fixture(scope="session")
def liverpool_aoi(repo_root) -> Path:
    return repo_root / "catalogs" / "aois" / "liverpool.geojson"


@pytest.fixture(scope="session")
def liverpool_scene_aoi(repo_root) -> str:
    """The whole Liverpool crop (coast, estuary, city): its item's footprint as inline GeoJSON."""
    item = json.loads((repo_root / "catalogs" / "landsat-scenes" / LIVERPOOL_ITEM / f"{LIVERPOOL_ITEM}.json").read_text())
    return json.dumps(item["geometry"])


@pytest.fixture(scope="session")
def portugal_aoi() -> str:
    """A few BigEarthNet-Landsat patches (item grid -> chip-table group)."""
    return json.dumps({"type": "Polygon", "coordinates": [[[-9.5, 36.5], [-6.5, 36.5], [-6.5, 40.5],
                                                           [-9.5, 40.5], [-9.5, 36.5]]]})


@pytest.fixture(scope="session")
def liverpool_reference(tmp_path_factory, liverpool_aoi, ckpt_xxs):
    """One uninterrupted Liverpool run (tile_size=2 -> 6 tiles): the reference cube."""
    from geomoe.embed.pipeline import embed_region

    out = tmp_path_factory.mktemp("ref") / "liverpool.zarr"
    summary = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2)
    return out, summary


def copy_liverpool_catalog(repo_root: Path, tmp_path: Path, name: str = "copy") -> tuple[Path, Path]:
    """A static collection of the Liverpool scene copied under ``tmp_path/cat`` (absolute asset
    hrefs into the copy), for tests that damage its files: (collection.json, scene folder)."""
    import pystac

    dst = tmp_path / "cat" / LIVERPOOL_ITEM
    shutil.copytree(repo_root / "catalogs" / "landsat-scenes" / LIVERPOOL_ITEM, dst)
    item = pystac.Item.from_file(str(dst / f"{LIVERPOOL_ITEM}.json"))
    coll = pystac.Collection(id=name, description="a copy", license="CC0-1.0",
                             extent=pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                                  pystac.TemporalExtent([[None, None]])))
    item.make_asset_hrefs_absolute()
    coll.add_item(item)
    coll.normalize_hrefs(str(tmp_path / "cat"))
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "cat" / "collection.json", dst
