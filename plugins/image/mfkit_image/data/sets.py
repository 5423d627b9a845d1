"""Map-style data sets of pictures and a deterministic held-out split."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from mfkit_image.data.pixels import to_tensor


class PictureSet(Dataset):
    """uint8 pictures (N, H, W, C) (an array or a memory map) with optional labels (N,).

    Items are float32 (C, H, W) in [-1, 1], or (item, label) when labelled. With ``flip`` the set has
    2N items: item N + i is picture i mirrored left-right, so augmentation follows the trainer's seeded
    data order (deterministic and exact on resume) instead of a random draw per access.
    """

    def __init__(self, pictures: np.ndarray, labels: np.ndarray | None = None, flip: bool = False) -> None:
        self.pictures, self.labels, self.flip = pictures, labels, flip

    def __len__(self) -> int:
        return len(self.pictures) * (2 if self.flip else 1)

    def __getitem__(self, index: int):
        base = index % len(self.pictures)
        picture = np.asarray(self.pictures[base])
        if index >= len(self.pictures):
            picture = picture[:, ::-1]
        x = to_tensor(np.ascontiguousarray(picture))
        if self.labels is None:
            return x
        return x, torch.tensor(int(self.labels[base]), dtype=torch.long)


class LazyPictureSet(Dataset):
    """Pictures decoded on access by ``read(i) -> (uint8 (H, W, C), index read)`` (the reader may
    substitute another item for an unreadable one; its label follows): for folders too large to cache."""

    def __init__(self, count: int, read: Callable[[int], tuple[np.ndarray, int]], labels: np.ndarray | None = None,
                 flip: bool = False) -> None:
        self.count, self.read, self.labels, self.flip = count, read, labels, flip

    def __len__(self) -> int:
        return self.count * (2 if self.flip else 1)

    def __getitem__(self, index: int):
        picture, base = self.read(index % self.count)
        if index >= self.count:
            picture = picture[:, ::-1]
        x = to_tensor(np.ascontiguousarray(picture))
        if self.labels is None:
            return x
        return x, torch.tensor(int(self.labels[base]), dtype=torch.long)


def held_out_split(labels: np.ndarray | None, count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a share ``fraction`` of every class (of all items when
    unlabelled) held out, chosen by a permutation seeded with ``seed``; both sorted."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(count)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    held = []
    for group in groups:
        take = int(round(len(group) * fraction))
        held.append(rng.permutation(group)[:take])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(count), held_out)
    return train, held_out
