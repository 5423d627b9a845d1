"""Exponential moving averages of the weights, for one or more decays: avg <- decay avg + (1 - decay) w."""
from __future__ import annotations

import torch
from torch import nn


def decay_key(decay: float) -> str:
    """A stable name for a decay, used in checkpoints: 0.999 -> '0.999'."""
    return repr(float(decay))


class EMA:
    """Shadow copies of a model's floating-point parameters and buffers, one per decay."""

    def __init__(self, model: nn.Module, decays: list[float]) -> None:
        self.decays = list(decays)
        state = model.state_dict()
        self.shadows: dict[str, dict[str, torch.Tensor]] = {
            decay_key(d): {k: v.detach().clone() for k, v in state.items()} for d in self.decays
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        for decay in self.decays:
            shadow = self.shadows[decay_key(decay)]
            for name, value in state.items():
                if value.dtype.is_floating_point:
                    shadow[name].lerp_(value.detach(), 1 - decay)
                else:
                    shadow[name].copy_(value)

    def state(self, decay: float | str) -> dict[str, torch.Tensor]:
        key = decay if isinstance(decay, str) else decay_key(decay)
        return self.shadows[key]

    def load(self, shadows: dict[str, dict[str, torch.Tensor]]) -> None:
        for key, tensors in shadows.items():
            if key in self.shadows:
                for name, value in tensors.items():
                    self.shadows[key][name].copy_(value)
