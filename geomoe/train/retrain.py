"""Scheduled retraining: fine-tune the latest model on scenes newer than the last run's data.

A ledger ``<root>/latest.json`` records after every successful run the model it produced and
``data_end``, the latest acquisition datetime it trained on. The next run:

1. starts from the ledger's model (first run: ``base_checkpoint``, by default geomoe's demo
   checkpoint, or from scratch with ``base_checkpoint="scratch"``);
2. searches the catalog for scenes with a datetime strictly after ``data_end`` (the STAC
   ``datetime`` filter every catalog and API supports; scenes back-filled into a catalog with an
   older acquisition date are therefore not picked up);
3. fine-tunes on them in a new run folder ``<root>/run-<UTC stamp>`` (a run interrupted before
   finishing is resumed exactly instead), then moves the ledger forward.

No new scene is a normal outcome ("no-new-scenes"), not an error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from geomoe.errors import NoScenesError
from geomoe.train.loop import TrainConfig, train
from geomoe.atomic import atomic_write
from geomoe.train.state import ResumeMismatchError

LEDGER = "latest.json"


def read_ledger(root: str | Path) -> dict[str, Any]:
    p = Path(root) / LEDGER
    return json.loads(p.read_text()) if p.is_file() else {}


def _write_ledger(root: Path, ledger: dict[str, Any]) -> None:
    atomic_write(root / LEDGER, json.dumps(ledger, indent=2) + "\n")


def _after(iso: str) -> str:
    """RFC 3339 open interval starting one second after `iso` (STAC ranges are inclusive)."""
    t = datetime.fromisoformat(iso.replace("Z", "+00:00")) + timedelta(seconds=1)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") + "/.."


def scheduled_retrain(
    root: str | Path,
    *,
    catalog: str | None = None,
    aoi: Any = None,
    base_checkpoint: str | None = None,
    config: TrainConfig | None = None,
    since: str | None = None,
    max_cloud: float | None = None,
    now: datetime | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """One scheduled retraining round; returns a JSON-able summary with a ``status``."""
    from geomoe.stac.aoi import load_aoi
    from geomoe.stac.search import search
    from geomoe.model import load_checkpoint
    from geomoe.model.checkpoint import default_checkpoint

    say = log or (lambda _m: None)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ledger = read_ledger(root)
    config = config or TrainConfig(steps=200, checkpoint_every=50, warmup_steps=10)

    start_after = ledger.get("data_end") or since
    if ledger.get("model"):
        init_from: str | None = ledger["model"]
    elif base_checkpoint == "scratch":
        init_from = None
    else:
        demo = default_checkpoint()
        init_from = base_checkpoint or (str(demo) if demo is not None else None)
    if init_from is not None:  # the run's size follows the model it fine-tunes
        size = load_checkpoint(init_from).config.size
        config = dataclasses.replace(config, size=size)

    window = _after(start_after) if start_after else None
    try:
        items = search(catalog, aoi, datetime=window, max_cloud=max_cloud)
    except NoScenesError:
        say(f"no scenes after {start_after}: nothing to fine-tune on")
        return {"status": "no-new-scenes", "since": start_after, "model": ledger.get("model"),
                "n_items": 0}

    resume_dir = ledger.get("in_progress")
    run_dir = Path(resume_dir) if resume_dir else root / (
        "run-" + (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ"))
    ledger["in_progress"] = str(run_dir)
    _write_ledger(root, ledger)
    aoi_geom = load_aoi(aoi) if aoi is not None else None
    common = dict(aoi=aoi_geom, on_step=on_step, on_checkpoint=on_checkpoint, log=log,
                  data_info={"catalog": catalog or "bundled", "aoi": str(aoi)[:500],
                             "datetime": window, "scheduled": True})
    res = None
    if resume_dir and (run_dir / "state" / "latest.pt").is_file():
        try:
            res = train(items, run_dir, config, resume=True, **common)
        except ResumeMismatchError as exc:  # new scenes since the interruption: start afresh
            say(f"cannot resume {run_dir} ({exc}); starting a new run")
            run_dir = root / ("run-" + (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ"))
            ledger["in_progress"] = str(run_dir)
            _write_ledger(root, ledger)
    if res is None:
        res = train(items, run_dir, config, init_from=init_from, **common)
    new_end = max(filter(None, [res.data_end, ledger.get("data_end")]), default=None)
    ledger = {
        "model": str(res.model_path), "data_end": new_end, "run": str(run_dir),
        "previous_model": ledger.get("model"), "init_from": init_from,
        "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "steps": res.step, "final_loss": res.final_loss, "n_items": res.n_items,
    }
    _write_ledger(root, ledger)
    return {"status": "trained", "since": start_after, "data_end": new_end, "run": str(run_dir),
            "model": str(res.model_path), "init_from": init_from, "n_items": res.n_items,
            "steps": res.step, "final_loss": res.final_loss,
            "mean_chips_per_s": res.mean_chips_per_s, "preview": str(res.preview_path)}
