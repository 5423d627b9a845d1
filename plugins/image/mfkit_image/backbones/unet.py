"""The ``unet`` backbone: a U-Net in the style of the DDPM++ network behind MeanFlow's CIFAR-10 result.

Residual blocks (GroupNorm, SiLU, 3x3 convolutions, the embedding added between the convolutions,
dropout, skip scale 1/sqrt(2)), self-attention at the resolutions listed in ``attn_resolutions``,
``num_blocks`` blocks per level with ``channels * channel_mult[level]`` channels, strided-convolution
downsampling and nearest-neighbour upsampling (to the skip's size, so odd sizes like 7x7 work).
The paper's CIFAR-10 network is ``channels=128, channel_mult=[2, 2, 2], num_blocks=4,
attn_resolutions=[16]`` (about 55M parameters); the official port trains it with dropout 0.2.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from mfkit.plugins import BackboneSpec, DataInfo, PluginContext
from mfkit_image.backbones.common import Conditioning, groups_for, zero_

SKIP_SCALE = math.sqrt(0.5)


class UNetParams(BaseModel):
    """Parameters of the U-Net backbone."""

    model_config = ConfigDict(extra="forbid")
    channels: int = Field(128, gt=0, description="base width; level i has channels * channel_mult[i]")
    channel_mult: list[int] = Field([2, 2, 2], min_length=1, description="width multiplier per resolution level")
    num_blocks: int = Field(4, ge=1, description="residual blocks per level (the decoder has one more)")
    attn_resolutions: list[int] = Field([16], description="feature-map sides (pixels) with self-attention")
    attn_heads: int = Field(1, gt=0, description="attention heads")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside residual blocks")
    emb_mult: int = Field(4, gt=0, description="embedding width = channels * emb_mult")
    time_inputs: Literal["t,t-r", "t,r", "t,r,t-r"] = Field("t,t-r", description="which times the network sees")
    time_scale: float = Field(1.0, gt=0, description="multiplies t and t - r before the sinusoidal embedding: 1 "
                                                      "feeds raw t in [0, 1] (the paper's code); MeanFlow's target "
                                                      "differentiates through the embedding, and 1000 (the DiT/ADM "
                                                      "convention) made MNIST's one step 3.4x worse (FD 8.2 vs 2.4)")
    zero_init: bool = Field(True, description="start every residual branch (its last convolution) and attention "
                                              "output at zero, so each block starts as its skip path; the output "
                                              "layer keeps a normal init, so the first JVP is not identically zero")

    @field_validator("channel_mult")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(m <= 0 for m in value):
            raise ValueError("every channel_mult entry must be positive")
        return value


class ResBlock(nn.Module):
    """x -> (skip(x) + conv(drop(SiLU(GN(conv(SiLU(GN(x))) + W emb))))) / sqrt(2)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, zero_init: bool) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups_for(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if zero_init:
            zero_(self.conv2)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * SKIP_SCALE


class Attention(nn.Module):
    """Self-attention over the H*W positions: x + proj(SDPA(q, k, v)), scaled by 1/sqrt(2)."""

    def __init__(self, channels: int, heads: int, zero_init: bool) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention over {channels} channels cannot be split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups_for(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        if zero_init:
            zero_(self.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c / heads)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) * SKIP_SCALE


class Level(nn.Module):
    """A residual block, followed by attention when the level has it."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, params: UNetParams, attention: bool) -> None:
        super().__init__()
        self.block = ResBlock(c_in, c_out, emb_dim, params.dropout, params.zero_init)
        self.attn = Attention(c_out, params.attn_heads, params.zero_init) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.block(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """u(z, r, t, cond) for images z (B, C, H, W) (any H, W; attention where the side is in attn_resolutions)."""

    def __init__(self, params: UNetParams, info: DataInfo) -> None:
        super().__init__()
        if len(info.sample_shape) != 3:
            raise ValueError(f"the unet backbone takes images (C, H, W), got sample shape {info.sample_shape}")
        c_img, height, _ = info.sample_shape
        widths = [params.channels * m for m in params.channel_mult]
        emb_dim = params.channels * params.emb_mult
        self.embed = Conditioning(emb_dim, info, params.time_inputs, time_scale=params.time_scale)
        self.conv_in = nn.Conv2d(c_img, widths[0], 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c, side, sides = [widths[0]], widths[0], height, []
        for level, width in enumerate(widths):
            sides.append(side)
            blocks = nn.ModuleList()
            for _ in range(params.num_blocks):
                blocks.append(Level(c, width, emb_dim, params, side in params.attn_resolutions))
                c = width
                skips.append(c)
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
                side = (side + 1) // 2
        self.mid = nn.ModuleList([Level(c, c, emb_dim, params, True), Level(c, c, emb_dim, params, False)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(params.num_blocks + 1):
                blocks.append(Level(c + skips.pop(), width, emb_dim, params, sides[level] in params.attn_resolutions))
                c = width
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(groups_for(c), c)
        self.conv_out = nn.Conv2d(c, c_img, 3, padding=1)  # not zeroed: see UNetParams.zero_init

    @property
    def null_label(self) -> int | None:
        return self.embed.null_label

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        emb = self.embed(r, t, cond)
        h = self.conv_in(z)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for level, blocks in enumerate(self.up):
            for block in blocks:
                skip = skips.pop()
                h = block(torch.cat([h, skip], dim=1), emb)
            if level < len(self.upsample):
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")
                h = self.upsample[level](h)
        return self.conv_out(F.silu(self.norm_out(h)))


def build(params: UNetParams, info: DataInfo, context: PluginContext | None = None) -> UNet:
    return UNet(params, info)


SPEC = BackboneSpec(
    name="unet",
    description="U-Net in the style of MeanFlow's CIFAR-10 network (residual blocks, attention at low resolution, "
                "(t, t - r) embeddings, class or vector conditions)",
    factory=build,
    params_model=UNetParams,
)
