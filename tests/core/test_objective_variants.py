"""Improved MeanFlow (iMF), the alpha-Flow curriculum and interval weighting against closed forms and slow
references."""
import math
from dataclasses import replace

import pytest
import torch
from torch.func import jvp as func_jvp

import mfkit
from mfkit.core.path import conditional_velocity, interpolate
from mfkit.nn import MLPBackbone
from mfkit.testing import GaussianOracle

SHAPES = [(3,), (2, 3), (1, 2, 2, 2)]


def oracle_for(shape):
    g = torch.Generator().manual_seed(1)
    return GaussianOracle(torch.randn(shape, generator=g), 0.3 + torch.rand(shape, generator=g))


def point(shape, n=48, seed=0, share=0.5):
    """z, r, t (float64) with about ``share`` of the rows r != t, and a conditional velocity v."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    r = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < share, r, t)
    x, e = torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randn(n, *shape, generator=g,
                                                                                  dtype=torch.float64)
    return interpolate(x, e, t), r, t, conditional_velocity(x, e)


# ---------------------------------------------------------------- improved MeanFlow
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize("rows", ["auto", "all"])
def test_imf_target_is_exact_average_velocity_plus_the_conditional_noise(shape, rows):
    """With the exact network, the iMF tangent is the marginal velocity, so the target is u + (v - v_marginal):
    exact in expectation over the data behind z_t, and exact row by row when v is the marginal velocity."""
    oracle = oracle_for(shape)
    z, r, t, v = point(shape)
    objective = mfkit.MeanFlow(formulation="imf", jvp_rows=rows, jvp_guard=0)
    _, target = objective.prediction_and_target(oracle, z, r, t, v, None)
    torch.testing.assert_close(target.double(), oracle(z, r, t) + v - oracle.velocity(z, t), atol=1e-5, rtol=1e-5)
    _, marginal = objective.prediction_and_target(oracle, z, r, t, oracle.velocity(z, t), None)
    torch.testing.assert_close(marginal.double(), oracle(z, r, t), atol=1e-5, rtol=1e-5)


def test_imf_and_meanflow_targets_differ_by_the_tangent_only():
    """The plain MeanFlow target with conditional v is not exact row by row; iMF's is closer to it."""
    oracle = oracle_for((3,))
    z, r, t, v = point((3,))
    _, meanflow = mfkit.MeanFlow(jvp_guard=0).prediction_and_target(oracle, z, r, t, v, None)
    _, improved = mfkit.MeanFlow(formulation="imf", jvp_guard=0).prediction_and_target(oracle, z, r, t, v, None)
    exact = oracle(z, r, t) + v - oracle.velocity(z, t)
    moving = r != t
    assert (meanflow.double() - exact)[moving].abs().max() > 1e-2
    assert (improved.double() - exact).abs().max() < 1e-5


@pytest.mark.parametrize("rows", ["auto", "all"])
def test_imf_target_matches_a_slow_float64_reference_on_a_network(rows):
    torch.manual_seed(0)
    model = MLPBackbone(3, width=32, depth=2, num_classes=4).double()
    z, r, t, v = point((3,), n=16)
    labels = torch.randint(0, 4, (16,))
    u, target = mfkit.MeanFlow(formulation="imf", jvp_rows=rows).prediction_and_target(model, z, r, t, v, labels)
    with torch.no_grad():
        own = model(z, t, t, labels)
    _, du = func_jvp(lambda z_, r_, t_: model(z_, r_, t_, labels), (z, r, t), (own, torch.zeros_like(r),
                                                                                   torch.ones_like(t)))
    expected = v - (t - r)[:, None] * du
    torch.testing.assert_close(target.double(), expected, atol=1e-6, rtol=1e-6)  # the target is float32
    torch.testing.assert_close(u, model(z, r, t, labels))
    still = r == t
    torch.testing.assert_close(target.double()[still], v[still])


def test_imf_trains_through_the_recipe_objective_and_flow_matching_refuses_it():
    with pytest.raises(ValueError, match="formulation"):
        mfkit.FlowMatching(formulation="imf")
    with pytest.raises(ValueError, match="unknown formulation"):
        mfkit.MeanFlow(formulation="implicit")


