"""`mfkit validate`, `mfkit plugins`, `mfkit recipes`: look before training."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

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


def _check_one(name: str, overrides: list[str], show: bool, check: bool) -> bool:
    from mfkit.cli.errors import user_error_types
    from mfkit.recipe.build import build_backbone, build_modality, build_objective_for, plugin_context
    from mfkit.recipe.loading import load_recipe, recipe_to_yaml
    from mfkit.train.evaluating import check_evaluation_settings
    from mfkit.train.preflight import preflight

    path = find_recipe(name)
    try:
        loaded = load_recipe(path, overrides)
        check_evaluation_settings(loaded)
        if check:  # one real batch, one forward, one JVP: what `mfkit train` also checks before its first step
            modality = build_modality(loaded, context=plugin_context(loaded, purpose="validate"))
            objective = build_objective_for(loaded, modality)
            dataset = modality.dataset("train")
            modality.fit(dataset)
            preflight(modality, modality.dataset("train"), build_backbone(loaded, modality), objective,
                      modality_name=loaded.modality.name, backbone_name=loaded.backbone.name)
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
    check: bool = typer.Option(True, "--check/--no-check", help="also build the plugins and run one forward "
                               "and one JVP on a real batch (default; --no-check: schema and parameters only)"),
) -> None:
    """Check recipes without training: the schema and plugin parameters (every problem of each file), then
    the modality and backbone on one real batch (one forward and one JVP), as `mfkit train` does first.

    Exits with 2 when any recipe has a problem.

    Examples:

      mfkit validate recipes/toy2d.yaml train.lr=3e-4 --show

      mfkit validate recipes/*.yaml --no-check
    """
    recipes, overrides = split_recipes_and_overrides(arguments)
    if not recipes:
        recipes, overrides = overrides[:1], overrides[1:]  # let the first one be reported as a missing file
    results = [_check_one(name, overrides, show, check) for name in recipes]
    if len(results) > 1:
        err.print(f"{results.count(True)} of {len(results)} recipes are valid", highlight=False)
    if not all(results):
        raise typer.Exit(2)


@handle_errors
def plugins(
    params: Optional[str] = typer.Option(None, "--params", help="show the parameters of this plugin (modality, "
                                         "backbone or evaluator): types, defaults and descriptions"),
) -> None:
    """List installed plugins (modalities, backbones, evaluators), where they come from, and which are broken.

    Examples:

      mfkit plugins

      mfkit plugins --params toy2d
    """
    from mfkit.plugins.discovery import registry

    if params is not None:
        _show_params(registry, params)
        return
    table = Table(title="mfkit plugins")
    for column in ("kind", "name", "package", "description"):
        table.add_column(column)
    for kind, group in (("modality", "mfkit.modalities"), ("backbone", "mfkit.backbones"),
                        ("evaluator", "mfkit.evaluators")):
        for installed in sorted(registry.all_installed(group), key=lambda i: (i.spec.name, i.distribution)):
            table.add_row(kind, installed.spec.name, installed.distribution, escape(installed.spec.description))
    for problem in registry.problems():
        kind = problem.group.split(".")[-1].rstrip("s").replace("modalitie", "modality")
        table.add_row(f"[red]{kind} (problem)", problem.name, problem.distribution, f"[red]{escape(problem.reason)}")
    out.print(table)


def _type_name(annotation) -> str:
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _show_params(registry, name: str) -> None:
    """One table per plugin of that name: field, type, default, description."""
    import json

    from mfkit.cli.errors import UserError
    from mfkit.plugins.discovery import UnknownPluginError

    found = [(kind, item) for kind, group in (("modality", "mfkit.modalities"), ("backbone", "mfkit.backbones"),
                                              ("evaluator", "mfkit.evaluators"))
             for item in registry.all_installed(group) if item.spec.name == name]
    if not found:
        try:
            registry.modality(name)
        except UnknownPluginError as error:
            names = sorted({item.spec.name for group in ("mfkit.modalities", "mfkit.backbones", "mfkit.evaluators")
                            for item in registry.all_installed(group)})
            import difflib

            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"no plugin named {name!r}.{hint} Installed: {', '.join(names)}") from error
    for kind, item in found:
        model = item.spec.params_model
        table = Table(title=f"{kind} {name} ({item.distribution}): parameters")
        for column in ("field", "type", "default", "description"):
            table.add_column(column)
        for field_name, field in model.model_fields.items():
            default = "(required)" if field.is_required() else json.dumps(field.get_default(call_default_factory=True),
                                                                          default=str)
            annotation = _type_name(field.annotation)
            table.add_row(field_name, escape(annotation), escape(default), escape(field.description or ""))
        if not model.model_fields:
            table.add_row("(none)", "", "", "this plugin takes no parameters")
        out.print(table)


def recipes() -> None:
    """List the shipped recipes (mfkit's and plugin packages') with what hardware and time they expect."""
    table = Table(title="shipped recipes")
    for column in ("name", "package", "file", "expects"):
        table.add_column(column)
    for recipe in all_recipes():
        table.add_row(recipe.name, recipe.package, display_path(recipe.path), recipe.summary)
    out.print(table)
