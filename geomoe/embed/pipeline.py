"""embed-region as a library: AOI + catalog -> chips -> model -> resumable Zarr cube.

``embed_region`` overlaps the three stages: a reader thread produces z-scored batches for
the pending tiles (bounded queue, so memory is flat whatever the AOI size), the calling
thread runs the model, and a writer thread does each tile's region write + completion
record. torch, GDAL and zarr's codecs release the GIL, so the stages really overlap.

``embed_tile`` does the same work for one tile synchronously; the Prefect flow maps it
over tiles (threads, processes or a Dask cluster). Both paths batch per tile, so a chip's
embedding does not depend on how the work was distributed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import errno
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from geomoe.cube.store import Cube, CubeDiskFullError, check_writable, ensure_writable, tile_bytes
from geomoe.device import autocast, infer_bf16, resolve_device
from geomoe.embed.speed import choose_speed, resolved
from geomoe.embed.request import EmbedRequest, is_file
from geomoe.errors import GeomoeError
from geomoe.testing import fault
from geomoe.chips.grid import CHIP_METERS, CHIP_PIXELS
from geomoe.embed.lock import store_lock
from geomoe.model.checkpoint import resolve_checkpoint
from geomoe.model.config import POOLINGS
from geomoe.cube.layout import CubeTile, GridSpec, Spec, plan_fingerprint
from geomoe.version import __version__


# ---------------------------------------------------------------- per-process caches
class LastUsed:
    """A thread-safe cache of the `size` entries used last (older ones are dropped): per-process
    caches of a long-lived worker that embeds with many checkpoints or cubes stay bounded."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The value for `key`, made by ``make()`` on a miss (under the lock: made once)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            value = make()
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: (path, size, mtime) -> sha256 and config: small, a few checkpoints are kept.
_CKPT_INFO = LastUsed(8)


def checkpoint_info(path: Path) -> dict[str, Any]:
    """Load and verify the checkpoint (CheckpointError if unusable); its sha256 and config.

    Cached per (path, size, mtime): the start-up checks and ``prepare`` load it once."""
    from geomoe.model import checkpoint_sha256, load_checkpoint

    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)

    def make() -> dict[str, Any]:
        model = load_checkpoint(path, map_location="cpu")
        return {"sha256": checkpoint_sha256(path), "config": dataclasses.asdict(model.config),
                "embed_dim": int(model.embed_dim),
                # the z-scoring the weights own: what embedding applies and the cube records
                "normalisation": model.normalisation.to_dict()}

    return _CKPT_INFO.get(key, make)


#: (path, sha256, device, compile) -> the loaded model: the last two (e.g. eager and compiled,
#: or two checkpoints in turn), so a worker that sees many checkpoints holds at most two.
_MODELS = LastUsed(2)


def get_model(path: Path, sha256: str, device: torch.device, compile: bool | str = False,
              precision: str = "auto") -> torch.nn.Module:
    """Load once per process (tasks on one worker share it; the last two are kept); eval mode,
    on ``device``.

    ``compile`` (True or "on"; "auto" is resolved before, :mod:`geomoe.embed.speed`):
    :func:`geomoe.model.compile_for_inference` where inference runs in bf16
    (:func:`geomoe.device.infer_bf16`: CUDA, or ``precision="bf16"``); the graph serves bf16
    autocast calls only. It compiles once per worker process: on CUDA one batch size (a smaller
    tail batch runs eager); on CPU full chunks of 32 chips, and later processes load the graph
    from inductor's disk cache (keyed to the exp swap of
    :func:`geomoe.model.compile.cpu_exp_u20`), which is much quicker. Ignored for fp32, where
    the compiled graph is no faster. Speed-ups and compile times: benchmarks/README.md.
    """
    from geomoe.model import compile_for_inference, load_checkpoint

    from geomoe.embed.speed import compile_setting

    compile = compile_setting(compile) == "on" and infer_bf16(device, precision)
    key = (str(path), sha256, str(device), compile)

    def make() -> torch.nn.Module:
        model = load_checkpoint(path, map_location="cpu").to(device).eval()
        return compile_for_inference(model) if compile else model

    return _MODELS.get(key, make)


# ---------------------------------------------------------------- request
@dataclass
class Prepared:
    """A planned, created (or verified) cube and what its tiles need."""

    request: EmbedRequest
    cube: Cube
    items: Any  # id -> pystac.Item: a dict, or a worker's geomoe.cube.items.ItemTable (lazy)
    aoi_geom: Any
    checkpoint: Path
    sha256: str
    #: tile -> exact chips of its pending work, set when the tile is read (progress totals)
    read_counts: dict = field(default_factory=dict)

    @property
    def specs(self) -> dict[str, Spec]:
        return self.cube.specs

    def items_for(self, ids: list[str]) -> list:
        """pystac Items of these ids (a worker loads only these from the cube's item table)."""
        if isinstance(self.items, dict):
            return [self.items[i] for i in ids]
        return self.items.get(ids)  # an ItemTable: one read for all of them


