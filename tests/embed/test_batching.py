"""Tiles -> task batches (geomoe.embed.batching): one group per batch, adjacent tiles in tile
order, every tile exactly once, and the auto size between one tile and the cap."""

from __future__ import annotations

import pytest

from geomoe.cube.layout import CubeTile
from geomoe.embed.batching import MAX_TILES_PER_TASK, TASKS_PER_SLOT, auto_tiles_per_task, batch_tiles


def _grid(group: str, ny: int, nx: int) -> list[CubeTile]:
    return [CubeTile(group, (a, b)) for a in range(ny) for b in range(nx)]


def test_batches_keep_groups_apart_and_tiles_adjacent():
    a, b = _grid("utm30n", 3, 3), _grid("utm31n", 1, 2)
    tiles = (b + a)[::-1]  # any order in, tile order out
    batches = batch_tiles(tiles, 4)
    assert [len(x) for x in batches] == [4, 4, 1, 2]
    assert all(len({t.group for t in x}) == 1 for x in batches)
    assert [t for x in batches for t in x] == a + b  # every tile once, in (group, key) order
    assert batches[0] == [CubeTile("utm30n", k) for k in ((0, 0), (0, 1), (0, 2), (1, 0))]


def test_pending_tiles_with_gaps_and_table_groups():
    pending = [CubeTile("chips", (k,)) for k in (0, 1, 5)] + [CubeTile("utm30n", (0, 3)), CubeTile("utm30n", (2, 0))]
    assert batch_tiles(pending, 2) == [[CubeTile("chips", (0,)), CubeTile("chips", (1,))],
                                       [CubeTile("chips", (5,))],
                                       [CubeTile("utm30n", (0, 3)), CubeTile("utm30n", (2, 0))]]
    assert batch_tiles([], 3) == []
    assert batch_tiles(pending, 100) == [pending[:3], pending[3:]]
    with pytest.raises(ValueError, match="tiles_per_task must be >= 1"):
        batch_tiles(pending, 0)


@pytest.mark.parametrize("n_tiles,slots,want", [
    (0, 2, 1), (6, 2, 1),  # a small run: one tile per task
    (100, 2, -(-100 // (2 * TASKS_PER_SLOT))),  # about TASKS_PER_SLOT tasks per worker
    (9000, 2, MAX_TILES_PER_TASK), (9000, 1000, 2),  # a continent: capped; a big cluster: spread
])
def test_auto_tiles_per_task(n_tiles, slots, want):
    assert auto_tiles_per_task(n_tiles, slots) == want
    if n_tiles:
        n_tasks = len(batch_tiles(_grid("g", 1, n_tiles), want))
        assert n_tasks <= max(-(-n_tiles // MAX_TILES_PER_TASK), slots * TASKS_PER_SLOT)
