"""Turn a validated recipe into objects: the modality, the backbone and the objective."""
from __future__ import annotations

from torch import nn

import mfkit
from mfkit.plugins.discovery import Registry, registry as default_registry
from mfkit.plugins.spec import Modality
from mfkit.recipe.loading import RecipeError
from mfkit.recipe.schema import ObjectiveSettings, Recipe, TimeDistribution


def build_modality(recipe: Recipe, plugins: Registry | None = None) -> Modality:
    spec = (plugins or default_registry).modality(recipe.modality.name)
    return spec.factory(spec.params_model.model_validate(recipe.modality.params))


def build_backbone(recipe: Recipe, modality: Modality, plugins: Registry | None = None) -> nn.Module:
    spec = (plugins or default_registry).backbone(recipe.backbone.name)
    return spec.factory(spec.params_model.model_validate(recipe.backbone.params), modality.info)


def _distribution(settings: TimeDistribution):
    if settings.kind == "uniform":
        return mfkit.Uniform()
    return mfkit.LogitNormal(settings.mean, settings.std)


def build_objective(settings: ObjectiveSettings, num_classes: int | None) -> mfkit.MeanFlow:
    """MeanFlow or FlowMatching from the recipe.

    With a preset, the preset's values stand wherever the recipe leaves a field unset; without one,
    the recipe's values (and defaults) apply. Flow matching keeps plain L2 unless adaptive_p is set.
    """
    cls = mfkit.MeanFlow if settings.kind == "meanflow" else mfkit.FlowMatching
    if settings.preset:
        objective, explicit = cls.preset(settings.preset), set(settings.model_fields_set)
    else:
        objective, explicit = cls(), set(ObjectiveSettings.model_fields)
        if settings.kind == "flow_matching" and "adaptive_p" not in settings.model_fields_set:
            explicit.discard("adaptive_p")
    times = objective.times
    t_dist = _distribution(settings.time_sampler) if "time_sampler" in explicit else times.t_dist
    r_dist = times.r_dist
    if "r_sampler" in explicit:
        r_dist = _distribution(settings.r_sampler) if settings.r_sampler else None
    share = settings.r_neq_t_share if "r_neq_t_share" in explicit else times.r_neq_t_share
    objective.times = mfkit.TimePairSampler(t_dist, r_dist, share)
    for name in ("adaptive_p", "adaptive_c", "jvp_backend", "fd_step"):
        if name in explicit:
            setattr(objective, name, getattr(settings, name))
    if settings.guidance is not None:
        if not num_classes:
            raise RecipeError(["objective.guidance: needs a modality that offers classes "
                               "(e.g. toy2d with conditional: true)"])
        objective.guidance = mfkit.Guidance(null_label=num_classes, **settings.guidance.model_dump())
    objective.__post_init__()
    return objective
