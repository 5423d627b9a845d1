"""Two-dimensional toy distributions, drawn on the fly (no files): the standard flow-model sanity checks.

Each sampler returns (n, 2) float32 points of roughly unit scale per coordinate, and (n,) integer labels
saying which part of the distribution each point came from (its mode, moon, arm or ring), for
conditional training. ``CLASSES`` lists the label names of each distribution.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Sampler = Callable[[int, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]


def _uniform(n, generator):
    return torch.rand(n, generator=generator)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform over the black squares of a 4x4 board on [-2, 2]^2."""
    x = 4 * _uniform(n, generator) - 2
    row = torch.randint(0, 2, (n,), generator=generator) * 2  # 0 or 2
    y = _uniform(n, generator) - 2 + row + (torch.floor(x) % 2)
    column = torch.clamp(torch.floor(x) + 2, 0, 3).long()
    return torch.stack([x, y], dim=1), column


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eight Gaussians (std 0.1 x radius) on a circle of radius 2."""
    which = torch.randint(0, 8, (n,), generator=generator)
    angle = which.float() * (2 * math.pi / 8)
    centres = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + 0.2 * torch.randn(n, 2, generator=generator), which


def moons(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved half circles with a little noise."""
    upper = torch.rand(n, generator=generator) < 0.5
    angle = math.pi * _uniform(n, generator)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x - 0.5, y - 0.25], dim=1) * 2
    return points + 0.1 * torch.randn(n, 2, generator=generator), (~upper).long()


def spirals(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved spirals."""
    radius = torch.sqrt(_uniform(n, generator)) * 3 * math.pi
    which = (torch.rand(n, generator=generator) < 0.5).long()
    arm = which.float() * math.pi
    x = torch.stack([radius * torch.cos(radius + arm), radius * torch.sin(radius + arm)], dim=1) / 4.5
    return x + 0.08 * torch.randn(n, 2, generator=generator), which


def rings(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Three concentric rings of radius 0.8, 1.6, 2.4."""
    which = torch.randint(0, 3, (n,), generator=generator)
    radius = 0.8 * (which.float() + 1)
    angle = 2 * math.pi * _uniform(n, generator)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return x + 0.08 * torch.randn(n, 2, generator=generator), which


def gaussian(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A single shifted, anisotropic Gaussian (mean (1, -0.5), std (0.5, 1.0))."""
    points = torch.tensor([1.0, -0.5]) + torch.tensor([0.5, 1.0]) * torch.randn(n, 2, generator=generator)
    return points, torch.zeros(n, dtype=torch.long)


TOY_DISTRIBUTIONS: dict[str, Sampler] = {
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "moons": moons,
    "spirals": spirals,
    "rings": rings,
    "gaussian": gaussian,
}


CLASSES: dict[str, list[str]] = {
    "checkerboard": ["column0", "column1", "column2", "column3"],
    "eight_gaussians": ["east", "northeast", "north", "northwest", "west", "southwest", "south", "southeast"],
    "moons": ["upper", "lower"],
    "spirals": ["arm0", "arm1"],
    "rings": ["inner", "middle", "outer"],
    "gaussian": ["all"],
}


def toy_sample_labeled(name: str, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n points (n, 2) of the named distribution with their labels (n,)."""
    try:
        sampler = TOY_DISTRIBUTIONS[name]
    except KeyError:
        raise ValueError(f"unknown toy distribution {name!r}; choose one of {', '.join(TOY_DISTRIBUTIONS)}") from None
    return sampler(n, generator)


def toy_sample(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n points (n, 2) of the named distribution."""
    return toy_sample_labeled(name, n, generator)[0]
