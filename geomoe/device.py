"""Device choice: ``auto`` | ``cpu`` | ``cuda[:N]``; bf16 autocast on CUDA for inference.

Why bf16 only on CUDA by default: on an H100 it is 2.3x fp32 (40.6k vs 17.6k chips/s, size S,
batch 16384) with tokens within ~1.3e-2 relative L2; on CPU the gain depends on avx512_bf16
and the cube's reproducibility matters more, so CPU stays fp32 unless asked
(``embed-region --precision bf16``). CI has no GPU: the CUDA figures come from
benchmarks/bench_gpu.py.
Pretraining is different (:func:`train_bf16`): there speed matters more than bit-equal
reruns across machines, so ``auto`` trains in bf16 wherever the hardware runs bf16 natively.
"""

from __future__ import annotations

import contextlib
import functools
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
    """Whether inference runs under bf16 autocast: ``bf16``, or ``auto`` on CUDA."""
    check_precision(precision)
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str = "auto") -> ContextManager:
    """Mixed-precision context for inference: bf16 where :func:`infer_bf16`, else fp32."""
    if not infer_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
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


def train_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether a pretraining step runs under bf16 autocast: ``auto`` = where :func:`native_bf16`.

    Measured (size S, batch 128, forward_mae + backward + AdamW, 2-core Zen 4 with
    AVX512-BF16, benchmarks/bench_model.py): bf16 ~1.5x fp32 (223-236 vs 145-159 chips/s).
    """
    check_precision(precision)
    return precision == "bf16" or (precision == "auto" and native_bf16(device))
