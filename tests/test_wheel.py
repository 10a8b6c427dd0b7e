"""An installed wheel works outside the checkout: bundled catalog, named AOIs and the demo
checkpoint come from the package, not from the source tree.

The wheel is built from a copy of the sources (nothing written into the checkout) and installed
into a fresh venv. The venv reuses the test environment's dependencies through a plain path
line in a .pth file: that adds the folder to sys.path without processing the .pth files in it,
so the editable install of the checkout (``__editable__.geomoe-*.pth`` and its finder) stays
inactive there, and the venv's own site-packages (holding the wheel) comes first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: What the wheel must carry for `geomoe embed-region --aoi europe` to work anywhere.
SHIPPED = [
    "geomoe/data/catalogs/catalog.json",
    "geomoe/data/catalogs/NOTICE",
    "geomoe/data/catalogs/LICENSES/Apache-2.0.txt",
    "geomoe/data/catalogs/aois/europe.geojson",
    "geomoe/data/catalogs/aois/liverpool.geojson",
    "geomoe/data/catalogs/landsat-scenes/collection.json",
    "geomoe/data/catalogs/bigearthnet-landsat-sample/collection.json",
    "geomoe/data/checkpoints/geomoe-demo-S.safetensors",
    "geomoe/data/checkpoints/README.md",
]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "geomoe", src / "geomoe",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(dist), str(src)],
         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (whl,) = dist.glob("geomoe-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    py = root / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     env=_clean_env()).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_geomoe_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], env={**_clean_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return root


def _clean_env() -> dict[str, str]:
    """The environment without anything that would point Python back at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "GEOMOE_BUNDLED_CATALOG", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_wheel_ships_catalog_aois_and_demo_checkpoint(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED if n not in names]
    assert not missing, f"not in {wheel.name}: {missing}"
    assert sum(n.startswith("geomoe/data/catalogs/bigearthnet-landsat-sample/") for n in names) > 200


def test_installed_wheel_embeds_a_named_aoi_outside_the_checkout(venv, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    probe = _run([str(venv / "bin" / "python"), "-c",
                  "import json, sys, geomoe, geomoe.resources as r, geomoe.stac.search as c; "
                  "print(json.dumps([geomoe.__file__, str(r.demo_checkpoint()), "
                  "str(c.BUNDLED_CATALOG), r.aoi_names(), "
                  "[m for m in sys.modules if 'editable' in m]]))"],
                 cwd=elsewhere, env=env)
    pkg, ckpt, catalog, names, editable = json.loads(probe.stdout)
    for p in (pkg, ckpt, catalog):
        assert Path(p).resolve().is_relative_to(venv.resolve()), p
        assert not Path(p).resolve().is_relative_to(REPO), p
    assert {"europe", "liverpool"} <= set(names)
    assert editable == []

    search = _run([str(venv / "bin" / "geomoe"), "catalog", "search", "--aoi", "liverpool"],
                  cwd=elsewhere, env=env)
    assert search.stdout.split() and "LC08" in search.stdout

    res = _run([str(venv / "bin" / "geomoe"), "embed-region", "--aoi", "liverpool",
                "--out", "c.zarr", "--json", "--quiet"], cwd=elsewhere, env=env)
    summary = json.loads(res.stdout)
    assert summary["chips_embedded"] > 0
    assert Path(summary["checkpoint"]).resolve() == Path(ckpt).resolve()
    assert (elsewhere / "c.zarr" / "zarr.json").is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["c.zarr", "c.zarr.stac"]
