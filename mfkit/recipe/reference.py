"""Generate the recipe reference (docs/recipes.md) from the schema, so the two cannot drift.

    python -m mfkit.recipe.reference > docs/recipes.md
"""
from __future__ import annotations

import json
import sys
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mfkit.recipe.schema import Recipe

HEADER = """# Recipe reference

Generated from `mfkit/recipe/schema.py` by `python -m mfkit.recipe.reference > docs/recipes.md`;
a test fails when this file and the schema disagree. Unknown keys are errors everywhere. Check a
recipe with `mfkit validate RECIPE`; override any field on the command line with `key.path=value`.

The `params` of `modality` and `backbone` belong to the plugin and are validated by the plugin's own
schema: see `mfkit plugins` and each plugin's documentation (built-ins at the end of this page).
"""


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section defaults)"
    return f"`{json.dumps(value)}`"


def _section(model: type[BaseModel], path: str, out: list[str], seen: set) -> None:
    nested = []
    out += [f"## `{path or 'top level'}`", "", (model.__doc__ or "").strip(), "",
            "| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        annotation = field.annotation
        out.append(f"| `{name}` | {_type_name(annotation)} | {_default(field)} | {field.description or ''} |")
        for candidate in typing.get_args(annotation) or (annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in seen:
                nested.append((candidate, f"{path}.{name}" if path else name))
    out.append("")
    for candidate, sub in nested:
        seen.add(candidate)
        _section(candidate, sub, out, seen)


def plugin_sections() -> list[str]:
    from mfkit.builtin.mlp import SPEC as MLP
    from mfkit.builtin.toy2d import SPEC as TOY2D

    out = []
    for kind, spec in (("modality", TOY2D), ("backbone", MLP)):
        _section(spec.params_model, f"{kind}.params` of `{spec.name}", out, set())
    return out


def reference() -> str:
    out = [HEADER]
    _section(Recipe, "", out, {Recipe})
    out += ["# Built-in plugins", ""] + plugin_sections()
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
