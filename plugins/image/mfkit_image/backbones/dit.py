"""The ``dit`` backbone: a Diffusion Transformer with adaLN-Zero conditioning and patchify (Peebles & Xie).

Patches of ``patch`` x ``patch`` pixels (or latent cells) become tokens (a strided convolution) with
fixed 2-D sin-cos positions; each block modulates LayerNorm by shift/scale and gates its attention and
MLP branches by vectors regressed from the embedding c = emb(t) + emb(t - r) + emb(cond) (adaLN-Zero:
the regressors start at zero, so every block starts as the identity). Unlike the original DiT the
output layer is not zeroed: a network whose output is identically zero has a zero JVP, which mfkit's
JVP guard rightly stops on at the first step. Presets
"NAME/P": tiny (128 wide, 6 deep, 4 heads), S (384, 12, 6), B (768, 12, 12), L (1024, 24, 16),
XL (1152, 28, 16), each with patch size P; MeanFlow's ImageNet models are B/4 .. XL/2 on 32x32x4 latents.
Attention is plain ``scaled_dot_product_attention``: mfkit's tangent rule takes its JVP exactly by the
math formula, at the memory of one (tokens x tokens) map per head; 256 tokens for XL/2 on 32x32 latents.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from mfkit.plugins import BackboneSpec, DataInfo, PluginContext
from mfkit_image.backbones.common import Conditioning, zero_

#: Width, depth and heads of each preset size.
SIZES = {"tiny": (128, 6, 4), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


class DiTParams(BaseModel):
    """Parameters of the DiT backbone: a preset, any field of which may be overridden."""

    model_config = ConfigDict(extra="forbid")
    preset: str = Field("tiny/2", description="NAME/P with NAME in tiny, S, B, L, XL and patch size P (e.g. B/4, XL/2)")
    hidden: int | None = Field(None, gt=0, description="token width (default: the preset's)")
    depth: int | None = Field(None, gt=0, description="transformer blocks (default: the preset's)")
    heads: int | None = Field(None, gt=0, description="attention heads (default: the preset's)")
    patch: int | None = Field(None, gt=0, description="patch side (default: the preset's P)")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP width / token width")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after attention and in the MLP")
    time_inputs: Literal["t,t-r", "t,r", "t,r,t-r"] = Field("t,t-r", description="which times the network sees")
    time_scale: float = Field(1.0, gt=0, description="multiplies t and t - r before the sinusoidal embedding: 1 "
                                                      "feeds raw t in [0, 1] (the paper's code); MeanFlow's target "
                                                      "differentiates through the embedding, and 1000 (the DiT/ADM "
                                                      "convention) made MNIST's one step 3.4x worse (FD 8.2 vs 2.4)")
    zero_init: bool = Field(True, description="adaLN-Zero: every modulation regressor starts at zero (blocks start "
                                              "as the identity)")
    zero_output: bool = Field(True, description="the output layer starts at zero too, as in DiT (the network "
                                                "outputs 0 at step 0; false: a normal init)")

    @field_validator("preset")
    @classmethod
    def _known(cls, value: str) -> str:
        name, _, patch = value.partition("/")
        if name not in SIZES or not patch.isdigit() or int(patch) < 1:
            raise ValueError(f"unknown DiT preset {value!r}; write NAME/P with NAME one of {', '.join(SIZES)} and a "
                             f"patch size P, e.g. B/4 or XL/2")
        return value

    def resolved(self) -> tuple[int, int, int, int]:
        """(hidden, depth, heads, patch) after applying overrides to the preset."""
        name, _, patch = self.preset.partition("/")
        hidden, depth, heads = SIZES[name]
        return (self.hidden or hidden, self.depth or depth, self.heads or heads, self.patch or int(patch))


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed positions (rows * cols, dim): half the channels encode the row, half the column, each as
    [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim/4))."""
    if dim % 4:
        raise ValueError(f"DiT width must be a multiple of 4 for 2-D positions, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None] * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    grid_r, grid_c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                                    indexing="ij")
    return torch.cat([encode(grid_r.reshape(-1)), encode(grid_c.reshape(-1))], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"DiT width {dim} cannot be split into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return self.dropout(self.proj(out))


class DiTBlock(nn.Module):
    """x + gate1 * Attn(modulate(LN(x))) then x + gate2 * MLP(modulate(LN(x))), six vectors from c."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, zero_init: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        if zero_init:
            zero_(self.ada)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """u(z, r, t, cond) for (C, H, W) inputs whose sides are multiples of the patch size."""

    def __init__(self, params: DiTParams, info: DataInfo) -> None:
        super().__init__()
        if len(info.sample_shape) != 3:
            raise ValueError(f"the dit backbone takes (C, H, W) inputs, got sample shape {info.sample_shape}")
        hidden, depth, heads, patch = params.resolved()
        channels, height, width = info.sample_shape
        if height % patch or width % patch:
            raise ValueError(f"DiT patch size {patch} does not divide the input size {height}x{width}; choose a "
                             f"preset or patch that does")
        self.patch, self.channels, self.grid = patch, channels, (height // patch, width // patch)
        self.patchify = nn.Conv2d(channels, hidden, patch, stride=patch)
        self.register_buffer("positions", sincos_2d(hidden, *self.grid), persistent=False)
        self.embed = Conditioning(hidden, info, params.time_inputs, time_scale=params.time_scale)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, params.mlp_ratio, params.dropout, params.zero_init)
                                    for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, patch * patch * channels)
        self._init(params.zero_init, params.zero_output)

    def _init(self, zero_init: bool, zero_output: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for name, module in self.embed.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        weight = self.patchify.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patchify.bias)
        if zero_init:
            for block in self.blocks:
                zero_(block.ada)
            zero_(self.ada_out)
        if zero_output:
            zero_(self.out)

    @property
    def null_label(self) -> int | None:
        return self.embed.null_label

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        b = z.shape[0]
        x = self.patchify(z).flatten(2).transpose(1, 2) + self.positions.to(z.dtype)
        c = self.embed(r, t, cond)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=1)
        x = self.out(modulate(self.norm_out(x), shift, scale))  # (b, tokens, p * p * channels)
        rows, cols = self.grid
        p = self.patch
        x = x.reshape(b, rows, cols, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, self.channels, rows * p, cols * p)


def build(params: DiTParams, info: DataInfo, context: PluginContext | None = None) -> DiT:
    return DiT(params, info)


def parameter_count(preset: str, sample_shape: tuple[int, int, int] = (4, 32, 32), num_classes: int = 1000) -> int:
    """Parameters of a preset on ``sample_shape`` with ``num_classes`` classes (built on the meta device)."""
    with torch.device("meta"):
        model = DiT(DiTParams(preset=preset), DataInfo(sample_shape, num_classes))
    return sum(p.numel() for p in model.parameters())


SPEC = BackboneSpec(
    name="dit",
    description="DiT with adaLN-Zero and patchify, presets tiny/S/B/L/XL with patch 1-8 (e.g. B/4, XL/2); "
                "(t, t - r) embeddings, class or vector conditions",
    factory=build,
    params_model=DiTParams,
)
