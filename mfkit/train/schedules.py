"""Schedules that follow training progress (step / train.steps), and what a resume that changes
train.steps does to them.

Three settings read the share of training done: the learning-rate schedule (after warm-up), the alpha
curriculum (``objective.alpha_curriculum``) and interval weighting (``objective.interval_weighting``).
A resume that raises or lowers ``train.steps`` rescales that share, so at the resumed step each of them
jumps to the value the new length gives (a finished cosine learning rate climbs back up; a finished alpha
curriculum hands steps back to flow matching). :func:`schedule_jumps` lists those jumps so the trainer
can say so before the first resumed step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import mfkit
from mfkit.recipe.schema import Recipe


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak lr for the update at ``step`` (0-based): linear warm-up, then the schedule."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - progress


@dataclass(frozen=True)
class ScheduleJump:
    """One progress-following setting whose value at a resumed step differs between two run lengths."""

    name: str
    before: float
    after: float

    def __str__(self) -> str:
        return f"{self.name} {self.before:.3g} -> {self.after:.3g}"


def schedule_values(recipe: Recipe, step: int) -> dict[str, float]:
    """The value of each progress-following setting the recipe uses, for the update at ``step``.

    Keys: ``"learning-rate factor"`` (always), ``"alpha"`` (with an alpha curriculum) and
    ``"interval-weighting lambda"`` (with interval weighting); the trainer feeds the objective
    progress = step / train.steps.
    """
    train, objective = recipe.train, recipe.objective
    values = {"learning-rate factor": lr_factor(step, train.warmup_steps, train.steps, train.lr_schedule)}
    progress = step / train.steps
    if getattr(objective, "alpha_curriculum", None) is not None:
        values["alpha"] = mfkit.AlphaCurriculum(**objective.alpha_curriculum.model_dump()).alpha(progress)
    if getattr(objective, "interval_weighting", None) is not None:
        values["interval-weighting lambda"] = mfkit.IntervalWeighting(
            **objective.interval_weighting.model_dump()).rate(progress)
    return values


def schedule_jumps(saved: Recipe, resumed: Recipe, step: int, tolerance: float = 1e-6) -> list[ScheduleJump]:
    """The progress-following settings whose value at ``step`` changes when a run saved with ``saved`` goes
    on with ``resumed`` (which may differ in train.steps); empty when nothing jumps."""
    before, after = schedule_values(saved, step), schedule_values(resumed, step)
    return [ScheduleJump(name, before[name], after[name]) for name in after
            if name in before and abs(after[name] - before[name]) > tolerance]
