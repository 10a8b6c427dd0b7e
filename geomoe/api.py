"""Public entry points that are not one module's own function: ``load_model`` and ``pretrain``.

Both are re-exported by ``geomoe`` (``geomoe.load_model``, ``geomoe.pretrain``); they wrap
:func:`geomoe.model.load_checkpoint` and :func:`geomoe.train.loop.train` with the CLI's defaults, so a
script and ``geomoe pretrain`` take the same inputs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from geomoe.model import MoEMAE
    from geomoe.train.loop import TrainConfig, TrainResult


def load_model(checkpoint: str | os.PathLike | None = None, *, device: str = "cpu") -> "MoEMAE":
    """Load a checkpoint as a model ready for inference (eval mode).

    Parameters
    ----------
    checkpoint : str or PathLike, optional
        A geomoe ``.safetensors`` checkpoint or the published ``pretrained_*.pth``. None: the
        demo checkpoint ``checkpoints/geomoe-demo-S.safetensors``, by the same rule as
        ``embed_region`` (never random weights: a missing file is an error).
    device : str
        "cpu", "cuda", "cuda:N" or "auto" (the first CUDA GPU if torch sees one, else the CPU).

    Returns
    -------
    geomoe.model.MoEMAE
        The model in ``eval()`` mode on ``device``. ``model.embed(images, week, hour, lat, lon)``
        maps ``images`` (B, 7, 40, 40) float32, bands SR_B1..SR_B7 of Landsat Collection 2 L2
        DN z-scored with ``model.config.norm_mean`` / ``norm_std``, and the optional metadata
        (B, 2) float32 (sin, cos) to embeddings (B, D), D = ``model.embed_dim``.

    Raises
    ------
    geomoe.errors.CheckpointError
        The file is missing, unsafe (pickle code), corrupt or not an MoE-MAE checkpoint.
    """
    from geomoe.device import resolve_device
    from geomoe.model.checkpoint import resolve_checkpoint
    from geomoe.model import load_checkpoint

    return load_checkpoint(resolve_checkpoint(checkpoint), map_location=resolve_device(device))


def pretrain(
    aoi: Any,
    out: str | os.PathLike,
    *,
    catalog: str | os.PathLike | None = None,
    datetime: str | None = None,
    max_cloud: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | os.PathLike | None = None,
    stop_at_step: int | None = None,
    max_minutes: float | None = None,
    log: Callable[[str], None] | None = print,
    **settings: Any,
) -> "TrainResult":
    """Pretrain the MoE-MAE (masked autoencoder) on the chips of a catalog search.

    The Python form of ``geomoe pretrain``: searches ``catalog`` for Landsat 8/9 scenes meeting
    ``aoi`` and ``datetime``, streams their 40 x 40 pixel chips (30 m pixels) and trains, writing
    the run folder ``out`` (``model.safetensors``, ``state/latest.pt``, ``metrics.csv``,
    ``run.json``, ``previews/``). A run stopped early (``stop_at_step``, ``max_minutes``, a
    crash) continues exactly with ``resume=True``.

    Parameters
    ----------
    aoi : str, Path, dict or shapely geometry
        Area of interest: GeoJSON file, URL, inline GeoJSON or geometry (EPSG:4326 unless the
        GeoJSON names another CRS); chips lie inside it, so it must have an area.
    out : str or PathLike
        Run folder. A folder holding a geomoe run is refused unless ``resume`` or ``overwrite``;
        one holding anything else is always refused.
    catalog : str or PathLike, optional
        STAC API URL, static catalog or collection file; None: the bundled catalog.
    datetime : str, optional
        RFC 3339 instant or interval, e.g. "2020-06-01/2020-09-30" (".." for an open end).
    max_cloud : float, optional
        Largest ``eo:cloud_cover`` in percent (0-100) of the scenes used.
    resume : bool
        Continue the run in ``out`` from its last checkpoint. Settings that change what a step
        does must equal the saved ones; ``steps`` may grow to extend the schedule.
    overwrite : bool
        Replace the geomoe run in ``out`` (only the files geomoe wrote for it).
    init_from : str or PathLike, optional
        Start from the weights of this checkpoint (fine-tuning) instead of random ones.
    stop_at_step : int, optional
        Stop after this optimizer step, with a checkpoint; the learning-rate schedule still
        follows ``steps``.
    max_minutes : float, optional
        Stop after this much training time (minutes), with a checkpoint.
    log : callable, optional
        Receives one line of progress per logged step; None is silent.
    **settings
        Fields of :class:`geomoe.train.loop.TrainConfig`: ``steps`` (default 1000), ``size`` ("S",
        "XS", "XXS"), ``batch_size`` (chips per step), ``lr``, ``seed``, ``device``,
        ``precision``, ``compile``, ... On ``resume`` unset fields keep their saved values.

    Returns
    -------
    geomoe.train.loop.TrainResult
        ``step`` reached of ``steps``, ``stopped`` ("done", "stop_at_step" or "time_limit"),
        ``final_loss``, ``elapsed_s`` (seconds), ``model_path`` (the ``.safetensors`` to embed
        with) and the other files of the run.

    Raises
    ------
    geomoe.train.loop.TrainConfigError
        A setting is unknown or out of range (nothing is written).
    geomoe.errors.GeomoeError
        Bad AOI, catalog, search without scenes, a refused ``out``: before anything is written.
    """
    from geomoe.stac.aoi import load_aoi
    from geomoe.stac.search import search
    from geomoe.train.loop import check_run_folder, train

    out = Path(out)
    config = _config(settings, out, resume)  # bad settings: refused before the search
    if not resume:
        check_run_folder(out, overwrite=overwrite)
    geom = load_aoi(aoi, area=True)
    items = search(catalog, geom, datetime=datetime, max_cloud=max_cloud)
    return train(
        items, out, config, aoi=geom, resume=resume, overwrite=overwrite and not resume,
        init_from=init_from, stop_at_step=stop_at_step,
        max_seconds=None if max_minutes is None else 60.0 * max_minutes,
        data_info={"catalog": str(catalog) if catalog is not None else "bundled",
                   "aoi": aoi if isinstance(aoi, (str, dict)) else str(aoi),
                   "datetime": datetime, "max_cloud": max_cloud},
        log=log,
    )


def _config(settings: dict[str, Any], out: Path, resume: bool) -> "TrainConfig | None":
    """The TrainConfig of ``settings``: on ``resume`` over the saved one (None keeps it whole)."""
    from geomoe.train.loop import TrainConfig, TrainConfigError, read_run_json

    known = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise TrainConfigError(
            f"unknown pretrain setting(s) {', '.join(unknown)}: use fields of TrainConfig "
            f"({', '.join(known)})")
    if not resume:
        return TrainConfig(**settings)
    if not settings:
        return None
    saved = read_run_json(out)
    base = TrainConfig.from_json(saved["config"]) if saved is not None else TrainConfig()
    return dataclasses.replace(base, **settings)
