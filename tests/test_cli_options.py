"""Every numeric CLI option is range-checked at argparse level (exit 2, one line naming the
option and the range, no traceback), enumerated from the real parser so that a new numeric
option without a check fails here."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from geomoe.cli import build_parser, main
from geomoe.options import RangeType


def _walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(argv prefix, action) for every option of every (nested) sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, prefix + (name,))
        elif action.option_strings:
            yield prefix, action


def _numeric(action: argparse.Action) -> bool:
    if isinstance(action.type, RangeType) or action.type in (int, float):
        return True
    d = action.default
    return action.type is None and isinstance(d, (int, float)) and not isinstance(d, bool)


NUMERIC = [(p, a) for p, a in _walk(build_parser()) if _numeric(a)]
CASES = [pytest.param(p, a.option_strings[-1], bad, a.type, id=f"{' '.join(p)} {a.option_strings[-1]}={bad}")
         for p, a in NUMERIC if isinstance(a.type, RangeType) for bad in a.type.bad]

#: Options the issue names; the walk must find each one, range-checked.
REQUIRED = {
    ("pretrain", o) for o in ("--steps", "--batch-size", "--min-valid", "--mask-ratio", "--lr",
                              "--weight-decay", "--warmup-steps", "--checkpoint-every",
                              "--max-minutes", "--stop-at-step", "--threads", "--seed", "--max-cloud")
} | {
    ("embed-region", o) for o in ("--batch-size", "--min-valid", "--max-cloud", "--tile-size",
                                  "--read-workers", "--threads", "--dask-workers")
} | {("probe", o) for o in ("--folds", "--repeats", "--min-valid", "--seed", "--block-size")} | {
    ("plot", "--dpi"), ("catalog search", "--max-cloud"),
}


def test_every_numeric_option_is_range_checked():
    unchecked = [f"{' '.join(p)} {a.option_strings[-1]}" for p, a in NUMERIC
                 if not isinstance(a.type, RangeType)]
    assert not unchecked, f"numeric options without a range check: {unchecked}"
    found = {(" ".join(p), a.option_strings[-1]) for p, a in NUMERIC}
    assert REQUIRED <= found, REQUIRED - found
    assert len(CASES) >= 2 * len(REQUIRED)


@pytest.mark.parametrize("prefix,option,bad,rtype", CASES)
def test_out_of_range_value_is_refused_by_name(prefix, option, bad, rtype, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*prefix, f"{option}={bad}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"geomoe {' '.join(prefix)}: error: argument {option}: ")
    assert rtype.describe in err[-1] and bad in err[-1]


@pytest.mark.parametrize("option,good", [("--min-valid", "0"), ("--min-valid", "1"),
                                         ("--max-cloud", "100"), ("--batch-size", "1")])
def test_range_ends_are_accepted(option, good):
    args = build_parser().parse_args(["embed-region", "--aoi", "x", option, good])
    assert getattr(args, option[2:].replace("-", "_")) == float(good)


def test_real_process_exits_2_with_one_line(tmp_path):
    """End to end, in a real process: no traceback, nothing written."""
    proc = subprocess.run([sys.executable, "-m", "geomoe.cli", "pretrain", "--out", str(tmp_path / "run"),
                           "--batch-size", "0"], capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "geomoe pretrain: error: argument --batch-size: must be an integer >= 1, got 0")
    assert not (tmp_path / "run").exists()
