"""A generic MLP backbone for flat vectors (or any shape, flattened): the toy-data and test workhorse."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mfkit.nn.embeddings import ConditionEmbedding, TimePairEmbedding, VectorConditionEmbedding


class ResidualBlock(nn.Module):
    """h + Linear(SiLU(LayerNorm(h)))."""

    def __init__(self, width: int, norm: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(nn.functional.silu(self.norm(h)))


class MLPBackbone(nn.Module):
    """u(z, r, t, cond) for data of shape (B, *data_shape), flattened to (B, D).

    h = Linear(z) + emb(t, t - r) [+ emb(cond)]; ``depth`` residual blocks of ``width``;
    u = Linear(SiLU(h)) reshaped to z's shape. ``num_classes`` adds a condition embedding with a null
    label (= num_classes) for classifier-free guidance; ``vector_dim`` instead embeds continuous
    conditions (B, vector_dim) whose null value is a row of NaN.
    """

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        width: int = 256,
        depth: int = 4,
        num_classes: int | None = None,
        time_inputs: str = "t,t-r",
        norm: bool = True,
        vector_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
        dim = math.prod(self.data_shape)
        self.inp = nn.Linear(dim, width)
        self.time = TimePairEmbedding(width, time_inputs)
        if num_classes and vector_dim:
            raise ValueError("give num_classes (class labels) or vector_dim (continuous conditions), not both")
        self.cond = ConditionEmbedding(num_classes, width) if num_classes else None
        if vector_dim:
            self.cond = VectorConditionEmbedding(vector_dim, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, norm) for _ in range(depth)))
        self.out = nn.Linear(width, dim)

    @property
    def null_label(self) -> int | None:
        return self.cond.null_label if isinstance(self.cond, ConditionEmbedding) else None

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(z.reshape(z.shape[0], -1)) + self.time(r, t)
        if self.cond is not None:
            h = h + self.cond(cond, z.shape[0], z.device)
        u = self.out(nn.functional.silu(self.blocks(h)))
        return u.reshape(z.shape)
