"""The machine a benchmark ran on, in one line, for every results file.

Speed on this project's CPUs depends on the model, the cores a process may use and a few SIMD
flags (bf16 is native only with AVX512-BF16 or AMX), so every benchmark prints them.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: the CPU flags that decide which precision and kernels are fast
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "f16c")


def describe() -> str:
    """E.g. ``AMD EPYC (family 25 model 17); 2 cores usable of 2; avx2 avx512f avx512_bf16; 23 GiB RAM``."""
    model, family, number, flags = platform.processor() or "unknown CPU", "?", "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                model = value
            elif key == "cpu family":
                family = value
            elif key == "model":
                number = value
            elif key == "flags":
                flags = set(value.split())
                break  # the first CPU's lines are enough
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    simd = " ".join(f for f in FLAGS if f in flags) or "none of " + "/".join(FLAGS)
    return (f"{model} (family {family} model {number}); {usable} cores usable of {os.cpu_count()}; "
            f"{simd}; {ram:.0f} GiB RAM")
