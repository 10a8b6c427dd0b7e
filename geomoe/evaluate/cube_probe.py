"""Linear probe on an embedding cube with labels from a vector file, and its prediction map.

The probe is the paper's protocol (StandardScaler + LogisticRegression; multinomial for
multi-class, one-vs-rest for multi-label) on the embeddings already in the cube: nothing is
re-embedded. It is cross-validated twice on the same labelled chips:

- **random** folds (stratified; iterative multi-label stratification for multi-label);
- **spatially blocked** folds: chips are grouped into square blocks of ``block_size`` metres
  (in each group's CRS, block = floor(x / size), floor(y / size)) and whole blocks are held
  out together, so a test chip's neighbours are not in the training fold. Random folds leak
  between neighbouring chips and read higher; the gap between the two is the leak.

Then the probe is fitted on every labelled chip and applied to every embedded chip of the
cube (streamed block by block), giving the prediction map ``REPORT.zarr``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from geomoe.atomic import atomic_write
from geomoe.errors import GeomoeError, require_extra
from geomoe.evaluate import cube_access as ca
from geomoe.evaluate.cube_labels import DROP_REASONS, LabelledChips, label_chips

#: Default side of a spatial CV block, metres (5 x 5 chips of 1200 m).
BLOCK_METERS = 6000.0
#: What the prediction map store says it is.
MAP_KIND = "probe-map"
TASKS = {False: "cube-multiclass", True: "cube-multilabel"}


class ProbeInputError(GeomoeError):
    """The labels left too few chips or classes to fit and cross-validate a probe."""


# ------------------------------------------------------------------------------ fitting
class LinearProbe:
    """StandardScaler + LogisticRegression, multinomial or one-vs-rest (multi-label).

    A class without both positives and negatives in the training data (multi-label), or a
    training set of one class (multi-class), gets its constant training prior as probability.
    """

    def __init__(self, n_classes: int, multilabel: bool, c_reg: float = 1.0) -> None:
        self.n_classes, self.multilabel, self.c_reg = n_classes, multilabel, c_reg

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LinearProbe":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler().fit(x)
        z = self.scaler.transform(x)
        self.models: list[Any] = []
        self.prior = np.zeros(self.n_classes)
        if self.multilabel:
            for k in range(self.n_classes):
                pos = int(y[:, k].sum())
                self.prior[k] = pos / max(len(y), 1)
                if 0 < pos < len(y):
                    self.models.append(LogisticRegression(C=self.c_reg, max_iter=2000).fit(z, y[:, k]))
                else:
                    self.models.append(None)
        else:
            present = np.unique(y)
            self.prior[present] = np.bincount(y, minlength=self.n_classes)[present] / len(y)
            self.models = [LogisticRegression(C=self.c_reg, max_iter=2000).fit(z, y)
                           if len(present) > 1 else None]
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, C) probabilities (multi-class rows sum to 1; multi-label per class)."""
        z = self.scaler.transform(x)
        out = np.tile(self.prior, (len(x), 1))
        if self.multilabel:
            for k, m in enumerate(self.models):
                if m is not None:
                    out[:, k] = m.predict_proba(z)[:, 1]
        elif self.models[0] is not None:
            m = self.models[0]
            out[:] = 0
            out[:, m.classes_] = m.predict_proba(z)
        return out


def random_folds(y: np.ndarray, multilabel: bool, n_folds: int, seed: int) -> tuple[np.ndarray, int]:
    """Fold id per chip: stratified (iteratively for multi-label); k capped by the rarest class."""
    from sklearn.model_selection import StratifiedKFold

    from geomoe.evaluate.probe_common import iterative_stratified_folds

    if multilabel:
        k = max(2, min(n_folds, len(y) // 2))
        return iterative_stratified_folds(y, k, np.random.default_rng(seed)), k
    k = max(2, min(n_folds, int(np.bincount(y)[np.unique(y)].min())))
    folds = np.zeros(len(y), np.int64)
    for f, (_, te) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)):
        folds[te] = f
    return folds, k


