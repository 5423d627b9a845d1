"""The linear (rectified-flow) path between data and noise."""
from __future__ import annotations

import torch

from mfkit.core.broadcast import expand_like


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = (1 - t) x + t e, with x, e of shape (B, ...) and t of shape (B,)."""
    t = expand_like(t, x).to(x.dtype)
    return (1 - t) * x + t * noise


def conditional_velocity(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = dz_t/dt = e - x, the velocity of the conditional path."""
    return noise - x
