"""``point_set``: a PointNet-style set network with pooled global context, cheap enough for a CPU.

Each point is processed by the same MLP; what a point sees of the others comes through pooling within
its own cloud. Block (h: (B, N, W), c: the conditioning vector):

    x = LN(h) * (1 + scale(c)) + shift(c)
    g = Linear([mean_n x, max_n x])                  global context of the cloud, (B, 1, W)
    h = h + gate(c) * W2 SiLU(W1 x + g)

Cost O(N W^2) per cloud (no N^2 term). Permutation-equivariant; clouds never see each other.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mfkit.plugins import BackboneSpec, DataInfo, PluginContext
from mfkit_points.nets.conditioning import Conditioning, check_points_shape, modulate, zero_linear


class PointSetParams(BaseModel):
    """Parameters of the point_set backbone."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(128, gt=0, description="features per point")
    depth: int = Field(4, ge=1, description="residual blocks")
    hidden: int = Field(256, gt=0, description="hidden features of each block's point MLP")
    time_inputs: Literal["t,t-r", "t,r", "t,r,t-r"] = Field("t,t-r", description="times the network sees")


class SetBlock(nn.Module):
    """One residual block: adaLN, a per-point MLP, and the cloud's pooled (mean and max) context."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = zero_linear(width, 3 * width)
        self.local = nn.Linear(width, hidden)
        self.pooled = nn.Linear(2 * width, hidden)
        self.out = nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(nn.functional.silu(c)).chunk(3, dim=-1)
        x = modulate(self.norm(h), shift, scale)
        context = self.pooled(torch.cat([x.mean(dim=1), x.amax(dim=1)], dim=-1))
        return h + gate[:, None, :] * self.out(nn.functional.silu(self.local(x) + context[:, None, :]))


class PointSetNet(nn.Module):
    """u(z, r, t, cond) for point sets z (B, N, D)."""

    def __init__(self, params: PointSetParams, info: DataInfo) -> None:
        super().__init__()
        _, coordinates = check_points_shape(info, "point_set")
        self.conditioning = Conditioning(info, params.width, params.time_inputs)
        self.embed = nn.Linear(coordinates, params.width)
        self.blocks = nn.ModuleList(SetBlock(params.width, params.hidden) for _ in range(params.depth))
        self.final_norm = nn.LayerNorm(params.width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(params.width, 2 * params.width)
        self.head = nn.Linear(params.width, coordinates)

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
                ) -> torch.Tensor:
        c = self.conditioning(r, t, cond, z.shape[0], z.device)
        h = self.embed(z)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(nn.functional.silu(c)).chunk(2, dim=-1)
        return self.head(modulate(self.final_norm(h), shift, scale))


def build(params: PointSetParams, info: DataInfo, context: PluginContext) -> PointSetNet:
    return PointSetNet(params, info)


SPEC = BackboneSpec(
    name="point_set",
    description="PointNet-style set network with pooled global context and adaLN on (t, t - r) and class; CPU-sized",
    factory=build,
    params_model=PointSetParams,
)