def spatial_blocks(chips: LabelledChips, block_size: float) -> np.ndarray:
    """Block id per chip: (CRS, floor(x / size), floor(y / size)) numbered 0..B-1."""
    keys = list(zip(chips.epsg.tolist(), np.floor(chips.cx / block_size).astype(np.int64).tolist(),
                    np.floor(chips.cy / block_size).astype(np.int64).tolist()))
    index = {k: i for i, k in enumerate(sorted(set(keys)))}
    return np.asarray([index[k] for k in keys], dtype=np.int64)


def spatial_folds(blocks: np.ndarray, n_folds: int, seed: int) -> tuple[np.ndarray, int]:
    """Fold id per chip, whole blocks per fold: blocks shuffled (seeded), then each dealt to
    the fold with the fewest chips so far (folds of similar size)."""
    ids, sizes = np.unique(blocks, return_counts=True)
    k = min(n_folds, len(ids))
    if k < 2:
        return np.zeros(len(blocks), np.int64), k
    order = np.random.default_rng(seed).permutation(len(ids))
    order = order[np.argsort(-sizes[order], kind="stable")]  # big blocks first, ties shuffled
    load = np.zeros(k)
    fold_of = {}
    for i in order:
        f = int(np.argmin(load))
        fold_of[ids[i]] = f
        load[f] += sizes[i]
    return np.asarray([fold_of[b] for b in blocks], dtype=np.int64), k


def cross_validate(chips: LabelledChips, folds: np.ndarray, k: int,
                   c_reg: float = 1.0) -> tuple[dict[str, Any], np.ndarray]:
    """Scores per fold (accuracy, or micro/macro mAP in [0, 1]) and the out-of-fold
    probabilities (N, C) (NaN for chips of a fold that could not be scored)."""
    from sklearn.metrics import average_precision_score

    x, y, C = chips.x, chips.y, len(chips.classes)
    oof = np.full((len(x), C), np.nan)
    main, macro = [], []
    for f in range(k):
        te, tr = folds == f, folds != f
        if not te.any() or not tr.any():
            continue
        p = LinearProbe(C, chips.multilabel, c_reg).fit(x[tr], y[tr]).predict_proba(x[te])
        oof[te] = p
        if chips.multilabel:
            yt = y[te]
            main.append(float(average_precision_score(yt.ravel(), p.ravel())))
            aps = [average_precision_score(yt[:, c], p[:, c]) for c in range(C) if yt[:, c].any()]
            macro.append(float(np.mean(aps)) if aps else float("nan"))
        else:
            main.append(float((p.argmax(1) == y[te]).mean()))
    out: dict[str, Any] = {
        "metric": "micro_map" if chips.multilabel else "accuracy",
        "mean": float(np.mean(main)) if main else None,
        "std": float(np.std(main)) if main else None,
        "folds": main, "n_folds": len(main),
    }
    if chips.multilabel:
        m = np.asarray(macro)
        out["macro_map"] = {"mean": float(np.nanmean(m)) if np.isfinite(m).any() else None,
                            "std": float(np.nanstd(m)) if np.isfinite(m).any() else None,
                            "folds": [None if np.isnan(v) else v for v in macro]}
    return out, oof


