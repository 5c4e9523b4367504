"""The typer application the command modules register on, and the two consoles they print to."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Make background-removal networks small and fast, and prove it with numbers.")
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect data sets.")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True, soft_wrap=True)
