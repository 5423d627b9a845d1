"""Distributions of the times (t, r) used in training.

Time runs from data (t = 0) to noise (t = 1). MeanFlow draws two times, sets t = max and r = min,
and for a random share of the samples sets r = t (those samples are plain flow matching).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

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

    Two times a ~ ``t_dist`` and b ~ ``r_dist`` (default: ``t_dist``) are drawn independently.

    ``order="sort"`` (the paper's sampler): t = max(a, b), r = min(a, b); then each sample independently
    keeps r != t with probability ``r_neq_t_share`` and gets r = t otherwise. The share of r != t is
    exactly ``r_neq_t_share`` (up to ties of measure zero).

    ``order="clip"`` (the official PyTorch port's "v1" post-processing): t = a; each sample keeps
    r = b with probability ``r_neq_t_share`` and gets r = t otherwise; then r = min(t, r), with no
    swap. The share of r != t is then ``r_neq_t_share * P(b < a)``, below ``r_neq_t_share``.

    ``full_jump_share`` (default 0): afterwards, each sample independently gets (r, t) = (0, 1) with this
    probability: the interval that one-step sampling evaluates, x = e - u(e, 0, 1), which neither
    ordering draws (a logit-normal puts almost no mass near both ends at once). Those samples keep the
    exact MeanFlow target; at 0 no extra random number is drawn, so draws equal those without the option.
    """

    t_dist: TimeDistribution = LogitNormal()
    r_dist: TimeDistribution | None = None
    r_neq_t_share: float = 0.25
    order: Literal["sort", "clip"] = "sort"
    full_jump_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.r_neq_t_share <= 1.0:
            raise ValueError(f"r_neq_t_share must lie in [0, 1], got {self.r_neq_t_share}")
        if not 0.0 <= self.full_jump_share <= 1.0:
            raise ValueError(f"full_jump_share must lie in [0, 1], got {self.full_jump_share}")
        if self.order not in ("sort", "clip"):
            raise ValueError(f"order must be 'sort' or 'clip', got {self.order!r}")

    def sample(
        self, n: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (t, r), each of shape (n,), with 0 <= r <= t <= 1."""
        a = self.t_dist.sample(n, device=device, generator=generator)
        b = (self.r_dist or self.t_dist).sample(n, device=device, generator=generator)
        u = torch.rand(n, device=device, generator=generator)
        if self.order == "clip":  # the port's own comparison, so equal seeds give equal draws
            t, r = a, torch.minimum(a, torch.where(u < 1 - self.r_neq_t_share, a, b))
        else:
            t, r = torch.maximum(a, b), torch.minimum(a, b)
            r = torch.where(u < self.r_neq_t_share, r, t)
        if self.full_jump_share > 0:
            jump = torch.rand(n, device=device, generator=generator) < self.full_jump_share
            t, r = t.masked_fill(jump, 1.0), r.masked_fill(jump, 0.0)
        return t, r


def cifar10_v1_sampler(r_neq_t_share: float = 0.75) -> TimePairSampler:
    """The official PyTorch port's CIFAR-10 "v1" sampler: t ~ LN(-0.6, 1.6), r ~ LN(-4.0, 1.6), r = t for
    a share 1 - ``r_neq_t_share`` of samples (the port's ``ratio`` is ``r_neq_t_share``), then
    r = min(t, r) without a swap. With the default 0.75 about 70% of samples get r != t (r drawn above t
    in the rest)."""
    return TimePairSampler(LogitNormal(-0.6, 1.6), LogitNormal(-4.0, 1.6), r_neq_t_share, order="clip")