# ---------------------------------------------------------------- alpha-Flow
def test_alpha_curriculum_schedule():
    cosine = mfkit.AlphaCurriculum(0.2, 0.6)
    assert cosine.alpha(0.0) == 1.0 and cosine.alpha(0.2) == 1.0
    assert cosine.alpha(0.4) == pytest.approx(0.5)
    assert cosine.alpha(0.6) == 0.0 and cosine.alpha(1.0) == 0.0 and cosine.alpha(1.5) == 0.0
    values = [cosine.alpha(p / 100) for p in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    linear = mfkit.AlphaCurriculum(0.0, 1.0, "linear")
    assert linear.alpha(0.25) == pytest.approx(0.75)
    assert mfkit.AlphaCurriculum(0.5, 0.5).alpha(0.5) == 0.0  # a switch without annealing
    with pytest.raises(ValueError, match="flow_matching_until"):
        mfkit.AlphaCurriculum(0.8, 0.3)
    with pytest.raises(ValueError, match="shape"):
        mfkit.AlphaCurriculum(shape="sigmoid")


def test_alpha_one_is_trajectory_flow_matching():
    torch.manual_seed(0)
    model = MLPBackbone(3, width=16, depth=2).double()
    z, r, t, v = point((3,))
    u, target = mfkit.MeanFlow().prediction_and_target(model, z, r, t, v, None, alpha=1.0)
    torch.testing.assert_close(target.double(), v)
    torch.testing.assert_close(u, model(z, r, t))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
def test_alpha_target_is_the_finite_step_formula(shape):
    oracle = oracle_for(shape)
    z, r, t, v = point(shape)
    alpha = 0.3
    _, target = mfkit.MeanFlow().prediction_and_target(oracle, z, r, t, v, None, alpha=alpha)
    gap = (t - r).reshape(-1, *[1] * len(shape))
    later = oracle(z - alpha * gap * v, r, t - alpha * (t - r))
    expected = torch.where(gap != 0, alpha * v + (1 - alpha) * later, v)
    torch.testing.assert_close(target.double(), expected, atol=1e-6, rtol=1e-6)


def test_alpha_target_tends_to_the_exact_target_at_second_order():
    """With the marginal velocity, the first-order term of alpha-Flow's target is the MeanFlow identity
    (zero for the exact network), so its error falls as alpha^2."""
    oracle = oracle_for((3,))
    z, r, t, _ = point((3,))
    v = oracle.velocity(z, t)
    exact = oracle(z, r, t)
    errors = []
    for alpha in (3e-2, 3e-3):
        _, target = mfkit.MeanFlow().prediction_and_target(oracle, z, r, t, v, None, alpha=alpha)
        errors.append(float((target.double() - exact).abs().max()))
    assert errors[0] / errors[1] == pytest.approx(100, rel=0.3)


def test_alpha_curriculum_needs_progress_and_reports_alpha():
    model = MLPBackbone(2, width=16, depth=2)
    objective = mfkit.MeanFlow(alpha=mfkit.AlphaCurriculum(0.25, 0.75))
    x = torch.randn(16, 2)
    with pytest.raises(ValueError, match="progress="):
        objective(model, x)
    assert objective(model, x, progress=0.5).metrics()["alpha"] == pytest.approx(0.5)
    assert objective(model, x, progress=0.9).metrics()["alpha"] == 0.0
    assert "alpha" not in mfkit.MeanFlow()(model, x).metrics()
    with pytest.raises(ValueError, match="alpha"):
        mfkit.FlowMatching(alpha=mfkit.AlphaCurriculum())


def test_alpha_zero_is_exactly_meanflow():
    torch.manual_seed(0)
    model = MLPBackbone(2, width=16, depth=2)
    x = torch.randn(32, 2)
    objective = mfkit.MeanFlow(alpha=mfkit.AlphaCurriculum(0.1, 0.5), r_neq_t_share=0.5)
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(0))
    late = objective(model, x, draw=draw, progress=0.8)
    plain = replace(objective, alpha=None)(model, x, draw=draw)
    torch.testing.assert_close(late.loss, plain.loss)
    assert not math.isclose(float(objective(model, x, draw=draw, progress=0.3).loss.detach()),
                            float(plain.loss.detach()))


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_alpha_rows_get_meanflows_gradient_as_alpha_falls(p):
    """To first order the finite-step residual is alpha times MeanFlow's; its rows' weight
    1 / (alpha (err / alpha^2 + c)^p) makes their gradient MeanFlow's for every p at the presets' c, down to
    alpha = ALPHA_WEIGHT_FLOOR, and fades it as alpha / floor below (MeanFlow's weight gave alpha times
    MeanFlow's gradient at p = 0 and up to 1/alpha times at p = 1)."""
    from mfkit.core.objectives import ALPHA_WEIGHT_FLOOR

    torch.manual_seed(0)
    model = MLPBackbone(3, width=32, depth=2).double()
    x = torch.randn(64, 3, dtype=torch.float64)
    objective = mfkit.MeanFlow(alpha=mfkit.AlphaCurriculum(0.0, 1.0, "linear"), r_neq_t_share=1.0,
                               adaptive_p=p, adaptive_c=1e-2)
    draw = objective.draw(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def gradient(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([q.grad.flatten() for q in model.parameters()])

    exact = gradient(replace(objective, alpha=None)(model, x, draw=draw).loss)
    for alpha, size in ((0.05, 1.0), (ALPHA_WEIGHT_FLOOR, 1.0), (ALPHA_WEIGHT_FLOOR / 10, 0.1)):
        finite = gradient(objective(model, x, draw=draw, progress=1.0 - alpha).loss)
        assert float(finite.norm() / exact.norm()) == pytest.approx(size, rel=0.1)
        assert float(torch.nn.functional.cosine_similarity(finite, exact, dim=0)) > 0.98


# ---------------------------------------------------------------- interval weighting
def test_interval_weighting_schedule():
    cosine = mfkit.IntervalWeighting(strength=4.0, balanced_from=0.5)
    assert cosine.rate(0.0) == 4.0 and cosine.rate(0.25) == pytest.approx(2.0)
    assert cosine.rate(0.5) == 0.0 and cosine.rate(1.0) == 0.0 and cosine.rate(1.5) == 0.0
    rates = [cosine.rate(p / 100) for p in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    linear = mfkit.IntervalWeighting(strength=2.0, balanced_from=1.0, shape="linear")
    assert linear.rate(0.25) == pytest.approx(1.5)
    r, t = torch.tensor([0.0, 0.2, 0.5]), torch.tensor([1.0, 0.2, 0.75])
    torch.testing.assert_close(linear.weights(r, t, 0.25), torch.exp(torch.tensor([-1.5, 0.0, -0.375])))
    for bad in ({"strength": -1.0}, {"strength": math.inf}, {"strength": math.nan}, {"strength": 4e38},
                {"balanced_from": 0.0}, {"balanced_from": 1.2}, {"shape": "step"}):
        with pytest.raises(ValueError, match="interval weighting"):
            mfkit.IntervalWeighting(**bad)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
def test_interval_weighting_multiplies_each_samples_loss_term(shape):
    """loss = mean_B(w_adaptive * exp(-lambda (t - r)) * err), with err, the target and the adaptive weight
    those of plain MeanFlow on the same draw."""
    torch.manual_seed(0)
    model = MLPBackbone(shape, width=16, depth=2)
    x = torch.randn(32, *shape)
    weighting = mfkit.IntervalWeighting(strength=3.0, balanced_from=0.8)
    objective = mfkit.MeanFlow(r_neq_t_share=0.5, adaptive_p=0.5, interval_weighting=weighting)
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(2))
    plain = replace(objective, interval_weighting=None)(model, x, draw=draw)
    weighted = objective(model, x, draw=draw, progress=0.2)
    intervals = torch.exp(-weighting.rate(0.2) * (draw.t - draw.r))
    assert (draw.t != draw.r).any() and weighting.rate(0.2) > 0
    adaptive = mfkit.adaptive_weight(plain.per_sample_error, 0.5, objective.adaptive_c)
    torch.testing.assert_close(weighted.loss, (adaptive * intervals * plain.per_sample_error).mean())
    torch.testing.assert_close(weighted.mse, plain.mse)
    assert weighted.metrics()["interval_weight"] == pytest.approx(float(intervals.mean()))
    assert "interval_weight" not in plain.metrics()
    balanced = objective(model, x, draw=draw, progress=0.8)  # lambda = 0 from balanced_from on: plain MeanFlow
    torch.testing.assert_close(balanced.loss, plain.loss)
    # the gradient follows the weights: rows with large intervals count less early on
    parameters = list(model.parameters())
    early = torch.autograd.grad(objective(model, x, draw=draw, progress=0.2).loss, parameters)
    unweighted = torch.autograd.grad(replace(objective, interval_weighting=None)(model, x, draw=draw).loss, parameters)
    assert any(not torch.allclose(a, b) for a, b in zip(early, unweighted))


def test_interval_weighting_needs_progress_and_flow_matching_refuses_it():
    model = MLPBackbone(2, width=16, depth=2)
    objective = mfkit.MeanFlow(interval_weighting=mfkit.IntervalWeighting())
    with pytest.raises(ValueError, match="interval weighting.*progress="):
        objective(model, torch.randn(8, 2))
    with pytest.raises(ValueError, match="interval_weighting"):
        mfkit.FlowMatching(interval_weighting=mfkit.IntervalWeighting())
    with pytest.raises(ValueError, match="must be a mfkit.IntervalWeighting"):
        mfkit.MeanFlow(interval_weighting={"strength": 2.0})
    with pytest.raises(ValueError, match="must be a mfkit.AlphaCurriculum"):
        mfkit.MeanFlow(alpha=0.5)
    strongest = mfkit.IntervalWeighting(strength=1e3)  # the bound keeps r = t rows at weight 1, never nan
    torch.testing.assert_close(strongest.weights(torch.tensor([0.5, 0.0]), torch.tensor([0.5, 1.0]), 0.0),
                               torch.tensor([1.0, 0.0]))


def test_interval_weighting_of_a_sliced_draw_adds_up_to_the_whole_batch():
    """The weights depend on each row's times alone, so processes that each take a slice of one draw
    (DDP) average to the single-process loss."""
    torch.manual_seed(0)
    model = MLPBackbone(3, width=16, depth=2)
    x = torch.randn(16, 3)
    objective = mfkit.MeanFlow(r_neq_t_share=0.5, interval_weighting=mfkit.IntervalWeighting())
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(5))
    whole = objective(model, x, draw=draw, progress=0.1).loss
    halves = [objective(model, x[i:i + 8], draw=draw[i:i + 8], progress=0.1).loss for i in (0, 8)]
    torch.testing.assert_close(whole, sum(halves) / 2)