def _search(req: EmbedRequest):
    from geomoe.stac.aoi import load_aoi
    from geomoe.stac.search import search
    from geomoe.cube.tiling import plan_specs

    geom = load_aoi(req.aoi, area=True)
    items = search(req.catalog, geom, datetime=req.datetime, max_cloud=req.max_cloud)
    specs = plan_specs(items, aoi=geom, grid=req.grid, tile_size=int(req.tile_size),
                       table_tile=int(req.table_tile))
    if not specs:
        raise GeomoeError(
            f"the AOI intersects {len(items)} scene(s) but no chip footprint: nothing to embed")
    return geom, items, specs


def _aoi_json(aoi: Any, geom: Any) -> Any:
    import shapely.geometry as sgeom

    if is_file(aoi):
        return {"source": str(aoi), "geometry": sgeom.mapping(geom)}
    return {"source": "inline" if not isinstance(aoi, str) or aoi.lstrip().startswith("{") else aoi,
            "geometry": sgeom.mapping(geom)}


def identity(req: EmbedRequest, info: dict[str, Any], specs: list[Spec]) -> dict[str, Any]:
    """Every setting that decides which chips are embedded or what their vectors are: a cube
    is resumed only with all of them equal (precision and device are not among them)."""
    from geomoe.chips.qa import DEFAULT_MASK_BITS

    return {"checkpoint_sha256": info["sha256"], "model_size": info["config"].get("size"),
            "embed_dim": info["embed_dim"], "pooling": req.pooling, "min_valid": float(req.min_valid),
            "mask_bits": [int(b) for b in DEFAULT_MASK_BITS],  # the chip reader's QA mask
            "grid": ",".join(sorted({"fixed" if s.layout == "grid" else "item" for s in specs})),
            "tile_size": int(req.tile_size), "table_tile": int(req.table_tile),
            "normalisation": info["normalisation"]}  # the checkpoint's, as applied (model.preprocess)


def check_assets(items: list, specs: list[Spec]) -> None:
    """Open the header of every band and QA file the plan will read, where it is a local file
    (cheap); remote assets are left to the reader, except that Planetary Computer's need the
    signer installed. RasterReadError names a missing file, SignerMissingError the extra."""
    from geomoe.errors import RasterReadError
    from geomoe.chips.assets import RasterPool, is_planetary_computer, planetary_computer_patch_url, resolve_assets

    needed = {str(i) for s in specs for i in (s.item_day if isinstance(s, GridSpec) else s.chips["item_id"])}
    pool = RasterPool(epsg_check=False)
    try:
        for it in items:
            if it.id not in needed:
                continue
            a = resolve_assets(it)
            for href in (*a.hrefs, *([a.qa_href] if a.qa_href else [])):
                if is_planetary_computer(href):
                    planetary_computer_patch_url()  # the signer the reader will need is installed
                local = href[len("file://"):] if href.startswith("file://") else href
                if not local.startswith("/") or local.startswith("/vsi"):
                    continue
                if not os.path.isfile(local):
                    raise RasterReadError(
                        f"item {it.id!r} needs {local}, which does not exist; nothing was written: "
                        "restore the file or fix the catalog's asset href")
                pool.open(href)
    finally:
        pool.close()


def search_and_plan(req: EmbedRequest) -> tuple[Any, list, list[Spec]]:
    """AOI -> items -> chip plan -> cube layout, after every cheap check of the input: the
    checkpoint loads, the output is writable (and no foreign file sits where the cube's STAC
    item goes), the plan's local rasters open and a store at ``out`` is this request's cube.
    Touches no output (bad input fails here)."""
    req.validate()
    info = checkpoint_info(resolve_checkpoint(req.checkpoint))
    check_writable(Path(req.out))
    from geomoe.cube.stac_item import check_cube_item_out

    check_cube_item_out(req.out)
    geom, items, specs = _search(req)
    check_assets(items, specs)
    Cube.check_target(req.out, Cube.identity_meta(specs, req.dtype, identity(req, info, specs)))
    return geom, items, specs


