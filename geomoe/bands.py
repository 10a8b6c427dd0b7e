"""Landsat Collection 2 Level-2 surface-reflectance bands and the model's normalisation.

The published MoE-MAE was trained on raw C2 L2 digital numbers (DN) z-scored per band with
fixed statistics, so geomoe keeps DN end to end and z-scores only at the model's door.
"""

from __future__ import annotations

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


def zscore(
    pixels: np.ndarray, mean: np.ndarray = DN_MEAN, std: np.ndarray = DN_STD
) -> np.ndarray:
    """Z-score DN chips (..., 7, H, W) per band into float32, the model's input convention."""
    pixels = np.asarray(pixels)
    if pixels.ndim < 3 or pixels.shape[-3] != len(mean):
        raise ValueError(
            f"expected chips shaped (..., {len(mean)}, H, W), got {pixels.shape}: "
            "pass the 7 SR bands SR_B1..SR_B7 in order"
        )
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return (pixels.astype(np.float32) - mean) / std
