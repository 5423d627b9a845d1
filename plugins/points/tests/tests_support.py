"""Helpers shared by the tests."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from mfkit.plugins import PluginContext
from mfkit_points.modality import SPEC, Points, PointsParams


def build(params: dict, context: PluginContext) -> Points:
    """The points modality with ``params`` (the rest default) in ``context``."""
    return SPEC.build(PointsParams(**params), context)


def stack(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All (cloud, label) items of a data set as clouds (S, N, 3) and labels (S,)."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])
