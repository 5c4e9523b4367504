"""The ``edgecut`` command: thin; parses options, builds each stage's config once, calls the front functions.

One module per command, named after it (``export.py``, ``distill.py``; ``data.py`` for ``data synth | composite |
check``; ``import_.py`` for ``import``), registers it on the one application (:mod:`edgecut.cli.app`);
:mod:`edgecut.cli.main` imports them all. Options several commands take are written once, in :mod:`edgecut.cli.options`.
"""

from edgecut.cli.app import app, console, err
from edgecut.cli.main import main

__all__ = ["app", "main", "console", "err"]
