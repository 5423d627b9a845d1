"""What a plugin registers (plugin API version 2; plugins written for version 1 keep working).

A plugin package exposes, through entry points (see :mod:`mfkit.plugins.discovery`), objects of these kinds:

* :class:`ModalitySpec`: the data adapter of one kind of data. Its factory takes the validated
  parameters and a :class:`PluginContext` and returns a :class:`Modality`, which builds the data sets,
  fits and keeps any state (normalisation statistics, ...), declares its conditioning, encodes raw items
  to model tensors, decodes them back, and saves samples as real files.
* :class:`BackboneSpec`: a network. Its factory takes the validated parameters, a :class:`DataInfo`
  (sample shape, conditioning) and a :class:`PluginContext`, and returns an ``nn.Module`` called as
  ``model(z, r, t, cond=None)``.
* Recipes: a package (a folder of YAML files) in the entry-point group ``mfkit.recipes``.

Each spec names a pydantic model of its own parameters; recipes are validated against it, so a recipe
can only ever reach code that a plugin registered. ``api_version`` (a number or an inclusive range
``(low, high)``) says which plugin API versions the spec is written for.
"""
from __future__ import annotations

import abc
import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.utils.data import Dataset

from mfkit.core.conditions import ConditionOps, LabelConditions, TensorConditions

PLUGIN_API_VERSION = 2
#: Versions this mfkit can load; version 1 plugins work unchanged (with a deprecation warning).
SUPPORTED_API_VERSIONS = (1, 2)

Purpose = Literal["train", "sample", "validate", "eval", "test"]


def default_cache_dir() -> Path:
    """Where plugins keep generated or decoded data: ``$MFKIT_CACHE`` or ``~/.cache/mfkit``."""
    return Path(os.environ.get("MFKIT_CACHE") or Path.home() / ".cache" / "mfkit")


def file_signature(path: str | os.PathLike) -> str:
    """What a cache key should record of a data file instead of hashing its bytes: its size, modification
    time and inode change time (ns). The change time is set by the system on every write and cannot be set
    back, so a file rewritten with its size and modification time kept (``cp -p``, ``rsync -t``, a tool
    restoring mtimes) still changes its signature; a ``chmod`` or a copy of the folder changes it too,
    which costs one rebuild of the cache, never a stale one. (On Windows Python's st_ctime is the creation
    time, and FAT/exFAT and some network or FUSE mounts report no true change time: there a rewrite in place
    with the size and mtime kept goes unseen.)"""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


@dataclass(frozen=True)
class PluginContext:
    """What a plugin factory may need beyond its parameters.

    device, dtype: where and in which dtype the model runs (data sets should still yield CPU tensors).
    run_dir: the run folder (None outside a run, e.g. in tests or `mfkit validate`).
    cache_dir: a folder for caches shared between runs (decoded audio, sampled point clouds, ...).
    seed: the recipe's seed (an evaluator always gets 0, so every run is scored by the same feature
    networks: see ``mfkit.evaluation.loading.EVALUATOR_SEED``). rank, world_size: this process and how many there are (torchrun), for
    sharded data and per-rank caches. purpose: why the plugin is built ("train", "sample", "validate",
    "eval", "test"); a modality built for sampling must not fit anything (its state is loaded).
    """

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    run_dir: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    purpose: Purpose = "train"


class ConditionSpec(abc.ABC):
    """A modality's declaration of what it conditions on, and how to handle such conditions.

    ``kind`` names the family ("class", "vector", "sequence", or a plugin's own). ``ops`` null and drop
    a batch of conditions for guidance in training. ``parse`` turns the text of `mfkit sample --cond`
    into a batch of ``count`` conditions; ``preview`` gives ``count`` conditions for previews and default
    samples; ``null`` gives ``count`` null conditions (unconditional samples of a conditional model).
    """

    kind: str = "custom"

    @property
    @abc.abstractmethod
    def ops(self) -> ConditionOps: ...

    @abc.abstractmethod
    def parse(self, text: str, count: int) -> Any: ...

    @abc.abstractmethod
    def preview(self, count: int) -> Any: ...

    def null(self, count: int) -> Any:
        return self.ops.null_like(self.preview(count))

    def describe(self, cond: Any, index: int) -> str:
        """A short name of condition ``index`` of a batch (used in folder and file names)."""
        return str(index)


