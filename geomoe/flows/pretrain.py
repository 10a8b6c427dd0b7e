"""Prefect flows for training the MoE-MAE: ``pretrain_flow`` and ``retrain_flow``.

Deployments (prefect.yaml):

- ``pretrain/manual`` -> :func:`pretrain_flow`: one pretraining run into ``out``; it resumes
  automatically when ``out`` already holds a training state (``resume: auto``).
- ``pretrain/scheduled`` -> :func:`retrain_flow`: weekly cron; fine-tunes the latest model of
  ``root`` on the scenes catalogued after the last run's data end date (see geomoe.train.retrain).

Both flows are named ``pretrain``: Prefect names a deployment ``<flow name>/<deployment>``, so
the two deployments keep their names (and a server's existing schedule is updated in place by
``prefect deploy``).

Run with Prefect's syntax, e.g.::

    prefect deployment run 'pretrain/manual' --param steps=200 --param out=runs/p1

Metrics of every step go to the run's ``metrics.csv`` and to Prefect artifacts: a progress
artifact updated each step, a table artifact with the per-step rows at every checkpoint, the
reconstruction preview (markdown with the PNG inline) and a summary at the end.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from geomoe.train.loop import TrainConfig


class _ArtifactSink:
    """Publishes training progress to Prefect: cheap per step, richer per checkpoint."""

    def __init__(self, total_steps: int, key: str) -> None:
        self.total = max(1, total_steps)
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self.progress_id = create_progress_artifact(
            progress=0.0, key=f"{key}-progress", description="pretraining steps done (%)")

    def on_step(self, row: dict[str, Any]) -> None:
        self.rows.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
        update_progress_artifact(self.progress_id, progress=100.0 * row["step"] / self.total)

    def on_checkpoint(self, info: dict[str, Any]) -> None:
        if self.rows:
            create_table_artifact(
                table=self.rows, key=f"{self.key}-metrics",
                description=f"per-step metrics, steps {self.rows[0]['step']}-{self.rows[-1]['step']}")
            self.rows = []
        png = Path(info["preview"])
        if png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            create_markdown_artifact(
                markdown=(f"## Reconstruction preview, step {info['step']} (loss "
                          f"{info['loss']:.3f})\n\ninput RGB | masked input | reconstruction | "
                          f"reconstruction + visible\n\n![preview](data:image/png;base64,{data})"
                          f"\n\n`{png}`\n"),
                key=f"{self.key}-preview", description=f"step {info['step']}")


def _config(**kw: Any) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in kw.items() if v is not None})


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _publish(summary: dict[str, Any], mode: str) -> dict[str, Any]:
    """The run's summary as a markdown table artifact and a log line; returns it."""
    lines = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    create_markdown_artifact(markdown=f"## pretrain ({mode})\n\n| field | value |\n|---|---|\n{lines}\n",
                             key="pretrain-summary", description=f"pretrain {mode}: {summary['status']}")
    get_run_logger().info("pretrain %s: %s", mode, summary)
    return summary


@flow(name="pretrain", log_prints=True)
def pretrain_flow(
    catalog: str | None = None,
    aoi: str = "catalogs/aois/europe.geojson",
    datetime: str | None = None,
    max_cloud: float | None = None,
    out: str = "runs/pretrain",
    steps: int = 1000,
    size: str = "S",
    batch_size: int = 64,
    checkpoint_every: int = 100,
    seed: int = 0,
    resume: str = "auto",
    init_from: str | None = None,
    max_minutes: float | None = None,
    threads: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
) -> dict[str, Any]:
    """Pretrain the MoE-MAE on chips of ``aoi`` into ``out``; resumes ``out`` (``resume``:
    auto = when it holds a training state, yes, no)."""
    from geomoe.stac.aoi import load_aoi
    from geomoe.stac.search import search
    from geomoe.train.loop import train

    _set_threads(threads)
    out_dir = Path(out)
    do_resume = resume is True or resume == "yes" or (
        resume == "auto" and (out_dir / "state" / "latest.pt").is_file())
    cfg = _config(size=size, steps=steps, batch_size=batch_size, seed=seed,
                  checkpoint_every=checkpoint_every, device=device, precision=precision,
                  compile=compile)
    items = search(catalog, aoi, datetime=datetime, max_cloud=max_cloud)
    sink = _ArtifactSink(cfg.steps, "pretrain")
    res = train(items, out_dir, cfg, aoi=load_aoi(aoi), resume=do_resume, init_from=init_from,
                max_seconds=None if max_minutes is None else 60.0 * max_minutes,
                data_info={"catalog": catalog or "bundled", "aoi": aoi,
                           "datetime": datetime, "max_cloud": max_cloud},
                on_step=sink.on_step, on_checkpoint=sink.on_checkpoint, log=get_run_logger().info)
    return _publish({"status": res.stopped, "out": str(out_dir), "step": res.step,
                     "steps": res.steps, "final_loss": res.final_loss,
                     "mean_chips_per_s": res.mean_chips_per_s, "model": str(res.model_path),
                     "preview": str(res.preview_path), "resumed": do_resume,
                     "n_items": res.n_items, "data_end": res.data_end}, "train")


@flow(name="pretrain", log_prints=True)  # the same flow name: the deployment stays pretrain/scheduled
def retrain_flow(
    root: str = "runs/scheduled",
    catalog: str | None = None,
    aoi: str = "catalogs/aois/europe.geojson",
    max_cloud: float | None = None,
    base_checkpoint: str | None = None,
    since: str | None = None,
    finetune_steps: int = 200,
    size: str = "S",
    batch_size: int = 64,
    checkpoint_every: int = 100,
    seed: int = 0,
    threads: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
) -> dict[str, Any]:
    """One scheduled retraining round: fine-tune the latest model of ``root`` (first time:
    ``base_checkpoint``, default the demo checkpoint where it exists; "scratch": random weights) for
    ``finetune_steps`` on the scenes after the last round's data end date (first time:
    ``since``); none new: status "no-new-scenes"."""
    from geomoe.train.retrain import scheduled_retrain

    _set_threads(threads)
    cfg = _config(size=size, steps=finetune_steps, batch_size=batch_size, seed=seed,
                  checkpoint_every=max(1, min(checkpoint_every, finetune_steps)),
                  warmup_steps=max(1, finetune_steps // 10), device=device,
                  precision=precision, compile=compile)
    sink = _ArtifactSink(cfg.steps, "pretrain-scheduled")
    return _publish(scheduled_retrain(
        root, catalog=catalog, aoi=aoi, base_checkpoint=base_checkpoint, config=cfg,
        since=since, max_cloud=max_cloud, on_step=sink.on_step,
        on_checkpoint=sink.on_checkpoint, log=get_run_logger().info), "scheduled")


if __name__ == "__main__":  # pragma: no cover - manual runs: python -m geomoe.flows.pretrain
    print(dataclasses.asdict(TrainConfig()))
    pretrain_flow()
