"""The shipped image recipes: each starts with its "Expects:" header and validates (digits end to end)."""
from __future__ import annotations

import importlib.resources
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mfkit.plugins import registry

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted((ROOT / "recipes").glob("image_*.yaml"))
SHIPPED = sorted(p for p in importlib.resources.files("mfkit_image.recipes").iterdir() if p.name.endswith(".yaml"))


def test_all_five_recipes_exist():
    assert {p.stem for p in RECIPES} == {"image_digits", "image_mnist", "image_cifar10", "image_latents", "image_folder"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_header_and_plugin_parameters(path):
    text = path.read_text()
    assert "# Expects:" in text.split("\nname:")[0], f"{path.name} needs an 'Expects:' comment header"
    recipe = yaml.safe_load(text)
    modality = registry.modality(recipe["modality"]["name"])
    backbone = registry.backbone(recipe["backbone"]["name"])
    modality.params_model.model_validate(recipe["modality"].get("params", {}))
    backbone.params_model.model_validate(recipe["backbone"].get("params", {}))


def test_mfkit_validates_digits_with_a_real_batch_and_cifar10_schema():
    def validate(*args):
        return subprocess.run([sys.executable, "-m", "mfkit", "validate", *args], cwd=ROOT, capture_output=True,
                              text=True)

    checked = validate("recipes/image_digits.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    schema = validate("--no-check", "recipes/image_cifar10.yaml", "recipes/image_mnist.yaml")
    assert schema.returncode == 0, schema.stdout + schema.stderr


def test_the_package_ships_copies_of_the_checkout_recipes():
    assert [p.name for p in SHIPPED] == [p.name for p in RECIPES]
    for shipped in SHIPPED:
        assert shipped.read_text() == (ROOT / "recipes" / shipped.name).read_text(), f"{shipped.name} differs"
