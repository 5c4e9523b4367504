"""The ``edgecut`` command: thin; parses options, builds each stage's config once, calls the front functions.

One module per group of commands (:mod:`~edgecut.cli.recipes`, :mod:`~edgecut.cli.intake`, :mod:`~edgecut.cli.train`, :mod:`~edgecut.cli.compress`,
:mod:`~edgecut.cli.measure`, :mod:`~edgecut.cli.use`, :mod:`~edgecut.cli.targets`) registers its commands on the one
application (:mod:`edgecut.cli.app`); importing them here does that, in ``edgecut --help`` order.
A user's mistake (an :class:`~edgecut.errors.EdgecutError`) is one red line and exit code 2.
"""

from __future__ import annotations

import sys
import warnings

from edgecut.cli import recipes, optimize, intake, train, compress, measure, use, targets  # noqa: F401,I001  (registers the commands, in this order)
from edgecut.cli.app import app, console, err
from edgecut.errors import DataWarning, EdgecutError

__all__ = ["app", "main", "console", "err"]


def main() -> None:
    from rich.markup import escape

    shown, noted = warnings.showwarning, set()

    def note(message, category, *args, **kwargs) -> None:  # edgecut's notes as one line, each once; others as Python shows them
        if issubclass(category, DataWarning):
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
