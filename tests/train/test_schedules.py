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


def test_nothing_jumps_when_nothing_follows_progress_or_the_length_is_the_same(tmp_path):
    assert schedule_jumps(recipe(tmp_path, 40, lr_schedule="constant"),
                          recipe(tmp_path, 80, lr_schedule="constant"), 40) == []
    same = recipe(tmp_path, 40, alpha_curriculum=ALPHA)
    assert schedule_jumps(same, same, 20) == []
    # a curriculum that has ended by the resumed step under both lengths does not jump
    ended = {"flow_matching_until": 0.0, "meanflow_from": 0.1, "shape": "cosine"}
    assert [j.name for j in schedule_jumps(recipe(tmp_path, 40, lr_schedule="constant", alpha_curriculum=ended),
                                           recipe(tmp_path, 80, lr_schedule="constant", alpha_curriculum=ended),
                                           20)] == []


def _train(tmp_path, steps, resume=False, log_every=10):
    data = small_recipe(tmp_path, "jumps", steps=steps, lr_schedule="cosine", checkpoint_every=20, log_every=log_every)
    data["objective"] = {"alpha_curriculum": ALPHA}
    buffer = StringIO()
    Trainer(parse_recipe(data), resume=resume, progress=False, console=Console(file=buffer, width=400)).fit()
    return buffer.getvalue()


def test_a_resume_with_more_steps_warns_with_each_jump(tmp_path):
    assert "schedules jump" not in _train(tmp_path, 20)
    said = _train(tmp_path, 80, resume=True)
    assert "resuming with changes: train.steps: 20 -> 80" in said
    assert ("warning: at step 20 these schedules jump, as they follow step / train.steps (now 80, was 20): "
            "learning-rate factor 0 -> 0.854; alpha 0 -> 1.") in said
    assert "resume with train.steps=20" in said


def test_a_resume_that_keeps_the_length_says_nothing_about_schedules(tmp_path):
    _train(tmp_path, 20)
    said = _train(tmp_path, 20, resume=True, log_every=5)  # another run-length setting, the same train.steps
    assert "resuming with changes: train.log_every: 10 -> 5" in said
    assert "schedules jump" not in said
