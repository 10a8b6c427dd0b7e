"""What both probes share (the bundled-sample probe in :mod:`.probe`, the cube probe in
:mod:`.cube_probe`): the report files and the rule for replacing them, stratified folds for
multi-label data, and single-threaded BLAS for many small fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geomoe.atomic import read_json_object
from geomoe.errors import GeomoeError


class ReportExistsError(GeomoeError):
    """A report file would be replaced silently (or is not geomoe's and is never replaced)."""


#: What a probe report.json says it is: the mark that lets --overwrite replace it.
REPORT_KIND = "geomoe-probe-report"


def iterative_stratified_folds(y: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id (N,) per sample by iterative stratification of a multi-label matrix y (N, C)."""
    y = np.asarray(y, dtype=bool)
    n, c = y.shape
    want_n = np.full(n_folds, n / n_folds)
    want_l = np.tile(y.sum(0) / n_folds, (n_folds, 1)).astype(float)
    fold = np.full(n, -1)
    remaining = np.ones(n, dtype=bool)
    while True:
        counts = (y & remaining[:, None]).sum(0)
        live = np.flatnonzero(counts > 0)
        if not len(live):
            break
        fewest = live[counts[live] == counts[live].min()]
        lab = int(rng.choice(fewest))
        for i in rng.permutation(np.flatnonzero(y[:, lab] & remaining)):
            best = np.flatnonzero(want_l[:, lab] == want_l[:, lab].max())
            if len(best) > 1:
                best = best[want_n[best] == want_n[best].max()]
            f = int(rng.choice(best))
            fold[i] = f
            remaining[i] = False
            want_l[f] -= y[i]
            want_n[f] -= 1
    for i in rng.permutation(np.flatnonzero(remaining)):  # samples without any label
        best = np.flatnonzero(want_n == want_n.max())
        f = int(rng.choice(best))
        fold[i] = f
        want_n[f] -= 1
    return fold


def single_threaded(fn):
    """Run `fn` with BLAS limited to one thread: hundreds of tiny LogisticRegression fits are
    several times faster that way than with threads fighting over the cores."""
    from threadpoolctl import threadpool_limits

    def wrapped(*a, **kw):
        with threadpool_limits(limits=1):
            return fn(*a, **kw)

    return wrapped


def report_paths(path: Path) -> tuple[Path, Path, Path]:
    """The .json report and the .csv and .png written beside it."""
    return path, path.with_suffix(".csv"), path.with_suffix(".png")


def is_geomoe_report(path: Path) -> bool:
    """True if `path` is a probe report.json geomoe wrote (marked, or older reports' layout)."""
    rep = read_json_object(path)
    if rep is None:
        return False
    return rep.get("kind") == REPORT_KIND or {"task", "paper_reference", "summary",
                                              "checkpoint"} <= rep.keys()


def check_report_paths(path: Path, *, overwrite: bool = False) -> None:
    """Refuse, before probing, a report that would replace files silently.

    The .json/.csv/.png set is replaced only with `overwrite` and only when the .json is a
    geomoe probe report (the .csv and .png beside it were written with it). Anything else is
    never replaced: a foreign file, or a .csv/.png without geomoe's report.json.
    """
    if path.suffix.lower() != ".json":
        raise ReportExistsError(
            f"--report {path} must end in .json (the .csv and .png are written beside it)")
    existing = [p for p in report_paths(path) if p.exists() or p.is_symlink()]
    if not existing:
        return
    if any(p.is_dir() for p in existing) or not is_geomoe_report(path):
        names = ", ".join(str(p) for p in existing)
        raise ReportExistsError(
            f"--report {path}: {names} exist(s) and geomoe did not write them as a probe report; "
            "they are never replaced, even with --overwrite: choose another --report path")
    if not overwrite:
        raise ReportExistsError(
            f"--report {path} already holds a geomoe probe report: pass --overwrite to replace "
            "it (.json, .csv, .png), or choose another --report path")
