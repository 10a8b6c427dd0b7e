"""CLI sub-commands; each module exposes add_parser(subparsers)."""

from __future__ import annotations

import argparse


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """--catalog, --datetime and --max-cloud: the STAC search filters every data command shares."""
    p.add_argument("--catalog", default=None,
                   help="STAC API URL, catalog.json/collection.json path or URL (default: the bundled catalog)")
    p.add_argument("--datetime", default=None, help='RFC 3339 instant or interval, e.g. "2020-01-01/.."')
    p.add_argument("--max-cloud", type=float, default=None, help="max eo:cloud_cover (percent)")
