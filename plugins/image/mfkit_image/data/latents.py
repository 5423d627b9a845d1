"""Folders of pre-encoded latent shards (the paper's ImageNet setting: a VAE's 32x32x4 latents).

A folder holds shards in name order, each either

* ``NAME.safetensors`` with the tensor ``latents`` (n, c, h, w) and optionally ``labels`` (n,), or
* ``NAME.npy`` (n, c, h, w) with optionally ``NAME.labels.npy`` (n,) beside it,

and optionally ``classes.txt`` (one class name per line, line k naming label k - 1; labelled shards
only; blank lines only at the end). Items are read on access through memory maps, so a data set
larger than memory works.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open


class LatentFolderError(ValueError):
    """A latent folder that cannot be used (missing, empty, inconsistent shards)."""


@dataclass
class Shard:
    path: Path
    count: int
    labels: np.ndarray | None


def read_class_names(path: Path) -> list[str]:
    """The class names of classes.txt, line k naming label k - 1 (blank lines at the end ignored); a blank
    or repeated name is refused, since dropping it would shift every later class."""
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    first: dict[str, int] = {}
    for line, name in enumerate(names, start=1):
        if not name:
            raise LatentFolderError(f"{path} line {line} is blank, but line k names label k - 1; write that "
                                    f"class's name there")
        if name in first:
            raise LatentFolderError(f"{path} line {line} repeats {name!r} (line {first[name]}); give every class "
                                    f"its own name")
        first[name] = line
    return names


class LatentShards:
    """All shards of a folder: ``len``, ``shape`` (c, h, w), ``labels`` (N,) or None, ``read(i)``."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise LatentFolderError(f"latent folder {self.folder} does not exist; set modality.params.path to a folder "
                                    f"of .safetensors or .npy latent shards")
        files = sorted(p for p in self.folder.iterdir()
                       if p.suffix == ".safetensors" or (p.suffix == ".npy" and not p.name.endswith(".labels.npy")))
        if not files:
            raise LatentFolderError(f"{self.folder} holds no latent shards (.safetensors with 'latents', or .npy)")
        self.shards, shapes = [], set()
        for path in files:
            shard, shape = self._inspect(path)
            self.shards.append(shard)
            shapes.add(shape)
        if len(shapes) != 1:
            raise LatentFolderError(f"the shards in {self.folder} have different latent shapes {sorted(shapes)}")
        self.shape: tuple[int, ...] = shapes.pop()
        if len(self.shape) != 3:
            raise LatentFolderError(f"latents must be (n, channels, height, width); {self.folder} has items of shape "
                                    f"{self.shape}")
        labelled = [s.labels is not None for s in self.shards]
        if any(labelled) and not all(labelled):
            missing = [s.path.name for s in self.shards if s.labels is None][:3]
            raise LatentFolderError(f"some shards in {self.folder} have labels and some not (e.g. {missing})")
        self.labels = np.concatenate([s.labels for s in self.shards]) if all(labelled) else None
        self.offsets = np.cumsum([0] + [s.count for s in self.shards])
        self._open: dict[int, object] = {}

    @staticmethod
    def _inspect(path: Path) -> tuple[Shard, tuple[int, ...]]:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                if "latents" not in handle.keys():
                    raise LatentFolderError(f"{path} has no tensor named 'latents' (it has {sorted(handle.keys())})")
                shape = tuple(handle.get_slice("latents").get_shape())
                labels = handle.get_tensor("labels").numpy().astype(np.int64) if "labels" in handle.keys() else None
        else:
            shape = tuple(np.load(path, mmap_mode="r").shape)
            label_file = path.with_name(path.stem + ".labels.npy")
            labels = np.load(label_file).astype(np.int64) if label_file.is_file() else None
        if labels is not None and len(labels) != shape[0]:
            raise LatentFolderError(f"{path} holds {shape[0]} latents but {len(labels)} labels")
        return Shard(path, shape[0], labels), tuple(shape[1:])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def keys(self) -> list[str]:
        """A stable name per latent, "SHARD_FILE:ROW" (its held-out split depends on nothing else)."""
        return [f"{shard.path.name}:{row}" for shard in self.shards for row in range(shard.count)]

    def class_names(self) -> list[str] | None:
        """Names from classes.txt, else "0" .. "K-1" for labels up to K - 1; None when unlabelled
        (classes.txt beside unlabelled shards is refused: it declares classes no item carries)."""
        names_file = self.folder / "classes.txt"
        if names_file.is_file():
            if self.labels is None:
                raise LatentFolderError(f"{names_file} names classes but the shards in {self.folder} carry no "
                                        f"labels; add them ('labels' in each .safetensors, NAME.labels.npy beside "
                                        f"each .npy), or set conditional: false to train without classes")
            names = read_class_names(names_file)
            if len(self.labels) and self.labels.max() >= len(names):
                raise LatentFolderError(f"labels reach {self.labels.max()} but {names_file} names only {len(names)} "
                                        f"classes")
            return names
        if self.labels is None:
            return None
        return [str(k) for k in range(int(self.labels.max()) + 1)]

    def read(self, index: int) -> torch.Tensor:
        """Latent ``index`` as float32 (c, h, w)."""
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        local = index - int(self.offsets[k])
        handle = self._open.get(k)
        if handle is None:
            path = self.shards[k].path
            handle = safe_open(str(path), framework="pt") if path.suffix == ".safetensors" else np.load(path, mmap_mode="r")
            self._open[k] = handle
        if isinstance(handle, np.ndarray):
            return torch.from_numpy(np.array(handle[local], dtype=np.float32))
        return handle.get_slice("latents")[local:local + 1][0].float()

    def __getstate__(self):  # open handles stay in their process (data-loader workers reopen them)
        return {**self.__dict__, "_open": {}}
