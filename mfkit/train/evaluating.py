"""Evaluation during training (``train.eval_every``, ``train.keep_best``): the trainer's glue around
:class:`mfkit.evaluation.TrainingEvaluation` and :class:`mfkit.evaluation.BestTracker`.

Only the main process evaluates; the others wait at a barrier. The evaluation draws from its own
seeded generators inside a forked RNG, so a run with evaluations trains exactly as one without.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import torch
from pydantic import ValidationError
from torch import nn

from mfkit.evaluation.runner import CONDITION_ORDER
from mfkit.evaluation.training import BestTracker, TrainingEvaluation
from mfkit.plugins.spec import Modality, PluginContext
from mfkit.recipe.schema import Recipe


def evaluated_counts(recipe: Recipe) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(MeanFlow step counts, Euler step counts) to evaluate. A flow-matching run never learned r != t:
    its ``eval_steps`` are taken as Euler step counts."""
    train = recipe.train
    if recipe.objective.kind == "flow_matching":
        return (), tuple(dict.fromkeys([*train.eval_steps, *train.eval_euler]))
    return tuple(train.eval_steps), tuple(train.eval_euler)


def row_keys(steps: Sequence[int], euler: Sequence[int]) -> list[str]:
    """Flat-name row keys in evaluation order: ['mf1', 'mf2', 'euler8', ...]."""
    return [f"mf{count}" for count in steps] + [f"euler{count}" for count in euler]


def best_metric_name(keep_best: str, keys: Sequence[str], directions: dict[str, str]) -> str:
    """The flat name ``eval/<row>/<metric>`` that ``train.keep_best`` means; a bare metric name means the
    first evaluated row. Raises ValueError naming what is available when it names nothing evaluated."""
    parts = keep_best.split("/")
    if len(parts) == 1:
        name = f"eval/{keys[0]}/{keep_best}"
    elif len(parts) == 3 and parts[0] == "eval":
        name = keep_best
    else:
        raise ValueError(f"train.keep_best {keep_best!r}: write eval/<row>/<metric> (e.g. eval/{keys[0]}/"
                         f"{next(iter(sorted(directions)), 'metric')}) or a bare metric name")
    row, metric = name.split("/")[1:]
    if row not in keys:
        raise ValueError(f"train.keep_best {keep_best!r}: row {row!r} is not evaluated; the evaluated rows are "
                         f"{', '.join(keys)} (from train.eval_steps and train.eval_euler)")
    if metric not in directions:
        raise ValueError(f"train.keep_best {keep_best!r}: the evaluator reports {', '.join(sorted(directions))}")
    return name


