"""The ``edgecut`` command: thin; parses options, builds each stage's config once, calls the front functions.

One module per group of commands (:mod:`~edgecut.cli.train`, :mod:`~edgecut.cli.compress`,
:mod:`~edgecut.cli.measure`, :mod:`~edgecut.cli.use`) registers its commands on the one
application (:mod:`edgecut.cli.app`); importing them here does that, in ``edgecut --help`` order.
A user's mistake (an :class:`~edgecut.errors.EdgecutError`) is one red line and exit code 2.
"""

from __future__ import annotations

import sys

from edgecut.cli import train, compress, measure, use  # noqa: F401,I001  (registers the commands, in this order)
from edgecut.cli.app import app, console, err
from edgecut.errors import EdgecutError

__all__ = ["app", "main", "console", "err"]


def main() -> None:
    try:
        app(standalone_mode=True)
    except EdgecutError as e:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # "edgecut[onnx]" is no tag
        sys.exit(2)
