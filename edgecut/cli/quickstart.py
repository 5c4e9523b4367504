"""``edgecut quickstart``: the main job (recipes/quickstart.yaml) on synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecut.cli.app import app
from edgecut.errors import EdgecutError


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/quickstart"),
) -> None:
    """The main job on synthetic data: recipes/quickstart.yaml (teacher, pruned, student, exports, bench, compare)."""
    from edgecut.cli.run import run_cmd

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
    if not recipe.is_file():
        raise EdgecutError("the quickstart recipe is recipes/quickstart.yaml of edgecut's source checkout, which this "
                           "installation does not have: run 'edgecut run path/to/recipes/quickstart.yaml'")
    run_cmd(recipe, out=out, from_step=None, only=None, dry_run=False, set_=None)
