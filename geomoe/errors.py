"""Errors users see. Each message names the problem and the fix; the CLI prints them without a traceback."""


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
