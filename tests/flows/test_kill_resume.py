"""SIGKILL, then resume: nothing finished is redone and the cube ends bit-identical to a clean run.

(a) a plain ``python -m geomoe.cli embed-region`` killed (a real SIGKILL, geomoe.testing's
fault hook) right after its third tile was committed; the same command again resumes.
(b) ``--dask-workers 2`` with two batches of three tiles: one worker process is SIGKILLed in
the middle of its batch, after the batch's first tile was committed and while the second
tile's chunks are written but not recorded. Dask re-runs the batch elsewhere; the re-run skips
the committed tile and redoes the other two; the run completes, and a rerun has nothing left.
tests/cube/test_crash.py covers the library run at every fault point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr

from geomoe.cube.store import open_group, tile_done_path


def _args(repo_root, out, ckpt) -> list[str]:
    return ["embed-region", "--aoi", str(repo_root / "catalogs" / "aois" / "liverpool.geojson"),
            "--out", str(out), "--checkpoint", str(ckpt), "--tile-size", "2", "--batch-size", "8",
            "--device", "cpu", "--json"]


def _done(out) -> np.ndarray:
    """Per tile: the run that finished it on every solar day (0: not done); one day here."""
    return zarr.open_array(str(out), path=tile_done_path("utm30n"), mode="r")[...].min(axis=0)


def _rerun(args: list[str], capsys) -> dict:
    from geomoe.cli.app import main

    capsys.readouterr()
    assert main(args + ["--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_bit_identical(a, b) -> None:
    x, y = open_group(a, "utm30n"), open_group(b, "utm30n")
    np.testing.assert_array_equal(x.embedding.values, y.embedding.values)
    np.testing.assert_array_equal(x.valid_fraction.values, y.valid_fraction.values)


@pytest.fixture(scope="module")
def clean_one_thread_cube(tmp_path_factory, repo_root, flow_ckpt):
    """A clean library run with torch on one thread, as each of the Dask workers below has it
    (the thread count decides the summation order, hence the last bits)."""
    import torch

    from geomoe.embed.pipeline import embed_region

    out = tmp_path_factory.mktemp("clean-1t") / "liverpool.zarr"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embed_region(str(repo_root / "catalogs" / "aois" / "liverpool.geojson"), checkpoint=flow_ckpt,
                     out=out, batch_size=8, tile_size=2, device="cpu")
    finally:
        torch.set_num_threads(n)
    return out


def test_cli_sigkill_then_rerun_redoes_no_finished_tile(repo_root, flow_ckpt, single_process_cube,
                                                        tmp_path, capsys):
    from geomoe.cube.layout import CubeTile
    from geomoe.embed.batching import committed_counts
    from geomoe.embed.pipeline import reopen
    from geomoe.embed.request import EmbedRequest

    out = tmp_path / "killed.zarr"
    args = _args(repo_root, out, flow_ckpt)
    env = {**os.environ, "GEOMOE_FAULT": "after_tile_write:3"}  # SIGKILL after the 3rd commit
    res = subprocess.run([sys.executable, "-m", "geomoe.cli", *args], env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == -signal.SIGKILL, res.stderr
    before = _done(out)
    assert int((before > 0).sum()) == 3 and set(np.unique(before)) == {0, 1}
    spec = reopen(EmbedRequest(aoi=str(repo_root / "catalogs" / "aois" / "liverpool.geojson"),
                               out=str(out), checkpoint=str(flow_ckpt), tile_size=2)).specs["utm30n"]
    kept = sum(sum(committed_counts(str(out), spec, CubeTile("utm30n", tuple(map(int, k)))))
               for k in np.argwhere(before > 0))

    s = _rerun(args, capsys)  # the same command again
    assert (s["tiles_already_done"], s["tiles_written"], s["run"]) == (3, 3, 2)
    assert kept > 0 and s["chips_embedded"] + s["chips_skipped_cloud"] == s["chips_planned"] - kept
    after = _done(out)
    assert (after[before > 0] == 1).all() and (after[before == 0] == 2).all()  # nothing redone
    assert_bit_identical(out, single_process_cube)


def test_dask_worker_sigkilled_mid_batch_loses_only_its_unfinished_tiles(
        prefect_server, repo_root, flow_ckpt, clean_one_thread_cube, tmp_path, capsys):
    out = tmp_path / "dask-killed.zarr"
    marker = tmp_path / "worker-killed"
    args = _args(repo_root, out, flow_ckpt)
    env = {**prefect_server.env, "DASK_TEMPORARY_DIRECTORY": str(tmp_path / "dask"),
           # every worker gets this environment; only the first to reach the point is killed
           "GEOMOE_FAULT": "after_data_before_commit:2", "GEOMOE_FAULT_ONCE": str(marker)}
    # --threads 2: two workers of one thread each, whatever the machine
    res = subprocess.run([sys.executable, "-m", "geomoe.cli", *args, "--dask-workers", "2", "--threads", "2",
                          "--tiles-per-task", "3"], env=env, capture_output=True, text=True, timeout=400)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    s = json.loads(res.stdout)
    assert s["extra"]["tasks"] == 2 and s["extra"]["tiles_per_task"] == 3
    # the killed batch's committed tile was found done by its re-run, not embedded again
    assert s["extra"]["tiles_recovered"] == 1
    assert s["tiles_written"] == 6 and s["chips_embedded"] + s["chips_skipped_cloud"] == s["chips_planned"]
    assert (_done(out) == 1).all()  # every tile by this run, recorded once
    assert s["extra"]["worker_nthreads"] == s["extra"]["torch_threads"] == [1]  # 2 x 1 <= --threads 2

    again = _rerun(args, capsys)  # nothing left: no tile is redone
    assert (again["tiles_written"], again["tiles_already_done"], again["chips_embedded"]) == (0, 6, 0)
    assert (_done(out) == 1).all()
    assert_bit_identical(out, clean_one_thread_cube)
