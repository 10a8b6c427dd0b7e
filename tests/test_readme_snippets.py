"""Every ```python block of README.md runs as written, warnings as errors.

The blocks run in a fresh interpreter each, in a folder laid out like the checkout after the
README's own first command (``catalogs/`` and ``checkpoints/`` beside ``cube.zarr``), so relative
paths resolve as they do for a reader. The cube is made by that command, taken from the README.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def _embed_command() -> list[str]:
    """The README's `geomoe embed-region ...` (the setup line's last step), as argv."""
    for block in re.findall(r"^```bash\n(.*?)^```", README, re.S | re.M):
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
    return cwd


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3 and any("xr.open_zarr" in b for b in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, readme_cwd):
    res = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=readme_cwd,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"README block failed:\n{code}\n{res.stderr[-3000:]}"
