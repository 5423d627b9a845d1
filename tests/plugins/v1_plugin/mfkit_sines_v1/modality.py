"""The ``sines_v1`` modality (plugin API v1, kept unchanged to prove v1 plugins still work): signals x(s) = a sin(2 pi f s + phase) on 64 points, classed by frequency band."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from mfkit.plugins import Modality, ModalitySpec

BANDS = {"low": (1.0, 2.0), "mid": (3.0, 4.0), "high": (5.0, 6.0)}


class SinesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    length: int = Field(64, ge=8, description="points per signal")
    size: int = Field(4096, gt=0, description="signals in the training set")
    seed: int = Field(0, description="seed of the drawn signals")


class Sines(Modality):
    class_names = list(BANDS)

    def __init__(self, params: SinesParams) -> None:
        self.params = params
        self.sample_shape = (1, params.length)

    def dataset(self, split: str = "train"):
        g = torch.Generator().manual_seed(self.params.seed + (split != "train"))
        n = self.params.size
        band = torch.randint(0, len(BANDS), (n,), generator=g)
        low = torch.tensor([BANDS[name][0] for name in BANDS])[band]
        frequency = low + torch.rand(n, generator=g)
        phase = 2 * math.pi * torch.rand(n, generator=g)
        amplitude = 0.5 + torch.rand(n, generator=g)
        s = torch.linspace(0, 1, self.params.length)
        x = amplitude[:, None] * torch.sin(2 * math.pi * frequency[:, None] * s + phase[:, None])
        return TensorDataset(x[:, None, :], band)

    def encode(self, raw: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(raw, dtype=np.float32)).reshape(self.sample_shape)

    def decode(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().cpu().reshape(tensor.shape[0], -1).numpy()

    def save(self, samples: torch.Tensor, out_dir: Path, cond: torch.Tensor | None = None) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        signals = self.decode(samples)
        np.save(out_dir / "signals.npy", signals)
        image = Image.new("RGB", (512, 64 * min(8, len(signals))), "white")
        draw = ImageDraw.Draw(image)
        for row, signal in enumerate(signals[:8]):
            xs = np.linspace(0, 511, len(signal))
            ys = 32 + 64 * row - 20 * np.clip(signal, -1.6, 1.6)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(31, 119, 180), width=2)
        image.save(out_dir / "signals.png")
        return [out_dir / "signals.png", out_dir / "signals.npy"]


SPEC = ModalitySpec(name="sines_v1", description="1-D sine waves in three frequency bands (v1 example plugin)",
                    factory=Sines, params_model=SinesParams)
