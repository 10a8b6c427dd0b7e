"""Scheduled retraining logic (no Prefect): new scenes only, resume from the latest model."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from geomoe.train.retrain import read_ledger, scheduled_retrain
from geomoe.train.loop import TrainConfig
from geomoe.train.state import load_state

from .conftest import EUROPE


def test_retrain_uses_only_scenes_after_the_last_data_end(tmp_path):
    cfg = TrainConfig(size="XXS", steps=2, batch_size=8, checkpoint_every=2, warmup_steps=1)
    root = tmp_path / "sched"
    # round 1: no previous run; `since` plays the previous run's end date
    r1 = scheduled_retrain(root, aoi=str(EUROPE), base_checkpoint="scratch", config=cfg,
                           since="2018-05-20T00:00:00Z", log=None,
                           now=datetime(2026, 1, 5, 3, tzinfo=timezone.utc))
    assert r1["status"] == "trained" and r1["init_from"] is None
    run1 = json.loads((root / "run-20260105T030000Z" / "run.json").read_text())
    assert run1["data"]["datetime"] == "2018-05-20T00:00:01Z/.."
    assert 1 < run1["n_items"] < 200  # only the late-May 2018 patches and Liverpool
    assert r1["data_end"] == "2020-09-27T11:10:50Z"  # Liverpool, the newest scene
    led = read_ledger(root)
    assert led["model"] == r1["model"] and led["data_end"] == r1["data_end"]
    assert "in_progress" not in led

    # round 2: nothing newer than the ledger's data end -> a clean no-op
    r2 = scheduled_retrain(root, aoi=str(EUROPE), base_checkpoint="scratch", config=cfg, log=None)
    assert r2["status"] == "no-new-scenes" and r2["since"] == "2020-09-27T11:10:50Z"
    assert read_ledger(root) == led

    # round 3: scenes catalogued after the last end (emulated by moving the ledger back):
    # fine-tunes the latest model instead of starting over
    led["data_end"] = "2020-01-01T00:00:00Z"
    (root / "latest.json").write_text(json.dumps(led))
    r3 = scheduled_retrain(root, aoi=str(EUROPE), config=cfg, log=None,
                           now=datetime(2026, 1, 12, 3, tzinfo=timezone.utc))
    assert r3["status"] == "trained" and r3["init_from"] == r1["model"] and r3["n_items"] == 1
    assert r3["run"].endswith("run-20260112T030000Z")
    st = load_state(root / "run-20260112T030000Z" / "state" / "latest.pt")
    assert st["step"] == 2 and st["model_size"] == "XXS"
    assert read_ledger(root)["previous_model"] == r1["model"]
