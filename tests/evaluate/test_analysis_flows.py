"""The probe and change flows (geomoe.flows.probe_change) run for real on the session Prefect
server and publish their summaries as artifacts."""

from __future__ import annotations

import json

import xarray as xr

from .conftest import ANALYSIS_DATA


def test_probe_and_change_flows(prefect_server, change_pair_cube, tmp_path):
    from prefect.client.orchestration import get_client

    from geomoe.flows.probe_change import change_flow, probe_cube_flow

    cube, _ = change_pair_cube
    with prefect_server.settings():
        rep = probe_cube_flow(cube=str(cube), labels=str(ANALYSIS_DATA / "liverpool_weak_labels.gpkg"),
                              label_column="class", report=str(tmp_path / "p.json"),
                              time="2020-09-27", polygon_rule="centre")
        res = change_flow(cube=str(cube), date_from="2020", date_to="2021",
                          out=str(tmp_path / "c.zarr"))
        with get_client(sync_client=True) as client:
            keys = {a.key for a in client.read_artifacts() if a.key}
    assert json.loads((tmp_path / "p.json").read_text())["cv_spatial"] == rep["cv_spatial"]
    assert xr.open_zarr(tmp_path / "p.zarr", group="utm30n")["class"].max() >= 0
    assert res["groups"]["utm30n"]["chips_compared"] > 0 and (tmp_path / "c.png").is_file()
    assert {"probe-cube", "change-map"} <= keys
