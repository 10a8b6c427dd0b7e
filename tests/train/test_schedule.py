"""The pretrain/scheduled deployment (the retraining flow) on a real local Prefect server, run by
a real process worker; the training flow (pretrain/manual) in process.

prefect.yaml -> `prefect deploy --name scheduled` -> the weekly cron schedule is on the server ->
`prefect deployment run 'pretrain/scheduled'` -> `prefect worker start --pool geomoe-process`
fine-tunes (XXS, 2 steps, Liverpool) and publishes its metrics as artifacts.
"""

from __future__ import annotations

import json
import re

from tests.conftest_prefect import BIN, stop_process, wait_flow_run


def test_scheduled_deployment_schedule_and_triggered_run(prefect_server, repo_root, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    srv = prefect_server
    srv.cli("work-pool", "create", "geomoe-process", "--type", "process", "--overwrite")
    dep = srv.cli("--no-prompt", "deploy", "--name", "scheduled", cwd=repo_root, timeout=180)
    assert "pretrain/scheduled" in dep.stdout + dep.stderr

    with srv.settings(), get_client(sync_client=True) as client:
        d = client.read_deployment_by_name("pretrain/scheduled")
        assert d.entrypoint == "geomoe.flows.pretrain.retrain_flow"  # the retraining flow
        assert d.parameters["finetune_steps"] == 200 and d.work_pool_name == "geomoe-process"
        assert len(d.schedules) == 1
        sched = d.schedules[0]
        assert sched.active and sched.schedule.cron == "0 3 * * 1"
        assert sched.schedule.timezone == "UTC"

    root = tmp_path / "sched"
    worker = srv.popen(str(BIN / "prefect"), "worker", "start", "--pool", "geomoe-process",
                       "--type", "process", log=tmp_path / "worker.log", cwd=tmp_path,
                       extra_env={"OMP_NUM_THREADS": "1"})
    try:
        res = srv.cli("deployment", "run", "pretrain/scheduled",
                      "--param", f"root={root}", "--param", "base_checkpoint=scratch",
                      "--param", "size=XXS", "--param", "finetune_steps=2",
                      "--param", "batch_size=8", "--param", "checkpoint_every=1",
                      "--param", "aoi=catalogs/aois/liverpool.geojson")
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", res.stdout).group(1)
        run = wait_flow_run(srv, run_id)
        assert run.state.is_completed(), (run.state, (tmp_path / "worker.log").read_text()[-3000:])
    finally:
        stop_process(worker, timeout=20)

    ledger = json.loads((root / "latest.json").read_text())
    assert ledger["data_end"] == "2020-09-27T11:10:50Z" and ledger["steps"] == 2
    from geomoe.model import load_checkpoint

    assert load_checkpoint(ledger["model"]).config.size == "XXS"
    with srv.settings(), get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    by_key: dict[str, list] = {}
    for a in arts:
        by_key.setdefault(a.key, []).append(a)
    assert "pretrain-scheduled-progress" in by_key
    tables = by_key["pretrain-scheduled-metrics"]  # one per checkpoint, a row per step
    rows = [r for t in tables for r in (json.loads(t.data) if isinstance(t.data, str) else t.data)]
    assert sorted(r["step"] for r in rows) == [1, 2]
    assert {"loss", "loss_masked", "loss_unmasked", "moe_loss", "lr", "chips_per_s"} <= set(rows[0])
    assert "data:image/png;base64," in by_key["pretrain-scheduled-preview"][0].data
    assert "trained" in by_key["pretrain-summary"][0].data


def test_manual_flow_in_process_publishes_metrics_and_auto_resumes(prefect_server, repo_root,
                                                                     tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    import geomoe.flows.pretrain as mod
    params = dict(aoi=str(repo_root / "catalogs" / "aois" / "liverpool.geojson"),
                  out=str(tmp_path / "manual"), size="XXS", batch_size=8, checkpoint_every=2,
                  threads=1)
    with prefect_server.settings():
        first = mod.pretrain_flow(steps=2, **params)
        again = mod.pretrain_flow(steps=3, **params)  # same out: resumes
        with get_client(sync_client=True) as client:
            tables = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["pretrain-metrics"])))
    assert first["status"] == "done" and first["step"] == 2 and not first["resumed"]
    assert again["resumed"] and again["step"] == 3
    steps = sorted(r["step"] for t in tables
                   for r in (json.loads(t.data) if isinstance(t.data, str) else t.data))
    assert steps == [1, 2, 3]


def test_training_and_retraining_are_two_flows_behind_the_two_deployments(repo_root):
    """No mode switch: each flow takes only its own parameters; both keep the flow name
    "pretrain", so the deployments stay pretrain/manual and pretrain/scheduled."""
    import inspect

    import yaml

    from geomoe.flows.pretrain import pretrain_flow, retrain_flow

    train_p = set(inspect.signature(pretrain_flow.fn).parameters)
    retrain_p = set(inspect.signature(retrain_flow.fn).parameters)
    assert "mode" not in train_p | retrain_p
    assert {"out", "steps", "resume", "init_from", "max_minutes", "datetime"} <= train_p - retrain_p
    assert {"root", "finetune_steps", "base_checkpoint", "since"} <= retrain_p - train_p
    assert pretrain_flow.name == retrain_flow.name == "pretrain"
    deps = {d["name"]: d for d in yaml.safe_load((repo_root / "prefect.yaml").read_text())["deployments"]}
    assert deps["manual"]["entrypoint"] == "geomoe.flows.pretrain.pretrain_flow"
    assert deps["scheduled"]["entrypoint"] == "geomoe.flows.pretrain.retrain_flow"
    for name, fn in (("manual", pretrain_flow), ("scheduled", retrain_flow)):
        inspect.signature(fn.fn).bind(**deps[name]["parameters"])  # every parameter is the flow's
