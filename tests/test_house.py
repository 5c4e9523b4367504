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


def _links_to(folder, page: str) -> dict[str, list[str]]:
    """{anchor: files} of every ``page#anchor`` link in the Python files under ``folder``."""
    links: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for anchor in re.findall(re.escape(page) + r"#([\w-]+)", path.read_text(encoding="utf-8")):
            links.setdefault(anchor, []).append(str(path.relative_to(PACKAGE.parent)))
    return links


def test_every_design_decision_the_code_links_to_exists():
    anchors = _anchors(DESIGN_DECISIONS.read_text(encoding="utf-8"))
    assert len(anchors) == len(set(anchors)), "an anchor defined twice"
    links = _links_to(PACKAGE, "docs/design-decisions.md")
    assert links, "the code links to no design decision: has the link pattern changed?"
    missing = {a: files for a, files in links.items() if a not in anchors}
    assert not missing, f"links to sections docs/design-decisions.md does not have: {missing}"


def test_every_benchmarks_readme_section_a_script_links_to_exists():
    anchors = _anchors((BENCHMARKS / "README.md").read_text(encoding="utf-8"))
    links = _links_to(BENCHMARKS, "benchmarks/README.md")
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


# ------------------------------------------------------------------------------------------------
# The command line (STYLE.md, habit 14): an option is written once, and only the typer entry points,
# whose parameters are the command line itself, take many parameters.

CLI = PACKAGE / "cli"
MAX_PARAMETERS = 8


def _typer_definitions(tree: ast.Module) -> list[ast.Call]:
    """Every ``typer.Option(...)`` and ``typer.Argument(...)`` call: each defines one option or argument."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("Option", "Argument") and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "typer"]


def _helps(path: Path, tree: ast.Module) -> list[tuple[str, str]]:
    """(help text, file:line) of each option defined in ``path``; a help built by code is read as its source."""
    out = []
    for call in _typer_definitions(tree):
        text = next((k.value for k in call.keywords if k.arg == "help"), None)
        text = text.value if isinstance(text, ast.Constant) else ast.unparse(text) if text is not None else ""
        out.append((" ".join(text.split()), f"{path.name}:{call.lineno}"))
    return out


def _shared_names(tree: ast.Module) -> list[str]:
    """Module-level names bound to an option definition (``Epochs = Annotated[int, typer.Option(...)]``)."""
    return [t.id for node in tree.body if isinstance(node, ast.Assign) and _typer_definitions(ast.Module([node], []))
            for t in node.targets if isinstance(t, ast.Name)]


def _written_twice(files: dict[Path, ast.Module]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for path, tree in files.items():
        for text, where in _helps(path, tree):
            seen.setdefault(f"help {text!r}", []).append(where)
        for name in _shared_names(tree):
            seen.setdefault(f"option {name}", []).append(path.name)
    return [f"{what}: {', '.join(where)}" for what, where in seen.items() if len(where) > 1]


def test_every_option_is_written_once():
    """An option several commands take is one definition (cli/options.py) the commands name, never a copy: no
    help text is written twice, no option definition is named twice, and every option says what it does."""
    files = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(CLI.glob("*.py"))}
    assert files and sum(len(_helps(p, t)) for p, t in files.items()) > 100, "no options found: has typer changed?"
    silent = [where for path, tree in files.items() for text, where in _helps(path, tree) if not text]
    assert not silent, f"options without help: {silent}"
    twice = _written_twice(files)
    assert not twice, "options defined in more than one place (share one definition from cli/options.py):\n" + \
        "\n".join(twice)


def test_the_option_check_sees_a_copy(tmp_path):
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text('Seed = Annotated[int, typer.Option(help="Seeds everything.")]\n')
    second.write_text('def cmd(seed: Annotated[int, typer.Option(help="Seeds  everything.")] = 0): ...\n')
    files = {p: ast.parse(p.read_text()) for p in (first, second)}
    assert _written_twice(files) == ["help 'Seeds everything.': a.py:1, b.py:1"]
    second.write_text('Seed = Annotated[int, typer.Option(help="Seeds the data order.")]\n')
    files = {p: ast.parse(p.read_text()) for p in (first, second)}
    assert _written_twice(files) == ["option Seed: a.py, b.py"]


def _is_entry_point(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A typer command or callback (``@app.command()``, ``@data_app.command("synth")``, ``@app.callback()``)."""
    names = [(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list]
    return any(isinstance(d, ast.Attribute) and d.attr in ("command", "callback") for d in names)


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """How many parameters a caller gives (a method's ``self`` or ``cls`` not counted)."""
    a = node.args
    count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    first = (a.posonlyargs + a.args)[:1]
    return count - (1 if first and first[0].arg in ("self", "cls") else 0)


def _many_parameters(path: Path, tree: ast.Module) -> list[str]:
    """Each function of ``tree`` but the typer entry points that takes more than MAX_PARAMETERS, and each
    ``locals()`` (a command handing its options on wholesale)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_entry_point(node):
            if (count := _parameters(node)) > MAX_PARAMETERS:
                out.append(f"{path.name}:{node.lineno} {node.name}: {count} parameters")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "locals":
            out.append(f"{path.name}:{node.lineno} locals()")
    return out


def test_no_function_but_the_commands_takes_more_than_eight_parameters():
    """Related values travel together as one small frozen dataclass (a config, ``Hooks``, ``Task``), not as
    a function of many keywords; a command's options reach the code that builds its config as one mapping
    (``ctx.params``), never ``**locals()``. Only the typer entry points, which are the command line, list
    many parameters."""
    found = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "benchmarks").rglob("*.py")]):
        found += [f"{path.parent.name}/{line}" for line in _many_parameters(path, ast.parse(path.read_text("utf-8")))]
    assert not found, f"functions of more than {MAX_PARAMETERS} parameters, or locals():\n" + "\n".join(found)


def test_the_parameter_check_sees_many_parameters(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def build(*, a, b, c, d, e, f, g, h, **rest): ...\n"
                      "@app.command()\ndef cmd(a, b, c, d, e, f, g, h, i): ...\n"
                      "@data_app.command\ndef sub(a, b, c, d, e, f, g, h, i): ...\n"
                      "def fine(a, b, c, d, e, f, g, h): ...\n"
                      "class C:\n    def method(self, a, b, c, d, e, f, g, h): ...\n"
                      "    def wide(self, a, b, c, d, e, f, g, h, i): ...\n"
                      "def cmd2(**kw): return build(**locals())\n")
    assert _many_parameters(module, ast.parse(module.read_text())) == [
        "m.py:1 build: 9 parameters", "m.py:9 wide: 9 parameters", "m.py:10 locals()"]
