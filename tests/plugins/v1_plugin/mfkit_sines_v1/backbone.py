"""The ``conv1d`` backbone: residual 1-D convolutions conditioned on (t, t - r) and the class."""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mfkit.nn import ConditionEmbedding, TimePairEmbedding
from mfkit.plugins import BackboneSpec, DataInfo


class Conv1dParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: int = Field(32, gt=0)
    blocks: int = Field(3, ge=1)


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(4, channels)
        self.conv = nn.Conv1d(channels, channels, 5, padding=2)
        self.scale = nn.Linear(channels, channels)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.conv(nn.functional.silu(self.norm(h) * (1 + self.scale(emb)[:, :, None])))


class Conv1dNet(nn.Module):
    def __init__(self, params: Conv1dParams, info: DataInfo) -> None:
        super().__init__()
        in_channels = info.sample_shape[0]
        self.inp = nn.Conv1d(in_channels, params.channels, 3, padding=1)
        self.time = TimePairEmbedding(params.channels, frequency_dim=64)
        self.cond = ConditionEmbedding(info.num_classes, params.channels) if info.num_classes else None
        self.blocks = nn.ModuleList(Block(params.channels) for _ in range(params.blocks))
        self.out = nn.Conv1d(params.channels, in_channels, 3, padding=1)

    def forward(self, z, r, t, cond=None):
        emb = self.time(r, t)
        if self.cond is not None:
            emb = emb + self.cond(cond, z.shape[0], z.device)
        h = self.inp(z)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(h))


SPEC = BackboneSpec(name="conv1d_v1", description="Residual 1-D conv net for (channels, length) signals (v1 example plugin)",
                    factory=Conv1dNet, params_model=Conv1dParams)
