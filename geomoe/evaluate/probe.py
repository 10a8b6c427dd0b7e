"""Linear probes on frozen geomoe embeddings, the protocol of the MoE-MAE paper and Landsat-Bench.

Embeddings come from `model.embed` (frozen, eval mode, deterministic); a StandardScaler +
LogisticRegression is fitted per training fold:

- **BigEarthNet-Landsat (multi-label, 19 classes)**: one LogisticRegression per class
  (one-vs-rest); micro and macro mAP over repeated k-fold splits. The splits are stratified for
  multi-label data by *iterative stratification* (Sechidis, Tsoumakas & Vlahavas 2011): samples of
  the rarest remaining label are dealt first, each to the fold that most lacks that label, so every
  fold gets about 1/k of every class, rare ones included.
  Micro mAP = average precision over all (sample, class) pairs of a test fold; macro mAP = mean
  AP over the classes that have at least one positive in that test fold (AP is undefined
  otherwise). Mean and std are over all folds of all repeats.
- **Folder of GeoTIFFs per class (EuroSAT-Landsat layout, multi-class)**: ``root/<class>/*.tif``,
  7 bands SR_B1..SR_B7 (DN), repeated stratified k-fold accuracy; no metadata (zeros), as the
  published EuroSAT probe.

The bundled sample (199 labelled patches) is far too small to compare with the paper's full-test
figures (BigEarthNet-Landsat micro/macro mAP 73.1/55.7, EuroSAT-Landsat accuracy 74.3): the
reports say so and give the spread.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geomoe.atomic import atomic_write
from geomoe.chips.plan import ChipBatch
from geomoe.errors import CheckpointError, GeomoeError, require_extra
from geomoe.resources import demo_checkpoint, labelled_catalog
from geomoe.evaluate.probe_common import (REPORT_KIND, check_report_paths, iterative_stratified_folds,
                                         single_threaded)

if TYPE_CHECKING:  # torch loads only where a model runs: the cube probe needs none
    import torch

#: The bundled labelled sample.
DEFAULT_LABELLED_CATALOG = labelled_catalog()
LABELS19_KEY = "bigearthnet:labels_19"
LABELS43_KEY = "bigearthnet:labels"

PAPER_REFERENCE = {
    "bigearthnet_landsat_micro_map": 73.1,
    "bigearthnet_landsat_macro_map": 55.7,
    "eurosat_landsat_accuracy": 74.3,
    "note": (
        "The paper's notebooks report these with the published S weights on the full test sets. "
        "This probe runs on a small sample (a few hundred patches at most, cross-validated): its "
        "numbers are too noisy and too differently sampled to compare directly; look at the "
        "spread (std) and at the difference to the random-weights baseline instead."
    ),
}


class LabelsMissingError(GeomoeError):
    """The probe data carries no usable labels (no labelled item, or too few per class)."""


class CheckpointSizeError(CheckpointError):
    """A checkpoint is of another model size than the one asked for."""


class ProbeFoldsWarning(UserWarning):
    """The probe used fewer folds than asked, because a class has too few samples."""


# ---------------------------------------------------------------------------------- data
@dataclass
class ProbeData:
    """A labelled set: its chips and their targets.

    Attributes
    ----------
    chips : ChipBatch
        N chips (``pixels`` (N, 7, 40, 40) uint16 DN, metadata (N, 2) or None where the
        source has none, ``item_id`` the labelled item or ``<class>/<file>``).
    classes : list of str
        Class names, in target order.
    y : (N, C) int8 0/1 (multi-label) or (N,) int (multi-class)
    multilabel : bool
    counts : dict
        What was read and what was left out (reported).
    """

    chips: ChipBatch
    classes: list[str]
    y: np.ndarray
    multilabel: bool
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.chips)


def load_labelled_items(catalog: str | Path | None = None) -> tuple[list[Any], list[Any]]:
    """Items of a static catalog/collection on disk, split into (labelled, unlabelled).

    Labelled = the item has `bigearthnet:labels_19` (or `bigearthnet:labels`, mapped to 19
    classes) with at least one 19-class label. Asset hrefs are made absolute.
    """
    import pystac

    from geomoe.evaluate.labels import to_ben19

    path = Path(catalog) if catalog else DEFAULT_LABELLED_CATALOG
    if not path.exists():
        raise LabelsMissingError(
            f"labelled catalog {path} does not exist: pass --catalog with a static STAC "
            "catalog/collection whose items carry 'bigearthnet:labels_19'"
        )
    obj = pystac.read_file(str(path))
    if isinstance(obj, pystac.Item):
        items = [obj]
    else:
        items = list(obj.get_items(recursive=True))
    labelled, unlabelled = [], []
    for it in items:
        it.make_asset_hrefs_absolute()
        props = it.properties
        if props.get(LABELS19_KEY):
            labels = list(props[LABELS19_KEY])
        elif props.get(LABELS43_KEY):
            labels = to_ben19(props[LABELS43_KEY])
        else:
            labels = []
        (labelled if labels else unlabelled).append((it, labels))
    if not labelled:
        raise LabelsMissingError(
            f"none of the {len(items)} items of {path} has labels ({LABELS19_KEY!r} or "
            f"{LABELS43_KEY!r} properties): a linear probe needs labelled items, e.g. the "
            "bundled catalogs/bigearthnet-landsat-sample"
        )
    return labelled, unlabelled


def load_bigearthnet(
    catalog: str | Path | None = None, *, min_valid: float = 0.9, use_metadata: bool = True
) -> ProbeData:
    """Chip every labelled item (item grid: its centre 40x40) into a multi-label ProbeData."""
    from geomoe.chips.plan import iter_chips
    from geomoe.evaluate.labels import BEN19_CLASSES, ben19_multihot

    labelled, unlabelled = load_labelled_items(catalog)
    labels_of = {it.id: labels for it, labels in labelled}
    parts: list[ChipBatch] = []
    seen: set[str] = set()
    for batch in iter_chips([it for it, _ in labelled], aoi=None, batch_size=64,
                            min_valid=min_valid, grid="item"):
        if not len(batch.pixels):
            continue
        ids = [str(i) for i in np.asarray(batch.item_id)]
        keep = [j for j, i in enumerate(ids) if i in labels_of and i not in seen]
        seen.update(ids[j] for j in keep)
        parts.append(batch.take(np.asarray(keep, dtype=np.intp)))
    chips = ChipBatch.concat(parts) if parts else None
    if chips is None or not len(chips):
        raise LabelsMissingError(
            f"all {len(labelled)} labelled items were skipped as invalid (valid fraction under "
            f"{min_valid}): lower --min-valid"
        )
    if not use_metadata:
        chips.week = chips.hour = chips.lat = chips.lon = None
    ids = [str(i) for i in chips.item_id]
    y = np.asarray([ben19_multihot(labels_of[i]) for i in ids], dtype=np.int8)
    return ProbeData(
        chips=chips, classes=list(BEN19_CLASSES), y=y, multilabel=True,
        counts={
            "items": len(labelled) + len(unlabelled),
            "unlabelled_excluded": len(unlabelled),
            "invalid_excluded": len(labelled) - len(ids),
            "samples": len(ids),
        },
    )


def load_folder_dataset(root: str | Path, *, min_per_class: int = 2) -> ProbeData:
    """EuroSAT-Landsat layout `root/<class>/*.tif` (7 bands, DN) -> multi-class ProbeData.

    Rasters larger than 40x40 give their centre 40x40 crop; smaller ones are resized to 40x40
    (bilinear), since the model's grid is fixed. Float rasters are read as reflectance and mapped
    back to DN with the C2 L2 scale/offset.
    """
    import rasterio

    from geomoe.chips.bands import SR_OFFSET, SR_SCALE

    root = Path(root)
    if not root.is_dir():
        raise LabelsMissingError(f"dataset folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = {c: sorted(q for q in (root / c).iterdir() if q.suffix.lower() in (".tif", ".tiff"))
             for c in classes}
    classes = [c for c in classes if files[c]]
    if len(classes) < 2:
        raise LabelsMissingError(
            f"{root} has {len(classes)} class folder(s) with GeoTIFFs: a probe needs at least 2 "
            "(layout root/<class>/<file>.tif)"
        )
    small = {c: len(files[c]) for c in classes if len(files[c]) < min_per_class}
    if small:
        raise LabelsMissingError(
            f"classes with fewer than {min_per_class} files in {root}: {small}; add files or "
            "lower the number of folds"
        )
    pixels, y, ids = [], [], []
    for ci, c in enumerate(classes):
        for f in files[c]:
            with rasterio.open(f) as src:
                if src.count < 7:
                    raise LabelsMissingError(
                        f"{f} has {src.count} bands; the model needs the 7 SR bands SR_B1..SR_B7"
                    )
                arr = src.read(list(range(1, 8)))
            pixels.append(_to_40(_to_dn(arr, SR_SCALE, SR_OFFSET)))
            y.append(ci)
            ids.append(f"{c}/{f.name}")
    chips = ChipBatch(pixels=np.stack(pixels), week=None, hour=None, lat=None, lon=None,
                      item_id=np.asarray(ids, dtype=str))
    return ProbeData(
        chips=chips, classes=classes, y=np.asarray(y), multilabel=False,
        counts={"samples": len(ids), "classes": len(classes)},
    )


def _to_dn(arr: np.ndarray, scale: float, offset: float) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.round((np.nan_to_num(arr) - offset) / scale), 0, 65535).astype(np.uint16)
    return arr.astype(np.uint16)


def _to_40(arr: np.ndarray, size: int = 40) -> np.ndarray:
    _, h, w = arr.shape
    if h >= size and w >= size:
        r0, c0 = (h - size) // 2, (w - size) // 2
        return arr[:, r0 : r0 + size, c0 : c0 + size]
    import torch

    t = torch.from_numpy(arr.astype(np.float32))[None]
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t[0].round().clamp(0, 65535).numpy().astype(np.uint16)


# ---------------------------------------------------------------------------------- model
def load_probe_model(
    checkpoint: str | Path | None, *, random_init: bool = False, size: str | None = None,
    seed: int = 0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The frozen encoder to probe and a description of it (checkpoint path, sha256, size)."""
    import torch

    from geomoe.model import build_model, checkpoint_sha256, load_checkpoint
    from geomoe.model.checkpoint import resolve_checkpoint

    if random_init:
        torch.manual_seed(seed)
        model = build_model(size or "S").eval()
        return model, {"checkpoint": f"random-init (size {model.config.size}, seed {seed})",
                       "checkpoint_sha256": None, "size": model.config.size, "random_init": True}
    path = resolve_checkpoint(checkpoint, alternative=", or --random-init for the random-weights baseline")
    model = load_checkpoint(path, map_location="cpu")
    if size is not None and model.config.size != size.upper():
        raise CheckpointSizeError(
            f"{path} is a size-{model.config.size} model, not {size.upper()}: drop --size or "
            f"pass --size {model.config.size}"
        )
    return model.eval(), {"checkpoint": str(path), "checkpoint_sha256": checkpoint_sha256(path),
                          "size": model.config.size, "random_init": False}


