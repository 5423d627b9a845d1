"""The ``sines`` modality: signals x(s) = a sin(2 pi f s + phase) on ``length`` points.

Shows every piece of the plugin API v2: the factory gets a :class:`PluginContext`; the amplitude
scale is *fitted* on the training data and travels with the run as state; the condition is either the
frequency band (class labels) or the frequency itself (a continuous :class:`VectorCondition`);
previews and final samples are drawn differently (``save(kind=...)``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from mfkit.plugins import ClassCondition, ConditionSpec, Modality, ModalitySpec, PluginContext, VectorCondition

BANDS = {"low": (1.0, 2.0), "mid": (3.0, 4.0), "high": (5.0, 6.0)}


class SinesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    length: int = Field(64, ge=8, description="points per signal")
    size: int = Field(4096, gt=0, description="signals in the training set")
    seed: int = Field(0, description="seed of the drawn signals")
    condition: Literal["band", "frequency", "none"] = Field(
        "band", description="condition on the frequency band (classes), on the frequency itself (a number), or nothing")


class Sines(Modality):
    def __init__(self, params: SinesParams, context: PluginContext) -> None:
        self.params, self.context = params, context
        self.sample_shape = (1, params.length)
        self.scale = torch.tensor(1.0)  # state: fitted by fit(), loaded by load_state_dict()

    # -- conditions
    def condition(self) -> ConditionSpec | None:
        if self.params.condition == "band":
            return ClassCondition(list(BANDS))
        if self.params.condition == "frequency":
            return VectorCondition(1, low=1.0, high=7.0, names=["frequency"])
        return None

    # -- data
    def _signals(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.params.seed * 2 + (split != "train"))
        n = self.params.size if split == "train" else min(self.params.size, 1024)
        band = torch.randint(0, len(BANDS), (n,), generator=g)
        low = torch.tensor([BANDS[name][0] for name in BANDS])[band]
        frequency = low + torch.rand(n, generator=g)
        phase = 2 * math.pi * torch.rand(n, generator=g)
        amplitude = 0.5 + torch.rand(n, generator=g)
        s = torch.linspace(0, 1, self.params.length)
        x = amplitude[:, None] * torch.sin(2 * math.pi * frequency[:, None] * s + phase[:, None])
        return x[:, None, :], band, frequency[:, None]

    def dataset(self, split: str = "train"):
        x, band, frequency = self._signals(split)
        x = x / self.scale
        if self.params.condition == "band":
            return TensorDataset(x, band)
        if self.params.condition == "frequency":
            return TensorDataset(x, frequency)
        return TensorDataset(x)

    # -- state that travels with the run
    def fit(self, dataset) -> None:
        """Scale signals to unit standard deviation (computed once, on the training signals)."""
        self.scale = self._signals("train")[0].std().clamp_min(1e-6)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale.reshape(1)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.scale = state["scale"].reshape(())

    # -- raw items <-> tensors
    def encode(self, raw: Any) -> torch.Tensor:
        return (torch.as_tensor(np.asarray(raw, dtype=np.float32)) / self.scale).reshape(self.sample_shape)

    def decode(self, tensor: torch.Tensor) -> np.ndarray:
        return (tensor.detach().float().cpu() * self.scale).reshape(tensor.shape[0], -1).numpy()

    def save(self, samples: torch.Tensor, out_dir: Path, cond: Any = None, *, kind: str = "samples",
             step: int | None = None) -> list[Path]:
        """A PNG of up to 8 signals; final samples also as signals.npy (previews only the PNG)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        signals = self.decode(samples)
        image = Image.new("RGB", (512, 64 * min(8, len(signals))), "white")
        draw = ImageDraw.Draw(image)
        for row, signal in enumerate(signals[:8]):
            xs = np.linspace(0, 511, len(signal))
            ys = 32 + 64 * row - 20 * np.clip(signal, -1.6, 1.6)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(31, 119, 180), width=2)
            condition = self.condition()
            if cond is not None and condition is not None:
                draw.text((4, 64 * row + 2), condition.describe(cond, row), fill=(0, 0, 0))
        image.save(out_dir / "signals.png")
        files = [out_dir / "signals.png"]
        if kind != "preview":
            np.save(out_dir / "signals.npy", signals)
            files.append(out_dir / "signals.npy")
        return files


SPEC = ModalitySpec(name="sines", description="1-D sine waves, by frequency band or frequency (example plugin)",
                    factory=Sines, params_model=SinesParams)