def prepare(req: EmbedRequest, planned: tuple | None = None) -> Prepared:
    """Search, plan and create/verify the cube. The caller must hold ``store_lock(out)``."""
    req.validate()
    ckpt = resolve_checkpoint(req.checkpoint)
    geom, items, specs = planned if planned is not None else _search(req)
    info = checkpoint_info(ckpt)
    sha, cfg, dim = info["sha256"], info["config"], info["embed_dim"]
    attrs = {
        "title": "geomoe embedding cube",
        "geomoe:version": __version__,
        # the checkpoint by file name and content hash: a path would only hold on this machine
        "geomoe:model": {"size": cfg.get("size"), "config": cfg, "checkpoint": ckpt.name,
                         "checkpoint_sha256": sha, "pooling": req.pooling},
        "geomoe:normalisation": {**info["normalisation"],
                                 "applies_to": "raw Landsat C2 L2 DN, bands SR_B1..SR_B7"},
        "geomoe:query": {"aoi": _aoi_json(req.aoi, geom), "datetime": req.datetime,
                         "catalog": req.catalog or "bundled", "max_cloud": req.max_cloud,
                         "min_valid": req.min_valid, "grid": req.grid},
        "geomoe:chips": {"pixels": CHIP_PIXELS, "meters": CHIP_METERS, "bands": ["SR_B1", "SR_B2", "SR_B3", "SR_B4",
                                                                    "SR_B5", "SR_B6", "SR_B7"]},
        "geomoe:created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    cube = Cube.create_or_open(req.out, specs, dim=dim, dtype=req.dtype,
                               identity=identity(req, info, specs), attrs=attrs,
                               items=[it.to_dict(transform_hrefs=False) for it in items])
    from geomoe.cube.items import has_plan_files, load_specs, write_plan_files

    # what workers open instead of searching and planning; rewritten when this run's plan differs
    # (an append: new scenes, days or zones), under the run lock, before any tile is read
    stored = load_specs(cube.path) if has_plan_files(cube.path) else None
    if stored is None or plan_fingerprint(stored) != plan_fingerprint(specs):
        write_plan_files(cube.path, specs, items)
    return Prepared(req, cube, {it.id: it for it in items}, geom, ckpt, sha)


def reopen(req: EmbedRequest) -> Prepared:
    """Rebuild a Prepared in a worker from what the cube stores: no catalog search, no planning.

    The group specs (tile -> items index) come from ``_geomoe/plan`` and the items, loaded
    per tile on demand, from ``_geomoe/item_table`` (:mod:`geomoe.cube.items`); a cube made
    before these files existed is re-planned from its stored items. The checkpoint comes from
    the request (the cube records only its file name and sha256) and must be the file the cube
    was made with: its sha256 is checked."""
    import pystac
    import zarr

    from geomoe.cube.items import ItemTable, load_specs
    from geomoe.cube.store import Cube as _Cube, CubeMismatchError, read_items
    from geomoe.cube.tiling import plan_specs
    from geomoe.model import checkpoint_sha256
    from geomoe.stac.aoi import load_aoi

    attrs = zarr.open_group(req.out, mode="r").attrs.asdict()
    geom = load_aoi(attrs["geomoe:query"]["aoi"]["geometry"])
    specs = load_specs(req.out)
    table = ItemTable(req.out)
    if specs is not None and table.exists():
        items: Any = table
    else:  # an older cube: plan again from its stored items
        loaded = [pystac.Item.from_dict(d) for d in read_items(req.out)]
        specs = plan_specs(loaded, aoi=geom, grid=req.grid, tile_size=int(req.tile_size),
                           table_tile=int(req.table_tile))
        items = {it.id: it for it in loaded}
    cube = _Cube.open(req.out, specs)  # the plan's fingerprint must be the cube's
    ckpt = resolve_checkpoint(req.checkpoint)
    want, got = attrs["geomoe:identity"]["checkpoint_sha256"], checkpoint_sha256(ckpt)
    if got != want:
        raise CubeMismatchError(
            f"checkpoint {ckpt} (sha256 {got[:12]}...) is not the one the cube {req.out} was made "
            f"with ({attrs['geomoe:model'].get('checkpoint')}, sha256 {want[:12]}...); give this "
            "worker the same checkpoint file")
    return Prepared(req, cube, items, geom, ckpt, want)


#: (cube, run) -> its plan and open store: the last two runs a worker served.
_PREPARED = LastUsed(2)


def prepared_for(req: dict, run: int) -> Prepared:
    """Per-process cache for tile tasks: the tasks of one run on one worker plan once."""
    key = (str(Path(req["out"]).resolve()), int(run))
    return _PREPARED.get(key, lambda: reopen(EmbedRequest(**req)))


