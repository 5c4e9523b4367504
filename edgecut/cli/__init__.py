"""The ``edgecut`` command: thin; parses options, builds each stage's config once, calls the front functions.

One module per group of commands (recipes, optimize, intake, train, compress, measure, use, targets) registers
its commands on the one application (:mod:`edgecut.cli.app`); :mod:`edgecut.cli.main` imports them all.
"""

from edgecut.cli.app import app, console, err
from edgecut.cli.main import main

__all__ = ["app", "main", "console", "err"]
