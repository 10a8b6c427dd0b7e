"""Data shipped inside the package: the bundled STAC catalog, its named AOIs, the demo checkpoint.

They live under ``geomoe/data/`` and are found through :mod:`importlib.resources`, so an
installed wheel finds them from any working directory (the checkout's top-level ``catalogs/``
and ``checkpoints/`` are links to the same folders, for relative paths in commands).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from geomoe.errors import GeomoeError

#: File name of the demo checkpoint (see ``checkpoints/README.md``).
DEMO_CHECKPOINT_NAME = "geomoe-demo-S.safetensors"


def data_dir() -> Path:
    """``geomoe/data`` as a folder on disk (pip installs packages unzipped)."""
    root = files("geomoe").joinpath("data")
    if not isinstance(root, Path):
        raise GeomoeError(f"geomoe's bundled data is not a folder on disk ({root!r}): install "
                          "geomoe unzipped (pip install geomoe), not from a zip archive")
    return root


def catalogs_dir() -> Path:
    """The bundled catalog's folder (what ``scripts/build_catalog.py`` writes)."""
    return data_dir() / "catalogs"


def bundled_catalog() -> Path:
    """Root ``catalog.json`` of the bundled static STAC catalog."""
    return catalogs_dir() / "catalog.json"


def labelled_catalog() -> Path:
    """The bundled BigEarthNet-Landsat sample collection (labelled patches for the probe)."""
    return catalogs_dir() / "bigearthnet-landsat-sample" / "collection.json"


def demo_checkpoint() -> Path:
    """Where the shipped demo checkpoint lives (it may have been deleted: callers check)."""
    return data_dir() / "checkpoints" / DEMO_CHECKPOINT_NAME


def aoi_names() -> list[str]:
    """Names of the bundled AOIs (``europe``, ``liverpool``, ...), usable as ``--aoi NAME``."""
    return sorted(p.stem for p in (catalogs_dir() / "aois").glob("*.geojson"))


def bundled_aoi(name: str) -> Path | None:
    """The bundled AOI file called ``name`` (``europe`` -> ``.../aois/europe.geojson``), or None."""
    path = catalogs_dir() / "aois" / f"{name}.geojson"
    return path if name in aoi_names() and path.is_file() else None
