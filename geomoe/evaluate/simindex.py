"""The similarity index kept beside a cube: every embedded chip's unit vector as float16.

Why this index (chosen on measurements, see benchmarks/README.md): an exact scan of
float16 unit vectors streamed from one flat file is fast enough for the query target, keeps
memory flat (a fixed read buffer) and gives exact ranks up to float16 rounding; reading the
cube's compressed chunks for every query is several times slower, and compressed ANN indexes
(PQ, IVF) trade recall for speed the scan does not need. The format is deliberately plain:
``vectors.f16`` (N, D) little-endian float16 rows (FAISS's ``QT_fp16`` scalar-quantizer
codes are the same bytes), ``chips.i32`` (N, 4) int32 rows (group, time, y, x index; the
table group has time = x = -1 and y = chip index), and ``index.json``.

The index is rebuilt whenever the cube it was built from changed (another run, another
shape, another model); a cube still being written is indexed for this query only.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geomoe.atomic import fsync_dir, publish
from geomoe.cube.reader import CubeView
from geomoe.errors import GeomoeError
from geomoe.evaluate.cubechips import iter_chip_blocks

FORMAT = 1
MARK = "geomoe:similarity_index"
SCAN_ROWS = 131_072  # rows per read: the scan's memory is this times (2 D + 4) bytes
#: above this many chips the scan uses torch's float16 kernel (several times faster than
#: numpy's float16 -> float32 conversion, but importing torch takes seconds)
TORCH_FROM = 1_000_000


class SimilarityIndexError(GeomoeError):
    """The index location holds something geomoe did not write, or cannot be written."""


def default_index_path(cube: CubeView) -> Path:
    """``<cube>.simindex`` beside the cube's store."""
    return cube.path.with_name(cube.path.name + ".simindex")


def cube_key(cube: CubeView) -> dict[str, Any]:
    """What the index must match to be reused: identity, run count and every group's shape."""
    ident = cube.attrs.get("geomoe:identity") or {}
    return {"plan_fingerprint": ident.get("plan_fingerprint"),
            "checkpoint_sha256": ident.get("checkpoint_sha256"),
            "runs": cube.attrs.get("geomoe:runs"), "groups": list(cube.groups),
            "sizes": {g: {k: int(v) for k, v in cube[g].sizes.items()} for g in cube.groups}}


