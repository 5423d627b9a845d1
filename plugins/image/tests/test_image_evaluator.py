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


def test_latents_are_scored_unclamped_so_too_large_latents_lose(tmp_path):
    """Unit-variance latents lie partly outside [-1, 1]: clamping only the samples once made latents 2.5x
    too large score better than real ones (FD and MMD). The latent MMD is named for what it measures."""
    from safetensors.torch import save_file

    from mfkit_image.latent_modality import SPEC as LATENTS, LatentParams

    folder = tmp_path / "latents"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for k in range(3):
        labels = torch.arange(100) % 2
        latents = torch.randn(100, 2, 4, 4, generator=generator) + labels.view(-1, 1, 1, 1) * 0.5
        save_file({"latents": latents, "labels": labels}, str(folder / f"shard{k}.safetensors"))
    context = PluginContext(purpose="eval", cache_dir=tmp_path / "cache")
    modality = LATENTS.build(LatentParams(path=str(folder), val_fraction=0.5), context)
    evaluator = SPEC.build(ImageEvalParams(**{**QUICK, "steps": 60}), modality, context)
    assert evaluator.metrics == {"fd": "lower", "kid": "lower", "accuracy": "higher", "mmd_latents": "lower"}
    evaluator.fit(modality.dataset("train"))
    train, val = modality.dataset("train"), modality.dataset("val")
    real = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.stack([train[i][1] for i in range(len(train))])
    reference = torch.stack([val[i][0] for i in range(len(val))])
    assert float((reference.abs() > 1).double().mean()) > 0.2  # the case that clamping got wrong
    right = evaluator.score(real, labels, reference, None)
    too_large = evaluator.score(2.5 * real, labels, reference, None)
    assert too_large["fd"] > right["fd"] and too_large["mmd_latents"] > 5 * max(right["mmd_latents"], 1e-3)


def test_pixel_mmd_uses_a_random_subset_of_a_reference_stored_class_by_class(digits):
    """Held-out folders are stored class by class: the first max_pixels_items real images were the first
    classes only; the bandwidth is the median distance between different images (no zero diagonal)."""
    modality, context = digits
    evaluator = ImageEvaluator(ImageEvalParams(**QUICK, max_pixels_items=60), modality, context)
    val = modality.dataset("val")
    items = sorted((val[i] for i in range(len(val))), key=lambda item: int(item[1]))
    real = torch.stack([x for x, _ in items])
    labels = torch.stack([y for _, y in items])
    subset = evaluator._pixel_subset(real)
    assert len(subset) == 60 and len({int(labels[(real == x).flatten(1).all(1)][0]) for x in subset}) >= 8
    _, bandwidths, _ = evaluator._real_terms(real)
    pixels = subset.reshape(60, -1).double()
    distances = torch.cdist(pixels, pixels)
    apart = distances[~torch.eye(60, dtype=torch.bool)]
    assert bandwidths[1] == pytest.approx(float(apart.median()), rel=0.02)
