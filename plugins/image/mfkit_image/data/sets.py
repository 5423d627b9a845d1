"""Map-style data sets of pictures, deterministic held-out splits and class-keeping subsets."""
from __future__ import annotations

import hashlib
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mfkit_image.data.pixels import to_tensor

#: How a run splits folders and latent shards and takes its ``limit`` subset, kept in the modality's state
#: as ``split_scheme`` so every resume and evaluation of a run sees the split it trained with.
#: 1 (runs whose state lacks the key: made before it was recorded): :func:`held_out_split` over the items
#: (a seeded permutation), ``limit`` = the first N training items.
#: 2: :func:`keyed_split` (a hash of each item's key), ``limit`` = :func:`class_mix_subset`.
#: The built-in digits are split by :func:`held_out_split` under both; MNIST keeps its official test set.
PERMUTED_SPLIT, KEYED_SPLIT = 1, 2
SPLIT_SCHEMES = (PERMUTED_SPLIT, KEYED_SPLIT)


def split_scheme_of(state: dict[str, torch.Tensor]) -> int:
    """The split scheme a loaded state records (:data:`PERMUTED_SPLIT` when it records none: its run was
    made before the scheme was saved); a scheme this version does not know is refused."""
    if "split_scheme" not in state:
        return PERMUTED_SPLIT
    scheme = int(state["split_scheme"])
    if scheme not in SPLIT_SCHEMES:
        raise ValueError(f"split_scheme {scheme} is not one this mfkit-image knows ({SPLIT_SCHEMES}); the run was "
                         f"made by a newer version: update mfkit-image")
    return scheme


def warn_old_split(path: str, kept: str, items: str, new_key: str) -> None:
    """Say that a run made before the split scheme was recorded keeps the split it trained with."""
    warnings.warn(f"{path}: this run was made before mfkit-image recorded its split scheme, so it keeps the split "
                  f"it trained with ({kept}; adding or removing {items} moves others between its splits); new runs "
                  f"hold out each {new_key}", stacklevel=4)


def split_scheme_state(scheme: int) -> torch.Tensor:
    """The state tensor recording ``scheme``."""
    return torch.tensor(scheme, dtype=torch.int64)


def _check_index(index: int, length: int) -> None:
    """IndexError outside 0..length-1 (a mirrored set's items N..2N-1 are real; beyond them nothing is, and
    iterating a set stops at the error)."""
    if not 0 <= index < length:
        raise IndexError(f"index {index} is out of range for a set of {length} items")


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
        _check_index(index, len(self))
        base = index % len(self.pictures)
        picture = np.asarray(self.pictures[base])
        if index >= len(self.pictures):
            picture = picture[:, ::-1]
        x = to_tensor(np.ascontiguousarray(picture))
        if self.labels is None:
            return x
        return x, torch.tensor(int(self.labels[base]), dtype=torch.long)

    def __getitems__(self, indices: Sequence[int]) -> list:
        """The items at ``indices`` as :meth:`__getitem__` gives them, converted in one batch (the data loader
        calls this once per batch: one gather and one conversion instead of one per picture)."""
        index = np.asarray(indices, dtype=np.int64)
        if index.size:
            _check_index(int(index.min()), len(self))
            _check_index(int(index.max()), len(self))
        count = len(self.pictures)
        base = index % count
        pictures = np.asarray(self.pictures[base], dtype=np.uint8)  # one gather (a memory map reads these rows)
        mirrored = index >= count
        if mirrored.any():
            pictures = np.where(mirrored[:, None, None, None], pictures[:, :, ::-1], pictures)
        x = to_tensor(pictures).unbind(0)
        if self.labels is None:
            return list(x)
        labels = torch.as_tensor(np.asarray(self.labels)[base].astype(np.int64)).unbind(0)
        return list(zip(x, labels))


class LazyPictureSet(Dataset):
    """Pictures decoded on access by ``read(i) -> (uint8 (H, W, C), index read)`` (the reader may
    substitute another item for an unreadable one; its label follows): for folders too large to cache."""

    def __init__(self, count: int, read: Callable[[int], tuple[np.ndarray, int]], labels: np.ndarray | None = None,
                 flip: bool = False) -> None:
        self.count, self.read, self.labels, self.flip = count, read, labels, flip

    def __len__(self) -> int:
        return self.count * (2 if self.flip else 1)

    def __getitem__(self, index: int):
        _check_index(index, len(self))
        picture, base = self.read(index % self.count)
        if index >= self.count:
            picture = picture[:, ::-1]
        x = to_tensor(np.ascontiguousarray(picture))
        if self.labels is None:
            return x
        return x, torch.tensor(int(self.labels[base]), dtype=torch.long)


def held_out_split(labels: np.ndarray | None, count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a share ``fraction`` of every class (of all items when
    unlabelled) held out, chosen by a permutation seeded with ``seed``; both sorted. For fixed sets only
    (the built-in digits): adding an item moves others between the splits; growing sets use :func:`keyed_split`."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(count)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    held = []
    for group in groups:
        take = int(round(len(group) * fraction))
        held.append(rng.permutation(group)[:take])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(count), held_out)
    return train, held_out


def key_share(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``(seed, key)`` alone (a SHA-256 hash): an item's place in the split."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2 ** 64


def keyed_split(keys: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): item i is held out when ``key_share(keys[i], seed) < fraction``,
    so its split never depends on the other items (files added later move no item; about ``fraction``
    of every class is held out)."""
    held = np.array([key_share(key, seed) < fraction for key in keys], dtype=bool)
    return np.flatnonzero(~held), np.flatnonzero(held)


def require_both_splits(train: int, held: int, fraction: float, where: str, items: str) -> None:
    """Refuse a :func:`keyed_split` that left the training or the held-out split empty."""
    if train and held:
        return
    empty, fix = ("val", "raise val_fraction") if train else ("train", "lower val_fraction")
    raise ValueError(f"the {empty!r} split of {where} is empty: val_fraction {fraction} holds out each of its "
                     f"{train + held} {items} by a hash of its name; {fix}, change split_seed or give val_path")


def class_mix_subset(labels: np.ndarray | None, count: int, limit: int, seed: int) -> np.ndarray:
    """``limit`` of ``count`` item indices (sorted) keeping each class's share: every class is shuffled
    (seeded), its k-th item ranked at (k + 0.5) / class size, and the lowest ranks taken."""
    if limit >= count:
        return np.arange(count)
    rng = np.random.default_rng(seed)
    groups = [np.arange(count)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    ranks = np.empty(count)
    for group in groups:
        ranks[rng.permutation(group)] = (np.arange(len(group)) + 0.5) / len(group)
    return np.sort(np.argsort(ranks, kind="stable")[:limit])
