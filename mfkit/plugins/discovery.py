"""Discovery of plugins through ``importlib.metadata`` entry points, robust to broken plugins.

Groups: ``mfkit.modalities`` and ``mfkit.backbones``. Each entry point names a spec object (or a
zero-argument callable returning one). Loading never dies on one bad plugin: a plugin that fails to
import, registers the wrong kind of object, targets another plugin API version, or repeats a name is
recorded as a :class:`PluginProblem` (name, distribution, reason) and the rest keep working.
"""
from __future__ import annotations

import difflib
import importlib.metadata as metadata
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from mfkit.plugins.spec import PLUGIN_API_VERSION, BackboneSpec, ModalitySpec

MODALITY_GROUP = "mfkit.modalities"
BACKBONE_GROUP = "mfkit.backbones"
_SPEC_TYPES = {MODALITY_GROUP: ModalitySpec, BACKBONE_GROUP: BackboneSpec}
_KIND_OF = {MODALITY_GROUP: "modality", BACKBONE_GROUP: "backbone"}

Spec = TypeVar("Spec", ModalitySpec, BackboneSpec)


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be used, and why."""

    group: str
    name: str
    distribution: str
    reason: str


@dataclass(frozen=True)
class Installed(Generic[Spec]):
    """A loaded spec and the distribution (package) that registered it."""

    spec: Spec
    distribution: str


class UnknownPluginError(LookupError):
    """A recipe or command named a plugin that is not installed (or is broken)."""


def _distribution_of(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


class Registry:
    """Specs found through entry points, loaded once and cached; :meth:`refresh` looks again."""

    def __init__(self) -> None:
        self._loaded: dict[str, dict[str, Installed]] | None = None
        self._problems: list[PluginProblem] = []

    def refresh(self) -> None:
        self._loaded = None

    def _ensure(self) -> dict[str, dict[str, Installed]]:
        if self._loaded is None:
            self._problems = []
            self._loaded = {group: self._load_group(group) for group in _SPEC_TYPES}
        return self._loaded

    def _load_group(self, group: str) -> dict[str, Installed]:
        found: dict[str, Installed] = {}
        # mfkit's own plugins first, then others by distribution: on a duplicate name the first one wins.
        def order(entry_point):
            distribution = _distribution_of(entry_point)
            return (not distribution.startswith("mfkit "), distribution, entry_point.name)

        for entry_point in sorted(metadata.entry_points(group=group), key=order):
            distribution = _distribution_of(entry_point)
            try:
                spec = self._load_one(entry_point, group)
            except Exception as error:  # noqa: BLE001 - one bad plugin must not break the others
                reason = f"{type(error).__name__}: {error}" if not isinstance(error, _Invalid) else str(error)
                self._problems.append(PluginProblem(group, entry_point.name, distribution, reason))
                continue
            if spec.name in found:
                first = found[spec.name].distribution
                self._problems.append(PluginProblem(
                    group, spec.name, distribution,
                    f"duplicate {_KIND_OF[group]} name {spec.name!r}: already registered by {first}; this one is ignored"))
                continue
            found[spec.name] = Installed(spec, distribution)
        return found

    @staticmethod
    def _load_one(entry_point: metadata.EntryPoint, group: str):
        obj = entry_point.load()
        expected = _SPEC_TYPES[group]
        if callable(obj) and not isinstance(obj, (ModalitySpec, BackboneSpec)) and not isinstance(obj, type):
            obj = obj()
        if not isinstance(obj, expected):
            raise _Invalid(f"registers a {type(obj).__name__}, not a {expected.__name__} "
                           f"(entry point {entry_point.value!r} in group {group!r})")
        if obj.api_version != PLUGIN_API_VERSION:
            raise _Invalid(f"written for plugin API version {obj.api_version}; this mfkit speaks version "
                           f"{PLUGIN_API_VERSION}: upgrade the plugin or mfkit")
        if not (isinstance(obj.params_model, type) and issubclass(obj.params_model, BaseModel)):
            raise _Invalid(f"params_model of {obj.name!r} is not a pydantic model class")
        if obj.name != entry_point.name:
            raise _Invalid(f"entry point is named {entry_point.name!r} but its spec is named {obj.name!r}")
        return obj

    def modalities(self) -> dict[str, Installed[ModalitySpec]]:
        return dict(self._ensure()[MODALITY_GROUP])

    def backbones(self) -> dict[str, Installed[BackboneSpec]]:
        return dict(self._ensure()[BACKBONE_GROUP])

    def problems(self) -> list[PluginProblem]:
        self._ensure()
        return list(self._problems)

    def modality(self, name: str) -> ModalitySpec:
        return self._lookup(MODALITY_GROUP, name)

    def backbone(self, name: str) -> BackboneSpec:
        return self._lookup(BACKBONE_GROUP, name)

    def _lookup(self, group: str, name: str):
        found = self._ensure()[group]
        if name in found:
            return found[name].spec
        kind = _KIND_OF[group]
        message = f"unknown {kind} {name!r}."
        broken = [p for p in self._problems if p.group == group and p.name == name]
        if broken:
            message = f"{kind} {name!r} is installed but broken ({broken[0].distribution}): {broken[0].reason}."
        close = difflib.get_close_matches(name, list(found), n=1)
        if close and not broken:
            message += f" Did you mean {close[0]!r}?"
        installed = ", ".join(sorted(found)) or "none"
        message += f" Installed {kind} plugins: {installed}. See `mfkit plugins`."
        raise UnknownPluginError(message)


class _Invalid(Exception):
    """A plugin object that loaded but breaks the plugin contract."""


registry = Registry()
