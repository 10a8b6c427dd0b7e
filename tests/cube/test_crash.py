"""kill -9 at several points, then rerun: every chip written exactly once, nothing corrupt.

The run is a real subprocess killed with a real SIGKILL: either by the test (after the
first progress line, wherever the run is) or by itself at an exact point via the
GEOMOE_FAULT hook (geomoe/testing.py), e.g. between a tile's chunk writes and its
completion record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from geomoe.cube.store import open_group
from geomoe.embed.pipeline import embed_region

RUN = textwrap.dedent("""
    import sys
    from geomoe.embed.pipeline import embed_region
    embed_region(sys.argv[1], checkpoint=sys.argv[2], out=sys.argv[3], batch_size=8, tile_size=2,
                 progress=lambda p: print(p.line(), file=sys.stderr, flush=True))
    print("finished", flush=True)
""")


def _done(out):
    return zarr.open_array(str(out), path="_geomoe/utm30n/tile_done", mode="r")[...]


@pytest.mark.parametrize("fault,committed", [
    ("before_tile_write:1", 0),        # killed with data in memory, nothing on disk
    ("after_data_before_commit:3", 2),  # 3rd tile's chunks written but not recorded
    ("after_tile_write:4", 4),          # killed right after a completion record
    ("external", None),                 # SIGKILL from outside after the first progress line
])
def test_sigkill_then_rerun_is_exact(fault, committed, liverpool_reference, liverpool_aoi, ckpt_xxs, tmp_path):
    ref, ref_summary = liverpool_reference
    out = tmp_path / "crash.zarr"
    env = dict(os.environ)
    args = [sys.executable, "-c", RUN, str(liverpool_aoi), str(ckpt_xxs), str(out)]
    if fault == "external":
        proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = proc.stderr.readline()
        assert "chips" in line, line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    else:
        env["GEOMOE_FAULT"] = fault
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, getattr(proc, "stderr", "")
    done_before = _done(out)
    if committed is not None:
        assert int((done_before > 0).sum()) == committed
    assert set(np.unique(done_before)) <= {0, 1}
    # rerun (a new run in this process): resumes, skipping exactly the committed tiles
    s = embed_region(str(liverpool_aoi), checkpoint=ckpt_xxs, out=out, batch_size=8, tile_size=2)
    k = int((done_before > 0).sum())
    assert s.tiles_already_done == k and s.tiles_written == 6 - k and s.run == 2
    done_after = _done(out)
    assert (done_after[done_before > 0] == 1).all()  # committed tiles were not rewritten
    assert (done_after[done_before == 0] == 2).all()  # every other tile written once, by run 2
    got, want = open_group(out, "utm30n"), open_group(ref, "utm30n")
    np.testing.assert_allclose(got.embedding.values, want.embedding.values, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.valid_fraction.values, want.valid_fraction.values)
    assert np.isfinite(got.valid_fraction.values).sum() == ref_summary.chips_planned
    assert not list(out.rglob("*.partial"))  # no temp files left behind
