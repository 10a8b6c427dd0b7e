"""Exact resume: N steps + resume + N steps == 2N steps (real chips, size XXS, CPU)."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch

from geomoe.train.loop import TrainConfig, train
from geomoe.train.state import ResumeMismatchError, load_state


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_exactly(tmp_path, small_items, europe_aoi, precision):
    # batch 7 over ~24 chips: the resume point (step 3 = chip 21) sits mid-epoch and the next
    # batch crosses into epoch 1, so data position, shuffling and every RNG must all be restored.
    cfg = TrainConfig(size="XXS", steps=6, batch_size=7, checkpoint_every=3, warmup_steps=2, seed=3,
                      precision=precision)
    full = train(small_items, tmp_path / "full", cfg, aoi=europe_aoi, log=None)
    assert full.stopped == "done" and full.step == 6

    part = train(small_items, tmp_path / "split", cfg, aoi=europe_aoi, stop_at_step=3, log=None)
    assert part.stopped == "stop_at_step" and part.step == 3
    state = torch.load(part.state_path, map_location="cpu", weights_only=True)  # plain tensors only
    assert state["step"] == 3 and state["data_position"]["epoch"] == 0
    assert state["data_position"]["offset"] == 21
    # a crash after the checkpoint would leave metric rows past step 3: fake two of them
    with open(part.metrics_path, "a", newline="") as fh:
        fh.write("4,0,1,1,1,1,1,1,1,1,1,1\n5,0,1,1,1,1,1,1,1,1,1,1\n")
    # scramble every global RNG: the resume must restore them from the state, not rely on luck
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)
    resumed = train(small_items, tmp_path / "split", cfg, aoi=europe_aoi, resume=True, log=None)
    assert resumed.stopped == "done" and resumed.step == 6

    a, b = _rows(full.metrics_path), _rows(resumed.metrics_path)
    assert [int(r["step"]) for r in b] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "loss_masked", "loss_unmasked", "moe_loss", "lr", "grad_norm", "epoch"):
        np.testing.assert_allclose(
            [float(r[key]) for r in a], [float(r[key]) for r in b], rtol=1e-5, atol=1e-6,
            err_msg=key,
        )
    assert int(a[-1]["epoch"]) == 1  # the run did cross an epoch boundary
    sa, sb = load_state(full.state_path), load_state(resumed.state_path)
    for k, v in sa["model"].items():
        torch.testing.assert_close(sb["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    for pid, st in sa["optimizer"]["state"].items():
        torch.testing.assert_close(sb["optimizer"]["state"][pid]["exp_avg_sq"], st["exp_avg_sq"],
                                   rtol=1e-5, atol=1e-9)
    assert sa["data_position"] == sb["data_position"]
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == 6
    assert (tmp_path / "split" / "previews" / "step_0000006.png").is_file()


def test_resume_refuses_other_size(tmp_path, small_items, europe_aoi):
    cfg = TrainConfig(size="XXS", steps=2, batch_size=4, checkpoint_every=1)
    train(small_items[:6], tmp_path / "r", cfg, aoi=europe_aoi, stop_at_step=1, log=None)
    with pytest.raises(ResumeMismatchError, match=r"size-XXS .*--size XS"):
        train(small_items[:6], tmp_path / "r", TrainConfig(size="XS", steps=2, batch_size=4),
              aoi=europe_aoi, resume=True, log=None)
    with pytest.raises(ResumeMismatchError, match="other items"):
        train(small_items[:5], tmp_path / "r", cfg, aoi=europe_aoi, resume=True, log=None)
    with pytest.raises(ResumeMismatchError, match="batch_size"):
        train(small_items[:6], tmp_path / "r", TrainConfig(size="XXS", steps=2, batch_size=5),
              aoi=europe_aoi, resume=True, log=None)


def test_init_from_checkpoint_of_other_size_is_refused(tmp_path, small_items, europe_aoi):
    from geomoe.model import build_model, save_checkpoint

    ckpt = save_checkpoint(build_model("XXS"), tmp_path / "xxs.safetensors")
    with pytest.raises(ResumeMismatchError, match="size-XXS model but this run is size XS"):
        train(small_items[:4], tmp_path / "r", TrainConfig(size="XS", steps=1, batch_size=2),
              aoi=europe_aoi, init_from=ckpt, log=None)
