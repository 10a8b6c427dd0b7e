"""`geomoe pretrain` end to end (+ --resume), the LR schedule, previews, and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from geomoe.cli import main
from geomoe.train.loop import WarmupCosine, unpatchify

from .conftest import REPO

LIVERPOOL = str(REPO / "catalogs" / "aois" / "liverpool.geojson")


def test_cli_pretrain_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["pretrain", "--aoi", LIVERPOOL, "--out", str(out), "--size", "XXS",
              "--batch-size", "8", "--checkpoint-every", "2", "--threads", "1", "--precision", "bf16"]
    assert main([*common, "--steps", "4", "--stop-at-step", "2"]) == 0
    assert "stop_at_step: step 2/4" in capsys.readouterr().out
    assert main(["pretrain", "--aoi", LIVERPOOL, "--out", str(out), "--resume",
                 "--export", str(tmp_path / "export.safetensors")]) == 0  # saved settings reused
    text = capsys.readouterr().out
    assert "done: step 4/4" in text and "exported" in text
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for key in ("loss", "loss_masked", "loss_unmasked", "moe_loss", "lr", "chips_per_s"):
        assert all(np.isfinite(float(r[key])) for r in rows), key
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["data_end"] == "2020-09-27T11:10:50Z"
    assert run["config"]["precision"] == run["precision"] == "bf16"  # kept on resume
    from geomoe.model import load_checkpoint

    m = load_checkpoint(tmp_path / "export.safetensors")
    assert m.config.size == "XXS" and m.checkpoint_extra["train_step"] == 4
    png = (out / "previews" / "step_0000004.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # another size on resume: a one-line error, exit 1, the run untouched
    assert main(["pretrain", "--aoi", LIVERPOOL, "--out", str(out), "--resume", "--size", "S"]) == 1
    assert "size-XXS training state" in capsys.readouterr().err
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 4


def test_cli_pretrain_on_empty_aoi_is_a_clear_error(tmp_path, capsys):
    empty = str(REPO / "catalogs" / "aois" / "empty.geojson")
    assert main(["pretrain", "--aoi", empty, "--out", str(tmp_path / "r"), "--steps", "1",
                 "--size", "XXS"]) == 1
    assert "error" in capsys.readouterr().err


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=10, total=110, min_ratio=0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the cosine
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)
    vals = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_unpatchify_inverts_the_models_patchify():
    from geomoe.model import build_model

    m = build_model("XXS")
    x = torch.randn(3, 7, 40, 40)
    assert torch.equal(unpatchify(m.patchify(x), 4, 7), x)


def test_cli_compile_flag_and_resume(tmp_path):
    """--compile / --no-compile set TrainConfig.compile; a resume without either keeps the saved value."""
    from geomoe.cli import build_parser
    from geomoe.cli.pretrain import _config_from_args
    from geomoe.train.loop import TrainConfig

    parse = build_parser(only="pretrain").parse_args
    out = tmp_path / "run"
    assert _config_from_args(parse(["pretrain", "--out", str(out)]), out).compile is False
    assert _config_from_args(parse(["pretrain", "--out", str(out), "--compile"]), out).compile is True
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"config": TrainConfig(compile=True).to_json()}))
    assert _config_from_args(parse(["pretrain", "--out", str(out), "--resume"]), out).compile is True
    assert _config_from_args(parse(["pretrain", "--out", str(out), "--resume", "--no-compile"]), out).compile is False
