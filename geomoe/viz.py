"""A quick-look PNG of a cube: first three principal components of the embeddings as RGB.

Why PCA per group (fitted over all its time slices): one colour scale per CRS group, so
the same land cover has the same colour on every date. Chips never computed are white;
chips skipped for cloud/fill are mid grey, so gaps are visibly explained.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geomoe.atomic import atomic_write
from geomoe.cube.store import cube_groups, open_group
from geomoe.errors import CubeError

MAX_FIT = 50_000  # chips used to fit the PCA (random subset beyond this)


def pca_rgb(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """emb (N, D) finite -> (N, 3) in [0, 1]: top-3 PCs, each stretched 2-98 %."""
    if len(emb) == 0:
        return np.zeros((0, 3))
    x = emb.astype(np.float64)
    fit = x if len(x) <= MAX_FIT else x[np.random.default_rng(seed).choice(len(x), MAX_FIT, replace=False)]
    mu = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mu, full_matrices=False)
    comps = vt[:3]
    for k in range(len(comps)):  # deterministic sign: largest loading positive
        if comps[k, np.argmax(np.abs(comps[k]))] < 0:
            comps[k] = -comps[k]
    pcs = (x - mu) @ comps.T
    if pcs.shape[1] < 3:
        pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    lo, hi = np.percentile(pcs, 2, axis=0), np.percentile(pcs, 98, axis=0)
    return np.clip((pcs - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)


#: PNG text key that marks a file as a geomoe plot (its value: the cube it shows).
PNG_KEY = "geomoe-plot-of"


class PlotExistsError(CubeError):
    """The plot's PNG path holds a file that would be replaced silently."""


def plotted_cube(png: Path) -> str | None:
    """The cube a geomoe plot PNG shows (from its text chunk), None for any other file."""
    try:
        from PIL import Image

        with Image.open(png) as im:
            im.load()
            return (getattr(im, "text", None) or {}).get(PNG_KEY)
    except Exception:  # noqa: BLE001 - not a readable PNG: not ours
        return None


def check_plot_out(out: Path, cube: Path, *, overwrite: bool = False) -> None:
    """Refuse, before plotting, a PNG path where a file would be replaced silently.

    A geomoe plot of the same cube is redrawn (it is a view of data still on disk, and
    `embed-region --plot` redraws it after each run); a geomoe plot of another cube only with
    `overwrite`; any other file never.
    """
    if not (out.exists() or out.is_symlink()):
        return
    shown = None if out.is_dir() or out.is_symlink() else plotted_cube(out)
    if shown is None:
        raise PlotExistsError(f"{out} exists and is not a geomoe plot: it is never replaced, "
                              "even with --overwrite; choose another --out")
    if shown != str(cube.resolve()) and not overwrite:
        raise PlotExistsError(f"{out} already holds a geomoe plot of another cube ({shown}): "
                              "pass --overwrite to replace it, or choose another --out")


def plot_cube(path: str | os.PathLike, out: str | os.PathLike | None = None, *, dpi: int = 110,
              overwrite: bool = False) -> Path:
    """Write the PNG (default ``<cube>.png`` beside the store) and return its path.

    An existing PNG there is replaced only if it is a geomoe plot, of another cube only with
    `overwrite` (see `check_plot_out`).
    """
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    path = Path(path)
    if not path.exists():
        raise CubeError(f"no cube at {path}: run `geomoe embed-region` first or check the path")
    out = Path(out) if out else path.with_name(path.name + ".png")
    check_plot_out(out, path, overwrite=overwrite)
    panels = []  # (title, kind, data)
    for g in cube_groups(path):
        ds = open_group(path, g)
        emb = ds.embedding.values.astype(np.float32)
        valid = ds.valid_fraction.values
        if ds.attrs.get("layout") == "table":
            ok = np.isfinite(emb).all(-1)
            rgb = pca_rgb(emb[ok])
            panels.append((f"{g}: {int(ok.sum())} chips (item grid)", "table",
                           (ds.lon.values[ok], ds.lat.values[ok], rgb)))
            continue
        ok = np.isfinite(emb).all(-1)  # (T, Y, X)
        rgb_flat = pca_rgb(emb[ok])
        crs = ds.rio.crs
        extent = (float(ds.x.min()) - 600, float(ds.x.max()) + 600,
                  float(ds.y.min()) - 600, float(ds.y.max()) + 600)
        for t in range(emb.shape[0]):
            img = np.ones(ok.shape[1:] + (3,))
            img[np.isfinite(valid[t]) & ~ok[t]] = 0.5  # skipped for cloud / fill
            sel = ok.copy()
            sel[:t] = False
            sel[t + 1:] = False
            start = int(ok[:t].sum())
            img[ok[t]] = rgb_flat[start:start + int(ok[t].sum())]
            day = str(ds.time.values[t])[:16].replace("T", " ")
            panels.append((f"{g} ({crs}) {day} UTC: {int(ok[t].sum())} chips", "grid", (img, extent)))
    if not panels:
        raise CubeError(f"{path} has no groups to plot")
    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(max(5.5 * cols, 8.0), 4.8 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, kind, data) in zip(axes.ravel(), panels):
        if kind == "grid":
            img, extent = data
            ax.imshow(img, extent=extent, origin="upper", interpolation="nearest")
            ax.set_xlabel("x (m)")
            ax.set_ylabel("y (m)")
        else:
            lon, lat, rgb = data
            ax.scatter(lon, lat, c=rgb, s=18, edgecolors="none")
            ax.set_xlabel("lon")
            ax.set_ylabel("lat")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"{path.name}: embedding PCs 1-3 as RGB\n(white = not computed, grey = skipped: cloud/fill)",
                 fontsize=9)
    fig.tight_layout()
    return atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png",
                                                     metadata={PNG_KEY: str(path.resolve())}))
