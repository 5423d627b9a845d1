"""Objectives against their formulas: r = t share, adaptive weight, guided velocity, presets."""
import math
import warnings

import pytest
import torch
from torch import nn

import mfkit
from mfkit.core.broadcast import sum_non_batch
from mfkit.nn import MLPBackbone
from mfkit.testing import GaussianOracle


@pytest.mark.parametrize("share", [0.0, 0.25, 0.75, 1.0])
def test_r_neq_t_share_is_drawn_per_sample(share):
    sampler = mfkit.TimePairSampler(mfkit.LogitNormal(), r_neq_t_share=share)
    t, r = sampler.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert (r <= t).all() and (t <= 1).all() and (r >= 0).all()
    assert abs((r != t).float().mean().item() - share) < 0.005
    # r = t is chosen independently of t: the share holds in every t-quartile
    for lo, hi in [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]:
        chunk = (t >= torch.quantile(t, lo)) & (t <= torch.quantile(t, hi))
        assert abs((r[chunk] != t[chunk]).float().mean().item() - share) < 0.02


def test_logit_normal_matches_its_definition():
    t = mfkit.LogitNormal(-0.4, 1.0).sample(200_000, generator=torch.Generator().manual_seed(0))
    logits = torch.log(t / (1 - t))
    assert abs(logits.mean().item() + 0.4) < 0.01 and abs(logits.std().item() - 1.0) < 0.01


def test_max_min_of_two_draws():
    sampler = mfkit.TimePairSampler(mfkit.Uniform(), r_neq_t_share=1.0)
    t, r = sampler.sample(200_000, generator=torch.Generator().manual_seed(0))
    # max of two uniforms has mean 2/3, min has mean 1/3
    assert abs(t.mean().item() - 2 / 3) < 0.005 and abs(r.mean().item() - 1 / 3) < 0.005


@pytest.mark.parametrize("order", ["sort", "clip"])
@pytest.mark.parametrize("share", [0.1, 0.5])
def test_full_jump_share_puts_that_share_at_the_one_step_interval(order, share):
    plain = mfkit.TimePairSampler(mfkit.LogitNormal(), mfkit.LogitNormal(-4.0, 1.6), 0.5, order=order)
    jumps = mfkit.TimePairSampler(mfkit.LogitNormal(), mfkit.LogitNormal(-4.0, 1.6), 0.5, order=order,
                                  full_jump_share=share)
    t0, r0 = plain.sample(200_000, generator=torch.Generator().manual_seed(0))
    t, r = jumps.sample(200_000, generator=torch.Generator().manual_seed(0))
    jump = (t == 1) & (r == 0)
    assert abs(jump.float().mean().item() - share) < 0.005
    # the other samples are the plain sampler's draws, untouched; the jumps are chosen independently of them
    assert torch.equal(t[~jump], t0[~jump]) and torch.equal(r[~jump], r0[~jump])
    assert abs(jump[r0 != t0].float().mean().item() - share) < 0.01
    assert (r <= t).all() and (t <= 1).all() and (r >= 0).all()


def test_full_jump_share_zero_draws_what_the_sampler_always_drew():
    old = mfkit.TimePairSampler(mfkit.LogitNormal(), r_neq_t_share=0.3)
    new = mfkit.TimePairSampler(mfkit.LogitNormal(), r_neq_t_share=0.3, full_jump_share=0.0)
    generators = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for a, b in zip(old.sample(1000, generator=generators[0]), new.sample(1000, generator=generators[1])):
        assert torch.equal(a, b)
    assert torch.equal(generators[0].get_state(), generators[1].get_state())  # no extra draw at 0
    t, r = mfkit.TimePairSampler(mfkit.LogitNormal(), full_jump_share=1.0).sample(64)
    assert (t == 1).all() and (r == 0).all()


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_full_jump_share_outside_0_1_is_refused(share):
    with pytest.raises(ValueError, match="full_jump_share must lie in"):
        mfkit.TimePairSampler(full_jump_share=share)


def official_v1(n, ratio, generator):
    """The official PyTorch port's v1 post-processing, written out: mask first, then r = min(t, r), no swap."""
    t = torch.sigmoid(-0.6 + 1.6 * torch.randn(n, generator=generator))
    r = torch.sigmoid(-4.0 + 1.6 * torch.randn(n, generator=generator))
    mask = torch.rand(n, generator=generator) < 1 - ratio
    r = torch.where(mask, t, r)
    return t, torch.minimum(t, r)


