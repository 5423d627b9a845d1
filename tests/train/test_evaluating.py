"""Evaluation during training: figures in metrics.jsonl, the best checkpoint, resume, no effect on training."""
import json

import pytest
import torch

from mfkit.recipe import parse_recipe
from mfkit.recipe.loading import RecipeError
from mfkit.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from mfkit.train.evaluating import best_metric_name, evaluated_counts, row_keys
from mfkit.train.trainer import Trainer
from tests.helpers import small_recipe

EVAL = {"eval_every": 10, "eval_count": 200}


def train(tmp_path, name, resume=False, objective=None, **settings):
    data = small_recipe(tmp_path, name, **settings)
    if objective:
        data["objective"] = objective
    return Trainer(parse_recipe(data), resume=resume, progress=False).fit()


def eval_lines(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if any(key.startswith("eval/") for key in line)]


def test_figures_are_logged_every_eval_every_steps_and_at_the_end(tmp_path):
    result = train(tmp_path, "logged", steps=25, **EVAL)
    lines = eval_lines(result.run_dir)
    assert [line["step"] for line in lines] == [10, 20, 25]
    assert all("eval/mf1/sliced_w2" in line and "eval/mf1/network_ms" in line for line in lines)
    assert "eval/floor/sliced_w2" in lines[0] and "eval/floor/sliced_w2" not in lines[1]
    assert 0 < lines[0]["eval/floor/sliced_w2"] < lines[0]["eval/mf1/sliced_w2"]


def test_evaluating_does_not_change_training(tmp_path):
    plain = load_checkpoint(train(tmp_path, "plain", steps=20).checkpoint)
    evaluated = load_checkpoint(train(tmp_path, "evaluated", steps=20, **EVAL, eval_steps=[1, 2]).checkpoint)
    for key, value in plain.model.items():
        assert torch.equal(value, evaluated.model[key]), key


def test_keep_best_saves_the_best_step_and_survives_resume(tmp_path):
    result = train(tmp_path, "best", steps=30, keep_best="sliced_w2", **EVAL)
    lines = eval_lines(result.run_dir)
    figures = {line["step"]: line["eval/mf1/sliced_w2"] for line in lines}
    best_step = min(figures, key=figures.get)
    best = result.run_dir / "checkpoints" / "best.safetensors"
    saved = load_checkpoint(best)
    assert saved.step == best_step
    record = dict(saved.extra["best"])
    measured_with = record.pop("measured_with")
    assert record == {"metric": "eval/mf1/sliced_w2", "direction": "lower", "best": figures[best_step],
                      "best_step": best_step}
    assert measured_with["count"] == 200 and measured_with["steps"] == [1] and measured_with["weights"] == "ema 0.9"
    assert best not in list_checkpoints(best.parent)  # never pruned, never "latest"
    assert latest_checkpoint(best.parent).name == "step-0000030.safetensors"
    assert load_checkpoint(result.checkpoint).extra["best"]["best_step"] == best_step
    # a resumed run keeps comparing against the best so far
    resumed = train(tmp_path, "best", resume=True, steps=40, keep_best="sliced_w2", **EVAL)
    figures.update({line["step"]: line["eval/mf1/sliced_w2"] for line in eval_lines(resumed.run_dir)})
    best_step = min(figures, key=figures.get)
    assert load_checkpoint(best).step == best_step


def test_a_flow_matching_run_is_evaluated_with_euler_steps(tmp_path):
    result = train(tmp_path, "fm", steps=10, objective={"kind": "flow_matching"}, eval_steps=[2], **EVAL)
    (line,) = eval_lines(result.run_dir)
    assert "eval/euler2/sliced_w2" in line and not any(key.startswith("eval/mf") for key in line)


def test_keep_best_needs_eval_every(tmp_path):
    with pytest.raises(RecipeError, match="keep_best needs evaluations during training"):
        parse_recipe(small_recipe(tmp_path, keep_best="sliced_w2"))


