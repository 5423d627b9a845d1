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


def walk_modules(root: nn.Module) -> list[nn.Module]:
    """``list(root.modules())`` (pre-order, each module once) without building the dotted names that
    ``named_modules`` builds on the way: checks that run on every training step walk the backbone."""
    found: list[nn.Module] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append(module)
        stack.extend(child for child in reversed(module._modules.values()) if child is not None)
    return found


def _takes_cond(model: Backbone) -> bool:
    inner = innermost(model)
    if isinstance(inner, nn.Module) and "forward" not in inner.__dict__:
        key = (type(inner), type(inner).forward)  # the class's forward: read its signature once (0.1 ms a call)
        if key not in _CLASS_TAKES_COND:
            _CLASS_TAKES_COND[key] = _signature_takes_cond(inner.forward)
        return _CLASS_TAKES_COND[key]
    return _signature_takes_cond(inner.forward if isinstance(inner, nn.Module) else inner)


_CLASS_TAKES_COND: dict[tuple[type, Callable], bool] = {}


def _signature_takes_cond(forward: Callable) -> bool:
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume the documented convention
        return True
    return any(p.name == "cond" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
