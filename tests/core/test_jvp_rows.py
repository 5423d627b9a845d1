"""JVP only where r != t (``MeanFlow.jvp_rows``): the same loss and gradients as the whole-batch JVP.

The slow exact reference is today's computation, ``jvp_rows="all"``: every row gets a JVP. ``"auto"``
(the default) must give the same loss, per-sample errors and gradients up to float rounding on every
backbone without cross-sample coupling, for every backend and precision, and must fall back to the
whole batch (then bit for bit the reference) for batch norm in training, dropout, anything that draws
random numbers, updates buffers or couples samples.
"""
import copy
import pickle

import pytest
import torch
from torch import nn

import mfkit
from mfkit.core.jvp import JVPError, jvp, jvp_on_rows
from mfkit.core.rows import static_reason, take_rows
from mfkit.nn import MLPBackbone, TimePairEmbedding
from mfkit.testing.networks import ConvAttentionNet

#: batch norm in training is among the backbones here on purpose (the split must not be taken)
pytestmark = pytest.mark.filterwarnings("ignore:the backbone.s .* (normalises with the batch.s statistics|updates running)")

BACKENDS = ["forward_ad", "forward_ad_plain", "nograd", "finite_difference"]
#: (autocast on?, jvp_precision)
PRECISIONS = [(False, "fp32"), (True, "fp32"), (True, "tf32"), (True, "autocast")]
B = 24


def case(kind):
    """(model, x, cond, guidance) for a backbone kind, weights large enough for a clear JVP."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cond, guidance = None, None
    if kind == "mlp":
        model, x = MLPBackbone(6, width=32, depth=2), torch.randn(B, 6, generator=g)
    elif kind == "mlp_labels_guidance":
        model, x = MLPBackbone(6, width=32, depth=2, num_classes=5), torch.randn(B, 6, generator=g)
        cond = torch.randint(0, 5, (B,), generator=g)
        guidance = mfkit.Guidance(null_label=5, w_cfg=0.6, kappa=0.3, t_min=0.1, t_max=0.9, class_dropout=0.2)
    elif kind == "conv_attention_labels":
        model = ConvAttentionNet(width=16, blocks=1, heads=2, num_classes=4, groups=4, frequency_dim=16)
        x = torch.randn(B, 3, 6, 6, generator=g)
        cond = torch.randint(0, 4, (B,), generator=g)
    else:
        raise ValueError(kind)
    for p in model.parameters():
        nn.init.normal_(p, std=0.2)
    return model, x, cond, guidance


class CallSizes:
    """Records the batch size of every call of a module (forward pre-hook)."""

    def __init__(self, module):
        self.sizes = []
        module.register_forward_pre_hook(lambda m, args, kwargs: self.sizes.append(args[0].shape[0]),
                                         with_kwargs=True)


def step(model, objective, x, cond, draw, autocast):
    """(output, gradients) of one loss evaluation with the given randomness."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = objective(model, x, cond, draw=draw)
    out.loss.backward()
    return out, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def assert_same(a, b, grads_a, grads_b, rtol, atol):
    torch.testing.assert_close(a.loss, b.loss, rtol=rtol, atol=atol)
    torch.testing.assert_close(a.per_sample_error, b.per_sample_error, rtol=rtol, atol=atol)
    torch.testing.assert_close(a.r_neq_t_share, b.r_neq_t_share, rtol=0, atol=0)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol * max(1.0, float(gb.abs().max())))


