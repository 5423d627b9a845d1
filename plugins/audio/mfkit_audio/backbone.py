"""The ``spec_unet`` backbone: a U-Net over (mel, time) for spectrograms (1, n_mels, frames).

Conditioning: e = TimePairEmbedding(r, t) + ConditionEmbedding(class) (or a vector condition's
embedding); every residual block modulates its normalised activations as GroupNorm(h) (1 + s(e)) + b(e)
(adaptive normalisation, as adaLN in DiT). Optional self-attention over all (mel, time) positions at the
lowest resolution. The input is zero-padded to a multiple of 2^(levels - 1) and the output cropped back,
so any (n_mels, frames) works. No batch statistics: each sample is computed on its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mfkit.nn import ConditionEmbedding, TimePairEmbedding, VectorConditionEmbedding
from mfkit.plugins import BackboneSpec, ClassCondition, DataInfo, PluginContext, VectorCondition


class SpecUNetParams(BaseModel):
    """Parameters of the spectrogram U-Net."""

    model_config = ConfigDict(extra="forbid")
    channels: int = Field(32, gt=0, description="channels at full resolution")
    multipliers: list[int] = Field([1, 2, 2], min_length=1, description="channel multiplier per level (each "
                                                                         "after the first halves mel and time)")
    blocks: int = Field(1, ge=1, description="residual blocks per level (down and up)")
    attention: bool = Field(False, description="self-attention over positions at the lowest resolution")
    heads: int = Field(4, gt=0, description="attention heads")
    embed_dim: int | None = Field(None, description="time/condition embedding width (null: 4 x channels)")
    groups: int = Field(8, gt=0, description="GroupNorm groups")
    time_inputs: str = Field("t,t-r", description="which times the network sees: t,t-r | t,r | t,r,t-r")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class ResBlock(nn.Module):
    """h = x + conv(SiLU(GN(conv(SiLU(GN(x) (1 + s) + b))))), (s, b) = Linear(SiLU(e)); 1x1 skip when
    the width changes. (B, C_in, H, W), (B, E) -> (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, embed: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = _norm(c_in, groups), _norm(c_out, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.modulation = nn.Linear(embed, 2 * c_in)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(F.silu(e))[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm1(x) * (1 + scale) + shift))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H x W positions, pre-normalised, residual. (B, C, H, W) -> same."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads, self.norm = heads, _norm(channels, groups)
        self.qkv, self.out = nn.Linear(channels, 3 * channels), nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                     # (B, HW, C)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(mixed).transpose(1, 2).reshape(b, c, h, w)


class SpecUNet(nn.Module):
    """u(z, r, t | cond) for z of shape (B, 1, n_mels, frames) (or (B, C, H, W) for any C)."""

    def __init__(self, params: SpecUNetParams, sample_shape: tuple[int, ...], num_classes: int | None = None,
                 vector_dim: int | None = None) -> None:
        super().__init__()
        if len(sample_shape) != 3:
            raise ValueError(f"spec_unet takes spectrograms (channels, mels, frames), got sample shape {sample_shape}")
        c0, embed, groups = params.channels, params.embed_dim or 4 * params.channels, params.groups
        widths = [c0 * m for m in params.multipliers]
        self.factor = 2 ** (len(widths) - 1)
        self.time = TimePairEmbedding(embed, params.time_inputs)
        self.label = ConditionEmbedding(num_classes, embed) if num_classes else None
        self.vector = VectorConditionEmbedding(vector_dim, embed) if vector_dim else None
        self.stem = nn.Conv2d(sample_shape[0], c0, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, width = [], c0
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(params.blocks):
                blocks.append(ResBlock(width, w, embed, groups))
                width = w
                skips.append(width)
            self.down.append(blocks)
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.mid1 = ResBlock(width, width, embed, groups)
        self.attention = Attention(width, params.heads, groups) if params.attention else None
        self.mid2 = ResBlock(width, width, embed, groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(params.blocks):
                blocks.append(ResBlock(width + skips.pop(), w, embed, groups))
                width = w
            self.up.append(blocks)
            self.upsample.append(nn.Conv2d(width, width, 3, padding=1) if level > 0 else nn.Identity())
        self.head = nn.Sequential(_norm(width, groups), nn.SiLU(), nn.Conv2d(width, sample_shape[0], 3, padding=1))

    def _embedding(self, r: torch.Tensor, t: torch.Tensor, cond, batch: int) -> torch.Tensor:
        e = self.time(r, t)
        if self.label is not None:
            e = e + self.label(cond, batch, e.device)
        elif self.vector is not None:
            e = e + self.vector(cond, batch, e.device)
        return e

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        batch, _, height, width = z.shape
        e = self._embedding(r, t, cond, batch).to(z.dtype)
        pad_h, pad_w = -height % self.factor, -width % self.factor
        h = self.stem(F.pad(z, (0, pad_w, 0, pad_h)))
        skips = []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, e)
                skips.append(h)
            h = down(h)
        h = self.mid1(h, e)
        if self.attention is not None:
            h = self.attention(h)
        h = self.mid2(h, e)
        for blocks, up in zip(self.up, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), e)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)[:, :, :height, :width]


def build(params: SpecUNetParams, info: DataInfo, context: PluginContext) -> SpecUNet:
    num_classes = len(info.condition.names) if isinstance(info.condition, ClassCondition) else info.num_classes
    vector_dim = info.condition.dim if isinstance(info.condition, VectorCondition) else None
    return SpecUNet(params, tuple(info.sample_shape), num_classes, vector_dim)


SPEC = BackboneSpec(
    name="spec_unet",
    description="U-Net over (mel, time) with adaptive-norm conditioning on (t, t - r) and the class; optional "
                "self-attention at the lowest resolution",
    factory=build,
    params_model=SpecUNetParams,
)
