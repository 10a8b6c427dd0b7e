"""Warnings from the CLI are one clean line each: `geomoe: warning: <message>`, no source line."""

from __future__ import annotations

import json
import subprocess
import sys

NORTH_AMERICA = {"type": "Polygon", "coordinates": [[[-130, 39], [-80, 39], [-80, 50], [-130, 50],
                                                     [-130, 39]]]}


def test_landsat_platform_warning_is_one_line(real_items):
    """A real catalog with Landsat 4-7 items: `catalog search` warns that they were refused."""
    proc = subprocess.run([sys.executable, "-m", "geomoe.cli", "catalog", "search", "--catalog",
                           str(real_items.static_collection), "--aoi", json.dumps(NORTH_AMERICA)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["LC08_L2SP_047027_20201204_02_T1", "LC08_L2SP_033032_20231008_02_T1"]
    err = proc.stderr.strip().splitlines()
    assert err == ["geomoe: warning: refused 1 Landsat 4-7 scene(s) without a coastal band (SR_B1): "
                   "['LE07_L2SP_021030_20100109_02_T1']", "2 items"], proc.stderr