# ---------------------------------------------------------------- exactness against the whole batch
@pytest.mark.parametrize("autocast,precision", PRECISIONS, ids=["fp32", "bf16-jvp_fp32", "bf16-jvp_tf32", "bf16-jvp_autocast"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["mlp", "mlp_labels_guidance", "conv_attention_labels"])
def test_auto_equals_the_whole_batch_jvp(kind, backend, autocast, precision):
    model, x, cond, guidance = case(kind)
    settings = dict(jvp_backend=backend, jvp_precision=precision, guidance=guidance, r_neq_t_share=0.4)
    reference = mfkit.MeanFlow(jvp_rows="all", **settings)
    objective = mfkit.MeanFlow(**settings)  # jvp_rows="auto", the default
    assert objective.jvp_rows == "auto"
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(2))
    try:
        ref_out, ref_grads = step(model, reference, x, cond, draw, autocast)
    except RuntimeError as error:
        # PyTorch's own forward-mode formulas (forward_ad_plain) under CPU bf16 autocast with the JVP in
        # bf16 mix float32 tangents and bf16 primals in rms_norm and fail: the split fails the same way
        assert backend == "forward_ad_plain" and precision == "autocast" and "same dtype" in str(error)
        with pytest.raises(RuntimeError, match="same dtype"):
            step(model, objective, x, cond, draw, autocast)
        return
    moving = int((draw.r != draw.t).sum())
    assert 0 < moving < B
    step(model, objective, x, cond, objective.draw(x.shape, generator=torch.Generator().manual_seed(3)), autocast)
    assert objective.jvp_rows_reason is None  # the probe found the backbone separable

    sizes = CallSizes(model)
    out, grads = step(model, objective, x, cond, draw, autocast)
    guided = 2 if guidance is not None else 0  # u(z, t, t | c) and u(z, t, t | null), whole batch
    jvp_calls = sorted(sizes.sizes[guided:])
    fp32_split = autocast and precision in ("fp32", "tf32")
    # forward_ad: the r = t rows' plain forward and the r != t rows' dual pass; else the whole batch's
    # forward and the r != t rows' extra no-grad pass (finite differences: always two, shifted and base
    # on the same rows, never the whole batch's rows as the base)
    if backend.startswith("forward_ad") and not fp32_split:
        expected = [B - moving, moving]
    elif backend == "finite_difference":
        expected = [B, moving, moving]
    else:
        expected = [B, moving]
    assert jvp_calls == sorted(expected)
    if not autocast:
        assert_same(out, ref_out, grads, ref_grads, 1e-5, 1e-6)
        return
    # bf16: the forward_ad split sums each weight gradient from two bf16 products (r = t rows, r != t
    # rows) instead of one; measured up to 1.5e-2 of the largest gradient, everything else bit for bit
    assert_same(out, ref_out, grads, ref_grads, 2e-2, 2e-3)
    # ... which is bf16 rounding: no further from the float32 gradients than the whole batch's bf16 ones
    _, exact = step(model, reference, x, cond, draw, False)

    def distance(gradients):
        return max(float((g - e).abs().max() / e.abs().max().clamp_min(1e-12)) for g, e in zip(gradients, exact))

    assert distance(grads) <= 2 * distance(ref_grads) + 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_computed_apart_are_the_same_rows(backend):
    """jvp_on_rows: u of the whole batch and the JVP of the rows asked for, in their order (index or mask)."""
    model, x, cond, _ = case("conv_attention_labels")
    g = torch.Generator().manual_seed(4)
    r, t, v = torch.rand(B, generator=g) * 0.3, 0.4 + torch.rand(B, generator=g) * 0.6, torch.randn(x.shape, generator=g)
    tangents = (v, torch.zeros_like(r), torch.ones_like(t))
    u, du = jvp(model, x, r, t, tangents, cond, backend=backend)
    index = torch.tensor([7, 2, 19, 3])
    for rows in (index, torch.isin(torch.arange(B), index)):
        u_rows, du_rows = jvp_on_rows(model, x, r, t, tangents, cond, rows, backend=backend)
        expected = du[index] if rows.dtype != torch.bool else du[index.sort().values]
        torch.testing.assert_close(u_rows, u, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(du_rows, expected, rtol=1e-5, atol=1e-5)
    u_none, du_none = jvp_on_rows(model, x, r, t, tangents, cond, torch.zeros(B, dtype=torch.bool), backend=backend)
    assert du_none.shape == (0, *x.shape[1:])
    torch.testing.assert_close(u_none, u, rtol=1e-6, atol=1e-6)


def test_meanflow_target_on_the_r_neq_t_rows_only():
    model, x, _, _ = case("mlp")
    g = torch.Generator().manual_seed(5)
    t = torch.rand(B, generator=g)
    r = torch.where(torch.rand(B, generator=g) < 0.5, t * torch.rand(B, generator=g), t)
    v = torch.randn(x.shape, generator=g)
    torch.testing.assert_close(mfkit.meanflow_target(model, x, r, t, v, rows="r_neq_t"),
                               mfkit.meanflow_target(model, x, r, t, v), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        mfkit.meanflow_target(model, x, r, t, v, rows="auto")


# ---------------------------------------------------------------- no row, every row
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_r_neq_t_row_takes_no_jvp(backend):
    model, x, _, _ = case("mlp")
    objective = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=0.0)
    reference = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=0.0, jvp_rows="all")
    objective(model, x)  # the probe
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(6))
    sizes = CallSizes(model)
    out, grads = step(model, objective, x, None, draw, False)
    assert sizes.sizes == [B] and objective.jvp_rows_reason is None  # one ordinary forward, nothing else
    ref_out, ref_grads = step(model, reference, x, None, draw, False)
    assert_same(out, ref_out, grads, ref_grads, 0, 0)  # the target is v in both: bit for bit
    assert float(out.r_neq_t_share) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_row_r_neq_t_is_the_whole_batch_pass(backend):
    model, x, _, _ = case("mlp")
    objective = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=1.0)
    reference = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=1.0, jvp_rows="all")
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(7))
    sizes = CallSizes(model)
    out, grads = step(model, objective, x, None, draw, False)
    assert set(sizes.sizes) == {B}  # no probe, no split
    ref_out, ref_grads = step(model, reference, x, None, draw, False)
    assert_same(out, ref_out, grads, ref_grads, 0, 0)
    assert float(out.r_neq_t_share) == 1.0


