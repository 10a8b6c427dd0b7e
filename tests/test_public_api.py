"""The public API: ``geomoe.__all__`` names one function per pipeline step, each resolves,
``import geomoe`` stays light, and the two functions that exist only as API (``load_model``,
``pretrain``) do what their docstrings say. ``open_cube`` is tested on a real cube in
tests/cube/test_open_cube.py."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import geomoe
from tests.conftest import REPO, seeded_checkpoint

PUBLIC = ["search", "load_aoi", "plan_chips", "iter_chips", "load_model", "embed_region",
          "open_cube", "pretrain", "probe", "change", "export", "similar"]
LIVERPOOL = str(REPO / "catalogs" / "aois" / "liverpool.geojson")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (the worktree first on the path); its last line prints JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("GOMP_SPINCOUNT", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_all_is_exactly_the_public_api():
    assert geomoe.__all__ == PUBLIC


def test_each_name_resolves_to_the_documented_function():
    from geomoe.stac.aoi import load_aoi
    from geomoe.api import load_model, pretrain
    from geomoe.stac.search import search
    from geomoe.chips.plan import iter_chips, plan_chips
    from geomoe.cube.reader import open_cube
    from geomoe.embed.pipeline import embed_region
    from geomoe.evaluate.probe import run_probe
    from geomoe.evaluate.change import change
    from geomoe.evaluate.export import export
    from geomoe.evaluate.similar import similar

    want = {"search": search, "load_aoi": load_aoi, "plan_chips": plan_chips, "iter_chips": iter_chips,
            "load_model": load_model, "embed_region": embed_region, "open_cube": open_cube,
            "pretrain": pretrain, "probe": run_probe, "change": change, "export": export,
            "similar": similar}
    for name, fn in want.items():
        assert getattr(geomoe, name) is fn
    for name in PUBLIC:  # numpy-style documentation on every public function
        doc = inspect.getdoc(getattr(geomoe, name))
        assert "Parameters\n----------" in doc and "Returns\n-------" in doc, name
    ns: dict = {}
    exec("from geomoe import *", ns)
    assert set(PUBLIC) <= set(ns) and "__version__" not in ns
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        geomoe.nope  # noqa: B018


def test_import_geomoe_is_light_and_sets_openmp_first():
    got = _fresh("import json, os, sys, geomoe\n"
                 "print(json.dumps({'mods': sorted(m for m in ('torch', 'xarray', 'prefect', 'zarr', "
                 "'dask', 'rasterio', 'sklearn', 'matplotlib') if m in sys.modules), "
                 "'gomp': os.environ.get('GOMP_SPINCOUNT')}))")
    assert got == {"mods": [], "gomp": geomoe.OPENMP_SPINCOUNT}


def test_probe_is_run_probe_whichever_is_imported_first():
    got = _fresh("import json, geomoe.evaluate.probe as m\nimport geomoe\nfrom geomoe import probe\n"
                 "print(json.dumps([probe is m.run_probe, geomoe.probe is m.run_probe]))")
    assert got == [True, True]


def test_load_model_loads_eval_model_and_defaults_to_demo(tmp_path, monkeypatch):
    import torch

    from geomoe.errors import CheckpointError
    from geomoe.model import MoEMAE

    ckpt = seeded_checkpoint(tmp_path / "xxs.safetensors", seed=4)
    model = geomoe.load_model(ckpt)
    assert isinstance(model, MoEMAE) and not model.training and model.config.size == "XXS"
    ref = geomoe.load_model(str(ckpt), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    with torch.no_grad():
        emb = model.embed(torch.zeros(2, 7, 40, 40))
    assert emb.shape == (2, model.embed_dim) and emb.dtype == torch.float32
    # None: the demo checkpoint (size S), found from any working directory of the checkout
    monkeypatch.chdir(tmp_path)
    assert geomoe.load_model().config.size == "S"
    with pytest.raises(CheckpointError, match="not found"):
        geomoe.load_model(tmp_path / "missing.safetensors")


def test_pretrain_runs_stops_and_resumes(tmp_path):
    from geomoe.train.loop import TrainConfigError

    out = tmp_path / "run"
    with pytest.raises(TrainConfigError, match="unknown pretrain setting.*stepz"):
        geomoe.pretrain(LIVERPOOL, out, stepz=3)
    with pytest.raises(TrainConfigError, match="batch_size"):
        geomoe.pretrain(LIVERPOOL, out, batch_size=0)
    assert not out.exists()  # refused before anything was written

    kw = dict(size="XXS", steps=2, batch_size=8, checkpoint_every=1, seed=1, n_preview=1)
    part = geomoe.pretrain(LIVERPOOL, out, stop_at_step=1, log=None, **kw)
    assert (part.stopped, part.step, part.steps) == ("stop_at_step", 1, 2)
    done = geomoe.pretrain(LIVERPOOL, out, resume=True, log=None)  # saved settings kept
    assert (done.stopped, done.step) == ("done", 2)
    longer = geomoe.pretrain(LIVERPOOL, out, resume=True, steps=3, log=None)  # only steps changes
    assert (longer.step, longer.steps) == (3, 3)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["size"] == "XXS" and run["config"]["batch_size"] == 8
    assert geomoe.load_model(longer.model_path).config.size == "XXS"
    # a finished run is not replaced without overwrite
    from geomoe.errors import GeomoeError

    with pytest.raises(GeomoeError, match="overwrite"):
        geomoe.pretrain(LIVERPOOL, out, log=None, **kw)
