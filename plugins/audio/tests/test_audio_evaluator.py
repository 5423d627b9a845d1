"""The digit-classifier evaluator: mfkit's evaluator contract, accuracy that follows the labels, baselines."""
from __future__ import annotations

import pytest
import torch

from mfkit.evaluation import check_evaluator_spec
from mfkit_audio.evaluator import SPEC, DigitClassifierEvaluator, DigitClassifierParams
from mfkit_audio.modality import SpeechModality, SpeechParams

from audio_testutil import SMALL

FAST = {"steps": 40, "batch_size": 16, "width": 8}


@pytest.fixture
def speech(tone_folder, context) -> SpeechModality:
    return SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder), val_fraction=0.3, griffin_lim_iters=8), context)


def test_meets_the_evaluator_contract(speech, context):
    result = check_evaluator_spec(SPEC, speech, context, FAST, items=8)
    assert result["real"]["accuracy"] == 1.0 and result["noise"]["frechet"] > result["real"]["frechet"]


def test_accuracy_follows_the_conditions_and_baselines_are_reported(speech, context):
    evaluator = DigitClassifierEvaluator(DigitClassifierParams(**FAST), speech, context)
    evaluator.fit(speech.dataset("train"))
    val = speech.dataset("val")
    x = torch.stack([val[i][0] for i in range(len(val))])
    labels = torch.stack([val[i][1] for i in range(len(val))])
    assert evaluator.score(x, labels, x, labels)["accuracy"] == 1.0
    assert evaluator.score(x, 1 - labels, x, labels)["accuracy"] == 0.0  # two classes: every label swapped
    null = speech.condition().null(len(x))  # unconditional samples (mfkit eval --cond null): no class asked
    half = torch.where(torch.arange(len(x)) % 2 == 0, labels, null)
    assert evaluator.score(x, half, x, labels)["accuracy"] == 1.0  # the null half left out, not counted wrong
    nan = evaluator.score(x, null, x, labels)["accuracy"]
    assert nan != nan
    heard = DigitClassifierEvaluator(DigitClassifierParams(**FAST, through_vocoder=True), speech, context)
    heard.fit(speech.dataset("train"))
    baselines = heard.baselines(x, labels)
    assert set(baselines) == {"real", "vocoded real"}
    assert baselines["real"] == evaluator.baselines(x, labels)["real"]  # the real row is never vocoded
    assert baselines["vocoded real"]["frechet"] != baselines["real"]["frechet"]
    assert baselines["vocoded real"]["accuracy"] >= 0.5  # tones survive Griffin-Lim


def test_needs_labels(tone_folder, context):
    unlabelled = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder), label_from="none"), context)
    with pytest.raises(ValueError, match="needs class labels"):
        DigitClassifierEvaluator(DigitClassifierParams(), unlabelled, context)
