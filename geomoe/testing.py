"""Fault injection for crash-safety tests: a REAL SIGKILL at a named point.

``GEOMOE_FAULT=<point>:<n>`` kills the process the n-th time ``fault(point)`` runs. Unset
(the normal case) it costs one dict lookup. Points: ``before_tile_write``,
``after_data_before_commit`` (chunks written, completion not recorded), ``after_tile_write``.
"""

from __future__ import annotations

import os
import signal

_COUNTS: dict[str, int] = {}


def fault(point: str) -> None:
    spec = os.environ.get("GEOMOE_FAULT")
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != point:
        return
    _COUNTS[point] = _COUNTS.get(point, 0) + 1
    if _COUNTS[point] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