@dataclass
class SimIndex:
    """An opened index: ``n`` rows of ``dim`` float16 at ``path``."""

    path: Path
    n: int
    dim: int
    groups: list[str]
    meta: dict[str, Any]

    @property
    def vectors(self) -> Path:
        return self.path / "vectors.f16"

    @property
    def chips(self) -> Path:
        return self.path / "chips.i32"

    def locate(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 4) int32 locator rows (group, t, i, j) of index ``rows``."""
        out = np.empty((len(rows), 4), np.int32)
        with open(self.chips, "rb") as f:
            for k, r in enumerate(np.asarray(rows, np.int64)):
                f.seek(int(r) * 16)
                out[k] = np.frombuffer(f.read(16), np.int32)
        return out

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir())


def _read_meta(path: Path) -> dict[str, Any] | None:
    from geomoe.atomic import read_json_object

    meta = read_json_object(path / "index.json")
    return meta if meta is not None and meta.get(MARK) == FORMAT else None


def _check_location(path: Path) -> None:
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and _read_meta(path) is None)):
        raise SimilarityIndexError(
            f"similarity index location {path} exists and geomoe did not write it; it is left "
            "untouched: move it away or pass another index path")


def build_index(cube: CubeView, path: Path) -> SimIndex:
    """Write the index of every embedded chip of ``cube`` at ``path`` (one pass over the cube).

    Written into a temporary folder beside ``path`` and moved into place, so a reader never
    sees a half-built index; an older geomoe index at ``path`` is replaced.
    """
    _check_location(path)
    t0 = time.perf_counter()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise SimilarityIndexError(f"cannot write the similarity index at {path}: {exc.strerror or exc}; "
                          "pass an index path in a writable folder") from None
    gid = {g: k for k, g in enumerate(cube.groups)}
    n, dim = 0, None
    try:
        with open(tmp / "vectors.f16", "wb") as fv, open(tmp / "chips.i32", "wb") as fc:
            for b in iter_chip_blocks(cube):
                e = b.embedding.astype(np.float32)
                norm = np.linalg.norm(e, axis=1, keepdims=True)
                e = np.divide(e, norm, out=np.zeros_like(e), where=norm > 0)
                fv.write(e.astype("<f2").tobytes())
                loc = np.stack([np.full(len(b), gid[b.group], np.int32), b.t, b.i, b.j], axis=1)
                fc.write(loc.astype("<i4").tobytes())
                n += len(b)
                dim = e.shape[1]
            fv.flush(), os.fsync(fv.fileno()), fc.flush(), os.fsync(fc.fileno())
        meta = {MARK: FORMAT, "cube": str(cube.path.resolve()), "key": cube_key(cube), "n": n,
                "dim": dim or 0, "groups": list(cube.groups),
                "built_seconds": round(time.perf_counter() - t0, 3),
                "complete": _complete(cube)}
        (tmp / "index.json").write_text(json.dumps(meta, indent=1))
        try:
            publish(tmp, path)  # replaces a geomoe index (checked above); open readers keep their files
        except OSError:
            # another query built the same index at the same time and moved it in first
            other = _read_meta(path) if path.is_dir() else None
            if other is None or other.get("key") != meta["key"]:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return SimIndex(path, int(other["n"]), int(other["dim"]), list(other["groups"]), other)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SimIndex(path, n, dim or 0, list(cube.groups), meta)


def _complete(cube: CubeView) -> bool:
    try:
        return bool(cube.complete)
    except GeomoeError:
        return False


def open_index(cube: CubeView, path: Path | None = None, *, rebuild: bool = False) -> tuple[SimIndex, bool]:
    """The index of ``cube`` at ``path`` (default :func:`default_index_path`), built when
    absent, stale or ``rebuild``; returns (index, built_now)."""
    path = Path(path) if path is not None else default_index_path(cube)
    _check_location(path)
    meta = _read_meta(path) if path.is_dir() else None
    fresh = (meta is not None and not rebuild and meta.get("complete")
             and meta.get("key") == cube_key(cube)
             and (path / "vectors.f16").stat().st_size == meta["n"] * meta["dim"] * 2)
    if fresh:
        return SimIndex(path, int(meta["n"]), int(meta["dim"]), list(meta["groups"]), meta), False
    return build_index(cube, path), True


def scan(index: SimIndex, query: np.ndarray, k: int, *, rows: int = SCAN_ROWS
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine similarity of ``query`` with every indexed chip, and the top ``k``.

    Parameters
    ----------
    index : SimIndex
    query : ndarray (D,)
        Any non-zero vector (normalised here).
    k : int
        How many best chips to return.
    rows : int
        Rows read per step (memory stays at about ``rows * (2 D + 4)`` bytes plus the scores).

    Returns
    -------
    top_rows : ndarray (k',) int64
        Index rows of the best chips, best first (k' = min(k, n)).
    top_scores : ndarray (k',) float32
        Their cosine similarity, from the float16 unit vectors in float32 arithmetic.
    scores : ndarray (n,) float16
        Every chip's cosine similarity (the map), float16.
    """
    q = np.asarray(query, np.float32)
    q = q / np.linalg.norm(q)
    if index.n > TORCH_FROM:  # torch's float16 matrix-vector kernel; worth its import here
        import torch

        from geomoe.device import limit_threads

        limit_threads()  # never more compute threads than cores
        qh = torch.from_numpy(q.astype(np.float16))

        def dot(block: np.ndarray) -> np.ndarray:
            return torch.mv(torch.from_numpy(block), qh).numpy()
    else:
        def dot(block: np.ndarray) -> np.ndarray:
            return (block.astype(np.float32) @ q).astype(np.float16)
    n, d = index.n, index.dim
    scores = np.empty(n, np.float16)
    buf = np.empty(rows * d, np.float16)
    best_rows = np.zeros(0, np.int64)
    best = np.zeros(0, np.float32)
    cand = 2 * k  # per block, rescored in float32: ties of float16 scores cannot hide a winner
    off = 0
    with open(index.vectors, "rb", buffering=0) as f:
        while off < n:
            got = f.readinto(memoryview(buf).cast("B"))
            m = got // (2 * d)
            if m == 0:
                break
            block = buf[: m * d].reshape(m, d)
            s = dot(block)
            scores[off:off + m] = s
            c = np.argpartition(s, m - cand)[m - cand:] if m > cand else np.arange(m)
            exact = block[c].astype(np.float32) @ q
            best_rows = np.concatenate([best_rows, c.astype(np.int64) + off])
            best = np.concatenate([best, exact])
            if len(best) > k:
                keep = np.argpartition(-best, k)[:k]
                best_rows, best = best_rows[keep], best[keep]
            off += m
    if off != n:
        raise GeomoeError(f"similarity index {index.path} is truncated ({off} of {n} rows): "
                          "delete it, it is rebuilt on the next query")
    order = np.lexsort((best_rows, -best))
    return best_rows[order], best[order], scores
