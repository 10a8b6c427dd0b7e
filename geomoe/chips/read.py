"""Reading planned chips tile by tile: band reads on reader threads, assembly on the caller's.

Why this shape (measured, benchmarks/bench_chips.py): GDAL's block cache belongs to a dataset
handle, and handles are per thread. Handing whole tiles to a thread pool made neighbouring
tiles (which share COG blocks, since 640 px tiles do not line up with 256/512 px blocks) decode
the same blocks twice on two threads: 2 workers cost twice the CPU per chip of 1. Here every
band file is always read by the same thread (band index modulo the thread count), so each block
is decoded once, and tile assembly (mask, mosaic, cutting chips) overlaps the next tile's reads.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window

from geomoe.chips.grid import CHIP_METERS, CHIP_PIXELS, PIXEL_METERS, GridError, item_bounds
from geomoe.chips.assets import GDAL_ENV, PatchUrl, RasterPool, _read, read_onto_grid

#: Chips per tile side: a tile (16x16 chips = 640x640 px x 7 bands, 5.7 MB) is the read unit.
TILE_CHIPS = 16


@dataclass
class ReadTile:
    """The chip reader's read unit: up to TILE_CHIPS x TILE_CHIPS planned chips of one group
    (and, item grid, one item), read from the rasters together."""

    group: object  # geomoe.chips.plan.ChipGroup
    chips: np.ndarray


@dataclass
class TileResult:
    """Chips of a tile: pixels (k, 7, 40, 40) uint16, valid (k,) float32, centres x, y (k,)."""

    group: object
    chips: np.ndarray
    pixels: np.ndarray
    valid: np.ndarray
    x: np.ndarray
    y: np.ndarray


def iter_tiles(plan, epsg: int | None, window: tuple[int, int, int, int] | None) -> Iterator[ReadTile]:
    """Tiles in plan order; chips are already sorted by (tile row, tile col, row, col)."""
    for g in plan.groups:
        if epsg is not None and g.epsg != epsg:
            continue
        chips = g.chips
        if window is not None:
            r0, r1, c0, c1 = window
            sel = (chips["row"] >= r0) & (chips["row"] < r1) & (chips["col"] >= c0) & (chips["col"] < c1)
            chips = chips[sel]
        if len(chips) == 0:
            continue
        key = np.stack([chips["row"] // TILE_CHIPS, chips["col"] // TILE_CHIPS], axis=1)
        change = np.ones(len(chips), bool)
        change[1:] = np.any(key[1:] != key[:-1], axis=1)
        if g.grid == "item":
            ids = chips["item_id"]
            change[1:] |= ids[1:] != ids[:-1]
        starts = np.nonzero(change)[0].tolist() + [len(chips)]
        for a, b in zip(starts[:-1], starts[1:]):
            yield ReadTile(g, chips[a:b])


def _blocks(arr: np.ndarray, nr: int, nc: int) -> np.ndarray:
    """(C, nr*40, nc*40) -> (nr, nc, C, 40, 40) view."""
    c = arr.shape[0]
    return arr.reshape(c, nr, CHIP_PIXELS, nc, CHIP_PIXELS).transpose(1, 3, 0, 2, 4)


def _read_grid_task(pool: RasterPool, href: str, epsg: int, x0: float, ytop: float, h: int, w: int,
                    out: np.ndarray) -> bool:
    with rasterio.Env(**GDAL_ENV):
        return read_onto_grid(pool.open(href, epsg), href, x0, ytop, h, w, PIXEL_METERS, out=out) is not None


def _read_window_task(pool: RasterPool, href: str, epsg: int, win: Window, shape: tuple[int, int],
                      item_id: str, out: np.ndarray) -> bool:
    with rasterio.Env(**GDAL_ENV):
        ds = pool.open(href, epsg)
        if (ds.height, ds.width) != shape:
            raise GridError(
                f"raster {href} is {ds.height}x{ds.width} px but item {item_id!r} declares "
                f"{shape[0]}x{shape[1]} (proj:shape): fix the item metadata"
            )
        _read(ds, win, href, out=out)
        return True


class TileReader:
    """Reads tiles on ``threads`` reader threads with file affinity; see the module docstring."""

    def __init__(self, threads: int, mask: np.uint16, patch_url: PatchUrl | None = None) -> None:
        self.threads = max(1, int(threads))
        self.mask = mask
        self.pool = RasterPool(patch_url=patch_url)
        self._ex = [ThreadPoolExecutor(1, thread_name_prefix=f"geomoe-read{i}") for i in range(self.threads)]

    def _submit(self, band: int, fn, *args) -> Future:
        return self._ex[band % self.threads].submit(fn, self.pool, *args)

    def submit(self, tile: ReadTile) -> tuple:
        """Queue a tile's band reads; returns a pending handle for :meth:`finish`."""
        return self._submit_item(tile) if tile.group.grid == "item" else self._submit_fixed(tile)

    def finish(self, pending: tuple) -> TileResult:
        """Wait for a tile's reads and assemble its chips (on the calling thread)."""
        return self._finish_item(pending) if pending[0].group.grid == "item" else self._finish_fixed(pending)

    def close(self) -> None:
        for ex in self._ex:
            ex.shutdown(wait=True, cancel_futures=True)
        self.pool.close()

    # -- fixed grid ---------------------------------------------------------------------------

    def _submit_fixed(self, tile: ReadTile) -> tuple:
        g, chips = tile.group, tile.chips
        rmin, rmax = int(chips["row"].min()), int(chips["row"].max())
        cmin, cmax = int(chips["col"].min()), int(chips["col"].max())
        nr, nc = rmax - rmin + 1, cmax - cmin + 1
        x0, ytop = cmin * CHIP_METERS, (rmax + 1) * CHIP_METERS
        h, w = nr * CHIP_PIXELS, nc * CHIP_PIXELS
        parts = []
        for it in g.items:  # priority order (datetime, id)
            b = item_bounds(it)
            if b is not None and (b[2] <= x0 or b[0] >= x0 + w * PIXEL_METERS or b[3] <= ytop - h * PIXEL_METERS
                                  or b[1] >= ytop):
                continue
            a = g.assets[it.id]
            px = np.empty((len(a.hrefs), h, w), np.uint16)
            futs = [self._submit(i, _read_grid_task, href, g.epsg, x0, ytop, h, w, px[i])
                    for i, href in enumerate(a.hrefs)]
            qa = None
            if a.qa_href is not None and self.mask:
                qa = np.empty((h, w), np.uint16)
                futs.append(self._submit(len(a.hrefs), _read_grid_task, a.qa_href, g.epsg, x0, ytop, h, w, qa))
            parts.append((px, qa, futs))
        return tile, (rmin, rmax, cmin, nr, nc, h, w), parts

    def _finish_fixed(self, pending: tuple) -> TileResult:
        tile, (rmin, rmax, cmin, nr, nc, h, w), parts = pending
        chips = tile.chips
        mosaic = mvalid = None
        for px, qa, futs in parts:
            ok = [f.result() for f in futs]  # always wait: errors surface here
            if not all(ok[: px.shape[0]]):
                continue  # the item does not reach this tile
            v = np.minimum.reduce(px, axis=0) != 0  # any band 0 = fill
            if qa is not None and ok[-1]:
                v &= (qa & self.mask) == 0
            if mosaic is None:
                mosaic, mvalid = px, v
            else:  # later scenes of the day fill only what earlier ones left invalid
                fill = v & ~mvalid
                if fill.any():
                    mosaic[:, fill] = px[:, fill]
                    mvalid |= fill
        if mosaic is None:
            mosaic = np.zeros((7, h, w), np.uint16)
            mvalid = np.zeros((h, w), bool)
        bi = rmax - chips["row"]  # block row 0 is the north edge
        bj = chips["col"] - cmin
        pix = _blocks(mosaic, nr, nc)[bi, bj]
        vfrac = mvalid.reshape(nr, CHIP_PIXELS, nc, CHIP_PIXELS).mean(axis=(1, 3), dtype=np.float32)[bi, bj]
        x = (chips["col"] + 0.5) * CHIP_METERS
        y = (chips["row"] + 0.5) * CHIP_METERS
        return TileResult(tile.group, chips, pix, vfrac.astype(np.float32), x.astype(float), y.astype(float))

    # -- item grid ----------------------------------------------------------------------------

    def _submit_item(self, tile: ReadTile) -> tuple:
        g, chips = tile.group, tile.chips
        item_id = str(chips["item_id"][0])
        ig, a = g.item_grids[item_id], g.assets[item_id]
        rmin, rmax = int(chips["row"].min()), int(chips["row"].max())
        cmin, cmax = int(chips["col"].min()), int(chips["col"].max())
        nr, nc = rmax - rmin + 1, cmax - cmin + 1
        pr0, pc0 = ig.chip_window(rmin, cmin)
        win = Window(pc0, pr0, nc * CHIP_PIXELS, nr * CHIP_PIXELS)
        px = np.empty((len(a.hrefs), nr * CHIP_PIXELS, nc * CHIP_PIXELS), np.uint16)
        futs = [self._submit(i, _read_window_task, href, g.epsg, win, ig.shape, item_id, px[i])
                for i, href in enumerate(a.hrefs)]
        qa = None
        if a.qa_href is not None and self.mask:
            qa = np.empty(px.shape[1:], np.uint16)
            futs.append(self._submit(len(a.hrefs), _read_window_task, a.qa_href, g.epsg, win, ig.shape, item_id, qa))
        return tile, (ig, rmin, cmin, nr, nc), (px, qa, futs)

    def _finish_item(self, pending: tuple) -> TileResult:
        tile, (ig, rmin, cmin, nr, nc), (px, qa, futs) = pending
        for f in futs:
            f.result()
        chips = tile.chips
        v = np.minimum.reduce(px, axis=0) != 0
        if qa is not None:
            v &= (qa & self.mask) == 0
        bi, bj = chips["row"] - rmin, chips["col"] - cmin
        pix = _blocks(px, nr, nc)[bi, bj]
        vfrac = v.reshape(nr, CHIP_PIXELS, nc, CHIP_PIXELS).mean(axis=(1, 3), dtype=np.float32)[bi, bj]
        x, y = ig.chip_centre(chips["row"], chips["col"])
        return TileResult(tile.group, chips, pix, vfrac.astype(np.float32), np.asarray(x, float), np.asarray(y, float))


def read_tiles(tiles: Iterator[ReadTile], threads: int, prefetch: int, mask: np.uint16,
               patch_url: PatchUrl | None = None) -> Iterator[TileResult]:
    """TileResults in tile order, with at most ``threads + prefetch`` tiles queued ahead.

    Memory stays bounded by those tiles (each <= 640x640 px x 8 files) whatever the AOI.
    """
    reader = TileReader(threads, mask, patch_url)
    pending: collections.deque = collections.deque()
    try:
        for t in tiles:
            pending.append(reader.submit(t))
            if len(pending) > threads + prefetch:
                yield reader.finish(pending.popleft())
        while pending:
            yield reader.finish(pending.popleft())
    finally:
        reader.close()
