"""Atomic file writes: readers (and a crash) see the old complete file or the new one, never half.

Every file geomoe writes whole (checkpoints, training state, run.json, reports, plots, STAC
items, COGs) goes through :func:`atomic_write`: the content goes to ``.<name>.tmp-<pid>`` in
the same folder, is fsynced, gets the mode a plain ``open()`` would give (some writers, e.g.
safetensors, create 0600 files), is ``os.replace``d over the target (atomic on POSIX), and the
folder is fsynced so the rename survives a power cut. The pid in the temporary name lets
:func:`remove_stale_tmp` tell a killed writer's leftovers from a live one's.
:func:`read_json_object` reads such a file back without trusting it (it may be someone else's).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

_SLICE = 1 << 20


def umask_file_mode() -> int:
    """0o666 minus the process umask: the mode `open()` gives a new file (read without a race
    from /proc where possible, since `os.umask` can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: Path) -> None:
    """Persist a rename inside `folder` (POSIX needs the directory itself fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def tmp_path(path: Path) -> Path:
    """The temporary name :func:`atomic_write` uses for `path` in this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Path], Any]) -> Path:
    """Write `path` atomically and durably; returns it as a Path.

    Parameters
    ----------
    path
        The final file; its folder is created if missing.
    data
        The content (bytes, or str written as UTF-8), or a callable ``write(tmp)`` that writes
        the whole file at the temporary path it is given (``torch.save``, ``fig.savefig``,
        a rasterio dataset, ``shutil.copyfile``...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        if callable(data):
            data(tmp)
        else:
            raw = data.encode() if isinstance(data, str) else data
            with open(tmp, "wb") as fh:
                # slices, so a kill mid-save really leaves a partial tmp (tests/train/test_atomic.py)
                view = memoryview(raw)
                for start in range(0, len(view), _SLICE):
                    fh.write(view[start : start + _SLICE])
        os.chmod(tmp, umask_file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move a finished temporary file or folder (a Zarr store, a Parquet file written in row
    groups) into place in one rename, then make the rename durable.

    A folder already at ``path`` is removed first: the caller has checked it is geomoe's own
    earlier output. Writers that build their output whole use :func:`atomic_write` instead."""
    tmp, path = Path(tmp), Path(path)
    if path.is_dir() and not path.is_symlink() and tmp.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files left by writers that were killed mid-save (their pid is gone)."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in file ``path``, or None where it is missing, unreadable, not JSON or
    not an object: for deciding whether an existing file is one geomoe wrote."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return doc if isinstance(doc, dict) else None
