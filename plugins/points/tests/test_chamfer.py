"""The plugin's fast Chamfer matrix agrees with mfkit.metrics.chamfer_distance (the float64 reference)."""
from __future__ import annotations

import torch

from mfkit.metrics import chamfer_distance
from mfkit_points.chamfer import chamfer_matrix


def test_matches_mfkit_chamfer_distance_in_every_chunking():
    generator = torch.Generator().manual_seed(0)
    a, b = 0.5 * torch.randn(5, 40, 3, generator=generator), 0.5 * torch.randn(4, 30, 3, generator=generator)
    reference = chamfer_distance(a, b).float()
    assert torch.allclose(chamfer_matrix(a, b), reference, atol=1e-6)
    assert torch.allclose(chamfer_matrix(a, b, budget=1), reference, atol=1e-6)  # one pair per chunk


def test_a_set_against_itself_is_symmetric_with_a_zero_diagonal():
    a = 0.5 * torch.randn(6, 32, 3, generator=torch.Generator().manual_seed(1))
    square = chamfer_matrix(a)
    assert torch.equal(square, square.T) and torch.all(square.diagonal() == 0)
    assert torch.allclose(square, chamfer_distance(a, a).float().fill_diagonal_(0), atol=1e-6)


def test_known_value_of_a_lifted_flat_cloud():
    a = torch.randn(1, 50, 3)
    a[..., 2] = 0  # lifted off its plane by h, each point's nearest is its own copy, at h
    assert torch.allclose(chamfer_matrix(a, a + torch.tensor([0.0, 0.0, 0.3])), torch.tensor([[2 * 0.09]]))
