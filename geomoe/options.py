"""Range-checked option types, shared by the embed request and every CLI command.

Each is an argparse ``type=``: a bad value stops at parsing with one line that names the
option and its range, before anything runs. tests/test_cli_options.py walks the real parser
and fails on a numeric option without one of them.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


class RangeType:
    """An argparse ``type=``: parse an int or float and refuse values outside a range.

    ``bad`` holds out-of-range sample values (as typed on a command line) for the table-driven
    test; ``describe`` is the range in words, as the error message gives it.
    """

    def __init__(self, kind: Callable[[str], float], describe: str,
                 ok: Callable[[float], bool], bad: tuple[str, ...]) -> None:
        self.kind = kind
        self.describe = describe
        self.ok = ok
        self.bad = bad
        self.__name__ = kind.__name__  # argparse names the type in its fallback messages

    def __call__(self, text: str):
        what = "an integer" if self.kind is int else "a number"
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {self.describe}, got {text!r}") from None
        if (self.kind is float and not math.isfinite(value)) or not self.ok(value):
            raise argparse.ArgumentTypeError(f"must be {what} {self.describe}, got {text}")
        return value

    def __repr__(self) -> str:
        return f"RangeType({self.kind.__name__} {self.describe})"


def int_at_least(lo: int) -> RangeType:
    """Integers >= ``lo`` (e.g. 2 for k-fold)."""
    return RangeType(int, f">= {lo}", lambda v: v >= lo, (str(lo - 1), "-5", "1.5"))


#: >= 1: steps, batch sizes, tile size, workers, threads, dpi, ...
positive_int = int_at_least(1)
#: >= 0: seeds, warm-up steps
non_negative_int = int_at_least(0)
#: > 0: learning rate, minutes
positive_float = RangeType(float, "> 0", lambda v: v > 0, ("0", "-1", "nan", "inf"))
#: >= 0: weight decay
non_negative_float = RangeType(float, ">= 0", lambda v: v >= 0, ("-0.1", "nan", "inf"))
#: [0, 1]: valid-pixel fractions
fraction = RangeType(float, "in [0, 1]", lambda v: 0.0 <= v <= 1.0, ("-0.1", "1.5", "nan"))
#: (0, 1): mask ratio (0 masks nothing to learn from, 1 leaves nothing visible)
open_fraction = RangeType(float, "in (0, 1), both ends excluded", lambda v: 0.0 < v < 1.0,
                          ("0", "1", "1.0", "-0.5", "nan"))
#: [0, 100]: eo:cloud_cover percentages
percent = RangeType(float, "in [0, 100] (percent)", lambda v: 0.0 <= v <= 100.0,
                    ("-1", "101", "nan"))


#: Help of the STAC search options every data command shares (``--catalog``, ``--datetime``,
#: ``--max-cloud``); the embed request and the flows take the same texts.
SEARCH_HELP = {
    "catalog": "STAC API URL, catalog.json/collection.json path or URL (default: the bundled catalog)",
    "datetime": 'RFC 3339 instant or interval, e.g. "2020-01-01/.."',
    "max_cloud": "max eo:cloud_cover (percent, 0-100)",
}
