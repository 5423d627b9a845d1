"""The image evaluator: mfkit's evaluator contract, accuracy that follows the labels, the autoencoder mode."""
from __future__ import annotations

import pytest
import torch

from mfkit.evaluation import check_evaluator_spec
from mfkit.plugins import PluginContext
from mfkit_image.evaluator import SPEC, ImageEvalParams, ImageEvaluator
from mfkit_image.modality import SPEC as MODALITY, ImageParams

from image_testutil import write_picture

QUICK = {"steps": 150, "width": 8, "feature_dim": 16, "kid_subsets": 3}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    context = PluginContext(purpose="eval", cache_dir=tmp_path_factory.mktemp("cache"))
    return MODALITY.build(ImageParams(), context), context


def test_contract_on_digits(digits):
    modality, context = digits
    figures = check_evaluator_spec(SPEC, modality, context, QUICK, items=120)
    assert set(figures["real"]) == {"fd", "kid", "accuracy", "mmd_pixels"}
    assert figures["real"]["accuracy"] > 0.7 and figures["noise"]["accuracy"] < 0.4
    assert figures["noise"]["fd"] > 3 * figures["real"]["fd"]


def test_accuracy_follows_the_requested_labels_and_cache_is_used(digits):
    modality, context = digits
    evaluator = ImageEvaluator(ImageEvalParams(**QUICK), modality, context)
    evaluator.fit(modality.dataset("train"))  # cached by the contract test: loaded, not trained
    val = modality.dataset("val")
    x = torch.stack([val[i][0] for i in range(200)])
    labels = torch.stack([val[i][1] for i in range(200)])
    right = evaluator.accuracy(x, labels)
    wrong = evaluator.accuracy(x, (labels + 1) % 10)
    assert right > 0.7 and wrong < 0.2
    assert evaluator.accuracy(x, torch.full((200,), 10)) != evaluator.accuracy(x, torch.full((200,), 10))  # NaN
    assert len(list((context.cache_dir / "feature-nets").glob("image-features-*.safetensors"))) == 1


def test_unlabelled_images_use_an_autoencoder(tmp_path):
    for i in range(24):
        write_picture(tmp_path / "flat" / f"{i}.png", size=(8, 8), color=(20 * (i % 8), 90, 200 - 20 * (i % 8)))
    context = PluginContext(purpose="eval", cache_dir=tmp_path / "cache")
    modality = MODALITY.build(ImageParams(source="folder", path=str(tmp_path / "flat"), resolution=8,
                                          val_fraction=0.5), context)
    figures = check_evaluator_spec(SPEC, modality, context, {**QUICK, "steps": 60}, items=6)
    assert set(figures["real"]) == {"fd", "kid", "mmd_pixels"}