# ------------------------------------------------------------------------------ prediction map
def predict_cube(cube: Any, probe: LinearProbe, classes: list[str], time: str | None,
                 attrs: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The probe applied to every embedded chip: one dataset per cube group.

    Grid groups: ``class`` (y, x) int16 index into ``classes`` (-1: no embedding),
    ``probability`` (y, x) of that class, ``class_probability`` (class_index, y, x) of
    every class (names in ``class_name``); table group:
    the same over ``chip`` with the chips' coordinates.
    """
    import xarray as xr

    window = ca.parse_window(time) if time else None
    out: dict[str, Any] = {}
    total = 0
    C = len(classes)
    for g in cube.groups:
        ds = cube[g]
        if ds.embedding.dims[0] == "time":
            tidx = ca.time_index(ds, window)
            ny, nx = ds.sizes["y"], ds.sizes["x"]
            probs = np.full((C, ny, nx), np.nan, np.float32)
            if len(tidx):
                for rows in ca.grid_row_blocks(ds):
                    emb, _ = ca.read_grid_rows(ds, tidx, rows)
                    ok = np.isfinite(emb).all(-1)
                    if ok.any():
                        p = probe.predict_proba(emb[ok]).astype(np.float32)
                        blk = np.full((C,) + ok.shape, np.nan, np.float32)
                        blk[:, ok] = p.T
                        probs[:, rows] = blk
            cls, pmax = _argmax(probs)
            total += int((cls >= 0).sum())
            m = ca.grid_map_dataset(ds, {"class": (("y", "x"), cls), "probability": (("y", "x"), pmax),
                                         "class_probability": (("class_index", "y", "x"), probs)}, attrs)
            m = m.assign_coords({"class_index": np.arange(C),
                                 "class_name": ("class_index", np.asarray(classes, dtype=object))})
        else:
            sel = ca.table_selection(ds, window)
            n = ds.sizes["chip"]
            probs = np.full((C, n), np.nan, np.float32)
            for s in range(0, n, ca.BLOCK_CHIPS):
                emb = ds.embedding.isel(chip=slice(s, min(n, s + ca.BLOCK_CHIPS))).values
                ok = np.isfinite(emb).all(-1) & sel[s:s + len(emb)]
                if ok.any():
                    idx = s + np.flatnonzero(ok)
                    probs[:, idx] = probe.predict_proba(emb[ok]).astype(np.float32).T
            cls, pmax = _argmax(probs)
            total += int((cls >= 0).sum())
            coords = {c: ("chip", ds[c].values) for c in ("x", "y", "lat", "lon", "epsg", "time", "item_id")
                      if c in ds.coords}
            m = xr.Dataset({"class": ("chip", cls), "probability": ("chip", pmax),
                            "class_probability": (("class_index", "chip"), probs)},
                           coords={**coords, "class_index": np.arange(C),
                                   "class_name": ("class_index", np.asarray(classes, dtype=object))})
            m.attrs.update({k: v if isinstance(v, (str, int, float)) else json.dumps(v)
                            for k, v in attrs.items()})
            m.attrs["description"] = "table chips; x/y in each chip's own EPSG (epsg)"
        m["class"].attrs.update(description="index into class_name (-1: no embedding here)",
                                flag_values=list(range(C)), flag_meanings=" ".join(
                                    c.replace(" ", "_") for c in classes))
        m["probability"].attrs["description"] = "probe probability of the predicted class"
        out[g] = m
    return out, total


def _argmax(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(probs).all(0)
    cls = np.full(probs.shape[1:], -1, np.int16)
    pmax = np.full(probs.shape[1:], np.nan, np.float32)
    if ok.any():
        cls[ok] = probs[:, ok].argmax(0)
        pmax[ok] = probs[:, ok].max(0)
    return cls, pmax


# ------------------------------------------------------------------------------ entry point
def probe_cube(cube: str | Path, labels: str | Path, label_column: str, report: str | Path, *,
               time: str | None = None, polygon_rule: str = "covers",
               label_separator: str | None = None, block_size: float = BLOCK_METERS,
               n_folds: int = 5, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Probe a cube's embeddings with labels from a vector file; map the probe over the cube.

    Parameters
    ----------
    cube : str or Path
        An embedding cube (``geomoe embed-region --out``).
    labels : str or Path
        Vector file geopandas reads, any CRS, points or polygons (see
        :mod:`geomoe.evaluate.cube_labels` for how they take chips).
    label_column : str
        The class column (a list of classes per feature: multi-label).
    report : str or Path
        ``REPORT.json``; beside it ``REPORT.csv`` (one row per labelled chip, with out-of-fold
        predictions), ``REPORT.zarr`` (the prediction map) and ``REPORT.png``.
    time : str, optional
        Date window (``2020-09-27``, ``2020-09``, ``2020``, ``START/END``); None: every date,
        per-chip median composite where a chip has several.
    polygon_rule : {"covers", "centre"}
        Chips a polygon labels: those it covers entirely, or those whose centre it holds.
    label_separator : str, optional
        Split text labels on it into several classes (multi-label).
    block_size : float
        Side of the spatial CV blocks, metres (> 0).
    n_folds : int
        k of both cross-validations (at most the rarest class's chips / the blocks).
    seed : int
        Seed of the random folds and the block shuffle.
    overwrite : bool
        Replace an earlier report set of geomoe's; anything else there is refused.

    Returns
    -------
    dict
        The report: ``n_labels_used``, ``n_labels_dropped`` (how many) and
        ``labels_dropped_by_reason`` (reason -> features),
        ``classes``, ``cv_random`` and ``cv_spatial`` (``metric``, ``mean``, ``std`` in [0, 1],
        ``folds``), ``prediction_map`` and ``summary``.
    """
    from geomoe.cube.reader import open_cube
    from geomoe.evaluate.probe_common import REPORT_KIND, check_report_paths, single_threaded

    require_extra("sklearn", "probe", "the linear probe (geomoe probe)")
    report = Path(report)
    if not block_size > 0:
        raise ProbeInputError(f"--block-size {block_size}: the spatial block side must be > 0 metres")
    check_report_paths(report, overwrite=overwrite)
    zpath = report.with_suffix(".zarr")
    ca.check_output(zpath, MAP_KIND, overwrite=overwrite, option="--report")
    view = open_cube(cube)
    chips = label_chips(view, labels, label_column, time=time, polygon_rule=polygon_rule,
                        separator=label_separator)
    n_classes = len(chips.classes)
    if len(chips) < 4 or n_classes < 2:
        raise ProbeInputError(
            f"{labels}: {len(chips)} labelled chip(s) of {n_classes} class(es) are usable "
            f"(dropped features by reason: {_nonzero(chips.dropped)}); a probe needs at least 2 "
            "classes and 4 chips: check the label column, the CRS and that the labels lie on "
            "embedded chips of the cube")
    folds_r, k_r = random_folds(chips.y, chips.multilabel, n_folds, seed)
    blocks = spatial_blocks(chips, block_size)
    folds_s, k_s = spatial_folds(blocks, n_folds, seed)
    cv = single_threaded(cross_validate)
    cv_random, oof_r = cv(chips, folds_r, k_r)
    if k_s >= 2:
        cv_spatial, oof_s = cv(chips, folds_s, k_s)
    else:
        oof_s = np.full_like(oof_r, np.nan)
        cv_spatial = {"metric": cv_random["metric"], "mean": None, "std": None, "folds": [],
                      "n_folds": 0}
        cv_spatial["note"] = (f"all labelled chips lie in one {block_size:g} m block: no spatial "
                              "CV possible; lower --block-size")
    cv_spatial.update(n_blocks=int(len(np.unique(blocks))), block_size_m=float(block_size))
    cv_random["stratification"] = ("iterative multi-label stratification" if chips.multilabel
                                   else "stratified k-fold")

    probe = single_threaded(lambda: LinearProbe(n_classes, chips.multilabel).fit(chips.x, chips.y))()
    model = view.attrs.get("geomoe:model", {})
    attrs = {"classes": chips.classes, "task": TASKS[chips.multilabel], "time": time or "all dates",
             "source_cube": str(Path(cube).resolve()),
             "model_checkpoint_sha256": model.get("checkpoint_sha256")}
    maps, n_pred = predict_cube(view, probe, chips.classes, time, attrs)

    rep: dict[str, Any] = {
        "kind": REPORT_KIND, "task": TASKS[chips.multilabel],
        "cube": str(cube), "labels": str(labels), "label_column": label_column,
        "time": time, "polygon_rule": polygon_rule, "label_separator": label_separator,
        "model": model,
        "n_labels_total": chips.n_features, "n_labels_used": chips.used,
        "n_labels_dropped": int(sum(chips.dropped.values())),
        "labels_dropped_by_reason": chips.dropped,
        "drop_reasons": DROP_REASONS,
        "n_chips": len(chips), "classes": chips.classes,
        "class_counts": _class_counts(chips), "embedding_dim": int(chips.x.shape[1]),
        "probe": "StandardScaler + LogisticRegression (C=1, "
                 + ("one-vs-rest)" if chips.multilabel else "multinomial)"),
        "seed": seed, "n_folds_requested": n_folds,
        "cv_random": cv_random, "cv_spatial": cv_spatial,
        "spatial_blocks": f"square blocks of {block_size:g} m in each group's CRS; whole blocks "
                          "per fold (blocks dealt to the smallest fold, biggest first)",
        "prediction_map": str(zpath), "n_chips_predicted": n_pred,
    }
    rep["summary"] = _summary(rep)
    ca.write_output(zpath, maps, MAP_KIND, {"report": report.name})
    atomic_write(report, json.dumps(rep, indent=2) + "\n")
    buf = io.StringIO(newline="")
    _write_csv(chips, oof_r, oof_s, folds_r, folds_s, blocks, buf)
    atomic_write(report.with_suffix(".csv"), buf.getvalue())
    from geomoe.evaluate.probe_map_plot import plot_probe_map

    plot_probe_map(view, maps, chips.classes, labels, label_column, rep,
                   report.with_suffix(".png"))
    return rep


def _nonzero(d: dict[str, int]) -> str:
    got = {k: v for k, v in d.items() if v}
    return ", ".join(f"{k} {v}" for k, v in got.items()) or "none"


def _class_counts(chips: LabelledChips) -> dict[str, int]:
    if chips.multilabel:
        return {c: int(n) for c, n in zip(chips.classes, chips.y.sum(0))}
    return {c: int((chips.y == k).sum()) for k, c in enumerate(chips.classes)}


def _fmt(cv: dict[str, Any]) -> str:
    if cv["mean"] is None:
        return "n/a"
    return f"{100 * cv['mean']:.1f} +- {100 * cv['std']:.1f} ({cv['n_folds']} folds)"


def _summary(rep: dict[str, Any]) -> str:
    from geomoe.evaluate.probe_map_plot import METRIC_NAMES

    metric = METRIC_NAMES.get(rep["cv_random"]["metric"], rep["cv_random"]["metric"])
    lines = [
        f"{rep['n_labels_used']} of {rep['n_labels_total']} labels used on {rep['n_chips']} chips, "
        f"{len(rep['classes'])} classes ({rep['task']})",
        f"  dropped: {_nonzero(rep['labels_dropped_by_reason'])}",
        f"  {metric} random CV {_fmt(rep['cv_random'])}; spatial CV "
        f"({rep['cv_spatial']['block_size_m']:g} m blocks, {rep['cv_spatial']['n_blocks']} blocks) "
        f"{_fmt(rep['cv_spatial'])}",
        f"  prediction map: {rep['n_chips_predicted']} chips -> {rep['prediction_map']}",
    ]
    return "\n".join(lines)


def _write_csv(chips: LabelledChips, oof_r: np.ndarray, oof_s: np.ndarray, folds_r: np.ndarray,
               folds_s: np.ndarray, blocks: np.ndarray, fh: Any) -> None:
    """One row per labelled chip: where it is, its label, its folds and out-of-fold predictions."""
    w = csv.writer(fh)
    w.writerow(["group", "row_or_chip", "col", "epsg", "x", "y", "lon", "lat", "label", "block",
                "fold_random", "fold_spatial", "predicted_random", "probability_random",
                "predicted_spatial", "probability_spatial"])

    def label(i: int) -> str:
        if chips.multilabel:
            return ";".join(c for c, v in zip(chips.classes, chips.y[i]) if v)
        return chips.classes[int(chips.y[i])]

    def pred(p: np.ndarray) -> tuple[str, str]:
        if not np.isfinite(p).all():
            return "", ""
        if chips.multilabel:
            return ";".join(c for c, v in zip(chips.classes, p) if v >= 0.5), f"{p.max():.4f}"
        return chips.classes[int(p.argmax())], f"{p.max():.4f}"

    for i in range(len(chips)):
        w.writerow([chips.group[i], int(chips.row[i]), int(chips.col[i]), int(chips.epsg[i]),
                    f"{chips.cx[i]:.1f}", f"{chips.cy[i]:.1f}", f"{chips.lon[i]:.6f}",
                    f"{chips.lat[i]:.6f}", label(i), int(blocks[i]), int(folds_r[i]),
                    int(folds_s[i]), *pred(oof_r[i]), *pred(oof_s[i])])
