"""The export and similar flows on a real Prefect server: same outputs as the library, plus
their artifacts (summary, top rows, the map PNG inline)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq

import geomoe
from tests.evaluate.cube_fixtures import analysis_ckpt, liverpool_grid_cube  # noqa: F401


def test_export_and_similar_flows(prefect_server, liverpool_grid_cube, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from geomoe.flows.export_similar import (EXPORT_KEY, SIMILAR_KEY, SIMILAR_PNG_KEY, export_flow,
                                             similar_flow)

    ds = geomoe.open_cube(liverpool_grid_cube)["utm30n"]
    at = f"{float(ds.lon[1, 2])},{float(ds.lat[1, 2])}"
    with prefect_server.settings():
        exp = export_flow(cube=str(liverpool_grid_cube), to=str(tmp_path / "all.parquet"))
        sim = similar_flow(cube=str(liverpool_grid_cube), out=str(tmp_path / "top.parquet"),
                           at=[at], k=5)
        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[EXPORT_KEY, SIMILAR_KEY, SIMILAR_PNG_KEY])))
    assert exp["rows"] == 20 and pq.read_metadata(exp["path"]).num_rows == 20
    top = gpd.read_parquet(sim["out"])
    assert len(top) == 5 and top.score.iloc[0] > 0.9999
    assert (top.y.iloc[0], top.x.iloc[0]) == (float(ds.y[1]), float(ds.x[2]))
    assert np.all(np.diff(top.score.to_numpy()) <= 0)
    by_key = {a.key: a for a in arts}
    assert set(by_key) == {EXPORT_KEY, SIMILAR_KEY, SIMILAR_PNG_KEY}
    assert "data:image/png;base64," in by_key[SIMILAR_PNG_KEY].data
