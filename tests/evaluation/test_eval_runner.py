"""The evaluation runner and `mfkit eval`: seeded figures, floors, conditions, defaults, JSON, errors."""
from __future__ import annotations

import json
import time
import warnings

import pytest
import torch
import typer
from typer.testing import CliRunner

from mfkit.builtin.toy2d import Toy2d, Toy2dParams
from mfkit.builtin.toy2d_eval import SPEC as TOY_EVALUATOR, Toy2dEvalParams, Toy2dEvaluator
from mfkit.cli.eval import evaluate as eval_command
from mfkit.evaluation import Evaluation, draw, evaluate_checkpoint, load_split, parse_counts
from mfkit.evaluation.data import select_condition
from mfkit.evaluation.runner import CONDITION_SEED_OFFSET
from tests.evaluation.conftest import make_checkpoint


def _figures(report):
    return [(row.sampler, row.steps, row.metrics) for row in report.rows], report.floor


def test_same_seed_gives_the_same_figures(meanflow_checkpoint):
    settings = {"steps": (1, 2), "euler": (2,), "count": 300, "device": "cpu"}
    first = evaluate_checkpoint(meanflow_checkpoint, seed=3, **settings)
    again = evaluate_checkpoint(meanflow_checkpoint, seed=3, **settings)
    other = evaluate_checkpoint(meanflow_checkpoint, seed=4, **settings)
    assert _figures(first) == _figures(again)
    assert _figures(first) != _figures(other)
    assert [(row.sampler, row.steps) for row in first.rows] == [("meanflow", 1), ("meanflow", 2), ("euler", 2)]
    assert first.directions == {"sliced_w2": "lower", "mmd": "lower", "energy": "lower"}
    assert first.floor_count == 300 and first.reference_count == 2000 and first.count == 300
    assert all(row.network_ms > 0 and row.decode_ms >= 0 for row in first.rows)
    # real data against real data is closer than a briefly trained model's samples
    assert all(first.floor["sliced_w2"] < row.metrics["sliced_w2"] for row in first.rows)


def test_rows_share_noise_and_draw_times_network_and_decoding():
    modality = Toy2d(Toy2dParams(distribution="moons", size=500))
    model = torch.nn.Linear(2, 2)  # not a MeanFlow network; draw only needs model(z, r, t) -> u
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, z, r, t):
            calls.append(z.clone())
            return self.inner(z)

    recorder = Recorder()
    first, network, decode = draw(recorder, modality, 10, 3, euler=False, seed=1, batch_size=4)
    again, *_ = draw(recorder, modality, 10, 1, euler=True, seed=1, batch_size=4)
    assert first.shape == (10, 2) and network > 0 and decode >= 0
    assert len(calls) == 3 * 3 + 3  # 3 batches x 3 steps, then 3 batches x 1 step
    assert torch.equal(calls[0], calls[9])  # both start from the same noise


def test_draw_times_the_modalitys_render_as_decoding():
    class Slow(Toy2d):
        rendered = 0

        def render(self, tensor):
            Slow.rendered += tensor.shape[0]
            time.sleep(0.05)
            return super().render(tensor)

    modality = Slow(Toy2dParams(distribution="moons", size=500))
    class Still(torch.nn.Linear):
        def forward(self, z, r, t):
            return super().forward(z)

    _, _, decode = draw(Still(2, 2), modality, 8, 1, euler=False, seed=1, batch_size=4)
    assert Slow.rendered == 4  # the first batch only
    assert decode >= 8 * 0.05 / 4  # scaled to the whole count


def test_conditions_select_real_items_and_samples(tmp_path):
    checkpoint = make_checkpoint(tmp_path, conditional=True, steps=20)
    report = evaluate_checkpoint(checkpoint, steps=(1,), count=200, cond="north", device="cpu")
    modality = Toy2d(Toy2dParams(distribution="eight_gaussians", size=2000, conditional=True))
    val = load_split(modality, "val")
    label = modality.label_of("north")
    assert report.reference_count == int((val.cond == label).sum()) < len(val)
    assert report.cond == "north" and report.floor_count == 200
    unconditional = evaluate_checkpoint(checkpoint, steps=(1,), count=100, cond="null", device="cpu")
    assert unconditional.reference_count == len(val) and unconditional.floor_count == 100
    with pytest.raises(ValueError, match="unknown condition"):
        evaluate_checkpoint(checkpoint, steps=(1,), count=50, cond="nowhere", device="cpu")
    # without --cond, samples take the reference items' conditions in a seeded random order
    evaluation = Evaluation(modality, Toy2dEvaluator(Toy2dEvalParams()), count=7, floor=False)
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(CONDITION_SEED_OFFSET))[:7]
    assert torch.equal(evaluation.conditions(), val.cond[order])
    chosen = select_condition(val, torch.tensor([label]), "val", "north")
    assert bool((chosen.cond == label).all())


