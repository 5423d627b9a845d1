"""Conditions as the objective sees them: any structure, with a null value for classifier-free guidance.

The core never looks inside a condition. Guidance needs two operations on a batch of conditions, given
by a :class:`ConditionOps`:

* ``null_like(cond)``: the same batch with every entry set to the null (unconditional) value;
* ``where_dropped(cond, dropped)``: entries where ``dropped`` (B,) is true set to null, others kept.

:class:`LabelConditions` covers integer class labels (B,) with a null label; :class:`TensorConditions`
any tensor (B, ...) with a null value of the per-sample shape; :class:`StructConditions` a mapping
of named parts (e.g. token ids and their mask), each with its own ops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import torch

from mfkit.core.broadcast import expand_like


class ConditionOps(Protocol):
    """The two operations guidance in training needs on a batch of conditions."""

    def null_like(self, cond: Any) -> Any: ...

    def where_dropped(self, cond: Any, dropped: torch.Tensor) -> Any: ...


@dataclass(frozen=True)
class LabelConditions:
    """Integer labels (B,) or (B, ...) (e.g. token ids); ``null_label`` (by convention the number of
    classes) means none."""

    null_label: int

    def null_like(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.full_like(cond, self.null_label)

    def where_dropped(self, cond: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        return torch.where(expand_like(dropped.to(cond.device), cond), self.null_like(cond), cond)


@dataclass(frozen=True)
class TensorConditions:
    """A tensor condition (B, ...) whose null value ``null`` has the per-sample shape (...)."""

    null: torch.Tensor

    def null_like(self, cond: torch.Tensor) -> torch.Tensor:
        return self.null.to(device=cond.device, dtype=cond.dtype).expand_as(cond).clone()

    def where_dropped(self, cond: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        return torch.where(expand_like(dropped.to(cond.device), cond), self.null_like(cond), cond)


@dataclass(frozen=True)
class StructConditions:
    """A mapping of named condition parts (each (B, ...)), each with its own :class:`ConditionOps`."""

    parts: Mapping[str, ConditionOps] = field(default_factory=dict)

    def null_like(self, cond: Mapping[str, Any]) -> dict[str, Any]:
        return {key: self.parts[key].null_like(value) if key in self.parts else value for key, value in cond.items()}

    def where_dropped(self, cond: Mapping[str, Any], dropped: torch.Tensor) -> dict[str, Any]:
        return {key: self.parts[key].where_dropped(value, dropped) if key in self.parts else value
                for key, value in cond.items()}


def batch_size_of(cond: Any) -> int:
    """The batch size of a condition structure (its first tensor's first dimension)."""
    if isinstance(cond, torch.Tensor):
        return cond.shape[0]
    if isinstance(cond, Mapping):
        return batch_size_of(next(iter(cond.values())))
    if isinstance(cond, (list, tuple)):
        return batch_size_of(cond[0])
    raise TypeError(f"cannot find a batch size in a condition of type {type(cond).__name__}")


def move_condition(cond: Any, device: torch.device | str) -> Any:
    """The condition structure with every tensor moved to ``device``."""
    if isinstance(cond, torch.Tensor):
        return cond.to(device, non_blocking=True)
    if isinstance(cond, Mapping):
        return {key: move_condition(value, device) for key, value in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(move_condition(value, device) for value in cond)
    return cond


def slice_condition(cond: Any, index: slice) -> Any:
    """Rows ``index`` of every tensor in the condition structure."""
    if isinstance(cond, torch.Tensor):
        return cond[index]
    if isinstance(cond, Mapping):
        return {key: slice_condition(value, index) for key, value in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(slice_condition(value, index) for value in cond)
    return cond
