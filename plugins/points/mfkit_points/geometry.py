"""Point-cloud geometry: unit-sphere normalisation, resampling to a fixed count, random rotations.

A cloud is an array of shape (N, 3). Normalised means centred on its mean and scaled so that its
farthest point lies at radius 1: x' = (x - mean(x)) / max_i |x_i - mean(x)|. Normalising a normalised
cloud gives it back.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Rotation = Literal["none", "upright", "any"]
AXES = {"x": 0, "y": 1, "z": 2}


def normalize(points: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 3) centred on the mean, farthest point at radius 1 (a single point stays at 0)."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0, keepdims=True)
    radius = np.sqrt((centred ** 2).sum(axis=1)).max()
    return (centred / radius if radius > 0 else centred).astype(np.float32)


def resample(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``count`` rows of ``points`` (M, 3): the cloud itself when M == count, a random subset
    when M > count, all rows plus random repeats when M < count."""
    m = len(points)
    if m == count:
        return points
    if m > count:
        return points[np.sort(rng.choice(m, count, replace=False))]
    return np.concatenate([points, points[rng.choice(m, count - m, replace=True)]])


def random_rotation_matrices(count: int, kind: Rotation, up_axis: str, generator: torch.Generator | None = None
                             ) -> torch.Tensor:
    """(count, 3, 3) rotations: identity ("none"), about ``up_axis`` by a uniform angle ("upright"), or
    uniform over SO(3) ("any", from normalised Gaussian quaternions)."""
    if kind == "none":
        return torch.eye(3).expand(count, 3, 3).clone()
    if kind == "upright":
        angle = 2 * torch.pi * torch.rand(count, generator=generator)
        c, s = torch.cos(angle), torch.sin(angle)
        matrices = torch.eye(3).repeat(count, 1, 1)
        i, j = [a for a in range(3) if a != AXES[up_axis]]
        matrices[:, i, i], matrices[:, i, j], matrices[:, j, i], matrices[:, j, j] = c, -s, s, c
        return matrices
    q = torch.randn(count, 4, generator=generator)
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=1).reshape(count, 3, 3)