# ---------------------------------------------------------------- detection: whole batch, bit for bit
class Noisy(nn.Module):
    """Draws random numbers in its forward without any known stochastic layer."""

    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(6, width=32, depth=1)

    def forward(self, z, r, t, cond=None):
        return self.net(z + 0.1 * torch.randn_like(z), r, t)


class Coupled(nn.Module):
    """Subtracts the batch mean of a hidden layer: cross-sample coupling without batch norm."""

    def __init__(self):
        super().__init__()
        self.inp, self.time, self.out = nn.Linear(6, 32), TimePairEmbedding(32), nn.Linear(32, 6)

    def forward(self, z, r, t, cond=None):
        h = torch.tanh(self.inp(z) + self.time(r, t))
        return self.out(h - h.mean(0, keepdim=True))


class Counting(nn.Module):
    """Updates a buffer in its forward (as running statistics do)."""

    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(6, width=32, depth=1)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(6))

    def forward(self, z, r, t, cond=None):
        with torch.no_grad():
            self.calls += 1
            self.mean.mul_(0.9).add_(0.1 * z.mean(0))
        return self.net(z, r, t)


def with_layer(layer):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.time, self.layer, self.out = nn.Linear(6, 32), TimePairEmbedding(32), layer, nn.Linear(32, 6)

        def forward(self, z, r, t, cond=None):
            return self.out(self.layer(torch.tanh(self.inp(z) + self.time(r, t))))

    return Net()


def attention_layer(dropout):
    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(8, 2, dropout=dropout, batch_first=True)

        def forward(self, h):
            seq = h.reshape(h.shape[0], 4, 8)
            return self.attention(seq, seq, seq, need_weights=False)[0].reshape(h.shape)

    return SelfAttention()


COUPLED = {
    "batchnorm_train": (lambda: with_layer(nn.BatchNorm1d(32)), "BatchNorm1d"),
    "batchnorm_no_running_stats_eval": (lambda: with_layer(nn.BatchNorm1d(32, track_running_stats=False)).eval(),
                                        "batch's statistics"),
    "dropout": (lambda: with_layer(nn.Dropout(0.2)), "Dropout"),
    "alpha_dropout": (lambda: with_layer(nn.AlphaDropout(0.2)), "AlphaDropout"),
    "rrelu": (lambda: with_layer(nn.RReLU()), "RReLU"),
    "attention_dropout": (lambda: with_layer(attention_layer(0.1)), "dropout = 0.1"),
    "random_numbers": (Noisy, "random numbers"),
    "batch_mean": (Coupled, "couples samples"),
    "buffer_update": (Counting, "buffer"),
}


@pytest.mark.parametrize("backend", ["forward_ad", "finite_difference"])
@pytest.mark.parametrize("name", list(COUPLED))
def test_coupled_or_random_backbones_keep_the_whole_batch(name, backend):
    build, reason = COUPLED[name]
    model = build()
    reference_model = copy.deepcopy(model)
    x = torch.randn(B, 6, generator=torch.Generator().manual_seed(8))
    objective = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=0.5)
    reference = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=0.5, jvp_rows="all")
    for seed in (9, 10):  # the first call probes, the second remembers
        draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(11)
        out, grads = step(model, objective, x, None, draw, False)
        after = torch.get_rng_state()
        assert objective.jvp_rows_reason is not None and reason in objective.jvp_rows_reason
        torch.manual_seed(11)
        ref_out, ref_grads = step(reference_model, reference, x, None, draw, False)
        assert torch.equal(after, torch.get_rng_state())  # the probe drew nothing from the training stream
        assert_same(out, ref_out, grads, ref_grads, 0, 0)
        for (key, a), (_, b) in zip(model.state_dict().items(), reference_model.state_dict().items()):
            assert torch.equal(a, b), key  # running statistics and counters: as if there were no probe


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(32), nn.Dropout(0.2), nn.Dropout(0.0), nn.GroupNorm(4, 32)])
def test_layers_that_are_harmless_in_eval_mode_or_at_zero_rate_split(layer):
    model = with_layer(layer)
    if isinstance(layer, nn.BatchNorm1d) or (isinstance(layer, nn.Dropout) and layer.p > 0):
        model.eval()
    objective = mfkit.MeanFlow(r_neq_t_share=0.5)
    objective(model, torch.randn(B, 6))
    assert objective.jvp_rows_reason is None


