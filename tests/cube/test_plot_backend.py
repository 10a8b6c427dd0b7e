"""Plotting never switches matplotlib's backend: a notebook user's stays as it was."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "geomoe"

SCRIPT = """
import sys
import matplotlib
matplotlib.use("svg")  # stands in for a notebook's inline backend
from geomoe.viz import plot_cube
plot_cube(sys.argv[1], sys.argv[2])
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_plot_cube_keeps_the_users_backend(liverpool_reference, tmp_path):
    ref, _ = liverpool_reference
    png = tmp_path / "cube.png"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ref), str(png)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg", "False"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_module_switches_the_backend_or_uses_pyplot():
    """Previews (pretrain) and probe reports draw on matplotlib.figure.Figure too."""
    bad = re.compile(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot")
    assert [str(p) for p in sorted(PACKAGE.rglob("*.py")) if bad.search(p.read_text())] == []
