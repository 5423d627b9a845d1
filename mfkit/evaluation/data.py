"""Real data for evaluation: a split of a modality as one tensor (N, *sample_shape) with its conditions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from mfkit.core.conditions import slice_condition
from mfkit.plugins.spec import Modality


@dataclass
class RealData:
    """Encoded items ``x`` (N, *sample_shape) on the CPU and their conditions (None when unconditional)."""

    x: torch.Tensor
    cond: Any = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, index: torch.Tensor | slice) -> "RealData":
        return RealData(self.x[index], None if self.cond is None else slice_condition(self.cond, index))

    def subset(self, limit: int | None, seed: int = 0) -> "RealData":
        """At most ``limit`` items drawn without replacement from ``seed``, in their stored order (as
        :func:`load_split` draws them from a data set)."""
        if limit is None or len(self) <= limit:
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit]
        return self.take(order.sort().values)


def cat_conditions(parts: list[Any]) -> Any:
    """Concatenate a list of condition batches (tensors, or mappings / sequences of them) along dim 0."""
    if not parts or parts[0] is None:
        return None
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {key: cat_conditions([part[key] for part in parts]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(cat_conditions(list(column)) for column in zip(*parts))
    raise TypeError(f"cannot concatenate conditions of type {type(first).__name__}")


def load_split(modality: Modality, split: str, limit: int | None = None, seed: int = 0,
               batch_size: int = 1024) -> RealData:
    """Items of ``modality.dataset(split)``: all of them, or ``limit`` drawn without replacement from
    ``seed`` (the first ``limit`` of an iterable data set). Batches go through the modality's collate
    and unpack, so padded or structured data arrive as the model sees them."""
    if split not in modality.splits:
        raise ValueError(f"{type(modality).__name__} has no {split!r} split (it has {', '.join(modality.splits)}); "
                         f"evaluation needs 'train' and 'val'")
    dataset: Dataset = modality.dataset(split)
    if limit is not None and not isinstance(dataset, IterableDataset) and len(dataset) > limit:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
        dataset = Subset(dataset, order.sort().values.tolist())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=modality.collate(),
                        generator=torch.Generator())
    xs, conds, count = [], [], 0
    for batch in loader:
        x, cond = modality.unpack(batch)
        xs.append(x.cpu())
        conds.append(cond)
        count += x.shape[0]
        if limit is not None and count >= limit:
            break
    if not xs:
        raise ValueError(f"the {split!r} split of {type(modality).__name__} is empty")
    data = RealData(torch.cat(xs), cat_conditions(conds))
    return data.take(slice(0, limit)) if limit is not None and len(data) > limit else data


def matching(cond: Any, target: Any) -> torch.Tensor:
    """(N,) bool: the items whose condition equals the first entry of ``target`` (a parsed --cond)."""
    if not isinstance(cond, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("--cond can select real items only for tensor conditions (class labels, vectors); "
                         "this modality's conditions are structured")
    wanted = target[:1].to(cond.dtype)
    return (cond == wanted).reshape(cond.shape[0], -1).all(dim=1)


def select_condition(data: RealData, target: Any, split: str, text: str) -> RealData:
    """The items of ``data`` whose condition is the one ``--cond text`` names; an error when there are none."""
    if data.cond is None:
        raise ValueError(f"the {split!r} data carry no conditions, so --cond {text!r} cannot select any")
    keep = matching(data.cond, target)
    if not bool(keep.any()):
        raise ValueError(f"no item of the {split!r} split has the condition {text!r}; evaluation compares samples "
                         f"with real items of that condition")
    return data.take(keep.nonzero().flatten())
