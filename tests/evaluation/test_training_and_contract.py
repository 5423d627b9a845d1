"""Evaluation during training (flat figures, best checkpoint) and the evaluator contract."""
from __future__ import annotations

import pytest
import torch

from mfkit.builtin.toy2d import Toy2d, Toy2dParams
from mfkit.builtin.toy2d_eval import SPEC as TOY_EVALUATOR, Toy2dEvalParams, Toy2dEvaluator
from mfkit.evaluation import BestTracker, TrainingEvaluation, check_evaluator, check_evaluator_spec
from mfkit.evaluation.loading import find_evaluator
from mfkit.nn import MLPBackbone
from mfkit.plugins.discovery import Installed, UnknownPluginError
from mfkit.plugins.spec import EvaluatorSpec, PluginContext
from mfkit.testing import ContractError


def _modality(**params):
    return Toy2d(Toy2dParams(**{"distribution": "eight_gaussians", "size": 1000, **params}))


def test_training_evaluation_returns_flat_figures_and_the_floor_once():
    torch.manual_seed(0)
    model = MLPBackbone(2, width=16, depth=1)
    evaluation = TrainingEvaluation(_modality(), Toy2dEvaluator(Toy2dEvalParams()), count=100, steps=(1, 2),
                                    euler=(4,), batch_size=64)
    first, second = evaluation(model, 10), evaluation(model, 20)
    names = {f"eval/{row}/{metric}" for row in ("mf1", "mf2", "euler4") for metric in ("sliced_w2", "mmd", "energy")}
    assert names <= set(first) and {"eval/mf1/network_ms", "eval/floor/mmd"} <= set(first)
    assert "eval/floor/mmd" not in second and all(first[name] == second[name] for name in names)
    assert model.training  # the mode it was in is restored
    assert evaluation.directions == {"sliced_w2": "lower", "mmd": "lower", "energy": "lower"}


def test_best_tracker_follows_the_metric_direction():
    lower = BestTracker.for_metric("eval/mf1/sliced_w2", {"sliced_w2": "lower"})
    assert [lower.update(step, {"eval/mf1/sliced_w2": v}) for step, v in ((1, 0.5), (2, 0.7), (3, 0.4), (4, float("nan")))] \
        == [True, False, True, False]
    assert (lower.best, lower.best_step) == (0.4, 3)
    higher = BestTracker.for_metric("eval/mf1/recall", {"recall": "higher"})
    assert higher.update(1, {"eval/mf1/recall": 0.2}) and not higher.update(2, {"eval/mf1/recall": 0.1})
    resumed = BestTracker.for_metric("eval/mf1/sliced_w2", {"sliced_w2": "lower"})
    resumed.load(lower.state())
    assert not resumed.update(5, {"eval/mf1/sliced_w2": 0.45}) and resumed.best_step == 3
    with pytest.raises(ValueError, match="reports"):
        BestTracker.for_metric("eval/mf1/fid", {"sliced_w2": "lower"})
    with pytest.raises(KeyError):
        lower.update(6, {"eval/mf2/sliced_w2": 0.1})


def test_the_toy2d_evaluator_meets_the_contract(tmp_path):
    for distribution in ("checkerboard", "moons"):
        figures = check_evaluator_spec(TOY_EVALUATOR, _modality(distribution=distribution),
                                       PluginContext(cache_dir=tmp_path, purpose="test"), items=200)
        assert figures["noise"]["sliced_w2"] > figures["real"]["sliced_w2"]


class _Broken(Toy2dEvaluator):
    def __init__(self, fault):
        super().__init__(Toy2dEvalParams())
        self.fault = fault

    def score(self, samples, cond, real, real_cond):
        values = super().score(samples, cond, real, real_cond)
        if self.fault == "extra":
            values["other"] = 1.0
        if self.fault == "stateful":  # state leaking from one call into the next
            self.calls = getattr(self, "calls", 0) + 1
            values["mmd"] += self.calls
        if self.fault == "inverted":
            values["sliced_w2"] = -values["sliced_w2"]
        if self.fault == "mutates":
            samples.add_(1.0)
        if self.fault == "null_labels" and cond is not None:  # a class metric with no requested class left
            values["mmd"] += min(int(label) for label in cond if label < 8)
        return values


@pytest.mark.parametrize("fault, message", [("extra", "declares"), ("stateful", "different figures"),
                                            ("inverted", "rates Gaussian noise"), ("mutates", "changed the tensors")])
def test_the_contract_catches_broken_evaluators(fault, message):
    with pytest.raises((ContractError, ValueError), match=message):
        check_evaluator(_Broken(fault), _modality(), items=100)


def test_the_contract_makes_conditional_evaluators_take_null_conditions():
    conditional = _modality(conditional=True)
    assert check_evaluator(_Broken("none"), conditional, items=100)["real"]
    with pytest.raises(ContractError, match=r"failed on null conditions .*--cond null.*ValueError"):
        check_evaluator(_Broken("null_labels"), conditional, items=100)


def test_bad_metric_directions_are_refused():
    evaluator = Toy2dEvaluator(Toy2dEvalParams())
    evaluator.metrics = {"sliced_w2": "smaller"}
    with pytest.raises(ContractError, match="'lower' or 'higher'"):
        check_evaluator(evaluator, _modality(), items=50)


class _Registry:
    def __init__(self, *specs):
        self.items = [Installed(spec, f"pkg{i} 1.0") for i, spec in enumerate(specs)]

    def evaluators_for(self, modality):
        return [item for item in self.items if not item.spec.modalities or modality in item.spec.modalities]

    def installed(self, group, name, package=None):
        found = [item for item in self.items if item.spec.name == name and package in (None, item.package)]
        if not found:
            raise UnknownPluginError(f"unknown evaluator {name!r}")
        return found[0]


def _spec(name, modalities=()):
    return EvaluatorSpec(name=name, description="", factory=Toy2dEvaluator, modalities=modalities)


def test_evaluator_lookup_prefers_the_modalitys_own_and_refuses_ties():
    generic, own, other = _spec("generic"), _spec("own", ("toy2d",)), _spec("other", ("images",))
    assert find_evaluator("toy2d", plugins=_Registry(generic, own, other)).spec is own
    assert find_evaluator("sound", plugins=_Registry(generic, own, other)).spec is generic
    assert find_evaluator("toy2d", "generic", plugins=_Registry(generic, own)).spec is generic
    with pytest.raises(UnknownPluginError, match="several evaluators"):
        find_evaluator("sound", plugins=_Registry(generic, _spec("generic2")))
    with pytest.raises(UnknownPluginError, match="no evaluator is installed"):
        find_evaluator("sound", plugins=_Registry(own))
    with pytest.raises(UnknownPluginError, match="scores images"):
        find_evaluator("toy2d", "other", plugins=_Registry(other))


def test_every_run_is_scored_by_evaluators_built_with_one_seed(tmp_path):
    """Feature networks define the metric: a run trained with seed 7 must not get its own."""
    from mfkit.builtin.toy2d import Toy2d, Toy2dParams
    from mfkit.evaluation.loading import EVALUATOR_SEED, build_evaluator, find_evaluator
    from mfkit.plugins import PluginContext

    modality = Toy2d(Toy2dParams(distribution="moons", size=200))
    built = build_evaluator(find_evaluator("toy2d"), modality, PluginContext(seed=7, purpose="eval"))
    assert built.seed == EVALUATOR_SEED == 0
