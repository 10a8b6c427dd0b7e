"""Device choice: ``auto`` | ``cpu`` | ``cuda[:N]``; bf16 autocast on CUDA for inference.

Why bf16 only on CUDA by default: on a GPU it is much faster than fp32, with tokens within
about 1e-2 relative L2; on CPU the gain depends on avx512_bf16 and the cube's reproducibility
matters more, so CPU stays fp32 unless asked (``embed-region --precision bf16``). CI has no
GPU: the CUDA figures come from benchmarks/bench_gpu.py (see benchmarks/README.md).
Pretraining is different (:func:`train_bf16`): there speed matters more than bit-equal
reruns across machines, so ``auto`` trains in bf16 wherever the hardware runs bf16 natively.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from pathlib import Path
from typing import ContextManager

import torch

from geomoe.errors import GeomoeError


class DeviceError(GeomoeError):
    """The requested device does not exist on this machine."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> first CUDA GPU if torch sees one, else CPU. ``cuda`` without a GPU is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} requested but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return dev
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")


PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    """Refuse an unknown ``--precision`` (one check and message for embedding and pretraining)."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")


def infer_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether inference runs under bf16 autocast: ``bf16`` (see :func:`bf16_honoured`), or
    ``auto`` on CUDA."""
    check_precision(precision)
    if precision == "bf16":
        return bf16_honoured(device)
    return precision == "auto" and device.type == "cuda"


def autocast(device: torch.device, precision: str = "auto") -> ContextManager:
    """Mixed-precision context for inference: bf16 where :func:`infer_bf16`, else fp32."""
    if not infer_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


#: Space- or comma-separated CPU flags that replace /proc/cpuinfo's (tests, odd platforms).
CPU_FLAGS_ENV = "GEOMOE_CPU_FLAGS"
#: ``1`` keeps ``--precision bf16`` on a CPU without native bf16 (see :func:`bf16_honoured`).
FORCE_BF16_ENV = "GEOMOE_FORCE_BF16"


class SlowBF16Warning(UserWarning):
    """bf16 was asked for on a CPU that only emulates it; geomoe runs fp32 instead."""


def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags: ``$GEOMOE_CPU_FLAGS`` if set, else /proc/cpuinfo's (Linux)."""
    override = os.environ.get(CPU_FLAGS_ENV)
    if override is not None:
        return frozenset(override.replace(",", " ").split())
    return _proc_cpu_flags()


@functools.lru_cache(maxsize=1)
def _proc_cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware on ``device``.

    CUDA GPUs with bf16 tensor cores (Ampere and later); x86 CPUs with AVX512-BF16 or AMX-BF16.
    Elsewhere bf16 is emulated and runs slower than fp32, so it is not chosen automatically.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return False


_WARNED: set[str] = set()  # one SlowBF16Warning per process and device type


def bf16_honoured(device: torch.device) -> bool:
    """Whether an explicit ``--precision bf16`` runs in bf16 on ``device``.

    Not on a CPU without AVX512-BF16/AMX: there bf16 is emulated and many times slower than
    fp32 (benchmarks/README.md), and its vectors differ from fp32 ones, so nothing is gained.
    geomoe then warns once (:class:`SlowBF16Warning`) and runs fp32; the summary and run.json
    record the precision actually used. ``GEOMOE_FORCE_BF16=1`` keeps bf16 anyway (to
    reproduce bf16 numbers of another machine, or to benchmark the slow path).
    """
    if device.type != "cpu" or native_bf16(device) or os.environ.get(FORCE_BF16_ENV) == "1":
        return True
    if device.type not in _WARNED:
        _WARNED.add(device.type)
        warnings.warn(SlowBF16Warning(
            "--precision bf16 asked for, but this CPU has neither AVX512-BF16 nor AMX: bf16 would "
            "be emulated, many times slower than fp32, so geomoe runs fp32 (set "
            f"{FORCE_BF16_ENV}=1 to keep bf16 anyway)"), stacklevel=3)
    return False


def train_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether a pretraining step runs under bf16 autocast: ``auto`` = where :func:`native_bf16`.

    Where the hardware runs bf16 natively, a bf16 training step is clearly faster than fp32
    (benchmarks/bench_model.py; figures in benchmarks/README.md).
    """
    check_precision(precision)
    if precision == "bf16":
        return bf16_honoured(device)
    return precision == "auto" and native_bf16(device)


# ---------------------------------------------------------------- threads
def cores_available() -> int:
    """The CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the whole machine, and torch's default thread count can exceed
    what a container or ``taskset`` grants: more compute threads than cores collapse throughput
    as soon as anything else is busy (benchmarks/README.md). A fractional quota rounds down
    (at least 1).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def _cgroup_cpu_quota() -> float | None:
    """CPUs granted by the cgroup (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        rel = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if line.startswith("0::")), "/")
    except OSError:
        rel = "/"
    root = Path("/sys/fs/cgroup")
    for d in {root / rel.lstrip("/"), root}:
        try:
            quota, period = (d / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        except (OSError, ValueError):
            pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def share_of_cores(n_workers: int) -> int:
    """Compute threads for each of ``n_workers`` worker processes on this machine (at least 1)."""
    return max(1, cores_available() // max(1, int(n_workers)))


def limit_threads(n: int | None = None) -> int:
    """Run torch with ``n`` compute threads (default: :func:`cores_available`), never more than
    the cores this process may use; returns the number set.

    Call it once per process before the model runs (the CLI does; so should a worker process,
    with its share: a Dask worker's ``nthreads`` or :func:`share_of_cores`). Inter-op threads are
    set to 1 where torch still allows it: geomoe runs no inter-op parallel work.
    """
    cores = cores_available()
    if n is not None and int(n) > cores:
        warnings.warn(f"{n} threads asked for, but this process may use {cores} core(s): "
                      f"using {cores}", stacklevel=2)
    n = max(1, min(cores, cores if n is None else int(n)))
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before inter-op work has started
        torch.set_num_interop_threads(1)
    return n
