"""geomoe: Landsat Collection 2 archives to analysis-ready embedding cubes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geomoe")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
