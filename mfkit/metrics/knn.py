"""Improved precision and recall (Kynkäänniemi et al. 2019) from k-nearest-neighbour balls.

Each real sample r_i gets the radius rho_i = distance to its k-th nearest other real sample; the union of
the balls B(r_i, rho_i) estimates the real manifold. Likewise for generated samples. Then

    precision = share of generated samples inside some real ball   (are samples realistic?)
    recall    = share of real samples inside some generated ball   (is the data covered?)
"""
from __future__ import annotations

import torch

from mfkit.metrics._util import CHUNK, distances, flat64, squared_distances


def knn_radii(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance from each row of x (N, D) to its k-th nearest other row (N,)."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be in 1..{x.shape[0] - 1} for {x.shape[0]} samples, got {k}")
    radii = []
    for start in range(0, x.shape[0], CHUNK):
        d2 = squared_distances(x[start:start + CHUNK], x)
        # the k+1 smallest include the point itself (distance 0)
        radii.append(d2.topk(k + 1, dim=1, largest=False).values[:, k].sqrt())
    return torch.cat(radii)


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(P,) bool: whether each point lies within distance radii[j] of some centre j (boundary included)."""
    inside = []
    for start in range(0, points.shape[0], CHUNK):
        d = distances(points[start:start + CHUNK], centres)
        inside.append((d <= radii[None]).any(dim=1))
    return torch.cat(inside)


def knn_precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated samples (N, ...) against real ones (M, ...), features flattened."""
    g, r = flat64(generated), flat64(real)
    precision = _inside_any_ball(g, r, knn_radii(r, k)).double().mean()
    recall = _inside_any_ball(r, g, knn_radii(g, k)).double().mean()
    return float(precision), float(recall)
