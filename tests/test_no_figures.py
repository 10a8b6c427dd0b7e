"""Docstrings and --help text quote no benchmark figures: they go stale. Figures belong in
benchmarks/README.md and benchmarks/results/.

Only what a user or reader sees as documentation is checked: docstrings (and other bare string
statements), ``help=``/``description=``/``epilog=`` arguments and ``"help"``/``"description"``
entries of dicts (option metadata). Comments and f-strings that print measured values at run
time are not documentation and are not flagged.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: where user-facing documentation strings live (the flows are in geomoe/flows)
ROOTS = [REPO / "geomoe"]

_NUM = r"\d+(?:[.,]\d+)*"
_RANGE = rf"~?{_NUM}(?:\s*-\s*{_NUM})?"
FIGURE = re.compile("|".join([
    rf"{_NUM}\s*k?\s*chips\s*(?:/\s*s\b|per\s+(?:second|CPU))",  # throughput: 362 chips/s, 40.6k chips/s
    r"\b(?:[AH]100|H200|A10G?|V100)\b",  # GPU models: the machine of a measurement
    r"\bZen\s?\d",  # CPU generations
    rf"(?<![\w.]){_RANGE}x(?![\w])",  # speed-ups: 1.25x, ~2x, 1.7-2x (not 40x40 or 0x1F)
    rf"\b{_NUM}\s*ms\b",  # milliseconds
    rf"\b{_RANGE}\s*(?:s|sec|seconds?|min|minutes?)\b[^.;]{{0,25}}\bcompil",  # 45-60 s to compile
    rf"\bcompil\w*[^.;]{{0,30}}?\b{_RANGE}\s*(?:s|sec|seconds?|min|minutes?)\b",  # compiling takes 40 s
]))

FIELDS = ("help", "description", "epilog", "usage")


def _text(node: ast.AST) -> str:
    """The literal text of a string expression (implicit concatenation, ``+``, f-strings)."""
    return " ".join(c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str))


def doc_strings(source: str) -> list[tuple[int, str]]:
    """(line, text) of every docstring, bare string statement, help/description argument and
    help/description dict entry in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found.append((node.lineno, node.value.value))
        elif isinstance(node, ast.keyword) and node.arg in FIELDS:
            found.append((node.value.lineno, _text(node.value)))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value in FIELDS:
                    found.append((value.lineno, _text(value)))
    return found


def figures(source: str) -> list[tuple[int, str]]:
    return [(line, m.group(0)) for line, text in doc_strings(source) for m in FIGURE.finditer(text)]


def _files() -> list[Path]:
    return sorted(p for root in ROOTS if root.is_dir() for p in root.rglob("*.py"))


def test_no_benchmark_figures_in_docstrings_or_help():
    files = _files()
    assert len(files) > 20  # the scan really reads the package
    hits = [f"{p.relative_to(REPO)}:{line}: {fig!r}" for p in files for line, fig in figures(p.read_text())]
    assert not hits, ("benchmark figures in docstrings or --help text; move them to "
                      "benchmarks/README.md and keep the qualitative why:\n" + "\n".join(hits))


@pytest.mark.parametrize("text", [
    "compiled 81.2k chips/s", "eager 242 vs compiled 362 chips/s", "about 8,000 chips per CPU-second",
    "on an H100", "2-core Zen 4", "1.25x eager", "~2x faster", "1.7-2x fp32", "3.4 vs 3.8 ms",
    "after 45-60 s of compiling", "compiling takes 1.5-3 minutes", "40-50 s to compile",
])
def test_figures_are_caught(text):
    """The patterns catch each kind of figure the docstrings used to quote, in a docstring, in
    help=, in a description= and in an option's metadata dict."""
    for source in (f'"""{text}"""', f'p.add_argument("--x", help="a " "{text}")',
                   f'p.add_parser("x", description=("{text}"))', f'field(metadata={{"help": "{text}"}})'):
        assert figures(source), source


@pytest.mark.parametrize("source", [
    '"""images (B, 7, 40, 40) float32; 40x40 chips of 1200 m; QA bit 0x1F."""',
    '"""Tokens within ~1e-2 relative L2 of fp32; 5 % of steps; expire in about 45 min."""',
    '"""Cut 40 x 40 pixel chips; batch 256; see benchmarks/README.md."""',
    'x = 1  # measured 362 chips/s on an H100 (a comment, not documentation)',
    'print(f"{rate:.0f} chips/s")',  # a run-time message with a measured value
    'p.add_argument("--threads", help="torch threads (default: the cores this process may use)")',
])
def test_plain_text_is_not_flagged(source):
    assert figures(source) == []
