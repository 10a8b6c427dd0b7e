"""Fixtures of the probe tests: the bundled labelled sample, embedded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ben_data():
    """The bundled BigEarthNet-Landsat sample chipped once (195 usable labelled patches)."""
    from geomoe.probe import load_bigearthnet

    return load_bigearthnet()


@pytest.fixture(scope="session")
def xxs_checkpoint(tmp_path_factory):
    """A real geomoe checkpoint of size XXS (random weights, seed 1)."""
    import torch

    from geomoe.model import build_model, save_checkpoint

    torch.manual_seed(1)
    return save_checkpoint(build_model("XXS"), tmp_path_factory.mktemp("ckpt") / "xxs.safetensors")