def test_cifar10_v1_sampler_is_the_official_v1():
    t, r = mfkit.cifar10_v1_sampler(0.75).sample(200_000, generator=torch.Generator().manual_seed(0))
    t_ref, r_ref = official_v1(200_000, 0.75, torch.Generator().manual_seed(0))
    torch.testing.assert_close(t, t_ref)
    torch.testing.assert_close(r, r_ref)
    share = (r != t).float().mean().item()
    assert abs(share - 0.70) < 0.01  # the docstring's figure: below the 0.75 asked for (r drawn above t)
    assert r[r != t].median() < 0.1 < t.median()  # r ~ LN(-4, 1.6) sits near 0


def test_adaptive_weight_formula():
    err = torch.tensor([0.0, 0.5, 2.0, 10.0])
    torch.testing.assert_close(mfkit.adaptive_weight(err, 1.0, 1e-2), 1 / (err + 1e-2))
    torch.testing.assert_close(mfkit.adaptive_weight(err, 0.75, 1e-3), 1 / (err + 1e-3) ** 0.75)
    torch.testing.assert_close(mfkit.adaptive_weight(err, 0.0, 1e-2), torch.ones(4))
    err.requires_grad_(True)
    assert not mfkit.adaptive_weight(err, 1.0, 1e-2).requires_grad


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 2, 2), (1, 2, 2, 2)])
def test_loss_matches_hand_computation(shape):
    torch.manual_seed(0)
    model = MLPBackbone(shape, width=16, depth=1)
    x = torch.randn(32, *shape)
    objective = mfkit.MeanFlow(adaptive_p=0.5, adaptive_c=1e-3)
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(4))
    out = objective(model, x, draw=draw)
    noise, t, r = draw.noise, draw.t, draw.r
    assert torch.equal(out.t, t) and torch.equal(out.r, r)
    z = mfkit.interpolate(x, noise, t)
    target = mfkit.meanflow_target(model, z, r, t, noise - x)
    err = sum_non_batch((model(z, r, t) - target) ** 2)
    weight = 1 / (err.detach() + 1e-3) ** 0.5
    torch.testing.assert_close(out.loss, (weight * err).mean())
    torch.testing.assert_close(out.mse, err.mean() / math.prod(shape))
    torch.testing.assert_close(out.adaptive_weight, weight.mean())
    torch.testing.assert_close(out.r_neq_t_share, (r != t).float().mean())


def test_flow_matching_is_the_r_equals_t_case():
    torch.manual_seed(0)
    model = MLPBackbone(2, width=16, depth=1)
    x, noise = torch.randn(16, 2), torch.randn(16, 2)
    out = mfkit.FlowMatching()(model, x, noise=noise, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.t, out.r) and out.r_neq_t_share == 0
    z = mfkit.interpolate(x, noise, out.t)
    expected = ((model(z, out.t, out.t) - (noise - x)) ** 2).sum(1).mean()
    torch.testing.assert_close(out.loss, expected)


def test_meanflow_with_all_r_equal_t_is_flow_matching():
    torch.manual_seed(0)
    model = MLPBackbone(2, width=16, depth=1)
    x, noise = torch.randn(16, 2), torch.randn(16, 2)
    mf = mfkit.MeanFlow(times=mfkit.TimePairSampler(r_neq_t_share=0.0), adaptive_p=0.0)
    fm = mfkit.FlowMatching(adaptive_p=0.0)
    a = mf(model, x, noise=noise, generator=torch.Generator().manual_seed(1))
    b = fm(model, x, noise=noise, generator=torch.Generator().manual_seed(1))
    # same t law, but MeanFlow draws two times: compare the loss at MeanFlow's own times
    z = mfkit.interpolate(x, noise, a.t)
    expected = ((model(z, a.t, a.t) - (noise - x)) ** 2).sum(1).mean()
    torch.testing.assert_close(a.loss, expected)
    assert b.loss.requires_grad


