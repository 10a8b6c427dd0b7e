"""Reading a finished (or partly written) embedding cube: ``geomoe.open_cube``.

The reader's contract for analysts and for code built on cubes (probes, similarity search,
export): a read-only :class:`CubeView` that maps each group name to a lazy ``xarray.Dataset``
(exactly what ``xr.open_zarr(path, group=name)`` gives, CRS decoded), plus the cube's
provenance decoded from JSON and its source STAC items. Bookkeeping (tile completion records,
the write lock) stays out of sight. Nothing here imports torch.

Why a view, not a plain dict of datasets: the provenance and the completeness check belong
to the cube, not to one group, and the datasets open lazily, one group at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import xarray as xr
import zarr

from geomoe.cube.store import BOOKKEEPING, cube_groups, open_group, read_items, tile_done_path
from geomoe.errors import CubeError

#: root attributes that only steer writing (the groups are :attr:`CubeView.groups`)
_WRITER_KEYS = ("geomoe:groups", "geomoe:n_items", "geomoe:skeleton_complete", "geomoe:finished_run",
                "geomoe:layout")


class CubeView(Mapping):
    """A geomoe cube opened for reading: group name -> ``xarray.Dataset``.

    Grid groups (named after their CRS, e.g. ``utm30n``) hold ``embedding`` (time, y, x, dim)
    and ``valid_fraction`` (time, y, x) on a regular grid of 1200 m chips (x, y: chip centres
    in metres of the group's CRS; lat, lon in degrees); the table group ``chips`` holds
    ``embedding`` (chip, dim) and ``valid_fraction`` (chip) of pre-chipped patches. A chip never
    computed is NaN in both; one skipped for cloud or fill is NaN in ``embedding`` only. Grid
    groups come sorted by time: solar days appended by a later run are stored after the
    existing ones whatever their date (a plain ``xr.open_zarr`` shows that storage order).

    Attributes
    ----------
    path : Path
        The store.
    groups : tuple of str
        The data groups, in the order the cube lists them.
    attrs : dict
        Provenance, as JSON values (the groups carry the same, JSON-encoded as strings so
        ``to_netcdf`` works): ``geomoe:model`` (size, config, checkpoint file name and sha256,
        pooling), ``geomoe:normalisation`` (per-band DN mean and std), ``geomoe:query`` (AOI,
        datetime, catalog, ...), ``geomoe:chips`` (40 pixels, 1200 m, bands),
        ``geomoe:identity``, ``geomoe:version``, ``geomoe:created``, ``geomoe:runs`` and
        ``geomoe:run_log`` (device and precision of each run).
    """

    def __init__(self, path: Path, groups: tuple[str, ...], attrs: dict[str, Any]) -> None:
        self.path = path
        self.groups = groups
        self.attrs = attrs
        self._datasets: dict[str, xr.Dataset] = {}

    # ---------- the mapping: group name -> Dataset ----------
    def __getitem__(self, name: str) -> xr.Dataset:
        if name not in self.groups:
            raise KeyError(f"{self.path} has no group {name!r}; its groups are "
                           f"{', '.join(self.groups)}")
        if name not in self._datasets:
            ds = open_group(self.path, name)
            if "time" in ds.indexes and not ds.indexes["time"].is_monotonic_increasing:
                ds = ds.sortby("time")  # appended days are stored last, whatever their date
            self._datasets[name] = ds
        return self._datasets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def group(self, name: str) -> xr.Dataset:
        """One group as a lazy (dask-backed) ``xarray.Dataset``; ``cube[name]`` is the same.

        Parameters
        ----------
        name : str
            A name from :attr:`groups`.

        Returns
        -------
        xarray.Dataset
            ``embedding`` (time, y, x, dim) or (chip, dim), float32 or float16;
            ``valid_fraction`` in [0, 1], NaN where never computed; ``spatial_ref`` (``.rio.crs``)
            on grid groups.
        """
        return self[name]

    def stac_items(self) -> list[dict]:
        """The source STAC items the cube was planned from, as dicts (one per scene)."""
        return read_items(self.path)

    @property
    def complete(self) -> bool:
        """True when the last run finished every (tile, solar day) it planned; False while a
        run is going, or after one was interrupted (a rerun of it resumes)."""
        root = zarr.open_group(str(self.path), mode="r", use_consolidated=False).attrs.asdict()
        if root.get("geomoe:identity", {}).get("format_version", 1) < 3:  # one record per tile
            for g in self.groups:
                try:
                    done = zarr.open_array(str(self.path), path=tile_done_path(g), mode="r")[...]
                except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError) as exc:
                    raise CubeError(f"{self.path}: no completion records for group {g!r} under "
                                    f"{BOOKKEEPING}/ ({exc}); it was not written by this geomoe "
                                    "version") from None
                if not done.all():
                    return False
            return True
        runs = int(root.get("geomoe:runs", 0))
        return runs > 0 and int(root.get("geomoe:finished_run", 0)) == runs

    def __repr__(self) -> str:
        model = self.attrs.get("geomoe:model", {})
        sha = str(model.get("checkpoint_sha256") or "")[:12]
        return (f"<geomoe cube {self.path}: groups {', '.join(self.groups)}; model "
                f"{model.get('size')} {model.get('checkpoint')} ({sha}...), "
                f"pooling {model.get('pooling')}>")


def open_cube(path: str | os.PathLike) -> CubeView:
    """Open an embedding cube written by ``embed_region`` for reading.

    Opening reads metadata only; each group's arrays load lazily when used. The store is never
    written to, and a cube whose run is still going or was interrupted opens too (its pending
    chips are NaN; see :attr:`CubeView.complete`).

    Parameters
    ----------
    path : str or PathLike
        The cube's Zarr store (a directory, e.g. ``cube.zarr``).

    Returns
    -------
    CubeView
        A read-only mapping of group name -> ``xarray.Dataset`` with ``.groups``,
        ``.group(name)``, ``.attrs`` (provenance decoded from JSON), ``.stac_items()`` and
        ``.complete``.

    Raises
    ------
    geomoe.errors.CubeError
        ``path`` does not exist, is not a geomoe cube, or is a skeleton whose creation was
        interrupted (it holds no embeddings).

    Examples
    --------
    >>> cube = geomoe.open_cube("cube.zarr")
    >>> ds = cube["utm30n"]
    >>> ds.embedding.sel(time="2020-09-27").mean("dim")
    """
    p = Path(path)
    if not p.exists():
        raise CubeError(f"{p} does not exist: pass the --out store of a geomoe embed-region run")
    if not p.is_dir():
        raise CubeError(f"{p} is a file, not a cube: a geomoe cube is a Zarr directory")
    groups = tuple(cube_groups(p))  # CubeError: not a geomoe cube, or an unfinished skeleton
    root = zarr.open_group(str(p), mode="r", use_consolidated=False).attrs.asdict()
    attrs = {k: v for k, v in root.items() if k not in _WRITER_KEYS}
    return CubeView(p, groups, attrs)
