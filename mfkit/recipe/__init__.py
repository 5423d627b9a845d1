"""Recipes: YAML files, validated with pydantic, that say what to train and how."""
from mfkit.recipe.loading import RecipeError, apply_overrides, load_recipe, parse_recipe, recipe_to_yaml
from mfkit.recipe.schema import Recipe

__all__ = ["Recipe", "RecipeError", "apply_overrides", "load_recipe", "parse_recipe", "recipe_to_yaml"]
