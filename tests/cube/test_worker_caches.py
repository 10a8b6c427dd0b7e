"""A long-lived worker (Dask, a Prefect process) embeds with many checkpoints and cubes: its
per-process caches of models and plans keep only the last few, so memory does not grow."""

from __future__ import annotations

import dataclasses
import gc
import shutil
import weakref

import torch

from geomoe.embed import pipeline as emb
from geomoe.model import checkpoint_sha256
from tests.conftest import seeded_checkpoint


def test_models_of_many_checkpoints_are_not_all_kept(ckpt_xxs, ckpt_xxs_other, tmp_path):
    third = seeded_checkpoint(tmp_path / "xxs-seed2.safetensors", seed=2)
    first = weakref.ref(emb.get_model(ckpt_xxs, checkpoint_sha256(ckpt_xxs), torch.device("cpu")))
    for ck in (ckpt_xxs_other, third, ckpt_xxs_other, third):
        model = emb.get_model(ck, checkpoint_sha256(ck), torch.device("cpu"))
        assert model is emb.get_model(ck, checkpoint_sha256(ck), torch.device("cpu"))  # still cached
    del model
    gc.collect()
    assert len(emb._MODELS) <= 2 and len(emb._CKPT_INFO) <= 8
    assert first() is None  # the first checkpoint's weights were released


def test_plans_of_many_cubes_are_not_all_kept(liverpool_reference, liverpool_aoi, ckpt_xxs, tmp_path):
    ref, _ = liverpool_reference
    plans = []
    for k in range(4):
        out = tmp_path / f"cube{k}.zarr"
        shutil.copytree(ref, out)
        req = dataclasses.asdict(emb.EmbedRequest(aoi=str(liverpool_aoi), out=str(out),
                                                  checkpoint=str(ckpt_xxs), batch_size=8, tile_size=2))
        prep = emb.prepared_for(req, run=1)
        assert prep is emb.prepared_for(req, run=1) and prep.cube.path.resolve() == out.resolve()
        plans.append(weakref.ref(prep))
    del prep
    gc.collect()
    assert len(emb._PREPARED) <= 2
    assert plans[0]() is None and plans[1]() is None and plans[3]() is not None
