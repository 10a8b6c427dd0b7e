"""Fast by default where it is safe (geomoe.embed.speed): with ``--precision auto --compile
auto`` a large job on a CPU with AVX512-BF16/AMX, or on a GPU, runs bf16 compiled; a small
job and an AVX2-only CPU stay fp32 eager; an explicit choice wins. CPU flags are injected with
GEOMOE_CPU_FLAGS, so every branch runs on any machine."""

from __future__ import annotations

import json
import re

import pytest
import torch

from geomoe.device import SlowBF16Warning
from geomoe.embed.request import EmbedRequest
from geomoe.embed.speed import LARGE_JOB_CHIPS, choose_speed, compile_setting

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
LARGE, SMALL = LARGE_JOB_CHIPS["cpu"], LARGE_JOB_CHIPS["cpu"] - 1
NATIVE, AVX2 = "avx2 avx512f avx512_bf16", "avx2 fma"


@pytest.mark.parametrize("flags, precision, compile, chips, want, words", [
    (NATIVE, "auto", "auto", LARGE, ("bf16", True), "large job"),
    ("avx2 amx_bf16", "auto", "auto", 10 * LARGE, ("bf16", True), "AMX"),
    (NATIVE, "auto", "auto", SMALL, ("fp32", False), "small job"),
    (NATIVE, "auto", "auto", 96, ("fp32", False), "would not pay off"),
    (AVX2, "auto", "auto", 10 * LARGE, ("fp32", False), "without AVX512-BF16"),
    # explicit choices win
    (NATIVE, "fp32", "auto", 10 * LARGE, ("fp32", False), "fp32 asked for"),
    (NATIVE, "auto", "off", 10 * LARGE, ("fp32", False), "eager bf16 is no faster"),
    (NATIVE, "auto", "on", 96, ("fp32", False), "no effect in fp32"),
    (NATIVE, "bf16", "auto", 96, ("bf16", False), "bf16 asked for"),
    (NATIVE, "bf16", "on", 96, ("bf16", True), "bf16 asked for"),
    (NATIVE, "bf16", "auto", LARGE, ("bf16", True), "bf16 asked for"),
])
def test_cpu_choice(monkeypatch, flags, precision, compile, chips, want, words):
    monkeypatch.setenv("GEOMOE_CPU_FLAGS", flags)
    c = choose_speed(CPU, precision, compile, chips)
    assert (c.precision, c.compile) == want, c
    assert words in c.reason and c.label().startswith(want[0])
    if "job" in words:
        assert f"{chips:,} chips" in c.reason


def test_bf16_asked_on_an_avx2_cpu_still_falls_back(monkeypatch):
    import geomoe.device

    monkeypatch.setenv("GEOMOE_CPU_FLAGS", AVX2)
    monkeypatch.setattr(geomoe.device, "_WARNED", set())
    with pytest.warns(SlowBF16Warning):
        c = choose_speed(CPU, "bf16", "on", 10 * LARGE)
    assert (c.precision, c.compile) == ("fp32", False) and "only emulates" in c.reason


def test_gpu_choice():
    """(A torch.device needs no GPU to exist: the rule reads only its type.)"""
    assert (choose_speed(CUDA, "auto", "auto", 100).precision,
            choose_speed(CUDA, "auto", "auto", 100).compile) == ("bf16", False)
    big = choose_speed(CUDA, "auto", "auto", LARGE_JOB_CHIPS["cuda"])
    assert (big.precision, big.compile) == ("bf16", True) and "GPU" in big.reason
    assert choose_speed(CUDA, "fp32", "auto", LARGE_JOB_CHIPS["cuda"]).precision == "fp32"
    assert not choose_speed(CUDA, "auto", "off", LARGE_JOB_CHIPS["cuda"]).compile


def test_compile_values():
    assert [compile_setting(v) for v in (True, False, None, "auto", "ON", "off")] == \
        ["on", "off", "auto", "auto", "on", "off"]
    assert EmbedRequest(aoi="x", compile=True).compile == "on"  # the library's bool
    assert EmbedRequest(aoi="x").compile == "auto" and EmbedRequest(aoi="x").precision == "auto"
    from geomoe.errors import GeomoeError

    with pytest.raises(GeomoeError, match="compile must be one of auto, on, off"):
        EmbedRequest(aoi="x", compile="fast")


def test_bare_compile_option_means_on():
    from geomoe.cli.app import build_parser

    p = build_parser()
    assert p.parse_args(["embed-region", "--aoi", "x"]).compile == "auto"
    assert p.parse_args(["embed-region", "--aoi", "x", "--compile"]).compile == "on"
    assert p.parse_args(["embed-region", "--aoi", "x", "--compile", "off"]).compile == "off"


def test_cli_end_line_says_what_ran_and_why(ckpt_xxs, liverpool_scene_aoi, tmp_path, monkeypatch,
                                            capsys):
    """A real embed-region run of 96 chips (a small job) on a CPU with AVX512-BF16 stays fp32
    eager, and its summary (end line and JSON) and the cube's run log say so and why."""
    from geomoe.cli import main

    monkeypatch.setenv("GEOMOE_CPU_FLAGS", NATIVE)
    out = tmp_path / "c.zarr"
    args = ["embed-region", "--aoi", str(liverpool_scene_aoi), "--out", str(out),
            "--checkpoint", str(ckpt_xxs), "--device", "cpu", "--quiet", "--batch-size", "64",
            "--min-valid", "0"]
    assert main(args) == 0
    # the planned count is the footprints' estimate when the choice is made
    words = r"fp32 \(auto: small job, about \d+ chips, the compile would not pay off\)"
    assert re.search(f"chips/s on cpu, {words}", capsys.readouterr().out)
    run_log = json.loads((out / "zarr.json").read_text())["attributes"]["geomoe:run_log"]
    assert run_log[-1]["precision"] == "fp32" and re.fullmatch(words, run_log[-1]["speed"])
