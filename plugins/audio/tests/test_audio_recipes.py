"""The recipes: valid parameters for this plugin, and the package's copies equal to the checkout's."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import yaml

from mfkit_audio.backbone import SpecUNetParams
from mfkit_audio.frame_dit import FrameDiTParams
from mfkit_audio.modality import SpeechModality, SpeechParams

SHIPPED = sorted(p for p in importlib.resources.files("mfkit_audio.recipes").iterdir() if p.name.endswith(".yaml"))
CHECKOUT = Path(__file__).resolve().parents[3] / "recipes"


def test_both_recipes_are_shipped():
    assert [p.name for p in SHIPPED] == ["audio_speech.yaml", "audio_speech_gpu.yaml"]


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_recipe_parameters_validate_and_state_the_hardware(shipped, tmp_path):
    text = shipped.read_text()
    data = yaml.safe_load(text)
    assert any(line.startswith("# Expects:") for line in text.splitlines())
    params = SpeechParams.model_validate(data["modality"]["params"])
    backbone = {"frame_dit": FrameDiTParams, "spec_unet": SpecUNetParams}[data["backbone"]["name"]]
    backbone.model_validate(data["backbone"]["params"])
    speech = SpeechModality(params)
    assert speech.class_names[7] == "seven"  # known without reading any audio


@pytest.mark.skipif(not CHECKOUT.is_dir(), reason="not in the mfkit source checkout")
@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_package_copy_equals_the_checkout_recipe(shipped):
    assert shipped.read_text() == (CHECKOUT / shipped.name).read_text()
