"""What the CLI sub-commands share; each sub-command module exposes ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse

from geomoe.options import SEARCH_HELP, percent


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """--catalog, --datetime and --max-cloud: the STAC search filters every data command shares."""
    p.add_argument("--catalog", default=None, help=SEARCH_HELP["catalog"])
    p.add_argument("--datetime", default=None, help=SEARCH_HELP["datetime"])
    p.add_argument("--max-cloud", type=percent, default=None, help=SEARCH_HELP["max_cloud"])
