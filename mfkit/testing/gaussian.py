r"""The exact flow of Gaussian data: a closed-form oracle for the MeanFlow identity.

Data x ~ N(m, s^2 I) (m, s broadcast to the data shape), noise e ~ N(0, I), z_t = (1 - t) x + t e.
Then z_t ~ N((1 - t) m, sigma_t^2 I) with sigma_t^2 = (1 - t)^2 s^2 + t^2, and the marginal flow keeps
the standardised coordinate xi = (z - (1 - t) m) / sigma_t fixed, so

    v(z, t)    = -m + sigma_t' xi,             sigma_t' = (t - (1 - t) s^2) / sigma_t
    u(z, r, t) = -m + (sigma_t - sigma_r) / (t - r) xi      (-> v(z, t) as r -> t)

and one step from t = 1 gives e - u(e, 0, 1) = m + s e, exactly the data distribution.
"""
from __future__ import annotations

import torch
from torch import nn


class GaussianOracle(nn.Module):
    """Exact average velocity u(z, r, t) of Gaussian data, as a backbone ``model(z, r, t, cond=None)``."""

    def __init__(self, mean: torch.Tensor | float, std: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float64))

    def _per_sample(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], *([1] * (z.ndim - 1))).to(z.dtype)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t = sqrt((1 - t)^2 s^2 + t^2), broadcast against the data."""
        return torch.sqrt((1 - t) ** 2 * self.std.to(t.dtype) ** 2 + t**2)

    def standardised(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = self._per_sample(t, z)
        return (z - (1 - t) * self.mean.to(z.dtype)) / self.sigma(t)

    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Marginal (instantaneous) velocity v(z, t)."""
        xi = self.standardised(z, t)
        t = self._per_sample(t, z)
        s2 = self.std.to(z.dtype) ** 2
        return -self.mean.to(z.dtype) + (t - (1 - t) * s2) / self.sigma(t) * xi

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        xi = self.standardised(z, t)
        t_, r_ = self._per_sample(t, z), self._per_sample(r, z)
        s2 = self.std.to(z.dtype) ** 2
        gap = t_ - r_
        same = gap.abs() < 1e-6
        safe_gap = torch.where(same, torch.ones_like(gap), gap)
        slope = torch.where(same, (t_ - (1 - t_) * s2) / self.sigma(t_), (self.sigma(t_) - self.sigma(r_)) / safe_gap)
        return -self.mean.to(z.dtype) + slope * xi