class ClassCondition(ConditionSpec):
    """Integer class labels (B,) with the null label ``len(names)``."""

    kind = "class"

    def __init__(self, names: Sequence[str]) -> None:
        if not names:
            raise ValueError("a class condition needs at least one class name")
        self.names = list(names)

    @property
    def ops(self) -> LabelConditions:
        return LabelConditions(len(self.names))

    def label_of(self, text: str) -> int:
        if text in self.names:
            return self.names.index(text)
        if text.isdigit() and int(text) < len(self.names):
            return int(text)
        raise ValueError(f"unknown condition {text!r}; choose one of: {', '.join(self.names)}")

    def parse(self, text: str, count: int) -> torch.Tensor:
        return torch.full((count,), self.label_of(text), dtype=torch.long)

    def preview(self, count: int) -> torch.Tensor:
        return torch.arange(count) % len(self.names)

    def describe(self, cond: torch.Tensor, index: int) -> str:
        label = int(cond[index])
        return self.names[label] if label < len(self.names) else "null"


def asks_for_null(condition: ConditionSpec | None, text: str | None) -> bool:
    """Whether ``--cond text`` asks for the null condition (unconditional samples of a conditional model):
    the text "null", unless the modality has no conditions or a class of that name."""
    return (text == "null" and condition is not None
            and not (isinstance(condition, ClassCondition) and "null" in condition.names))


class VectorCondition(ConditionSpec):
    """A continuous vector (B, dim) per sample, with a null vector (default: all NaN, which no real
    condition can equal; :class:`mfkit.nn.VectorConditionEmbedding` turns it into a learned embedding).

    ``parse`` reads comma-separated numbers ("0.5,1.2"); ``preview`` spreads values over ``low``..``high``.
    """

    kind = "vector"

    def __init__(self, dim: int, low: float = 0.0, high: float = 1.0, null: torch.Tensor | None = None,
                 names: Sequence[str] | None = None) -> None:
        self.dim, self.low, self.high = dim, low, high
        self.null_vector = null if null is not None else torch.full((dim,), float("nan"))
        self.names = list(names) if names else [f"c{i}" for i in range(dim)]

    @property
    def ops(self) -> TensorConditions:
        return TensorConditions(self.null_vector)

    def parse(self, text: str, count: int) -> torch.Tensor:
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(f"a {self.dim}-number condition is written like "
                             f"{','.join(['0.5'] * self.dim)}; got {text!r}") from None
        if len(values) != self.dim:
            raise ValueError(f"this modality conditions on {self.dim} number(s) ({', '.join(self.names)}); "
                             f"got {len(values)} in {text!r}")
        return torch.tensor(values).expand(count, self.dim).clone()

    def preview(self, count: int) -> torch.Tensor:
        return torch.linspace(self.low, self.high, count)[:, None].expand(count, self.dim).clone()

    def describe(self, cond: torch.Tensor, index: int) -> str:
        return ",".join(f"{v:.3g}" for v in cond[index].tolist())


