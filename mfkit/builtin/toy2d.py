"""The ``toy2d`` modality: 2-D toy distributions drawn from a seed, samples saved as a PNG scatter."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from mfkit.builtin.scatter import scatter_png
from mfkit.data.toy2d import CLASSES, toy_sample_labeled
from mfkit.plugins.spec import Modality, ModalitySpec, PluginContext

Distribution = Literal["checkerboard", "eight_gaussians", "moons", "spirals", "rings", "gaussian"]


class Toy2dParams(BaseModel):
    """Parameters of the toy2d modality."""

    model_config = ConfigDict(extra="forbid")
    distribution: Distribution = Field("checkerboard", description="which 2-D distribution")
    size: int = Field(100_000, gt=0, description="points in the training set (drawn once from the seed)")
    seed: int = Field(0, description="seed of the drawn training set")
    conditional: bool = Field(False, description="offer each point's part (mode, moon, arm, ring) as its class")


class PointSet(Dataset):
    """A fixed set of points (N, 2) with optional labels (N,)."""

    def __init__(self, points: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.points, self.labels = points, labels

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, index: int):
        if self.labels is None:
            return self.points[index]
        return self.points[index], self.labels[index]


class Toy2d(Modality):
    sample_shape = (2,)

    def __init__(self, params: Toy2dParams, context: PluginContext | None = None) -> None:
        self.params, self.context = params, context
        self.class_names = CLASSES[params.distribution] if params.conditional else None

    def dataset(self, split: str = "train") -> Dataset:
        offset = {"train": 0, "val": 1}.get(split)
        if offset is None:
            raise ValueError(f"unknown split {split!r}; toy2d has 'train' and 'val'")
        size = self.params.size if split == "train" else min(self.params.size, 10_000)
        generator = torch.Generator().manual_seed(self.params.seed * 2 + offset)
        points, labels = toy_sample_labeled(self.params.distribution, size, generator)
        return PointSet(points, labels if self.params.conditional else None)

    def encode(self, raw: Any) -> torch.Tensor:
        point = torch.as_tensor(np.asarray(raw, dtype=np.float32))
        if point.shape != (2,):
            raise ValueError(f"a toy2d item is a point (x, y), got shape {tuple(point.shape)}")
        return point

    def decode(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().cpu().reshape(-1, 2).numpy()

    def save(self, samples: torch.Tensor, out_dir: Path, cond: torch.Tensor | None = None) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        points = self.decode(samples)
        labels = cond.detach().cpu().numpy() if cond is not None else None
        np.save(out_dir / "samples.npy", points)
        title = f"toy2d {self.params.distribution}: {len(points)} samples (grey: real data)"
        reference, _ = toy_sample_labeled(self.params.distribution, 4000, torch.Generator().manual_seed(12345))
        png = scatter_png(points, out_dir / "samples.png", labels, title=title, reference=reference.numpy())
        return [png, out_dir / "samples.npy"]


SPEC = ModalitySpec(
    name="toy2d",
    description="2-D toy distributions (checkerboard, moons, 8 gaussians, spirals, rings); PNG scatter output",
    factory=Toy2d,
    params_model=Toy2dParams,
)
