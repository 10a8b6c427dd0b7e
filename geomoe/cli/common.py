"""What the CLI sub-commands share; each sub-command module exposes ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse

from geomoe.options import percent


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """--catalog, --datetime and --max-cloud: the STAC search filters every data command shares."""
    p.add_argument("--catalog", default=None,
                   help="STAC API URL, catalog.json/collection.json path or URL (default: the bundled catalog)")
    p.add_argument("--datetime", default=None, help='RFC 3339 instant or interval, e.g. "2020-01-01/.."')
    p.add_argument("--max-cloud", type=percent, default=None, help="max eo:cloud_cover (percent, 0-100)")