def embed_data(
    model: torch.nn.Module, data: ProbeData, pooling: str = "mean", batch_size: int = 128
) -> np.ndarray:
    """Frozen embeddings (N, D) float32 of the probe chips (eval mode, deterministic), each
    z-scored with the model's own normalisation."""
    import torch

    model.eval()
    chips = data.chips
    out = []
    with torch.no_grad():
        for s in range(0, len(chips), batch_size):
            sl = slice(s, s + batch_size)
            x = torch.from_numpy(model.preprocess(chips.pixels[sl]))
            meta = {k: (None if getattr(chips, k) is None else torch.from_numpy(getattr(chips, k)[sl]))
                    for k in ("week", "hour", "lat", "lon")}
            out.append(model.embed(x, **meta, pooling=pooling).float().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------------- CV
def _fit_scores(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, c_reg: float) -> np.ndarray:
    """One-vs-rest scaled logistic regression; (N_test, C) decision scores.

    A class with no positive (or no negative) in the training fold cannot be fitted: its score
    is the constant training prior, which gives that class chance-level AP.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    a, b = sc.transform(xtr), sc.transform(xte)
    scores = np.empty((len(xte), ytr.shape[1]))
    for k in range(ytr.shape[1]):
        pos = ytr[:, k].sum()
        if pos == 0 or pos == len(ytr):
            scores[:, k] = pos / len(ytr)
            continue
        clf = LogisticRegression(C=c_reg, max_iter=2000)
        scores[:, k] = clf.fit(a, ytr[:, k]).decision_function(b)
    return scores


def cv_multilabel(
    x: np.ndarray, y: np.ndarray, *, n_folds: int = 5, n_repeats: int = 5, seed: int = 0,
    c_reg: float = 1.0,
) -> dict[str, Any]:
    """Repeated iteratively-stratified k-fold of a one-vs-rest probe: micro/macro mAP per fold."""
    from sklearn.metrics import average_precision_score

    if len(x) < 2 * n_folds:
        raise LabelsMissingError(f"{len(x)} labelled samples are too few for {n_folds}-fold CV")
    micro, macro, per_class = [], [], []
    for r in range(n_repeats):
        folds = iterative_stratified_folds(y, n_folds, np.random.default_rng([seed, r]))
        for f in range(n_folds):
            te, tr = folds == f, folds != f
            s = _fit_scores(x[tr], y[tr], x[te], c_reg)
            yt = y[te]
            micro.append(float(average_precision_score(yt.ravel(), s.ravel())))
            ap = np.full(y.shape[1], np.nan)
            for k in range(y.shape[1]):
                if yt[:, k].any():
                    ap[k] = average_precision_score(yt[:, k], s[:, k])
            macro.append(float(np.nanmean(ap)))
            per_class.append(ap)
    pc = np.asarray(per_class)
    with np.errstate(invalid="ignore"):
        return {
            "micro_map_folds": micro, "macro_map_folds": macro,
            "micro_map_mean": float(np.mean(micro)), "micro_map_std": float(np.std(micro)),
            "macro_map_mean": float(np.mean(macro)), "macro_map_std": float(np.std(macro)),
            "per_class_ap_mean": [_nan_none(v) for v in _nanmean(pc)],
            "per_class_ap_std": [_nan_none(v) for v in _nanstd(pc)],
            "per_class_folds_defined": [int(v) for v in np.isfinite(pc).sum(0)],
        }


def cv_multiclass(
    x: np.ndarray, y: np.ndarray, *, n_folds: int = 5, n_repeats: int = 5, seed: int = 0,
    c_reg: float = 1.0,
) -> dict[str, Any]:
    """Repeated stratified k-fold accuracy of a scaled multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    n_folds = multiclass_folds(y, n_folds)
    acc, per_class = [], []
    for r in range(n_repeats):
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed * 1000 + r)
        for tr, te in skf.split(x, y):
            sc = StandardScaler().fit(x[tr])
            clf = LogisticRegression(C=c_reg, max_iter=2000).fit(sc.transform(x[tr]), y[tr])
            pred = clf.predict(sc.transform(x[te]))
            acc.append(float((pred == y[te]).mean()))
            per_class.append([float((pred[y[te] == k] == k).mean()) if (y[te] == k).any()
                              else np.nan for k in range(int(y.max()) + 1)])
    pc = np.asarray(per_class)
    return {"accuracy_folds": acc, "accuracy_mean": float(np.mean(acc)),
            "accuracy_std": float(np.std(acc)), "n_folds": n_folds,
            "per_class_accuracy_mean": [_nan_none(v) for v in _nanmean(pc)]}


