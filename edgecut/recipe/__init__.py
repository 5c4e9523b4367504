"""Recipes: the steps of a compression run written down once, run with ``edgecut run RECIPE.yaml``.

:func:`load_recipe` reads and checks a recipe (:mod:`edgecut.recipe.schema`); :func:`run_recipe`
runs it into a run folder, skipping what is already there with the same inputs and settings
(:mod:`edgecut.recipe.runner`).
"""

from edgecut.recipe.runner import LOCK_FILE, StepRun, check_needs, missing_needs, plan, run_recipe
from edgecut.recipe.schema import Recipe, RecipeError, StepSpec, load_recipe

__all__ = ["load_recipe", "run_recipe", "plan", "check_needs", "missing_needs", "Recipe", "RecipeError", "StepSpec", "StepRun", "LOCK_FILE"]
