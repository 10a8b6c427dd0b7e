"""Prefect 3 flows of geomoe, importable from the installed package.

- :mod:`geomoe.flows.embed_region`: ``embed-region`` (deployments ``embed-region/default`` and
  ``embed-region/gpu``), also what ``geomoe embed-region --dask-*`` / ``--deployment`` run.
- :mod:`geomoe.flows.pretrain`: ``pretrain`` (``pretrain/manual``: training) and the scheduled
  fine-tune (``pretrain/scheduled``: retraining).
- :mod:`geomoe.flows.probe_change`: ``probe`` (``probe/cube``: probe a cube with vector labels)
  and ``change`` (``change/default``: change map between two dates).
- :mod:`geomoe.flows.export_similar`: ``export`` (``export/geoparquet``) and ``similar``
  (``similar/query``): GeoParquet export and similarity search on a cube.

prefect.yaml names them by module path (``geomoe.flows.embed_region.embed_region_flow``), so a
worker loads them from the installed geomoe, wherever its working directory is. This is the only
part of geomoe that imports Prefect; the package itself does not import these modules (the
CLI does, for ``--dask-*`` and ``--deployment`` only).
"""