def test_the_same_backbone_in_training_then_in_eval_mode():
    model = with_layer(nn.Dropout(0.3))
    objective = mfkit.MeanFlow(r_neq_t_share=0.5)
    objective(model, torch.randn(B, 6))
    assert "Dropout" in objective.jvp_rows_reason
    model.eval()
    objective(model, torch.randn(B, 6))
    assert objective.jvp_rows_reason is None
    model.train()
    objective(model, torch.randn(B, 6))
    assert "Dropout" in objective.jvp_rows_reason


def test_static_rule_names_the_layer():
    sync = nn.Sequential(nn.Linear(4, 4), nn.SyncBatchNorm(4))
    assert "1 (SyncBatchNorm)" in static_reason(sync)
    assert static_reason(sync.eval()) is None
    assert "InstanceNorm2d" in static_reason(nn.Sequential(nn.InstanceNorm2d(4, track_running_stats=True)))
    assert static_reason(nn.Sequential(nn.InstanceNorm2d(4))) is None

    class DropPath(nn.Module):  # as timm writes it
        def __init__(self, drop_prob):
            super().__init__()
            self.drop_prob = drop_prob

    assert "drop_prob = 0.1" in static_reason(nn.Sequential(DropPath(0.1)))
    assert static_reason(nn.Sequential(DropPath(0.0))) is None
    assert static_reason(lambda z, r, t: z) is None


def test_zero_output_is_probed_again():
    """A zero-initialised output layer hides coupling: the whole batch until the output is not zero."""
    model = Coupled()
    nn.init.zeros_(model.out.weight), nn.init.zeros_(model.out.bias)
    objective = mfkit.MeanFlow(r_neq_t_share=0.5)
    objective(model, torch.randn(B, 6))
    assert "zero" in objective.jvp_rows_reason
    nn.init.normal_(model.out.weight)
    objective(model, torch.randn(B, 6))
    assert "couples samples" in objective.jvp_rows_reason

    separable = MLPBackbone(6, width=32, depth=1)
    nn.init.zeros_(separable.out.weight), nn.init.zeros_(separable.out.bias)
    objective = mfkit.MeanFlow(r_neq_t_share=0.5, jvp_guard=0)
    for _ in range(8):
        objective(separable, torch.randn(B, 6))
        assert "zero" in objective.jvp_rows_reason
    objective(separable, torch.randn(B, 6))
    assert "stayed identically zero" in objective.jvp_rows_reason


def test_r_neq_t_is_unchecked_and_all_never_splits():
    model = with_layer(nn.BatchNorm1d(32))
    x = torch.randn(B, 6)
    sizes = CallSizes(model)
    draw = mfkit.MeanFlow(r_neq_t_share=0.5).draw(x.shape, generator=torch.Generator().manual_seed(12))
    moving = int((draw.r != draw.t).sum())
    mfkit.MeanFlow(jvp_rows="r_neq_t")(model, x, draw=draw)
    assert sorted(sizes.sizes) == sorted([B - moving, moving])
    sizes.sizes.clear()
    mfkit.MeanFlow(jvp_rows="all")(MLPBackbone(6, width=8, depth=1), x, draw=draw)
    mfkit.MeanFlow(jvp_rows="all")(model, x, draw=draw)
    assert sizes.sizes == [B]


# ---------------------------------------------------------------- the runtime guard on the rows
class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(6, width=16, depth=1)

    def forward(self, z, r, t, cond=None):
        return self.net(z.detach(), r.detach(), t.detach())


