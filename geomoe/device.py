"""Device choice for inference: ``auto`` | ``cpu`` | ``cuda[:N]``; bf16 autocast on CUDA.

Why bf16 only on CUDA by default: on an H100 it is 2.3x fp32 (40.6k vs 17.6k chips/s, size S,
batch 16384) with tokens within ~1.3e-2 relative L2; on CPU the gain depends on avx512_bf16
and the cube's reproducibility matters more, so CPU stays fp32 unless asked
(``precision="bf16"``). CI has no GPU: the CUDA figures come from benchmarks/bench_gpu.py.
"""

from __future__ import annotations

import contextlib
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


def autocast(device: torch.device, precision: str = "auto") -> ContextManager:
    """Mixed-precision context: bf16 on CUDA (``auto``), fp32 on CPU unless ``bf16``."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    if precision in ("auto", "bf16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise DeviceError(f"unknown precision {precision!r}: use auto, fp32 or bf16")
