"""Stateless samplers: noise at t = 1 to data at t = 0 over a decreasing time grid.

MeanFlow steps over an interval [r, t] with the average velocity: z_r = z_t - (t - r) u(z_t, r, t).
One step from t = 1 to r = 0 is x = e - u(e, 0, 1): one network call. Flow-matching Euler is the
special case that uses the instantaneous velocity u(z_t, t, t) on each interval.
Samplers hold no state: each call walks the grid it is given, and an optional callback sees each step.
:func:`guided_model` adds classifier-free guidance at sampling time to any model, for either sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from mfkit.core.broadcast import expand_like
from mfkit.core.calling import call_model
from mfkit.core.conditions import ConditionOps


@dataclass
class SamplerStep:
    """What a callback sees after each interval: index (0-based), the interval [r, t], the state
    before (z_t) and after (z_r) the step, and the velocity used."""

    index: int
    t: float
    r: float
    z_t: torch.Tensor
    z_r: torch.Tensor
    velocity: torch.Tensor


Callback = Callable[[SamplerStep], None]


def time_grid(steps: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """The uniform grid 1 = t_0 > t_1 > ... > t_steps = 0, of length steps + 1."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)


def _resolve_grid(steps: int, grid: Sequence[float] | torch.Tensor | None, device) -> torch.Tensor:
    if grid is None:
        return time_grid(steps, device=device)
    grid = torch.as_tensor(grid, dtype=torch.float64, device=device).flatten()
    if grid.numel() < 2:
        raise ValueError("a time grid needs at least two points, e.g. [1.0, 0.0]")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"the time grid must be strictly decreasing, got {grid.tolist()}")
    if grid[0] > 1 or grid[-1] < 0:
        raise ValueError(f"the time grid must lie in [0, 1], got {grid.tolist()}")
    return grid


def _walk(velocity_at, noise, steps, grid, callback) -> torch.Tensor:
    times = _resolve_grid(steps, grid, noise.device)
    z = noise
    batch = noise.shape[0]
    with torch.no_grad():
        for index, (t, r) in enumerate(zip(times[:-1].tolist(), times[1:].tolist())):
            t_vec = torch.full((batch,), t, device=noise.device, dtype=noise.dtype)
            r_vec = torch.full((batch,), r, device=noise.device, dtype=noise.dtype)
            velocity = velocity_at(z, r_vec, t_vec)
            z_next = z - expand_like(t_vec - r_vec, z) * velocity.to(z.dtype)
            if callback is not None:
                callback(SamplerStep(index, t, r, z, z_next, velocity))
            z = z_next
    return z


def sample(
    model: Any,
    noise: torch.Tensor,
    steps: int = 1,
    grid: Sequence[float] | torch.Tensor | None = None,
    cond: Any = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """MeanFlow sampling: z_r = z_t - (t - r) u(z_t, r, t) over the grid (default: ``steps`` uniform intervals).

    noise: (B, ...) at t = 1. Returns the sample at the grid's last time (t = 0 by default).
    ``grid`` overrides ``steps``: any strictly decreasing sequence in [0, 1], e.g. [1.0, 0.5, 0.0].
    Uses ``steps`` network calls and no guidance. Put the model in eval mode first.
    """
    return _walk(lambda z, r, t: call_model(model, z, r, t, cond), noise, steps, grid, callback)


def euler_sample(
    model: Any,
    noise: torch.Tensor,
    steps: int = 1,
    grid: Sequence[float] | torch.Tensor | None = None,
    cond: Any = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Flow-matching Euler over the same grid: z_r = z_t - (t - r) u(z_t, t, t). The many-step baseline."""
    return _walk(lambda z, r, t: call_model(model, z, t, t, cond), noise, steps, grid, callback)


def guided_model(model: Any, scale: float, ops: ConditionOps) -> Callable[..., torch.Tensor]:
    """Classifier-free guidance at sampling time, as a model the samplers call like any other:

        u_s(z, r, t | c) = u(z, r, t | null) + scale (u(z, r, t | c) - u(z, r, t | null)),

    two network calls per step (z (B, ...), r and t (B,), c any condition structure; ``ops.null_like``
    gives its null). ``scale`` 1 is the model itself. The model must have learned the null condition
    (trained with class dropout, e.g. ``Guidance(w_cfg=1, kappa=0, class_dropout=0.1)``), else the null
    term is noise. With :func:`euler_sample` this is the usual guided flow; with MeanFlow steps (r < t)
    it mixes average velocities, which equals the average velocity of the guided flow only as t - r -> 0
    (MeanFlow's own guidance is folded into training: :class:`mfkit.Guidance`).
    """
    if scale == 1:
        return model

    def guided(z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is None:
            raise ValueError("classifier-free guidance needs conditions to guide towards; sample with cond")
        u_cond = call_model(model, z, r, t, cond)
        u_null = call_model(model, z, r, t, ops.null_like(cond))
        return u_null + scale * (u_cond - u_null)

    return guided