class Kink(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(6, width=16, depth=1)

    def forward(self, z, r, t, cond=None):  # sqrt at 0: finite value, infinite derivative
        return self.net(z, r, t) + torch.sqrt((t - t.detach())[:, None].expand_as(z))


@pytest.mark.parametrize("backend", ["forward_ad", "nograd"])
def test_guard_still_stops_a_zero_or_non_finite_jvp_of_the_r_neq_t_rows(backend):
    x = torch.randn(B, 6)
    objective = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=0.5)
    with pytest.raises(JVPError, match="exactly zero"):
        objective(Detached(), x, generator=torch.Generator().manual_seed(0))
    assert objective.jvp_rows_reason is None  # it was the split computation that was caught
    objective = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=0.5)
    with pytest.raises(JVPError, match="NaN or infinite"):
        objective(Kink(), x, generator=torch.Generator().manual_seed(0))
    assert objective.jvp_rows_reason is None


def test_guard_skips_a_batch_without_r_neq_t_rows_and_counts_the_others():
    objective = mfkit.MeanFlow(r_neq_t_share=0.0, jvp_guard=1)
    objective(Detached(), torch.randn(B, 6))  # no JVP at all: nothing to check, not counted
    assert objective._guard_left == 1
    objective = mfkit.MeanFlow(r_neq_t_share=0.5, jvp_guard=1)
    objective(MLPBackbone(6, width=16, depth=1), torch.randn(B, 6))
    assert objective._guard_left == 0


# ---------------------------------------------------------------- torch.compile, DDP, copies, settings
def test_compiled_backbone():
    model, x, cond, _ = case("mlp")
    compiled = torch.compile(model, backend="aot_eager")
    objective, reference = mfkit.MeanFlow(r_neq_t_share=0.5), mfkit.MeanFlow(r_neq_t_share=0.5, jvp_rows="all")
    for seed in (13, 14):
        draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(seed))
        out, grads = step(compiled, objective, x, cond, draw, False)
        assert objective.jvp_rows_reason is None
        ref_out, ref_grads = step(model, reference, x, cond, draw, False)
        assert_same(out, ref_out, grads, ref_grads, 1e-5, 1e-6)


@pytest.mark.parametrize("share", [0.25, 0.75, 1.0])
@pytest.mark.parametrize("find_unused", [False, True])
@pytest.mark.parametrize("backend", ["forward_ad", "nograd"])
def test_distributed_data_parallel_wrapper(process_group, backend, find_unused, share, monkeypatch):
    """Gradients reach DDP's reducer (one process here; tests/train/test_distributed.py runs two).
    The branch join (mfkit.core.branch_backward), allowed for this small model, must stay out of DDP."""
    from torch.nn.parallel import DistributedDataParallel

    from mfkit.core import branch_backward

    monkeypatch.setattr(branch_backward, "MIN_WEIGHTS", 0)

    model, x, _, _ = case("mlp")
    plain = copy.deepcopy(model)
    wrapped = DistributedDataParallel(model, find_unused_parameters=find_unused)
    objective = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=share)
    reference = mfkit.MeanFlow(jvp_backend=backend, r_neq_t_share=share, jvp_rows="all")
    sizes = CallSizes(model)
    for seed in (15, 16):
        draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(seed))
        moving = int((draw.r != draw.t).sum())
        sizes.sizes.clear()
        out, grads = step(wrapped, objective, x, None, draw, False)
        assert objective.jvp_rows_reason is None
        if seed == 16 and backend == "forward_ad":
            # find_unused_parameters: DDP's output function has no forward-mode rule, so the dual pass
            # runs without gradient inside the wrapper and the wrapper gets an ordinary forward
            if moving == B:
                expected = [B, B] if find_unused else [B]
            else:
                expected = [B, moving] if find_unused else [B - moving, moving]
            assert sorted(sizes.sizes) == sorted(expected)
        ref_out, ref_grads = step(plain, reference, x, None, draw, False)
        assert_same(out, ref_out, grads, ref_grads, 1e-5, 1e-6)


def test_copies_and_pickles_probe_afresh():
    objective = mfkit.MeanFlow(r_neq_t_share=0.5)
    model = with_layer(nn.Dropout(0.1))
    objective(model, torch.randn(B, 6))
    for copied in (copy.deepcopy(objective), pickle.loads(pickle.dumps(objective))):
        assert copied == objective and copied.jvp_rows_reason is None
        copied(model, torch.randn(B, 6))
        assert "Dropout" in copied.jvp_rows_reason


