"""Normalisation, resampling and random rotations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mfkit_points.geometry import normalize, random_rotation_matrices, resample


def test_normalize_centres_in_the_unit_sphere_and_is_idempotent():
    points = np.random.default_rng(0).normal(size=(300, 3)) * [3.0, 1.0, 0.5] + [10.0, -2.0, 7.0]
    once = normalize(points)
    assert np.allclose(once.mean(axis=0), 0, atol=1e-5)
    assert np.isclose(np.linalg.norm(once, axis=1).max(), 1.0, atol=1e-6)
    assert np.allclose(normalize(once), once, atol=1e-6)


def test_resample_keeps_equal_counts_and_subsamples_or_repeats():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    assert resample(points, 50, rng) is points
    fewer = resample(points, 20, rng)
    assert fewer.shape == (20, 3) and len(np.unique(fewer, axis=0)) == 20
    more = resample(points, 80, rng)
    assert more.shape == (80, 3) and len(np.unique(more, axis=0)) == 50


@pytest.mark.parametrize("kind", ["none", "upright", "any"])
def test_rotations_are_proper(kind):
    matrices = random_rotation_matrices(64, kind, "y", torch.Generator().manual_seed(0))
    eye = torch.eye(3).expand(64, 3, 3)
    assert torch.allclose(matrices @ matrices.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(matrices), torch.ones(64), atol=1e-5)


def test_upright_rotations_keep_the_up_axis_and_any_rotations_do_not():
    up = torch.tensor([0.0, 1.0, 0.0])
    upright = random_rotation_matrices(32, "upright", "y", torch.Generator().manual_seed(0))
    assert torch.allclose(upright @ up, up.expand(32, 3), atol=1e-6)
    assert not torch.allclose(upright, torch.eye(3).expand(32, 3, 3))
    anywhere = random_rotation_matrices(32, "any", "y", torch.Generator().manual_seed(0))
    assert (anywhere @ up)[:, 1].min() < 0.5