def test_samples_get_the_reference_conditions_shuffled_even_when_stored_class_by_class():
    """A folder's held-out split is stored class by class: taking the first --n conditions gave samples of
    the first classes only, scored against all of them."""
    from mfkit.evaluation.data import RealData
    from mfkit.evaluation.runner import reference_conditions

    labels = torch.arange(3).repeat_interleave(10)  # 0 x10, 1 x10, 2 x10
    sorted_by_class = RealData(torch.zeros(30, 2), labels)
    few = reference_conditions(sorted_by_class, 12, seed=0)
    assert sorted(set(few.tolist())) == [0, 1, 2] and torch.bincount(few).min() >= 2
    many = reference_conditions(sorted_by_class, 70, seed=0)
    assert torch.equal(torch.bincount(many[:60]), torch.full((3,), 20))  # whole passes: each item twice
    assert torch.equal(reference_conditions(sorted_by_class, 12, seed=0), few)
    assert not torch.equal(reference_conditions(sorted_by_class, 12, seed=1), few)
    assert reference_conditions(RealData(torch.zeros(5, 2)), 4, seed=0) is None


def test_an_evaluators_limits_cut_the_samples_drawn_and_the_reference_and_the_report_says_so(tmp_path):
    """toy2d scores at most max_samples samples and max_reference real points: the report printed --n and
    the whole reference while the evaluator silently looked at the first 4000 of each."""
    modality = Toy2d(Toy2dParams(distribution="eight_gaussians", size=2000))
    evaluator = Toy2dEvaluator(Toy2dEvalParams(max_samples=40, max_reference=50))
    with pytest.warns(UserWarning, match=r"toy2d evaluator scores at most 40 samples \(its max_samples\): using 40, "
                                         r"not 300"):
        evaluation = Evaluation(modality, evaluator, count=300, evaluator_name="toy2d")
    assert evaluation.count == 40 and evaluation.floor_count == 40 and len(evaluation.reference) == 50
    assert torch.equal(evaluation.reference.x, load_split(modality, "val", 50, 0).x)  # seeded random subset
    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = torch.nn.Parameter(torch.ones(2))

        def forward(self, z, r, t, cond=None):
            return z - self.shift

    report = evaluation.run(Shift(), steps=(1,))
    assert report.count == 40 and report.reference_count == 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # under the limits: as asked, no warning
        within = Evaluation(modality, evaluator, count=30, reference_limit=20, floor=False)
    assert within.count == 30 and len(within.reference) == 20
    with pytest.raises(ValueError, match="max_samples is 1: an evaluation needs at least 2 samples"):
        Evaluation(modality, _limited(1), count=30)


def _limited(max_samples):
    """A duck-typed evaluator (no Evaluator base class) with a limit below 2."""

    class Limited:
        metrics = {"zero": "lower"}

        def fit(self, train):
            pass

        def score(self, samples, cond, real, real_cond):
            return {"zero": 0.0}

    evaluator = Limited()
    evaluator.max_samples = max_samples
    return evaluator


def test_an_evaluators_reference_limit_applies_to_the_items_of_the_condition_asked_for():
    """With --cond, the limit cuts the items of that condition, not the whole split before selecting."""
    modality = Toy2d(Toy2dParams(distribution="eight_gaussians", size=20000, conditional=True))
    evaluator = Toy2dEvaluator(Toy2dEvalParams(max_reference=4000))
    label = modality.label_of("north")
    everything = load_split(modality, "val")
    in_class = int((everything.cond == label).sum())
    evaluation = Evaluation(modality, evaluator, count=50, cond="north", floor=False)
    assert len(evaluation.reference) == min(4000, in_class) > 1000 and bool((evaluation.reference.cond == label).all())
    small = Evaluation(modality, Toy2dEvaluator(Toy2dEvalParams(max_reference=300)), count=50, cond="north",
                       floor=False)
    assert len(small.reference) == 300 and bool((small.reference.cond == label).all())


def test_flow_matching_runs_default_to_euler_steps(tmp_path):
    checkpoint = make_checkpoint(tmp_path, kind="flow_matching", steps=20)
    report = evaluate_checkpoint(checkpoint, count=50, device="cpu")
    assert [(row.sampler, row.steps) for row in report.rows] == [("euler", s) for s in (1, 2, 4, 8, 32, 100)]
    assert report.info["objective"] == "flow_matching"
    with pytest.raises(ValueError, match=r"flow-matching run, which never learned .* \(--euler 1,2\)"):
        evaluate_checkpoint(checkpoint, steps=(1, 2), count=50, device="cpu")


