"""Imports run one way, in the order ARCHITECTURE.md writes down, and no two files import each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import edgecut

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(edgecut.__file__).parent


def _block(kind: str) -> list[str]:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    found = re.findall(rf"```{kind}\n(.*?)```", text, flags=re.S)
    assert len(found) == 1, f"ARCHITECTURE.md needs exactly one ```{kind} block"
    return [ln for ln in found[0].splitlines() if ln.strip()]


LAYERS = [ln.split()[0] for ln in _block("layers")]  # top to bottom


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The edgecut module a dotted import name lands in (``edgecut.io.read_json`` -> ``edgecut.io``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every edgecut module ``path`` imports, at module level or inside functions."""
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgecut":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else _resolve(node.module))
        elif isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "edgecut")
    return {m for m in found if m is not None}


PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _as_python_runs_it(module: str, imported: set[str]) -> set[str]:
    """What importing ``imported`` from ``module`` runs: each module, and the ``__init__`` of every package on
    its way that ``module`` is not itself inside (those ran before ``module`` did). ``edgecut`` itself, the
    lazy public API, imports nothing when it runs."""
    runs = set(imported)
    for target in imported:
        runs |= {p for p in _ancestors(target) if p in PACKAGES and p != "edgecut" and p not in _ancestors(module)}
    return runs - {module}


GRAPH = {name: _as_python_runs_it(name, _imports(path)) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_has_a_layer():
    missing = sorted({_layer(m) for m in MODULES if m != "edgecut"} - set(LAYERS))
    assert not missing, f"add these to the layers in ARCHITECTURE.md: {missing}"


def test_imports_flow_downward():
    wrong = []
    for module, imported in sorted(GRAPH.items()):
        if module == "edgecut":
            continue  # the lazy public API names everything
        for other in sorted(imported):
            if other == "edgecut":
                wrong.append(f"{module} imports the package's public API (edgecut/__init__.py); import the module")
            elif LAYERS.index(_layer(other)) < LAYERS.index(_layer(module)):
                wrong.append(f"{module} ({_layer(module)}) imports {other} ({_layer(other)})")
    assert not wrong, "imports that run upward:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_files():
    cycles = [sorted(c) for c in _cycles(GRAPH)]
    assert not cycles, "files that import each other (directly or through others):\n" + "\n".join(map(str, cycles))


def test_no_module_goes_through_its_own_package_door():
    """A module reaches its siblings by their full names (``import edgecut.exporters.parity as parity``), never
    by ``from edgecut.exporters import parity``: that asks the package's ``__init__`` for a name. (``from edgecut
    import io`` names a module of the top package, whose ``__init__`` is the lazy public API.)"""
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in PACKAGES - {"edgecut"} and \
                    node.module in _ancestors(module):
                found.append(f"{module}: from {node.module} import {', '.join(a.name for a in node.names)}")
    assert not found, "\n".join(found)


def test_package_doors_hold_no_logic():
    """A package's ``__init__.py`` is its docstring, imports and ``__all__``: no function, class or other code."""
    logic = []
    for module in sorted(PACKAGES - {"edgecut"}):  # edgecut/__init__.py is the lazy public API
        for node in ast.parse(MODULES[module].read_text(encoding="utf-8")).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            names = isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "__all__"
                                                          for t in node.targets)
            if not (docstring or names or isinstance(node, (ast.Import, ast.ImportFrom))):
                logic.append(f"{MODULES[module]}:{node.lineno}: {type(node).__name__}")
    assert not logic, "move it into a module named after it:\n" + "\n".join(logic)


def test_the_cycle_check_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []
