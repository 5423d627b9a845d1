"""`mfkit validate`, `mfkit plugins`, `mfkit recipes`: look before training."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer
from rich.markup import escape
from rich.table import Table

from mfkit.cli.console import err, out
from mfkit.cli.errors import handle_errors, report
from mfkit.cli.recipes import all_recipes, display_path, find_recipe


def split_recipes_and_overrides(arguments: list[str]) -> tuple[list[str], list[str]]:
    """Recipe files (existing paths, *.yaml/*.yml, shipped names) apart from key.path=value overrides."""
    shipped = {recipe.name for recipe in all_recipes()}
    recipes, overrides = [], []
    for argument in arguments:
        is_recipe = Path(argument).exists() or argument.endswith((".yaml", ".yml")) or argument in shipped
        (recipes if is_recipe else overrides).append(argument)
    return recipes, overrides


def _check_one(name: str, overrides: list[str], show: bool) -> bool:
    from mfkit.cli.errors import user_error_types
    from mfkit.recipe.build import build_modality, build_objective
    from mfkit.recipe.loading import load_recipe, recipe_to_yaml

    path = find_recipe(name)
    try:
        loaded = load_recipe(path, overrides)
        build_objective(loaded.objective, build_modality(loaded).num_classes)
    except Exception as error:
        if not isinstance(error, user_error_types()):
            raise
        report(error if str(path) in str(error) else f"{path}: {error}", "error")
        return False
    if show:
        out.print(recipe_to_yaml(loaded), markup=False, highlight=False)
    err.print("[green]ok[/]: " + escape(f"{path} is a valid recipe"), highlight=False)
    return True


@handle_errors
def validate(
    arguments: List[str] = typer.Argument(..., help="recipe files (or shipped recipe names), then key.path=value "
                                          "overrides applied to each"),
    show: bool = typer.Option(False, "--show", help="print each resolved recipe with every default"),
) -> None:
    """Check recipes (schema and plugin parameters) without training. Lists every problem of each file.

    Exits with 2 when any recipe has a problem.

    Examples:

      mfkit validate recipes/toy2d.yaml train.lr=3e-4 --show

      mfkit validate recipes/*.yaml
    """
    recipes, overrides = split_recipes_and_overrides(arguments)
    if not recipes:
        recipes, overrides = overrides[:1], overrides[1:]  # let the first one be reported as a missing file
    results = [_check_one(name, overrides, show) for name in recipes]
    if len(results) > 1:
        err.print(f"{results.count(True)} of {len(results)} recipes are valid", highlight=False)
    if not all(results):
        raise typer.Exit(2)


def plugins() -> None:
    """List installed modality and backbone plugins, where they come from, and which are broken."""
    from mfkit.plugins.discovery import registry

    table = Table(title="mfkit plugins")
    for column in ("kind", "name", "package", "description"):
        table.add_column(column)
    for kind, found in (("modality", registry.modalities()), ("backbone", registry.backbones())):
        for name, installed in sorted(found.items()):
            table.add_row(kind, name, installed.distribution, installed.spec.description)
    for problem in registry.problems():
        kind = problem.group.split(".")[-1].rstrip("s").replace("modalitie", "modality")
        table.add_row(f"[red]{kind} (broken)", problem.name, problem.distribution, f"[red]{problem.reason}")
    out.print(table)


def recipes() -> None:
    """List the shipped recipes (mfkit's and plugin packages') with what hardware and time they expect."""
    table = Table(title="shipped recipes")
    for column in ("name", "package", "file", "expects"):
        table.add_column(column)
    for recipe in all_recipes():
        table.add_row(recipe.name, recipe.package, display_path(recipe.path), recipe.summary)
    out.print(table)
