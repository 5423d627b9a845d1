"""Distances between sample sets: brute-force formulas, closed forms for Gaussians, unbiasedness."""
import math

import pytest
import torch

from mfkit.data.toy2d import TOY_DISTRIBUTIONS, toy_sample, toy_sample_labeled
from mfkit.metrics import (energy_distance, energy_within, mmd_rbf, mmd_unbiased, mmd_within, sliced_wasserstein,
                           wasserstein_1d_sorted)


def test_distances_grow_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 2, generator=g)
    assert sliced_wasserstein(a, a) < 1e-9 and abs(mmd_rbf(a[:500], a[:500])) < 1e-9
    near = [sliced_wasserstein(a, a + shift, generator=torch.Generator().manual_seed(1)) for shift in (0.1, 0.5, 1.0)]
    assert near[0] < near[1] < near[2]
    # Shifting every point by d = (s, s): each projection moves by d . theta, and the mean of
    # (d . theta)^2 over unit directions in 2-D is |d|^2 / 2 = s^2, so the distance is about s.
    assert abs(near[2] - 1.0) < 0.05
    assert mmd_rbf(a[:500], a[:500] + 0.1) < mmd_rbf(a[:500], a[:500] + 1.0)


def test_sliced_wasserstein_in_one_dimension_is_the_gaussian_w2():
    # On exact normal quantiles q_i, W2^2(m1 + s1 q, m2 + s2 q) = (m1 - m2)^2 + (s1 - s2)^2 mean(q^2)
    # (mean(q) = 0 by symmetry); in 1-D every direction is +-1, so sliced W2 equals it.
    n = 5000
    q = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    a, b = (0.0 + 1.0 * q)[:, None], (0.5 + 1.5 * q)[:, None]
    expected = math.sqrt(0.25 + 0.25 * float(q.pow(2).mean()))
    assert sliced_wasserstein(a, b[torch.randperm(n)], projections=8) == pytest.approx(expected, rel=1e-9)


def test_one_dimensional_w2_of_sets_of_different_sizes_is_exact():
    # On L = lcm(n, m) equal slices of [0, 1] both quantile functions are constant: the exact integral.
    g = torch.Generator().manual_seed(5)
    a = torch.randn(6, 3, generator=g, dtype=torch.float64).sort(0).values
    b = (torch.randn(4, 3, generator=g, dtype=torch.float64) + 1).sort(0).values
    u = (torch.arange(12, dtype=torch.float64) + 0.5) / 12
    expected = (a[(u * 6).long()] - b[(u * 4).long()]).pow(2).mean(0)
    assert torch.allclose(wasserstein_1d_sorted(a, b), expected, rtol=1e-12)
    assert torch.allclose(wasserstein_1d_sorted(a, a), torch.zeros(3, dtype=torch.float64))
    # a set against its own points repeated is at distance zero
    assert sliced_wasserstein(a, a.repeat(3, 1), projections=16) < 1e-12


def test_reference_terms_can_be_computed_once():
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(50, 2, generator=g), torch.randn(80, 2, generator=g)
    assert mmd_unbiased(x, y, within_b=mmd_within(y)) == pytest.approx(mmd_unbiased(x, y), rel=1e-12)
    assert energy_distance(x, y, within_b=energy_within(y)) == pytest.approx(energy_distance(x, y), rel=1e-12)


def _rbf(u, v, h):
    return math.exp(-float((u - v).pow(2).sum()) / (2 * h * h))


def test_unbiased_mmd_and_energy_distance_match_brute_force():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(9, 3, generator=g, dtype=torch.float64) + 0.4
    widths = (0.5, 2.0)
    k = lambda u, v: sum(_rbf(u, v, h) for h in widths)  # noqa: E731
    n, m = len(x), len(y)
    pairs = lambda a, b, skip: [(i, j) for i in range(len(a)) for j in range(len(b)) if not (skip and i == j)]  # noqa: E731
    mmd = (sum(k(x[i], x[j]) for i, j in pairs(x, x, True)) / (n * (n - 1))
           + sum(k(y[i], y[j]) for i, j in pairs(y, y, True)) / (m * (m - 1))
           - 2 * sum(k(x[i], y[j]) for i, j in pairs(x, y, False)) / (n * m))
    assert mmd_unbiased(x, y, widths) == pytest.approx(mmd, rel=1e-9)
    dist = lambda u, v: float((u.double() - v.double()).norm())  # noqa: E731
    energy = (2 * sum(dist(x[i], y[j]) for i, j in pairs(x, y, False)) / (n * m)
              - sum(dist(x[i], x[j]) for i, j in pairs(x, x, True)) / (n * (n - 1))
              - sum(dist(y[i], y[j]) for i, j in pairs(y, y, True)) / (m * (m - 1)))
    assert energy_distance(x, y) == pytest.approx(energy, rel=1e-9)


def test_unbiased_estimators_are_zero_in_expectation_and_the_biased_one_is_not():
    g = torch.Generator().manual_seed(2)
    draws = [(torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g)) for _ in range(200)]
    for estimator, biased in ((mmd_unbiased, False), (energy_distance, False), (mmd_rbf, True)):
        values = torch.tensor([estimator(x, y) for x, y in draws], dtype=torch.float64)
        standard_error = float(values.std()) / math.sqrt(len(values))
        if biased:
            assert float(values.mean()) > 10 * standard_error  # the V-statistic's positive bias
        else:
            assert abs(float(values.mean())) < 3.5 * standard_error


def _e_abs(mu: float, s: float) -> float:
    """E|Z| for Z ~ N(mu, s^2)."""
    return s * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * s * s)) + mu * math.erf(mu / (s * math.sqrt(2)))


def test_mmd_and_energy_distance_match_closed_forms_for_1d_gaussians():
    m1, s1, m2, s2, h = 0.0, 1.0, 0.5, 1.5, 0.5
    # E exp(-(X - Y)^2 / 2h^2) with X - Y ~ N(d, v): h / sqrt(h^2 + v) exp(-d^2 / (2 (h^2 + v)))
    expect = lambda v, d: h / math.sqrt(h * h + v) * math.exp(-d * d / (2 * (h * h + v)))  # noqa: E731
    mmd = expect(2 * s1**2, 0) + expect(2 * s2**2, 0) - 2 * expect(s1**2 + s2**2, m1 - m2)
    energy = 2 * _e_abs(m1 - m2, math.hypot(s1, s2)) - _e_abs(0, s1 * math.sqrt(2)) - _e_abs(0, s2 * math.sqrt(2))
    # Exact normal quantiles stand in for samples: the U-statistics become quadratures of the
    # population integrals, off by O(1/n) (1.5% and 0.9% at n = 2000) instead of O(1/sqrt(n)) noise.
    n = 2000
    q = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)[:, None]
    x, y = m1 + s1 * q, m2 + s2 * q
    assert mmd_unbiased(x, y, (h,)) == pytest.approx(mmd, rel=0.03)
    assert energy_distance(x, y) == pytest.approx(energy, rel=0.02)


def test_toy_distributions_are_seeded_and_labelled():
    for name in TOY_DISTRIBUTIONS:
        x1 = toy_sample(name, 100, torch.Generator().manual_seed(3))
        x2, labels = toy_sample_labeled(name, 100, torch.Generator().manual_seed(3))
        assert torch.equal(x1, x2) and x1.shape == (100, 2) and labels.shape == (100,)
        assert x1.abs().max() < 6
