"""The house rules: one step shape, short functions, files and module openings, the step table the recipe runner
reads, and design-decision links that lead somewhere."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import edgecut
from edgecut.steps import STEPS

PACKAGE = Path(edgecut.__file__).parent
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 500
LONG_FILE = "# over 500 lines:"  # the one-line reason a longer file gives at its top
LONG_FUNCTION = "# over 80 lines:"  # ... and a longer function on the line above its def
MAX_MODULE_DOC_LINES = 12  # what the module is for and its contract; the measured reasons go to DESIGN_DECISIONS
DESIGN_DECISIONS = Path(__file__).resolve().parents[1] / "docs" / "design-decisions.md"
BENCHMARKS = PACKAGE.parent / "benchmarks"
OPENED = (PACKAGE, BENCHMARKS, PACKAGE.parent / "tests")  # the folders whose modules open in a few lines


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_step_has_the_one_shape(name):
    kind = STEPS[name]
    fn, config_class = kind.load()
    params = list(inspect.signature(fn).parameters.values())
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    assert len(positional) == len(kind.sources) + 2 and positional[-2:] == ["out", "config"], positional
    assert keyword.get("resume") is False and keyword.get("progress") is True
    assert dataclasses.is_dataclass(config_class) and config_class.__dataclass_params__.frozen
    default = inspect.signature(fn).parameters["config"].default
    assert isinstance(default, config_class) and default == config_class()  # the default is the class's default


def test_the_public_api_names_every_step_and_its_config():
    for name, kind in STEPS.items():
        fn, config_class = kind.load()
        assert getattr(edgecut, {"import": "import_model"}.get(name, name)) is fn  # a keyword is no attribute
        assert getattr(edgecut, config_class.__name__) is config_class


def _long(path: Path, tree: ast.Module) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    if len(lines) > MAX_FILE_LINES and not any(ln.startswith(LONG_FILE) for ln in lines[:3]):
        out.append(f"{path.relative_to(PACKAGE.parent)}: {len(lines)} lines")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not lines[first - 2].strip().startswith(LONG_FUNCTION):
                out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {length} lines")
    return out


def test_functions_and_files_are_short_or_say_why():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += _long(path, ast.parse(path.read_text(encoding="utf-8")))
    assert not found, "too long, with no reason given at the top:\n" + "\n".join(found)


def test_the_length_check_sees_long_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long_fn = tmp_path / "m.py"
    long_fn.write_text(f"def f():\n{body}\n")
    with pytest.raises(ValueError):  # outside the package: relative_to fails once it is found
        _long(long_fn, ast.parse(long_fn.read_text()))
    long_fn.write_text(f"{LONG_FUNCTION} a table written out\ndef f():\n{body}\n")
    assert _long(long_fn, ast.parse(long_fn.read_text())) == []


def test_module_docstrings_say_what_and_why_in_a_few_lines():
    """STYLE.md, habit 15: a module opens with what it is for and its contract; the numbers and findings behind
    its choices live in docs/design-decisions.md (a benchmark's in benchmarks/README.md), and the docstring links
    to their section. Package, benchmarks and tests alike."""
    long = []
    for path in sorted(p for folder in OPENED for p in folder.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
        if doc is not None and len(doc.splitlines()) > MAX_MODULE_DOC_LINES:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {len(doc.splitlines())} lines")
    assert not long, (f"module docstrings over {MAX_MODULE_DOC_LINES} lines (move the measured reasons to "
                      "docs/design-decisions.md or benchmarks/README.md and link to them):\n" + "\n".join(long))


def _anchors(markdown: str) -> list[str]:
    """The anchors a markdown page defines: ``<a id="...">`` tags, and its headings as GitHub turns them into ids."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    slugs = [re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings]
    return re.findall(r'<a id="([^"]+)"></a>', markdown) + slugs


def test_every_design_decision_the_code_links_to_exists():
    anchors = _anchors(DESIGN_DECISIONS.read_text(encoding="utf-8"))
    assert len(anchors) == len(set(anchors)), "an anchor defined twice"
    links = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for anchor in re.findall(r"docs/design-decisions\.md#([\w-]+)", path.read_text(encoding="utf-8")):
            links.setdefault(anchor, []).append(str(path.relative_to(PACKAGE.parent)))
    assert links, "the code links to no design decision: has the link pattern changed?"
    missing = {a: files for a, files in links.items() if a not in anchors}
    assert not missing, f"links to sections docs/design-decisions.md does not have: {missing}"


def test_every_benchmarks_readme_section_a_script_links_to_exists():
    anchors = _anchors((BENCHMARKS / "README.md").read_text(encoding="utf-8"))
    links = {}
    for path in sorted(BENCHMARKS.rglob("*.py")):
        for anchor in re.findall(r"benchmarks/README\.md#([\w-]+)", path.read_text(encoding="utf-8")):
            links.setdefault(anchor, []).append(str(path.relative_to(PACKAGE.parent)))
    assert links, "no benchmark links to its README section: has the link pattern changed?"
    missing = {a: files for a, files in links.items() if a not in anchors}
    assert not missing, f"links to sections benchmarks/README.md does not have: {missing}"


def test_the_anchor_check_reads_tags_and_headings():
    page = '<a id="onnx-int8"></a>\n## ONNX INT8: U8S8, 7-bit weights (`exporters/onnx.py`)\n'
    assert _anchors(page) == ["onnx-int8", "onnx-int8-u8s8-7-bit-weights-exportersonnxpy"]


def test_no_package_hides_a_public_name():
    """Importing ``edgecut.x`` sets ``edgecut.x`` to that module, so a package named like a public
    function (``train``, ``export``, ``bench``) would replace the function once it is imported."""
    modules = {p.stem if p.suffix else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert not modules & set(edgecut.__all__)


def test_public_functions_stay_functions_after_their_modules_load():
    import subprocess
    import sys

    code = ("import edgecut, edgecut.training.loop, edgecut.exporters, edgecut.measure.bench, edgecut.compress.qat; "
            "print(all(callable(getattr(edgecut, n)) for n in ('train', 'export', 'bench', 'prune', 'distill', 'qat')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_step_holds_the_lock_on_its_out(name):
    fn, _ = STEPS[name].load()
    assert getattr(fn, "locks_out", False), f"{name} is not decorated with io.writes_out"
