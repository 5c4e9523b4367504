"""Imports run one way: a module never imports one above it in this list (DESIGN.md, 'The house')."""

from __future__ import annotations

import ast
from pathlib import Path

import edgecut

# top to bottom; a package or module may import only what comes after it (or itself)
LAYERS = ["cli", "recipe", "report", "compress", "export", "bench", "targets", "cutout", "runtime", "train",
          "models", "data", "metrics", "artifact", "env", "io", "_optional", "errors"]
PACKAGE = Path(edgecut.__file__).parent


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgecut":
            parts = node.module.split(".")
            found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("edgecut."))
    return found


def test_imports_flow_downward():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue  # the lazy public API names everything
        me = _layer(path)
        assert me in LAYERS, f"{path}: add its layer to LAYERS"
        for other in _imported_layers(path) - {me, "__version__"}:
            assert other in LAYERS, f"{path} imports unknown layer {other}"
            if LAYERS.index(other) < LAYERS.index(me):
                wrong.append(f"{path.relative_to(PACKAGE)} ({me}) imports {other}")
    assert not wrong, "imports that run upward:\n" + "\n".join(wrong)
