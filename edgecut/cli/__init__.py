"""The ``edgecut`` command: thin; parses options, calls the front functions, prints.

One module per group of commands (:mod:`~edgecut.cli.train`, :mod:`~edgecut.cli.compress`,
:mod:`~edgecut.cli.measure`, :mod:`~edgecut.cli.use`); importing them registers their commands
on :data:`app`, in the order ``edgecut --help`` lists them.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from edgecut.errors import EdgecutError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Make background-removal networks small and fast, and prove it with numbers.")
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect data sets.")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True, soft_wrap=True)

from edgecut.cli import train, compress, measure, use  # noqa: E402,F401,I001  (registers the commands, in --help order)


def main() -> None:
    try:
        app(standalone_mode=True)
    except EdgecutError as e:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # "edgecut[onnx]" is no tag
        sys.exit(2)
