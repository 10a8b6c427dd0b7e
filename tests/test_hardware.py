"""Hardware traps: bf16 on a CPU that only emulates it, and more compute threads than cores.

The CPU flags are injected with GEOMOE_CPU_FLAGS (read by geomoe.device._cpu_flags), so the
no-bf16 path runs honestly on a machine that has AVX512-BF16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import geomoe.device as device
from geomoe.device import (SlowBF16Warning, cores_available, infer_bf16, limit_threads, native_bf16,
                           share_of_cores, train_bf16)
from tests.conftest import REPO, seeded_checkpoint

CPU = torch.device("cpu")
NO_BF16 = "fpu sse2 avx avx2 fma"  # an AVX2-only CPU, e.g. the 2-core EPYC of the issue
LIVERPOOL = REPO / "catalogs" / "aois" / "liverpool.geojson"


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(device, "_WARNED", set())
    monkeypatch.delenv(device.FORCE_BF16_ENV, raising=False)


def test_cpu_flags_are_injectable(monkeypatch):
    monkeypatch.setenv("GEOMOE_CPU_FLAGS", NO_BF16)
    assert not native_bf16(CPU)
    monkeypatch.setenv("GEOMOE_CPU_FLAGS", "avx2,avx512f,avx512_bf16")
    assert native_bf16(CPU)
    monkeypatch.setenv("GEOMOE_CPU_FLAGS", "avx2 amx_bf16")
    assert native_bf16(CPU)


@pytest.mark.parametrize("decide", [infer_bf16, train_bf16])
def test_bf16_without_native_support_falls_back_to_fp32_with_a_warning(decide, monkeypatch, fresh_warning):
    monkeypatch.setenv("GEOMOE_CPU_FLAGS", NO_BF16)
    with pytest.warns(SlowBF16Warning, match="neither AVX512-BF16 nor AMX.*runs fp32.*GEOMOE_FORCE_BF16=1"):
        assert decide(CPU, "bf16") is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not once per batch
        assert decide(CPU, "bf16") is False
        assert decide(CPU, "auto") is False and decide(CPU, "fp32") is False
    monkeypatch.setenv(device.FORCE_BF16_ENV, "1")
    assert decide(CPU, "bf16") is True


def test_bf16_is_kept_where_native(monkeypatch, fresh_warning):
    monkeypatch.setenv("GEOMOE_CPU_FLAGS", "avx2 avx512_bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert infer_bf16(CPU, "bf16") and train_bf16(CPU, "bf16") and train_bf16(CPU, "auto")
        assert not infer_bf16(CPU, "auto")  # inference stays fp32 on CPU unless asked


def test_limit_threads_never_exceeds_the_cores():
    before = torch.get_num_threads()
    try:
        cores = cores_available()
        assert 1 <= cores <= len(os.sched_getaffinity(0))
        assert limit_threads(1) == 1 == torch.get_num_threads()
        assert limit_threads() == cores == torch.get_num_threads()
        with pytest.warns(UserWarning, match=f"{cores + 3} threads asked for.*using {cores}"):
            assert limit_threads(cores + 3) == cores == torch.get_num_threads()
        assert share_of_cores(cores * 4) == 1 and share_of_cores(1) == cores
    finally:
        torch.set_num_threads(before)


def test_cores_available_follows_the_affinity_mask():
    """A process pinned to one core (taskset, a container's cpuset) sees one core."""
    code = "from geomoe.device import cores_available; print(cores_available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert out.stdout.strip() == "1", out.stderr


def test_embed_region_cli_bf16_on_a_cpu_without_it(tmp_path):
    """The real CLI on an (injected) AVX2-only CPU, pinned to one core, no --threads: it warns
    once, runs fp32 with one torch thread, and the summary says so."""
    ckpt = seeded_checkpoint(tmp_path / "xxs.safetensors")
    env = {**os.environ, "GEOMOE_CPU_FLAGS": NO_BF16}
    env.pop("GEOMOE_FORCE_BF16", None)
    proc = subprocess.run(
        [sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi", str(LIVERPOOL), "--out",
         str(tmp_path / "c.zarr"), "--checkpoint", str(ckpt), "--precision", "bf16", "--json",
         "--quiet", "--device", "cpu"],
        capture_output=True, text=True, timeout=240, env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["precision"] == "fp32" and summary["threads"] == 1
    warned = [line for line in proc.stderr.splitlines() if "AVX512-BF16" in line]
    assert len(warned) == 1 and warned[0].startswith("geomoe: warning: --precision bf16 asked for")


def test_embed_region_threads_option(tmp_path):
    ckpt = seeded_checkpoint(tmp_path / "xxs.safetensors")
    proc = subprocess.run(
        [sys.executable, "-m", "geomoe.cli", "embed-region", "--aoi", str(LIVERPOOL), "--out",
         str(tmp_path / "c.zarr"), "--checkpoint", str(ckpt), "--threads", "1", "--json", "--quiet"],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["threads"] == 1


def _spin_env(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    res = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True,
                         text=True, check=True)
    return res.stdout.strip()


def test_geomoe_shortens_openmp_spins_unless_the_user_chose():
    """libgomp reads GOMP_SPINCOUNT when torch loads: geomoe first sets a short one, never
    over the user's own OpenMP wait settings, and not once torch is already loaded."""
    show = "import os; print(os.environ.get('GOMP_SPINCOUNT'))"
    assert _spin_env(f"import geomoe, torch; {show}") == "1000"
    assert _spin_env(f"import geomoe; {show}", GOMP_SPINCOUNT="50") == "50"
    assert _spin_env(f"import geomoe; {show}", OMP_WAIT_POLICY="active") == "None"
    assert _spin_env(f"import torch, geomoe; {show}") == "None"