def test_keep_best_names_an_evaluated_row_and_metric():
    directions = {"sliced_w2": "lower", "mmd": "lower"}
    keys = row_keys((1, 2), (8,))
    assert keys == ["mf1", "mf2", "euler8"]
    assert best_metric_name("mmd", keys, directions) == "eval/mf1/mmd"
    assert best_metric_name("eval/euler8/mmd", keys, directions) == "eval/euler8/mmd"
    with pytest.raises(ValueError, match="row 'mf4' is not evaluated; the evaluated rows are mf1, mf2, euler8"):
        best_metric_name("eval/mf4/mmd", keys, directions)
    with pytest.raises(ValueError, match="the evaluator reports mmd, sliced_w2"):
        best_metric_name("fd", keys, directions)
    with pytest.raises(ValueError, match="write eval/<row>/<metric>"):
        best_metric_name("mf1/mmd", keys, directions)


def test_an_unknown_keep_best_metric_stops_the_run_before_training(tmp_path):
    with pytest.raises(ValueError, match="the evaluator reports"):
        train(tmp_path, "unknown", steps=10, keep_best="fd", **EVAL)
    assert not (tmp_path / "runs" / "unknown").exists()  # an unstarted run leaves nothing behind


def test_evaluated_counts_follow_the_objective(tmp_path):
    meanflow = parse_recipe(small_recipe(tmp_path, eval_steps=[1, 2], eval_euler=[4]))
    assert evaluated_counts(meanflow) == ((1, 2), (4,))
    data = small_recipe(tmp_path, eval_steps=[1, 2], eval_euler=[2, 4])
    data["objective"] = {"kind": "flow_matching"}
    assert evaluated_counts(parse_recipe(data)) == ((), (1, 2, 4))


def test_validate_checks_the_evaluation_settings_without_data(tmp_path):
    from mfkit.plugins.discovery import UnknownPluginError
    from mfkit.train.evaluating import check_evaluation_settings

    check_evaluation_settings(parse_recipe(small_recipe(tmp_path, eval_every=10, keep_best="eval/mf1/sliced_w2")))
    with pytest.raises(ValueError, match="row 'mf2' is not evaluated"):
        check_evaluation_settings(parse_recipe(small_recipe(tmp_path, eval_every=10, keep_best="eval/mf2/mmd")))
    with pytest.raises(UnknownPluginError):
        check_evaluation_settings(parse_recipe(small_recipe(tmp_path, eval_every=10, eval_evaluator="nonesuch")))


def test_evaluator_parameters_reach_the_evaluator_and_are_checked(tmp_path):
    from mfkit.evaluation.loading import parse_params
    from mfkit.train.evaluating import check_evaluation_settings

    assert parse_params(["projections=64", "bandwidths=[0.5, 1.0]"]) == {"projections": 64, "bandwidths": [0.5, 1.0]}
    with pytest.raises(ValueError, match="write name=value"):
        parse_params(["projections"])
    with pytest.raises(ValueError, match="train.eval_params of evaluator 'toy2d': projections: Input should be greater"):
        check_evaluation_settings(parse_recipe(small_recipe(tmp_path, eval_every=10, eval_params={"projections": 0})))
    with pytest.raises(ValueError, match="evaluator 'toy2d' parameters: nonsense: Extra inputs are not permitted"):
        train(tmp_path, "bad-params", steps=10, eval_params={"nonsense": 1}, **EVAL)
    result = train(tmp_path, "params", steps=10, eval_params={"projections": 8}, **EVAL)
    assert eval_lines(result.run_dir)[0]["eval/mf1/sliced_w2"] > 0


def test_a_checkpoint_at_an_evaluated_step_records_that_steps_figures_in_its_best(tmp_path):
    """Evaluation runs before the periodic checkpoint of the same step, so resuming from that checkpoint
    compares against the best including it (else a worse later model could replace best.safetensors)."""
    result = train(tmp_path, "order", steps=30, keep_best="sliced_w2", checkpoint_every=20, keep_last=5, **EVAL)
    figures = {line["step"]: line["eval/mf1/sliced_w2"] for line in eval_lines(result.run_dir)}
    at_20 = load_checkpoint(result.run_dir / "checkpoints" / "step-0000020.safetensors").extra["best"]
    assert at_20["best"] == min(figures[10], figures[20])


