"""Shipped recipes: found in the source checkout's recipes/ folder and in ./recipes."""
from __future__ import annotations

from pathlib import Path

PACKAGE_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _folders() -> list[Path]:
    folders = [PACKAGE_RECIPES, Path.cwd() / "recipes"]
    unique = []
    for folder in folders:
        if folder.is_dir() and folder.resolve() not in [f.resolve() for f in unique]:
            unique.append(folder)
    return unique


def _summary(path: Path) -> str:
    """The header comment line that starts with 'Expects:' (hardware and time), else the first comment."""
    comments = [line.lstrip("# ").rstrip() for line in path.read_text().splitlines() if line.startswith("#")]
    expects = [c.split(":", 1)[1].strip() for c in comments if c.lower().startswith("expects:")]
    return (expects or comments or [""])[0]


def display_path(path: Path) -> str:
    """The path relative to the working folder when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def shipped_recipes() -> list[tuple[str, Path, str]]:
    found = []
    for folder in _folders():
        for path in sorted(folder.glob("*.yaml")):
            found.append((path.stem, path, _summary(path)))
    return found


def find_recipe(name_or_path: str) -> Path:
    """A path as given if it exists, else a shipped recipe of that name (the path otherwise, for the error)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for name, shipped, _ in shipped_recipes():
        if name == name_or_path or shipped.name == name_or_path:
            return shipped
    return path