# ---------------------------------------------------------------- tiles
@dataclass
class TileBuffer:
    """In-memory values of one tile's pending work until its single region write.

    Grid tiles hold only the solar days still pending for the tile (``times``: storage time
    indices, ``slot``: solar day -> position in the buffer), so a resumed or appended run
    neither reads nor rewrites the days already done."""

    tile: CubeTile
    spec: Spec
    embedding: np.ndarray
    valid: np.ndarray
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    lookup: dict | None = None
    embedded: int = 0
    skipped: int = 0
    times: list[int] | None = None
    slot: dict[str, int] | None = None

    @classmethod
    def new(cls, cube: Cube, tile: CubeTile, dim: int) -> "TileBuffer":
        spec = cube.specs[tile.group]
        if isinstance(spec, GridSpec):
            ys, xs = spec.region(tile)
            times = cube.pending_times(tile)
            shape = (len(times), ys.stop - ys.start, xs.stop - xs.start)
            slot = {cube.days[tile.group][t]: k for k, t in enumerate(times)}
            return cls(tile, spec, np.full(shape + (dim,), np.nan, np.float32), np.full(shape, np.nan, np.float32),
                       times=times, slot=slot)
        import zarr

        sl = spec.region(tile)
        g = zarr.open_group(str(cube.path), path=tile.group, mode="r")
        n = sl.stop - sl.start
        lookup = {k: i - sl.start for k, i in spec.lookup().items() if sl.start <= i < sl.stop}
        return cls(tile, spec, np.full((n, dim), np.nan, np.float32), np.full(n, np.nan, np.float32),
                   x=np.asarray(g["x"][sl], np.float64), y=np.asarray(g["y"][sl], np.float64), lookup=lookup)

    def _grid_pos(self, index: np.ndarray, item_ids: np.ndarray):
        """Buffer positions (slot, i, j) of chips and the mask of those inside the buffer
        (this tile, a pending day)."""
        spec = self.spec
        assert isinstance(spec, GridSpec)
        ys, xs = spec.region(self.tile)
        i = spec.row_max - np.asarray(index["row"], np.int64) - ys.start
        j = np.asarray(index["col"], np.int64) - spec.col_min - xs.start
        uniq, inv = np.unique(np.asarray(item_ids, dtype=str), return_inverse=True)
        t = np.array([self.slot.get(str(spec.item_day[str(k)]), -1) for k in uniq], np.int64)[inv.ravel()]
        ok = (t >= 0) & (i >= 0) & (i < self.valid.shape[1]) & (j >= 0) & (j < self.valid.shape[2])
        return t[ok], i[ok], j[ok], ok

    def add(self, emb: np.ndarray, batch: Any) -> None:
        """Place embeddings (N, D) of ``batch`` and its skipped chips' valid fractions."""
        if isinstance(self.spec, GridSpec):
            if len(batch.valid):
                t, i, j, ok = self._grid_pos(batch.index, batch.item_id)
                self.embedding[t, i, j] = emb[ok]
                self.valid[t, i, j] = batch.valid[ok]
                self.embedded += int(ok.sum())
            sk = batch.skipped_index
            if sk is not None and len(sk):
                t, i, j, ok = self._grid_pos(sk, batch.skipped_item_id)
                self.valid[t, i, j] = np.asarray(batch.skipped_valid)[ok]
                self.skipped += int(ok.sum())
            return
        for n in range(len(batch.valid)):
            k = self._table_slot(batch.item_id[n], batch.index[n])
            if k is None:
                continue  # chip of an item that straddles into the next tile
            self.embedding[k] = emb[n]
            self.valid[k] = batch.valid[n]
            self.x[k], self.y[k] = batch.x[n], batch.y[n]
            self.embedded += 1
        for n in range(len(batch.skipped_valid)):
            k = self._table_slot(batch.skipped_item_id[n], batch.skipped_index[n])
            if k is not None:
                self.valid[k] = batch.skipped_valid[n]
                self.skipped += 1

    def _table_slot(self, item_id: str, index: np.void) -> int | None:
        """Row of a chip-table tile for (item id, row, col): patches of one scene share the rest."""
        return self.lookup.get((str(item_id), int(index["row"]), int(index["col"])))

    def write(self, cube: Cube, run: int) -> None:
        if isinstance(self.spec, GridSpec):
            if self.spec.is_exact(self.tile):  # before the commit: a counted tile is a done tile's
                cube.record_tile_chips(self.tile, self.spec.n_planned(self.tile))
            cube.write_grid_tile(self.tile, self.embedding, self.valid, run, times=self.times)
        else:
            cube.write_table_tile(self.tile, self.embedding, self.valid, self.x, self.y, run)


