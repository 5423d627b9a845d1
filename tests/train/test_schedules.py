"""Progress-following schedules and the jumps a resume with another train.steps makes in them."""
import math
from io import StringIO

import pytest
from rich.console import Console

import mfkit
from mfkit.recipe import parse_recipe
from mfkit.train.schedules import lr_factor, schedule_jumps, schedule_values
from mfkit.train.trainer import Trainer
from tests.helpers import small_recipe

ALPHA = {"flow_matching_until": 0.25, "meanflow_from": 0.75, "shape": "linear"}
INTERVALS = {"strength": 4.0, "balanced_from": 0.5, "shape": "cosine"}


def recipe(tmp_path, steps, lr_schedule="cosine", warmup_steps=0, **objective):
    data = small_recipe(tmp_path, "schedules", steps=steps, lr_schedule=lr_schedule, warmup_steps=warmup_steps)
    data["objective"] = objective
    return parse_recipe(data)


def test_values_are_the_schedules_own_at_step_over_steps(tmp_path):
    values = schedule_values(recipe(tmp_path, 40, warmup_steps=4, alpha_curriculum=ALPHA,
                                    interval_weighting=INTERVALS), 12)
    assert values["learning-rate factor"] == pytest.approx(lr_factor(12, 4, 40, "cosine"))
    assert values["alpha"] == pytest.approx(mfkit.AlphaCurriculum(**ALPHA).alpha(12 / 40))
    assert values["interval-weighting lambda"] == pytest.approx(4.0 * 0.5 * (1 + math.cos(math.pi * 12 / 20)))
    assert set(schedule_values(recipe(tmp_path, 40), 22)) == {"learning-rate factor"}


def test_a_longer_run_moves_every_schedule_at_the_resumed_step(tmp_path):
    saved = recipe(tmp_path, 40, alpha_curriculum=ALPHA, interval_weighting=INTERVALS)
    longer = recipe(tmp_path, 160, alpha_curriculum=ALPHA, interval_weighting=INTERVALS)
    jumps = {jump.name: jump for jump in schedule_jumps(saved, longer, 40)}
    assert jumps["learning-rate factor"].before == pytest.approx(0.0)
    assert jumps["learning-rate factor"].after == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert (jumps["alpha"].before, jumps["alpha"].after) == (0.0, 1.0)  # finished curriculum: back to flow matching
    assert jumps["interval-weighting lambda"].before == 0.0
    assert jumps["interval-weighting lambda"].after == pytest.approx(2.0)
    assert str(jumps["alpha"]) == "alpha 0 -> 1"


def test_nothing_jumps_when_nothing_follows_progress_or_a_schedule_has_ended_under_both_lengths(tmp_path):
    assert schedule_jumps(recipe(tmp_path, 40, lr_schedule="constant"),
                          recipe(tmp_path, 80, lr_schedule="constant"), 40) == []
    ended = {"flow_matching_until": 0.0, "meanflow_from": 0.1, "shape": "cosine"}
    assert schedule_jumps(recipe(tmp_path, 40, lr_schedule="constant", alpha_curriculum=ended),
                          recipe(tmp_path, 80, lr_schedule="constant", alpha_curriculum=ended), 20) == []
    # ... but one that has not ended under the longer length does
    assert [j.name for j in schedule_jumps(recipe(tmp_path, 40, lr_schedule="constant", alpha_curriculum=ended),
                                           recipe(tmp_path, 400, lr_schedule="constant", alpha_curriculum=ended),
                                           20)] == ["alpha"]


def _trainer(tmp_path, steps, resume=False, resume_from=None, allow_changes=False, **train):
    settings = {"lr_schedule": "cosine", "checkpoint_every": 20, "keep_last": 10, **train}
    data = small_recipe(tmp_path, "jumps", steps=steps, **settings)
    data["objective"] = {"alpha_curriculum": ALPHA}
    buffer = StringIO()
    trainer = Trainer(parse_recipe(data), resume=resume, resume_from=resume_from, allow_changes=allow_changes,
                      progress=False, console=Console(file=buffer, width=400))
    return trainer, buffer


