"""Training z-scores with the statistics of the weights it trains, and keeps them with them."""

from __future__ import annotations

import csv

import pytest
import torch

from geomoe.chips.bands import PUBLISHED, Normalisation
from geomoe.model import build_model, load_checkpoint, save_checkpoint
from geomoe.train.loop import TrainConfig, train
from geomoe.train.state import load_state

OTHER = Normalisation(tuple(m * 0.5 + 1000.3 for m in PUBLISHED.mean), tuple(s * 1.7 for s in PUBLISHED.std))


def _losses(path):
    with open(path, newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The same weights twice: with other statistics and with the published ones."""
    d = tmp_path_factory.mktemp("bases")
    torch.manual_seed(0)
    model = build_model("XXS", norm_mean=OTHER.mean, norm_std=OTHER.std)
    other = save_checkpoint(model, d / "other.safetensors")
    pub = build_model("XXS")
    pub.load_state_dict(model.state_dict())
    return other, save_checkpoint(pub, d / "published.safetensors")


def test_fine_tuning_keeps_and_uses_the_weights_statistics(tmp_path, small_items, europe_aoi, bases):
    other, published = bases
    cfg = TrainConfig(size="XXS", steps=2, batch_size=4, checkpoint_every=1, seed=3)
    items = small_items[:6]
    a = train(items, tmp_path / "a", cfg, aoi=europe_aoi, init_from=other, stop_at_step=1, log=None)
    assert load_checkpoint(a.model_path).normalisation == OTHER  # the run's model keeps them
    assert load_state(a.state_path)["normalisation"] == OTHER.to_dict()
    resumed = train(items, tmp_path / "a", cfg, aoi=europe_aoi, resume=True, log=None)
    assert resumed.step == 2 and load_checkpoint(resumed.model_path).normalisation == OTHER
    b = train(items, tmp_path / "b", cfg, aoi=europe_aoi, init_from=published, log=None)
    assert load_checkpoint(b.model_path).normalisation == PUBLISHED
    # same weights, same chips, same seed: only the z-scoring differs, and so does the loss
    la, lb = _losses(resumed.metrics_path), _losses(b.metrics_path)
    assert len(la) == len(lb) == 2 and la[0] != pytest.approx(lb[0], rel=1e-3)
