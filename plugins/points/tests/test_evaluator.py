"""The points evaluator: set metrics against held-out clouds and the locally trained classifier."""
from __future__ import annotations

import math

import pytest
import torch

from mfkit.evaluation import check_evaluator_spec
from mfkit.plugins import PluginContext
from mfkit_points.evaluator import SPEC, PointsEvalParams
from tests_support import build, stack

SMALL = {"num_points": 48, "corpus_train_per_class": 16, "corpus_val_per_class": 4}
EVAL = {"classifier_steps": 150, "classifier_points": 48}


@pytest.fixture(scope="module")
def shared_context(tmp_path_factory) -> PluginContext:
    """One cache for the module: the corpus and the classifier are made once for all its tests."""
    return PluginContext(purpose="test", cache_dir=tmp_path_factory.mktemp("evaluator-cache"))


@pytest.fixture
def setup(shared_context):
    modality = build(SMALL, shared_context)
    evaluator = SPEC.build(PointsEvalParams(**EVAL), modality, shared_context)
    evaluator.fit(modality.dataset("train"))
    return modality, evaluator


def test_scores_real_held_out_clouds_and_knows_their_classes(setup):
    modality, evaluator = setup
    real, labels = stack(modality.dataset("val"))
    train, train_labels = stack(modality.dataset("train"))
    scores = evaluator.score(train[:len(real)], train_labels[:len(real)], real, labels)
    assert set(scores) == set(evaluator.metrics)
    assert 0 < scores["mmd_cd"] < 0.2 and 0 < scores["cov_cd"] <= 1 and 0 <= scores["1nna_cd"] <= 1
    assert evaluator.score(real, labels, real, labels)["class_accuracy"] >= 0.6  # chance: 1/7
    wrong = (labels + 1) % 7
    assert evaluator.score(real, wrong, real, labels)["class_accuracy"] <= 0.4


def test_noise_scores_far_worse_than_real_clouds(setup):
    modality, evaluator = setup
    real, labels = stack(modality.dataset("val"))
    train, train_labels = stack(modality.dataset("train"))
    floor = evaluator.score(train[:len(real)], train_labels[:len(real)], real, labels)
    noise = evaluator.score(torch.randn_like(real) * 0.5, labels, real, labels)
    assert noise["1nna_cd"] > floor["1nna_cd"] + 0.2 and noise["mmd_cd"] > 2 * floor["mmd_cd"]


def test_per_class_accuracy_is_nan_for_classes_without_samples(setup):
    modality, evaluator = setup
    real, labels = stack(modality.dataset("val"))
    only_boxes = labels == 0
    scores = evaluator.score(real[only_boxes], labels[only_boxes], real, labels)
    assert not math.isnan(scores["accuracy_box"]) and math.isnan(scores["accuracy_torus"])
    assert scores["worst_class_accuracy"] == scores["accuracy_box"]


def test_null_labels_count_in_no_accuracy(setup):
    """Unconditional samples of a conditional model (`mfkit eval --cond null`) carry the null label: they
    are left out of every accuracy (once counted as misses), and all-null gives NaN (once a crash)."""
    modality, evaluator = setup
    real, labels = stack(modality.dataset("val"))
    null = modality.condition().null(len(real))
    right = evaluator.score(real, labels, real, labels)
    half = torch.where(torch.arange(len(real)) % 2 == 0, labels, null)
    mixed = evaluator.score(real, half, real, labels)
    asked = evaluator.score(real[::2], labels[::2], real, labels)
    assert mixed["class_accuracy"] == pytest.approx(asked["class_accuracy"]) and right["class_accuracy"] >= 0.6
    assert mixed["worst_class_accuracy"] == pytest.approx(asked["worst_class_accuracy"])
    unconditional = evaluator.score(real, null, real, labels)
    assert math.isnan(unconditional["class_accuracy"]) and math.isnan(unconditional["worst_class_accuracy"])
    assert unconditional["mmd_cd"] == pytest.approx(right["mmd_cd"])  # the set metrics are unaffected


def test_many_classes_get_overall_and_worst_class_accuracy_only(shared_context):
    modality = build(SMALL, shared_context)
    evaluator = SPEC.build(PointsEvalParams(per_class=False, **EVAL), modality, shared_context)
    assert set(evaluator.metrics) == {"mmd_cd", "cov_cd", "1nna_cd", "class_accuracy", "worst_class_accuracy"}


def test_the_classifier_is_cached_even_with_rotation_augmentation(context, private_cache):
    modality = build({**SMALL, "augment_rotation": "upright"}, context)
    evaluator = SPEC.build(PointsEvalParams(classifier_steps=5), modality, context)
    evaluator.fit(modality.dataset("train"))
    cached = sorted((private_cache / "feature-nets").glob("points-classifier-*.safetensors"))
    assert len(cached) == 1
    first = cached[0].stat().st_mtime_ns
    SPEC.build(PointsEvalParams(classifier_steps=5), modality, context).fit(modality.dataset("train"))
    assert sorted((private_cache / "feature-nets").glob("*.safetensors")) == cached
    assert cached[0].stat().st_mtime_ns == first


def test_evaluator_contract(shared_context):
    modality = build(SMALL, shared_context)
    figures = check_evaluator_spec(SPEC, modality, shared_context, {**EVAL, "per_class": False}, items=14)
    assert figures["noise"]["1nna_cd"] > figures["real"]["1nna_cd"]


def test_without_the_classifier_only_set_metrics(shared_context):
    modality = build(SMALL, shared_context)
    evaluator = SPEC.build(PointsEvalParams(classifier=False), modality, shared_context)
    real, labels = stack(modality.dataset("val"))
    assert set(evaluator.metrics) == set(evaluator.score(real, labels, real, labels)) == {"mmd_cd", "cov_cd", "1nna_cd"}
