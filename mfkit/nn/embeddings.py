"""Embeddings of the two times and of the condition.

The backbone convention is ``model(z, r, t, cond=None) -> u`` with r <= t of shape (B,). The paper's
default feeds the network (t, t - r), each through its own sinusoidal + MLP embedding, summed (plus
the class embedding). Raw t in [0, 1] goes into the sinusoid (no x1000 scaling) unless ``scale`` says so.
"""
from __future__ import annotations

import math

import torch
from torch import nn

TIME_INPUTS = {"t,t-r": ("t", "t-r"), "t,r": ("t", "r"), "t,r,t-r": ("t", "r", "t-r")}


class SinusoidalEmbedding(nn.Module):
    """(B,) -> (B, dim): [cos(s t f_k), sin(s t f_k)] with f_k = max_period^(-k / (dim/2)), k < dim/2."""

    def __init__(self, dim: int, max_period: float = 10_000.0, scale: float = 1.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(torch.promote_types(t.dtype, self.freqs.dtype), torch.float32)
        angles = (self.scale * t.to(dtype))[:, None] * self.freqs.to(dtype)[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoid followed by a two-layer MLP: (B,) -> (B, dim)."""

    def __init__(self, dim: int, frequency_dim: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        self.sinusoid = SinusoidalEmbedding(frequency_dim, scale=scale)
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoid(t))


class TimePairEmbedding(nn.Module):
    """Embeds the two times of u(z, r, t): one TimeEmbedding per input, summed. (B,), (B,) -> (B, dim).

    ``inputs`` picks what the network sees: "t,t-r" (paper default), "t,r" or "t,r,t-r".
    """

    def __init__(self, dim: int, inputs: str = "t,t-r", frequency_dim: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        if inputs not in TIME_INPUTS:
            raise ValueError(f"unknown time inputs {inputs!r}; choose one of {', '.join(TIME_INPUTS)}")
        self.inputs = TIME_INPUTS[inputs]
        self.embeddings = nn.ModuleList(TimeEmbedding(dim, frequency_dim, scale) for _ in self.inputs)

    def forward(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        values = {"t": t, "r": r, "t-r": t - r}
        return sum(embed(values[name]) for name, embed in zip(self.inputs, self.embeddings))


class ConditionEmbedding(nn.Module):
    """Class labels (B,) in [0, num_classes] -> (B, dim); label ``num_classes`` is the null (unconditional) entry."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch,), self.null_label, device=device, dtype=torch.long)
        return self.table(labels.long())


class VectorConditionEmbedding(nn.Module):
    """Continuous conditions (B, n) -> (B, dim) by a two-layer MLP; a row that is all NaN (the null value of
    :class:`mfkit.plugins.VectorCondition`) gets a learned null embedding instead."""

    def __init__(self, features: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, cond: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if cond is None:
            return self.null.expand(batch, -1)
        cond = cond.to(self.null.dtype).reshape(batch, -1)
        is_null = torch.isnan(cond).all(dim=-1, keepdim=True)
        return torch.where(is_null, self.null.expand(batch, -1), self.mlp(torch.nan_to_num(cond)))
