"""Kernel Inception Distance (Bińkowski et al. 2018) for any features: the unbiased squared MMD with
the cubic polynomial kernel k(x, y) = (x . y / D + 1)^3, averaged over random subsets."""
from __future__ import annotations

import torch

from mfkit.metrics._util import flat64


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0) -> torch.Tensor:
    """k(x, y) = (gamma x . y + coef)^degree for x (n, D), y (m, D) -> (n, m); gamma defaults to 1 / D."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * x @ y.T + coef) ** degree


def mmd2_unbiased_polynomial(x: torch.Tensor, y: torch.Tensor, degree: int = 3) -> float:
    """Unbiased MMD^2 with :func:`polynomial_kernel`: within-set sums leave out i == j."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x, degree), polynomial_kernel(y, y, degree), polynomial_kernel(x, y, degree)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int = 10, subset_size: int = 1000,
        generator: torch.Generator | None = None, degree: int = 3) -> tuple[float, float]:
    """KID between feature sets (N, D) and (M, D): mean and standard deviation over ``subsets`` random
    subsets of ``subset_size`` from each set (drawn without replacement; the size is capped by N and M).
    With subset_size >= N and M and subsets=1 it is the plain unbiased MMD^2 of the two sets."""
    a, b = flat64(features_a), flat64(features_b)
    size = min(subset_size, a.shape[0], b.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}")
    values = []
    for _ in range(subsets):
        pick_a = torch.randperm(a.shape[0], generator=generator)[:size].to(a.device)
        pick_b = torch.randperm(b.shape[0], generator=generator)[:size].to(b.device)
        values.append(mmd2_unbiased_polynomial(a[pick_a], b[pick_b], degree))
    result = torch.tensor(values, dtype=torch.float64)
    return float(result.mean()), float(result.std()) if subsets > 1 else 0.0
