"""Fréchet distance against closed forms for Gaussians; KID against the brute-force U-statistic."""
import math

import pytest
import torch

from mfkit.metrics import frechet_distance, frechet_from_stats, gaussian_stats, kid, sqrtm_psd


def _rotation(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_commuting_covariances_have_the_closed_form():
    # S1 = Q D1 Q^T, S2 = Q D2 Q^T commute: FD = |m1 - m2|^2 + sum_i (sqrt d1_i - sqrt d2_i)^2
    d1 = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    d2 = torch.tensor([1.0, 0.25, 2.0, 9.0], dtype=torch.float64)
    m1 = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64)
    m2 = torch.tensor([1.0, 1.0, 0.5, 2.0], dtype=torch.float64)
    expected = float((m1 - m2).pow(2).sum() + (d1.sqrt() - d2.sqrt()).pow(2).sum())
    assert frechet_from_stats(m1, torch.diag(d1), m2, torch.diag(d2)) == pytest.approx(expected, rel=1e-12)
    q = _rotation(4, 0)
    rotated = frechet_from_stats(q @ m1, q @ torch.diag(d1) @ q.T, q @ m2, q @ torch.diag(d2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-10)


def test_non_commuting_2x2_covariances_have_the_closed_form():
    # For 2x2 PSD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); with M = S1^1/2 S2 S1^1/2,
    # tr M = tr(S1 S2) and det M = det S1 det S2.
    s1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    cross = math.sqrt(float(torch.trace(s1 @ s2)) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2))))
    expected = 1.0 + float(torch.trace(s1) + torch.trace(s2)) - 2 * cross
    m1, m2 = torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert frechet_from_stats(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-12)


def test_square_root_and_singular_covariances():
    a = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cov = a @ a.T  # rank 3 of 5
    root = sqrtm_psd(cov)
    assert torch.allclose(root @ root, cov, atol=1e-10) and torch.allclose(root, root.T)
    mean = torch.zeros(5, dtype=torch.float64)
    # eigenvalues at zero come out as +-1e-16, whose square roots are 1e-8
    assert abs(frechet_from_stats(mean, cov, mean, cov)) < 1e-6


def test_frechet_distance_of_features_matches_their_gaussians():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(20_000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(20_000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + 1.0
    mean_a, cov_a = gaussian_stats(a)
    assert torch.allclose(cov_a, torch.cov(a.T)) and torch.allclose(mean_a, a.mean(0))
    assert frechet_distance(a, b) == pytest.approx(frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b)))
    # population value: |(1,1,1)|^2 + (1-1)^2 + (1-2)^2 + (1-0.5)^2 = 3 + 1.25
    assert frechet_distance(a, b) == pytest.approx(4.25, abs=0.06)


def _brute_force_mmd2_polynomial(x, y):
    d = x.shape[1]
    k = lambda u, v: (float(u @ v) / d + 1.0) ** 3  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.randn(9, 4, generator=g, dtype=torch.float64) + 0.5
    mean, std = kid(x, y, subsets=1, subset_size=100)
    assert mean == pytest.approx(_brute_force_mmd2_polynomial(x, y), rel=1e-10) and std == 0.0
    # subsets: the mean over the same subsets, drawn with the same generator
    mean, std = kid(x, y, subsets=3, subset_size=5, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    values = []
    for _ in range(3):
        ia, ib = torch.randperm(9, generator=g)[:5], torch.randperm(9, generator=g)[:5]
        values.append(_brute_force_mmd2_polynomial(x[ia], y[ib]))
    assert mean == pytest.approx(sum(values) / 3, rel=1e-10)
    assert std == pytest.approx(float(torch.tensor(values, dtype=torch.float64).std()), rel=1e-8)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    same, _ = kid(x, y, subsets=5, subset_size=1000, generator=g)
    shifted, _ = kid(x, y + 0.3, subsets=5, subset_size=1000, generator=g)
    assert abs(same) < 0.01 < shifted
