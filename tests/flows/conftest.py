"""Fixtures for flow tests: a real seeded checkpoint, the embed-region flow module, and a
fresh Prefect server (no pools, no deployments) for tests of the documented first-time setup."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from tests.conftest import seeded_checkpoint
from tests.conftest_prefect import PrefectServer, running_server


@pytest.fixture
def fresh_prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server of its own, as a new user has it: no work pools, no deployments.

    The session ``prefect_server`` already holds what other tests created, so it cannot show
    whether the documented setup (docs/deploy.md) works from nothing."""
    with running_server(tmp_path_factory.mktemp("prefect-fresh")) as server:
        yield server


@pytest.fixture(scope="session")
def flow_ckpt(tmp_path_factory) -> Path:
    """A real geomoe checkpoint (XXS, seed 0) made explicitly for the test."""
    return seeded_checkpoint(tmp_path_factory.mktemp("flow-ckpt") / "xxs-seed0.safetensors", seed=0)


@pytest.fixture(scope="session")
def embed_flow_module():
    """The flow module as the CLI and prefect.yaml reach it: imported from the package."""
    import geomoe.flows.embed_region as mod

    return mod


@pytest.fixture(scope="session")
def single_process_cube(tmp_path_factory, repo_root, flow_ckpt):
    """The library (single-process) run every distributed run must equal."""
    from geomoe.embed.pipeline import embed_region

    out = tmp_path_factory.mktemp("single") / "liverpool.zarr"
    embed_region(str(repo_root / "catalogs" / "aois" / "liverpool.geojson"), checkpoint=flow_ckpt,
                 out=out, batch_size=8, tile_size=2)
    return out


def assert_same_cube(a: Path, b: Path, group: str = "utm30n") -> None:
    import numpy as np

    from geomoe.cube.store import open_group

    x, y = open_group(a, group), open_group(b, group)
    np.testing.assert_allclose(x.embedding.values, y.embedding.values, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(x.valid_fraction.values, y.valid_fraction.values)
    np.testing.assert_array_equal(x.lat.values, y.lat.values)
    assert x.rio.crs == y.rio.crs
