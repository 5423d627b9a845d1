"""Fréchet distance between Gaussians fitted to two sets of features (FID's formula, any features).

    FD = |m1 - m2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})

The matrix square roots come from symmetric eigen-decompositions in float64 (negative eigenvalues from
rounding are set to zero), so the result is exact for positive semi-definite covariances and never
complex, unlike the usual scipy.linalg.sqrtm of the non-symmetric product S1 S2.
"""
from __future__ import annotations

import torch

from mfkit.metrics._util import flat64


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric positive semi-definite square root of a symmetric matrix (D, D), in float64."""
    matrix = matrix.to(torch.float64)
    matrix = (matrix + matrix.T) / 2
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, ...) flattened to (N, D), in float64."""
    x = flat64(features)
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {x.shape[0]}")
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def frechet_from_stats(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mean1, cov1) and N(mean2, cov2)."""
    mean1, mean2 = mean1.to(torch.float64).flatten(), mean2.to(torch.float64).flatten()
    cov1, cov2 = cov1.to(torch.float64), cov2.to(torch.float64)
    if cov1.shape != cov2.shape or cov1.shape != (mean1.numel(), mean1.numel()) or mean1.shape != mean2.shape:
        raise ValueError(f"mismatched shapes: means {tuple(mean1.shape)}, {tuple(mean2.shape)}; covariances "
                         f"{tuple(cov1.shape)}, {tuple(cov2.shape)}")
    root1 = sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mean1 - mean2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D) (FID with your features)."""
    return frechet_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))