def test_resuming_from_an_earlier_checkpoint_sets_aside_a_best_scored_after_it(tmp_path):
    import shutil

    from mfkit.train.checkpoint import set_aside_after

    result = train(tmp_path, "aside", steps=30, checkpoint_every=10, keep_last=5)
    folder = result.run_dir / "checkpoints"
    shutil.copy(folder / "step-0000010.safetensors", folder / "best.safetensors")
    assert set_aside_after(folder, 20) == [folder / "set-aside" / "step-0000030.safetensors"]
    assert (folder / "best.safetensors").is_file()  # scored at step 10, before the resumed step: kept
    shutil.copy(folder / "step-0000020.safetensors", folder / "best.safetensors")
    moved = set_aside_after(folder, 10)
    assert folder / "set-aside" / "best.safetensors" in moved and not (folder / "best.safetensors").exists()


def test_a_best_record_measured_otherwise_is_not_compared_after_a_resume(tmp_path):
    """A resume may change the evaluation settings (run-length settings); figures from another sample count
    are not comparable, so the record starts again (and says so) rather than letting noise replace the best."""
    from io import StringIO

    from rich.console import Console

    first = train(tmp_path, "remeasured", steps=20, keep_best="sliced_w2", **EVAL)
    before = load_checkpoint(first.checkpoint).extra["best"]
    buffer = StringIO()
    data = small_recipe(tmp_path, "remeasured", steps=30, keep_best="sliced_w2", eval_every=10, eval_count=300)
    result = Trainer(parse_recipe(data), resume=True, progress=False, console=Console(file=buffer, width=400)).fit()
    said = buffer.getvalue()
    assert "was measured otherwise (count 200 -> 300)" in said and "starts the best record again" in said
    after = load_checkpoint(result.checkpoint).extra["best"]
    assert after["best_step"] == 30 and after["measured_with"]["count"] == 300  # the first new figure is the best
    assert before["measured_with"]["count"] == 200
    folder = result.run_dir / "checkpoints"
    earlier_best = load_checkpoint(folder / "set-aside" / "best.safetensors")  # kept, not overwritten
    assert earlier_best.step == before["best_step"] and load_checkpoint(folder / "best.safetensors").step == 30
    # the same settings keep the record
    buffer = StringIO()
    data["train"]["steps"] = 40
    Trainer(parse_recipe(data), resume=True, progress=False, console=Console(file=buffer, width=400)).fit()
    assert "measured otherwise" not in buffer.getvalue()


def test_the_evaluator_is_recorded_as_resolved(tmp_path):
    """A default evaluator named or left out, default parameters written or left out: the same record."""
    result = train(tmp_path, "resolved", steps=10, keep_best="sliced_w2", **EVAL)
    measured = load_checkpoint(result.checkpoint).extra["best"]["measured_with"]
    assert measured["evaluator"].endswith(":toy2d") and measured["params"]  # defaults filled in
    name = measured["evaluator"].split(":", 1)[1]
    again = train(tmp_path, "resolved", resume=True, steps=20, keep_best="sliced_w2", eval_evaluator=name,
                  eval_params=measured["params"], **EVAL)
    assert load_checkpoint(again.checkpoint).extra["best"]["measured_with"] == measured


