"""Deterministic data order: which items every process reads at every step, from the seed alone.

Step s of a run reads global positions [s B, (s + 1) B) of an endless stream made of one random
permutation of the data set per epoch (seeded by (seed, epoch)); process k of W takes its share
[k B/W, (k + 1) B/W) of those. Resuming at step s therefore reads exactly what an uninterrupted
run would have read, and W processes together read what one process would.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index list of each step from ``start_step`` to ``total_steps`` (exclusive) for one process."""

    def __init__(self, dataset_size: int, global_batch: int, rank: int, world_size: int, seed: int,
                 start_step: int, total_steps: int) -> None:
        if dataset_size < 1:
            raise ValueError("the data set is empty")
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        self.size, self.batch, self.seed = dataset_size, global_batch, seed
        self.rank, self.world = rank, world_size
        self.start, self.total = start_step, total_steps
        self._epoch, self._permutation = -1, None

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.size, generator=generator)
        return self._permutation

    def _global_indices(self, step: int) -> list[int]:
        out, position, end = [], step * self.batch, (step + 1) * self.batch
        while position < end:
            epoch, offset = divmod(position, self.size)
            take = min(end - position, self.size - offset)
            out += self._order(epoch)[offset:offset + take].tolist()
            position += take
        return out

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch // self.world
        for step in range(self.start, self.total):
            indices = self._global_indices(step)
            yield indices[self.rank * share:(self.rank + 1) * share]

    def __len__(self) -> int:
        return max(0, self.total - self.start)
