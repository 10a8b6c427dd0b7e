"""The package's layers: data flows one way, stac -> chips -> model -> cube -> embed/train/evaluate.

Every ``geomoe`` import (module level or inside a function) is read from the source, and a
module may import only from its own subpackage or from a lower layer. So the library never
reaches up into the CLI or the Prefect flows, and a stage never depends on a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "geomoe"

#: top-level module or subpackage -> layer; a module imports only from lower layers
LAYERS = {
    "errors": -1,
    "atomic": 0, "options": 0, "version": 0, "resources": 0, "device": 0, "testing": 0,
    "stac": 1,
    "chips": 2,
    "model": 3,
    "cube": 4,
    "viz": 5,  # maps of cubes, drawn by the CLI, the flows and the evaluations
    "embed": 6, "train": 6, "evaluate": 6,
    "api": 7, "flows": 7,
    "cli": 8, "__init__": 8,
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "geomoe":
            names = [node.module] if "." in node.module else [f"geomoe.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "geomoe"]
        else:
            continue
        found.update(n.split(".")[1] for n in names if "." in n)
    return found


def test_every_module_belongs_to_a_layer():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert tops <= set(LAYERS), f"new top-level module(s) {sorted(tops - set(LAYERS))}: give them a layer"


def test_imports_go_down_the_layers_only():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for there in _imports(path) - {here}:
            if there in LAYERS and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports geomoe.{there}")
    assert wrong == []
