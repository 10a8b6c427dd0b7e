"""The ``geomoe`` command line: :mod:`.app` the entry point, one module per sub-command
(each exposes ``add_parser(subparsers)``), :mod:`.common` what they share.
"""

from geomoe.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
