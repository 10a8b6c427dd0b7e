"""The z-scoring belongs to the weights: a checkpoint carries its DN statistics, and one without
them (the published .pth, older files) gets the published ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geomoe.chips.bands import PUBLISHED, Normalisation, zscore
from geomoe.errors import CheckpointError
from geomoe.model import build_model, load_checkpoint, save_checkpoint, save_published

OTHER = Normalisation(tuple(m * 0.5 + 1000.3 for m in PUBLISHED.mean), tuple(s * 1.7 for s in PUBLISHED.std))


def test_checkpoint_carries_its_statistics_and_preprocess_applies_them(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(build_model("XXS", norm_mean=OTHER.mean, norm_std=OTHER.std), tmp_path / "o.safetensors")
    model = load_checkpoint(path)
    assert model.normalisation == OTHER != PUBLISHED
    px = np.random.default_rng(0).integers(0, 30000, (3, 7, 40, 40), dtype=np.uint16)
    want = (px.astype(np.float32) - np.float32(OTHER.mean)[:, None, None]) / np.float32(OTHER.std)[:, None, None]
    np.testing.assert_array_equal(model.preprocess(px), want)
    assert model.preprocess(px).dtype == np.float32
    # what a cube records is exactly what was applied (float32 values, the precision used)
    rec = model.normalisation.to_dict()
    np.testing.assert_array_equal(zscore(px, rec["mean"], rec["std"]), want)


def test_checkpoints_without_statistics_get_the_published_ones(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_model("XXS")
    pth = save_published(model, tmp_path / "pub.pth")  # the published layout has no config at all
    assert load_checkpoint(pth).normalisation == PUBLISHED
    cfg = model.config.to_dict()
    del cfg["norm_mean"], cfg["norm_std"]  # a geomoe file written before the config had them
    old = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(old),
              metadata={"format": "geomoe.moemae", "format_version": "1", "config": json.dumps(cfg),
                        "extra": "{}"})
    assert load_checkpoint(old).normalisation == PUBLISHED
    np.testing.assert_array_equal(PUBLISHED.mean, np.asarray(PUBLISHED.mean, np.float32))


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan")])
def test_unusable_statistics_are_refused(tmp_path, std):
    bad = tuple([std] + list(PUBLISHED.std[1:]))
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        build_model("XXS", norm_std=bad)
    with pytest.raises(ValueError, match="7 values each"):
        build_model("XXS", norm_mean=PUBLISHED.mean[:6])
    # a file that says so is a CheckpointError naming the problem
    torch.manual_seed(0)
    path = save_checkpoint(build_model("XXS"), tmp_path / "x.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    cfg["norm_std"] = list(bad)
    save_file(sd, str(path), metadata={**meta, "config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match="std must be finite and > 0"):
        load_checkpoint(path)
