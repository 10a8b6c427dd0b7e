"""One definition of each shared name and helper (issue 18, "one of each")."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "geomoe"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_chip_meters_and_pooling_names_are_defined_once():
    defs = {name: [f for f, text in _sources().items()
                   if re.search(rf"^{name}\s*(:[^=\n]*)?=", text, re.M)]
            for name in ("CHIP_METERS", "CHIP_PIXELS", "POOLINGS")}
    assert defs == {"CHIP_METERS": ["geomoe/chips/grid.py"], "CHIP_PIXELS": ["geomoe/chips/grid.py"],
                    "POOLINGS": ["geomoe/model/config.py"]}
    literal = re.compile(r"""["']mean["'],\s*["']cls["'],\s*["']patch_mean["']""")
    assert [f for f, text in _sources().items() if literal.search(text)] == ["geomoe/model/config.py"]


def test_cli_pooling_choices_are_the_models_and_need_no_torch():
    code = ("import sys; from geomoe.cli import build_parser; p = build_parser(); "
            "sub = p._subparsers._group_actions[0].choices; "
            "print([tuple(a.choices) for n in ('embed-region', 'probe') for a in sub[n]._actions "
            "if a.dest == 'pooling'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from geomoe.model import POOLINGS

    assert out.stdout.strip() == f"{[POOLINGS, POOLINGS]} False"


def test_model_compile_does_not_import_mae_at_run_time():
    """mae uses compile; compile names MoEMAE in annotations only (no import cycle)."""
    tree = ast.parse((PACKAGE / "model" / "compile.py").read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and id(node) not in type_only}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 and id(node) not in type_only for a in node.names}
    assert not {m for m in imported if m and m.startswith("geomoe.model.")}, imported
    out = subprocess.run([sys.executable, "-c", "import sys, geomoe.model.compile; "
                          "print('geomoe.model.mae' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_class_name_is_used_once():
    """No two classes share a name across the package (two `Tile`s and two `ChipStream`s were)."""
    seen: dict[str, list[str]] = {}
    for f, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(f)
    assert {n: fs for n, fs in seen.items() if len(fs) > 1} == {}
