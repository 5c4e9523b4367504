"""The typer application the command modules register on (a group of commands adds its own typer to it), and
the two consoles they print to."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Make background-removal networks small and fast, and prove it with numbers.")
console = Console()
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _everywhere(no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Load artifacts without checking their files against the sha256 in edgecut.json "
                            "(for files you changed on purpose).")] = False) -> None:
    """Make background-removal networks small and fast, and prove it with numbers."""
    if no_verify:
        from edgecut.artifact import NO_VERIFY

        os.environ[NO_VERIFY] = "1"  # this process and the workers it starts