def _fit(trainer, monkeypatch, hyper=None):
    """Fit, recording the learning rate each update runs with (and, into ``hyper``, its betas and weight decay)."""
    rates = {}
    step = Trainer._train_step

    def recorded(self, *args, **kwargs):
        rates[self.step] = self.optimizer.param_groups[0]["lr"]
        if hyper is not None:
            hyper.add((tuple(self.optimizer.param_groups[0]["betas"]), self.optimizer.param_groups[0]["weight_decay"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_step", recorded)
    trainer.fit()
    monkeypatch.undo()
    return rates


def test_a_finished_run_resumed_longer_warns_and_trains_with_the_new_schedule_from_its_first_update(
        tmp_path, monkeypatch):
    trainer, buffer = _trainer(tmp_path, 20)
    _fit(trainer, monkeypatch)
    assert "schedules" not in buffer.getvalue()
    trainer, buffer = _trainer(tmp_path, 80, resume=True)
    rates = _fit(trainer, monkeypatch)
    said = buffer.getvalue()
    assert "resuming with changes: train.steps: 20 -> 80" in said
    assert ("warning: at step 20 these schedules jump, as they follow step / train.steps (now 80, was 20): "
            "learning-rate factor 0 -> 0.854; alpha 0 -> 1. The checkpoint finished its 20 steps") in said
    assert min(rates) == 20
    for update, rate in rates.items():  # the warned value is the one the first resumed update uses
        assert rate == pytest.approx(1e-3 * lr_factor(update, 0, 80, "cosine"), rel=1e-12), update


def test_an_earlier_checkpoint_is_compared_with_the_recipe_it_was_saved_under(tmp_path, monkeypatch):
    _fit(_trainer(tmp_path, 40)[0], monkeypatch)
    _fit(_trainer(tmp_path, 80, resume=True)[0], monkeypatch)  # the run's recipe.yaml now says 80
    earlier = tmp_path / "runs" / "jumps" / "checkpoints" / "step-0000020.safetensors"
    trainer, buffer = _trainer(tmp_path, 80, resume_from=earlier)  # saved with 40 steps
    rates = _fit(trainer, monkeypatch)
    assert ("at step 20 these schedules jump, as they follow step / train.steps (now 80, was 40): "
            "learning-rate factor 0.5 -> 0.854; alpha 0.5 -> 1. They go on along the new length from there; "
            "to keep them as they were, resume with train.steps=40") in buffer.getvalue()
    assert rates[20] == pytest.approx(1e-3 * lr_factor(20, 0, 80, "cosine"), rel=1e-12)


def test_other_schedule_settings_under_allow_changes_are_warned_and_applied(tmp_path, monkeypatch):
    _fit(_trainer(tmp_path, 40, checkpoint_every=20)[0], monkeypatch)
    earlier = tmp_path / "runs" / "jumps" / "checkpoints" / "step-0000020.safetensors"
    trainer, buffer = _trainer(tmp_path, 40, resume_from=earlier, allow_changes=True, lr=2e-3,
                               lr_schedule="constant", betas=[0.8, 0.95], weight_decay=0.1)
    hyper = set()
    rates = _fit(trainer, monkeypatch, hyper)
    assert hyper == {((0.8, 0.95), 0.1)}  # not the checkpoint's betas and weight decay
    assert "warning: at step 20 these schedules change with the recipe's new settings: learning-rate factor " \
           "0.5 -> 1" in buffer.getvalue()
    assert set(rates.values()) == {2e-3}  # the new peak rate, constant, from the first resumed update


def test_a_resume_that_keeps_everything_or_trains_nothing_says_nothing_about_schedules(tmp_path, monkeypatch):
    _fit(_trainer(tmp_path, 40)[0], monkeypatch)
    earlier = tmp_path / "runs" / "jumps" / "checkpoints" / "step-0000020.safetensors"
    trainer, buffer = _trainer(tmp_path, 40, resume_from=earlier, log_every=5)  # another run-length setting
    _fit(trainer, monkeypatch)
    assert "resuming with changes: train.log_every: 10 -> 5" in buffer.getvalue()
    assert "schedules" not in buffer.getvalue()
    # at step 20 of a run now 20 steps long nothing trains, so nothing jumps (though the schedules differ)
    trainer, buffer = _trainer(tmp_path, 20, resume_from=earlier)
    assert _fit(trainer, monkeypatch) == {} and "schedules" not in buffer.getvalue()
