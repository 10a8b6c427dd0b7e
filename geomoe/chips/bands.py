"""Landsat Collection 2 Level-2 surface-reflectance bands and the model's normalisation.

The published MoE-MAE was trained on raw C2 L2 digital numbers (DN) z-scored per band with
fixed statistics, so geomoe keeps DN end to end and z-scores only at the model's door.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The 7 surface-reflectance bands the model takes, in channel order.
BANDS: tuple[str, ...] = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")

#: STAC asset keys used by Planetary Computer / Earth Search (and the bundled catalog) per band.
COMMON_NAMES: dict[str, str] = {
    "SR_B1": "coastal",
    "SR_B2": "blue",
    "SR_B3": "green",
    "SR_B4": "red",
    "SR_B5": "nir08",
    "SR_B6": "swir16",
    "SR_B7": "swir22",
}

#: C2 L2 scale/offset: reflectance = DN * SCALE + OFFSET; DN 0 is fill.
SR_SCALE = 2.75e-05
SR_OFFSET = -0.2
NODATA = 0

#: Per-band DN statistics of BigEarthNet-Landsat, the published model's training normalisation.
DN_MEAN = np.array(
    [9405.194, 9649.677, 10425.686, 10444.589, 16067.627, 12699.184, 10596.475], dtype=np.float32
)
DN_STD = np.array(
    [6016.344, 6095.472, 5839.462, 6068.493, 6271.440, 4256.046, 3130.776], dtype=np.float32
)


def zscore(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Z-score DN chips (..., 7, H, W) per band into float32.

    The statistics are the model's (``model.normalisation``): call that, or
    ``model.preprocess``, rather than this with statistics of your own.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim < 3 or pixels.shape[-3] != len(mean):
        raise ValueError(
            f"expected chips shaped (..., {len(mean)}, H, W), got {pixels.shape}: "
            "pass the 7 SR bands SR_B1..SR_B7 in order"
        )
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return (pixels.astype(np.float32) - mean) / std


@dataclass(frozen=True)
class Normalisation:
    """The per-band DN statistics a model was trained with: its input preprocessing.

    Calling it z-scores DN chips the way the model expects. The values are kept at float32,
    the precision they are applied in, so :meth:`to_dict` records exactly what was applied.

    Parameters
    ----------
    mean, std : sequence of float, length 7 (SR_B1..SR_B7)
        Per-band DN mean and standard deviation (std > 0).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in np.asarray(self.mean, dtype=np.float32).reshape(-1))
        std = tuple(float(v) for v in np.asarray(self.std, dtype=np.float32).reshape(-1))
        if len(mean) != len(std) or not mean:
            raise ValueError(f"normalisation has {len(mean)} means but {len(std)} stds: give one of each per band")
        if not all(np.isfinite(mean)) or not all(np.isfinite(std)) or min(std) <= 0:
            raise ValueError(f"normalisation std must be finite and > 0 and mean finite, got mean {mean}, std {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """DN chips (N, 7, 40, 40) (any integer or float dtype) -> (N, 7, 40, 40) float32 z-scores."""
        return zscore(pixels, self.mean, self.std)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``: what a cube records as its normalisation."""
        return {"mean": list(self.mean), "std": list(self.std)}


#: The published model's normalisation (BigEarthNet-Landsat DN statistics); a checkpoint whose
#: config carries no statistics gets these.
PUBLISHED = Normalisation(tuple(DN_MEAN), tuple(DN_STD))

