"""Small real cubes for the export / similarity tests (imported by their modules, so no
conftest is shared with other cube-analysis tests): the Liverpool scene on the fixed grid and
a few BigEarthNet-Landsat patches (chip-table group), embedded once per session with a seeded
XXS checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, seeded_checkpoint

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
