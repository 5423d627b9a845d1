"""A small PointNet classifier trained locally on the training split, to judge conditional samples.

PointNet (Qi et al. 2017) without the transform nets: a shared per-point MLP 3 -> 64 -> 128 -> 256, a
max over points, and an MLP head to the classes. It looks at a fixed random subset of ``points``
points of each cloud (the same positions for every cloud, so generated and real clouds are treated
alike and large clouds stay cheap). Trained and cached by :func:`mfkit.metrics.train_feature_network`
(deterministic from the seed, keyed by a hash of the training data and the settings).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from mfkit.metrics import train_feature_network
from mfkit_points.geometry import Rotation, random_rotation_matrices


class PointNetClassifier(nn.Module):
    """(B, N, 3) -> logits (B, classes), looking at ``points`` of the N points (chosen by ``seed``)."""

    def __init__(self, classes: int, points: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.points, self.seed = points, seed
        self.encoder = nn.Sequential(nn.Linear(3, 64), nn.LayerNorm(64), nn.ReLU(), nn.Linear(64, 128),
                                     nn.LayerNorm(128), nn.ReLU(), nn.Linear(128, 256))
        self.head = nn.Sequential(nn.LayerNorm(256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                  nn.Linear(128, classes))

    def subset(self, x: torch.Tensor) -> torch.Tensor:
        """The same ``points`` random points of every cloud (all of them for smaller clouds)."""
        if x.shape[1] <= self.points:
            return x
        chosen = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(self.seed))[:self.points]
        return x[:, chosen.to(x.device)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.subset(x)).amax(dim=1))


def train_classifier(train: Dataset, classes: int, cache_dir: Path, *, seed: int = 0, steps: int = 600,
                     points: int = 256, rotation: Rotation = "none", up_axis: str = "z",
                     device: torch.device | str = "cpu") -> PointNetClassifier:
    """The classifier for a data set of (cloud (N, 3), label) items: from the cache, or trained now.

    ``rotation``: the training augmentation (random turns, as the generator's training data had them)."""

    def loss(model: nn.Module, batch) -> torch.Tensor:
        x, labels = batch
        x = x.to(device)
        if rotation != "none":
            x = x @ random_rotation_matrices(len(x), rotation, up_axis).to(device).transpose(1, 2)
        return nn.functional.cross_entropy(model(x), labels.to(device).long())

    network = train_feature_network(lambda: PointNetClassifier(classes, points, seed), train, loss,
                                    name=f"points-classifier-{classes}", steps=steps, batch_size=64, lr=2e-3,
                                    seed=seed, cache_dir=cache_dir, device=device,
                                    settings={"points": points, "rotation": rotation, "up_axis": up_axis})
    return network.module


@torch.no_grad()
def predict(model: PointNetClassifier, clouds: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Predicted class (S,) of each cloud (S, N, 3), on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([model(clouds[i:i + batch].float().to(device)).argmax(dim=1).cpu()
                      for i in range(0, len(clouds), batch)])
