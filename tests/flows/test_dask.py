"""Scale-out: the embed-region flow with its tile tasks on a 2-worker Dask LocalCluster
(prefect-dask DaskTaskRunner, against the real Prefect server) writes the same cube as the
single-process library run, and each task runs torch on its worker's threads."""

from __future__ import annotations

import os
import re

from .conftest import assert_same_cube


def test_two_worker_dask_cube_equals_single_process(prefect_server, embed_flow_module, repo_root,
                                                    flow_ckpt, single_process_cube, tmp_path, monkeypatch):
    for k, v in prefect_server.env.items():  # Dask worker processes inherit these
        if k.startswith("PREFECT_") or k == "DO_NOT_TRACK":
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("DASK_TEMPORARY_DIRECTORY", str(tmp_path / "dask"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("GEOMOE_CPU_FLAGS", "avx2 avx512_bf16")  # native bf16 on any machine
    out = tmp_path / "dask.zarr"
    params = {"aoi": str(repo_root / "catalogs" / "aois" / "liverpool.geojson"), "out": str(out),
              "checkpoint": str(flow_ckpt), "tile_size": 2, "batch_size": 8, "device": "cpu",
              "gpu_resource": True, "plot": False}
    with prefect_server.settings():
        # every worker offers one "GPU" slot; tasks annotated gpu_resource need one each
        # 4 cores given to 2 workers: 2 threads each, and torch in every task uses those 2
        # (not torch's default, not the OMP_NUM_THREADS=1 that Dask's nanny sets)
        summary = embed_flow_module.run_with_dask(params, n_workers=2, resources={"GPU": 1}, threads=4)
    assert summary["tiles_written"] == 6 and summary["chips_embedded"] == 20
    assert len(summary["task_pids"]) == 2 and os.getpid() not in summary["task_pids"]
    # (at most the cores this process may use: fewer where it has fewer, e.g. under pytest -n)
    from geomoe.device import cores_available

    want = min(2, cores_available())
    assert summary["worker_nthreads"] == [want] and summary["torch_threads"] == [want]
    # what each worker chose for --precision/--compile auto, and why (geomoe.embed.speed)
    assert summary["precision"] == "fp32" and summary["precision_requested"] == "auto"
    assert re.fullmatch(r"fp32 \(auto: small job, about \d+ chips, the compile would not pay off\)",
                        summary["speed"])
    assert_same_cube(out, single_process_cube)
    import warnings

    import rioxarray  # noqa: F401
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the flow wrote consolidated metadata at its end
        assert xr.open_zarr(str(out), group="utm30n").rio.crs.to_epsg() == 32630