def iter_tile_batches(prep: Prepared, tile: CubeTile, batch_size: int) -> Iterator[Any]:
    """Chip batches of one tile's pending work, read only from the items that touch it on the
    solar days it still lacks (all its items on a first run).

    On the fixed grid the tile's chips are enumerated here, from those items' footprints clipped
    to the tile (on a first run the exact count replaces the spec's estimate)."""
    from geomoe.chips.plan import iter_chips, plan_chips

    spec = prep.specs[tile.group]
    if isinstance(spec, GridSpec):
        ids = prep.cube.pending_items(tile, prep.cube.pending_times(tile))
        if not ids:
            prep.read_counts[tile] = 0
            return
        items = prep.items_for(sorted(ids))
        window = spec.window(tile)
        plan = plan_chips(items, aoi=prep.aoi_geom, grid="fixed", epsg=spec.epsg, window=window)
        prep.read_counts[tile] = len(plan)
        every = set(spec.tile_item_ids(tile))
        # the tile's exact count over all its days: this plan's, or (some days already done) a
        # plan of all its items' footprints, which reads no pixels
        spec.record_exact(tile, len(plan) if ids == every else len(plan_chips(
            prep.items_for(sorted(every)), aoi=prep.aoi_geom, grid="fixed", epsg=spec.epsg, window=window)))
        yield from iter_chips(items, aoi=prep.aoi_geom, batch_size=batch_size, plan=plan,
                              min_valid=prep.request.min_valid, grid="fixed", epsg=spec.epsg,
                              window=window, workers=int(prep.request.read_workers))
    else:
        items = prep.items_for(sorted(spec.tile_item_ids(tile)))
        yield from iter_chips(items, aoi=prep.aoi_geom, batch_size=batch_size,
                              min_valid=prep.request.min_valid, grid="item",
                              workers=int(prep.request.read_workers))


