"""Silent wrongness found in review, each reproduced: compiled models, half precision, RMSNorm eps,
in-place activations, fully masked attention rows; the runtime guard; clear errors naming the layer."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mfkit
from mfkit.core.jvp import JVPError
from mfkit.nn import MLPBackbone, TimePairEmbedding

EXACT = ["forward_ad", "forward_ad_plain", "nograd"]


def inputs(shape=(4,), n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    return torch.randn(n, *shape, generator=g), r, t, torch.randn(n, *shape, generator=g)


def reference_jvp(model, z, r, t, v, cond=None):
    """float64 torch.func.jvp of a copy of the model, math attention: the slow exact reference."""
    import copy

    double = copy.deepcopy(model).double()
    args = (z.double(), r.double(), t.double())
    tangents = (v.double(), torch.zeros_like(args[1]), torch.ones_like(args[2]))
    with torch.no_grad(), mfkit.core.tangent_rules.math_attention():
        call = (lambda a, b, c: double(a, b, c, cond=cond)) if cond is not None else (lambda a, b, c: double(a, b, c))
        return torch.func.jvp(call, args, tangents)[1].float()


def tangent(r, t, v):
    return v, torch.zeros_like(r), torch.ones_like(t)


def wide_mlp():
    torch.manual_seed(0)
    model = MLPBackbone(4, width=32, depth=2)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    return model


# ---------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("backend", EXACT + ["finite_difference"])
def test_compiled_model_gives_the_eager_jvp(backend):
    model = wide_mlp()
    compiled = torch.compile(model, backend="aot_eager")  # reproduces inductor's behaviour, compiles fast
    z, r, t, v = inputs()
    expected = reference_jvp(model, z, r, t, v)
    if backend == "finite_difference":  # the same estimate as on the eager model
        expected = mfkit.jvp(model, z, r, t, tangent(r, t, v), backend=backend)[1]
    u, du = mfkit.jvp(compiled, z, r, t, tangent(r, t, v), backend=backend)
    torch.testing.assert_close(du, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(u, model(z, r, t))
    assert du.abs().max() > 0.1


def test_compiled_submodule_inside_an_eager_model():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.compile(wide_mlp(), backend="aot_eager")

        def forward(self, z, r, t, cond=None):
            return self.inner(z, r, t) * 2

    model = Outer()
    z, r, t, v = inputs()
    _, du = mfkit.jvp(model, z, r, t, tangent(r, t, v))
    torch.testing.assert_close(du, reference_jvp(model.inner._orig_mod, z, r, t, v) * 2, atol=1e-4, rtol=1e-4)


def test_compiled_training_step_matches_eager_gradients():
    model = wide_mlp()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    objective = mfkit.MeanFlow(r_neq_t_share=1.0)
    grads = []
    for net in (model, compiled):
        model.zero_grad()
        objective(net, x, generator=torch.Generator().manual_seed(2)).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- half precision
class RMSNormMLP(nn.Module):
    """Small activations through RMSNorm: where a bf16 tangent loses most digits."""

    def __init__(self, dim=8, width=64):
        super().__init__()
        self.time = TimePairEmbedding(width, frequency_dim=16)
        self.inp = nn.Linear(dim, width)
        self.norm = nn.RMSNorm(width, eps=1e-6)  # explicit: float64 and float32 copies share it
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, dim)

    def forward(self, z, r, t, cond=None):
        h = self.inp(z) * 1e-2 + self.time(r, t) * 1e-2
        return self.out(F.silu(self.hidden(self.norm(h))))


def relative_error(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("backend", ["forward_ad", "forward_ad_plain", "nograd", "finite_difference"])
def test_bf16_autocast_keeps_the_jvp_in_float32(backend):
    torch.manual_seed(0)
    model = RMSNormMLP()
    z, r, t, v = inputs((8,), n=32)
    fp32 = reference_jvp(model, z, r, t, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u, du = mfkit.jvp(model, z, r, t, tangent(r, t, v), backend=backend, fd_step=1e-3)
    assert u.dtype == torch.bfloat16  # the loss forward still runs under autocast
    assert du.dtype == torch.float32
    assert relative_error(du, fp32) < (3e-3 if backend == "finite_difference" else 1e-5)  # bf16 FD: 430%


def test_bf16_jvp_is_an_explicit_opt_in_with_a_known_error():
    torch.manual_seed(0)
    model = RMSNormMLP()
    z, r, t, v = inputs((8,), n=32)
    fp32 = reference_jvp(model, z, r, t, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, du = mfkit.jvp(model, z, r, t, tangent(r, t, v), precision="autocast")
    error = relative_error(du, fp32)
    assert 1e-4 < error < 0.1  # bf16 digits: documented in docs/concepts.md


def test_bf16_meanflow_target_matches_float32_target():
    torch.manual_seed(0)
    model = RMSNormMLP()
    z, r, t, v = inputs((8,), n=32)
    exact = mfkit.meanflow_target(model, z, r, t, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        target = mfkit.meanflow_target(model, z, r, t, v, backend="finite_difference")
        fast = mfkit.meanflow_target(model, z, r, t, v)
    assert relative_error(fast, exact) < 1e-6
    assert relative_error(target, exact) < 1e-3


def test_rms_norm_without_eps_uses_float32_eps_in_half_precision():
    torch.manual_seed(0)
    x = (torch.randn(4, 16) * 1e-3).bfloat16()
    xt = torch.randn(4, 16).bfloat16()
    import torch.autograd.forward_ad as fwAD

    results = []
    for fast in (True, False):
        with fwAD.dual_level():
            dual = fwAD.make_dual(x, xt)
            with mfkit.FastTangents() if fast else torch.enable_grad():
                results.append(fwAD.unpack_dual(F.rms_norm(dual, (16,))).tangent.float())
    torch.testing.assert_close(results[0], results[1], atol=0.05, rtol=0.02)


# ---------------------------------------------------------------- in-place activations
class InPlace(nn.Module):
    """Relies on the aliasing of in-place activations: h is used after F.relu(h, inplace=True)."""

    def __init__(self):
        super().__init__()
        self.time = TimePairEmbedding(16, frequency_dim=8)
        self.a, self.b = nn.Linear(4, 16), nn.Linear(16, 4)
        self.act = nn.SiLU(inplace=True)

    def forward(self, z, r, t, cond=None):
        h = self.a(z) + self.time(r, t)
        F.relu(h, inplace=True)
        g = self.b(h) * 1.0
        self.act(g)
        return g


@pytest.mark.parametrize("backend", EXACT)
def test_in_place_activations_keep_their_side_effect(backend):
    torch.manual_seed(0)
    model = InPlace()
    z, r, t, v = inputs()
    u, du = mfkit.jvp(model, z, r, t, tangent(r, t, v), backend=backend)
    torch.testing.assert_close(u, model(z, r, t))
    torch.testing.assert_close(du, reference_jvp(model, z, r, t, v), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- masked attention
@pytest.mark.parametrize("backend", EXACT)
def test_fully_masked_query_row_has_a_finite_tangent(backend):
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.time = TimePairEmbedding(8, frequency_dim=8)
            self.qkv = nn.Linear(8, 24)

        def forward(self, z, r, t, cond=None):  # z: (B, 5, 8)
            h = z + self.time(r, t)[:, None]
            q, k, v = self.qkv(h).chunk(3, -1)
            mask = torch.ones(5, 5, dtype=torch.bool).tril()
            mask[2] = False  # query 2 may attend to nothing
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    torch.manual_seed(0)
    model = Masked()
    z, r, t, v = inputs((5, 8))
    _, du = mfkit.jvp(model, z, r, t, tangent(r, t, v), backend=backend)
    assert torch.isfinite(du).all()
    torch.testing.assert_close(du, reference_jvp(model, z, r, t, v), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- runtime guard
class Detached(nn.Module):
    """A network that cuts its inputs off the graph: its JVP is zero and the target silently becomes v."""

    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(4, width=16, depth=1)

    def forward(self, z, r, t, cond=None):
        return self.net(z.detach(), r.detach(), t.detach())


def test_guard_stops_a_zero_jvp_with_a_clear_message():
    x = torch.randn(32, 4)
    with pytest.raises(JVPError, match="forward_ad.*exactly zero"):
        mfkit.MeanFlow()(Detached(), x, generator=torch.Generator().manual_seed(0))
    quiet = mfkit.MeanFlow(jvp_guard=0)(Detached(), x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(quiet.loss)


def test_guard_stops_a_non_finite_jvp():
    class Kink(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLPBackbone(4, width=16, depth=1)

        def forward(self, z, r, t, cond=None):  # sqrt at 0: finite value, infinite derivative
            return self.net(z, r, t) + torch.sqrt((t - t.detach())[:, None].expand_as(z))

    with pytest.raises(JVPError, match="NaN or infinite"):
        mfkit.MeanFlow()(Kink(), torch.randn(32, 4), generator=torch.Generator().manual_seed(0))


def test_guard_checks_only_the_first_calls():
    objective = mfkit.MeanFlow(jvp_guard=2, r_neq_t_share=1.0)
    model = MLPBackbone(4, width=16, depth=1)
    for _ in range(2):
        objective(model, torch.randn(8, 4))
    objective(Detached(), torch.randn(8, 4))  # past the guarded calls: not checked any more


# ---------------------------------------------------------------- clear errors
class NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.tanh()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - x.tanh() ** 2)


class CustomLayer(nn.Module):
    def forward(self, x):
        return NoJvp.apply(x)


class WithCustom(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(4, width=16, depth=1)
        self.squash = CustomLayer()

    def forward(self, z, r, t, cond=None):
        return self.squash(self.net(z, r, t))


@pytest.mark.parametrize("backend", EXACT)
def test_a_layer_without_a_forward_rule_is_named(backend):
    z, r, t, v = inputs()
    with pytest.raises(JVPError, match=r"squash \(CustomLayer\).*jvp_backend=finite_difference"):
        mfkit.jvp(WithCustom(), z, r, t, tangent(r, t, v), backend=backend)
    _, du = mfkit.jvp(WithCustom(), z, r, t, tangent(r, t, v), backend="finite_difference")
    assert torch.isfinite(du).all()


def test_guard_accepts_a_zero_initialised_output_layer():
    model = MLPBackbone(4, width=16, depth=1)
    nn.init.zeros_(model.out.weight)
    nn.init.zeros_(model.out.bias)  # u = 0 at step 0, so its JVP is zero too: correct, not a bug
    out = mfkit.MeanFlow(r_neq_t_share=1.0)(model, torch.randn(16, 4), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    with pytest.raises(JVPError, match="exactly zero"):  # a real zero JVP is still caught afterwards
        mfkit.MeanFlow(r_neq_t_share=1.0)(Detached(), torch.randn(16, 4))


# ---------------------------------------------------------------- jvp_precision tf32
@pytest.mark.parametrize("backend", ["forward_ad", "nograd", "finite_difference"])
def test_tf32_precision_is_the_fp32_split_on_a_cpu(backend):
    """No TF32 on a CPU: "tf32" gives the "fp32" policy's tangent bit for bit (float32, autocast off)."""
    torch.manual_seed(0)
    model = RMSNormMLP()
    z, r, t, v = inputs((8,), n=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u32, du32 = mfkit.jvp(model, z, r, t, tangent(r, t, v), backend=backend, precision="fp32")
        u, du = mfkit.jvp(model, z, r, t, tangent(r, t, v), backend=backend, precision="tf32")
    assert du.dtype == torch.float32 and u.dtype == torch.bfloat16
    assert torch.equal(du, du32) and torch.equal(u, u32)


def test_tf32_is_a_recipe_and_objective_setting():
    from mfkit.recipe.schema import ObjectiveSettings

    assert ObjectiveSettings(jvp_precision="tf32").jvp_precision == "tf32"
    assert mfkit.MeanFlow(jvp_precision="tf32").jvp_precision == "tf32"
    with pytest.raises(ValueError, match="tf32"):
        mfkit.MeanFlow(jvp_precision="tf16")
