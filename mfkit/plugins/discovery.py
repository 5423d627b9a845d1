"""Discovery of plugins through ``importlib.metadata`` entry points, robust to broken plugins.

Groups: ``mfkit.modalities`` and ``mfkit.backbones`` (each entry point names a spec object, or a
zero-argument callable returning one) and ``mfkit.recipes`` (each names a package whose folder holds
YAML recipes). Loading never dies on one bad plugin: a plugin that fails to import, registers the wrong
kind of object or targets an unsupported plugin API version is recorded as a :class:`PluginProblem`
(name, distribution, reason) and the rest keep working. Two packages registering one name are both
kept: looking the name up is then an error naming both, unless the recipe names the package
(``package:`` beside ``name:``). Plugins written for API version 1 load with a deprecation warning.
"""
from __future__ import annotations

import difflib
import importlib.metadata as metadata
import importlib.resources
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from mfkit.plugins.spec import (PLUGIN_API_VERSION, SUPPORTED_API_VERSIONS, BackboneSpec, EvaluatorSpec, ModalitySpec,
                                api_versions)

MODALITY_GROUP = "mfkit.modalities"
BACKBONE_GROUP = "mfkit.backbones"
EVALUATOR_GROUP = "mfkit.evaluators"
RECIPE_GROUP = "mfkit.recipes"
_SPEC_TYPES = {MODALITY_GROUP: ModalitySpec, BACKBONE_GROUP: BackboneSpec, EVALUATOR_GROUP: EvaluatorSpec}
_KIND_OF = {MODALITY_GROUP: "modality", BACKBONE_GROUP: "backbone", EVALUATOR_GROUP: "evaluator",
            RECIPE_GROUP: "recipe"}

Spec = TypeVar("Spec", ModalitySpec, BackboneSpec, EvaluatorSpec)


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be used, and why."""

    group: str
    name: str
    distribution: str
    reason: str


@dataclass(frozen=True)
class Installed(Generic[Spec]):
    """A loaded spec and the distribution (package) that registered it ("name version")."""

    spec: Spec
    distribution: str

    @property
    def package(self) -> str:
        """The distribution's name without its version."""
        return self.distribution.rsplit(" ", 1)[0]


@dataclass(frozen=True)
class PluginRecipe:
    """A recipe file shipped by a plugin package."""

    name: str
    path: Path
    distribution: str


class UnknownPluginError(LookupError):
    """A recipe or command named a plugin that is not installed (or is broken, or ambiguous)."""


