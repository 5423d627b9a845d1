"""Two-dimensional toy distributions, drawn on the fly (no files): the standard flow-model sanity checks.

Each sampler returns (n, 2) float32 points scaled to roughly unit variance per coordinate.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Sampler = Callable[[int, torch.Generator | None], torch.Tensor]


def _uniform(n, generator):
    return torch.rand(n, generator=generator)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform over the black squares of a 4x4 board on [-2, 2]^2."""
    x = 4 * _uniform(n, generator) - 2
    row = torch.randint(0, 2, (n,), generator=generator) * 2  # 0 or 2
    y = _uniform(n, generator) - 2 + row + (torch.floor(x) % 2)
    return torch.stack([x, y], dim=1)


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eight Gaussians (std 0.1 x radius) on a circle of radius 2."""
    which = torch.randint(0, 8, (n,), generator=generator).float()
    angle = which * (2 * math.pi / 8)
    centres = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + 0.2 * torch.randn(n, 2, generator=generator)


def moons(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved half circles with a little noise."""
    upper = torch.rand(n, generator=generator) < 0.5
    angle = math.pi * _uniform(n, generator)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x - 0.5, y - 0.25], dim=1) * 2
    return points + 0.1 * torch.randn(n, 2, generator=generator)


def spirals(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved spirals."""
    radius = torch.sqrt(_uniform(n, generator)) * 3 * math.pi
    arm = (torch.rand(n, generator=generator) < 0.5).float() * math.pi
    x = torch.stack([radius * torch.cos(radius + arm), radius * torch.sin(radius + arm)], dim=1) / 4.5
    return x + 0.08 * torch.randn(n, 2, generator=generator)


def rings(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Three concentric rings of radius 0.8, 1.6, 2.4."""
    radius = 0.8 * torch.randint(1, 4, (n,), generator=generator).float()
    angle = 2 * math.pi * _uniform(n, generator)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return x + 0.08 * torch.randn(n, 2, generator=generator)


def gaussian(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A single shifted, anisotropic Gaussian (mean (1, -0.5), std (0.5, 1.0))."""
    return torch.tensor([1.0, -0.5]) + torch.tensor([0.5, 1.0]) * torch.randn(n, 2, generator=generator)


TOY_DISTRIBUTIONS: dict[str, Sampler] = {
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "moons": moons,
    "spirals": spirals,
    "rings": rings,
    "gaussian": gaussian,
}


def toy_sample(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n points of the named distribution."""
    try:
        sampler = TOY_DISTRIBUTIONS[name]
    except KeyError:
        raise ValueError(f"unknown toy distribution {name!r}; choose one of {', '.join(TOY_DISTRIBUTIONS)}") from None
    return sampler(n, generator)
