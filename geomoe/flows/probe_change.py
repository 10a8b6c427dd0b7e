"""Prefect flows of the cube analyses: ``probe`` (probe a cube with vector labels) and ``change``.

Thin: each calls the library (:func:`geomoe.evaluate.cube_probe.probe_cube`,
:func:`geomoe.evaluate.change.change`) and publishes its summary and PNG as a markdown
artifact. Deployments (prefect.yaml): ``probe/cube`` and ``change/default``, e.g.::

    prefect deployment run 'change/default' --param cube=cube.zarr --param date_from=2020 \\
        --param date_to=2021 --param out=change.zarr
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact


def _publish(key: str, title: str, text: str, png: Path | None) -> None:
    img = ""
    if png is not None and png.exists():
        img = f"\n\n![{key}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"
    create_markdown_artifact(markdown=f"## {title}\n\n```\n{text}\n```{img}\n", key=key,
                             description=title)


@flow(name="probe", log_prints=True)
def probe_cube_flow(cube: str, labels: str, label_column: str, report: str,
                    time: str | None = None, polygon_rule: str = "covers",
                    label_separator: str | None = None, block_size: float | None = None,
                    n_folds: int = 5, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Probe ``cube`` with the labels of a vector file; the parameters are those of
    :func:`geomoe.evaluate.cube_probe.probe_cube` (``block_size`` None: its default).
    Returns the report."""
    from geomoe.evaluate.cube_probe import BLOCK_METERS, probe_cube

    rep = probe_cube(cube, labels, label_column, report, time=time, polygon_rule=polygon_rule,
                     label_separator=label_separator,
                     block_size=BLOCK_METERS if block_size is None else block_size, n_folds=n_folds,
                     seed=seed, overwrite=overwrite)
    get_run_logger().info("probe %s:\n%s", cube, rep["summary"])
    _publish("probe-cube", f"probe of {Path(cube).name}", rep["summary"],
             Path(report).with_suffix(".png"))
    return rep


@flow(name="change", log_prints=True)
def change_flow(cube: str, date_from: str, date_to: str, out: str,
                overwrite: bool = False) -> dict[str, Any]:
    """Change map of ``cube`` between two date windows; the parameters are those of
    :func:`geomoe.evaluate.change.change`. Returns its result (per-group statistics)."""
    from geomoe.evaluate.change import change

    res = change(cube, date_from, date_to, out, overwrite=overwrite)
    text = "\n".join(f"{g}: {v}" for g, v in res["groups"].items())
    get_run_logger().info("change %s %s -> %s:\n%s", cube, date_from, date_to, text)
    _publish("change-map", f"change {date_from} -> {date_to} in {Path(cube).name}", text,
             Path(res["png"]) if res["png"] else None)
    return res