def _distribution_of(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


class Registry:
    """Specs found through entry points, loaded once and cached; :meth:`refresh` looks again."""

    def __init__(self) -> None:
        self._loaded: dict[str, dict[str, list[Installed]]] | None = None
        self._problems: list[PluginProblem] = []
        self._recipes: list[PluginRecipe] | None = None

    def refresh(self) -> None:
        self._loaded = None
        self._recipes = None

    def _ensure(self) -> dict[str, dict[str, list[Installed]]]:
        if self._loaded is None:
            self._problems = []
            self._loaded = {group: self._load_group(group) for group in _SPEC_TYPES}
        return self._loaded

    def _load_group(self, group: str) -> dict[str, list[Installed]]:
        found: dict[str, list[Installed]] = {}

        def order(entry_point):  # mfkit's own plugins first, then others by distribution
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
            candidates = found.setdefault(spec.name, [])
            if any(c.distribution == distribution for c in candidates):
                continue  # the same package seen twice on the path
            candidates.append(Installed(spec, distribution))
        return found

    @staticmethod
    def _load_one(entry_point: metadata.EntryPoint, group: str):
        obj = entry_point.load()
        expected = _SPEC_TYPES[group]
        if callable(obj) and not isinstance(obj, tuple(_SPEC_TYPES.values())) and not isinstance(obj, type):
            obj = obj()
        if not isinstance(obj, expected):
            raise _Invalid(f"registers a {type(obj).__name__}, not a {expected.__name__} "
                           f"(entry point {entry_point.value!r} in group {group!r})")
        try:
            low, high = api_versions(obj.api_version)
        except ValueError as error:
            raise _Invalid(str(error)) from None
        supported = [v for v in SUPPORTED_API_VERSIONS if low <= v <= high]
        if not supported:
            raise _Invalid(f"written for plugin API version {obj.api_version}; this mfkit loads versions "
                           f"{', '.join(map(str, SUPPORTED_API_VERSIONS))}: upgrade the plugin or mfkit")
        if max(supported) < PLUGIN_API_VERSION:
            warnings.warn(f"mfkit plugin {obj.name!r} ({_distribution_of(entry_point)}) is written for plugin API "
                          f"version {max(supported)}; it works, but version {PLUGIN_API_VERSION} adds context, "
                          f"state and conditions (docs/plugins.md)", DeprecationWarning, stacklevel=2)
        if not (isinstance(obj.params_model, type) and issubclass(obj.params_model, BaseModel)):
            raise _Invalid(f"params_model of {obj.name!r} is not a pydantic model class")
        if obj.name != entry_point.name:
            raise _Invalid(f"entry point is named {entry_point.name!r} but its spec is named {obj.name!r}")
        return obj

    def modalities(self) -> dict[str, Installed[ModalitySpec]]:
        """Installed modalities by name (for a name two packages register, the first by package order)."""
        return {name: found[0] for name, found in self._ensure()[MODALITY_GROUP].items()}

    def backbones(self) -> dict[str, Installed[BackboneSpec]]:
        return {name: found[0] for name, found in self._ensure()[BACKBONE_GROUP].items()}

    def evaluators(self) -> dict[str, Installed[EvaluatorSpec]]:
        return {name: found[0] for name, found in self._ensure()[EVALUATOR_GROUP].items()}

    def evaluator(self, name: str, package: str | None = None) -> EvaluatorSpec:
        return self.installed(EVALUATOR_GROUP, name, package).spec

    def evaluators_for(self, modality: str) -> list[Installed[EvaluatorSpec]]:
        """Evaluators that declare they score ``modality`` (or any modality)."""
        return [item for item in self.all_installed(EVALUATOR_GROUP)
                if not item.spec.modalities or modality in item.spec.modalities]

    def all_installed(self, group: str) -> list[Installed]:
        """Every loaded spec of ``group``, duplicates included."""
        return [item for found in self._ensure()[group].values() for item in found]

    def problems(self) -> list[PluginProblem]:
        self._ensure()
        return list(self._problems) + self._duplicate_problems()

    def _duplicate_problems(self) -> list[PluginProblem]:
        problems = []
        for group, by_name in self._ensure().items():
            for name, found in by_name.items():
                if len(found) > 1:
                    packages = " and ".join(item.distribution for item in found)
                    problems.append(PluginProblem(group, name, found[1].distribution,
                                                  f"{_KIND_OF[group]} name {name!r} is registered by {packages}; "
                                                  f"a recipe must say which with package: <name>"))
        return problems

    def modality(self, name: str, package: str | None = None) -> ModalitySpec:
        return self.installed(MODALITY_GROUP, name, package).spec

    def backbone(self, name: str, package: str | None = None) -> BackboneSpec:
        return self.installed(BACKBONE_GROUP, name, package).spec

    def installed(self, group: str, name: str, package: str | None = None) -> Installed:
        """The spec registered under ``name`` (by ``package`` when given); a clear error otherwise."""
        kind = _KIND_OF[group]
        found = self._ensure()[group].get(name, [])
        if package is not None:
            chosen = [item for item in found if item.package == package or item.distribution == package]
            if chosen:
                return chosen[0]
            if found:
                raise UnknownPluginError(
                    f"{kind} {name!r} is not registered by package {package!r}; it is registered by "
                    f"{', '.join(item.distribution for item in found)}")
        elif len(found) == 1:
            return found[0]
        elif len(found) > 1:
            packages = ", ".join(item.distribution for item in found)
            raise UnknownPluginError(
                f"{kind} name {name!r} is registered by several packages ({packages}). Say which in the "
                f"recipe: {kind}: {{name: {name}, package: {found[0].package}}}")
        message = f"unknown {kind} {name!r}."
        broken = [p for p in self._problems if p.group == group and p.name == name]
        if broken:
            message = f"{kind} {name!r} is installed but broken ({broken[0].distribution}): {broken[0].reason}."
        names = list(self._ensure()[group])
        close = difflib.get_close_matches(name, names, n=1)
        if close and not broken:
            message += f" Did you mean {close[0]!r}?"
        message += f" Installed {kind} plugins: {', '.join(sorted(names)) or 'none'}. See `mfkit plugins`."
        raise UnknownPluginError(message)

    def recipes(self) -> list[PluginRecipe]:
        """YAML recipes shipped by plugin packages (entry-point group ``mfkit.recipes``), by name."""
        if self._recipes is None:
            self._recipes = []
            for entry_point in metadata.entry_points(group=RECIPE_GROUP):
                distribution = _distribution_of(entry_point)
                try:
                    folder = importlib.resources.files(entry_point.value)
                    files = sorted((f for f in folder.iterdir() if f.name.endswith((".yaml", ".yml"))),
                                   key=lambda f: f.name)
                except Exception as error:  # noqa: BLE001 - a broken recipe package must not break the rest
                    self._problems.append(PluginProblem(RECIPE_GROUP, entry_point.name, distribution,
                                                        f"{type(error).__name__}: {error}"))
                    continue
                for file in files:
                    self._recipes.append(PluginRecipe(Path(file.name).stem, Path(str(file)), distribution))
        return list(self._recipes)


class _Invalid(Exception):
    """A plugin object that loaded but breaks the plugin contract."""


registry = Registry()
