"""Dependencies: every core dependency is used by the library; optional features name their extra.

The optional packages are made absent in a subprocess the way Python itself reports a missing
module (``sys.modules[name] = None`` makes ``import name`` raise ImportError), so the core
install is exercised without building a second environment.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]

#: Distribution name -> top-level module it installs.
IMPORT_NAME = {
    "torch": "torch", "numpy": "numpy", "xarray": "xarray", "dask": "dask", "zarr": "zarr",
    "rioxarray": "rioxarray", "rasterio": "rasterio", "pyproj": "pyproj", "shapely": "shapely",
    "pystac": "pystac", "pystac-client": "pystac_client", "safetensors": "safetensors",
    "matplotlib": "matplotlib", "scikit-learn": "sklearn", "odc-stac": "odc",
    "stackstac": "stackstac", "prefect": "prefect", "prefect-dask": "prefect_dask",
    "planetary-computer": "planetary_computer", "geopandas": "geopandas", "pyarrow": "pyarrow",
    "faiss-cpu": "faiss", "duckdb": "duckdb",
}
#: Modules that only the optional extras install (blocked below).
OPTIONAL = ["sklearn", "odc", "prefect", "prefect_dask", "distributed", "stackstac",
            "planetary_computer"]


def _dist(req: str) -> str:
    return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower()


def _library_imports() -> set[str]:
    """Top-level modules imported anywhere in the library (the Prefect flows excluded)."""
    out = set()
    for f in (REPO / "geomoe").rglob("*.py"):
        if "flows" in f.relative_to(REPO / "geomoe").parts:
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module.split(".")[0])
    return out


def test_every_core_dependency_is_used_by_the_library():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    unknown = [d for d in deps if _dist(d) not in IMPORT_NAME]
    assert not unknown, f"add the import name of {unknown} to IMPORT_NAME"
    used = _library_imports()
    unused = [d for d in deps if IMPORT_NAME[_dist(d)] not in used]
    assert not unused, f"core dependencies the library never imports (move to an extra): {unused}"
    assert not [d for d in deps if IMPORT_NAME[_dist(d)] in OPTIONAL]


def test_test_extra_pulls_every_optional_feature():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"prefect", "probe", "odc", "bench", "pc"} <= set(extras)
    assert any(_dist(r) == "geomoe" and all(e in r for e in ("prefect", "probe", "odc"))
               for r in extras["test"])


SCRIPT = """
import importlib, json, pkgutil, sys
for name in {optional!r}:
    sys.modules[name] = None  # as if not installed
import geomoe
mods = [m.name for m in pkgutil.walk_packages(geomoe.__path__, "geomoe.")
        if not m.name.startswith("geomoe.flows") and not m.name.endswith("__main__")]
for m in mods:
    importlib.import_module(m)
from geomoe.cli import build_parser, main
from geomoe.errors import MissingExtraError
build_parser()
out = {{"modules": len(mods)}}
try:
    from geomoe.evaluate.probe import run_probe
    run_probe(report={report!r})
except MissingExtraError as exc:
    out["probe"] = str(exc)
try:
    from geomoe.chips.assets import load_xarray
    load_xarray([])
except MissingExtraError as exc:
    out["odc"] = str(exc)
out["cli_rc"] = main(["embed-region", "--aoi", "liverpool", "--dask-workers", "2",
                      "--out", {cube!r}])
print(json.dumps(out))
"""


def test_core_install_imports_and_optional_features_name_their_extra(tmp_path):
    script = SCRIPT.format(optional=OPTIONAL, report=str(tmp_path / "r.json"),
                           cube=str(tmp_path / "c.zarr"))
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["modules"] > 20
    assert "pip install 'geomoe[probe]'" in out["probe"]
    assert "pip install 'geomoe[odc]'" in out["odc"]
    assert out["cli_rc"] == 1
    assert "--dask" in res.stderr and "pip install 'geomoe[prefect]'" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # checks came before any write
