"""Fixtures of the model tests: the bundled reference checkpoint/outputs and the baseline impl."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REF_DIR = Path(__file__).resolve().parents[1] / "data" / "reference"
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_moemae.py"


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    return REF_DIR


@pytest.fixture(scope="session")
def ref_io() -> dict:
    return torch.load(REF_DIR / "ref_S_seed0_io.pt", weights_only=True)


@pytest.fixture(scope="session")
def ref_meta(ref_io) -> dict:
    return {k: ref_io[f"meta_{k}"] for k in ("week", "hour", "lat", "lon")}


@pytest.fixture(scope="session")
def reference():
    """benchmarks/reference_moemae.py as a module (the reference-style baseline)."""
    spec = importlib.util.spec_from_file_location("reference_moemae", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("reference_moemae", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def ref_model_S():
    from geomoe.model import load_checkpoint

    return load_checkpoint(REF_DIR / "ref_S_seed0.pth")


@pytest.fixture(autouse=True)
def _single_thread():
    """The model tests use tiny batches: one thread is as fast and does not stall on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
