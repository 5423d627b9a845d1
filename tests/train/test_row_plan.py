"""``objective.jvp_rows: fastest``: timing the two exact row plans, choosing, storing the choice for resume."""
import pytest
import torch
from torch import nn

import mfkit
from mfkit.nn import MLPBackbone
from mfkit.recipe import parse_recipe
from mfkit.recipe.loading import RecipeError
from mfkit.train.checkpoint import load_checkpoint
from mfkit.train.row_plan import MARGIN, RowPlanTiming, has_two_plans, time_row_plans
from mfkit.train.trainer import Trainer
from tests.helpers import small_recipe


class NormDropoutNet(nn.Module):
    """An MLP with batch norm (updates buffers) and dropout (draws random numbers): everything timing could
    disturb."""

    def __init__(self, dim=4):
        super().__init__()
        self.body = MLPBackbone(dim, width=16, depth=1)
        self.norm = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(0.2)

    def forward(self, z, r, t, cond=None):
        return self.drop(self.norm(self.body(z, r, t, cond)))


@pytest.mark.parametrize("split_s, all_s, choice", [
    (1.0, 1.2, "auto"), (1.0, 1.0, "auto"), (1.0, 1 - MARGIN / 2, "auto"), (1.0, 1 - 2 * MARGIN, "all"),
])
def test_the_split_is_kept_unless_every_row_is_clearly_faster(split_s, all_s, choice):
    timing = RowPlanTiming(split_s, all_s)
    assert timing.choice == choice
    assert ("every row" in timing.describe()) and ("uses every row" in timing.describe()) == (choice == "all")


@pytest.mark.filterwarnings("ignore:the backbone.s .* normalises with the batch.s statistics")  # batch norm on purpose
def test_timing_leaves_parameters_buffers_gradients_and_random_state_as_they_were():
    torch.manual_seed(0)
    model = NormDropoutNet().train()
    x = torch.randn(32, 4)
    model(x, torch.zeros(32), torch.ones(32)).sum().backward()  # gradients to keep
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    timing = time_row_plans(model, mfkit.MeanFlow(r_neq_t_share=0.5), x, None, rounds=2)
    assert timing.split_s > 0 and timing.all_s > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    for parameter, grad in zip(model.parameters(), grads):
        assert torch.equal(parameter.grad, grad)
    assert torch.equal(torch.get_rng_state(), rng)


def test_medians_of_interleaved_steps_decide():
    """A fake clock: each step of the split takes 2 s, of the whole batch 1 s, except one slow outlier each
    (and the untimed warm-up round); the medians choose the whole batch."""
    durations = iter([50, 50,  # warm-up round: split, all
                      2, 1, 2, 9, 9, 1])  # split, all, split, all, split, all
    now = [0.0]
    calls = [0]

    def clock():
        calls[0] += 1
        if calls[0] % 2 == 0:  # the end of a step
            now[0] += next(durations)
        return now[0]

    timing = time_row_plans(MLPBackbone(3, width=8, depth=1), mfkit.MeanFlow(), torch.randn(8, 3), None,
                            rounds=3, clock=clock)
    assert (timing.split_s, timing.all_s) == (2, 1)
    assert timing.choice == "all"


def test_only_meanflow_with_rows_at_r_equal_t_has_two_plans():
    assert has_two_plans(mfkit.MeanFlow())
    assert not has_two_plans(mfkit.MeanFlow(r_neq_t_share=1.0))
    assert not has_two_plans(mfkit.FlowMatching())


def fastest_recipe(tmp_path, name, **train):
    data = small_recipe(tmp_path, name, **train)
    data["objective"] = {"jvp_rows": "fastest"}
    return parse_recipe(data)


def test_the_trainer_takes_the_faster_plan_stores_it_and_resumes_with_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("mfkit.train.trainer.time_row_plans", lambda *a, **k: RowPlanTiming(2.0, 1.0))
    straight = Trainer(fastest_recipe(tmp_path, "straight", steps=20), progress=False)
    result = straight.fit()
    assert straight.objective.jvp_rows == "all"
    assert "this run uses every row" in " ".join(capsys.readouterr().err.split())
    assert load_checkpoint(result.checkpoint).extra["jvp_rows"] == "all"

    Trainer(fastest_recipe(tmp_path, "split", steps=10, checkpoint_every=10), progress=False).fit()

    def not_again(*args, **kwargs):
        raise AssertionError("a resumed run must reuse the stored plan, not time again")

    monkeypatch.setattr("mfkit.train.trainer.time_row_plans", not_again)
    resumed = Trainer(fastest_recipe(tmp_path, "split", steps=20), resume=True, progress=False)
    result_resumed = resumed.fit()
    assert resumed.objective.jvp_rows == "all"
    a, b = load_checkpoint(result.checkpoint).model, load_checkpoint(result_resumed.checkpoint).model
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_trainer_times_for_real_and_an_auto_run_is_not_timed(tmp_path, monkeypatch):
    timed = Trainer(fastest_recipe(tmp_path, "timed", steps=10, checkpoint_every=10), progress=False)
    timed.fit()
    assert timed.row_plan in ("auto", "all")
    assert timed.objective.jvp_rows == timed.row_plan

    monkeypatch.setattr("mfkit.train.trainer.time_row_plans", None)  # would fail if called
    plain = Trainer(parse_recipe(small_recipe(tmp_path, "plain", steps=10, checkpoint_every=10)), progress=False)
    result = plain.fit()
    assert plain.row_plan is None and plain.objective.jvp_rows == "auto"
    assert "jvp_rows" not in load_checkpoint(result.checkpoint).extra


def test_fastest_belongs_to_meanflow(tmp_path):
    data = small_recipe(tmp_path, "fm")
    data["objective"] = {"kind": "flow_matching", "jvp_rows": "fastest"}
    with pytest.raises(RecipeError, match="jvp_rows"):
        parse_recipe(data)
