"""``main``: the ``edgecut`` command, with every command module registered on the one typer app, and a
user's mistake (an :class:`~edgecut.errors.EdgecutError`) shown as one red line and exit code 2."""

from __future__ import annotations

import sys
import warnings

import edgecut.cli.recipes  # noqa: F401,I001  (each registers its commands on the app, in edgecut --help order)
import edgecut.cli.optimize  # noqa: F401,I001
import edgecut.cli.intake  # noqa: F401,I001
import edgecut.cli.train  # noqa: F401,I001
import edgecut.cli.compress  # noqa: F401,I001
import edgecut.cli.measure  # noqa: F401,I001
import edgecut.cli.use  # noqa: F401,I001
import edgecut.cli.targets  # noqa: F401,I001
from edgecut.cli.app import app, err
from edgecut.errors import DataWarning, EdgecutError


def main() -> None:
    from rich.markup import escape

    shown, noted = warnings.showwarning, set()

    def note(message, category, *args, **kwargs) -> None:  # edgecut's notes as one line, each once; others as Python
        if issubclass(category, DataWarning):  # shows them
            if str(message) not in noted:  # once per run, even where a library resets Python's own memory of it
                noted.add(str(message))
                err.print(f"[yellow]note[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = note
    try:
        app(standalone_mode=True)
    except EdgecutError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # "edgecut[onnx]" is no tag
        sys.exit(2)
    except OSError as e:  # a file operation edgecut did not wrap: still one line, naming the file
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[red]error:[/red] {escape(where + (e.strerror or str(e)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
