"""The evaluator contract, for plugin authors' tests (like :mod:`mfkit.testing`'s modality checks).

    from mfkit.evaluation import check_evaluator_spec

    def test_my_evaluator(tmp_path):
        check_evaluator_spec(MY_EVALUATOR_SPEC, MyModality(...), PluginContext(cache_dir=tmp_path))
"""
from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel

from mfkit.evaluation.data import RealData, load_split
from mfkit.evaluation.runner import score
from mfkit.plugins.spec import Evaluator, EvaluatorSpec, Modality, PluginContext
from mfkit.testing.contracts import ContractError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _noise_like(real: RealData, seed: int) -> torch.Tensor:
    """Gaussian noise with the real data's mean and standard deviation per element."""
    x = real.x.double()
    g = torch.Generator().manual_seed(seed)
    return (x.mean(0) + x.std(0) * torch.randn(x.shape, generator=g, dtype=torch.float64)).to(real.x.dtype)


def check_evaluator(evaluator: Evaluator, modality: Modality, items: int = 256, discriminates: bool = True,
                    seed: int = 0) -> dict[str, Any]:
    """Check an evaluator on a modality's own data; raise :class:`ContractError` naming the broken rule.

    Rules: ``metrics`` names at least one metric, each "lower" or "higher"; ``fit`` accepts the training
    set; ``score`` returns exactly the declared metrics as finite numbers, the same ones for the same
    inputs and seed, and leaves its inputs unchanged; for a conditional modality, it also scores samples
    whose conditions are all null (unconditional samples, `mfkit eval --cond null`), returning every
    declared metric (NaN allowed there, e.g. for an accuracy no sample asked for); with ``discriminates``,
    Gaussian noise with the data's mean and spread scores no better than real data on every metric and
    worse on one. Returns the real-vs-real and noise-vs-real figures.
    """
    metrics = getattr(evaluator, "metrics", None)
    _require(isinstance(metrics, dict) and len(metrics) > 0,
             f"{type(evaluator).__name__}.metrics must map each metric name to 'lower' or 'higher'")
    bad = {name: way for name, way in metrics.items() if way not in ("lower", "higher")}
    _require(not bad, f"metric directions must be 'lower' or 'higher', got {bad}")
    evaluator.fit(modality.dataset("train"))
    real = load_split(modality, "val", 2 * items, seed)
    _require(len(real) >= 4, f"the 'val' split needs at least 4 items for this check, has {len(real)}")
    half = len(real) // 2
    first, second = real.take(slice(0, half)), real.take(slice(half, 2 * half))
    before = (first.x.clone(), second.x.clone())
    values = score(evaluator, first.x, first.cond, second, seed)
    _require(torch.equal(first.x, before[0]) and torch.equal(second.x, before[1]),
             "score() changed the tensors it was given")
    for name, value in values.items():
        _require(math.isfinite(value), f"metric {name!r} is {value} for real data against real data")
    _require(score(evaluator, first.x, first.cond, second, seed) == values,
             "score() gave different figures for the same inputs and seed")
    condition = modality.condition()
    if condition is not None and first.cond is not None:
        try:
            score(evaluator, first.x, condition.null(len(first)), second, seed)
        except Exception as error:
            raise ContractError(f"score() failed on null conditions (unconditional samples of a conditional "
                                f"model, as `mfkit eval --cond null` draws): {type(error).__name__}: {error}; "
                                f"leave null-condition samples out of class-based metrics (NaN when none is "
                                f"left)") from error
    result = {"real": values}
    if discriminates:
        noise = score(evaluator, _noise_like(first, seed), first.cond, second, seed)
        better = lambda a, b, way: a < b if way == "lower" else a > b  # noqa: E731
        for name, way in metrics.items():
            _require(not better(noise[name], values[name], way),
                     f"metric {name!r} rates Gaussian noise ({noise[name]:.4g}) better than real data "
                     f"({values[name]:.4g}) ({way} is better)")
        _require(any(better(values[name], noise[name], way) for name, way in metrics.items()),
                 f"no metric tells Gaussian noise from real data: real {values}, noise {noise}")
        result["noise"] = noise
    return result


def check_evaluator_spec(spec: EvaluatorSpec, modality: Modality, context: PluginContext | None = None,
                         params: dict | None = None, **checks: Any) -> dict[str, Any]:
    """Build the evaluator from its spec (default or given ``params``) and run :func:`check_evaluator`."""
    _require(isinstance(spec, EvaluatorSpec), f"expected an EvaluatorSpec, got {type(spec).__name__}")
    _require(isinstance(spec.params_model, type) and issubclass(spec.params_model, BaseModel),
             "params_model must be a pydantic model class")
    evaluator = spec.build(spec.params_model.model_validate(params or {}), modality,
                           context or modality.context or PluginContext(purpose="test"))
    _require(isinstance(evaluator, Evaluator), f"{spec.name!r}: the factory returned a {type(evaluator).__name__}, "
                                               f"not an Evaluator")
    return check_evaluator(evaluator, modality, **checks)
