"""``python -m edgecut.cli``: the ``edgecut`` command."""

from edgecut.cli import main

main()
