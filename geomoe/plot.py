"""A quick-look PNG of a cube: first three principal components of the embeddings as RGB.

Why PCA per group (fitted over all its time slices): one colour scale per CRS group, so
the same land cover has the same colour on every date. Chips never computed are white;
chips skipped for cloud/fill are mid grey, so gaps are visibly explained.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geomoe.cube import cube_groups, open_group
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


def plot_cube(path: str | os.PathLike, out: str | os.PathLike | None = None, *, dpi: int = 110) -> Path:
    """Write the PNG (default ``<cube>.png`` beside the store) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if not path.exists():
        raise CubeError(f"no cube at {path}: run `geomoe embed-region` first or check the path")
    out = Path(out) if out else path.with_name(path.name + ".png")
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
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.5 * cols, 8.0), 4.8 * rows + 0.4), squeeze=False)
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
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, out)
    return out
