"""Docs generated from code are current, and the README's commands are the ones CI runs."""
from pathlib import Path

import yaml

from mfkit.cli.demo import DEMO_RECIPE_YAML
from mfkit.cli.reference import reference as cli_reference
from mfkit.recipe.reference import reference as recipe_reference

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_reference_is_current():
    assert (ROOT / "docs" / "recipes.md").read_text() == recipe_reference(), \
        "regenerate: python -m mfkit.recipe.reference > docs/recipes.md"


def test_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference(), \
        "regenerate: python -m mfkit.cli.reference > docs/cli.md"


def test_demo_recipe_file_matches_the_embedded_one():
    assert yaml.safe_load((ROOT / "recipes" / "toy2d.yaml").read_text()) == yaml.safe_load(DEMO_RECIPE_YAML)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv .venv"))
    assert command.endswith(".venv/bin/python -m pytest") and "-e plugins/image" in command
    assert f"```bash\n{command}\n```" in readme
