"""Reading recipes: YAML -> overrides -> schema validation -> plugin-parameter validation.

Every problem is collected and reported at once, one line each, prefixed with the path of the bad
field (``objective.adaptive_p: Input should be a valid number``).
"""
from __future__ import annotations

import difflib

from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from mfkit.plugins.discovery import Registry, UnknownPluginError, registry as default_registry
from mfkit.recipe.schema import Recipe
from mfkit.train.run_folder import run_name_problem


class RecipeError(ValueError):
    """A recipe that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "recipe") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _path(location: Iterable[Any]) -> str:
    return ".".join(str(part) for part in location)


def _lines(error: ValidationError, prefix: tuple = (), model: type | None = None, plugin: str | None = None) -> list[str]:
    """One line per problem. For a plugin's parameters (``model`` given), an unknown field gets a
    "did you mean" and the list of valid fields."""
    lines = []
    for item in error.errors():
        location = _path(prefix + tuple(item["loc"])) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (not allowed here; see docs/recipes.md for the fields)"
            if model is not None and len(item["loc"]) == 1:
                fields = list(model.model_fields)
                close = difflib.get_close_matches(str(item["loc"][0]), fields, n=1)
                message = (f"unknown parameter of {plugin}" + (f"; did you mean {close[0]!r}?" if close else "")
                           + f" Valid: {', '.join(fields) or 'none'} (`mfkit plugins --params {plugin.split()[-1]}`)")
        lines.append(f"{location}: {message}")
    return lines


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a nested dict, in order."""
    problems = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            problems.append(f"{override!r}: an override is key.path=value, e.g. train.steps=100")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            problems.append(f"{key}: cannot read value {raw!r}: {error}")
            continue
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"{key}: {part!r} is a value, not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise RecipeError(problems, "overrides")
    return data


def parse_recipe(data: Any, source: str = "recipe", plugins: Registry | None = None) -> Recipe:
    """Validate a recipe dict: the schema, then each plugin's parameters by the plugin's own model."""
    plugins = plugins or default_registry
    if not isinstance(data, dict):
        raise RecipeError([f"(top level): a recipe is a mapping of sections, got {type(data).__name__}"], source)
    problems: list[str] = []
    resolved: dict[str, dict] = {}
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        problems += _lines(error)
    if isinstance(data.get("name"), str) and (problem := run_name_problem(data["name"])):
        problems.append(f"name: {problem}")
    for section in ("modality", "backbone"):
        ref = data.get(section)
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            continue
        package = ref.get("package") if isinstance(ref.get("package"), str) else None
        try:
            spec = plugins.modality(ref["name"], package) if section == "modality" else plugins.backbone(ref["name"], package)
        except UnknownPluginError as error:
            problems.append(f"{section}.name: {error}")
            continue
        params = ref.get("params") or {}
        if isinstance(params, dict):
            try:
                resolved[section] = spec.params_model.model_validate(params).model_dump(mode="json")
            except ValidationError as error:
                problems += _lines(error, (section, "params"), spec.params_model, f"{section} {ref['name']!r}")
    if problems:
        raise RecipeError(problems, source)
    assert recipe is not None
    # every default of the plugins' parameters is written out, so the resolved recipe (kept in the run
    # and in every checkpoint) rebuilds the same plugins even if a plugin's default changes later
    for section, params in resolved.items():
        getattr(recipe, section).params = params
    return recipe


def load_recipe(path: str | Path, overrides: Iterable[str] = (), plugins: Registry | None = None) -> Recipe:
    """Read a YAML recipe file, apply overrides, validate everything."""
    path = Path(path)
    if not path.is_file():
        hint = " (see `mfkit recipes` for the shipped ones)" if not path.exists() else ""
        raise RecipeError([f"no recipe file at {path}{hint}"], str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError([f"not valid YAML: {error}"], str(path)) from None
    data = apply_overrides(data if isinstance(data, dict) else {}, overrides) if overrides else data
    return parse_recipe(data, str(path), plugins)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe (every default filled in) as YAML."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
