"""Errors users see. Each message names the problem and the fix; the CLI prints them without a traceback."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType


class GeomoeError(Exception):
    """Base of every error geomoe raises on purpose for bad input or state."""


class AOIError(GeomoeError, ValueError):
    """The area of interest is not usable GeoJSON (or cannot be reprojected)."""


class CatalogError(GeomoeError):
    """A STAC catalog or API cannot be opened or searched."""


class NoScenesError(GeomoeError):
    """A search returned nothing: not a crash, a clear "no scenes" result."""


class MissingBandError(GeomoeError, KeyError):
    """An item lacks one of the 7 SR bands the model needs."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RasterReadError(GeomoeError):
    """A raster asset is corrupt, truncated or unreadable."""


class CheckpointError(GeomoeError):
    """A checkpoint is unsafe, corrupt, or does not match the model."""


class CubeError(GeomoeError):
    """An output cube cannot be written or resumed (locked, other model, unwritable)."""


class MissingExtraError(GeomoeError, ImportError):
    """An optional feature's packages are not installed; the message names the pip extra."""


def require_extra(modules: str | Sequence[str], extra: str, feature: str) -> list[ModuleType]:
    """Import the modules an optional `feature` needs, or raise MissingExtraError naming `extra`.

    Called where the feature starts, before anything is written, so a core install fails with
    ``pip install 'geomoe[extra]'`` rather than a bare ImportError half-way through.
    """
    out = []
    for name in [modules] if isinstance(modules, str) else modules:
        try:
            out.append(importlib.import_module(name))
        except ImportError as exc:
            raise MissingExtraError(
                f"{feature} needs the optional package {exc.name or name!r}, which is not "
                f"installed: pip install 'geomoe[{extra}]'") from None
    return out


class OutputExistsError(GeomoeError):
    """An output path holds something geomoe did not write: it is never replaced."""