def multiclass_folds(y: np.ndarray, n_folds: int, classes: Sequence[str] | None = None) -> int:
    """The k a stratified k-fold can use: at most the size of the smallest class.

    Fewer folds than asked changes what the spread means, so it is warned about
    (ProbeFoldsWarning) and `run_probe` records both numbers in the report.
    """
    counts = np.bincount(np.asarray(y))
    present = counts[counts > 0] if len(counts) else counts
    smallest = int(present.min()) if len(present) else 0
    if smallest < 2:
        raise LabelsMissingError("every class needs at least 2 samples for cross-validation")
    if smallest >= n_folds:
        return n_folds
    k = int(np.flatnonzero(counts == smallest)[0])
    name = classes[k] if classes is not None else f"#{k}"
    warnings.warn(ProbeFoldsWarning(
        f"class {name!r} has only {smallest} samples: the probe uses {smallest} folds instead of "
        f"the {n_folds} asked; add samples to that class for {n_folds}-fold CV"), stacklevel=2)
    return smallest


def _nanmean(a: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        cnt = np.isfinite(a).sum(0)
        return np.where(cnt > 0, np.nansum(a, 0) / np.maximum(cnt, 1), np.nan)


def _nanstd(a: np.ndarray) -> np.ndarray:
    m = _nanmean(a)
    cnt = np.isfinite(a).sum(0)
    dev = np.where(np.isfinite(a), (a - m) ** 2, 0).sum(0)
    return np.where(cnt > 0, np.sqrt(dev / np.maximum(cnt, 1)), np.nan)


def _nan_none(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


# ---------------------------------------------------------------------------------- runner
def run_probe(
    *, checkpoint: str | Path | None = None, random_init: bool = False, size: str | None = None,
    pooling: str = "mean", catalog: str | Path | None = None, dataset_dir: str | Path | None = None,
    n_folds: int = 5, n_repeats: int = 5, seed: int = 0, baseline: bool = True,
    use_metadata: bool = True, report: str | Path | None = None, min_valid: float = 0.9,
    overwrite: bool = False, cube: str | Path | None = None, labels: str | Path | None = None,
    label_column: str | None = None, time: str | None = None, polygon_rule: str = "covers",
    label_separator: str | None = None, block_size: float | None = None,
) -> dict[str, Any]:
    """Linear-probe a frozen encoder: cross-validated logistic regression on its embeddings.

    This is the public ``geomoe.probe``. Unless ``baseline=False``, random weights of the same
    size and per-band statistics of the chips are probed on the same folds, for comparison.

    With ``cube``, the embeddings already in an embedding cube are probed with the labels of a
    vector file instead (nothing is re-embedded): random and spatially blocked CV, and a
    prediction map of the whole cube; see :func:`geomoe.evaluate.cube_probe.probe_cube`, which
    takes ``cube``, ``labels``, ``label_column``, ``report`` (required), ``time``,
    ``polygon_rule``, ``label_separator``, ``block_size``, ``n_folds``, ``seed`` and
    ``overwrite``.

    Parameters
    ----------
    checkpoint : str or Path, optional
        Model to probe (geomoe ``.safetensors`` or published ``.pth``); None: the demo checkpoint.
    random_init : bool
        Probe randomly initialised weights instead (seeded with ``seed``).
    size : str, optional
        Model size ("S", "XS", "XXS"); with a checkpoint it must match it.
    pooling : str
        Chip embedding from the tokens: "mean", "cls" or "patch_mean".
    catalog : str or Path, optional
        Labelled STAC catalog (BigEarthNet-Landsat layout); None: the bundled sample.
    dataset_dir : str or Path, optional
        Folder dataset ``<dir>/<class>/*.tif`` (7 bands SR_B1..SR_B7, DN) instead of a catalog;
        multi-class accuracy instead of multi-label mAP.
    n_folds, n_repeats : int
        Repeated stratified k-fold cross-validation.
    seed : int
        Seed of the folds and of random weights.
    baseline : bool
        Also probe the two baselines.
    use_metadata : bool
        Feed the chips' acquisition week, hour and location to the encoder.
    report : str or Path, optional
        Write the report here (``.json``) plus ``.csv`` (per chip) and ``.png`` of the same stem.
    min_valid : float
        Fraction in [0, 1]: skip catalog chips with fewer valid (clear, non-fill) pixels.
    overwrite : bool
        Replace an existing report set, only if geomoe wrote it; without it one is refused.

    Returns
    -------
    dict
        The report (JSON-able): ``task``, ``n_samples``, ``embedding_dim``, the scores (micro and
        macro mAP for multi-label, accuracy for multi-class; mean and std over all folds, in
        [0, 1]), the baselines' scores and ``summary`` (a few lines of text).
    """
    from geomoe.model.config import POOLINGS

    if cube is not None or labels is not None or label_column is not None:
        return _probe_cube(
            cube=cube, labels=labels, label_column=label_column, report=report, time=time,
            polygon_rule=polygon_rule, label_separator=label_separator, block_size=block_size,
            n_folds=n_folds, seed=seed, overwrite=overwrite,
            model_options={"checkpoint": checkpoint, "random_init": random_init,
                           "catalog": catalog, "dataset_dir": dataset_dir})
    require_extra("sklearn", "probe", "the linear probe (geomoe probe)")
    if pooling not in POOLINGS:
        raise GeomoeError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if report is not None:
        check_report_paths(Path(report), overwrite=overwrite)
    model, desc = load_probe_model(checkpoint, random_init=random_init, size=size, seed=seed)
    if dataset_dir is not None:
        data = load_folder_dataset(dataset_dir)
    else:
        data = load_bigearthnet(catalog, min_valid=min_valid, use_metadata=use_metadata)
    emb = embed_data(model, data, pooling)
    cv = single_threaded(cv_multilabel if data.multilabel else cv_multiclass)
    asked = n_folds
    if not data.multilabel:  # warned once here; the baselines below reuse the same k
        n_folds = multiclass_folds(data.y, n_folds, data.classes)
    res = cv(emb, data.y, n_folds=n_folds, n_repeats=n_repeats, seed=seed)
    rep: dict[str, Any] = {
        "kind": REPORT_KIND,
        "task": "bigearthnet-multilabel" if data.multilabel else "folder-multiclass",
        "dataset": str(dataset_dir or catalog or DEFAULT_LABELLED_CATALOG),
        **desc, "pooling": pooling, "metadata": bool(use_metadata and data.chips.week is not None),
        "n_samples": len(data), "n_folds": res.get("n_folds", n_folds),
        "n_folds_requested": asked, "n_repeats": n_repeats, "seed": seed, "counts": data.counts, "classes": data.classes,
        "class_counts": _class_counts(data), "embedding_dim": int(emb.shape[1]),
        "stratification": ("iterative multi-label stratification (Sechidis et al. 2011)"
                           if data.multilabel else "stratified k-fold"),
        **res, "paper_reference": PAPER_REFERENCE,
    }
    if data.multilabel:
        rep["macro_map_definition"] = "mean AP over classes with >= 1 positive in the test fold"
    if baseline and not random_init:
        base_model, _ = load_probe_model(None, random_init=True, size=desc["size"], seed=seed)
        base = cv(embed_data(base_model, data, pooling), data.y, n_folds=n_folds,
                  n_repeats=n_repeats, seed=seed)
        rep["baseline_random_init"] = {k: v for k, v in base.items() if not k.startswith("per_")}
        rep["comparison"] = _compare(res, base, data.multilabel)
    if baseline:
        # context: how far do 14 hand-made numbers (per-band mean and std of the z-scored chip) go?
        pix = band_stats_features(data)
        px = cv(pix, data.y, n_folds=n_folds, n_repeats=n_repeats, seed=seed)
        rep["baseline_band_stats"] = {k: v for k, v in px.items() if not k.startswith("per_")}
    rep["summary"] = _summary(rep)
    if report is not None:
        write_report(rep, emb, data, Path(report))
    return rep


def _probe_cube(*, cube: Any, labels: Any, label_column: Any, report: Any,
                model_options: dict[str, Any], block_size: float | None, **kw: Any) -> dict[str, Any]:
    """The cube case of :func:`run_probe`: check the combination, then probe the cube."""
    from geomoe.evaluate.cube_probe import BLOCK_METERS, probe_cube

    missing = [n for n, v in (("--cube", cube), ("--labels", labels),
                              ("--label-column", label_column), ("--report", report)) if v is None]
    if missing:
        raise LabelsMissingError(
            f"a probe on a cube needs --cube, --labels, --label-column and --report; missing: "
            f"{', '.join(missing)}")
    clash = [n for n, v in model_options.items() if v]
    if clash:
        raise GeomoeError(
            f"{', '.join(clash)} do(es) not apply to a probe on a cube: its embeddings are "
            "already computed (the cube records its model); drop them")
    return probe_cube(cube, labels, label_column, report,
                      block_size=BLOCK_METERS if block_size is None else block_size, **kw)


def band_stats_features(data: ProbeData) -> np.ndarray:
    """(N, 14) per-band mean and std of the chips z-scored with the published statistics: a
    no-model reference probe (the probe's scaler makes it independent of which statistics)."""
    from geomoe.chips.bands import PUBLISHED

    z = PUBLISHED(data.chips.pixels)
    return np.concatenate([z.mean(axis=(2, 3)), z.std(axis=(2, 3))], axis=1)


def _class_counts(data: ProbeData) -> dict[str, int]:
    if data.multilabel:
        return {c: int(n) for c, n in zip(data.classes, data.y.sum(0))}
    return {c: int((data.y == k).sum()) for k, c in enumerate(data.classes)}


def _compare(res: dict, base: dict, multilabel: bool) -> dict[str, Any]:
    """Paired comparison on identical folds: difference of means vs the fold spread."""
    keys = ("micro_map", "macro_map") if multilabel else ("accuracy",)
    out: dict[str, Any] = {}
    for k in keys:
        a, b = np.asarray(res[f"{k}_folds"]), np.asarray(base[f"{k}_folds"])
        delta = a - b
        spread = max(float(a.std()), float(b.std()))
        out[k] = {
            "checkpoint_mean": float(a.mean()), "random_mean": float(b.mean()),
            "delta_mean": float(delta.mean()), "delta_std": float(delta.std()),
            "folds_better": int((delta > 0).sum()), "folds": len(delta),
            "fold_spread": spread, "beats_random_by_more_than_spread": bool(delta.mean() > spread),
        }
    return out


def _summary(rep: dict[str, Any]) -> str:
    lines = []
    if rep["task"] == "bigearthnet-multilabel":
        lines.append(
            f"{rep['checkpoint']} ({rep['pooling']} pooling), {rep['n_samples']} patches, "
            f"{rep['n_repeats']}x{rep['n_folds']}-fold: micro mAP {100 * rep['micro_map_mean']:.1f}"
            f" +- {100 * rep['micro_map_std']:.1f}, macro mAP {100 * rep['macro_map_mean']:.1f}"
            f" +- {100 * rep['macro_map_std']:.1f}"
        )
    else:
        lines.append(
            f"{rep['checkpoint']} ({rep['pooling']} pooling), {rep['n_samples']} images, "
            f"{len(rep['classes'])} classes, {rep['n_repeats']}x{rep['n_folds']}-fold: accuracy "
            f"{100 * rep['accuracy_mean']:.1f} +- {100 * rep['accuracy_std']:.1f}"
        )
    asked = rep.get("n_folds_requested", rep["n_folds"])
    if rep["n_folds"] != asked:
        lines.append(f"  folds: {rep['n_folds']} used, {asked} asked (a class has only "
                     f"{rep['n_folds']} samples; see class_counts)")
    for k, c in rep.get("comparison", {}).items():
        verdict = ("beats" if c["beats_random_by_more_than_spread"] else
                   "does NOT beat")
        lines.append(
            f"  vs random init: {k} {100 * c['checkpoint_mean']:.1f} vs {100 * c['random_mean']:.1f}"
            f" (delta {100 * c['delta_mean']:+.1f}, better on {c['folds_better']}/{c['folds']} "
            f"folds; {verdict} random by more than the fold spread {100 * c['fold_spread']:.1f})"
        )
    bs = rep.get("baseline_band_stats")
    if bs:
        k = "micro_map" if "micro_map_mean" in bs else "accuracy"
        lines.append(f"  no-model reference (per-band mean/std, 14 numbers): {k} "
                     f"{100 * bs[k + '_mean']:.1f} +- {100 * bs[k + '_std']:.1f}")
    lines.append(
        "  paper (published S weights, full test sets): BigEarthNet-Landsat micro/macro mAP "
        "73.1/55.7, EuroSAT-Landsat accuracy 74.3 -- this sample is too small to compare directly."
    )
    return "\n".join(lines)


def write_report(rep: dict[str, Any], emb: np.ndarray, data: ProbeData, path: Path) -> None:
    """report.json, report.csv (per-class scores) and report.png (bars + PCA of embeddings)."""
    atomic_write(path, json.dumps(rep, indent=2) + "\n")
    buf = io.StringIO(newline="")
    _write_csv(rep, data, buf)
    atomic_write(path.with_suffix(".csv"), buf.getvalue())
    _plot(rep, emb, data, path.with_suffix(".png"))


def _write_csv(rep: dict[str, Any], data: ProbeData, fh: Any) -> None:
    """The per-class table of the report (`fh` is a text stream)."""
    w = csv.writer(fh)
    if data.multilabel:
        w.writerow(["class", "n_positive", "ap_mean", "ap_std", "folds_defined"])
        for k, c in enumerate(data.classes):
            w.writerow([c, rep["class_counts"][c], rep["per_class_ap_mean"][k],
                        rep["per_class_ap_std"][k], rep["per_class_folds_defined"][k]])
        w.writerow(["ALL (micro mAP)", int(data.y.sum()), rep["micro_map_mean"],
                    rep["micro_map_std"], len(rep["micro_map_folds"])])
        w.writerow(["ALL (macro mAP)", "", rep["macro_map_mean"], rep["macro_map_std"],
                    len(rep["macro_map_folds"])])
    else:
        w.writerow(["class", "n", "accuracy_mean"])
        for k, c in enumerate(data.classes):
            w.writerow([c, rep["class_counts"][c], rep["per_class_accuracy_mean"][k]])
        w.writerow(["ALL", len(data), rep["accuracy_mean"]])


def dominant_class(data: ProbeData) -> np.ndarray:
    """Class index per sample for colouring: multi-class label, or for multi-label the patch's
    label that is most frequent in the sample (BigEarthNet stores no area fractions)."""
    if not data.multilabel:
        return data.y
    freq = data.y.sum(0)
    return np.argmax(np.where(data.y > 0, freq[None, :] + 1, 0), axis=1)


def _plot(rep: dict[str, Any], emb: np.ndarray, data: ProbeData, png: Path) -> None:
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    fig = Figure(figsize=(15, 6.5))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    short = [c if len(c) <= 32 else c[:30] + ".." for c in data.classes]
    if data.multilabel:
        vals = np.asarray([np.nan if v is None else v for v in rep["per_class_ap_mean"]])
        errs = np.asarray([0 if v is None else v for v in rep["per_class_ap_std"]])
        counts = [rep["class_counts"][c] for c in data.classes]
        ax1.barh(range(len(vals)), np.nan_to_num(vals), xerr=errs, color="tab:blue", alpha=0.8)
        ax1.set_yticks(range(len(vals)), [f"{s} (n={n})" for s, n in zip(short, counts)],
                       fontsize=7)
        ax1.set_xlabel("average precision (mean +- std over folds)")
        ax1.set_title(f"per-class AP; micro mAP {100 * rep['micro_map_mean']:.1f} +- "
                      f"{100 * rep['micro_map_std']:.1f}, macro {100 * rep['macro_map_mean']:.1f}"
                      f" +- {100 * rep['macro_map_std']:.1f}", fontsize=9)
    else:
        vals = np.asarray([np.nan if v is None else v for v in rep["per_class_accuracy_mean"]])
        ax1.barh(range(len(vals)), np.nan_to_num(vals), color="tab:blue", alpha=0.8)
        ax1.set_yticks(range(len(vals)), short, fontsize=8)
        ax1.set_xlabel("per-class accuracy (recall), mean over folds")
        ax1.set_title(f"accuracy {100 * rep['accuracy_mean']:.1f} +- "
                      f"{100 * rep['accuracy_std']:.1f}", fontsize=9)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1)
    xy = PCA(n_components=2, random_state=0).fit_transform(StandardScaler().fit_transform(emb))
    dom = dominant_class(data)
    cmap = matplotlib.colormaps["tab20"]
    for k in np.unique(dom):
        sel = dom == k
        ax2.scatter(xy[sel, 0], xy[sel, 1], s=14, color=cmap(int(k) % 20),
                    label=f"{short[int(k)]} ({int(sel.sum())})")
    ax2.legend(fontsize=6, loc="best", markerscale=1.2)
    ax2.set_title("PCA of embeddings, coloured by "
                  + ("most frequent label of each patch" if data.multilabel else "class"),
                  fontsize=9)
    fig.suptitle(f"linear probe: {rep['checkpoint']} - {rep['pooling']} pooling, "
                 f"{rep['n_samples']} samples", fontsize=10)
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))


def write_folder_dataset(
    items_with_class: Sequence[tuple[Any, str]], root: str | Path
) -> Path:
    """Stack each item's 7 band assets into `root/<class>/<id>.tif` (EuroSAT-Landsat layout).

    Used to build probe fixtures and small evaluation sets from a catalog.
    """
    import rasterio

    from geomoe.chips.bands import BANDS, COMMON_NAMES

    root = Path(root)
    for item, cls in items_with_class:
        arrs, profile = [], None
        for band in BANDS:
            asset = item.assets.get(COMMON_NAMES[band]) or item.assets.get(band)
            if asset is None:
                raise LabelsMissingError(f"item {item.id} has no asset for {band}")
            with rasterio.open(asset.get_absolute_href() or asset.href) as src:
                arrs.append(src.read(1))
                profile = profile or src.profile
        assert profile is not None
        profile.update(count=7, driver="GTiff", dtype="uint16", compress="deflate")
        for k in ("blockxsize", "blockysize", "tiled"):
            profile.pop(k, None)
        out = root / cls / f"{item.id}.tif"
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(np.stack(arrs).astype(np.uint16))
    return root
