"""geomoe's version: the installed distribution's, or ``0.0.0+unknown`` in a source tree that
was never installed. Its own module, so provenance writers need not import the package root."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geomoe")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