def test_load_split_draws_a_seeded_subset():
    modality = Toy2d(Toy2dParams(size=1000))
    a, b = load_split(modality, "train", 100, seed=1), load_split(modality, "train", 100, seed=1)
    c = load_split(modality, "train", 100, seed=2)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x) and a.x.shape == (100, 2) and a.cond is None
    with pytest.raises(ValueError, match="no 'test' split"):
        load_split(modality, "test")


def test_parse_counts():
    assert parse_counts("1, 2,4,2") == (1, 2, 4) and parse_counts("") == ()
    for bad in ("1,x", "0", "-1", "1.5"):
        with pytest.raises(ValueError, match="positive integers"):
            parse_counts(bad)


def _cli():
    app = typer.Typer()
    app.command(name="eval")(eval_command)
    app.command(name="unused")(lambda: None)  # two commands: `eval` stays a sub-command
    return app


def test_cli_prints_the_table_and_writes_json(meanflow_checkpoint, tmp_path):
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(_cli(), ["eval", "--checkpoint", str(meanflow_checkpoint), "--steps", "1,2",
                                         "--euler", "4", "--n", "100", "--json", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for text in ("MeanFlow", "Euler", "sliced_w2", "floor", "ms/sample"):
        assert text in result.output
    figures = json.loads(out.read_text())
    assert [(row["sampler"], row["steps"]) for row in figures["rows"]] == [("meanflow", 1), ("meanflow", 2),
                                                                          ("euler", 4)]
    assert set(figures["floor"]) == {"sliced_w2", "mmd", "energy"} and figures["count"] == 100
    assert figures["info"]["step"] == 60 and figures["evaluator"].startswith("toy2d")
    bad = CliRunner().invoke(_cli(), ["eval", "--checkpoint", str(meanflow_checkpoint), "--steps", "1,a"])
    assert bad.exit_code == 2 and "positive integers" in bad.output


def test_the_toy2d_evaluator_is_registered():
    from mfkit.evaluation import find_evaluator

    assert find_evaluator("toy2d").spec is TOY_EVALUATOR
    assert find_evaluator("toy2d", "mfkit:toy2d").spec is TOY_EVALUATOR


def test_mfkit_eval_is_a_command_of_the_cli(meanflow_checkpoint):
    from mfkit.cli import app

    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(meanflow_checkpoint), "--steps", "1", "--n", "50",
                                      "--reference", "200", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "MeanFlow" in result.output and "floor" in result.output


def test_json_is_standard_with_null_for_non_finite_figures(tmp_path):
    from pathlib import Path

    from mfkit.evaluation.report import EvalReport, Row

    report = EvalReport("toy", {"fd": "lower", "accuracy": "higher"}, count=4, seed=0, reference_count=8,
                        rows=[Row("meanflow", 1, {"fd": float("inf"), "accuracy": float("nan")}, 1.0, 0.5)],
                        floor={"fd": 0.25, "accuracy": float("nan")}, info={"checkpoint": Path("a/b")})
    text = report.write_json(tmp_path / "r.json").read_text()

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    figures = json.loads(text, parse_constant=refuse)
    assert figures["rows"][0]["metrics"] == {"fd": None, "accuracy": None}
    assert figures["floor"] == {"fd": 0.25, "accuracy": None} and figures["info"]["checkpoint"] == "a/b"


def test_scoring_runs_with_exact_float32_products_on_its_device(meanflow_checkpoint, monkeypatch):
    """evaluate_checkpoint builds the evaluator and scores inside cuda_float32_products(device, tf32=False):
    on CUDA a machine's TF32 default cannot bend the figures (on a CPU the context changes nothing)."""
    import contextlib

    from mfkit.core import tf32
    from mfkit.evaluation import runner

    entered, inside = [], []
    original = tf32.cuda_float32_products

    @contextlib.contextmanager
    def recording(device, tf32):
        entered.append((torch.device(device).type, tf32))
        inside.append(True)
        with original(device, tf32):
            yield
        inside.pop()

    monkeypatch.setattr(tf32, "cuda_float32_products", recording)
    scored = []
    run = runner.Evaluation.run
    monkeypatch.setattr(runner.Evaluation, "run", lambda self, *a, **k: scored.append(bool(inside)) or run(self, *a, **k))
    evaluate_checkpoint(meanflow_checkpoint, steps=(1,), count=100, device="cpu")
    assert entered == [("cpu", False), ("cpu", False)] and scored == [True]
