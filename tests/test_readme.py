"""The README is the front door: its commands exist, its example runs, its numbers are the recorded ones."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(kind: str, text: str = README) -> list[str]:
    return [b.strip() for b in re.findall(rf"```{kind}\n(.*?)```", text, flags=re.S)]


def test_readme_is_short():
    assert len(README.splitlines()) <= 150


def test_ci_runs_the_readme_main_command_and_test_command():
    blocks = _blocks("bash")
    assert len(blocks) >= 2, "README set-up is two commands: install + main job, install + tests"
    main_command, test_command = blocks[:2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert main_command in ci and test_command in ci, "CI runs both README commands exactly as written"
    assert ci.index(main_command) < ci.index(test_command)
    assert [ln for ln in ci if "pytest" in ln] == [test_command], "and runs the tests no other way"
    assert "pytest" in test_command and "constraints.txt" in test_command and "constraints.txt" in main_command
    assert "edgecut run recipes/quickstart.yaml" in main_command and "[" not in main_command.split("edgecut run")[0], \
        "the main job installs edgecut alone: no extra"
    assert "openssh-server" in README[README.index(main_command):README.index(test_command) + len(test_command) + 400]


def _shown_commands() -> set[tuple[str, ...]]:
    """Every ``edgecut CMD [SUB]`` the README shows in its shell blocks and inline code."""
    from edgecut.cli.reference import _commands

    known = {tuple(name.split()) for name, _ in _commands()}
    shown = set()
    for text in _blocks("bash") + re.findall(r"`([^`\n]*edgecut [^`\n]*)`", README):
        for words in re.findall(r"edgecut((?: [a-z][a-z-]*){1,2})", text):
            w = tuple(words.split())
            shown.add(w if w in known else w[:1])
    return shown


def test_every_command_the_readme_shows_exists():
    from typer.testing import CliRunner

    from edgecut.cli import app

    shown = _shown_commands()
    assert {("train",), ("prune",), ("distill",), ("export",), ("bench",), ("compare",), ("run",), ("import",)} <= shown
    for words in sorted(shown):
        res = CliRunner().invoke(app, [*words, "--help"])
        assert res.exit_code == 0, f"edgecut {' '.join(words)} --help: {res.output}"


def _table(text: str) -> dict[str, dict[str, str]]:
    """The first markdown table of ``text`` as {name: {header: cell}}."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = [ln for ln in itertools.takewhile(lambda ln: ln.startswith("|"), lines[start:])]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = {}
    for ln in rows[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) == len(header):
            out[cells[0].strip("*")] = dict(zip(header, cells))
    return out


def test_readme_numbers_are_the_recorded_ones():
    recorded = _table((ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8"))
    shown = _table(README[README.index("## What it measures"):])
    assert len(shown) >= 4
    for name, row in shown.items():
        for column, cell in row.items():
            if column != "name":
                assert recorded[name][column] == cell, f"README {name} {column}: {cell}, RESULTS.md {recorded[name][column]}"


def test_the_command_reference_is_current():
    from edgecut.cli.reference import render

    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == render(), \
        "docs/cli.md is stale: python -m edgecut.cli.reference > docs/cli.md"


@pytest.mark.slow
def test_the_python_example_runs(tmp_path):
    (code,) = _blocks("python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = tmp_path / "runs" / "example" / "report"
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    assert {ln.split("|")[1].strip().strip("*") for ln in (report / "report.md").read_text().splitlines()
            if ln.startswith("| ") and "---" not in ln} >= {"teacher", "pruned", "pruned-onnx"}
