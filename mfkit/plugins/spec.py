"""What a plugin registers.

A plugin package exposes, through entry points (see :mod:`mfkit.plugins.discovery`), objects of two kinds:

* :class:`ModalitySpec`: the data adapter of one kind of data. Its factory takes the validated
  parameters and returns a :class:`Modality`, which builds the data set, encodes raw items to model
  tensors, decodes model tensors back, saves samples as real files, and states the sample shape and
  the conditioning it offers.
* :class:`BackboneSpec`: a network. Its factory takes the validated parameters and a :class:`DataInfo`
  (sample shape, number of classes) and returns an ``nn.Module`` called as ``model(z, r, t, cond=None)``.

Each spec names a pydantic model of its own parameters; recipes are validated against it, so a recipe
can only ever reach code that a plugin registered. ``api_version`` guards against plugins written for
an incompatible mfkit.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.utils.data import Dataset

PLUGIN_API_VERSION = 1


class NoParams(BaseModel):
    """Parameters of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class DataInfo:
    """What a backbone needs to know about the data: per-sample shape and number of classes (None: unconditional)."""

    sample_shape: tuple[int, ...]
    num_classes: int | None = None


class Modality(abc.ABC):
    """The data adapter of one kind of data. Model tensors have shape (B, *sample_shape).

    ``dataset`` returns a map-style data set whose items are a tensor of ``sample_shape`` (already
    encoded) or a pair (tensor, class label). ``save`` writes real files a person can open.
    """

    #: Per-sample tensor shape, e.g. (2,) for points in the plane, (3, 32, 32) for images.
    sample_shape: tuple[int, ...]
    #: Names of the classes it offers as conditions, or None for unconditional data.
    class_names: Sequence[str] | None = None

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    @property
    def info(self) -> DataInfo:
        return DataInfo(tuple(self.sample_shape), self.num_classes)

    @abc.abstractmethod
    def dataset(self, split: str = "train") -> Dataset:
        """The training (or "val") data set of encoded items."""

    @abc.abstractmethod
    def encode(self, raw: Any) -> torch.Tensor:
        """One raw item (as a user holds it) -> a tensor of ``sample_shape``."""

    @abc.abstractmethod
    def decode(self, tensor: torch.Tensor) -> Any:
        """A batch of model tensors (B, *sample_shape) -> raw items (what :meth:`save` writes)."""

    @abc.abstractmethod
    def save(self, samples: torch.Tensor, out_dir: Path, cond: torch.Tensor | None = None) -> list[Path]:
        """Write a batch of model tensors (B, *sample_shape) as files under ``out_dir``; return their paths."""

    def label_of(self, name: str) -> int:
        """The class index of a condition given by name or number; ValueError listing the choices."""
        names = list(self.class_names or [])
        if not names:
            raise ValueError("this modality offers no conditions")
        if name in names:
            return names.index(name)
        if name.isdigit() and int(name) < len(names):
            return int(name)
        raise ValueError(f"unknown condition {name!r}; choose one of: {', '.join(names)}")


@dataclass(frozen=True)
class ModalitySpec:
    """Registers a modality: ``factory(params) -> Modality``, with ``params`` an instance of ``params_model``."""

    name: str
    description: str
    factory: Callable[[Any], Modality]
    params_model: type[BaseModel] = NoParams
    api_version: int = PLUGIN_API_VERSION
    kind: str = field(default="modality", init=False)


@dataclass(frozen=True)
class BackboneSpec:
    """Registers a backbone: ``factory(params, info: DataInfo) -> nn.Module`` called as ``model(z, r, t, cond=None)``."""

    name: str
    description: str
    factory: Callable[[Any, DataInfo], nn.Module]
    params_model: type[BaseModel] = NoParams
    api_version: int = PLUGIN_API_VERSION
    kind: str = field(default="backbone", init=False)
