"""``point_transformer``: a permutation-equivariant transformer over the points of a cloud.

No positional encoding: a point is known only by its coordinates, so permuting the input points
permutes the output the same way. DiT-style blocks with adaLN-Zero conditioning on c (times and class):

    h = h + gate1(c) * Attention(LN(h) * (1 + scale1(c)) + shift1(c))
    h = h + gate2(c) * MLP(LN(h) * (1 + scale2(c)) + shift2(c))

Attention is full self-attention over the N points of each cloud (``F.scaled_dot_product_attention``,
so any fused kernel serves the forward; mfkit computes its JVP tangent exactly, blockwise (or with its
Triton kernel on CUDA) from 2**20 attention weights on, without a (B, heads, N, N) matrix: see the
plugin's README for the measured memory at 512 and 2048 points).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from mfkit.plugins import BackboneSpec, DataInfo, PluginContext
from mfkit_points.nets.conditioning import Conditioning, check_points_shape, modulate, zero_linear

TimeInputs = Literal["t,t-r", "t,r", "t,r,t-r"]


class PointTransformerParams(BaseModel):
    """Parameters of the point_transformer backbone."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(256, gt=0, description="features per point (a multiple of heads)")
    depth: int = Field(6, ge=1, description="transformer blocks")
    heads: int = Field(4, gt=0, description="attention heads")
    mlp_ratio: float = Field(4.0, gt=0, description="hidden width of each block's MLP, as a multiple of width")
    time_inputs: TimeInputs = Field("t,t-r", description="times the network sees")


class Attention(nn.Module):
    """Multi-head self-attention over the points of each cloud: (B, N, W) -> (B, N, W)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, points, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, points, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, points, width))


class TransformerBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attention = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = zero_linear(width, 6 * width)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c)).chunk(6, dim=-1)
        h = h + gate1[:, None, :] * self.attention(modulate(self.norm1(h), shift1, scale1))
        return h + gate2[:, None, :] * self.mlp(modulate(self.norm2(h), shift2, scale2))


class PointTransformer(nn.Module):
    """u(z, r, t, cond) for point sets z (B, N, D)."""

    def __init__(self, params: PointTransformerParams, info: DataInfo) -> None:
        super().__init__()
        _, coordinates = check_points_shape(info, "point_transformer")
        if params.width % params.heads:
            raise ValueError(f"point_transformer width {params.width} is not a multiple of heads {params.heads}")
        self.conditioning = Conditioning(info, params.width, params.time_inputs)
        self.embed = nn.Linear(coordinates, params.width)
        self.blocks = nn.ModuleList(TransformerBlock(params.width, params.heads, params.mlp_ratio)
                                    for _ in range(params.depth))
        self.final_norm = nn.LayerNorm(params.width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(params.width, 2 * params.width)
        self.head = nn.Linear(params.width, coordinates)

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
                ) -> torch.Tensor:
        c = self.conditioning(r, t, cond, z.shape[0], z.device)
        h = self.embed(z)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(F.silu(c)).chunk(2, dim=-1)
        return self.head(modulate(self.final_norm(h), shift, scale))


def build(params: PointTransformerParams, info: DataInfo, context: PluginContext) -> PointTransformer:
    return PointTransformer(params, info)


SPEC = BackboneSpec(
    name="point_transformer",
    description="Permutation-equivariant transformer over points (no positional encoding), adaLN-Zero on "
                "(t, t - r) and class",
    factory=build,
    params_model=PointTransformerParams,
)
