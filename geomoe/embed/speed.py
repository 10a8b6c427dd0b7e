"""Fast by default where it is safe: the precision and compile setting of one embed-region run.

``--precision auto`` and ``--compile auto`` (the defaults) resolve here, once the chips are
planned, because whether compiling pays off depends on the size of the job:

- on a CPU with AVX512-BF16 or AMX, a large job runs bf16 with the compiled encoder (the
  one-off compile is paid back many times; eager bf16 is no faster than fp32 on a CPU, so bf16
  is only chosen together with the compiled graph); a small job stays fp32 eager, even with
  ``--compile on`` (which has no effect in fp32, as before);
- on a CPU without them bf16 is emulated and slow: fp32 eager, whatever the size;
- on a CUDA GPU bf16 autocast (as before), and the compiled encoder for a large job.

bf16 vectors stay within the tolerance geomoe documents for them (about 1e-2 relative L2 to
fp32, tests/cube/test_embed_region.py and tests/model/test_determinism.py check it), and
precision is not part of a cube's identity (a bf16 rerun may finish an fp32 cube). An explicit
``--precision`` or ``--compile on|off`` always wins. Figures behind the thresholds:
benchmarks/README.md (section "Model internals").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: ``--compile`` values: auto (decided by :func:`choose_speed`), on, off.
COMPILE_CHOICES = ("auto", "on", "off")

#: Planned chips from which a job counts as large, per device type: where the encoder's one-off
#: compile (and, on a CPU, switching to bf16) is paid back within the run. On a GPU eager bf16
#: is already fast, so the compile needs a much larger job to pay off.
LARGE_JOB_CHIPS = {"cpu": 20_000, "cuda": 5_000_000}


@dataclass(frozen=True)
class SpeedChoice:
    """What a run computes in, and why (a few words for the summary)."""

    precision: str  # "fp32" or "bf16": what the model runs in
    compile: bool  # the compiled encoder (only ever with bf16)
    reason: str

    def label(self) -> str:
        """E.g. ``bf16 compiled (auto: large job, about 1,234,567 chips, CPU with AVX512-BF16)``."""
        return f"{self.precision}{' compiled' if self.compile else ''} ({self.reason})"


def compile_setting(value: Any) -> str:
    """``--compile`` as one of :data:`COMPILE_CHOICES`; booleans (the library's and older
    flows' ``compile=True/False``) mean on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "auto"
    text = str(value).strip().lower()
    if text in COMPILE_CHOICES:
        return text
    from geomoe.errors import GeomoeError

    raise GeomoeError(f"compile must be one of {', '.join(COMPILE_CHOICES)} (or true/false), "
                      f"not {value!r}")


def is_large(device_type: str, planned_chips: int) -> bool:
    """Whether ``planned_chips`` make a large job on this device type."""
    return planned_chips >= LARGE_JOB_CHIPS.get(device_type, LARGE_JOB_CHIPS["cuda"])


def choose_speed(device: Any, precision: str, compile: Any, planned_chips: int) -> SpeedChoice:
    """Resolve ``precision`` and ``compile`` for a run of ``planned_chips`` chips on ``device``.

    Parameters
    ----------
    device : torch.device
        Where the model runs.
    precision : {"auto", "fp32", "bf16"}
        As asked; an explicit value wins (bf16 on a CPU that only emulates it still falls back
        to fp32 with a warning, :func:`geomoe.device.bf16_honoured`).
    compile : {"auto", "on", "off"} or bool
        As asked; "on" compiles wherever the model runs in bf16, "off" never.
    planned_chips : int
        Chips the run plans (all tiles, finished ones included).

    Returns
    -------
    SpeedChoice
    """
    from geomoe.device import bf16_honoured, check_precision, native_bf16

    check_precision(precision)
    comp = compile_setting(compile)
    kind = device.type
    large = is_large(kind, int(planned_chips))
    # planned chips are an estimate until every tile is read (per-tile planning): said so
    size = f"{'large' if large else 'small'} job, about {int(planned_chips):,} chips"
    if precision == "fp32":
        bf16, why = False, "fp32 asked for"
    elif precision == "bf16":
        bf16 = bf16_honoured(device)
        why = "bf16 asked for" if bf16 else "bf16 asked for, but this CPU only emulates it"
    elif kind == "cuda":
        bf16, why = True, f"auto: GPU, {size}"
    elif kind == "cpu" and native_bf16(device):
        if comp == "off":
            bf16, why = False, "auto: --compile off, and eager bf16 is no faster on a CPU"
        elif large:
            bf16, why = True, f"auto: {size}, CPU with AVX512-BF16/AMX"
        else:
            bf16, why = False, f"auto: {size}, the compile would not pay off"
    else:
        bf16, why = False, f"auto: {kind.upper()} without AVX512-BF16/AMX"
    compiled = bf16 and (comp == "on" or (comp == "auto" and large))
    if comp == "on" and not bf16:
        why += "; --compile has no effect in fp32"
    return SpeedChoice("bf16" if bf16 else "fp32", compiled, why)


def resolved(req: Any, choice: SpeedChoice) -> Any:
    """``req`` (an :class:`~geomoe.embed.request.EmbedRequest`) with the chosen precision and
    compile setting in place of "auto", so every later step runs what was chosen."""
    return dataclasses.replace(req, precision=choice.precision,
                               compile="on" if choice.compile else "off")