def test_presets_carry_the_paper_settings():
    imagenet = mfkit.MeanFlow.preset("imagenet")
    assert imagenet.adaptive_p == 1.0 and imagenet.adaptive_c == 1e-2
    assert imagenet.times.r_neq_t_share == 0.25 and imagenet.times.t_dist == mfkit.LogitNormal(-0.4, 1.0)
    cifar = mfkit.MeanFlow.preset("cifar10", jvp_backend="nograd")
    assert cifar.adaptive_p == 0.75 and cifar.adaptive_c == 1e-3 and cifar.times.r_neq_t_share == 0.75
    assert cifar.jvp_backend == "nograd" and imagenet.coupling == cifar.coupling == "independent"
    small = mfkit.MeanFlow.preset("small")
    assert small.coupling == "ot" and small.coupling_block == 64 and small.adaptive_p == 0.5
    assert small.times.t_dist == mfkit.LogitNormal(0.0, 1.0) and small.times.r_dist is None
    with pytest.raises(ValueError, match="unknown preset 'lsun'"):
        mfkit.MeanFlow.preset("lsun")


def test_training_presets_keep_the_papers_optimisation_settings():
    """The optimiser half of the presets (mfkit.core.presets: the paper's ImageNet and CIFAR-10 settings), pinned
    so that an edit shows here; each call returns a fresh copy."""
    from mfkit.core.presets import training_settings

    imagenet, cifar = training_settings("imagenet"), training_settings("cifar10")
    assert (imagenet["optimizer"], imagenet["lr"], tuple(imagenet["betas"]), imagenet["batch_size"]) == \
        ("adam", 1e-4, (0.9, 0.95), 256)
    assert imagenet["ema_decays"] == [0.9999] and imagenet["lr_schedule"] == "constant"
    assert (cifar["optimizer"], cifar["lr"], tuple(cifar["betas"]), cifar["batch_size"]) == \
        ("adam", 6e-4, (0.9, 0.999), 1024)
    assert cifar["ema_decays"][0] == 0.9999 and cifar["warmup_steps"] == 9800 and cifar["lr_schedule"] == "constant"
    for settings in (imagenet, cifar):
        assert settings["weight_decay"] == 0.0 and settings["grad_clip"] is None
    imagenet["ema_decays"].append(0.5)
    assert training_settings("imagenet")["ema_decays"] == [0.9999]


def test_guided_velocity_formula_and_window():
    g = mfkit.Guidance(null_label=10, w_cfg=0.2, kappa=0.92, t_min=0.0, t_max=0.75)
    assert abs(g.effective_scale - 0.2 / 0.08) < 1e-12
    v, uc, un = torch.randn(3, 4, 2).unbind(0)
    t = torch.tensor([0.1, 0.5, 0.8, 0.7])
    dropped = torch.tensor([False, False, False, True])
    vg = mfkit.guided_velocity(v, uc, un, t, g, dropped)
    mixed = 0.2 * v + 0.92 * uc + (1 - 0.2 - 0.92) * un
    torch.testing.assert_close(vg[:2], mixed[:2])
    torch.testing.assert_close(vg[2:], v[2:])  # outside the window, and dropped


def test_guidance_in_the_objective_uses_the_guided_velocity():
    """With an exact unconditional oracle, u(.|c) = u(.|null) = v(z, t); v_g then mixes v and v(z, t)."""
    oracle = GaussianOracle(torch.tensor([1.0, -1.0]), 0.5)
    g = mfkit.Guidance(null_label=3, w_cfg=0.0, kappa=0.5, class_dropout=0.0)
    objective = mfkit.MeanFlow(times=mfkit.TimePairSampler(r_neq_t_share=1.0), guidance=g, adaptive_p=0.0)
    x = oracle.mean + 0.5 * torch.randn(4096, 2, dtype=torch.float64)
    out = objective(oracle, x, cond=torch.zeros(4096, dtype=torch.long))
    # w_cfg = 0 and kappa + (1 - kappa) = 1: v_g is the marginal velocity, so the oracle is exact.
    assert out.loss.item() < 1e-10


def test_guidance_gives_kappa_to_the_conditional_term_and_keeps_v_on_dropped_rows():
    """A network whose output is A for the null label and B otherwise (no dependence on z, r, t: a zero JVP,
    so the target is the guided velocity itself): inside the window v_g = w v + kappa B + (1 - w - kappa) A;
    rows whose label was dropped, and rows outside the window, keep v."""
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])

    class ByCondition(nn.Module):
        def __init__(self):
            super().__init__()
            self.offset = nn.Parameter(torch.zeros(()))

        def forward(self, z, r, t, cond=None):
            null = (cond == 3).to(z.dtype)[:, None]
            return z * 0 + self.offset + null * a + (1 - null) * b

    guidance = mfkit.Guidance(null_label=3, w_cfg=0.3, kappa=0.5, t_max=0.75, class_dropout=0.2)
    objective = mfkit.MeanFlow(guidance=guidance, adaptive_p=0.0, jvp_guard=0)  # the JVP is zero here
    x, cond = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(0))
    draw.t = torch.tensor([0.2, 0.5, 0.7, 0.9, 0.3, 0.6])
    draw.r = draw.t * 0.5
    draw.dropped = torch.tensor([False, False, True, False, False, True])
    loss = objective(ByCondition(), x, cond, draw=draw).loss
    v = draw.noise - x
    inside = (draw.t <= 0.75) & ~draw.dropped
    target = torch.where(inside[:, None], 0.3 * v + 0.5 * b + 0.2 * a, v)
    u = torch.where(draw.dropped[:, None], a, b)
    torch.testing.assert_close(loss, (u - target).pow(2).sum(1).mean())


