"""JVP backends agree with each other, with finite differences, and keep gradients exact."""
import pytest
import torch
from torch import nn
import torch.nn.functional as F

import mfkit
from mfkit.nn import MLPBackbone, TimePairEmbedding

BACKENDS = ["forward_ad", "forward_ad_plain", "nograd"]


class KitchenSink(nn.Module):
    """A backbone touching every op with a fast tangent rule, and a few without one."""

    def __init__(self, channels=4, width=16):
        super().__init__()
        self.time = TimePairEmbedding(width, frequency_dim=16)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.group_norm = nn.GroupNorm(4, width)
        self.attention = nn.MultiheadAttention(width, 2, batch_first=True)
        self.layer_norm = nn.LayerNorm(width)
        self.rms_norm = nn.RMSNorm(width)
        self.conv1d = nn.Conv1d(width, width, 3, padding=1)
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1, stride=2)
        self.qkv = nn.Linear(width, 3 * width)

    def forward(self, z, r, t, cond=None):
        b, _, h, w = z.shape
        x = self.conv_in(z) + self.time(r, t)[:, :, None, None]
        x = F.silu(self.group_norm(x))
        seq = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        seq = seq + self.attention(self.layer_norm(seq), seq, seq, need_weights=False)[0]
        q, k, v = self.qkv(self.rms_norm(seq)).chunk(3, dim=-1)
        heads = lambda y: y.reshape(b, h * w, 2, -1).transpose(1, 2)
        seq = seq + F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True).transpose(1, 2).reshape(b, h * w, -1)
        seq = F.gelu(self.conv1d(seq.transpose(1, 2)), approximate="tanh").transpose(1, 2)
        x = torch.relu(seq.transpose(1, 2).reshape(b, -1, h, w)) + torch.tanh(x)
        x = self.up(x) + F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv_out(F.gelu(x))


class InPlaceResidual(nn.Module):
    """Adds a plain tensor to a dual one, then updates the sum in place before using the input again."""

    def __init__(self, dim=6):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(dim))
        self.lin = nn.Linear(dim, dim)

    def forward(self, z, r, t, cond=None):
        h = z + self.pos
        h.mul_(2.0)
        return self.lin(h) + z * t[:, None] - r[:, None]


