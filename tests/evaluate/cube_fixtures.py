"""Small real cubes for the export / similarity tests (imported by their modules, so no
conftest is shared with other cube-analysis tests): the Liverpool scene on the fixed grid and
a few BigEarthNet-Landsat patches (chip-table group), embedded once per session with a seeded
XXS checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, seeded_checkpoint

LIVERPOOL_ITEM = "LC08_L2SP_204023_20200927_20201006_02_T1"
PORTUGAL = {"type": "Polygon", "coordinates": [[[-9.5, 36.5], [-6.5, 36.5], [-6.5, 40.5],
                                                [-9.5, 40.5], [-9.5, 36.5]]]}


@pytest.fixture(scope="session")
def analysis_ckpt(tmp_path_factory) -> Path:
    return seeded_checkpoint(tmp_path_factory.mktemp("an-ckpt") / "xxs-seed0.safetensors", seed=0)


@pytest.fixture(scope="session")
def liverpool_grid_cube(tmp_path_factory, analysis_ckpt) -> Path:
    """20 chips of the real Liverpool scene (utm30n, one time slice, 6 tiles of 2 x 2)."""
    from geomoe.embed.pipeline import embed_region

    out = tmp_path_factory.mktemp("an-liv") / "liverpool.zarr"
    embed_region(str(REPO / "catalogs" / "aois" / "liverpool.geojson"), checkpoint=analysis_ckpt,
                 out=out, batch_size=8, tile_size=2)
    return out


@pytest.fixture(scope="session")
def portugal_table_cube(tmp_path_factory, analysis_ckpt) -> Path:
    """31 BigEarthNet-Landsat patches (group ``chips``): 29 embedded, 2 skipped (fill/cloud)."""
    from geomoe.embed.pipeline import embed_region

    out = tmp_path_factory.mktemp("an-pt") / "portugal.zarr"
    embed_region(json.dumps(PORTUGAL), checkpoint=analysis_ckpt, out=out, batch_size=16)
    return out


@pytest.fixture(scope="session")
def liverpool_two_dates_cube(tmp_path_factory, analysis_ckpt) -> Path:
    """The Liverpool scene at two dates: the real item and a copy dated one day later (same
    pixels; the model's week/hour inputs differ), so the grid group has two time slices."""
    import pystac

    from geomoe.embed.pipeline import embed_region
    from tests.cube.conftest import copy_liverpool_catalog

    tmp = tmp_path_factory.mktemp("an-two-dates")
    coll_path, _ = copy_liverpool_catalog(REPO, tmp, name="two-dates")
    coll = pystac.Collection.from_file(str(coll_path))
    (item,) = list(coll.get_items())
    later = item.clone()
    later.id = item.id + "-next-day"
    later.datetime = item.datetime.replace(day=item.datetime.day + 1)
    later.make_asset_hrefs_absolute()
    coll.add_item(later)
    coll.normalize_hrefs(str(tmp / "cat"))
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    out = tmp / "two-dates.zarr"
    embed_region(str(REPO / "catalogs" / "aois" / "liverpool.geojson"), catalog=str(coll_path),
                 checkpoint=analysis_ckpt, out=out, batch_size=8, tile_size=2)
    return out
