"""The embed-region deployment on a real Prefect server, run by a real process worker.

prefect.yaml -> `prefect deploy` -> `prefect deployment run 'embed-region/default' --param ...`
-> `prefect worker start --pool geomoe-process` -> the cube, its artifacts; then the same
deployment triggered through `geomoe embed-region --deployment`, which shows the run's state
and progress while it waits and ends with the local run's summary (or one error line).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import assert_same_cube

from tests.conftest_prefect import BIN, stop_process, wait_flow_run


@pytest.fixture(scope="module")
def deployed_worker(prefect_server, repo_root, tmp_path_factory):
    """embed-region/default deployed from prefect.yaml, and a process worker on its pool."""
    srv = prefect_server
    srv.cli("work-pool", "create", "geomoe-process", "--type", "process", "--overwrite")
    dep = srv.cli("--no-prompt", "deploy", "--name", "default", cwd=repo_root, timeout=180)
    assert "embed-region/default" in dep.stdout + dep.stderr
    wdir = tmp_path_factory.mktemp("worker")
    worker = srv.popen(str(BIN / "prefect"), "worker", "start", "--pool", "geomoe-process",
                       "--type", "process", log=wdir / "worker.log", cwd=wdir)
    try:
        yield wdir / "worker.log"
    finally:
        stop_process(worker, timeout=20)


def _artifacts(srv, run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with srv.settings(), get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {a.key: a for a in arts}


def test_deployment_run_by_worker(prefect_server, deployed_worker, flow_ckpt, single_process_cube,
                                  tmp_path):
    srv = prefect_server
    out = tmp_path / "deployed.zarr"
    res = srv.cli("deployment", "run", "embed-region/default",
                  "--param", "aoi=catalogs/aois/liverpool.geojson", "--param", f"out={out}",
                  "--param", f"checkpoint={flow_ckpt}", "--param", "tile_size=2",
                  "--param", "batch_size=8", "--param", "device=cpu")
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", res.stdout).group(1)
    run = wait_flow_run(srv, run_id)
    assert run.state.is_completed(), (run.state, deployed_worker.read_text()[-3000:])
    assert_same_cube(out, single_process_cube)
    by_key = _artifacts(srv, run.id)
    assert "embed-region-plot" in by_key and "data:image/png;base64," in by_key["embed-region-plot"].data
    assert "embed-region-summary" in by_key
    prog = by_key["embed-region-progress"]
    assert float(prog.data) == 100.0 and prog.description.startswith("20/20 chips (100%)")


def _geomoe(srv, repo_root, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geomoe.cli", "embed-region", *args, "--deployment"],
                          env=srv.env, cwd=repo_root, capture_output=True, text=True, timeout=timeout)


def test_geomoe_cli_deployment_shows_progress_and_the_summary(prefect_server, deployed_worker, repo_root,
                                                              flow_ckpt, single_process_cube, tmp_path):
    out = tmp_path / "via-cli.zarr"
    cli = _geomoe(prefect_server, repo_root, "--aoi", str(repo_root / "catalogs" / "aois" / "liverpool.geojson"),
                  "--out", str(out), "--checkpoint", str(flow_ckpt), "--tile-size", "2",
                  "--batch-size", "8", "--device", "cpu")
    assert cli.returncode == 0, cli.stdout + cli.stderr + deployed_worker.read_text()[-3000:]
    err = cli.stderr.splitlines()
    # where to watch it, its state while waiting, then done/total chips lines
    assert re.match(r"\[embed-region\] flow run \S+ of embed-region/default: http://\S+/flow-run/", err[0]), err
    assert any(re.match(r"\[embed-region\] flow run \S+: Running$", ln) for ln in err), err
    progress = [ln for ln in err if re.match(r"\[embed-region\] \d+/20 chips \(\d+%\)", ln)]
    assert progress and progress[-1].startswith("[embed-region] 20/20 chips (100%)"), err
    assert "Traceback" not in cli.stderr
    # the local run's summary line, then the run's URL
    lines = cli.stdout.splitlines()
    assert re.match(r"embedded 20 chips, skipped 0 for cloud/fill .* 6 tile\(s\) written, 0 already done, "
                    r"in [\d.]+ s \([\d.]+ chips/s on cpu, fp32( \(auto: [^)]*\))?(, \d+ thread\(s\))?\); cube: " + re.escape(str(out)), lines[0]), lines
    assert re.match(r"flow run: http://\S+/flow-run/[0-9a-f-]{36}$", lines[1]), lines
    assert_same_cube(out, single_process_cube)


def test_geomoe_cli_deployment_failed_run_is_one_line_and_exit_1(prefect_server, deployed_worker, repo_root,
                                                                 flow_ckpt, tmp_path):
    missing = tmp_path / "no-such-aoi.geojson"
    cli = _geomoe(prefect_server, repo_root, "--aoi", str(missing), "--out", str(tmp_path / "x.zarr"),
                  "--checkpoint", str(flow_ckpt), "--device", "cpu")
    assert cli.returncode == 1, cli.stdout + cli.stderr
    last = cli.stderr.strip().splitlines()[-1]
    assert re.match(r"geomoe embed-region: error: flow run \S+ of embed-region/default ended Failed: .*"
                    + re.escape(str(missing)) + r".*; logs: http://\S+/flow-run/", last), cli.stderr
    assert "Traceback" not in cli.stderr and cli.stdout == ""
    assert not (tmp_path / "x.zarr").exists()


def _files(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run_daily(srv, params: dict, log) -> str:
    args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    res = srv.cli("deployment", "run", "embed-region/daily", *args)
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", res.stdout).group(1)
    run = wait_flow_run(srv, run_id)
    assert run.state.is_completed(), (run.state, log.read_text()[-3000:])
    return run.id


def test_daily_deployment_keeps_the_cube_and_a_run_with_nothing_new_embeds_nothing(
        prefect_server, deployed_worker, repo_root, flow_ckpt, single_process_cube, tmp_path):
    """embed-region/daily from prefect.yaml: its daily schedule is on the server; a run embeds
    the cube; the next run (nothing new catalogued) embeds nothing and leaves every chunk and
    array of the cube byte-identical (only the root's run log grows)."""
    import inspect
    import json

    import yaml
    from prefect.client.orchestration import get_client

    from geomoe.flows.embed_region import embed_region_flow, summary_from_table

    srv = prefect_server
    dep = srv.cli("--no-prompt", "deploy", "--name", "daily", cwd=repo_root, timeout=180)
    assert "embed-region/daily" in dep.stdout + dep.stderr
    spec = {d["name"]: d for d in yaml.safe_load((repo_root / "prefect.yaml").read_text())["deployments"]}
    inspect.signature(embed_region_flow.fn).bind(**spec["daily"]["parameters"])  # the request's
    with srv.settings(), get_client(sync_client=True) as client:
        d = client.read_deployment_by_name("embed-region/daily")
        assert d.entrypoint == "geomoe.flows.embed_region.embed_region_flow"
        assert d.work_pool_name == "geomoe-process" and d.parameters["out"] == "cubes/daily.zarr"
        assert len(d.schedules) == 1
        sched = d.schedules[0]
        assert sched.active and sched.schedule.cron == "0 4 * * *" and sched.schedule.timezone == "UTC"

    out = tmp_path / "daily.zarr"
    params = {"aoi": "catalogs/aois/liverpool.geojson", "out": out, "checkpoint": flow_ckpt,
              "tile_size": 2, "batch_size": 8, "device": "cpu"}
    first = _run_daily(srv, params, deployed_worker)
    assert_same_cube(out, single_process_cube)
    before = _files(out)
    second = _run_daily(srv, params, deployed_worker)  # what the next day's run does: nothing new
    summaries = {}
    for run_id in (first, second):
        art = _artifacts(srv, run_id)["embed-region-summary"]
        summaries[run_id] = summary_from_table(json.loads(art.data) if isinstance(art.data, str) else art.data)
    assert (summaries[first].tiles_written, summaries[first].chips_embedded) == (6, 20)
    s = summaries[second]
    assert (s.tiles_written, s.tiles_already_done, s.chips_embedded, s.run) == (0, 6, 0, 2)
    after = _files(out)
    assert set(after) == set(before)
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == ["zarr.json"], changed  # chunks, arrays, bookkeeping: byte-identical
    attrs = [json.loads(f["zarr.json"])["attributes"] for f in (before, after)]
    assert attrs[1]["geomoe:runs"] == 2 and len(attrs[1]["geomoe:run_log"]) == 2
    assert attrs[1]["geomoe:finished_run"] == 2  # the run bookkeeping; nothing else changed
    per_run = ("geomoe:run", "geomoe:finished_run")
    assert ({k: v for k, v in attrs[0].items() if not k.startswith(per_run)}
            == {k: v for k, v in attrs[1].items() if not k.startswith(per_run)})
