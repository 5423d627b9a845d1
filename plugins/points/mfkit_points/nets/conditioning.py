"""What both point backbones share: the conditioning vector c of (t, t - r) and the class, and adaLN.

c = TimePairEmbedding(r, t) + ClassEmbedding(label) (the null label ``num_classes`` for "no class").
Adaptive LayerNorm modulates features h (B, N, W) per sample: LN(h) * (1 + scale(c)) + shift(c).
"""
from __future__ import annotations

import torch
from torch import nn

from mfkit.nn import ConditionEmbedding, TimePairEmbedding, VectorConditionEmbedding
from mfkit.plugins import ClassCondition, DataInfo, VectorCondition


class Conditioning(nn.Module):
    """(r, t, cond) -> c (B, width): the sum of the time-pair embedding and the condition embedding."""

    def __init__(self, info: DataInfo, width: int, time_inputs: str = "t,t-r") -> None:
        super().__init__()
        self.time = TimePairEmbedding(width, inputs=time_inputs)
        self.cond: nn.Module | None = None
        if isinstance(info.condition, VectorCondition):
            self.cond = VectorConditionEmbedding(info.condition.dim, width)
        elif isinstance(info.condition, ClassCondition) or info.num_classes:
            self.cond = ConditionEmbedding(info.num_classes or len(info.condition.names), width)

    def forward(self, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, batch: int,
                device: torch.device) -> torch.Tensor:
        c = self.time(r, t)
        if self.cond is not None:
            c = c + self.cond(cond, batch, device)
        return c


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """h (B, N, W) * (1 + scale) + shift, with shift and scale (B, W) broadcast over the points."""
    return h * (1 + scale[:, None, :]) + shift[:, None, :]


def zero_linear(features_in: int, features_out: int) -> nn.Linear:
    """A linear layer that starts at zero (adaLN-Zero: each residual block starts as the identity)."""
    layer = nn.Linear(features_in, features_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def check_points_shape(info: DataInfo, name: str) -> tuple[int, int]:
    """(points, coordinates) of the sample shape, or a clear error for data that are not point sets."""
    if len(info.sample_shape) != 2:
        raise ValueError(f"backbone {name!r} takes point sets of shape (points, coordinates), got sample shape "
                         f"{info.sample_shape}; use it with the points modality")
    return info.sample_shape[0], info.sample_shape[1]
