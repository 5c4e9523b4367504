"""``python -m edgecut.cli``: the ``edgecut`` command."""

from edgecut.cli.main import main

main()
