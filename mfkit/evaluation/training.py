"""Evaluation during training (``train.eval_every``): score the EMA network every few steps, log the
figures, and keep the best checkpoint by one metric.

The trainer builds one :class:`TrainingEvaluation` when a run starts (real data loaded and the evaluator
fitted once), calls it every ``eval_every`` steps on the main process, writes the returned numbers to
``metrics.jsonl`` and asks :class:`BestTracker` whether this step is the best so far.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from mfkit.evaluation.loading import build_evaluator, find_evaluator
from mfkit.evaluation.report import EvalReport
from mfkit.evaluation.runner import Evaluation, is_better
from mfkit.plugins.spec import Evaluator, Modality, PluginContext


class TrainingEvaluation:
    """Scores a network during training; ``__call__(model, step)`` returns flat metric names -> values:
    ``eval/mf1/sliced_w2``, ``eval/mf1/network_ms``, ... (``eval/euler8/...`` for Euler rows), plus
    ``eval/floor/<metric>`` at the first call.

    ``steps``: MeanFlow step counts; ``euler``: Euler step counts (flow-matching runs). ``count``:
    samples per row (small is fine: 1000 to 4000 points for 2-D data). The floor is scored once.
    """

    def __init__(self, modality: Modality, evaluator: Evaluator, *, count: int = 2000, steps: Sequence[int] = (1,),
                 euler: Sequence[int] = (), seed: int = 0, batch_size: int = 1000,
                 reference_limit: int | None = None, device: torch.device = torch.device("cpu"),
                 evaluator_name: str = "") -> None:
        self.steps, self.euler, self.batch_size = tuple(steps), tuple(euler), batch_size
        self.evaluation = Evaluation(modality, evaluator, count=count, seed=seed, reference_limit=reference_limit,
                                     device=device, evaluator_name=evaluator_name)
        self._floor_logged = False
        self.last: EvalReport | None = None
        #: which evaluator with which parameters (set by :meth:`from_plugins`; None when built directly)
        self.evaluator_identity: dict[str, Any] | None = None

    @classmethod
    def from_plugins(cls, modality: Modality, modality_name: str, context: PluginContext, *,
                     evaluator: str | None = None, params: dict[str, Any] | None = None,
                     **settings: Any) -> "TrainingEvaluation":
        """Find the evaluator installed for ``modality_name`` (or the one named), build it with ``params``
        and prepare it."""
        installed = find_evaluator(modality_name, evaluator)
        built = cls(modality, build_evaluator(installed, modality, context, params), seed=context.seed,
                    device=context.device, evaluator_name=f"{installed.spec.name} ({installed.distribution})",
                    **settings)
        built.evaluator_identity = {  # the evaluator and its parameters as resolved (defaults filled in)
            "evaluator": f"{installed.package}:{installed.spec.name}",
            "params": installed.spec.params_model.model_validate(params or {}).model_dump(mode="json")}
        return built

    @property
    def directions(self) -> dict[str, str]:
        return dict(self.evaluation.evaluator.metrics)

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        self.last = self.evaluation.run(model, steps=self.steps, euler=self.euler, batch_size=self.batch_size,
                                        info={"step": step})
        values = self.last.flat("eval/")
        if not self._floor_logged and self.evaluation.floor is not None:
            values.update({f"eval/floor/{name}": value for name, value in self.evaluation.floor.items()})
            self._floor_logged = True
        return values


@dataclass
class BestTracker:
    """Which step scored best on ``metric`` (a flat name such as ``eval/mf1/sliced_w2``).

    ``direction``: "lower" or "higher" is better (from the evaluator's ``metrics``: see
    :meth:`for_metric`). ``best`` and ``best_step`` travel with checkpoints so a resumed run keeps them.
    """

    metric: str
    direction: str = "lower"
    best: float | None = None
    best_step: int | None = None

    @classmethod
    def for_metric(cls, metric: str, directions: dict[str, str]) -> "BestTracker":
        """A tracker for ``metric``; its direction is the evaluator's for the last part of the name."""
        name = metric.rsplit("/", 1)[-1]
        if name not in directions:
            raise ValueError(f"keep-best metric {metric!r}: the evaluator reports {', '.join(sorted(directions))} "
                             f"(write e.g. eval/mf1/{next(iter(sorted(directions)), 'metric')})")
        return cls(metric, directions[name])

    def update(self, step: int, values: dict[str, float]) -> bool:
        """Record this step's figures; True when ``metric`` is the best seen so far (save that checkpoint)."""
        if self.metric not in values:
            raise KeyError(f"{self.metric!r} is not among the evaluation figures ({', '.join(sorted(values))})")
        value = values[self.metric]
        if is_better(value, self.best, self.direction):
            self.best, self.best_step = value, step
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction, "best": self.best, "best_step": self.best_step}

    def load(self, state: dict[str, Any]) -> None:
        if state.get("metric") == self.metric:
            self.best, self.best_step = state.get("best"), state.get("best_step")


def evaluate_during_training(model: nn.Module, modality: Modality, evaluator: Evaluator, *, step: int,
                             count: int = 2000, steps: Sequence[int] = (1,), euler: Sequence[int] = (),
                             seed: int = 0, batch_size: int = 1000) -> dict[str, float]:
    """One-shot form of :class:`TrainingEvaluation` (prepares the real data and fits the evaluator each
    call: prefer the class in a loop)."""
    return TrainingEvaluation(modality, evaluator, count=count, steps=steps, euler=euler, seed=seed,
                              batch_size=batch_size)(model, step)