def check_evaluation_settings(recipe: Recipe) -> None:
    """What can be checked of ``train.eval_*`` / ``keep_best`` without data: an evaluator is installed for
    the modality (or the one named accepts it), and ``keep_best`` names an evaluated row. Raises
    UnknownPluginError or ValueError."""
    from mfkit.evaluation.loading import find_evaluator

    train = recipe.train
    if not train.eval_every:
        return
    installed = find_evaluator(recipe.modality.name, train.eval_evaluator)
    try:
        installed.spec.params_model.model_validate(train.eval_params)
    except ValidationError as error:
        raise ValueError(f"train.eval_params of evaluator {installed.spec.name!r}: "
                         + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from None
    if train.keep_best is not None and "/" in train.keep_best:
        keys = row_keys(*evaluated_counts(recipe))
        best_metric_name(train.keep_best, keys, {train.keep_best.rsplit("/", 1)[-1]: "lower"})


class PeriodicEvaluation:
    """Scores a network (the trainer calls it on the main process every ``train.eval_every`` steps and
    at the last step) and tracks the best step.

    ``__call__(model, step)`` returns the flat figures (``eval/mf1/<metric>``, ``eval/floor/<metric>``
    at the first call) and whether this step is the best so far on the ``keep_best`` metric.
    """

    def __init__(self, evaluation: TrainingEvaluation, best: BestTracker | None = None,
                 measured_with: dict[str, Any] | None = None) -> None:
        self.evaluation, self.best = evaluation, best
        #: what the figures depend on besides the network (evaluator, its parameters, sample count, step
        #: counts, seed, the weights scored, how conditions are chosen); a best record measured otherwise
        #: is not comparable
        self.measured_with = json.loads(json.dumps(measured_with)) if measured_with is not None else None
        self._before: dict[str, Any] | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe, modality: Modality, context: PluginContext) -> "PeriodicEvaluation":
        """Find and fit the evaluator (once per run) and resolve ``keep_best``."""
        train = recipe.train
        steps, euler = evaluated_counts(recipe)
        evaluation = TrainingEvaluation.from_plugins(
            modality, recipe.modality.name, context, evaluator=train.eval_evaluator, params=train.eval_params,
            count=train.eval_count,
            steps=steps, euler=euler, batch_size=recipe.sample.batch_size)
        best = None
        if train.keep_best is not None:
            metric = best_metric_name(train.keep_best, row_keys(steps, euler), evaluation.directions)
            best = BestTracker.for_metric(metric, evaluation.directions)
        identity = evaluation.evaluator_identity or {"evaluator": train.eval_evaluator, "params": train.eval_params}
        scored = evaluation.evaluation  # count: the samples drawn (an evaluator's max_samples may cut eval_count)
        measured_with = {**identity, "count": scored.count, "steps": list(steps), "euler": list(euler),
                         "seed": train.seed, "weights": f"ema {train.ema_decays[0]}" if train.ema_decays else "raw"}
        if modality.condition() is not None:  # samples' conditions: the reference's in seeded random order
            measured_with["conditions"] = CONDITION_ORDER
        if getattr(scored.evaluator, "max_reference", None) is not None:  # since 2026-11-29 (first items before)
            measured_with["reference_limit"] = scored.evaluator.max_reference
        return cls(evaluation, best, measured_with)

    def __call__(self, model: nn.Module, step: int) -> tuple[dict[str, float], bool]:
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            values = self.evaluation(model, step)
        improved = False
        if self.best is not None:
            self._before = self.best.state()
            improved = self.best.update(step, values)
        return values, improved

    def forget_last_best(self) -> None:
        """Undo the last improvement (its checkpoint could not be written)."""
        if self.best is not None and self._before is not None:
            self.best.best, self.best.best_step = self._before["best"], self._before["best_step"]

    def summary(self, step: int, values: dict[str, float], improved: bool) -> str:
        """One line for the progress output: each row's figures, the floor, and the best step."""
        report = self.evaluation.last
        parts = []
        for row in report.rows if report is not None else []:
            figures = " ".join(f"{name} {_short(value)}" for name, value in row.metrics.items())
            parts.append(f"{row.key}: {figures}")
        if report is not None and report.floor:
            parts.append("floor: " + " ".join(f"{name} {_short(value)}" for name, value in report.floor.items()))
        line = f"eval at step {step}  " + "  |  ".join(parts)
        if self.best is not None:
            line += (f"  -> best {self.best.metric} so far, saved checkpoints/best.safetensors" if improved
                     else f"  (best {self.best.metric}: {_short(self.best.best)} at step {self.best.best_step})")
        return line

    def state(self) -> dict[str, Any] | None:
        if self.best is None:
            return None
        return {**self.best.state(), **({"measured_with": self.measured_with} if self.measured_with else {})}

    def load(self, state: dict[str, Any] | None) -> str | None:
        """Take a checkpoint's best record; returns why it was not taken (measured with other settings), else None."""
        if self.best is None or not state:
            return None
        saved = state.get("measured_with")
        if saved is not None and self.measured_with is not None and saved != self.measured_with:
            now = self.measured_with
            differ = [f"{key} {saved.get(key)!r} -> {now.get(key)!r}"
                      for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
            return (f"the best {state.get('metric')} so far ({_short(state.get('best'))} at step "
                    f"{state.get('best_step')}) was measured otherwise ({'; '.join(differ)}), so it is not compared "
                    f"with the new figures: the next evaluation starts the best record again")
        self.best.load(state)
        return None


def _short(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"
