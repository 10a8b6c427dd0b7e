"""A seeded, shuffled, endless stream of training chips read through `geomoe.chips.plan`.

Why this shape: pretraining must not need a pre-extracted dataset, must mix chips of different
scenes inside a batch, and must resume exactly. Every epoch's order is a pure function of
(seed, epoch), so the data position is just (epoch, offset) and resuming re-creates the epoch and
skips `offset` chips.

Two modes, chosen from the cheap chip plan (no pixel reads):
- ``cache``: the plan has at most ``max_cache_chips`` chips. They are read once, in plan order,
  into memory (an optional local chip cache) and every epoch is a full random permutation of them.
- ``stream``: more chips than that. Each epoch walks the items in a seeded random order through
  `iter_chips` and mixes them with a seeded shuffle buffer; memory stays bounded whatever the
  catalog size. Resuming re-reads and discards the first ``offset`` chips of the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from geomoe.errors import GeomoeError

if TYPE_CHECKING:  # geomoe.chips.plan is imported lazily: keeps `geomoe --help` fast
    from geomoe.chips.plan import ChipBatch


class EmptyChipStreamError(GeomoeError):
    """The chip stream produced no usable chip (all skipped, or nothing intersects the AOI)."""


class ShuffledChipStream:
    """Endless shuffled chips over `items`; `next_batch(n)` crosses epoch boundaries seamlessly.

    `position` -> {"epoch", "offset"} is all the data state a checkpoint needs; `seek` restores it.
    """

    def __init__(
        self,
        items: Sequence[Any],
        aoi: Any = None,
        *,
        seed: int = 0,
        min_valid: float = 0.9,
        grid: str | None = None,
        read_batch: int = 256,
        shuffle_buffer: int = 2048,
        max_cache_chips: int = 8192,
    ) -> None:
        from geomoe.chips.plan import plan_chips  # lazy: keeps `geomoe --help` fast

        if not items:
            raise EmptyChipStreamError(
                "no items to train on: the search returned nothing; widen the AOI or the "
                "datetime range"
            )
        self.items = list(items)
        self.aoi = aoi
        self.seed = int(seed)
        self.min_valid = float(min_valid)
        self.grid = grid
        self.read_batch = int(read_batch)
        self.shuffle_buffer = int(shuffle_buffer)
        self.planned = len(plan_chips(self.items, aoi=aoi, grid=grid))
        if self.planned == 0:
            raise EmptyChipStreamError(
                f"the {len(self.items)} items give no chip inside the AOI: check that the AOI "
                "overlaps the scenes"
            )
        self.mode = "cache" if self.planned <= max_cache_chips else "stream"
        self.skipped = 0  # chips under min_valid seen while reading (cache fill or last epoch)
        self._cache: ChipBatch | None = None
        self.epoch = 0
        self.offset = 0
        self._it: Iterator[ChipBatch] | None = None

    # ------------------------------------------------------------------ public API
    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def seek(self, epoch: int, offset: int) -> None:
        """Continue exactly where a stream with the same items and seed was at (epoch, offset)."""
        self.epoch, self.offset = int(epoch), 0
        self._it = self._epoch_chips(self.epoch)
        remaining = int(offset)
        while remaining > 0:
            part = next(self._it, None)
            if part is None:
                raise EmptyChipStreamError(
                    f"cannot resume at chip {offset} of epoch {epoch}: the data has only "
                    f"{self.offset} chips now (the catalog changed); restart without --resume"
                )
            if len(part) > remaining:  # split: keep the tail for the next batch
                head, tail = part.take(slice(0, remaining)), part.take(slice(remaining, None))
                self._it = _prepend(tail, self._it)
                part = head
            remaining -= len(part)
            self.offset += len(part)

    def next_batch(self, n: int) -> ChipBatch:
        """The next `n` chips (shuffled across scenes); starts a new epoch when one runs out."""
        if self._it is None:
            self.seek(self.epoch, self.offset)
        parts: list[ChipBatch] = []
        got = 0
        while got < n:
            assert self._it is not None
            part = next(self._it, None)
            if part is None:
                if self.offset == 0:  # a whole epoch without one usable chip
                    raise EmptyChipStreamError(
                        f"the chip stream is empty: all {self.skipped} chips of "
                        f"{len(self.items)} items are under min_valid={self.min_valid} "
                        "(cloud, fill); lower --min-valid or choose other scenes"
                    )
                self.epoch += 1
                self.offset = 0
                self._it = self._epoch_chips(self.epoch)
                continue
            if len(part) > n - got:
                head, tail = part.take(slice(0, n - got)), part.take(slice(n - got, None))
                self._it = _prepend(tail, self._it)
                part = head
            parts.append(part)
            got += len(part)
            self.offset += len(part)
        return parts[0].concat(parts)

    def epoch_size(self) -> int | None:
        """Chips per epoch when known (cache mode), else None."""
        return len(self._fill_cache()) if self.mode == "cache" else None

    # ------------------------------------------------------------------ internals
    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch)])

    def _read(self, items: Sequence[Any]) -> Iterator[ChipBatch]:
        from geomoe.chips.plan import iter_chips

        self.skipped = 0
        for batch in iter_chips(
            list(items), aoi=self.aoi, batch_size=self.read_batch, min_valid=self.min_valid,
            grid=self.grid,
        ):
            self.skipped += len(getattr(batch, "skipped_valid", ()))
            if len(batch.pixels):
                yield batch.take(slice(None))  # its chips; the skipped ones are counted above

    def _fill_cache(self) -> ChipBatch:
        if self._cache is None:
            parts = list(self._read(self.items))
            if not parts:
                raise EmptyChipStreamError(
                    f"the chip stream is empty: all {self.skipped} chips of {len(self.items)} "
                    f"items are under min_valid={self.min_valid} (cloud, fill); lower "
                    "--min-valid or choose other scenes"
                )
            self._cache = parts[0].concat(parts)
        return self._cache

    def _epoch_chips(self, epoch: int) -> Iterator[ChipBatch]:
        rng = self._rng(epoch)
        if self.mode == "cache":
            cache = self._fill_cache()
            order = rng.permutation(len(cache))
            for start in range(0, len(order), self.read_batch):
                yield cache.take(order[start : start + self.read_batch])
            return
        items = [self.items[i] for i in rng.permutation(len(self.items))]
        yield from _shuffle_buffer(self._read(items), self.shuffle_buffer, rng)


def _prepend(first: ChipBatch, rest: Iterator[ChipBatch]) -> Iterator[ChipBatch]:
    yield first
    yield from rest


def _shuffle_buffer(
    parts: Iterator[ChipBatch], size: int, rng: np.random.Generator
) -> Iterator[ChipBatch]:
    """Classic streaming shuffle: hold up to `size` chips, emit a random one per arrival."""
    buf: ChipBatch | None = None
    for part in parts:
        buf = part if buf is None else buf.concat([buf, part])
        if len(buf) > size:
            excess = len(buf) - size
            pick = rng.choice(len(buf), size=excess, replace=False)
            keep = np.ones(len(buf), dtype=bool)
            keep[pick] = False
            yield buf.take(pick)
            buf = buf.take(np.flatnonzero(keep))
    if buf is not None and len(buf):
        yield buf.take(rng.permutation(len(buf)))