def test_a_failing_evaluation_still_writes_the_checkpoint_due_at_its_step(tmp_path, monkeypatch):
    from mfkit.evaluation.training import TrainingEvaluation

    def out_of_memory(self, model, step):
        raise RuntimeError("out of memory while sampling")

    monkeypatch.setattr(TrainingEvaluation, "__call__", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(tmp_path, "eval-fails", steps=40, checkpoint_every=20, eval_every=20, eval_count=100)
    assert [p.name for p in list_checkpoints(tmp_path / "runs" / "eval-fails" / "checkpoints")] == \
        ["step-0000020.safetensors"]


def test_resuming_from_an_earlier_checkpoint_keeps_a_best_file_for_its_record(tmp_path, monkeypatch):
    """--from step 20 sets aside a best scored at step 40; the record (best at step 10 or 20) gets its file back."""
    from mfkit.evaluation.training import TrainingEvaluation

    scores = {10: 0.5, 20: 0.4, 30: 0.45, 40: 0.3}

    def scored(self, model, step):
        return {"eval/mf1/sliced_w2": scores.get(step, 0.9)}

    monkeypatch.setattr(TrainingEvaluation, "__call__", scored)
    first = train(tmp_path, "branch", steps=40, keep_best="sliced_w2", checkpoint_every=10, keep_last=10, **EVAL)
    folder = first.run_dir / "checkpoints"
    assert load_checkpoint(folder / "best.safetensors").step == 40
    data = small_recipe(tmp_path, "branch", steps=30, keep_best="sliced_w2", checkpoint_every=10, keep_last=10,
                        **EVAL)
    Trainer(parse_recipe(data), resume_from=folder / "step-0000020.safetensors", progress=False).fit()
    assert load_checkpoint(folder / "set-aside" / "best.safetensors").step == 40
    best = load_checkpoint(folder / "best.safetensors")
    assert best.step == 20 and best.extra["best"]["best_step"] == 20  # 30 scored 0.9 after the resume


@pytest.mark.parametrize("conditional", [False, True])
def test_the_best_record_says_how_conditional_samples_got_their_conditions(tmp_path, conditional):
    """The conditions of evaluation samples (the reference's, shuffled since 2026-11-29; in storage order
    before) change the figures: a best record from before that change is not compared with new ones."""
    from mfkit.evaluation.runner import CONDITION_ORDER
    from mfkit.plugins.spec import PluginContext
    from mfkit.recipe.build import build_modality
    from mfkit.train.evaluating import PeriodicEvaluation

    data = small_recipe(tmp_path, keep_best="sliced_w2", **EVAL)
    data["modality"]["params"]["conditional"] = conditional
    recipe = parse_recipe(data)
    context = PluginContext(purpose="train", cache_dir=tmp_path / "cache")
    periodic = PeriodicEvaluation.from_recipe(recipe, build_modality(recipe, context=context), context)
    assert periodic.measured_with.get("conditions") == (CONDITION_ORDER if conditional else None)
    if conditional:
        before = {**json.loads(json.dumps(periodic.state())), "best": 0.1, "best_step": 10}
        del before["measured_with"]["conditions"]  # as saved before the shuffle
        assert "conditions None -> " in periodic.load(before)


def test_the_best_record_of_an_evaluator_with_limits_says_what_was_scored(tmp_path):
    """toy2d scores at most max_samples samples against max_reference real points: the record carries the
    count actually scored and the reference limit, so a record from before (first items, --n as asked) is
    set aside instead of compared."""
    from mfkit.plugins.spec import PluginContext
    from mfkit.recipe.build import build_modality
    from mfkit.train.evaluating import PeriodicEvaluation

    data = small_recipe(tmp_path, keep_best="sliced_w2", eval_every=10, eval_count=300,
                        eval_params={"max_samples": 100, "max_reference": 150})
    recipe = parse_recipe(data)
    context = PluginContext(purpose="train", cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"the toy2d \(mfkit .*\) evaluator scores at most 100 samples"):
        periodic = PeriodicEvaluation.from_recipe(recipe, build_modality(recipe, context=context), context)
    assert periodic.measured_with["count"] == 100 and periodic.measured_with["reference_limit"] == 150
    before = {**json.loads(json.dumps(periodic.state())), "best": 0.1, "best_step": 10}
    before["measured_with"].pop("reference_limit")
    before["measured_with"]["count"] = 300  # as saved before: the count asked for, the first items read
    assert "reference_limit None -> 150" in periodic.load(before)
