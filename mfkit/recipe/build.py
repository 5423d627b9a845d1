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
    """MeanFlow or FlowMatching from the recipe's objective section.

    A preset's values (and flow matching's plain-L2 default) are already in ``settings``, filled in
    when the recipe was validated, so the resolved recipe alone rebuilds the same objective.
    """
    times = mfkit.TimePairSampler(_distribution(settings.time_sampler),
                                  _distribution(settings.r_sampler) if settings.r_sampler else None,
                                  settings.r_neq_t_share, order=settings.time_pair_order)
    guidance = None
    if settings.guidance is not None:
        if not num_classes:
            raise RecipeError(["objective.guidance: needs a modality that offers classes "
                               "(e.g. toy2d with conditional: true)"])
        guidance = mfkit.Guidance(null_label=num_classes, **settings.guidance.model_dump())
    common = {"adaptive_p": settings.adaptive_p, "adaptive_c": settings.adaptive_c, "guidance": guidance}
    if settings.kind == "flow_matching":
        return mfkit.FlowMatching(times=mfkit.TimePairSampler(times.t_dist, r_neq_t_share=0.0), **common)
    return mfkit.MeanFlow(times=times, jvp_backend=settings.jvp_backend,
                          fd_step=settings.fd_step, jvp_precision=settings.jvp_precision,
                          jvp_guard=settings.jvp_guard, **common)
