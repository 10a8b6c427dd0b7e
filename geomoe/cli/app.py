"""The `geomoe` command line: one sub-command per job, each defined in geomoe/cli/."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings

# sub-command name -> module in geomoe.cli exposing `add_parser(subparsers)`;
# each parser sets `func(args) -> int`. Modules import lazily so `geomoe --help` stays fast.
COMMANDS: dict[str, str] = {
    "catalog": "geomoe.cli.catalog",
    "change": "geomoe.cli.change",
    "embed-region": "geomoe.cli.embed",
    "export": "geomoe.cli.export",
    "plot": "geomoe.cli.plot",
    "pretrain": "geomoe.cli.pretrain",
    "probe": "geomoe.cli.probe",
    "similar": "geomoe.cli.similar",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geomoe", description="Landsat archives to analysis-ready embedding cubes."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(run `geomoe {name} --help`)")
            continue
        importlib.import_module(module_name).add_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the same clean-up runs."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as ``geomoe: warning: <message>``: no source line, no file path."""
    text = " ".join(str(message).split())
    print(f"geomoe: warning: {text}", file=sys.stderr if file is None else file, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the message
        name = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        hint = getattr(args, "on_interrupt", None)
        print(f"geomoe {args.command}: {name}" + (f": {hint(args)}" if hint else ""),
              file=sys.stderr, flush=True)
        return 143 if isinstance(exc, Terminated) else 130
    except GeomoeError as exc:
        print(f"geomoe {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


from geomoe.errors import GeomoeError  # noqa: E402  (kept below main for readability)
