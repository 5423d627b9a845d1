"""The ``frame_dit`` backbone: a transformer over spectrogram frames with adaLN conditioning.

A spectrogram (C, n_mels, frames) is cut into tokens of ``patch`` consecutive frames (all mel bands and
channels: C n_mels patch values), linearly embedded, given a learned position embedding, and passed through
``depth`` pre-norm blocks [self-attention, MLP]. Each block's LayerNorms are modulated by the embedding
e = TimePairEmbedding(r, t) + condition embedding: LN(h) (1 + s(e)) + b(e), and each branch is scaled by
a gate g(e) (as in DiT's adaLN). A final modulated LayerNorm and a linear layer give the tokens back as
frames; frames are zero-padded to a multiple of ``patch`` and cropped at the end.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mfkit.nn import ConditionEmbedding, TimePairEmbedding, VectorConditionEmbedding
from mfkit.plugins import BackboneSpec, ClassCondition, DataInfo, PluginContext, VectorCondition


class FrameDiTParams(BaseModel):
    """Parameters of the frame transformer."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(128, gt=0, description="token width")
    depth: int = Field(4, ge=1, description="transformer blocks")
    heads: int = Field(4, gt=0, description="attention heads")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / token width")
    patch: int = Field(1, ge=1, description="frames per token")
    time_inputs: str = Field("t,t-r", description="which times the network sees: t,t-r | t,r | t,r,t-r")


def _modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return h * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """h + g1 Attn(mod(LN(h))) then h + g2 MLP(mod(LN(h))); (B, T, D), (B, D) -> (B, T, D)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"frame_dit: width {width} does not split into {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Linear(width, 6 * width)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(e)).chunk(6, dim=-1)
        q, k, v = self.qkv(_modulate(self.norm1(h), shift1, scale1)).reshape(b, t, 3, self.heads, d // self.heads) \
            .permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        h = h + gate1[:, None] * self.proj(attended)
        return h + gate2[:, None] * self.mlp(_modulate(self.norm2(h), shift2, scale2))


class FrameDiT(nn.Module):
    """u(z, r, t | cond) for spectrograms z (B, C, n_mels, frames)."""

    def __init__(self, params: FrameDiTParams, sample_shape: tuple[int, ...], num_classes: int | None = None,
                 vector_dim: int | None = None) -> None:
        super().__init__()
        if len(sample_shape) != 3:
            raise ValueError(f"frame_dit takes spectrograms (channels, mels, frames), got sample shape {sample_shape}")
        channels, mels, frames = sample_shape
        self.patch, width = params.patch, params.width
        self.token_size = channels * mels * params.patch
        tokens = -(-frames // params.patch)
        self.time = TimePairEmbedding(width, params.time_inputs)
        self.label = ConditionEmbedding(num_classes, width) if num_classes else None
        self.vector = VectorConditionEmbedding(vector_dim, width) if vector_dim else None
        self.embed = nn.Linear(self.token_size, width)
        self.position = nn.Parameter(0.02 * torch.randn(tokens, width))
        self.blocks = nn.ModuleList(Block(width, params.heads, params.mlp_ratio) for _ in range(params.depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.final_modulation = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, self.token_size)

    def _embedding(self, r, t, cond, batch):
        e = self.time(r, t)
        if self.label is not None:
            e = e + self.label(cond, batch, e.device)
        elif self.vector is not None:
            e = e + self.vector(cond, batch, e.device)
        return e

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        b, c, mels, frames = z.shape
        pad = -frames % self.patch
        x = F.pad(z, (0, pad))                                                    # (B, C, M, F')
        tokens = x.reshape(b, c, mels, -1, self.patch).permute(0, 3, 1, 2, 4).reshape(b, -1, self.token_size)
        e = self._embedding(r, t, cond, b).to(z.dtype)
        h = self.embed(tokens) + self.position
        for block in self.blocks:
            h = block(h, e)
        shift, scale = self.final_modulation(F.silu(e)).chunk(2, dim=-1)
        out = self.out(_modulate(self.final_norm(h), shift, scale))             # (B, T, C M P)
        out = out.reshape(b, -1, c, mels, self.patch).permute(0, 2, 3, 1, 4).reshape(b, c, mels, -1)
        return out[..., :frames]


def build(params: FrameDiTParams, info: DataInfo, context: PluginContext) -> FrameDiT:
    num_classes = len(info.condition.names) if isinstance(info.condition, ClassCondition) else info.num_classes
    vector_dim = info.condition.dim if isinstance(info.condition, VectorCondition) else None
    return FrameDiT(params, tuple(info.sample_shape), num_classes, vector_dim)


SPEC = BackboneSpec(
    name="frame_dit",
    description="Transformer over spectrogram frames (tokens of a few frames) with adaLN conditioning on "
                "(t, t - r) and the class",
    factory=build,
    params_model=FrameDiTParams,
)
