"""Rank-generic broadcasting of per-sample scalars, and a check for shapes that broadcast by accident."""
from __future__ import annotations

import torch


def expand_like(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View per-sample values of shape (B,) as (B, 1, ..., 1) so they broadcast against ``like``.

    Works for data of any rank: (B, D), (B, C, H, W), (B, N, 3), ...
    """
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def sum_non_batch(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def broadcasts_to(shape: tuple[int, ...] | torch.Size, target: tuple[int, ...] | torch.Size) -> bool:
    """True when a tensor of ``shape`` broadcasts to ``target`` (a wrong output shape the loss would hide)."""
    try:
        return tuple(torch.broadcast_shapes(shape, target)) == tuple(target)
    except RuntimeError:
        return False
