"""Exclusive run lock on a cube store.

Why flock on the store directory itself: the kernel drops the lock when the holder dies
(even by SIGKILL), so a killed run never leaves a stale lock behind, and no extra file
has to live inside the Zarr hierarchy. Local filesystems only (document: NFS flock is
advisory at best); object stores would need a lease instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from geomoe.errors import CubeError


class CubeLockedError(CubeError):
    """Another run holds the store: two writers on one cube are refused, not interleaved."""


@contextlib.contextmanager
def store_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on directory ``path`` for the ``with`` body."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CubeLockedError(
                f"{path} is being written by another geomoe run (it holds the lock); "
                "wait for it to finish or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