class NoParams(BaseModel):
    """Parameters of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class DataInfo:
    """What a backbone needs to know about the data: per-sample shape, number of classes (None: no class
    labels) and the full condition declaration (None: unconditional)."""

    sample_shape: tuple[int, ...]
    num_classes: int | None = None
    condition: ConditionSpec | None = None


class Modality(abc.ABC):
    """The data adapter of one kind of data. Model tensors have shape (B, *sample_shape).

    Required: ``sample_shape``, :meth:`dataset`, :meth:`encode`, :meth:`decode`, :meth:`save`. Everything
    else has a default that a plugin overrides when it needs to:

    * conditions: ``class_names`` (class labels), or :meth:`condition` for any :class:`ConditionSpec`;
    * state fitted on the data: :meth:`fit` (called once when a new run starts), :meth:`state_dict` and
      :meth:`load_state_dict` (saved with the run and in every checkpoint, loaded when sampling);
    * batches: :meth:`collate` (a DataLoader collate function) and :meth:`unpack` (batch -> (x, cond));
    * splits: ``splits`` lists those :meth:`dataset` accepts ("val" enables validation and evaluation);
    * sets: ``set_axis`` marks samples whose elements along that axis are exchangeable (point clouds).
    """

    #: Per-sample tensor shape, e.g. (2,) for points in the plane, (3, 32, 32) for images.
    sample_shape: tuple[int, ...]
    #: Names of the classes it offers as conditions, or None.
    class_names: Sequence[str] | None = None
    #: The data set splits :meth:`dataset` accepts.
    splits: tuple[str, ...] = ("train", "val")
    #: For samples that are sets (reordering the elements along this axis of ``sample_shape`` gives the same
    #: item, e.g. 0 for point clouds of shape (N, 3)): the axis, which enables ``objective.set_coupling``.
    #: None (default): not a set.
    set_axis: int | None = None
    #: Set by mfkit (or the v2 factory) to the context the modality was built in.
    context: PluginContext | None = None

    @property
    def num_classes(self) -> int | None:
        condition = self.condition()
        return len(condition.names) if isinstance(condition, ClassCondition) else None

    def condition(self) -> ConditionSpec | None:
        """What the modality conditions on (default: its ``class_names`` as class labels)."""
        return ClassCondition(self.class_names) if self.class_names else None

    @property
    def info(self) -> DataInfo:
        return DataInfo(tuple(self.sample_shape), self.num_classes, self.condition())

    @abc.abstractmethod
    def dataset(self, split: str = "train") -> Dataset:
        """The data set of encoded items for ``split`` (one of ``splits``)."""

    @abc.abstractmethod
    def encode(self, raw: Any) -> torch.Tensor:
        """One raw item (as a user holds it) -> a tensor of ``sample_shape``."""

    @abc.abstractmethod
    def decode(self, tensor: torch.Tensor) -> Any:
        """A batch of model tensors (B, *sample_shape) -> raw items (what :meth:`save` writes)."""

    @abc.abstractmethod
    def save(self, samples: torch.Tensor, out_dir: Path, cond: Any = None) -> list[Path]:
        """Write a batch of model tensors (B, *sample_shape) as files under ``out_dir``; return their paths.

        A v2 modality may accept the keywords ``kind`` ("preview" during training, "samples" from
        `mfkit sample`) and ``step`` (the training step) to draw previews differently. (`mfkit eval`
        scores samples in memory and saves none.)
        """

    def fit(self, dataset: Dataset) -> None:
        """Fit state on the training data (normalisation statistics, ...). Called once per new run."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State that must travel with the run (tensors by name); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (sampling never calls :meth:`fit`)."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state but was given {sorted(state)}")

    def collate(self) -> Callable[[list], Any] | None:
        """A DataLoader collate function (e.g. padding with a mask), or None for PyTorch's default."""
        return None

    def unpack(self, batch: Any) -> tuple[torch.Tensor, Any]:
        """A batch from the data loader -> (x (B, ...), cond or None). See :func:`unpack_batch`."""
        return unpack_batch(batch)

    def preview_count(self, requested: int) -> int:
        """How many samples a preview draws (default: the recipe's ``train.preview_count``)."""
        return requested

    def render(self, tensor: torch.Tensor) -> Any:
        """A batch of model tensors -> what a person perceives (waveforms for spectrograms, pixels for
        latents): the decoding cost `mfkit eval` reports beside the network's. Default: :meth:`decode`."""
        return self.decode(tensor)

    def label_of(self, name: str) -> int:
        """The class index of a condition given by name or number; ValueError listing the choices."""
        condition = self.condition()
        if not isinstance(condition, ClassCondition):
            raise ValueError("this modality offers no class conditions")
        return condition.label_of(name)