def test_a_bound_method_or_a_function_is_probed_once():
    model = MLPBackbone(6, width=16, depth=1)
    calls = []

    def function(z, r, t):
        calls.append(z.shape[0])
        return model(z, r, t)

    for backbone in (model.forward, function):
        objective = mfkit.MeanFlow(r_neq_t_share=0.5)
        objective(backbone, torch.randn(B, 6))
        assert objective.jvp_rows_reason is None
        calls.clear()
        objective(backbone, torch.randn(B, 6))
        assert objective.jvp_rows_reason is None
    assert len(calls) == 2  # the split's two passes, no probe
    dropout = with_layer(nn.Dropout(0.2))
    objective = mfkit.MeanFlow(r_neq_t_share=0.5)
    objective(dropout.forward, torch.randn(B, 6))
    assert "Dropout" in objective.jvp_rows_reason  # the static rule sees the method's module


def test_take_rows_of_condition_structures():
    cond = {"labels": torch.arange(4), "mask": torch.ones(4, 3), "scale": torch.tensor(2.0), "name": "x",
            "pair": (torch.arange(4) * 2, torch.zeros(2))}
    picked = take_rows(cond, torch.tensor([3, 1]), 4)
    assert picked["labels"].tolist() == [3, 1] and picked["mask"].shape == (2, 3)
    assert picked["scale"] == 2.0 and picked["name"] == "x"
    assert picked["pair"][0].tolist() == [6, 2] and picked["pair"][1].shape == (2,)


def test_settings_and_recipe_field():
    from mfkit.recipe.build import build_objective
    from mfkit.recipe.schema import ObjectiveSettings

    with pytest.raises(ValueError, match="jvp_rows"):
        mfkit.MeanFlow(jvp_rows="some")
    with pytest.raises(ValueError, match="jvp_rows"):
        mfkit.FlowMatching(jvp_rows="auto")
    assert build_objective(ObjectiveSettings(), None).jvp_rows == "auto"
    assert build_objective(ObjectiveSettings(jvp_rows="all"), None).jvp_rows == "all"
    assert build_objective(ObjectiveSettings(jvp_rows="r_neq_t"), None).jvp_rows == "r_neq_t"
    with pytest.raises(ValueError):
        ObjectiveSettings(jvp_rows="some")
    with pytest.raises(ValueError, match="jvp_rows"):
        ObjectiveSettings(kind="flow_matching", jvp_rows="all")
    assert build_objective(ObjectiveSettings(kind="flow_matching"), None).jvp_rows is None


def test_rates_behind_a_custom_getattr_or_added_to_a_class_later_are_seen():
    class Configured(nn.Module):  # reads its rates from a config object
        def __init__(self):
            super().__init__()
            self.config = {"drop_prob": 0.2}

        def __getattr__(self, name):
            config = self.__dict__.get("config", {})
            return config[name] if name in config else super().__getattr__(name)

    class Late(nn.Module):
        pass

    assert "drop_prob = 0.2" in static_reason(nn.Sequential(Configured()))
    late = nn.Sequential(Late())
    assert static_reason(late) is None
    Late.proj_drop = 0.4
    try:
        assert "proj_drop = 0.4" in static_reason(late)
    finally:
        del Late.proj_drop


@pytest.mark.parametrize("backend, autocast", [("nograd", False), ("finite_difference", False),
                                               ("forward_ad", True)])
def test_split_passes_leave_the_generator_where_the_full_forward_leaves_it(backend, autocast):
    """jvp_on_rows with k < B rows: the gradient forward draws for B rows, the no-grad tangent pass for k;
    afterwards the generator must stand where one plain forward of the whole batch leaves it (the next
    step's randomness does not depend on how the JVP was taken), and u is that forward's output."""
    torch.manual_seed(0)
    linear = nn.Linear(6, 6)

    def dropping(z, r, t, cond=None):
        return nn.functional.dropout(linear(z), p=0.3, training=True) * t[:, None]

    g = torch.Generator().manual_seed(1)
    z, v = torch.randn(B, 6, generator=g), torch.randn(B, 6, generator=g)
    t = torch.rand(B, generator=g)
    r = t.clone()
    r[: B // 2] = t[: B // 2] * 0.5
    rows = r != t
    assert 0 < int(rows.sum()) < B
    context = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    torch.manual_seed(7)
    with context:
        u, _ = jvp_on_rows(dropping, z, r, t, (v, torch.zeros(B), torch.ones(B)), rows=rows, backend=backend)
    after = torch.get_rng_state()
    torch.manual_seed(7)
    with context:
        plain = dropping(z, r, t)
    assert torch.equal(after, torch.get_rng_state())
    assert torch.equal(u, plain)
