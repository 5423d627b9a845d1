"""Shared helpers: flattening sets to (N, D) float64 and chunked sums of pairwise kernels."""
from __future__ import annotations

from typing import Callable

import torch

#: Rows per chunk when a full (N, M) matrix would be large.
CHUNK = 512


def flat64(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, D) float64 on the CPU or the tensor's device."""
    if x.ndim == 0:
        raise ValueError("a set of samples needs a batch dimension, got a scalar")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def kernel_sums(x: torch.Tensor, y: torch.Tensor, kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                exclude_diagonal: bool = False) -> torch.Tensor:
    """sum_{i, j} k(x_i, y_j), computed in row chunks; ``exclude_diagonal`` drops i == j (x is y).

    ``kernel(a (n, D), b (m, D)) -> (n, m)``. Returns a float64 scalar tensor.
    """
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], CHUNK):
        block = kernel(x[start:start + CHUNK], y)
        total = total + block.sum()
        if exclude_diagonal:
            rows = torch.arange(block.shape[0], device=x.device)
            total = total - block[rows, rows + start].sum()
    return total


def distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i - b_j| (n, m) for a (n, D), b (m, D)."""
    return torch.cdist(a, b)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i - b_j|^2 (n, m) for a (n, D), b (m, D)."""
    return torch.cdist(a, b).pow(2)
