"""`geomoe catalog build|search`: regenerate the bundled catalog; search any catalog from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geomoe.commands import add_search_arguments
from geomoe.resources import catalogs_dir

#: The real data the maintainer builds the catalog from: ../shared/data beside the checkout.
_SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("catalog", help="build the bundled STAC catalog or search a catalog")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION")

    b = sub.add_parser("build", help="rebuild the bundled catalog from the shared real data")
    b.add_argument("--out", default=str(catalogs_dir()),
                   help="output folder (default: the bundled catalog, geomoe/data/catalogs)")
    b.add_argument("--source", default=str(_SHARED_DATA),
                   help="real data folder (default: ../shared/data beside the checkout)")
    b.set_defaults(func=_build)

    s = sub.add_parser("search", help="print the ids of the items matching an AOI and filters")
    s.add_argument("--aoi", required=True,
                   help="GeoJSON file, URL, inline GeoJSON or a bundled AOI name (europe, liverpool)")
    add_search_arguments(s)
    s.add_argument("--collection", default=None, help="API collection id (default landsat-c2-l2)")
    s.add_argument("--json", action="store_true", help="print one JSON line per item")
    s.set_defaults(func=_search)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    from geomoe.catalog_build import build_catalog

    counts = build_catalog(args.source, args.out)
    for name, n in counts.items():
        print(f"{name}: {n} items")
    print(f"wrote {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from geomoe.catalog import search

    kwargs = {}
    if args.collection:
        kwargs["collection"] = args.collection
    items = search(args.catalog, args.aoi, datetime=args.datetime, max_cloud=args.max_cloud,
                   **kwargs)
    for it in items:
        if args.json:
            print(json.dumps({"id": it.id, "datetime": it.properties.get("datetime"),
                              "platform": it.properties.get("platform"),
                              "eo:cloud_cover": it.properties.get("eo:cloud_cover")}))
        else:
            print(it.id)
    print(f"{len(items)} items", file=sys.stderr)
    return 0
