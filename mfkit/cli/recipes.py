"""Shipped recipes: the source checkout's recipes/ folder, ./recipes, and recipe packages of plugins.

Plugin packages ship recipes through the entry-point group ``mfkit.recipes`` (each entry names a
package whose folder holds YAML files; see docs/plugins.md). They are read here with
``importlib.metadata`` alone, without loading the plugins, so `mfkit recipes` stays fast (no torch).
"""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

PACKAGE_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECIPE_GROUP = "mfkit.recipes"  # the same group as mfkit.plugins.discovery.RECIPE_GROUP


@dataclass(frozen=True)
class ShippedRecipe:
    name: str
    path: Path
    summary: str
    package: str  # "mfkit" or the plugin distribution that ships it


def _folders() -> list[Path]:
    folders = [PACKAGE_RECIPES, Path.cwd() / "recipes"]
    unique = []
    for folder in folders:
        if folder.is_dir() and folder.resolve() not in [f.resolve() for f in unique]:
            unique.append(folder)
    return unique


def _summary(path: Path) -> str:
    """The header comment line that starts with 'Expects:' (hardware and time), else the first comment."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    comments = [line.lstrip("# ").rstrip() for line in text.splitlines() if line.startswith("#")]
    expects = [c.split(":", 1)[1].strip() for c in comments if c.lower().startswith("expects:")]
    return (expects or comments or [""])[0]


def display_path(path: Path) -> str:
    """The path relative to the working folder when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _plugin_recipe_files() -> list[tuple[Path, str]]:
    found = []
    for entry_point in metadata.entry_points(group=RECIPE_GROUP):
        dist = getattr(entry_point, "dist", None)
        package = dist.name if dist is not None else entry_point.name
        try:
            folder = importlib.resources.files(entry_point.value)
            files = sorted(Path(str(f)) for f in folder.iterdir() if f.name.endswith((".yaml", ".yml")))
        except Exception:  # noqa: BLE001 - a broken package is reported by `mfkit plugins`, not here
            continue
        found += [(path, package) for path in files]
    return found


def shipped_recipes() -> list[tuple[str, Path, str]]:
    """mfkit's own recipes (and ./recipes): (name, path, summary)."""
    return [(p.stem, p, _summary(p)) for folder in _folders() for p in sorted(folder.glob("*.yaml"))]


def all_recipes() -> list[ShippedRecipe]:
    """mfkit's recipes (and ./recipes), then those of plugin packages. A plugin's recipe that a source
    checkout's recipes/ also holds, byte for byte, is listed once, as the plugin's."""
    found = [ShippedRecipe(name, path, summary, "mfkit") for name, path, summary in shipped_recipes()]
    for path, package in _plugin_recipe_files():
        same = next((i for i, item in enumerate(found) if item.name == path.stem and item.package == "mfkit"
                     and _same_file(item.path, path)), None)
        if same is not None:
            found[same] = ShippedRecipe(found[same].name, found[same].path, found[same].summary, package)
        else:
            found.append(ShippedRecipe(path.stem, path, _summary(path), package))
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def find_recipe(name_or_path: str) -> Path:
    """A path as given if it exists, else a shipped recipe of that name (the path otherwise, for the error)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for shipped in all_recipes():
        if name_or_path in (shipped.name, shipped.path.name):
            return shipped.path
    return path
