"""BigEarthNet label nomenclatures: the 43 CORINE classes of the patches and the standard 19-class set.

The 19-class nomenclature (Sumbul et al., BigEarthNet 2020) merges classes that cannot be told apart
from a 30 m pixel and drops the ones defined by use rather than cover (roads, ports, sites, ...).
Probes on BigEarthNet-Landsat report mAP on the 19 classes, so the catalog stores both.
"""

from __future__ import annotations

from collections.abc import Iterable

from geomoe.errors import GeomoeError


class LabelError(GeomoeError, ValueError):
    """A label is not one of the 43 BigEarthNet CORINE class names."""


#: The 19 BigEarthNet classes, in the official order (index = class id used by probes).
BEN19_CLASSES: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

#: 43 CORINE names (as written in BigEarthNet label files) -> 19-class name, or None = dropped.
BEN43_TO_19: dict[str, str | None] = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Road and rail networks and associated land": None,
    "Port areas": None,
    "Airports": None,
    "Mineral extraction sites": None,
    "Dump sites": None,
    "Construction sites": None,
    "Green urban areas": None,
    "Sport and leisure facilities": None,
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Pastures": "Pastures",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation"
    ),
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Bare rock": None,
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Burnt areas": None,
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Intertidal flats": None,
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}

#: The 43 class names, in the BigEarthNet order.
BEN43_CLASSES: tuple[str, ...] = tuple(BEN43_TO_19)


def to_ben19(labels: Iterable[str]) -> list[str]:
    """Map 43-class names to the 19-class names (deduplicated, in BEN19_CLASSES order).

    Dropped classes vanish; a patch may end with no 19-class label at all (an empty list).
    An unknown name raises LabelError rather than being ignored, so typos cannot lose labels.
    """
    out: set[str] = set()
    for name in labels:
        if name not in BEN43_TO_19:
            raise LabelError(
                f"unknown BigEarthNet label {name!r}: expected one of the 43 CORINE class names "
                "in geomoe.evaluate.labels.BEN43_CLASSES (check spelling and capitalisation)"
            )
        mapped = BEN43_TO_19[name]
        if mapped is not None:
            out.add(mapped)
    return [c for c in BEN19_CLASSES if c in out]


def ben19_multihot(labels19: Iterable[str]) -> list[int]:
    """19-class names -> a 0/1 vector in BEN19_CLASSES order (for probes)."""
    names = set(labels19)
    unknown = names.difference(BEN19_CLASSES)
    if unknown:
        raise LabelError(
            f"unknown 19-class label(s) {sorted(unknown)}: use names from geomoe.evaluate.labels.BEN19_CLASSES"
        )
    return [int(c in names) for c in BEN19_CLASSES]


assert len(BEN43_TO_19) == 43 and len(BEN19_CLASSES) == 19
assert set(v for v in BEN43_TO_19.values() if v) == set(BEN19_CLASSES)