def make_inputs(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    n = 5
    a, b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    z = torch.randn(n, *shape, generator=g)
    v = torch.randn(n, *shape, generator=g)
    return [x.to(dtype) for x in (z, r, t, v)]


def central_difference(model, z, r, t, v, h=1e-4):
    """float64 central difference of u along (v, 0, 1)."""
    model = model.double()
    with torch.no_grad():
        plus = model(z.double() + h * v.double(), r.double(), t.double() + h)
        minus = model(z.double() - h * v.double(), r.double(), t.double() - h)
    model.float()
    return ((plus - minus) / (2 * h)).float()


def tangents(r, t, v):
    return v, torch.zeros_like(r), torch.ones_like(t)


MODELS = {
    "mlp-rank1": (lambda: MLPBackbone(6, width=32, depth=2), (6,)),
    "mlp-rank2": (lambda: MLPBackbone((2, 3), width=32, depth=2), (2, 3)),
    "mlp-rank3": (lambda: MLPBackbone((2, 2, 3), width=32, depth=2), (2, 2, 3)),
    "kitchen-sink-rank3": (lambda: KitchenSink(), (4, 4, 4)),
    "mlp-rank4": (lambda: MLPBackbone((1, 2, 2, 2), width=32, depth=2), (1, 2, 2, 2)),
    "in-place-residual": (lambda: InPlaceResidual(), (6,)),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_match_finite_differences(name, backend):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory()
    for p in model.parameters():  # make the output depend on everything (zero-init layers hide bugs)
        nn.init.normal_(p, std=0.3)
    z, r, t, v = make_inputs(shape)
    u, du = mfkit.jvp(model, z, r, t, tangents(r, t, v), backend=backend)
    torch.testing.assert_close(u, model(z, r, t))
    torch.testing.assert_close(du, central_difference(model, z, r, t, v), atol=2e-3, rtol=2e-3)
    assert not du.requires_grad


@pytest.mark.parametrize("name", MODELS)
def test_fast_rules_change_neither_targets_nor_gradients(name):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory()
    z, r, t, v = make_inputs(shape)
    grads, targets = {}, {}
    for backend in ("forward_ad", "forward_ad_plain", "nograd"):
        model.zero_grad()
        u, du = mfkit.jvp(model, z, r, t, tangents(r, t, v), backend=backend)
        target = v - (t - r).reshape(-1, *[1] * len(shape)) * du
        ((u - target) ** 2).sum().backward()
        grads[backend] = [p.grad.clone() for p in model.parameters()]
        targets[backend] = target
    for backend in ("forward_ad_plain", "nograd"):
        torch.testing.assert_close(targets[backend], targets["forward_ad"], atol=1e-5, rtol=1e-5)
        for a, b in zip(grads[backend], grads["forward_ad"]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_finite_difference_backend_is_close():
    model = MLPBackbone(4, width=32, depth=2).double()
    z, r, t, v = [x.double() for x in make_inputs((4,))]
    _, exact = mfkit.jvp(model, z, r, t, tangents(r, t, v))
    _, approx = mfkit.jvp(model, z, r, t, tangents(r, t, v), backend="finite_difference", fd_step=1e-6)
    torch.testing.assert_close(approx, exact, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["forward_ad", "nograd", "finite_difference"])
def test_dropout_sees_one_mask_across_passes(backend):
    class Dropping(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(8, 8)

        def forward(self, z, r, t, cond=None):
            return F.dropout(self.linear(z) * t[:, None], p=0.5, training=True)

    model = Dropping().double()
    z, r, t, v = [x.double() for x in make_inputs((8,))]
    torch.manual_seed(5)
    u, du = mfkit.jvp(model, z, r, t, tangents(r, t, v), backend=backend, fd_step=1e-7)
    # Where the output was dropped, its derivative must be zero too, and vice versa.
    assert torch.equal(u == 0, du == 0)
    # u is the plain forward's (same mask), and the generator ends where that forward leaves it.
    after = torch.get_rng_state()
    torch.manual_seed(5)
    assert torch.equal(u, model(z, r, t))
    assert torch.equal(after, torch.get_rng_state())


@pytest.mark.parametrize("backend", ["forward_ad", "nograd", "finite_difference"])
def test_dropout_sees_one_mask_in_the_float32_pass_under_autocast(backend):
    """With autocast on, the gradient forward (bf16) and the float32 tangent pass run apart, forward
    first: the tangent pass replays the forward's random numbers and the generator ends where the
    forward left it."""
    torch.manual_seed(0)
    linear = nn.Linear(8, 8)

    def dropping(z, r, t, cond=None):
        return F.dropout(linear(z), p=0.5, training=True) * t[:, None]  # dropout on bf16 in the forward

    z, r, t, v = make_inputs((8,))
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u, du = mfkit.jvp(dropping, z, r, t, tangents(r, t, v), backend=backend, fd_step=1e-2)
    assert du.dtype == torch.float32
    assert torch.equal(u == 0, du == 0)
    after = torch.get_rng_state()
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(u, dropping(z, r, t))
    assert torch.equal(after, torch.get_rng_state())


def test_unknown_backend_is_a_clear_error():
    model = MLPBackbone(2, width=8, depth=1)
    z, r, t, v = make_inputs((2,))
    with pytest.raises(ValueError, match="unknown JVP backend 'fast'.*forward_ad"):
        mfkit.jvp(model, z, r, t, tangents(r, t, v), backend="fast")


def test_attention_rule_matches_autograd_with_masks():
    from mfkit.core.tangent_rules import attention_tangent
    import torch.autograd.forward_ad as fwAD
    g = torch.Generator().manual_seed(0)
    q, k, v, qt, kt, vt = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(6))
    masks = [None, torch.rand(5, 5, generator=g) > 0.3, torch.randn(5, 5, generator=g, dtype=torch.float64)]
    masks[1][:, 0] = True  # every query sees at least one key
    for mask in masks:
        for causal in (False, True) if mask is None else (False,):
            with fwAD.dual_level(), mfkit.core.tangent_rules.math_attention():
                out = F.scaled_dot_product_attention(
                    fwAD.make_dual(q, qt), fwAD.make_dual(k, kt), fwAD.make_dual(v, vt), attn_mask=mask, is_causal=causal)
                expected = fwAD.unpack_dual(out).tangent
            torch.testing.assert_close(attention_tangent(q, k, v, qt, kt, vt, mask, causal), expected)


def test_fast_rules_fire_for_plain_torch_nn_layers(monkeypatch):
    from mfkit.core import tangent_rules

    used = set()
    for func, rule in list(tangent_rules._RULES.items()):
        def counting(f, args, kwargs, _rule=rule, _name=getattr(func, "__name__", str(func))):
            used.add(_name)
            return _rule(f, args, kwargs)
        monkeypatch.setitem(tangent_rules._RULES, func, counting)
    model = KitchenSink()
    z, r, t, v = make_inputs((4, 4, 4))
    mfkit.jvp(model, z, r, t, tangents(r, t, v))
    expected = {"linear", "conv2d", "conv1d", "conv_transpose2d", "group_norm", "layer_norm", "rms_norm",
                "silu", "gelu", "relu", "scaled_dot_product_attention", "multi_head_attention_forward", "mul", "add",
                "interpolate"}
    assert expected <= used, f"rules never used: {expected - used}"


@pytest.mark.parametrize("which", ["q", "k", "v", "qk", "kv", "qkv"])
@pytest.mark.parametrize("gqa", [False, True])
def test_attention_rule_with_partial_tangents_and_grouped_heads(which, gqa):
    from mfkit.core.tangent_rules import attention_tangent
    import torch.autograd.forward_ad as fwAD
    g = torch.Generator().manual_seed(1)
    kv_heads = 2 if gqa else 4
    q = torch.randn(2, 4, 5, 3, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, kv_heads, 6, 3, generator=g, dtype=torch.float64) for _ in range(2))
    tangents = {name: torch.randn_like(x) if name in which else None for name, x in zip("qkv", (q, k, v))}
    with fwAD.dual_level(), mfkit.core.tangent_rules.math_attention():
        dual = [fwAD.make_dual(x, tangents[n]) if tangents[n] is not None else x for n, x in zip("qkv", (q, k, v))]
        out = F.scaled_dot_product_attention(*dual, enable_gqa=gqa)
        expected = fwAD.unpack_dual(out).tangent
    got = attention_tangent(q, k, v, tangents["q"], tangents["k"], tangents["v"], enable_gqa=gqa)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_outside_the_rules_falls_back_to_a_kernel_with_forward_mode(backend):
    """CPU's fused SDPA kernel has no forward-mode AD; dropout takes SDPA outside the fast rule."""
    class DroppingAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, z, r, t, cond=None):
            x = self.proj(z) * t[:, None, None]
            heads = x.reshape(x.shape[0], x.shape[1], 2, 2).transpose(1, 2)
            out = F.scaled_dot_product_attention(heads, heads, heads, dropout_p=0.2)
            return out.transpose(1, 2).reshape(z.shape)

    z, r, t, v = make_inputs((6, 4))
    torch.manual_seed(0)
    u, du = mfkit.jvp(DroppingAttention(), z, r, t, tangents(r, t, v), backend=backend)
    assert torch.isfinite(du).all() and du.abs().sum() > 0


def test_fast_rules_under_bf16_autocast_follow_autocast_dtypes():
    torch.manual_seed(0)
    model = KitchenSink()
    z, r, t, v = make_inputs((4, 4, 4))
    _, exact = mfkit.jvp(model, z, r, t, tangents(r, t, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u, du = mfkit.jvp(model, z, r, t, tangents(r, t, v))
    assert torch.isfinite(du).all()
    error = (du.float() - exact).abs().max() / exact.abs().max()
    assert error < 0.05, f"bf16 tangent is {error:.3f} away from float32 (relative)"


ELEMENTWISE = {
    "dual*scalar": lambda a, b, m: a * 2.5,
    "scalar*dual": lambda a, b, m: 2.5 * a,
    "dual(B,1)*tensor(1,F)": lambda a, b, m: a[:, :1] * m[None, :],
    "tensor(1,F)*dual(B,1)": lambda a, b, m: m[None, :] * a[:, :1],
    "dual*dual": lambda a, b, m: a * b,
    "torch.mul": lambda a, b, m: torch.mul(a, b),
    "dual*bool mask": lambda a, b, m: a * (m > 0),
    "bf16 dual*float32": lambda a, b, m: a.bfloat16() * m,
    "dual+dual": lambda a, b, m: a + b,
    "dual+tensor(F)": lambda a, b, m: a + m,
    "tensor(F)+dual(B,1)": lambda a, b, m: m + a[:, :1],
    "dual-dual": lambda a, b, m: a - b,
    "scalar+dual": lambda a, b, m: 2.0 + a,
    "dual-scalar": lambda a, b, m: a - 1.5,
    "add alpha": lambda a, b, m: a.add(b, alpha=-0.3),
    "torch.sub alpha, plain first": lambda a, b, m: torch.sub(m, b, alpha=2.0),
    "bf16 dual+float32": lambda a, b, m: a.bfloat16() + m,
    # an output must not share its input's tangent: an in-place op on it would change the input's too
    "dual+tensor, then in place": lambda a, b, m: (lambda y: (y.mul_(3.0), y.add_(b), a * 1.0 + y)[-1])(a + m),
    "dual-scalar, then in place": lambda a, b, m: (lambda y: (y.relu_(), a + y)[-1])(a - 0.5),
    "interpolate nearest": lambda a, b, m: F.interpolate(a[None], scale_factor=2, mode="nearest")[0],
    "interpolate linear": lambda a, b, m: F.interpolate(a[None], size=9, mode="linear", align_corners=False)[0],
    "interpolate bilinear": lambda a, b, m: F.interpolate(a[None, None], scale_factor=1.5, mode="bilinear")[0, 0],
    "interpolate bicubic antialias": lambda a, b, m: F.interpolate(a[None, None], size=(2, 3), mode="bicubic",
                                                                   antialias=True)[0, 0],
}


@pytest.mark.parametrize("case", ELEMENTWISE)
def test_elementwise_rules_match_pytorch_forward_mode(case):
    """The fast rules for a * b, a + b, a - b against PyTorch's own forward-mode rule: primal, tangent and gradients."""
    import torch.autograd.forward_ad as fwAD
    from mfkit.core.tangent_rules import FastTangents

    g = torch.Generator().manual_seed(3)
    a, b, at, bt = (torch.randn(4, 5, generator=g) for _ in range(4))
    m = torch.randn(5, generator=g)

    def run(fast):
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        with fwAD.dual_level(), FastTangents() if fast else torch.autograd.set_grad_enabled(True):
            out = ELEMENTWISE[case](fwAD.make_dual(x, at), fwAD.make_dual(y, bt), m)
            primal, tangent = fwAD.unpack_dual(out)
        primal.float().square().sum().backward()
        return primal, tangent, x.grad, y.grad

    got, want = run(True), run(False)
    for g_, w_ in zip(got, want):
        if w_ is None:
            assert g_ is None
        else:
            assert g_.dtype == w_.dtype
            torch.testing.assert_close(g_, w_)


@pytest.mark.parametrize("grad", [True, False])
def test_fast_dual_pass_matches_pytorch_forward_mode_with_and_without_gradients(grad):
    """Without gradients (the float32 tangent pass) activations and products of two dual tensors go to
    PyTorch's own rules, with gradients to mfkit's: either way the pass equals PyTorch's forward mode."""
    from mfkit.core.jvp import _dual_pass

    torch.manual_seed(0)
    model = KitchenSink().double()
    z, r, t, v = [x.double() for x in make_inputs((4, 4, 4))]
    with torch.set_grad_enabled(grad):
        fast = _dual_pass(model, z, r, t, tangents(r, t, v), None, True)
        plain = _dual_pass(model, z, r, t, tangents(r, t, v), None, False)
    for got, want in zip(fast, plain):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert fast[0].requires_grad == grad


def test_fast_tangents_keep_tangents_out_of_the_graph_with_gradients_on():
    """FastTangents' promise: tangents carry no gradient, also for a product of two dual tensors (whose
    PyTorch rule, used only without gradients, would record the tangent in the graph)."""
    import torch.autograd.forward_ad as fwAD
    from mfkit.core.tangent_rules import FastTangents

    torch.manual_seed(0)
    linear = nn.Linear(4, 4)
    z, t = torch.randn(3, 4), torch.rand(3, 1)
    with fwAD.dual_level(), FastTangents():
        out = linear(fwAD.make_dual(z, torch.randn(3, 4))) * fwAD.make_dual(t, torch.ones(3, 1))
        out = out + linear(fwAD.make_dual(z, torch.randn(3, 4)))
        primal, tangent = fwAD.unpack_dual(out)
    assert primal.requires_grad and not tangent.requires_grad
