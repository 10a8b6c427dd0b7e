"""Landsat Collection 2 QA_PIXEL bits and the per-pixel validity mask.

Bits (USGS C2 L2): 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow,
6 clear, 7 water. A pixel is invalid when any bit in ``mask_bits`` is set, or (with or without
QA) when any SR band holds the fill DN 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

QA_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,
    "cloud": 3,
    "cloud_shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}

#: Default: fill, dilated cloud, cirrus, cloud, cloud shadow.
DEFAULT_MASK_BITS: tuple[int, ...] = (0, 1, 2, 3, 4)


def bitmask(mask_bits: Iterable[int | str]) -> np.uint16:
    """Bit numbers or names -> a uint16 mask to AND with QA_PIXEL."""
    m = 0
    for b in mask_bits:
        bit = QA_BITS[b] if isinstance(b, str) else int(b)
        if not 0 <= bit < 16:
            raise ValueError(f"QA_PIXEL bit {b!r} is outside 0..15")
        m |= 1 << bit
    return np.uint16(m)
