"""Distributions of the times (t, r) used in training.

Time runs from data (t = 0) to noise (t = 1). MeanFlow draws two times, sets t = max and r = min,
and for a random share of the samples sets r = t (those samples are plain flow matching).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class TimeDistribution(Protocol):
    """A distribution over [0, 1] that draws ``n`` independent times."""

    def sample(
        self, n: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class LogitNormal:
    """t = sigmoid(mean + std * N(0, 1)). The paper's default is mean = -0.4, std = 1.0."""

    mean: float = -0.4
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise ValueError(f"LogitNormal std must be positive, got {self.std}")

    def sample(self, n, *, device="cpu", generator=None):
        normal = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(self.mean + self.std * normal)


@dataclass(frozen=True)
class Uniform:
    """t ~ U[low, high]."""

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"Uniform needs 0 <= low < high <= 1, got [{self.low}, {self.high}]")

    def sample(self, n, *, device="cpu", generator=None):
        return self.low + (self.high - self.low) * torch.rand(n, device=device, generator=generator)


@dataclass(frozen=True)
class TimePairSampler:
    """Draws (t, r) with r <= t.

    Two times a ~ ``t_dist`` and b ~ ``r_dist`` are drawn independently, t = max(a, b), r = min(a, b).
    Then each sample independently keeps r != t with probability ``r_neq_t_share`` and gets r = t
    otherwise. With ``r_dist`` = ``t_dist`` this is the paper's sampler; the CIFAR-10 "v1" sampler of
    the official PyTorch port uses a separate logit-normal for r (see :func:`cifar10_v1_sampler`).
    """

    t_dist: TimeDistribution = LogitNormal()
    r_dist: TimeDistribution | None = None
    r_neq_t_share: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.r_neq_t_share <= 1.0:
            raise ValueError(f"r_neq_t_share must lie in [0, 1], got {self.r_neq_t_share}")

    def sample(
        self, n: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (t, r), each of shape (n,), with 0 <= r <= t <= 1."""
        a = self.t_dist.sample(n, device=device, generator=generator)
        b = (self.r_dist or self.t_dist).sample(n, device=device, generator=generator)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        keep_r = torch.rand(n, device=device, generator=generator) < self.r_neq_t_share
        return t, torch.where(keep_r, r, t)


def cifar10_v1_sampler(r_neq_t_share: float = 0.75) -> TimePairSampler:
    """The official PyTorch port's CIFAR-10 "v1" sampler: t ~ LN(-0.6, 1.6), r ~ LN(-4.0, 1.6)."""
    return TimePairSampler(LogitNormal(-0.6, 1.6), LogitNormal(-4.0, 1.6), r_neq_t_share)
