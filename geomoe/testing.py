"""Fault injection for crash-safety tests: a REAL SIGKILL at a named point.

``GEOMOE_FAULT=<point>:<n>`` kills the process the n-th time ``fault(point)`` runs. Unset
(the normal case) it costs one dict lookup. Points: ``before_tile_write``,
``after_data_before_commit`` (chunks written, completion not recorded), ``after_tile_write``.

``GEOMOE_FAULT_ONCE=<path>`` in addition: the kill happens only in the first process that
creates ``<path>`` (exclusively), so that among several processes with the same environment
(the workers of a Dask cluster, a worker the nanny restarts) exactly one is killed.
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
        once = os.environ.get("GEOMOE_FAULT_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # another process took the one kill
                return
        os.kill(os.getpid(), signal.SIGKILL)
