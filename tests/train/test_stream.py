"""The chip stream: shuffled across scenes, reproducible from (seed, epoch, offset), bounded."""

from __future__ import annotations

import numpy as np
import pytest

from geomoe.train.stream import EmptyChipStreamError, ShuffledChipStream


def _ids(stream, n, k):
    return [list(stream.next_batch(k).item_id) for _ in range(n)]


@pytest.mark.parametrize("max_cache", [8192, 4])  # in-memory cache mode, and streaming mode
def test_stream_shuffles_and_seeks_exactly(small_items, europe_aoi, max_cache):
    s = ShuffledChipStream(small_items, europe_aoi, seed=5, max_cache_chips=max_cache, shuffle_buffer=8,
                   read_batch=4)
    assert s.mode == ("cache" if max_cache > 24 else "stream")
    batches = _ids(s, 8, 5)  # 40 chips: crosses into epoch 1 (23 valid chips per epoch)
    assert s.epoch == 1 and s.offset == 40 - 23
    first_epoch = [i for b in batches for i in b][:23]
    assert len(set(first_epoch)) == 23  # each chip once per epoch
    plan_order = [it.id for it in small_items if it.id != "S2A_MSIL2A_20170613T101032_67_54"]
    assert first_epoch != plan_order  # shuffled across scenes
    assert sorted(first_epoch) == sorted(plan_order)
    second = [i for b in batches for i in b][23:]
    assert second != first_epoch[: len(second)]  # each epoch has its own order

    t = ShuffledChipStream(small_items, europe_aoi, seed=5, max_cache_chips=max_cache, shuffle_buffer=8,
                   read_batch=4)
    t.seek(epoch=0, offset=12)  # resume mid-batch: the same chips follow
    rest = [i for b in _ids(t, 4, 7) for i in b]
    assert rest == [i for b in batches for i in b][12:40]
    a = ShuffledChipStream(small_items, europe_aoi, seed=5, max_cache_chips=max_cache).next_batch(6)
    b = ShuffledChipStream(small_items, europe_aoi, seed=6, max_cache_chips=max_cache).next_batch(6)
    assert list(a.item_id) != list(b.item_id)
    assert a.pixels.shape == (6, 7, 40, 40) and a.pixels.dtype == np.uint16
    assert a.week.shape == a.lat.shape == (6, 2)


def test_empty_chip_stream_is_a_specific_error(europe_items, europe_aoi):
    fill = [it for it in europe_items if it.id == "S2A_MSIL2A_20170613T101032_67_54"]  # all fill
    assert len(fill) == 1
    s = ShuffledChipStream(fill, europe_aoi)
    with pytest.raises(EmptyChipStreamError, match="under min_valid=0.9"):
        s.next_batch(4)
    s2 = ShuffledChipStream(fill, europe_aoi, max_cache_chips=0)  # streaming mode says the same
    with pytest.raises(EmptyChipStreamError, match="chip stream is empty"):
        s2.next_batch(4)
    with pytest.raises(EmptyChipStreamError, match="no items"):
        ShuffledChipStream([], europe_aoi)
