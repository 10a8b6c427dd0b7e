"""Pretraining precision: ``auto`` picks bf16 autocast only where the hardware runs it natively."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from geomoe.device import DeviceError, _cpu_flags, native_bf16, train_bf16
from geomoe.train.loop import TrainConfig, train


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("GEOMOE_FORCE_BF16", "1")  # bf16 even where the CPU only emulates it
    assert train_bf16(cpu, "bf16") and not train_bf16(cpu, "fp32")
    assert train_bf16(cpu, "auto") == bool({"avx512_bf16", "amx_bf16"} & _cpu_flags()) == native_bf16(cpu)
    with pytest.raises(DeviceError, match="unknown precision 'half'.*auto, fp32, bf16"):
        train_bf16(cpu, "half")


def test_run_folders_written_before_precision_resume_as_they_ran():
    legacy = TrainConfig().to_json()
    del legacy["precision"]
    assert TrainConfig.from_json({**legacy, "amp": False}).precision == "fp32"
    assert TrainConfig.from_json({**legacy, "amp": True}).precision == "auto"


def test_bf16_pretraining_optimises_the_same_loss(tmp_path, small_items, europe_aoi, monkeypatch):
    """Same seed, same chips and masks: bf16 autocast steps track the fp32 ones closely."""
    monkeypatch.setenv("GEOMOE_FORCE_BF16", "1")  # bf16 even where the CPU only emulates it
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(size="XXS", steps=3, batch_size=8, checkpoint_every=3, warmup_steps=1,
                          seed=1, precision=precision)
        res = train(small_items, tmp_path / precision, cfg, aoi=europe_aoi, log=None)
        assert json.loads((tmp_path / precision / "run.json").read_text())["precision"] == precision
        with open(res.metrics_path, newline="") as fh:
            losses[precision] = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses["bf16"]) == 3
    # bf16 rounds activations to 8 mantissa bits: measured within 5e-4 relative, not to the bit
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=5e-3)
    assert losses["bf16"] != losses["fp32"]  # it really ran under autocast


@pytest.mark.slow  # compiles forward + backward: about 50 s on 2 cores with a cold inductor cache
def test_compiled_pretraining_takes_the_same_steps(tmp_path, small_items, europe_aoi, monkeypatch):
    """--compile: the same seeded steps as eager (same masks, dropout and routing noise), in fp32
    to within float rounding."""
    import geomoe.model

    # the real train() loop on an XXS cut to 3 encoder layers and 1 decoder layer: full XXS took
    # 95 s to compile cold, a tenth of the suite's time on a fresh machine
    real = geomoe.model.build_model
    monkeypatch.setattr(geomoe.model, "build_model", lambda size: real(size, depth=3, decoder_depth=1))
    losses = {}
    for compiled in (False, True):
        cfg = TrainConfig(size="XXS", steps=2, batch_size=8, checkpoint_every=2, warmup_steps=1,
                          seed=1, precision="fp32", compile=compiled)
        res = train(small_items, tmp_path / str(compiled), cfg, aoi=europe_aoi, log=None)
        assert json.loads((tmp_path / str(compiled) / "run.json").read_text())["config"]["compile"] is compiled
        with open(res.metrics_path, newline="") as fh:
            losses[compiled] = [float(r["loss"]) for r in csv.DictReader(fh)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)


def test_bf16_on_a_cpu_without_it_trains_in_fp32_and_says_so(tmp_path, small_items, europe_aoi,
                                                                monkeypatch):
    """An AVX2-only CPU (flags injected): --precision bf16 warns, trains fp32, records fp32."""
    import geomoe.device
    from geomoe.device import SlowBF16Warning

    monkeypatch.setenv("GEOMOE_CPU_FLAGS", "fpu sse2 avx avx2 fma")
    monkeypatch.delenv("GEOMOE_FORCE_BF16", raising=False)
    monkeypatch.setattr(geomoe.device, "_WARNED", set())
    cfg = TrainConfig(size="XXS", steps=1, batch_size=8, checkpoint_every=1, warmup_steps=1,
                      seed=1, precision="bf16")
    with pytest.warns(SlowBF16Warning, match="neither AVX512-BF16 nor AMX"):
        train(small_items, tmp_path / "run", cfg, aoi=europe_aoi, log=None)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["precision"] == "fp32" and run["config"]["precision"] == "bf16"
