"""Shared fixtures: where the real data lives. Area-specific fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The workplace's real data, beside the checkout (CI has it at ../shared/data).
SHARED_DATA = Path(os.environ.get("GEOMOE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``), give each worker its own share of this process's cores.

    geomoe runs at most as many torch threads as the cores it may use (its affinity mask), so
    N workers on N cores each compute on one core instead of all oversubscribing every core.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        i = int(worker.removeprefix("gw"))
        os.sched_setaffinity(0, cores[i::count] if count < len(cores) else [cores[i % len(cores)]])


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``pytest -n auto``: one worker per core this process may use (affinity mask, cgroup
    quota), the same count geomoe's own thread rule uses; xdist's default counts the machine."""
    from geomoe.device import cores_available

    return cores_available()


def seeded_checkpoint(path: Path, size: str = "XXS", seed: int = 0) -> Path:
    """A real geomoe checkpoint of randomly initialised weights (seeded): honest test input."""
    import torch

    from geomoe.model import build_model, save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(build_model(size), path)
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set GEOMOE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bundled_catalog() -> Path:
    return REPO / "catalogs" / "catalog.json"

pytest_plugins = ["tests.conftest_prefect"]  # session Prefect server fixture (real server on 127.0.0.1)