def run_model(model: torch.nn.Module, batch: Any, zscored: np.ndarray, device: torch.device,
              pooling: str, precision: str = "auto") -> np.ndarray:
    """(N,7,40,40) z-scored (``model.preprocess(batch.pixels)``) + metadata -> (N, D) float32
    embeddings."""
    if len(zscored) == 0:
        return np.zeros((0, int(model.embed_dim)), np.float32)
    nb = device.type == "cuda"

    def t(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        return x.pin_memory().to(device, non_blocking=True) if nb else x

    with torch.inference_mode(), autocast(device, precision):
        emb = model.embed(t(zscored), week=t(batch.week), hour=t(batch.hour), lat=t(batch.lat),
                          lon=t(batch.lon), pooling=pooling)
    return emb.float().cpu().numpy()


def embed_tile(prep: Prepared, tile: CubeTile, run: int, device: str | torch.device = "auto") -> dict:
    """Read, embed and write ONE tile (synchronously). Returns counts for the summary."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    req = prep.request
    model = get_model(prep.checkpoint, prep.sha256, dev, compile=req.compile, precision=req.precision)
    buf = TileBuffer.new(prep.cube, tile, int(model.embed_dim))
    for batch in iter_tile_batches(prep, tile, int(req.batch_size)):
        buf.add(run_model(model, batch, model.preprocess(batch.pixels), dev, req.pooling, req.precision), batch)
    buf.write(prep.cube, run)
    return {"tile": str(tile), "embedded": buf.embedded, "skipped": buf.skipped}


# ---------------------------------------------------------------- progress / summary
@dataclass
class Progress:
    done: int  # chips processed (embedded + skipped), including tiles finished earlier
    total: int  # chips planned
    embedded: int
    skipped: int
    chips_per_s: float  # this run
    eta_s: float | None
    estimated: bool = False  # total (partly) estimated from footprint areas: shown as ~total

    def line(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:,.0f}s"
        pct = min(100.0 * self.done / max(self.total, 1), 100.0)
        total = f"~{self.total:,}" if self.estimated else f"{self.total:,}"
        return (f"{self.done:,}/{total} chips ({pct:.0f}%)  "
                f"{self.chips_per_s:,.1f} chips/s  ETA {eta}")


@dataclass
class EmbedSummary:
    out: str
    groups: list[str]
    chips_planned: int
    chips_embedded: int
    chips_skipped_cloud: int
    tiles_total: int
    tiles_written: int
    tiles_already_done: int
    seconds: float
    run: int
    checkpoint: str
    checkpoint_sha256: str
    device: str
    stac_item: str | None = None
    precision: str = "fp32"  # what the model ran in: fp32 or bf16 (autocast)
    threads: int | None = None  # torch compute threads it ran with (geomoe.device.limit_threads)
    speed: str = ""  # precision, compiled or not, and why (geomoe.embed.speed.SpeedChoice.label)
    extra: dict = field(default_factory=dict)

    @property
    def chips_per_s(self) -> float:
        return (self.chips_embedded + self.chips_skipped_cloud) / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["chips_per_s"] = self.chips_per_s
        return d

    def __str__(self) -> str:
        return (f"embedded {self.chips_embedded:,} chips, skipped {self.chips_skipped_cloud:,} for "
                f"cloud/fill (valid < min_valid), {self.tiles_written} tile(s) written, "
                f"{self.tiles_already_done} already done, in {self.seconds:.1f} s "
                f"({self.chips_per_s:,.1f} chips/s on {self.device}, {self.speed or self.precision}"
                f"{'' if self.threads is None else f', {self.threads} thread(s)'}); cube: {self.out} "
                f"(groups: {', '.join(self.groups)})")


# ---------------------------------------------------------------- the pipeline
_DONE = object()


def embed_region(aoi: Any, catalog: str | None = None, datetime: str | None = None,
                 checkpoint: str | os.PathLike | None = None, out: str | os.PathLike = "cube.zarr",
                 device: str = "auto", batch_size: int = 256, min_valid: float = 0.9,
                 pooling: str = "mean", dtype: str = "float32",
                 progress: Callable[[Progress], None] | None = None, *,
                 max_cloud: float | None = None, tile_size: int = 32, table_tile: int = 256,
                 grid: str | None = None, prefetch: int = 2, read_workers: int = 2,
                 compile: bool | str = "auto", precision: str = "auto") -> EmbedSummary:
    """Embed every chip of ``aoi`` into a Zarr embedding cube; rerun to resume a killed run.

    Searches ``catalog``, plans the 40 x 40 pixel (1200 m) chips inside ``aoi``, embeds each
    with the model and writes the cube at ``out`` tile by tile, plus its STAC Collection, group
    Items and model (MLM) Item in ``<out>.stac/``. Bad input is refused before anything is created; a run that fails
    before finishing any tile removes the store it created. A store at ``out`` is resumed only
    if it is this request's cube (same model, settings and chips); anything else is refused
    untouched. The run holds an exclusive lock on ``out`` (a second run is refused).

    Parameters
    ----------
    aoi : str, Path, dict or shapely geometry
        Area of interest: GeoJSON file, URL, inline GeoJSON or geometry (EPSG:4326 unless the
        GeoJSON names another CRS); it must have an area.
    catalog : str, optional
        STAC API URL, static catalog or collection file; None: the bundled catalog.
    datetime : str, optional
        RFC 3339 instant or interval, e.g. "2020-06-01/2020-09-30".
    checkpoint : str or PathLike, optional
        Model weights (geomoe ``.safetensors`` or published ``.pth``); None: the demo
        checkpoint (see :func:`geomoe.load_model`).
    out : str or PathLike
        The cube's Zarr store (a directory).
    device : str
        "auto" (the first CUDA GPU, else the CPU), "cpu" or "cuda[:N]".
    batch_size : int
        Chips per model call.
    min_valid : float
        Fraction in [0, 1]: chips with fewer valid (clear, non-fill) pixels are skipped: NaN
        embedding, their ``valid_fraction`` recorded.
    pooling : str, one of geomoe.model.POOLINGS ("mean", "cls" or "patch_mean")
        How a chip's tokens become one vector.
    dtype : {"float32", "float16"}
        Storage type of the embeddings.
    progress : callable, optional
        Called with a ``Progress`` (chips done and total, chips/s, ETA) after each batch.
    max_cloud : float, optional
        Largest scene ``eo:cloud_cover`` in percent (0-100).
    tile_size : int
        Grid tile edge in chips: the unit of writing and resuming.
    table_tile : int
        Chips per tile of the chip-table group.
    grid : {"fixed", "item"}, optional
        Chip grid (see :func:`geomoe.plan_chips`).
    prefetch : int
        Batches read ahead of the model (bounds memory).
    read_workers : int
        Raster-reading threads.
    compile : {"auto", "on", "off"} or bool
        ``torch.compile`` the encoder where it runs in bf16; "auto": for a large job
        (:mod:`geomoe.embed.speed`), where the one-off compile pays off.
    precision : {"auto", "fp32", "bf16"}
        "auto": bf16 on a GPU, and on a CPU with native bf16 (AVX512-BF16 or AMX) for a large
        job (compiled, unless ``compile="off"``); fp32 otherwise (:mod:`geomoe.embed.speed`).
        "bf16" on a CPU without native bf16 runs fp32 with a warning. bf16 vectors differ from
        fp32 ones at the 1e-2 relative level. Not part of the cube's identity, like the device
        (a GPU rerun may finish a CPU cube).

    Returns
    -------
    EmbedSummary
        ``out``, ``groups``, chips planned / embedded / skipped for cloud, tiles written and
        already done, ``seconds``, the checkpoint and its sha256, device, precision, ``speed``
        (what was chosen and why) and the STAC item's path.

    Raises
    ------
    geomoe.errors.GeomoeError
        Bad input (AOI, catalog, checkpoint, settings, a foreign or different store at
        ``out``), before anything is written; ``CubeLockedError`` while another run holds
        ``out``; ``CubeDiskFullError`` on a full disk (a rerun resumes).
    """
    req = EmbedRequest(aoi=aoi, out=str(out), catalog=None if catalog is None else str(catalog),
                       datetime=datetime, max_cloud=max_cloud,
                       checkpoint=None if checkpoint is None else str(checkpoint), device=device,
                       batch_size=batch_size, min_valid=min_valid, pooling=pooling, dtype=dtype,
                       tile_size=tile_size, table_tile=table_tile, grid=grid, read_workers=read_workers,
                       compile=compile, precision=precision)
    req.validate()
    dev = resolve_device(device)
    t0 = time.perf_counter()
    planned = search_and_plan(req)  # every cheap check; bad input: nothing is created
    speed = choose_speed(dev, req.precision, req.compile, sum(s.n_planned() for s in planned[2]))
    req = resolved(req, speed)  # "auto" no more: every later step runs what was chosen
    precision_used = speed.precision
    info = {"device": str(dev), "precision": precision_used, "speed": speed.label(),
            "geomoe_version": __version__,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    with cube_run(req, planned, info) as (prep, run):
        cube = prep.cube
        tiles = cube.tiles()
        pending = cube.pending_tiles()
        total = sum(cube.specs[t.group].n_planned(t) for t in tiles)
        model = get_model(prep.checkpoint, prep.sha256, dev, compile=req.compile, precision=req.precision)
        dim = int(model.embed_dim)
        counts = _pipeline(prep, pending, model, dev, run, dim, progress, total, prefetch, t0)
        total = counts["total"]  # exact for every tile this run planned
        from geomoe.cube.stac_item import write_cube_item

        stac_path = write_cube_item(cube)
        cube.finish()  # consolidated metadata: last, once every tile is done
    return EmbedSummary(
        out=str(req.out), groups=list(cube.specs), chips_planned=total,
        chips_embedded=counts["embedded"], chips_skipped_cloud=counts["skipped"],
        tiles_total=len(tiles), tiles_written=len(pending), tiles_already_done=len(tiles) - len(pending),
        seconds=time.perf_counter() - t0, run=run, checkpoint=str(prep.checkpoint),
        checkpoint_sha256=prep.sha256, device=str(dev), stac_item=str(stac_path),
        precision=precision_used, threads=torch.get_num_threads(), speed=speed.label())


@contextlib.contextmanager
def cube_run(req: EmbedRequest, planned: tuple, info: dict[str, Any]) -> Iterator[tuple[Prepared, int]]:
    """Create or take the cube of ``req`` under its run lock and register a run, for the body.

    ``planned`` is :func:`search_and_plan`'s result; ``info`` (device, precision: how this run
    computes, outside the identity) goes to the cube's ``geomoe:run_log``. Yields the prepared
    cube and the run number. If the body fails before any tile is finished, the store this run
    created is removed; a full disk becomes one :class:`CubeDiskFullError` line saying how much
    space a rerun needs. The library run and the Prefect flow both run inside it.
    """
    created = _first_missing(Path(req.out))  # what this run creates (removed if it fails early)
    ensure_writable(Path(req.out))
    with store_lock(req.out):
        prep = None
        try:
            prep = prepare(req, planned)
            yield prep, prep.cube.new_run(info)
        except Exception as exc:
            kept = _after_failure(req, prep, created)
            full = _disk_full(exc)
            if full is not None:
                raise _disk_full_error(req, prep, planned, full, kept) from None
            raise


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (None if it exists)."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _after_failure(req: EmbedRequest, prep: Prepared | None, created: Path | None) -> int:
    """After a failed run: the number of finished tiles kept. A cube this run created and
    finished no tile of (a failed start) is removed, with the directories it made for it."""
    done = 0
    if prep is not None:
        try:
            done = len(prep.cube.tiles()) - len(prep.cube.pending_tiles())
        except Exception:  # the skeleton itself may be what failed
            done = 0
    if created is None or done:
        return done
    import shutil

    from geomoe.cube.store import _root_attrs

    out = Path(req.out).absolute()
    entries = [p for p in out.iterdir() if not p.name.startswith(".geomoe-write-test")] if out.is_dir() else []
    if entries and "geomoe:identity" not in (_root_attrs(out) or {}):
        return 0  # not what this run made (someone wrote there meanwhile): never delete it
    shutil.rmtree(out, ignore_errors=True)  # we hold its lock: everything in it is this run's
    d = out.parent
    while d != created.parent and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent
    return 0


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space OSError behind ``exc`` (zarr and xarray may wrap it), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _disk_full_error(req: EmbedRequest, prep: Prepared | None, planned: tuple, exc: OSError,
                     kept: int) -> CubeDiskFullError:
    """One line for a full disk: where, about how much more is needed, and that a rerun resumes."""
    specs = list(prep.specs.values()) if prep is not None else planned[2]
    try:
        pending = prep.cube.pending_tiles() if prep is not None and kept else [t for s in specs for t in s.tiles()]
    except Exception:
        pending = [t for s in specs for t in s.tiles()]
    by_name = {s.name: s for s in specs}
    dim = int(checkpoint_info(resolve_checkpoint(req.checkpoint))["embed_dim"])
    try:
        block = os.statvfs(Path(req.out).absolute().parent).f_frsize or 4096
    except OSError:
        block = 4096
    need = sum(tile_bytes(by_name[t.group], t, dim, req.dtype, block) for t in pending)
    need += 64 * 1024 + 16 * block  # the STAC item beside the store and rewritten metadata (zarr.json)
    what = f"the {len(pending)} tile(s) not yet written"
    if not kept:  # the skeleton is made again too: coordinates, source items, metadata files
        need += sum(len(json.dumps(it.to_dict(transform_hrefs=False), default=str)) for it in planned[1])
        for s in specs:
            n = s.ny * s.nx if isinstance(s, GridSpec) else s.n
            need += n * 8 * 8 + 32 * block
        what = f"the cube's skeleton and {what}"
    where = f" (at {exc.filename})" if exc.filename and str(exc.filename) != str(req.out) else ""
    resume = (f"it resumes, keeping the {kept} tile(s) already finished" if kept else
              "no tile was finished, so it starts over")
    return CubeDiskFullError(
        f"no space left on the device while writing the cube {req.out}{where}: about "
        f"{_size(need)} more are needed for {what} (an estimate: the uncompressed size, an "
        "upper bound); free that much space (or use "
        f"another --out) and rerun the same command: {resume}")


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def _pipeline(prep: Prepared, pending: list[CubeTile], model, dev, run: int, dim: int, progress,
              total: int, prefetch: int, t0: float) -> dict:
    batches: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    writes: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    final = {"embedded": 0, "skipped": 0, "tiles": 0}
    # what the total counts for each tile's pending work until the tile is read: an estimate
    # where its chips are not yet enumerated, or where only some of its days are pending
    estimate = prep.cube.pending_chips_by_tile(pending)
    # done from the start: the finished tiles, and the finished days of a tile that lacks only
    # some (an appended or resumed run)
    already = total - int(round(sum(estimate.values())))
    n_estimated = sum(not s.is_exact(t) for s in prep.specs.values() for t in s.tiles())
    stop = threading.Event()
    bs = int(prep.request.batch_size)

    def put(q: queue.Queue, v: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(v, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for tile in pending:
                for batch in iter_tile_batches(prep, tile, bs):
                    if not put(batches, (tile, batch, model.preprocess(batch.pixels))):
                        return
                if not put(batches, (tile, None, None)):
                    return
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            put(batches, _DONE)

    def writer() -> None:
        try:
            while True:
                try:
                    buf = writes.get(timeout=0.2)
                except queue.Empty:
                    if stop.is_set():  # failed run: nothing more will come
                        return
                    continue
                if buf is _DONE:
                    return
                fault("before_tile_write")
                buf.write(prep.cube, run)
                final["embedded"] += buf.embedded
                final["skipped"] += buf.skipped
                final["tiles"] += 1
                fault("after_tile_write")
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    rt = threading.Thread(target=reader, name="geomoe-reader", daemon=True)
    wt = threading.Thread(target=writer, name="geomoe-writer", daemon=True)
    rt.start()
    wt.start()
    embedded = skipped = 0
    t_run = time.perf_counter()
    bufs: dict[CubeTile, TileBuffer] = {}
    exact_seen = {t for t in pending if prep.specs[t.group].is_exact(t)}
    try:
        while True:
            if errors:
                break
            try:
                msg = batches.get(timeout=0.5)
            except queue.Empty:
                if not wt.is_alive() and errors:
                    break
                continue
            if msg is _DONE:
                break
            tile, batch, z = msg
            buf = bufs.get(tile)
            if buf is None:  # the reader has planned the tile: its pending count is exact now
                buf = bufs.setdefault(tile, TileBuffer.new(prep.cube, tile, dim))
                n = prep.read_counts.get(tile)
                if n is not None:
                    total += n - estimate[tile]
                    estimate[tile] = n
                if prep.specs[tile.group].is_exact(tile) and tile not in exact_seen:
                    n_estimated -= 1
                    exact_seen.add(tile)
            if batch is None:
                if not put(writes, bufs.pop(tile)):
                    break
                continue
            emb = run_model(model, batch, z, dev, prep.request.pooling, prep.request.precision)
            e0, s0 = buf.embedded, buf.skipped
            buf.add(emb, batch)
            embedded += buf.embedded - e0
            skipped += buf.skipped - s0
            if progress is not None:
                dt = time.perf_counter() - t_run
                rate = (embedded + skipped) / dt if dt > 0 else 0.0
                done, shown = already + embedded + skipped, int(round(total))
                progress(Progress(done, shown, embedded, skipped, rate,
                                  max(shown - done, 0) / rate if rate > 0 else None, n_estimated > 0))
    finally:
        if errors:
            stop.set()
        put(writes, _DONE) if not stop.is_set() else None
        wt.join()
        stop.set()
        rt.join(timeout=5)
    if errors:
        raise errors[0]
    final["total"] = int(round(total))
    return final
