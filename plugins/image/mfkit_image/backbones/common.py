"""Pieces both image backbones share: the embedding of (r, t) and the condition, and group counts."""
from __future__ import annotations

import torch
from torch import nn

from mfkit.nn import ConditionEmbedding, TimePairEmbedding, VectorConditionEmbedding
from mfkit.plugins import ClassCondition, DataInfo, VectorCondition


class Conditioning(nn.Module):
    """(r, t, cond) -> (B, dim): mfkit's (t, t - r) time embeddings plus the condition's embedding.

    ``time_scale`` multiplies each time before the sinusoid (1: raw t in [0, 1], as the paper's code).

    Class labels (B,) use :class:`mfkit.nn.ConditionEmbedding` (label ``num_classes`` is the null
    condition); vector conditions (B, n) :class:`mfkit.nn.VectorConditionEmbedding` (a NaN row is null).
    """

    def __init__(self, dim: int, info: DataInfo, time_inputs: str = "t,t-r", frequency_dim: int = 256,
                 time_scale: float = 1.0) -> None:
        super().__init__()
        self.time = TimePairEmbedding(dim, time_inputs, frequency_dim, time_scale)
        condition = info.condition
        if isinstance(condition, VectorCondition):
            self.cond: nn.Module | None = VectorConditionEmbedding(condition.dim, dim)
        elif info.num_classes or isinstance(condition, ClassCondition):
            self.cond = ConditionEmbedding(info.num_classes or len(condition.names), dim)
        elif condition is not None:
            raise ValueError(f"the image backbones take class or vector conditions, not {condition.kind!r} ones")
        else:
            self.cond = None

    @property
    def null_label(self) -> int | None:
        return self.cond.null_label if isinstance(self.cond, ConditionEmbedding) else None

    def forward(self, r: torch.Tensor, t: torch.Tensor, cond=None, batch: int = 0,
                device: torch.device | None = None) -> torch.Tensor:
        emb = self.time(r, t)
        if self.cond is not None:
            emb = emb + self.cond(cond, emb.shape[0], emb.device)
        return emb


def groups_for(channels: int, most: int = 32) -> int:
    """The largest group count <= ``most`` that divides ``channels`` with at least 4 channels per group."""
    for groups in (32, 16, 8, 4, 2, 1):
        if groups <= most and channels % groups == 0 and channels // groups >= 4:
            return groups
    return 1


def zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias (an output layer that starts as the identity of its residual)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module
