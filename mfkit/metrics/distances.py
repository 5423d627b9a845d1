"""Distances between two sets of samples (N, ...) and (M, ...), flattened to vectors (N, D), (M, D).

All computations run in float64; large sets are processed in row chunks, so memory stays O(chunk x M).
"""
from __future__ import annotations

from typing import Sequence

import torch

from mfkit.metrics._util import distances, flat64, kernel_sums, squared_distances


def wasserstein_1d_sorted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact W2^2 between the empirical measures of sorted columns a (n, K) and b (m, K) -> (K,).

    W2^2 = integral_0^1 (F_a^-1(u) - F_b^-1(u))^2 du, the quantile functions being step functions with
    steps at i/n and j/m; for n == m it is mean((a - b)^2).
    """
    n, m = a.shape[0], b.shape[0]
    if n == m:
        return (a - b).pow(2).mean(0)
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    levels = levels.unique()  # sorted; ends at 1
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    middle = (levels - widths / 2).to(a.device)
    index_a = (middle * n).floor().long().clamp(max=n - 1)
    index_b = (middle * m).floor().long().clamp(max=m - 1)
    return ((a[index_a] - b[index_b]).pow(2) * widths.to(a.device)[:, None]).sum(0)


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance: sqrt(mean over random unit directions of W2^2 of the 1-D projections).

    a (N, ...) and b (M, ...) are flattened to vectors; the 1-D distances are exact between the empirical
    measures (all points of both sets are used, N and M may differ).
    """
    a, b = flat64(a), flat64(b)
    directions = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa = (a @ directions.to(a.device)).sort(dim=0).values
    pb = (b @ directions.to(b.device)).sort(dim=0).values
    return float(wasserstein_1d_sorted(pa, pb).mean().sqrt())


def rbf_mixture(bandwidths: Sequence[float]):
    """The kernel k(x, y) = sum_h exp(-|x - y|^2 / (2 h^2)) as a function of two sets -> (n, m)."""
    widths = tuple(float(h) for h in bandwidths)
    if not widths or min(widths) <= 0:
        raise ValueError(f"bandwidths must be positive, got {bandwidths!r}")

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = squared_distances(x, y)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in widths)

    return kernel


def mmd_rbf(a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)) -> float:
    """Biased (V-statistic) squared MMD with a sum of Gaussian kernels exp(-|x - y|^2 / (2 h^2)).

    Kept for its existing users; :func:`mmd_unbiased` is zero in expectation for equal distributions.
    """
    a, b = flat64(a), flat64(b)
    kernel = rbf_mixture(bandwidths)
    n, m = a.shape[0], b.shape[0]
    return float(kernel_sums(a, a, kernel) / n**2 + kernel_sums(b, b, kernel) / m**2
                 - 2 * kernel_sums(a, b, kernel) / (n * m))


def mmd_within(b: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.5, 1.0, 2.0)) -> float:
    """The within-set term sum_{i != j} k(b_i, b_j) / (m (m-1)) of :func:`mmd_unbiased` (to reuse for a fixed b)."""
    b = flat64(b)
    m = b.shape[0]
    if m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m}")
    return float(kernel_sums(b, b, rbf_mixture(bandwidths), exclude_diagonal=True) / (m * (m - 1)))


def mmd_unbiased(a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.5, 1.0, 2.0), *,
                 within_b: float | None = None) -> float:
    """Unbiased squared MMD (U-statistic, Gretton et al. 2012) with the RBF mixture of :func:`rbf_mixture`:

        MMD_u^2 = sum_{i != j} k(a_i, a_j) / (n (n-1)) + sum_{i != j} k(b_i, b_j) / (m (m-1))
                  - 2 sum_{i, j} k(a_i, b_j) / (n m)

    Its expectation is the population MMD^2, so it is zero on average (and can be negative) when a and b
    come from one distribution. Needs at least two samples on each side. ``within_b``: the second term,
    from :func:`mmd_within` (b fixed across calls: a reference set).
    """
    a, b = flat64(a), flat64(b)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {n} and {m}")
    kernel = rbf_mixture(bandwidths)
    within_b = mmd_within(b, bandwidths) if within_b is None else within_b
    return float(kernel_sums(a, a, kernel, exclude_diagonal=True) / (n * (n - 1)) + within_b
                 - 2 * kernel_sums(a, b, kernel) / (n * m))


def energy_within(b: torch.Tensor) -> float:
    """The within-set term mean_{i != j} |b_i - b_j| of :func:`energy_distance` (to reuse for a fixed b)."""
    b = flat64(b)
    m = b.shape[0]
    if m < 2:
        raise ValueError(f"the energy distance needs at least 2 samples per set, got {m}")
    return float(kernel_sums(b, b, distances, exclude_diagonal=True) / (m * (m - 1)))


def energy_distance(a: torch.Tensor, b: torch.Tensor, *, within_b: float | None = None) -> float:
    """Squared energy distance (Székely and Rizzo) D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|, unbiased:
    within-set means leave out i == j. Zero in expectation for equal distributions, >= 0 otherwise.
    ``within_b``: E|Y - Y'| from :func:`energy_within` (b fixed across calls).
    """
    a, b = flat64(a), flat64(b)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the energy distance needs at least 2 samples per set, got {n} and {m}")
    within_b = energy_within(b) if within_b is None else within_b
    return float(2 * kernel_sums(a, b, distances) / (n * m)
                 - kernel_sums(a, a, distances, exclude_diagonal=True) / (n * (n - 1)) - within_b)
