"""Tiles -> task batches: the unit of work of a distributed embed-region run.

Why batches: every Prefect task run costs a fixed overhead (submission, state changes on the
server, the result's trip back), far larger on a Dask cluster than in the flow's own threads
(benchmarks/results/prefect_tasks.txt). A continental cube has thousands of tiles; one task
per tile would let that overhead dominate and load the server with task runs. A batch is a
run of tiles of ONE group, adjacent in tile order (row-major for a grid group), so its tiles
mostly read the same few scenes. Tiles stay the unit of writing and resuming: a batch commits
each tile as it finishes, so a killed worker loses only the unfinished tiles of its batch,
and a rerun (or the task's retry) redoes only the tiles not recorded as done.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Sequence

from geomoe.cube.layout import CubeTile

#: Upper bound on tiles per task (auto mode): bounds a task's wall time, so the flow's progress
#: (per finished task) keeps moving on a long run. It does not bound what a killed worker loses:
#: tiles are committed one by one.
MAX_TILES_PER_TASK = 64

#: Auto mode aims at this many tasks per worker (slot), so that workers finish together and
#: the flow's progress moves in small steps.
TASKS_PER_SLOT = 8


def auto_tiles_per_task(n_tiles: int, slots: int = 1) -> int:
    """Tiles per task when the user gives none: about ``TASKS_PER_SLOT`` tasks per slot, at
    least 1 and at most :data:`MAX_TILES_PER_TASK` tiles each.

    ``slots`` is how many tasks run at once (Dask workers; 1 for the flow's own threads, which
    share one model). Small runs get one tile per task (nothing to amortise, best balance);
    large runs get full batches.
    """
    want_tasks = max(1, int(slots)) * TASKS_PER_SLOT
    return max(1, min(MAX_TILES_PER_TASK, math.ceil(max(0, int(n_tiles)) / want_tasks)))


def batch_tiles(tiles: Iterable[CubeTile], tiles_per_task: int) -> list[list[CubeTile]]:
    """Split ``tiles`` into batches of at most ``tiles_per_task`` tiles of one group each.

    Parameters
    ----------
    tiles : iterable of CubeTile
        The tiles to embed (e.g. ``Cube.pending_tiles()``); any order, no duplicates.
    tiles_per_task : int
        Largest batch, >= 1.

    Returns
    -------
    list of list of CubeTile
        Batches in (group, tile key) order; within a group, consecutive tiles in that order.
        Every tile is in exactly one batch; a group's last batch may be shorter.
    """
    n = int(tiles_per_task)
    if n < 1:
        raise ValueError(f"tiles_per_task must be >= 1, got {tiles_per_task!r}")
    ordered: Sequence[CubeTile] = sorted(set(tiles), key=lambda t: (t.group, t.key))
    batches: list[list[CubeTile]] = []
    for _, group in itertools.groupby(ordered, key=lambda t: t.group):
        g = list(group)
        batches += [g[i:i + n] for i in range(0, len(g), n)]
    return batches


def committed_counts(cube_path: str, spec: Any, tile: CubeTile) -> tuple[int, int]:
    """(embedded, skipped) chips of a tile already committed, read back from the cube.

    For a batch that finds some of its tiles done: an earlier attempt of the same run (a
    worker killed mid-batch, the task re-run by Dask or retried by Prefect) wrote them, so
    they count as this run's work without being embedded again. Embedded chips have a finite
    embedding; skipped ones (cloud/fill) a finite ``valid_fraction`` and a NaN embedding.
    """
    import numpy as np
    import zarr

    g = zarr.open_group(str(cube_path), path=tile.group, mode="r")
    region = spec.region(tile)
    if isinstance(region, slice):  # table group: chips along ``chip``
        emb, valid = g["embedding"][region, 0], g["valid_fraction"][region]
    else:  # grid group: (time, y, x[, dim])
        ys, xs = region
        emb, valid = g["embedding"][:, ys, xs, 0], g["valid_fraction"][:, ys, xs]
    embedded = int(np.isfinite(emb).sum())
    return embedded, int(np.isfinite(valid).sum()) - embedded
