"""Training: one readable loop on accelerate, recipes (YAML -> dataclasses), checkpoints that resume exactly.

from deltatune.training import fit, load_recipe, run_recipe
"""

from deltatune.training.config import Recipe
from deltatune.training.errors import DataError, ModelPathError, RecipeError, RunFolderError
from deltatune.training.loop import FitResult, Hooks, StepInfo, fit
from deltatune.training.recipe import load_recipe, shipped_recipes
from deltatune.training.runner import run_recipe

__all__ = [
    "DataError",
    "FitResult",
    "Hooks",
    "ModelPathError",
    "Recipe",
    "RecipeError",
    "RunFolderError",
    "StepInfo",
    "fit",
    "load_recipe",
    "run_recipe",
    "shipped_recipes",
]
