"""Reference backbones for tests and benchmarks, written as a third party would: plain torch.nn layers."""
from __future__ import annotations

import torch
from torch import nn

from mfkit.nn import TimePairEmbedding


class ConvAttentionNet(nn.Module):
    """Convolutions, GroupNorm, SiLU, LayerNorm and nn.MultiheadAttention over (C, H, W) images, with
    optional class labels (``num_classes``; label ``num_classes`` is the null class): u(z, r, t, cond)
    of z's shape. Tokens are the H x W positions, so attention covers H * W tokens."""

    def __init__(self, channels: int = 3, width: int = 128, blocks: int = 2, heads: int = 4,
                 num_classes: int | None = None, groups: int = 8, frequency_dim: int = 64) -> None:
        super().__init__()
        self.time = TimePairEmbedding(width, frequency_dim=frequency_dim)
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.convs = nn.ModuleList(nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(),
                                                 nn.Conv2d(width, width, 3, padding=1)) for _ in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.attentions = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=True) for _ in range(blocks))
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        e = self.time(r, t)
        if self.label is not None:
            e = e + self.label(cond)
        h = self.inp(z) + e[:, :, None, None]
        b, c, height, width = h.shape
        for conv, norm, attention in zip(self.convs, self.norms, self.attentions):
            h = h + conv(h)
            seq = norm(h.flatten(2).transpose(1, 2))
            h = h + attention(seq, seq, seq, need_weights=False)[0].transpose(1, 2).reshape(b, c, height, width)
        return self.out(torch.nn.functional.silu(h))
