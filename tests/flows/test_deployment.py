"""The embed-region deployment on a real Prefect server, run by a real process worker.

prefect.yaml -> `prefect deploy` -> `prefect deployment run 'embed-region/default' --param ...`
-> `prefect worker start --pool geomoe-process` -> the cube, its artifacts; then the same
deployment triggered through `geomoe embed-region --deployment` (run_deployment).
"""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import assert_same_cube

from tests.conftest_prefect import BIN, stop_process, wait_flow_run


def test_deployment_run_by_worker_and_by_geomoe_cli(prefect_server, repo_root, flow_ckpt,
                                                     single_process_cube, tmp_path):
    srv = prefect_server
    srv.cli("work-pool", "create", "geomoe-process", "--type", "process", "--overwrite")
    dep = srv.cli("--no-prompt", "deploy", "--name", "default", cwd=repo_root, timeout=180)
    assert "embed-region/default" in dep.stdout + dep.stderr
    worker = srv.popen(str(BIN / "prefect"), "worker", "start", "--pool", "geomoe-process",
                       "--type", "process", log=tmp_path / "worker.log", cwd=tmp_path)
    try:
        out = tmp_path / "deployed.zarr"
        res = srv.cli("deployment", "run", "embed-region/default",
                      "--param", "aoi=catalogs/aois/liverpool.geojson", "--param", f"out={out}",
                      "--param", f"checkpoint={flow_ckpt}", "--param", "tile_size=2",
                      "--param", "batch_size=8", "--param", "device=cpu")
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", res.stdout).group(1)
        run = wait_flow_run(srv, run_id)
        assert run.state.is_completed(), (run.state, (tmp_path / "worker.log").read_text()[-3000:])
        assert_same_cube(out, single_process_cube)
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        with srv.settings(), get_client(sync_client=True) as client:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        by_key = {a.key: a for a in arts}
        assert "embed-region-plot" in by_key and "data:image/png;base64," in by_key["embed-region-plot"].data
        assert "embed-region-summary" in by_key

        # the same deployment through geomoe's CLI (run_deployment, waits for the result)
        out2 = tmp_path / "via-cli.zarr"
        cli = subprocess.run([sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi",
                              str(repo_root / "catalogs" / "aois" / "liverpool.geojson"), "--out", str(out2),
                              "--checkpoint", str(flow_ckpt), "--tile-size", "2", "--batch-size", "8",
                              "--device", "cpu", "--deployment"],
                             env=srv.env, cwd=repo_root, capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "COMPLETED" in cli.stdout
        assert_same_cube(out2, single_process_cube)
    finally:
        stop_process(worker, timeout=20)
