"""Turn a validated recipe into objects: the modality, the backbone and the objective."""
from __future__ import annotations

from typing import Any

from torch import nn

import mfkit
from mfkit.plugins.discovery import Registry, registry as default_registry
from mfkit.plugins.spec import ClassCondition, ConditionSpec, Modality, PluginContext
from mfkit.recipe.loading import RecipeError
from mfkit.recipe.schema import ObjectiveSettings, Recipe, TimeDistribution


def plugin_context(recipe: Recipe, **overrides: Any) -> PluginContext:
    """The context plugins of ``recipe`` are built in: its seed, plus whatever the caller knows."""
    return PluginContext(**{"seed": recipe.train.seed, **overrides})


def build_modality(recipe: Recipe, plugins: Registry | None = None, context: PluginContext | None = None) -> Modality:
    """The recipe's modality, built by its plugin's factory in ``context`` (default: the recipe's seed)."""
    ref = recipe.modality
    spec = (plugins or default_registry).modality(ref.name, ref.package)
    modality = spec.build(spec.params_model.model_validate(ref.params), context or plugin_context(recipe))
    if not isinstance(modality, Modality):
        raise RecipeError([f"modality {ref.name!r}: its factory returned a {type(modality).__name__}, not a "
                           f"Modality (a bug in the plugin)"])
    return modality


def build_backbone(recipe: Recipe, modality: Modality, plugins: Registry | None = None,
                   context: PluginContext | None = None) -> nn.Module:
    """The recipe's backbone for ``modality``'s data, built by its plugin's factory."""
    ref = recipe.backbone
    spec = (plugins or default_registry).backbone(ref.name, ref.package)
    model = spec.build(spec.params_model.model_validate(ref.params), modality.info,
                       context or modality.context or plugin_context(recipe))
    if not isinstance(model, nn.Module):
        raise RecipeError([f"backbone {ref.name!r}: its factory returned a {type(model).__name__}, not an "
                           f"nn.Module (a bug in the plugin)"])
    return model


def _distribution(settings: TimeDistribution):
    if settings.kind == "uniform":
        return mfkit.Uniform()
    return mfkit.LogitNormal(settings.mean, settings.std)


def build_objective(settings: ObjectiveSettings, condition: ConditionSpec | int | None,
                    modality_name: str | None = None, set_axis: int | None = None) -> mfkit.MeanFlow:
    """MeanFlow or FlowMatching from the recipe's objective section.

    ``condition`` is the modality's :class:`ConditionSpec` (or, as before, its number of classes);
    guidance uses its null value and dropping rule, whatever kind of condition it is. ``set_axis``: the
    modality's ``set_axis`` (needed by ``set_coupling: ot``).

    A preset's values (and flow matching's plain-L2 default) are already in ``settings``, filled in
    when the recipe was validated, so the resolved recipe alone rebuilds the same objective.
    """
    times = mfkit.TimePairSampler(_distribution(settings.time_sampler),
                                  _distribution(settings.r_sampler) if settings.r_sampler else None,
                                  settings.r_neq_t_share, order=settings.time_pair_order,
                                  full_jump_share=settings.full_jump_share)
    if isinstance(condition, int):
        condition = ClassCondition([str(i) for i in range(condition)]) if condition else None
    guidance = None
    if settings.guidance is not None:
        if condition is None:
            which = f"modality {modality_name!r}" if modality_name else "this modality"
            raise RecipeError([f"objective.guidance: {which} offers no conditions with these parameters, so there "
                               f"is nothing to guide; remove objective.guidance or pick modality parameters "
                               f"that give conditions (see `mfkit plugins --params {modality_name or 'NAME'}`)"])
        if isinstance(condition, ClassCondition):
            guidance = mfkit.Guidance(null_label=len(condition.names), **settings.guidance.model_dump())
        else:
            guidance = mfkit.Guidance(conditions=condition.ops, **settings.guidance.model_dump())
    if settings.set_coupling != "independent" and set_axis is None:
        which = f"modality {modality_name!r}" if modality_name else "this modality"
        raise RecipeError([f"objective.set_coupling: {which} does not declare its samples to be sets (no set_axis), "
                           f"so there are no set elements to reorder; remove objective.set_coupling (or use a "
                           f"modality whose samples are sets, such as points)"])
    common = {"adaptive_p": settings.adaptive_p, "adaptive_c": settings.adaptive_c, "guidance": guidance,
              "coupling": settings.coupling, "coupling_block": settings.coupling_block,
              "set_coupling": settings.set_coupling,
              "set_axis": set_axis if settings.set_coupling != "independent" else None}
    if settings.kind == "flow_matching":
        return mfkit.FlowMatching(times=mfkit.TimePairSampler(times.t_dist, r_neq_t_share=0.0), **common)
    alpha = mfkit.AlphaCurriculum(**settings.alpha_curriculum.model_dump()) if settings.alpha_curriculum else None
    intervals = settings.interval_weighting
    interval_weighting = mfkit.IntervalWeighting(**intervals.model_dump()) if intervals else None
    return mfkit.MeanFlow(times=times, jvp_backend=settings.jvp_backend,
                          fd_step=settings.fd_step, jvp_precision=settings.jvp_precision,
                          jvp_guard=settings.jvp_guard,
                          # fastest: the trainer times both plans (mfkit.train.row_plan); until then auto
                          jvp_rows="auto" if settings.jvp_rows == "fastest" else settings.jvp_rows,
                          formulation=settings.formulation, alpha=alpha,
                          interval_weighting=interval_weighting, **common)


def build_objective_for(recipe: Recipe, modality: Modality) -> mfkit.MeanFlow:
    """The recipe's objective for the modality it trains on: :func:`build_objective` given the modality's
    conditions, name and set axis."""
    return build_objective(recipe.objective, modality.condition(), recipe.modality.name,
                           getattr(modality, "set_axis", None))
