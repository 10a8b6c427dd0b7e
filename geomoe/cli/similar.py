"""`geomoe similar`: the chips of a cube most like a few example points."""

from __future__ import annotations

import argparse
import re

from geomoe.options import positive_int


def lonlat(text: str) -> tuple[float, float]:
    """argparse type of ``LON,LAT``."""
    from geomoe.evaluate.similar import parse_point

    try:
        return parse_point(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "similar", help="similarity search: chips like example points (top-k, map, PNG)",
        description="Query = mean unit embedding of the positive examples (minus that of the "
        "negatives); cosine similarity against every embedded chip of the cube, all groups and "
        "times. Writes the top k as GeoParquet (--out), the similarity of every chip as Zarr "
        "(.zarr beside it) and a PNG map (.png beside it). The first query builds an index "
        "beside the cube (<cube>.simindex); later queries reuse it until the cube changes.")
    p.add_argument("--cube", required=True, help="the Zarr cube written by embed-region")
    p.add_argument("--at", action="append", type=lonlat, default=[], metavar="LON,LAT",
                   help="a positive example point in degrees (repeatable)")
    p.add_argument("--negative", action="append", type=lonlat, default=[], metavar="LON,LAT",
                   help="a negative example point (repeatable)")
    p.add_argument("--examples", default=None,
                   help="vector file of example points (any CRS; a 'negative' column marks negatives)")
    p.add_argument("--k", type=positive_int, default=100, help="rows in the result (default 100)")
    p.add_argument("--out", required=True, help="TOP.parquet (TOP.zarr and TOP.png go beside it)")
    p.add_argument("--index", default=None, help="where to keep the index (default <cube>.simindex)")
    p.add_argument("--rebuild-index", action="store_true", help="build the index again")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier geomoe result at --out (.parquet, .zarr, .png); files "
                   "geomoe did not write are never replaced")
    # "--at -3.07,53.48": let a negative LON,LAT be a value, not an unknown option (argparse
    # only does this by itself for plain negative numbers)
    p._negative_number_matcher = re.compile(r"^-\d*\.?\d+(e-?\d+)?(,-?\d*\.?\d+(e-?\d+)?)?$")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from geomoe.evaluate.similar import similar

    if not args.at and not args.examples:
        raise SystemExit("geomoe similar: error: give --at LON,LAT (repeatable) or --examples FILE")
    res = similar(args.cube, args.at, negative=args.negative, examples=args.examples, k=args.k,
                  out=args.out, index=args.index, rebuild_index=args.rebuild_index,
                  overwrite=args.overwrite)
    print(res)
    return 0
