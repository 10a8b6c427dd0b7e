"""Every ```python block of README.md and of the user docs runs as written, warnings as errors.

The blocks run in a fresh interpreter each, in a folder laid out like the checkout after the
README's own first command (``catalogs/`` and ``checkpoints/`` beside ``cube.zarr``), so relative
paths resolve as they do for a reader. The cube is made by that command, taken from the README.
The blocks are independent of each other, so they run side by side: most of each one's time is
single-threaded imports, and the suite's time budget is tight.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the pages whose python blocks are run (README first; the docs pages that read the cube or
#: call the library)
PAGES = ["README.md", "docs/cube.md", "docs/catalogs-and-chips.md", "docs/model.md"]


def python_blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (REPO / page).read_text(), re.S | re.M)


BLOCKS = [(page, i, code) for page in PAGES for i, code in enumerate(python_blocks(page))]


def _embed_command() -> list[str]:
    """The README's `geomoe embed-region ...` (the setup line's last step), as argv."""
    readme = (REPO / "README.md").read_text()
    for block in re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M):
        for line in block.splitlines():
            for part in line.split("&&"):
                if part.strip().startswith("geomoe embed-region"):
                    return shlex.split(part)[1:]
    raise AssertionError("README.md has no `geomoe embed-region` command in a bash block")


@pytest.fixture(scope="module")
def readme_cwd(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("readme")
    for name in ("catalogs", "checkpoints"):
        (cwd / name).symlink_to(REPO / name, target_is_directory=True)
    res = subprocess.run([sys.executable, "-m", "geomoe.cli", *_embed_command()], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (cwd / "cube.zarr" / "zarr.json").is_file()
    # the reader's labels.gpkg: real BigEarthNet classes at the bundled patches' centres
    # (scripts/make_analysis_fixtures.py), as points with a "class" column
    import geopandas as gpd

    ben = gpd.read_file(REPO / "tests" / "data" / "analysis" / "bigearthnet_labels19.gpkg")
    ben.rename(columns={"labels_19": "class"}).to_file(cwd / "labels.gpkg", driver="GPKG")
    return cwd


def test_readme_has_the_quick_starts():
    """The README shows the Python quick start (embed_region, then xr.open_zarr) and the cube."""
    readme = python_blocks("README.md")
    assert any("geomoe.embed_region(" in b and "xr.open_zarr(" in b for b in readme), readme
    assert any("geomoe.open_cube(" in b for b in readme), readme
    assert all(python_blocks(page) for page in PAGES), "a listed page has no python block"


@pytest.fixture(scope="module")
def block_results(readme_cwd) -> dict[str, tuple[int, str]]:
    """Every block run at once, each in its own interpreter: block id -> (exit code, stderr)."""
    procs = {bid: subprocess.Popen([sys.executable, "-W", "error", "-c", code], cwd=readme_cwd,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for bid, (_, code) in _IDS.items()}
    results = {}
    for bid, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        results[bid] = (proc.returncode, err)
    return results


_IDS = {f"{Path(p).stem}-block{i}": (p, c) for p, i, c in BLOCKS}


@pytest.mark.parametrize("bid", list(_IDS))
def test_doc_python_block_runs(bid, block_results):
    page, code = _IDS[bid]
    rc, err = block_results[bid]
    assert rc == 0, f"{page} block failed:\n{code}\n{err[-3000:]}"
