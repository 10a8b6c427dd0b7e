"""`geomoe catalog search`: search any catalog from the shell.

(The bundled catalog is rebuilt by the maintainer script scripts/build_catalog.py.)
"""

from __future__ import annotations

import argparse
import json
import sys

from geomoe.cli.common import add_search_arguments

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("catalog", help="search a STAC catalog")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION")

    s = sub.add_parser("search", help="print the ids of the items matching an AOI and filters")
    s.add_argument("--aoi", required=True,
                   help="GeoJSON file, URL, inline GeoJSON or a bundled AOI name (europe, liverpool)")
    add_search_arguments(s)
    s.add_argument("--collection", default=None, help="API collection id (default landsat-c2-l2)")
    s.add_argument("--json", action="store_true", help="print one JSON line per item")
    s.set_defaults(func=_search)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _search(args: argparse.Namespace) -> int:
    from geomoe.stac.search import search

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
