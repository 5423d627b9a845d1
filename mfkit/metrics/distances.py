"""Distances between two sets of samples (N, ...) and (M, ...), flattened to vectors (N, D), (M, D).

All computations run in float64; large sets are processed in row chunks, so memory stays O(chunk x M).
"""
from __future__ import annotations

from typing import Sequence

import torch

from mfkit.metrics._util import distances, flat64, kernel_sums, squared_distances


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance: sqrt(mean over random unit directions of W2^2 of the 1-D projections).

    a and b are flattened to (N, D); the smaller set size is used (quantiles by sorting).
    """
    a, b = flat64(a), flat64(b)
    n = min(a.shape[0], b.shape[0])
    directions = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa = (a[:n] @ directions.to(a.device)).sort(dim=0).values
    pb = (b[:n] @ directions.to(b.device)).sort(dim=0).values
    return float((pa - pb).pow(2).mean().sqrt())


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


def mmd_unbiased(a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared MMD (U-statistic, Gretton et al. 2012) with the RBF mixture of :func:`rbf_mixture`:

        MMD_u^2 = sum_{i != j} k(a_i, a_j) / (n (n-1)) + sum_{i != j} k(b_i, b_j) / (m (m-1))
                  - 2 sum_{i, j} k(a_i, b_j) / (n m)

    Its expectation is the population MMD^2, so it is zero on average (and can be negative) when a and b
    come from one distribution. Needs at least two samples on each side.
    """
    a, b = flat64(a), flat64(b)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {n} and {m}")
    kernel = rbf_mixture(bandwidths)
    return float(kernel_sums(a, a, kernel, exclude_diagonal=True) / (n * (n - 1))
                 + kernel_sums(b, b, kernel, exclude_diagonal=True) / (m * (m - 1))
                 - 2 * kernel_sums(a, b, kernel) / (n * m))


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared energy distance (Székely and Rizzo) D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|, unbiased:
    within-set means leave out i == j. Zero in expectation for equal distributions, >= 0 otherwise.
    """
    a, b = flat64(a), flat64(b)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the energy distance needs at least 2 samples per set, got {n} and {m}")
    return float(2 * kernel_sums(a, b, distances) / (n * m)
                 - kernel_sums(a, a, distances, exclude_diagonal=True) / (n * (n - 1))
                 - kernel_sums(b, b, distances, exclude_diagonal=True) / (m * (m - 1)))
