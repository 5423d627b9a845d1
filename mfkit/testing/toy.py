"""A minimal, deterministic training loop on 2-D toy data: for tests, benchmarks and quick experiments.

The full training engine (EMA, checkpoints, recipes) lives in :mod:`mfkit.train`; this is the bare
math in a loop, so objectives can be compared with everything else held equal.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from mfkit.data.toy2d import toy_sample
from mfkit.nn import MLPBackbone


@dataclass
class ToyRun:
    """The trained model (its EMA when one was kept), the raw weights, and the unweighted MSE per step."""

    model: MLPBackbone
    raw: MLPBackbone
    mse: list[float] = field(default_factory=list)


def train_toy(
    objective,
    distribution: str = "eight_gaussians",
    steps: int = 300,
    batch: int = 256,
    width: int = 128,
    depth: int = 3,
    lr: float = 1e-3,
    ema_decay: float | None = None,
    cosine: bool = False,
    seed: int = 0,
) -> ToyRun:
    """Train an :class:`MLPBackbone` on fresh batches of a toy distribution with Adam (optional EMA,
    optional cosine decay of the learning rate to 0 at the last step)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = MLPBackbone(2, width=width, depth=depth)
    ema = copy.deepcopy(model) if ema_decay is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)) if cosine else 1.0)
    run = ToyRun(ema if ema is not None else model, model)
    for step in range(steps):
        x = toy_sample(distribution, batch, generator)
        out = objective(model, x, generator=generator, progress=step / steps)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        if ema is not None:
            with torch.no_grad():
                for averaged, current in zip(ema.parameters(), model.parameters()):
                    averaged.lerp_(current, 1 - ema_decay)
        run.mse.append(float(out.mse))
    model.eval()
    run.model.eval()
    return run
