"""`geomoe change`: per-chip cosine distance between two dates of an embedding cube."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "change", help="change map between two dates of a cube (cosine distance per chip)",
        description="Per-chip cosine distance (1 - cos) between the embeddings of two date "
        "windows, for chips valid at both. A window is a day (YYYY-MM-DD), month (YYYY-MM), year "
        "(YYYY) or START/END; a chip observed several times in a window takes the per-dimension "
        "median of its valid observations. Writes a Zarr group per grid group and a PNG beside it.",
    )
    p.add_argument("--cube", required=True, help="embedding cube (embed-region --out)")
    p.add_argument("--from", dest="date_from", required=True, help="first date window")
    p.add_argument("--to", dest="date_to", required=True, help="second date window")
    p.add_argument("--out", required=True, help="output Zarr store CHANGE.zarr (CHANGE.png beside it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a geomoe change map at --out; anything else there is never replaced")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geomoe.evaluate.change import change

    res = change(args.cube, args.date_from, args.date_to, args.out, overwrite=args.overwrite)
    for g, info in res["groups"].items():
        med = "n/a" if info["median"] is None else f"{info['median']:.4f}"
        p99 = "n/a" if info["p99"] is None else f"{info['p99']:.4f}"
        print(f"{g}: {info['chips_compared']} chips compared ({', '.join(info['from_dates'])} -> "
              f"{', '.join(info['to_dates'])}); cosine distance median {med}, 99th percentile {p99}")
    print(f"change map -> {res['out']} (+ {res['png']})")
    return 0
