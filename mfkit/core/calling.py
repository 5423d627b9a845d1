"""How the core calls a backbone: ``model(z, r, t, cond=cond)``, unconditional models without ``cond``."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

Backbone = Callable[..., torch.Tensor]


def call_model(model: Backbone, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
    """``model(z, r, t, cond=cond)``; ``model(z, r, t)`` for an unconditional model without a ``cond`` argument."""
    if cond is None and not _takes_cond(model):
        return model(z, r, t)
    return model(z, r, t, cond=cond)


def without_wrapper(model: Backbone) -> Backbone:
    """The module inside a DistributedDataParallel wrapper, for passes that need no gradient.

    Gradient-carrying passes always go through the wrapper, so its all-reduce hooks see them.
    """
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def innermost(model: Backbone) -> Backbone:
    """The user's own module: without a DDP wrapper and without torch.compile's wrapper."""
    inner = without_wrapper(model)
    return getattr(inner, "_orig_mod", inner)


def _takes_cond(model: Backbone) -> bool:
    inner = innermost(model)
    forward = inner.forward if isinstance(inner, nn.Module) else inner
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume the documented convention
        return True
    return any(p.name == "cond" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
