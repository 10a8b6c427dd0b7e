"""`geomoe embed-region --dask-workers 2` as a user runs it: a real subprocess on a real
LocalCluster. Dask's INFO chatter stays out of the output, the cluster shuts down without a
traceback or a killed worker, and the workers' torch threads fit the cores given."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from .conftest import assert_same_cube


def test_dask_workers_cli_is_quiet_and_shuts_down_cleanly(prefect_server, repo_root, flow_ckpt,
                                                          single_process_cube, tmp_path):
    out = tmp_path / "dask-cli.zarr"
    env = {**prefect_server.env, "PREFECT_LOGGING_LEVEL": "INFO",  # Prefect's default, as a user has it
           "DASK_TEMPORARY_DIRECTORY": str(tmp_path / "dask")}
    env.pop("DASK_LOGGING__DISTRIBUTED", None)
    env.pop("OMP_NUM_THREADS", None)
    res = subprocess.run(
        [sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi",
         str(repo_root / "catalogs" / "aois" / "liverpool.geojson"), "--out", str(out),
         "--checkpoint", str(flow_ckpt), "--tile-size", "2", "--batch-size", "8", "--device", "cpu",
         "--dask-workers", "2", "--json"],
        env=env, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    dask_info = [ln for ln in res.stderr.splitlines() if re.search(r"\|\s*INFO\s*\|\s*distributed\.", ln)]
    assert not dask_info, "\n".join(dask_info)
    for bad in ("Traceback", "CommClosedError", "killing"):  # killing: the nanny SIGKILLed a worker
        assert bad not in res.stderr, res.stderr
    s = json.loads(res.stdout)
    assert s["chips_embedded"] == 20 and s["out"] == str(out) and s["device"] == "cpu"
    cores = len(os.sched_getaffinity(0))
    assert s["extra"]["worker_nthreads"] == [max(1, cores // 2)]  # workers x threads <= cores
    assert s["extra"]["torch_threads"] == s["extra"]["worker_nthreads"]
    assert_same_cube(out, single_process_cube)