def test_guidance_requires_conditions():
    model = MLPBackbone(2, width=8, depth=1, num_classes=3)
    objective = mfkit.MeanFlow(guidance=mfkit.Guidance(null_label=3))
    with pytest.raises(ValueError, match="no conditions"):
        objective(model, torch.randn(4, 2))
    out = objective(model, torch.randn(4, 2), cond=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()


def test_class_dropout_replaces_labels_by_null():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, z, r, t, cond=None):
            seen.append(cond.clone())
            return z * 0

    g = mfkit.Guidance(null_label=7, w_cfg=1.0, kappa=0.0, class_dropout=0.3)  # no network terms needed
    objective = mfkit.MeanFlow(guidance=g, jvp_guard=0)  # the recorder ignores z and t on purpose
    objective(Recorder(), torch.randn(20_000, 2), cond=torch.zeros(20_000, dtype=torch.long))
    labels = seen[-1]
    assert abs((labels == 7).float().mean().item() - 0.3) < 0.02


def test_autocast_target_is_float32():
    torch.manual_seed(0)
    model = MLPBackbone(4, width=32, depth=2)
    x = torch.randn(64, 4)
    noise = torch.randn_like(x)
    full = mfkit.MeanFlow()(model, x, noise=noise, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = mfkit.MeanFlow()(model, x, noise=noise, generator=torch.Generator().manual_seed(0))
    assert half.loss.dtype == torch.float32 and half.per_sample_error.dtype == torch.float32
    assert abs(half.loss.item() - full.loss.item()) < 0.05 * abs(full.loss.item())
    half.loss.backward()


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="r_neq_t_share"):
        mfkit.TimePairSampler(r_neq_t_share=1.5)
    with pytest.raises(ValueError, match="JVP backend"):
        mfkit.MeanFlow(jvp_backend="magic")
    with pytest.raises(ValueError, match="kappa"):
        mfkit.Guidance(null_label=0, kappa=1.0)


def test_a_sliced_draw_reproduces_the_whole_batch():
    """Two halves evaluated with their slices of one draw average to the whole-batch loss."""
    torch.manual_seed(0)
    model = MLPBackbone(3, width=16, depth=1)
    x = torch.randn(8, 3)
    objective = mfkit.MeanFlow(adaptive_p=0.0)
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(2))
    whole = objective(model, x, draw=draw).loss
    halves = [objective(model, x[i:i + 4], draw=draw[i:i + 4]).loss for i in (0, 4)]
    torch.testing.assert_close(whole, sum(halves) / 2)


class ModeRecorder(torch.nn.Module):
    """Records (training mode, labels) of every call; batch norm shows running-statistics updates."""

    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(2, width=16, depth=1, num_classes=3)
        self.norm = torch.nn.BatchNorm1d(2)
        self.calls = []

    def forward(self, z, r, t, cond=None):
        self.calls.append((self.training, None if cond is None else cond.clone()))
        return self.norm(self.net(z, r, t, cond=cond))


@pytest.mark.filterwarnings("ignore:the backbone.s .* normalises with the batch.s statistics")  # BatchNorm on purpose
@pytest.mark.parametrize("kappa, w_cfg, expected_terms", [(0.5, 0.2, 2), (0.0, 0.4, 1), (0.6, 0.4, 1), (0.0, 1.0, 0)])
def test_guidance_passes_run_in_eval_mode_and_only_when_weighted(kappa, w_cfg, expected_terms):
    model = ModeRecorder().train()
    g = mfkit.Guidance(null_label=3, w_cfg=w_cfg, kappa=kappa, class_dropout=0.0)
    x, cond = torch.randn(64, 2), torch.randint(0, 3, (64,))
    before = model.norm.num_batches_tracked.item()
    mfkit.MeanFlow(guidance=g)(model, x, cond, generator=torch.Generator().manual_seed(0))
    guidance_calls = model.calls[:-1]  # the last call is the training forward
    assert len(guidance_calls) == expected_terms
    assert all(not training for training, _ in guidance_calls)
    assert model.training and model.calls[-1][0]  # back in train mode for the loss forward
    assert model.norm.num_batches_tracked.item() == before + 1  # only the training forward updates statistics
    nulls = [labels for _, labels in guidance_calls if (labels == 3).all()]
    assert len(nulls) == (1 if 1 - w_cfg - kappa != 0 else 0)


