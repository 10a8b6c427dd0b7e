"""Fixtures of the training tests: a small real subset of the bundled catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EUROPE = REPO / "catalogs" / "aois" / "europe.geojson"


@pytest.fixture(scope="session")
def europe_items():
    """All items of the bundled catalog inside the Europe AOI (200 patches + Liverpool)."""
    from geomoe.stac.search import search

    return search(None, str(EUROPE))


@pytest.fixture(scope="session")
def europe_aoi():
    from geomoe.stac.aoi import load_aoi

    return load_aoi(str(EUROPE))


@pytest.fixture(scope="session")
def small_items(europe_items):
    """24 BigEarthNet patches (one chip each): enough for a few XXS steps in seconds."""
    ben = [it for it in europe_items if it.properties.get("geomoe:chip_grid") == "item"]
    return ben[:24]
