"""`geomoe plot cube.zarr`: PNG of the first three embedding principal components as RGB."""

from __future__ import annotations

import argparse

from geomoe.options import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="PNG map of a cube (PCs 1-3 as RGB, per group and time)")
    p.add_argument("cube", help="path of the Zarr cube written by embed-region")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a geomoe plot of another cube at the output path (a plot of the "
                   "same cube is always redrawn; files geomoe did not write are never replaced)")
    p.add_argument("--out", default=None, help="PNG path (default: <cube>.png beside the store)")
    p.add_argument("--dpi", type=positive_int, default=110, help="PNG resolution (default 110)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from geomoe.viz import plot_cube

    print(plot_cube(args.cube, args.out, dpi=args.dpi, overwrite=args.overwrite))
    return 0