def test_flat_keywords_and_preset_overrides():
    assert mfkit.MeanFlow(r_neq_t_share=0.6).times.r_neq_t_share == 0.6
    cifar = mfkit.MeanFlow.preset("cifar10", r_neq_t_share=0.5)
    assert cifar.times.r_neq_t_share == 0.5 and cifar.times.r_dist == mfkit.LogitNormal(-4.0, 1.6)
    assert cifar.times.order == "clip"


@pytest.mark.parametrize("settings", [{"jvp_backend": "nograd"}, {"fd_step": 1e-2}, {"r_neq_t_share": 0.3},
                                      {"jvp_precision": "autocast"},
                                      {"times": mfkit.TimePairSampler(r_neq_t_share=0.25)}])
def test_flow_matching_refuses_settings_it_would_ignore(settings):
    with pytest.raises(ValueError, match="FlowMatching computes no JVP"):
        mfkit.FlowMatching(**settings)


def test_unconditional_network_without_cond_argument():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLPBackbone(2, width=16, depth=1)

        def forward(self, z, r, t):
            return self.net(z, r, t)

    model, x = Plain(), torch.randn(16, 2)
    for objective in (mfkit.MeanFlow(), mfkit.FlowMatching(), mfkit.MeanFlow(jvp_backend="nograd"),
                      mfkit.MeanFlow(jvp_backend="finite_difference")):
        objective(model, x).loss.backward()
    assert mfkit.sample(model, torch.randn(4, 2), steps=2).shape == (4, 2)
    assert mfkit.euler_sample(model, torch.randn(4, 2), steps=2).shape == (4, 2)


class NormNet(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(4, 16), norm, nn.Linear(16, 4)

    def forward(self, z, r, t):
        h = self.inp(z)
        if isinstance(self.norm, nn.modules.instancenorm._InstanceNorm):
            h = self.norm(h[:, None, :])[:, 0]  # (B, C=1, L=16)
        else:
            h = self.norm(h)
        return self.out(h * (1 + t - r)[:, None])


BATCH_STATISTICS = r"norm \((BatchNorm1d|InstanceNorm1d)\) (normalises with the batch's statistics|updates running)"


def test_batch_norm_in_training_mode_is_warned_about_once_at_the_callers_line():
    """Batch statistics break the MeanFlow target silently (other statistics in the passes apart from the
    loss forward, running statistics updated again): one warning per objective, none in eval mode."""
    model, objective, x = NormNet(nn.BatchNorm1d(16)), mfkit.MeanFlow(formulation="imf"), torch.randn(8, 4)
    objective(model.eval(), x)  # eval mode with running statistics: fine, and checked again next call
    with pytest.warns(UserWarning, match=BATCH_STATISTICS) as record:
        objective(model.train(), x)
    assert record[0].filename == __file__  # points at the user's line, not inside mfkit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objective(model, x)  # said once per objective
        mfkit.MeanFlow()(model.eval(), x)  # running statistics: rows are independent
        mfkit.MeanFlow()(MLPBackbone(4, width=16, depth=1), x)


@pytest.mark.parametrize("norm", [lambda: nn.BatchNorm1d(16, track_running_stats=False).eval(),
                                  lambda: nn.InstanceNorm1d(1, track_running_stats=True).train()],
                         ids=["batch_norm_without_running_statistics_in_eval", "instance_norm_tracking_in_training"])
def test_other_batch_statistics_are_warned_about(norm):
    """Batch norm without running statistics uses the batch's even in eval mode (iMF's velocity and the
    guidance terms run in eval mode); instance norm tracking statistics is another network in eval mode."""
    model = NormNet(norm())
    with pytest.warns(UserWarning, match=BATCH_STATISTICS):
        mfkit.MeanFlow(formulation="imf")(model, torch.randn(8, 4))
