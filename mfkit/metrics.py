"""Distances between two point clouds (N, D) and (M, D), for judging samples against fresh data."""
from __future__ import annotations

import torch


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance: sqrt(mean over random unit directions of W2^2 of the 1-D projections).

    a and b are flattened to (N, D); the smaller set size is used (quantiles by sorting).
    """
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    n = min(a.shape[0], b.shape[0])
    directions = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa = (a[:n] @ directions).sort(dim=0).values
    pb = (b[:n] @ directions).sort(dim=0).values
    return float((pa - pb).pow(2).mean().sqrt())


def mmd_rbf(a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)) -> float:
    """Biased squared maximum mean discrepancy with a sum of Gaussian kernels exp(-|x - y|^2 / (2 h^2))."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()

    def kernel(x, y):
        d2 = torch.cdist(x, y).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    return float(kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean())
