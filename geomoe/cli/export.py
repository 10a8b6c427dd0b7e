"""`geomoe export`: every embedded chip of a cube to GeoParquet (one row per chip and time)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a cube's embedded chips to GeoParquet (polygons in EPSG:4326)",
        description="Stream every embedded chip of a cube (all groups and times) into a "
        "GeoParquet file: chip polygon in EPSG:4326, time, item_id, group, valid_fraction, "
        "epsg, x, y and the embedding as a fixed-size list of float32. Opens with "
        "geopandas.read_parquet, DuckDB and QGIS.")
    p.add_argument("--cube", required=True, help="the Zarr cube written by embed-region")
    p.add_argument("--to", required=True, help="the .parquet file to write")
    p.add_argument("--group", action="append", default=None,
                   help="export only this cube group (repeatable; default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier geomoe export at --to (files geomoe did not write "
                   "are never replaced)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from geomoe.evaluate.export import export

    print(export(args.cube, args.to, overwrite=args.overwrite, groups=args.group))
    return 0