def unpack_batch(batch: Any) -> tuple[torch.Tensor, Any]:
    """(x, cond) from a bare tensor, a 1-tuple, an (x, cond) pair or a dict with "x" (and "cond")."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, dict):
        if "x" not in batch:
            raise ValueError(f"a dict batch needs the key 'x' (and optionally 'cond'); got keys {sorted(batch)}")
        return batch["x"], batch.get("cond")
    if isinstance(batch, (list, tuple)) and len(batch) in (1, 2):
        return batch[0], batch[1] if len(batch) == 2 else None
    raise ValueError(f"cannot read a batch of type {type(batch).__name__}"
                     + (f" with {len(batch)} parts" if isinstance(batch, (list, tuple)) else "")
                     + "; items must be a tensor, (tensor,), (tensor, cond) or {'x': ..., 'cond': ...}, "
                       "or the modality must define unpack()")


def save_samples(modality: Modality, samples: torch.Tensor, out_dir: Path, cond: Any = None, *,
                 kind: str = "samples", step: int | None = None) -> list[Path]:
    """Call ``modality.save``, passing ``kind`` and ``step`` when its ``save`` accepts them (v2)."""
    parameters = inspect.signature(modality.save).parameters
    accepts = {name for name in ("kind", "step") if name in parameters} | (
        {"kind", "step"} if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()) else set())
    extra = {key: value for key, value in (("kind", kind), ("step", step)) if key in accepts}
    return modality.save(samples, out_dir, cond, **extra)


class Evaluator(abc.ABC):
    """Scores generated samples against real held-out data (what `mfkit eval` prints).

    ``metrics`` maps each metric name to "lower" or "higher" (which way is better). :meth:`fit` prepares
    whatever the scores need from real training data (e.g. a feature network trained locally,
    deterministic from the context's seed and cached under ``context.cache_dir`` with a content hash);
    nothing may be downloaded. :meth:`score` compares a batch of samples (B, *sample_shape) with
    their conditions against real items (N, *sample_shape) with theirs; `mfkit eval` also calls it on
    two halves of real data to print the real-vs-real floor beside every figure.

    ``max_samples`` / ``max_reference``: the most samples / real items :meth:`score` reads (None: all).
    An evaluator whose cost grows too fast sets them (2 or more); `mfkit eval` then draws no more samples
    (saying so) and scores against at most that many real items drawn from the seed (with ``--cond``, from
    that condition's items), so its report states what was scored.
    """

    metrics: dict[str, str] = {}
    max_samples: int | None = None
    max_reference: int | None = None

    def fit(self, train: Dataset) -> None:
        """Prepare on the training data (default: nothing)."""

    @abc.abstractmethod
    def score(self, samples: torch.Tensor, cond: Any, real: torch.Tensor, real_cond: Any) -> dict[str, float]:
        """Metric name -> value for ``samples`` against ``real``."""


ApiVersion = int | tuple[int, int]


@dataclass(frozen=True)
class ModalitySpec:
    """Registers a modality: ``factory(params, context) -> Modality`` (API v2), with ``params`` an
    instance of ``params_model`` and ``context`` a :class:`PluginContext`. A spec with
    ``api_version=1`` has a factory that takes ``params`` alone."""

    name: str
    description: str
    factory: Callable[..., Modality]
    params_model: type[BaseModel] = NoParams
    api_version: ApiVersion = PLUGIN_API_VERSION
    kind: str = field(default="modality", init=False)

    def build(self, params: BaseModel, context: PluginContext) -> Modality:
        """Call the factory with the arguments it takes (v1: params alone); the modality keeps the context."""
        modality = _call_factory(self, (params, context))
        if isinstance(modality, Modality):
            modality.context = context
        return modality


@dataclass(frozen=True)
class BackboneSpec:
    """Registers a backbone: ``factory(params, info: DataInfo, context: PluginContext) -> nn.Module``
    (API v2; a v1 factory takes ``(params, info)``), called as ``model(z, r, t, cond=None)``."""

    name: str
    description: str
    factory: Callable[..., nn.Module]
    params_model: type[BaseModel] = NoParams
    api_version: ApiVersion = PLUGIN_API_VERSION
    kind: str = field(default="backbone", init=False)

    def build(self, params: BaseModel, info: DataInfo, context: PluginContext) -> nn.Module:
        """Call the factory with the arguments it takes (v1: params and info)."""
        return _call_factory(self, (params, info, context))


def _call_factory(spec: Any, args: tuple) -> Any:
    """``spec.factory(*args)``, or without the trailing context for a factory written for API v1.

    A v1 plugin never set ``api_version`` (its spec gets today's default), so the factory's own
    signature decides; the v1 call warns once per spec.
    """
    try:
        inspect.signature(spec.factory).bind(*args)
    except TypeError:
        try:
            inspect.signature(spec.factory).bind(*args[:-1])
        except TypeError:
            pass  # neither fits: let the call below raise the factory's own error
        else:
            if spec.name not in _WARNED_V1:
                _WARNED_V1.add(spec.name)
                warnings.warn(f"mfkit plugin {spec.kind} {spec.name!r} has a plugin API v1 factory (no context "
                              f"argument); it works, but v2 adds context, state and conditions (docs/plugins.md)",
                              DeprecationWarning, stacklevel=3)
            return spec.factory(*args[:-1])
    except ValueError:  # no signature to read (a builtin): call as v2
        pass
    return spec.factory(*args)


_WARNED_V1: set[str] = set()


def api_versions(declared: ApiVersion) -> tuple[int, int]:
    """The inclusive range of plugin API versions a spec declares."""
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared, declared
    if isinstance(declared, (tuple, list)) and len(declared) == 2 and all(isinstance(v, int) for v in declared):
        return int(declared[0]), int(declared[1])
    raise ValueError(f"api_version must be a number or a (low, high) pair, got {declared!r}")


@dataclass(frozen=True)
class EvaluatorSpec:
    """Registers an evaluator: ``factory(params, modality, context) -> Evaluator``. ``modalities`` names
    the modalities it can score (empty: any); entry-point group ``mfkit.evaluators``."""

    name: str
    description: str
    factory: Callable[..., Evaluator]
    params_model: type[BaseModel] = NoParams
    modalities: tuple[str, ...] = ()
    api_version: ApiVersion = PLUGIN_API_VERSION
    kind: str = field(default="evaluator", init=False)

    def build(self, params: BaseModel, modality: Modality, context: PluginContext) -> Evaluator:
        return self.factory(params, modality, context)
