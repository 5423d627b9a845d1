"""Exponential moving averages of the weights, for one or more decays: avg <- decay avg + (1 - decay) w."""
from __future__ import annotations

import torch
from torch import nn


def decay_key(decay: float) -> str:
    """A stable name for a decay, used in checkpoints: 0.999 -> '0.999'."""
    return repr(float(decay))


def warmed_decay(decay: float, updates: int) -> float:
    """min(decay, (1 + n) / (10 + n)) after n earlier updates: early averages forget the initial weights
    quickly (0.1 at the first update, 0.5 at the ninth), later ones use ``decay``."""
    return min(decay, (1 + updates) / (10 + updates))


class EMA:
    """Shadow copies of a model's floating-point parameters and buffers, one per decay.

    Without warm-up, a shadow keeps decay^n of the initial weights after n updates (0.999 over 2,000
    steps: 13.5%), which holds short runs back. ``warmup=True`` uses :func:`warmed_decay` instead; the
    trainer passes the step so a resumed run continues the same schedule.
    """

    def __init__(self, model: nn.Module, decays: list[float], warmup: bool = False) -> None:
        self.decays, self.warmup = list(decays), warmup
        state = model.state_dict()
        self.shadows: dict[str, dict[str, torch.Tensor]] = {
            decay_key(d): {k: v.detach().clone() for k, v in state.items()} for d in self.decays
        }

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int = 0) -> None:
        """One update; ``updates``: how many came before (used by the warm-up)."""
        state = model.state_dict()
        groups: dict[tuple, list[str]] = {}  # floating tensors by (device, dtype): the fused kernel's unit
        for name, value in state.items():
            if value.dtype.is_floating_point:
                groups.setdefault((value.device, value.dtype), []).append(name)
        for decay in self.decays:
            shadow = self.shadows[decay_key(decay)]
            rate = 1 - (warmed_decay(decay, updates) if self.warmup else decay)
            # one fused call per group where the backend has one (on a GPU a few kernels instead of one per
            # tensor); each element as Tensor.lerp_ computes it
            for names in groups.values():
                torch._foreach_lerp_([shadow[name] for name in names], [state[name].detach() for name in names], rate)
            for name, value in state.items():
                if not value.dtype.is_floating_point:
                    shadow[name].copy_(value)

    def state(self, decay: float | str) -> dict[str, torch.Tensor]:
        key = decay if isinstance(decay, str) else decay_key(decay)
        return self.shadows[key]

    @torch.no_grad()
    def load(self, shadows: dict[str, dict[str, torch.Tensor]], model: nn.Module | None = None) -> list[str]:
        """Take the saved shadows of this EMA's decays; a decay the checkpoint lacks (added on resume) starts
        from ``model``'s weights (the resumed ones) when given. Returns the keys of the decays started so."""
        for key, tensors in shadows.items():
            if key in self.shadows:
                for name, value in tensors.items():
                    self.shadows[key][name].copy_(value)
        fresh = [key for key in self.shadows if key not in shadows]
        if model is not None:
            state = model.state_dict()
            for key in fresh:
                for name, value in state.items():
                    self.shadows[key][name].copy_(value.detach())
        return fresh
