"""Recipes that a plugin package ships (so `pip install mfkit-image` brings them) are also in the
checkout's recipes/: the two copies must be the same file, and `mfkit recipes` lists such a recipe once."""
from pathlib import Path

import pytest

from mfkit.cli.recipes import all_recipes

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_RECIPES = sorted(ROOT.glob("plugins/*/mfkit_*/recipes/*.yaml"))


@pytest.mark.parametrize("path", PLUGIN_RECIPES, ids=lambda p: f"{p.parents[2].name}/{p.name}")
def test_the_checkout_copy_equals_the_plugins(path):
    checkout = ROOT / "recipes" / path.name
    assert checkout.is_file(), f"{path} has no copy in recipes/: cp {path} {checkout}"
    assert checkout.read_bytes() == path.read_bytes(), \
        f"recipes/{path.name} and {path.relative_to(ROOT)} differ: edit one, copy it over the other"


def test_mfkit_recipes_lists_each_recipe_once():
    names = [recipe.name for recipe in all_recipes()]
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)
