"""``main``: the ``edgecut`` command, with every command module registered on the one typer app, and a
user's mistake (an :class:`~edgecut.errors.EdgecutError`) shown as one red line and exit code 2."""

from __future__ import annotations

import sys
import warnings

import edgecut.cli.run  # noqa: F401,I001  (each registers its command on the app, in edgecut --help order)
import edgecut.cli.optimize  # noqa: F401,I001
import edgecut.cli.import_  # noqa: F401,I001
import edgecut.cli.convert  # noqa: F401,I001
import edgecut.cli.train  # noqa: F401,I001
import edgecut.cli.baseline  # noqa: F401,I001
import edgecut.cli.distill  # noqa: F401,I001
import edgecut.cli.prune  # noqa: F401,I001
import edgecut.cli.qat  # noqa: F401,I001
import edgecut.cli.export  # noqa: F401,I001
import edgecut.cli.eval  # noqa: F401,I001
import edgecut.cli.bench  # noqa: F401,I001
import edgecut.cli.compare  # noqa: F401,I001
import edgecut.cli.info  # noqa: F401,I001
import edgecut.cli.remove  # noqa: F401,I001
import edgecut.cli.doctor  # noqa: F401,I001
import edgecut.cli.quickstart  # noqa: F401,I001
import edgecut.cli.bundle  # noqa: F401,I001
import edgecut.cli.data  # noqa: F401,I001  (the groups: listed after the commands, in this order)
import edgecut.cli.target  # noqa: F401,I001
import edgecut.cli.env  # noqa: F401,I001
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
